//! A private Postfix instance from Debian's package, on a free loopback port, with
//! STARTTLS required and a certificate from the test CA. It runs from its own config,
//! queue and data directories (`postfix -c DIR`), logs to a file (no syslog needed), and
//! delivers everything by LMTP to the test Dovecot, or discards it.
//! Postfix's master must be started as root; elsewhere `start` returns an error.

use demail_testkit::{free_port, have, wait_for_port, Pki};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct Postfix {
    pub port: u16,
    pub dir: PathBuf,
    conf: PathBuf,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{:?}: {}{}", cmd, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

impl Postfix {
    /// `lmtp_port`: deliver to Dovecot's LMTP there; `None`: discard after queueing.
    pub fn start(base: &Path, pki: &Pki, lmtp_port: Option<u16>) -> Result<Postfix, String> {
        Postfix::start_with(base, pki, lmtp_port, true)
    }

    /// `tls_required = false` lets plain clients (smtp-source) in, for the benchmark baseline.
    pub fn start_with(base: &Path, pki: &Pki, lmtp_port: Option<u16>, tls_required: bool) -> Result<Postfix, String> {
        if !have("/usr/sbin/postfix") {
            return Err("postfix fehlt / missing: run scripts/setup test".into());
        }
        let uid = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
        if uid != "0" {
            return Err("Postfix' master braucht root / Postfix's master needs root".into());
        }
        // Postfix's daemons run as the postfix user and must reach their directories.
        let _ = Command::new("chmod").arg("0755").arg(base).status();
        let dir = base.join("postfix");
        let conf = dir.join("etc");
        for d in ["etc", "spool", "data"] {
            std::fs::create_dir_all(dir.join(d)).map_err(|e| e.to_string())?;
        }
        run(Command::new("chown").arg("postfix").arg(dir.join("data")))?;
        let port = free_port();
        let transport = match lmtp_port {
            Some(p) => format!("lmtp:inet:127.0.0.1:{p}"),
            None => "discard:".into(),
        };
        let d = dir.display();
        let main_cf = format!(
            r#"compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = localhost
mydestination =
mynetworks = 127.0.0.0/8
relay_domains =
smtpd_relay_restrictions = permit_mynetworks, reject
default_transport = {transport}
relay_transport = {transport}
local_transport = {transport}
alias_maps =
alias_database =
maillog_file_prefixes = /tmp, {d}
maillog_file = {d}/maillog
syslog_name = postfix-demail-test
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = {level}
smtpd_tls_loglevel = 1
message_size_limit = 52428800
"#,
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
            level = if tls_required { "encrypt" } else { "may" },
        );
        std::fs::write(conf.join("main.cf"), main_cf).map_err(|e| e.to_string())?;
        // Debian's master.cf with the public smtp listener moved to our port, without chroot.
        let master = std::fs::read_to_string("/etc/postfix/master.cf").map_err(|e| e.to_string())?;
        let mut out = String::new();
        for l in master.lines() {
            if l.starts_with("smtp ") && l.contains(" inet ") && l.trim_end().ends_with("smtpd") {
                out.push_str(&format!("127.0.0.1:{port} inet n - n - - smtpd\n"));
            } else {
                out.push_str(l);
                out.push('\n');
            }
        }
        std::fs::write(conf.join("master.cf"), out).map_err(|e| e.to_string())?;
        let _ = Command::new("postfix").arg("-c").arg(&conf).arg("check").output();
        run(Command::new("postfix").arg("-c").arg(&conf).arg("start"))?;
        let pf = Postfix { port, dir, conf };
        if !wait_for_port(port, Duration::from_secs(20)) {
            return Err(format!("postfix did not start: {}", pf.log()));
        }
        Ok(pf)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// Messages still in Postfix's queue (0 when all were delivered).
    pub fn queued(&self) -> usize {
        let mut n = 0;
        for q in ["incoming", "active", "deferred"] {
            n += count_files(&self.dir.join("spool").join(q));
        }
        n
    }
}

fn count_files(p: &Path) -> usize {
    std::fs::read_dir(p)
        .map(|r| r.flatten().map(|e| if e.path().is_dir() { count_files(&e.path()) } else { 1 }).sum())
        .unwrap_or(0)
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix").arg("-c").arg(&self.conf).arg("stop").output();
        // `stop` waits for the master; if it hangs around, `abort`.
        std::thread::sleep(Duration::from_millis(200));
        if wait_for_port(self.port, Duration::from_millis(100)) {
            let _ = Command::new("postfix").arg("-c").arg(&self.conf).arg("abort").output();
        }
    }
}
