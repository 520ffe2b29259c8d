//! Test helpers shared by the gateway and helper test suites (dev-dependency only).
//!
//! - [`Pki`]: a CA, a server certificate for `localhost`/`127.0.0.1` and a client
//!   certificate, generated at test time and written as PEM files.
//! - [`free_port`], [`wait_for_port`]: loopback ports.
//! - [`ChildGuard`]: a child process that is killed when the guard drops.
//! - [`Dovecot`]: an unprivileged Dovecot (IMAP + LMTP, maildir, static passdb) from Debian.
//! - [`SmtpSink`]: Postfix's `smtp-sink`, dumping every message to a directory.
//! - [`Postfix`]: a private Postfix instance (root only) with extra `main.cf` lines,
//!   e.g. as a relay in front of the system under test.
//!
//! The Debian packages come from `scripts/setup test` (dovecot-imapd, dovecot-lmtpd, postfix, swaks).

pub mod kdc;
pub mod ldap;

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use tempfile::TempDir;

/// A fresh temporary directory, removed on drop.
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new().prefix("demail-test-").tempdir().expect("create temp dir")
}

/// PEM files of a test PKI. Paths are absolute.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    /// CA certificate as PEM text.
    pub ca_pem: String,
    /// Server certificate for `localhost` and `127.0.0.1`.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Client certificate (for mutual TLS), CN `demail-test-client`.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    /// Generate a CA and certificates into `dir` (file names prefixed with `name`).
    pub fn generate(dir: &Path, name: &str) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.distinguished_name.push(DnType::CommonName, format!("demail test CA {name}"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |sans: Vec<String>, cn: &str, eku: ExtendedKeyUsagePurpose| {
            let mut p = CertificateParams::new(sans).expect("leaf params");
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![eku];
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
            let key = KeyPair::generate().expect("leaf key");
            let cert = p.signed_by(&key, &issuer).expect("sign leaf");
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key_pem) =
            leaf(vec!["localhost".into(), "127.0.0.1".into()], "localhost", ExtendedKeyUsagePurpose::ServerAuth);
        let (client_pem, client_key_pem) =
            leaf(vec!["demail-test-client".into()], "demail-test-client", ExtendedKeyUsagePurpose::ClientAuth);

        let write = |file: &str, text: &str| {
            let p = dir.join(format!("{name}-{file}"));
            fs::write(&p, text).expect("write pem");
            p
        };
        let ca_pem = ca_cert.pem();
        Pki {
            ca_cert: write("ca.pem", &ca_pem),
            ca_pem,
            server_cert: write("server.pem", &server_pem),
            server_key: write("server-key.pem", &server_key_pem),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client-key.pem", &client_key_pem),
        }
    }
}

/// A free TCP port on 127.0.0.1 for a server a test starts.
///
/// Not bind-to-0: the kernel hands those out from the ephemeral range, where outgoing
/// connections and parallel test processes (nextest) pick the same port again before our
/// server binds it. Instead a port below the ephemeral range is claimed across processes
/// with a marker file (create-new), then checked to be bindable.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let dir = std::env::temp_dir().join("demail-test-ports");
    let _ = std::fs::create_dir_all(&dir);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let mut x = h.finish();
    for _ in 0..2000 {
        // xorshift: a cheap sequence over 20000..32000 without a rand dependency.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20000 + (x % 12000) as u16;
        let claim = dir.join(port.to_string());
        let stale = std::fs::metadata(&claim)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(1800));
        if stale {
            let _ = std::fs::remove_file(&claim);
        }
        if std::fs::OpenOptions::new().write(true).create_new(true).open(&claim).is_err() {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000")
}

/// Wait until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Poll `f` until it returns `Some` or the timeout passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process, killed (SIGKILL) and reaped when dropped.
pub struct ChildGuard {
    child: Option<Child>,
    pub name: String,
}

