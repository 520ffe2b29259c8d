//! Durable spool: one file per message (`<id>.msg`: a JSON envelope line, then the
//! exact message bytes), written to `tmp/`, fsynced, renamed into `queue/`, and the
//! directory fsynced. Only then does the SMTP side answer 250. Delivery state
//! (attempts, next try, last error) lives beside it in `<id>.state`, replaced atomically.

use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// To a De-Mail provider.
    Provider,
    /// To the internal mail server (inbound De-Mail, DSNs, internal copies).
    Internal,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub id: String,
    pub kind: Kind,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// Unix seconds.
    pub created: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_id: Option<String>,
    /// Provider name for [`Kind::Provider`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Internal address to bounce to on permanent failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce_to: Option<String>,
    /// Message-ID of the submission (duplicate detection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Billing facts, so the archive record can be (re)written from the spool alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_unit: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Who submitted it (the archive's actor, `kerberos:peter@REALM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub attempts: u32,
    /// Unix seconds; 0 = now.
    pub next_try: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Recipients already delivered (per-recipient targets such as LMTP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done_rcpts: Vec<String>,
    /// Of those, the ones refused for good by the provider and reported to the sender.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bounced_rcpts: Vec<String>,
    /// Parked for an administrator (`queue retry` releases it).
    #[serde(default)]
    pub held: bool,
}

pub struct Spool {
    queue: PathBuf,
    tmp: PathBuf,
}

/// Longest envelope line we read back (guards against a corrupted file).
const META_MAX: u64 = 1024 * 1024;

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // A failing OS RNG is not recoverable in any useful way; fall back to the clock.
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8;
        }
    }
    b
}

