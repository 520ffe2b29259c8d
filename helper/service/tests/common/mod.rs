//! Test harness: the real `demail` binary as a child process, a raw HTTP/1.1 client
//! (so tests can send hostile Host/Origin headers), and a TLS SMTP gateway stand-in
//! built on demail-smtp with a CA made at test time (demail-testkit). Postfix, Dovecot
//! and the real gateway come from demail-testkit.
#![allow(dead_code)]

pub mod provider;

use demail_testkit::{ChildGuard, Pki, TempDir};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Path of the `demail` binary, built once per test process.
pub fn demail_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        workspace_bin(
            "demail-cli",
            "demail",
            &[
                "core/src",
                "cli/src",
                "helper/service/src",
                "smtp/src",
                "core/Cargo.toml",
                "cli/Cargo.toml",
                "helper/service/Cargo.toml",
            ],
        )
    })
    .clone()
}

/// Path of the gateway binary (the helper's upstream in end-to-end tests).
pub fn gateway_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        workspace_bin(
            "demail-gateway",
            "demail-gateway",
            &["core/src", "gateway/src", "smtp/src", "gateway/Cargo.toml"],
        )
    })
    .clone()
}

/// `demail-service`, the Windows autostart build (also builds here; only its subsystem differs).
pub fn service_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        workspace_bin(
            "demail-service",
            "demail-service",
            &[
                "installer/windows/service/src",
                "core/src",
                "helper/service/src",
                "smtp/src",
                "helper/service/Cargo.toml",
            ],
        )
    })
    .clone()
}

/// A binary of another workspace package. `cargo test --workspace` has built it already;
/// build it only when one of `sources` is newer (a second build with another feature
/// set would cost a minute for nothing).
fn workspace_bin(package: &str, name: &str, sources: &[&str]) -> PathBuf {
    // tests run from target/<profile>/deps/<test>-<hash>
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target profile dir").to_path_buf();
    let bin = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let newest = sources.iter().chain(["Cargo.lock"].iter()).filter_map(|p| newest_mtime(&root.join(p))).max();
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    if let (Some(b), Some(n)) = (built, newest) {
        if b >= n {
            return bin;
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package, "--bin", name, "--manifest-path"]).arg(root.join("Cargo.toml"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    if let Some(target) = profile_dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let st = cmd.status().expect("run cargo build");
    assert!(st.success(), "building {name} failed");
    assert!(bin.is_file(), "{} missing", bin.display());
    bin
}

fn newest_mtime(p: &Path) -> Option<std::time::SystemTime> {
    let m = std::fs::metadata(p).ok()?;
    if m.is_file() {
        return m.modified().ok();
    }
    std::fs::read_dir(p).ok()?.flatten().filter_map(|e| newest_mtime(&e.path())).max()
}

/// Path of `demail-native-host`, built when missing.
pub fn native_host_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        workspace_bin(
            "demail-helper",
            "demail-native-host",
            &["core/src", "helper/service/src", "smtp/src", "helper/service/Cargo.toml"],
        )
    })
    .clone()
}

