//! Postfix: `smtp-sink` as a dumping SMTP server, and a private Postfix instance (root only).

use crate::ca::Pki;
use crate::ports::{free_port, wait_for_port};
use crate::process::{have, open_for_nobody, whoami, ChildGuard};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

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
    use std::io::Write;
    use std::net::TcpStream;

    #[test]
    fn smtp_sink_dumps() {
        let d = crate::temp_dir();
        let sink = SmtpSink::start(d.path()).unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", sink.port)).unwrap();
        s.write_all(b"EHLO t\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nDATA\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        s.write_all(b"Subject: x\r\n\r\nhello-sink\r\n.\r\nQUIT\r\n").unwrap();
        // A dump file appears before smtp-sink has finished writing it.
        let got = crate::wait_until(Duration::from_secs(10), || {
            sink.dumps().into_iter().find(|d| String::from_utf8_lossy(d).contains("hello-sink"))
        });
        assert!(got.is_some());
    }
}