impl ChildGuard {
    /// Start `cmd`; stdout and stderr go to `log` when given, else are discarded.
    pub fn spawn(name: &str, mut cmd: Command, log: Option<&Path>) -> std::io::Result<ChildGuard> {
        match log {
            Some(p) => {
                let f = fs::OpenOptions::new().create(true).append(true).open(p)?;
                cmd.stdout(f.try_clone()?).stderr(f);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        cmd.stdin(Stdio::null());
        let child = cmd.spawn()?;
        Ok(ChildGuard { child: Some(child), name: name.to_string() })
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL now (a crash, not a shutdown) and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Polite stop: SIGTERM, then SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        if let Some(c) = self.child.as_mut() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let end = Instant::now() + grace;
            while Instant::now() < end {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// Has the process exited? Returns its status if so.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Is `program` on PATH (or an existing absolute path)?
pub fn have(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file())).unwrap_or(false)
}

/// As root, the services below drop to `nobody`, which must reach `dir`: open it for traversal.
fn open_for_nobody(dir: &Path, writable: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if whoami().1 == 0 {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
        let _ = fs::set_permissions(writable, fs::Permissions::from_mode(0o777));
    }
}

fn whoami() -> (String, u32, u32, String) {
    let out = |args: &[&str]| {
        Command::new("id")
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let user = out(&["-un"]);
    let uid = out(&["-u"]).parse().unwrap_or(0);
    let gid = out(&["-g"]).parse().unwrap_or(0);
    let group = out(&["-gn"]);
    (user, uid, gid, group)
}

/// An unprivileged Dovecot on loopback: IMAP and LMTP without TLS, any user,
/// password `test`, mail in `<dir>/mail/<full address>/` (maildir).
pub struct Dovecot {
    pub imap_port: u16,
    pub lmtp_port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
    _guard: ChildGuard,
}

impl Dovecot {
    /// Start Dovecot from a private config under `dir`; waits until both ports answer.
    pub fn start(dir: &Path) -> Result<Dovecot, String> {
        let bin = "/usr/sbin/dovecot";
        if !have(bin) {
            return Err("dovecot fehlt / missing: run scripts/setup test (dovecot-imapd dovecot-lmtpd)".into());
        }
        let dir = dir.join("dovecot");
        for sub in ["run", "state", "mail"] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
        }
        let (imap_port, lmtp_port) = (free_port(), free_port());
        let (user, uid, gid, group) = whoami();
        // Dovecot refuses to store mail as root: deliver as nobody then.
        let (uid, gid) = if uid == 0 { (65534, 65534) } else { (uid, gid) };
        open_for_nobody(dir.parent().unwrap_or(&dir), &dir.join("mail"));
        open_for_nobody(&dir, &dir.join("mail"));
        // As root, Dovecot wants unprivileged accounts for its login and internal processes.
        let (login_user, internal_user) =
            if uid == 0 { ("dovenull".to_string(), "dovecot".to_string()) } else { (user.clone(), user.clone()) };
        let log = dir.join("dovecot.log");
        let d = dir.display();
        let conf = format!(
            r#"# Private test instance; nothing here touches the system Dovecot.
base_dir = {d}/run
state_dir = {d}/state
instance_name = demail-test-{imap_port}
listen = 127.0.0.1
protocols = imap lmtp
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {group}
first_valid_uid = 0
first_valid_gid = 0
mail_location = maildir:{d}/mail/%u
lmtp_save_to_detail_mailbox = no
passdb {{
  driver = static
  args = password=test
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%u allow_all_users=yes
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
"#
        );
        let conf_path = dir.join("dovecot.conf");
        fs::File::create(&conf_path).and_then(|mut f| f.write_all(conf.as_bytes())).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.arg("-F").arg("-c").arg(&conf_path);
        let guard = ChildGuard::spawn("dovecot", cmd, Some(&dir.join("dovecot.stderr"))).map_err(|e| e.to_string())?;
        let ok = wait_for_port(imap_port, Duration::from_secs(15)) && wait_for_port(lmtp_port, Duration::from_secs(15));
        if !ok {
            let err = fs::read_to_string(dir.join("dovecot.stderr")).unwrap_or_default()
                + &fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("dovecot did not start: {err}"));
        }
        Ok(Dovecot { imap_port, lmtp_port, dir, log, _guard: guard })
    }

    /// Messages delivered to `address` (maildir `new/` and `cur/`), oldest first.
    /// Maildir stores LF line ends, and Dovecot prepends Return-Path, Delivered-To and Received.
    pub fn messages(&self, address: &str) -> Vec<Vec<u8>> {
        let base = self.dir.join("mail").join(address);
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = fs::read_dir(base.join(sub)) {
                for e in rd.flatten() {
                    let t = e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
                    files.push((t, e.path()));
                }
            }
        }
        files.sort();
        files.into_iter().filter_map(|(_, p)| fs::read(p).ok()).collect()
    }

    /// Wait until `address` holds at least `n` messages; returns them.
    pub fn wait_for_messages(&self, address: &str, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        wait_until(timeout, || {
            let m = self.messages(address);
            (m.len() >= n).then_some(m)
        })
        .unwrap_or_else(|| self.messages(address))
    }
}

/// Postfix's `smtp-sink` on loopback (plain SMTP, no TLS), saving each message
/// as a file in `dump_dir`.
pub struct SmtpSink {
    pub port: u16,
    pub dump_dir: PathBuf,
    _guard: ChildGuard,
}

impl SmtpSink {
    pub fn start(dir: &Path) -> Result<SmtpSink, String> {
        let bin = "/usr/sbin/smtp-sink";
        if !have(bin) {
            return Err("smtp-sink fehlt / missing: run scripts/setup test (postfix)".into());
        }
        let dump_dir = dir.join("smtp-sink");
        fs::create_dir_all(&dump_dir).map_err(|e| e.to_string())?;
        let port = free_port();
        let mut cmd = Command::new(bin);
        // -d: one file per message (strftime template + unique suffix); -u: needed as root.
        cmd.arg("-d").arg(format!("{}/%M.", dump_dir.display()));
        if whoami().1 == 0 {
            // smtp-sink drops to nobody before writing.
            cmd.arg("-u").arg("nobody");
            open_for_nobody(dir, &dump_dir);
        }
        cmd.arg(format!("127.0.0.1:{port}")).arg("100");
        let guard = ChildGuard::spawn("smtp-sink", cmd, Some(&dir.join("smtp-sink.log"))).map_err(|e| e.to_string())?;
        if !wait_for_port(port, Duration::from_secs(10)) {
            return Err("smtp-sink did not start".into());
        }
        Ok(SmtpSink { port, dump_dir, _guard: guard })
    }

    /// All dumped messages (smtp-sink's dump format: `X-Rcpt-Args:` and other
    /// envelope lines, then the message). A file may still be growing: poll.
    pub fn dumps(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut stack = vec![self.dump_dir.clone()];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = fs::read_dir(&d) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if let Ok(b) = fs::read(&p) {
                        out.push(b);
                    }
                }
            }
        }
        out
    }
}