/// Talk to the native-messaging host as Thunderbird does: `args` after the program
/// (Thunderbird passes the manifest's path and the add-in's id), each message
/// length-prefixed on stdin. Returns the answers.
pub fn native_host(d: &Path, args: &[&str], messages: &[Value]) -> Vec<Value> {
    let mut cmd = Command::new(native_host_bin());
    cmd.args(args);
    helper_env(&mut cmd, d);
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn demail-native-host");
    {
        let mut stdin = child.stdin.take().unwrap();
        for msg in messages {
            let b = msg.to_string().into_bytes();
            stdin.write_all(&(b.len() as u32).to_ne_bytes()).unwrap();
            stdin.write_all(&b).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let mut rest = &out.stdout[..];
    let mut answers = Vec::new();
    while rest.len() >= 4 {
        let n = u32::from_ne_bytes(rest[..4].try_into().unwrap()) as usize;
        answers.push(serde_json::from_slice::<Value>(&rest[4..4 + n]).unwrap());
        rest = &rest[4 + n..];
    }
    answers
}

/// A value in kB from /proc/<pid>/status (`VmHWM:`, `VmRSS:`).
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A name no other test run uses (keyring entries are per machine user).
pub fn unique(prefix: &str) -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    format!("{prefix}-{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// Start the helper in a fresh kernel session keyring: `script` runs under
/// `keyctl session` (`{demail}` is the binary path; it must end with
/// `exec {demail} serve --port 0`). keyring-rs also links the entry into root's
/// persistent keyring, which outlives the session: the gateway password of `user`
/// is deleted again when the [`Helper`] is dropped.
pub struct Keyutils<'a> {
    pub user: &'a str,
    pub script: &'a str,
}

#[derive(Default)]
pub struct HelperOpts<'a> {
    pub machine: &'a str,
    pub user: &'a str,
    pub keyutils: Option<Keyutils<'a>>,
    pub policy: Option<&'a str>,
    /// Extra environment for `demail serve` (test hooks).
    pub env: &'a [(&'a str, &'a str)],
}

/// A running helper (`demail serve --port 0`) with its own HOME, XDG dirs and configs.
pub struct Helper {
    pub dir: TempDir,
    pub port: u16,
    /// The `{"event":"listening",…}` line of the last start.
    pub listening: Value,
    pub child: ChildGuard,
    pub log: PathBuf,
    wrapper: Option<Vec<String>>,
    keyutils_user: Option<String>,
    env: Vec<(String, String)>,
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| json!({ "_raw": String::from_utf8_lossy(&self.body) }))
    }
    pub fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or("").to_string()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl Helper {
    pub fn start(machine: &str, user: &str) -> Helper {
        Helper::start_with(HelperOpts { machine, user, ..Default::default() })
    }

    pub fn start_with(o: HelperOpts) -> Helper {
        let dir = demail_testkit::temp_dir();
        let d = dir.path();
        let machine = if let Some(p) = o.policy {
            std::fs::write(d.join("policy.toml"), p).unwrap();
            format!("[policy]\nfile = \"{}\"\n{}", d.join("policy.toml").display(), o.machine)
        } else {
            format!("[policy]\nfile = \"{}\"\n{}", d.join("no-policy.toml").display(), o.machine)
        };
        std::fs::write(d.join("machine.toml"), machine).unwrap();
        std::fs::create_dir_all(d.join("config/demail")).unwrap();
        let log = if o.user.contains("[log]") { "" } else { "[log]\nlevel = \"debug\"\n" };
        std::fs::write(d.join("config/demail/helper.toml"), format!("{log}{}", o.user)).unwrap();
        let wrapper = o.keyutils.as_ref().map(|k| {
            assert!(demail_testkit::have("keyctl"), "keyctl missing: run scripts/setup test (keyutils)");
            ["keyctl", "session", "-", "sh", "-c", k.script].map(String::from).to_vec()
        });
        let keyutils_user = o.keyutils.map(|k| k.user.to_string());
        let env: Vec<(String, String)> = o.env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (child, listening, log) = Helper::spawn(d, wrapper.as_deref(), &env);
        let port = listening["port"].as_u64().unwrap_or(0) as u16;
        Helper { dir, port, listening, child, log, wrapper, keyutils_user, env }
    }

    /// The process id of `demail serve` (for /proc/<pid>/status).
    pub fn pid(&self) -> u32 {
        self.listening["pid"].as_u64().expect("pid") as u32
    }

    /// Start `demail serve` in the helper's directories; wait for its "listening" line.
    fn spawn(d: &Path, wrapper: Option<&[String]>, env: &[(String, String)]) -> (ChildGuard, Value, PathBuf) {
        let n = std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0);
        let log = d.join(format!("helper-{n}.log"));
        let bin = demail_bin();
        let mut cmd = match wrapper {
            None => {
                let mut c = Command::new(&bin);
                c.args(["serve", "--port", "0"]);
                c
            }
            Some(w) => {
                let mut c = Command::new(&w[0]);
                c.args(w[1..].iter().map(|a| a.replace("{demail}", &bin.display().to_string())));
                c
            }
        };
        helper_env(&mut cmd, d);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let child = ChildGuard::spawn("demail serve", cmd, Some(&log)).expect("spawn demail serve");
        let listening = demail_testkit::wait_until(Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&log).ok()?;
            text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|v| v["event"] == "listening")
        })
        .unwrap_or_else(|| panic!("helper did not start: {}", std::fs::read_to_string(&log).unwrap_or_default()));
        (child, listening, log)
    }

    /// `kill -9`: a crash, not a shutdown.
    pub fn kill9(&mut self) {
        self.child.kill();
    }

    /// Start again on the same directories (outbox, pairings, configs).
    pub fn restart(&mut self) {
        self.child.kill();
        let (child, listening, log) = Helper::spawn(self.dir.path(), self.wrapper.as_deref(), &self.env);
        self.child = child;
        self.port = listening["port"].as_u64().unwrap_or(0) as u16;
        self.listening = listening;
        self.log = log;
    }

    /// Run the CLI with the helper's environment.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> (i32, Value, String) {
        let mut cmd = Command::new(demail_bin());
        cmd.args(args);
        helper_env(&mut cmd, self.dir.path());
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn demail");
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let v = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| json!({ "_raw": String::from_utf8_lossy(&out.stdout) }));
        (out.status.code().unwrap_or(-1), v, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A raw HTTP/1.1 request; `Host` is added unless given.
    pub fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        http(self.port, method, path, headers, body)
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut h: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            h.push(("Authorization", a));
        }
        self.raw("GET", path, &h, b"")
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut h: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            h.push(("Authorization", a));
        }
        self.raw("POST", path, &h, body.to_string().as_bytes())
    }

    /// Request a pairing and approve it with `demail pair approve CODE`; the token.
    pub fn pair(&self) -> String {
        let r = self.post("/v1/pairing", None, &json!({ "client": "Test-Add-in" }));
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        let code = v["result"]["code"].as_str().unwrap().to_string();
        let token = v["result"]["token"].as_str().unwrap().to_string();
        let (rc, out, err) = self.cli(&["pair", "approve", &code], None);
        assert_eq!(rc, 0, "approve: {out} {err}");
        token
    }

    /// Poll an outbox entry until `pred` holds.
    pub fn wait_message(&self, token: &str, id: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + timeout;
        loop {
            let v = self.get(&format!("/v1/outbox/{id}"), Some(token)).json()["result"].clone();
            if pred(&v) || Instant::now() > end {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let Some(user) = self.keyutils_user.take() else { return };
        self.child.kill();
        // A fresh session finds the entry through the persistent keyring again.
        let mut cmd = Command::new("keyctl");
        cmd.args(["session", "-"]).arg(demail_bin()).args(["credentials", "delete"]);
        helper_env(&mut cmd, self.dir.path());
        let out = cmd.output();
        let desc = format!("keyring-rs:{user}@");
        let gone = demail_testkit::wait_until(Duration::from_secs(5), || {
            (!std::fs::read_to_string("/proc/keys").unwrap_or_default().contains(&desc)).then_some(())
        });
        if !std::thread::panicking() {
            let out = out.expect("run keyctl session demail credentials delete");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("\"deleted\": 1"),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(gone.is_some(), "{desc} is still in a kernel keyring");
        }
    }
}

/// The environment of a helper living in `d`: HOME, XDG dirs, machine config; nothing
/// from the caller's desktop session.
pub fn helper_env(cmd: &mut Command, d: &Path) {
    cmd.env("HOME", d)
        .env("XDG_CONFIG_HOME", d.join("config"))
        .env("XDG_DATA_HOME", d.join("data"))
        .env("XDG_RUNTIME_DIR", d.join("run"))
        .env("DEMAIL_HELPER_SYSTEM_CONFIG", d.join("machine.toml"))
        .env_remove("DEMAIL_HELPER_CONFIG")
        .env_remove("DEMAIL_HELPER_RUNTIME_DIR")
        .env_remove("DEMAIL_POLICY")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env("NO_COLOR", "1");
}

/// Plain HTTP/1.1 over TCP with `Connection: close`.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect helper");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) before it reads the whole body: write from a second
    // thread while this one reads, so the early answer is not lost.
    let mut w = s.try_clone().unwrap();
    let body = body.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&body);
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Resp {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))).collect();
    let mut body = buf[end + 4..].to_vec();
    if headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")) {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(p) = rest.windows(2).position(|w| w == b"\r\n") {
            let n = usize::from_str_radix(String::from_utf8_lossy(&rest[..p]).trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[p + 2..p + 2 + n]);
            rest = &rest[p + 2 + n + 2..];
        }
        body = out;
    }
    Resp { status, headers, body }
}

