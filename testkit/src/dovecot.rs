//! An unprivileged Dovecot (IMAP + LMTP, maildir, static passdb) from Debian's packages.

use crate::ports::{free_port, wait_for_port};
use crate::process::{have, open_for_nobody, wait_until, whoami, ChildGuard};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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
        Dovecot::start_with_sieve(dir, None)
    }

    /// As [`Dovecot::start`]; with `sieve`, LMTP runs that Sieve script before each user's
    /// own (Pigeonhole's `sieve_before`), as IT would set up the gateway's keyword script.
    pub fn start_with_sieve(dir: &Path, sieve: Option<&str>) -> Result<Dovecot, String> {
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
        let sieve_conf = match sieve {
            Some(script) => {
                let sdir = dir.join("sieve");
                fs::create_dir_all(&sdir).map_err(|e| e.to_string())?;
                let path = sdir.join("before.sieve");
                fs::write(&path, script).map_err(|e| e.to_string())?;
                // Compiled here, so the delivering user (nobody) need not write beside it.
                let out = Command::new("/usr/bin/sievec")
                    .arg(&path)
                    .output()
                    .map_err(|e| format!("sievec fehlt / missing ({e}): run scripts/setup test (dovecot-sieve)"))?;
                if !out.status.success() {
                    return Err(format!("sievec: {}", String::from_utf8_lossy(&out.stderr)));
                }
                open_for_nobody(&dir, &sdir);
                format!(
                    "protocol lmtp {{\n  mail_plugins = $mail_plugins sieve\n}}\nplugin {{\n  sieve_before = {}\n}}\n",
                    path.display()
                )
            }
            None => String::new(),
        };
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
{sieve_conf}"#
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
        self.files(address).into_iter().filter_map(|p| fs::read(p).ok()).collect()
    }

    /// The maildir files of `address` (`new/` and `cur/`), oldest first.
    fn files(&self, address: &str) -> Vec<PathBuf> {
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
        files.into_iter().map(|(_, p)| p).collect()
    }

    /// The IMAP keywords of each message of `address` (same order as [`Dovecot::messages`]),
    /// read from the maildir: `dovecot-keywords` maps the letters after `:2,` to names.
    pub fn keywords(&self, address: &str) -> Vec<Vec<String>> {
        let base = self.dir.join("mail").join(address);
        let names: Vec<(char, String)> = fs::read_to_string(base.join("dovecot-keywords"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (i, name) = l.split_once(' ')?;
                let c = char::from(b'a' + i.parse::<u8>().ok().filter(|i| *i < 26)?);
                Some((c, name.to_string()))
            })
            .collect();
        self.files(address)
            .into_iter()
            .map(|p| {
                let f = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                let flags = f.rsplit_once(":2,").map(|(_, fl)| fl.to_string()).unwrap_or_default();
                names.iter().filter(|(c, _)| flags.contains(*c)).map(|(_, n)| n.clone()).collect()
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    #[test]
    fn dovecot_accepts_lmtp() {
        let d = crate::temp_dir();
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
}