/// A private Postfix instance (needs root: Postfix's master starts as root and
/// drops to the `postfix` user). Listens for SMTP on 127.0.0.1:`port`; `main_cf`
/// adds or overrides settings (e.g. `relayhost`). Stopped on drop.
pub struct Postfix {
    pub port: u16,
    pub dir: PathBuf,
    conf: PathBuf,
}

impl Postfix {
    pub fn start(dir: &Path, main_cf: &str) -> Result<Postfix, String> {
        if !have("/usr/sbin/postfix") {
            return Err("postfix fehlt / missing: run scripts/setup test".into());
        }
        if whoami().1 != 0 {
            return Err("a private Postfix needs root / eine eigene Postfix-Instanz braucht root".into());
        }
        let dir = dir.join("postfix");
        let conf = dir.join("conf");
        for sub in ["conf", "queue", "data"] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
        }
        open_for_nobody(dir.parent().unwrap_or(&dir), &dir.join("data"));
        let _ = Command::new("chown").arg("postfix").arg(dir.join("data")).status();
        let port = free_port();
        let d = dir.display();
        let main = format!(
            "compatibility_level = 3.6\nqueue_directory = {d}/queue\ndata_directory = {d}/data\nmail_owner = postfix\nsetgid_group = postdrop\n\
             inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmyhostname = postfix-test.localdomain\nmydestination =\nmynetworks = 127.0.0.0/8\n\
             maillog_file = {d}/maillog\nmaillog_file_prefixes = {d}\nsmtputf8_enable = no\nalias_maps =\nalias_database =\n{main_cf}\n"
        );
        fs::write(conf.join("main.cf"), main).map_err(|e| e.to_string())?;
        let services = [
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "tlsmgr unix - - n 1000? 1 tlsmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "local unix - n n - - local",
            "lmtp unix - - n - - lmtp",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ];
        let master = format!("127.0.0.1:{port} inet n - n - - smtpd\n{}\n", services.join("\n"));
        fs::write(conf.join("master.cf"), master).map_err(|e| e.to_string())?;
        let out =
            Command::new("/usr/sbin/postfix").arg("-c").arg(&conf).arg("start").output().map_err(|e| e.to_string())?;
        let pf = Postfix { port, dir: dir.clone(), conf };
        if !out.status.success() || !wait_for_port(port, Duration::from_secs(15)) {
            return Err(format!(
                "postfix did not start: {}{}",
                String::from_utf8_lossy(&out.stderr),
                fs::read_to_string(dir.join("maillog")).unwrap_or_default()
            ));
        }
        Ok(pf)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// The internal-mail-server stand-in the helper tests use: STARTTLS with a test-CA
    /// certificate (required, or offered with `tls_required = false` for plain clients
    /// such as smtp-source), relaying everything from loopback by LMTP to `lmtp_port`
    /// (Dovecot), or discarding it after queueing with `None`.
    pub fn start_lmtp_relay(
        dir: &Path,
        pki: &Pki,
        lmtp_port: Option<u16>,
        tls_required: bool,
    ) -> Result<Postfix, String> {
        let transport = match lmtp_port {
            Some(p) => format!("lmtp:inet:127.0.0.1:{p}"),
            None => "discard:".into(),
        };
        Postfix::start(
            dir,
            &format!(
                "relay_domains =\nsmtpd_relay_restrictions = permit_mynetworks, reject\n\
                 default_transport = {transport}\nrelay_transport = {transport}\nlocal_transport = {transport}\n\
                 smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\nsmtpd_tls_security_level = {}\n\
                 smtpd_tls_loglevel = 1\nmessage_size_limit = 52428800\n",
                pki.server_cert.display(),
                pki.server_key.display(),
                if tls_required { "encrypt" } else { "may" },
            ),
        )
    }