/// A queue id: time-ordered and unique (`19a3f…-5c2e9a01`).
pub fn new_id() -> String {
    let r = random_bytes::<4>();
    format!("{:012x}-{:02x}{:02x}{:02x}{:02x}", now_millis(), r[0], r[1], r[2], r[3])
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write `data` to `tmp`, fsync, rename to `dest`, fsync the directory. `tmp` gets a
/// random suffix: the gateway and an administrator's `queue retry` may write the same
/// state file at once, and neither may rename the other's half-written file.
fn write_durable(tmp: &Path, dest: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let r = random_bytes::<6>();
    let mut name = tmp.as_os_str().to_owned();
    name.push(format!(".{}", r.iter().map(|b| format!("{b:02x}")).collect::<String>()));
    let tmp = &PathBuf::from(name);
    {
        let mut f = File::create(tmp)?;
        for p in parts {
            f.write_all(p)?;
        }
        f.sync_all()?;
    }
    fs::rename(tmp, dest)?;
    fsync_dir(dest.parent().unwrap_or(Path::new(".")))
}

impl Spool {
    /// Open (and create) the spool. Writes nothing else: the command line opens the
    /// spool of a running gateway, whose writes in `tmp/` are in progress.
    pub fn open(dir: &Path) -> std::io::Result<Spool> {
        let queue = dir.join("queue");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&queue)?;
        fs::create_dir_all(&tmp)?;
        Ok(Spool { queue, tmp })
    }

    /// Can a message be written now (readiness): a file created and removed in `tmp/`.
    pub fn probe(&self) -> std::io::Result<()> {
        let p = self
            .tmp
            .join(format!("probe-{}", random_bytes::<6>().iter().map(|b| format!("{b:02x}")).collect::<String>()));
        File::create(&p)?.write_all(b"probe")?;
        fs::remove_file(&p)
    }

    /// At the gateway's start: remove what a crash left behind.
    pub fn clean(&self) -> std::io::Result<()> {
        // Leftovers of writes interrupted by a crash were never acknowledged.
        for e in fs::read_dir(&self.tmp)?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        // A state file whose message is gone (crash between the two unlinks of `remove`).
        for e in fs::read_dir(&self.queue)?.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "state" || x == "sending") && !p.with_extension("msg").exists() {
                let _ = fs::remove_file(&p);
            }
        }
        Ok(())
    }

    fn msg_path(&self, id: &str) -> PathBuf {
        self.queue.join(format!("{id}.msg"))
    }
    fn state_path(&self, id: &str) -> PathBuf {
        self.queue.join(format!("{id}.state"))
    }
    fn sending_path(&self, id: &str) -> PathBuf {
        self.queue.join(format!("{id}.sending"))
    }

    /// Note that DATA to the provider is about to start: from here on the provider may
    /// hold the message although we never see its 250. Not fsynced on purpose: it only
    /// has to survive the process (kill -9), and it is a diagnosis, not a commit point.
    /// A hard link to the message, not a new empty file: a link allocates no inode, and
    /// allocating one per message cost ext4 more CPU than the rest of the marker.
    pub fn mark_sending(&self, id: &str) {
        if valid_id(id) {
            let _ = fs::hard_link(self.msg_path(id), self.sending_path(id));
        }
    }

    /// Was a DATA phase of this message interrupted (crash) or left unanswered?
    pub fn was_sending(&self, id: &str) -> bool {
        valid_id(id) && self.sending_path(id).exists()
    }

    pub fn clear_sending(&self, id: &str) {
        if valid_id(id) {
            let _ = fs::remove_file(self.sending_path(id));
        }
    }

    /// Store a message durably. Returns after fsync of file and directory.
    pub fn put(&self, meta: &Meta, message: &[u8]) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
        line.push(b'\n');
        write_durable(&self.tmp.join(format!("{}.msg", meta.id)), &self.msg_path(&meta.id), &[&line, message])
    }

    pub fn set_state(&self, id: &str, st: &State) -> std::io::Result<()> {
        let data = serde_json::to_vec(st).map_err(std::io::Error::other)?;
        write_durable(&self.tmp.join(format!("{id}.state")), &self.state_path(id), &[&data])
    }

    pub fn state(&self, id: &str) -> State {
        fs::read(self.state_path(id)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn read_meta(path: &Path) -> std::io::Result<(Meta, BufReader<File>)> {
        let mut r = BufReader::new(File::open(path)?);
        let mut line = Vec::new();
        (&mut r).take(META_MAX).read_until(b'\n', &mut line)?;
        let meta: Meta =
            serde_json::from_slice(&line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok((meta, r))
    }

    pub fn load(&self, id: &str) -> std::io::Result<(Meta, Vec<u8>)> {
        if !valid_id(id) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid id"));
        }
        let path = self.msg_path(id);
        let len = fs::metadata(&path)?.len() as usize;
        let (meta, mut r) = Self::read_meta(&path)?;
        // Exact size up front: no doubling reallocations for large messages.
        let mut body = Vec::with_capacity(len);
        r.read_to_end(&mut body)?;
        Ok((meta, body))
    }

    /// Every queued message with its state, oldest first.
    pub fn list(&self) -> std::io::Result<Vec<(Meta, State)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.queue)?.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("msg") {
                continue;
            }
            match Self::read_meta(&p) {
                Ok((m, _)) => {
                    let st = self.state(&m.id);
                    out.push((m, st));
                }
                Err(err) => {
                    tracing::warn!(file = %p.display(), error = %err, "unreadable spool file left in place")
                }
            }
        }
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(out)
    }

    pub fn exists(&self, id: &str) -> bool {
        valid_id(id) && self.msg_path(id).is_file()
    }

    /// Forget a message (delivered, bounced or dropped by an administrator).
    pub fn remove(&self, id: &str) -> std::io::Result<()> {
        if !valid_id(id) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid id"));
        }
        fs::remove_file(self.msg_path(id))?;
        let _ = fs::remove_file(self.state_path(id));
        let _ = fs::remove_file(self.sending_path(id));
        fsync_dir(&self.queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_list_load_remove() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        let m = Meta {
            id: new_id(),
            kind: Kind::Provider,
            mail_from: "a@x.de-mail.de".into(),
            rcpt_to: vec!["b@y.de-mail.de".into()],
            created: now(),
            private_id: Some("AZ 1".into()),
            provider: Some("p".into()),
            bounce_to: Some("a@x.de".into()),
            message_id: None,
            cost_unit: None,
            options: vec![],
            actor: None,
        };
        s.put(&m, b"Subject: x\r\n\r\nbody\n\xff").unwrap();
        let l = s.list().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].1.attempts, 0);
        let (m2, body) = s.load(&m.id).unwrap();
        assert_eq!(m2.rcpt_to, m.rcpt_to);
        assert_eq!(body, b"Subject: x\r\n\r\nbody\n\xff");
        s.set_state(&m.id, &State { attempts: 2, next_try: 5, ..State::default() }).unwrap();
        assert_eq!(s.state(&m.id).attempts, 2);
        // Survives reopening (a restart).
        let s = Spool::open(d.path()).unwrap();
        assert_eq!(s.list().unwrap()[0].1.attempts, 2);
        s.remove(&m.id).unwrap();
        assert!(s.list().unwrap().is_empty());
        // An orphaned state file (crash between the two unlinks) and a half-written file
        // are cleaned at the gateway's start, not when the command line opens the spool.
        std::fs::write(d.path().join("queue/abc-1.state"), b"{}").unwrap();
        std::fs::write(d.path().join("tmp/abc-2.msg.0123"), b"half").unwrap();
        let s = Spool::open(d.path()).unwrap();
        assert!(d.path().join("tmp/abc-2.msg.0123").exists());
        s.clean().unwrap();
        assert!(!d.path().join("queue/abc-1.state").exists());
        assert!(!d.path().join("tmp/abc-2.msg.0123").exists());
        assert!(s.load("../../etc/passwd").is_err());
    }
}