// ---------------------------------------------------------------- gateway stand-in

#[derive(Debug, Clone)]
pub enum SinkMode {
    Accept,
    /// Permanent or temporary refusal after DATA.
    Reject(u16, &'static str, &'static str),
}

#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub auth_user: Option<String>,
    pub tls: bool,
    pub message: Vec<u8>,
}

pub struct SinkState {
    pub received: Mutex<Vec<Received>>,
    pub mode: Mutex<SinkMode>,
    pub auth: Option<(String, String)>,
}

struct SinkHandler(Arc<SinkState>);

impl demail_smtp::Handler for SinkHandler {
    async fn authenticate(&self, user: &str, password: &str) -> demail_smtp::AuthResult {
        if self.0.auth.as_ref().is_some_and(|(u, p)| u == user && p == password) {
            demail_smtp::AuthResult::Accepted(demail_smtp::Authenticated {
                user: user.into(),
                method: "password".into(),
                display: None,
            })
        } else {
            demail_smtp::AuthResult::Refused
        }
    }

    async fn deliver(
        &self,
        env: &demail_smtp::Envelope,
        message: Vec<u8>,
    ) -> Result<demail_smtp::Accepted, demail_smtp::Reject> {
        let mode = self.0.mode.lock().unwrap().clone();
        match mode {
            SinkMode::Accept => {
                let mut r = self.0.received.lock().unwrap();
                r.push(Received {
                    mail_from: env.mail_from.clone(),
                    rcpt_to: env.rcpt_to.clone(),
                    auth_user: env.session.auth_user.clone(),
                    tls: env.session.tls,
                    message,
                });
                Ok(demail_smtp::Accepted { id: format!("SINK{}", r.len()) })
            }
            SinkMode::Reject(code, enh, text) => Err(demail_smtp::Reject::new(code, enh, text, text)),
        }
    }
}