    /// Messages still in the queue (0 when everything was delivered).
    pub fn queued(&self) -> usize {
        fn count(p: &Path) -> usize {
            fs::read_dir(p)
                .map(|r| r.flatten().map(|e| if e.path().is_dir() { count(&e.path()) } else { 1 }).sum())
                .unwrap_or(0)
        }
        ["incoming", "active", "deferred"].iter().map(|q| count(&self.dir.join("queue").join(q))).sum()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&self.conf)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pki_files_exist() {
        let d = temp_dir();
        let p = Pki::generate(d.path(), "t");
        assert!(p.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        for f in [&p.ca_cert, &p.server_cert, &p.server_key, &p.client_cert, &p.client_key] {
            assert!(f.is_file());
        }
    }

    #[test]
    fn guard_kills_child() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut g = ChildGuard::spawn("sleep", cmd, None).unwrap();
        assert!(g.try_wait().is_none());
        g.kill();
        assert!(g.id() == 0);
    }

    #[test]
    fn dovecot_accepts_lmtp() {
        let d = temp_dir();
        let dc = Dovecot::start(d.path()).unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", dc.lmtp_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let script = "LHLO test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<box@stadt.de>\r\nDATA\r\n";
        s.write_all(script.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        s.write_all(b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n").unwrap();
        let got = dc.wait_for_messages("box@stadt.de", 1, Duration::from_secs(10));
        assert_eq!(got.len(), 1, "log: {}", fs::read_to_string(&dc.log).unwrap_or_default());
    }

    #[test]
    fn smtp_sink_dumps() {
        let d = temp_dir();
        let sink = SmtpSink::start(d.path()).unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", sink.port)).unwrap();
        s.write_all(b"EHLO t\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nDATA\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        s.write_all(b"Subject: x\r\n\r\nhello-sink\r\n.\r\nQUIT\r\n").unwrap();
        // A dump file appears before smtp-sink has finished writing it.
        let got = wait_until(Duration::from_secs(10), || {
            sink.dumps().into_iter().find(|d| String::from_utf8_lossy(d).contains("hello-sink"))
        });
        assert!(got.is_some());
    }
}

/// A `demail-gateway` configuration for tests, written as the TOML the binary reads.
/// The gateway and helper suites both start the real binary from it ([`start_gateway`]).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub dir: PathBuf,
    /// Policy file name, relative to `dir`.
    pub policy: String,
    pub server_pki_cert: PathBuf,
    pub server_pki_key: PathBuf,
    pub out_port: u16,
    pub in_port: u16,
    pub lmtp_port: u16,
    /// Outbound users: `(name, environment variable with the password)`.
    pub users: Vec<(String, String)>,
    /// Inbound mutual TLS: the provider's client certificates must chain to this CA.
    pub inbound_client_ca: Option<PathBuf>,
    pub provider_port: u16,
    pub provider_ca: PathBuf,
    /// Client certificate and key for mutual TLS towards the provider.
    pub provider_client: Option<(PathBuf, PathBuf)>,
    pub provider_tls_name: Option<String>,
    pub provider_user: String,
    /// Environment variable with the provider secret.
    pub provider_secret_env: String,
    /// Extra TOML appended at the end (e.g. `[seal]`).
    pub extra: String,
}

impl GatewayConfig {
    pub fn to_toml(&self) -> String {
        let d = self.dir.display();
        let users: Vec<String> =
            self.users.iter().map(|(n, env)| format!("{{ name = \"{n}\", password_env = \"{env}\" }}")).collect();
        let client_ca =
            self.inbound_client_ca.as_ref().map(|c| format!("client_ca = \"{}\"\n", c.display())).unwrap_or_default();
        let client = self
            .provider_client
            .as_ref()
            .map(|(c, k)| format!("client_cert = \"{}\"\nclient_key = \"{}\"\n", c.display(), k.display()))
            .unwrap_or_default();
        let tls_name = self.provider_tls_name.as_ref().map(|n| format!("tls_name = \"{n}\"\n")).unwrap_or_default();
        format!(
            "[gateway]\nhostname = \"gw.musterstadt.de\"\nspool_dir = \"{d}/spool\"\narchive_db = \"{d}/archive/archive.sqlite\"\n\
             policy = \"{policy}\"\npostmaster = \"postmaster@musterstadt.de\"\n\n\
             [tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n\n\
             [outbound]\nlisten = \"127.0.0.1:{out}\"\ntls = \"starttls\"\nrequire_auth = true\nallowed_clients = [\"127.0.0.0/8\"]\n\
             max_message_size = 12000000\nusers = [{users}]\n\n\
             [inbound]\nlisten = \"127.0.0.1:{inp}\"\ntls = \"implicit\"\n{client_ca}allowed_clients = [\"127.0.0.1\"]\n\
             deliver = {{ protocol = \"lmtp\", host = \"127.0.0.1\", port = {lmtp}, tls = \"none\" }}\n\n\
             [[providers]]\nname = \"test-dmda\"\ndomains = [\"musterstadt.de-mail.de\"]\nhost = \"127.0.0.1\"\nport = {pport}\n\
             tls = \"implicit\"\n{tls_name}ca = \"{pca}\"\n{client}username = \"{puser}\"\nsecret_env = \"{penv}\"\n\n\
             [queue]\nretry_initial_secs = 1\nretry_max_secs = 2\ngive_up_after_secs = 3600\nscan_interval_ms = 100\n{extra}",
            policy = self.policy,
            cert = self.server_pki_cert.display(),
            key = self.server_pki_key.display(),
            out = self.out_port,
            users = users.join(", "),
            inp = self.in_port,
            lmtp = self.lmtp_port,
            pport = self.provider_port,
            pca = self.provider_ca.display(),
            puser = self.provider_user,
            penv = self.provider_secret_env,
            extra = self.extra,
        )
    }
}

/// Run `cmd` (a `demail-gateway … serve` command line with the secrets' environment),
/// logging to `log`, and wait until both listeners answer.
pub fn start_gateway(mut cmd: Command, out_port: u16, in_port: u16, log: &Path) -> Result<ChildGuard, String> {
    cmd.env("RUST_LOG", "info");
    let g = ChildGuard::spawn("demail-gateway", cmd, Some(log)).map_err(|e| e.to_string())?;
    if !wait_for_port(out_port, Duration::from_secs(20)) || !wait_for_port(in_port, Duration::from_secs(5)) {
        return Err(format!("gateway did not start: {}", fs::read_to_string(log).unwrap_or_default()));
    }
    Ok(g)
}
