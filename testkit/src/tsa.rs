//! A time stamp authority (RFC 3161) for tests: OpenSSL's own `openssl ts -reply` answers
//! each request, behind a small HTTP server (Python's standard library) on a free loopback
//! port. Its CA and signing certificate (extendedKeyUsage timeStamping) are made at test time.

use crate::process::ChildGuard;
use crate::qca::{openssl, KeyType, QualifiedCa};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The HTTP side: POST a DER request, get `openssl ts -reply`'s DER answer.
const SERVER: &str = r#"
import http.server, subprocess, sys, tempfile, os
CONF, PORT = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with tempfile.TemporaryDirectory() as d:
            q, r = os.path.join(d, "q.tsq"), os.path.join(d, "r.tsr")
            open(q, "wb").write(body)
            p = subprocess.run(["openssl", "ts", "-reply", "-config", CONF, "-queryfile", q, "-out", r],
                               capture_output=True)
            if p.returncode != 0:
                sys.stderr.write(p.stderr.decode(errors="replace"))
                self.send_response(500); self.end_headers(); return
            data = open(r, "rb").read()
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        print("stamped", flush=True)
http.server.HTTPServer(("127.0.0.1", PORT), H).serve_forever()
"#;

pub struct Tsa {
    pub ca: QualifiedCa,
    pub url: String,
    pub port: u16,
    pub dir: PathBuf,
    _server: ChildGuard,
}

impl Tsa {
    /// A TSA named `name` under `dir` (its files are `<name>-*`).
    pub fn start(dir: &Path, name: &str) -> Tsa {
        let ca = QualifiedCa::generate(dir, name, KeyType::P256);
        let signer = ca.issue_with(
            &format!("{name} TSA"),
            KeyType::Rsa2048,
            365,
            "keyUsage=critical,digitalSignature,nonRepudiation\nextendedKeyUsage=critical,timeStamping\n",
        );
        let serial = dir.join(format!("{name}-tsaserial"));
        std::fs::write(&serial, "01\n").expect("write serial");
        let conf = dir.join(format!("{name}-tsa.cnf"));
        let p = |x: &Path| x.to_str().expect("utf-8 path").to_string();
        std::fs::write(
            &conf,
            format!(
                "[tsa]\ndefault_tsa = tsa1\n[tsa1]\nserial = {}\nsigner_cert = {}\ncerts = {}\nsigner_key = {}\n\
                 signer_digest = sha256\ndefault_policy = 1.2.3.4.1\nother_policies = 1.2.3.4.5\n\
                 digests = sha256, sha384, sha512\naccuracy = secs:1\nordering = yes\ntsa_name = yes\n\
                 ess_cert_id_chain = no\ness_cert_id_alg = sha256\n",
                p(&serial),
                p(&signer.cert),
                p(&ca.ca.cert),
                p(&signer.key)
            ),
        )
        .expect("write tsa config");
        let script = dir.join(format!("{name}-tsa.py"));
        std::fs::write(&script, SERVER).expect("write tsa server");
        let port = crate::free_port();
        let mut cmd = Command::new("python3");
        cmd.arg(&script).arg(&conf).arg(port.to_string());
        let server =
            ChildGuard::spawn("tsa", cmd, Some(&dir.join(format!("{name}-tsa.log")))).expect("start the TSA server");
        assert!(crate::wait_for_port(port, Duration::from_secs(10)), "TSA server did not listen");
        Tsa { ca, url: format!("http://127.0.0.1:{port}/tsa"), port, dir: dir.to_path_buf(), _server: server }
    }

    /// Requests answered so far.
    pub fn stamped(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.join(format!("{}-tsa.log", self.ca.name))).unwrap_or_default();
        log.lines().filter(|l| *l == "stamped").count()
    }

    /// `openssl ts -verify` of a token (DER) for a SHA-256 digest (hex), with this TSA's CA:
    /// OpenSSL's own verdict.
    pub fn openssl_verifies(&self, token: &[u8], digest_hex: &str) -> Result<String, String> {
        let t = self.dir.join("check.tst");
        std::fs::write(&t, token).expect("write token");
        let out = Command::new("openssl")
            .args(["ts", "-verify", "-token_in", "-in"])
            .arg(&t)
            .args(["-digest", digest_hex, "-CAfile"])
            .arg(&self.ca.ca.cert)
            .output()
            .expect("run openssl");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }

    /// A token made by `openssl ts -reply` for `data` directly (no HTTP).
    pub fn token_for(&self, data: &[u8]) -> Vec<u8> {
        let d = self.dir.join("direct.data");
        std::fs::write(&d, data).expect("write data");
        let q = self.dir.join("direct.tsq");
        openssl(
            &["ts", "-query", "-data", d.to_str().unwrap(), "-sha256", "-cert", "-out", q.to_str().unwrap()],
            &self.dir,
        );
        let conf = self.dir.join(format!("{}-tsa.cnf", self.ca.name));
        let t = self.dir.join("direct.tst");
        openssl(
            &[
                "ts",
                "-reply",
                "-config",
                conf.to_str().unwrap(),
                "-queryfile",
                q.to_str().unwrap(),
                "-token_out",
                "-out",
                t.to_str().unwrap(),
            ],
            &self.dir,
        );
        std::fs::read(t).expect("read token")
    }
}