/// A TLS SMTP server on 127.0.0.1 (STARTTLS or implicit), certificate from `pki`.
pub struct Sink {
    pub port: u16,
    pub state: Arc<SinkState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    pub fn start(pki: &Pki, implicit: bool, auth: Option<(&str, &str)>, port: Option<u16>) -> Sink {
        let state = Arc::new(SinkState {
            received: Mutex::new(Vec::new()),
            mode: Mutex::new(SinkMode::Accept),
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
        });
        let tls = demail_smtp::tls::server_config(&pki.server_cert, &pki.server_key, None).expect("tls config");
        let config = demail_smtp::Config {
            hostname: "gateway.test".into(),
            tls: Some(tls),
            implicit_tls: implicit,
            require_tls: true,
            offer_auth: auth.is_some(),
            require_auth: auth.is_some(),
            max_message_size: 64 * 1024 * 1024,
            ..Default::default()
        };
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", port.unwrap_or(0))).expect("bind sink");
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                tokio::select! {
                    _ = demail_smtp::serve(listener, Arc::new(config), Arc::new(SinkHandler(st))) => {}
                    _ = rx => {}
                }
            });
        });
        Sink { port, state, stop: Some(tx), thread: Some(thread) }
    }

    pub fn set_mode(&self, m: SinkMode) {
        *self.state.mode.lock().unwrap() = m;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn wait_received(&self, n: usize, timeout: Duration) -> Vec<Received> {
        demail_testkit::wait_until(timeout, || {
            let r = self.received();
            (r.len() >= n).then_some(r)
        })
        .unwrap_or_else(|| self.received())
    }

    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Machine config for a helper that relays to `port` on localhost with the test CA.
pub fn gateway_config(port: u16, ca: &Path, tls: &str, extra: &str) -> String {
    format!(
        "[gateway]\nhost = \"localhost\"\nport = {port}\ntls = \"{tls}\"\nca_file = \"{}\"\nca_only = true\ntimeout = 10\n\n[relay]\nretry_initial = 1\nretry_max = 2\npoll_interval = 1\n{extra}\n",
        ca.display()
    )
}

/// [`gateway_config`] with STARTTLS and SMTP AUTH as `user`, password from `backend`.
pub fn gateway_login_config(port: u16, ca: &Path, user: &str, backend: &str) -> String {
    gateway_config(port, ca, "starttls", "").replace(
        "timeout = 10\n",
        &format!("timeout = 10\nusername = \"{user}\"\n[secrets]\nbackend = \"{backend}\"\n"),
    )
}

pub fn demail_message(subject: &str) -> Value {
    json!({
        "from": "Peter Meier <peter.meier@musterstadt.de>",
        "to": ["Anna Bürger <anna@buerger.de-mail.de>"],
        "subject": subject,
        "text": "Sehr geehrte Frau Bürger,\r\n\r\nanbei der Bescheid.\r\n",
        "options": ["private", "confirmation-of-dispatch"],
    })
}

pub fn header_of<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    let head = msg.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A plain SMTP dialogue; returns every reply (code and text) in order.
pub fn smtp_dialogue(port: u16, steps: &[&str]) -> Vec<(u16, String)> {
    use std::io::BufRead;
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect smtp");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = std::io::BufReader::new(s);
    let mut read_reply = || -> (u16, String) {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return (0, text);
            }
            let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            text.push_str(line.get(4..).unwrap_or("").trim_end());
            text.push(' ');
            if line.as_bytes().get(3) != Some(&b'-') {
                return (code, text);
            }
        }
    };
    let mut out = vec![read_reply()];
    for step in steps {
        // A server that closed the connection (after a 421) ends the dialogue.
        if w.write_all(step.as_bytes()).and_then(|_| w.write_all(b"\r\n")).is_err() {
            out.push((0, String::new()));
            break;
        }
        // DATA content ends with "." and gets one reply; other lines one reply each.
        out.push(read_reply());
    }
    out
}
