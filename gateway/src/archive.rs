//! Audit-proof archive: append-only entries in a hash chain, SQLite by default.
//!
//! Each entry stores the exact message bytes, their SHA-256, and the hash of the
//! previous entry; the newest (seq, hash) is also written to `<db>.head` so that
//! removing the last entries is detected too. Triggers refuse UPDATE and DELETE;
//! `verify` catches what someone does around them.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What the gateway records.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// `out` (to the provider), `in` (De-Mail received), `receipt`, `notification`, `malware`.
    pub direction: &'a str,
    pub private_id: Option<&'a str>,
    pub message_id: Option<&'a str>,
    pub sender: &'a str,
    pub recipients: &'a [String],
    /// The exact bytes relayed or received.
    pub data: &'a [u8],
}

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub seq: i64,
    /// Unix milliseconds.
    pub time: i64,
    pub direction: String,
    pub private_id: Option<String>,
    pub message_id: Option<String>,
    pub sender: String,
    pub recipients: String,
    pub sha256: String,
    pub size: i64,
    /// Seq of the sent De-Mail a receipt or notification belongs to.
    pub link: Option<i64>,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub seq: Option<i64>,
    pub code: &'static str,
    pub message: String,
    pub message_en: String,
}

/// Storage behind the archive. SQLite here; PostgreSQL can implement the same.
pub trait Archive: Send + Sync {
    fn append(&self, e: &NewEntry<'_>) -> Result<Entry, String>;
    /// All entries without their data, in order.
    fn entries(&self) -> Result<Vec<Entry>, String>;
    fn data(&self, seq: i64) -> Result<Vec<u8>, String>;
    /// Empty when intact.
    fn verify(&self) -> Result<Vec<Problem>, String>;
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Hash of one entry: JSON of every field in a fixed order, so no separator is ambiguous.
fn entry_hash(e: &Entry) -> String {
    let canon = serde_json::json!([
        e.prev_hash,
        e.seq,
        e.time,
        e.direction,
        e.private_id,
        e.message_id,
        e.sender,
        e.recipients,
        e.sha256,
        e.size,
        e.link
    ]);
    sha256_hex(canon.to_string().as_bytes())
}

/// Writes use group commit: each writer adds its rows to one shared open transaction
/// (in its own savepoint) and then waits until that transaction is committed. Whoever
/// commits takes everyone who joined meanwhile, so parallel sessions share one fsync
/// round (WAL commit plus head file) instead of queueing one round each. A caller still
/// returns only after its rows are durable.
pub struct SqliteArchive {
    conn: Mutex<Db>,
    head: PathBuf,
    /// One committer at a time, in generation order.
    commit_gate: Mutex<()>,
    finished: Mutex<Finished>,
}

struct Db {
    c: Connection,
    /// Generation of the open shared transaction.
    open: Option<u64>,
    next_gen: u64,
    /// Newest entry written in the open transaction (for the head file).
    last: Option<(i64, String)>,
}

/// Highest finished generation, and the errors of recently failed ones.
#[derive(Default)]
struct Finished {
    upto: u64,
    failed: HashMap<u64, String>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    direction TEXT NOT NULL,
    private_id TEXT,
    message_id TEXT,
    sender TEXT NOT NULL,
    recipients TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    link INTEGER,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_private_id ON entries(private_id);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries BEGIN SELECT RAISE(ABORT, 'archive is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries BEGIN SELECT RAISE(ABORT, 'archive is append-only'); END;
CREATE TABLE IF NOT EXISTS billing (
    id INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    queue_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    cost_unit TEXT NOT NULL,
    recipients INTEGER NOT NULL,
    options TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS billing_time ON billing(time);
CREATE TABLE IF NOT EXISTS accepted (
    queue_id TEXT PRIMARY KEY,
    message_id TEXT,
    sender TEXT NOT NULL,
    time INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS accepted_message_id ON accepted(message_id, sender);
";

fn db_err(e: rusqlite::Error) -> String {
    format!("Archiv-Datenbank / archive database: {e}")
}

fn row_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        seq: r.get(0)?,
        time: r.get(1)?,
        direction: r.get(2)?,
        private_id: r.get(3)?,
        message_id: r.get(4)?,
        sender: r.get(5)?,
        recipients: r.get(6)?,
        sha256: r.get(7)?,
        size: r.get(8)?,
        link: r.get(9)?,
        prev_hash: r.get(10)?,
        hash: r.get(11)?,
    })
}

const COLS: &str =
    "seq, time, direction, private_id, message_id, sender, recipients, sha256, size, link, prev_hash, hash";

impl SqliteArchive {
    pub fn open(path: &Path) -> Result<SqliteArchive, String> {
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        let conn = Connection::open(path).map_err(db_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db_err)?;
        // FULL: a committed entry survives power loss.
        conn.pragma_update(None, "synchronous", "FULL").map_err(db_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(db_err)?;
        conn.execute_batch(SCHEMA).map_err(db_err)?;
        let mut head = path.as_os_str().to_owned();
        head.push(".head");
        Ok(SqliteArchive {
            conn: Mutex::new(Db { c: conn, open: None, next_gen: 0, last: None }),
            head: PathBuf::from(head),
            commit_gate: Mutex::new(()),
            finished: Mutex::new(Finished::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Db> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` in the shared transaction, then return once that transaction is durable.
    fn write(&self, f: impl FnOnce(&Connection) -> Result<Entry, String>) -> Result<Entry, String> {
        let (gen, entry) = {
            let mut db = self.lock();
            let gen = match db.open {
                Some(g) => g,
                None => {
                    db.c.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
                    db.next_gen += 1;
                    db.open = Some(db.next_gen);
                    db.next_gen
                }
            };
            db.c.execute_batch("SAVEPOINT record").map_err(db_err)?;
            match f(&db.c) {
                Ok(e) => {
                    db.c.execute_batch("RELEASE record").map_err(db_err)?;
                    db.last = Some((e.seq, e.hash.clone()));
                    (gen, e)
                }
                Err(err) => {
                    // Only this writer's rows go; the others in the transaction stay.
                    let _ = db.c.execute_batch("ROLLBACK TO record; RELEASE record");
                    return Err(err);
                }
            }
        };
        self.commit_through(gen)?;
        Ok(entry)
    }

    fn commit_through(&self, gen: u64) -> Result<(), String> {
        let _gate = self.commit_gate.lock().unwrap_or_else(|p| p.into_inner());
        {
            let f = self.finished.lock().unwrap_or_else(|p| p.into_inner());
            if f.upto >= gen {
                return f.failed.get(&gen).map_or(Ok(()), |e| Err(e.clone()));
            }
        }
        // Not finished while we hold the gate: the open transaction is ours.
        let (done, last, res) = {
            let mut db = self.lock();
            let done = db.open.take().unwrap_or(gen);
            let res = db.c.execute_batch("COMMIT").map_err(db_err);
            if res.is_err() {
                let _ = db.c.execute_batch("ROLLBACK");
            }
            (done, db.last.take(), res)
        };
        let res = res.and_then(|()| match &last {
            Some((seq, hash)) => self.write_head(*seq, hash),
            None => Ok(()),
        });
        let mut f = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        f.upto = done;
        if let Err(e) = &res {
            f.failed.insert(done, e.clone());
        }
        f.failed.retain(|g, _| g + 1024 > done);
        res
    }

    /// After a crash between a commit and its head-file write, the head names an older
    /// entry. Move it to the newest entry when the entries after it chain from it; any
    /// other difference stays for `verify` to report. Returns (old seq, new seq) if moved.
    /// Call at start, before writers: it shares no lock with another process.
    pub fn heal_head(&self) -> Result<Option<(i64, i64)>, String> {
        let _gate = self.commit_gate.lock().unwrap_or_else(|p| p.into_inner());
        let db = self.lock();
        let Some((hs, hh)) = self.read_head() else {
            // A new archive gets a head at the genesis, so that a crash in its very first
            // commit leaves a head that is behind, not one that is missing (which stays a
            // finding: it may have been deleted). Only here, in the gateway's start: the
            // CLI opens the same archive and must not write.
            let empty =
                db.c.query_row("SELECT NOT EXISTS (SELECT 1 FROM entries)", [], |r| r.get::<_, bool>(0))
                    .map_err(db_err)?;
            if empty && !self.head.exists() {
                self.write_head(0, GENESIS)?;
            }
            return Ok(None);
        };
        let named = if hs == 0 {
            hh == GENESIS
        } else {
            db.c.query_row("SELECT hash FROM entries WHERE seq = ?1", [hs], |r| r.get::<_, String>(0))
                .optional()
                .map_err(db_err)?
                == Some(hh.clone())
        };
        if !named {
            return Ok(None);
        }
        let tail = {
            let mut st =
                db.c.prepare(&format!("SELECT {COLS} FROM entries WHERE seq > ?1 ORDER BY seq")).map_err(db_err)?;
            let rows = st.query_map([hs], row_entry).map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)?
        };
        drop(db);
        if tail.is_empty() {
            return Ok(None);
        }
        let (mut seq, mut hash) = (hs, hh);
        for e in &tail {
            if e.seq != seq + 1 || e.prev_hash != hash || entry_hash(e) != e.hash {
                return Ok(None);
            }
            (seq, hash) = (e.seq, e.hash.clone());
        }
        self.write_head(seq, &hash)?;
        Ok(Some((hs, seq)))
    }

    fn read_head(&self) -> Option<(i64, String)> {
        let h = std::fs::read_to_string(&self.head).ok()?;
        let (s, h) = h.trim().split_once(' ')?;
        Some((s.parse().ok()?, h.to_string()))
    }

    fn write_head(&self, seq: i64, hash: &str) -> Result<(), String> {
        let tmp = self.head.with_extension("head.tmp");
        let res = (|| -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{seq} {hash}")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.head)?;
            if let Some(d) = self.head.parent() {
                std::fs::File::open(d)?.sync_all()?;
            }
            Ok(())
        })();
        res.map_err(|e| format!("{}: {e}", self.head.display()))
    }

    /// Billing rows with `from <= time < to` (unix seconds): (cost_unit, recipients, options).
    pub fn billing_rows(&self, from: i64, to: i64) -> Result<Vec<(String, i64, String)>, String> {
        let db = self.lock();
        let mut st = db
            .c
            .prepare("SELECT cost_unit, recipients, options FROM billing WHERE time >= ?1 AND time < ?2 ORDER BY id")
            .map_err(db_err)?;
        let rows = st.query_map(params![from, to], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(db_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
    }
}

/// Billing facts of one outbound De-Mail.
pub struct Bill<'a> {
    pub queue_id: &'a str,
    pub sender: &'a str,
    pub cost_unit: &'a str,
    pub recipients: usize,
    pub options: &'a str,
}

impl SqliteArchive {
    /// Archive entry, billing row and the "accepted" mark of a spooled outbound
    /// message, all or nothing.
    pub fn record_outbound(&self, e: &NewEntry<'_>, bill: &Bill<'_>) -> Result<Entry, String> {
        self.write(|c| {
            let entry = append_tx(c, e)?;
            let now = crate::spool::now() as i64;
            c.execute(
                "INSERT INTO billing (time, queue_id, sender, cost_unit, recipients, options) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![now, bill.queue_id, bill.sender, bill.cost_unit, bill.recipients as i64, bill.options],
            )
            .map_err(db_err)?;
            c.execute(
                "INSERT INTO accepted (queue_id, message_id, sender, time) VALUES (?1, ?2, ?3, ?4)",
                params![bill.queue_id, e.message_id, bill.sender, now],
            )
            .map_err(db_err)?;
            Ok(entry)
        })
    }

    /// Is this queued message recorded (archive, billing)?
    pub fn is_recorded(&self, queue_id: &str) -> Result<bool, String> {
        self.lock()
            .c
            .query_row("SELECT 1 FROM accepted WHERE queue_id = ?1", [queue_id], |_| Ok(()))
            .optional()
            .map(|o| o.is_some())
            .map_err(db_err)
    }

    /// The queue id under which this sender's message with this Message-ID was accepted.
    pub fn accepted_as(&self, message_id: &str, sender: &str) -> Result<Option<String>, String> {
        self.lock()
            .c
            .query_row(
                "SELECT queue_id FROM accepted WHERE message_id = ?1 AND sender = ?2 LIMIT 1",
                [message_id, sender],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)
    }
}

fn append_tx(tx: &Connection, e: &NewEntry<'_>) -> Result<Entry, String> {
    let last: Option<(i64, String)> = tx
        .query_row("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db_err)?;
    let (prev_seq, prev_hash) = last.unwrap_or((0, GENESIS.to_string()));
    // Receipts and notifications point at the De-Mail they are about.
    let link: Option<i64> = match (e.direction, e.private_id) {
        ("receipt" | "notification" | "malware", Some(pid)) => tx
            .query_row(
                "SELECT seq FROM entries WHERE direction = 'out' AND private_id = ?1 ORDER BY seq DESC LIMIT 1",
                [pid],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?,
        _ => None,
    };
    let mut entry = Entry {
        seq: prev_seq + 1,
        time: crate::spool::now_millis() as i64,
        direction: e.direction.to_string(),
        private_id: e.private_id.map(str::to_string),
        message_id: e.message_id.map(str::to_string),
        sender: e.sender.to_string(),
        recipients: e.recipients.join(","),
        sha256: sha256_hex(e.data),
        size: e.data.len() as i64,
        link,
        prev_hash,
        hash: String::new(),
    };
    entry.hash = entry_hash(&entry);
    // The message goes in through incremental blob I/O: a 25 MB message is not copied
    // into SQLite's bind buffer in one piece.
    tx.execute(
            &format!("INSERT INTO entries ({COLS}, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, zeroblob(?13))"),
            params![
                entry.seq,
                entry.time,
                entry.direction,
                entry.private_id,
                entry.message_id,
                entry.sender,
                entry.recipients,
                entry.sha256,
                entry.size,
                entry.link,
                entry.prev_hash,
                entry.hash,
                e.data.len() as i64
            ],
        )
        .map_err(db_err)?;
    {
        use std::io::Write;
        let mut blob = tx.blob_open("main", "entries", "data", entry.seq, false).map_err(db_err)?;
        for chunk in e.data.chunks(1 << 20) {
            blob.write_all(chunk).map_err(|er| format!("Archiv-Datenbank / archive database: {er}"))?;
        }
    }
    Ok(entry)
}

impl Archive for SqliteArchive {
    fn append(&self, e: &NewEntry<'_>) -> Result<Entry, String> {
        self.write(|c| append_tx(c, e))
    }

    fn entries(&self) -> Result<Vec<Entry>, String> {
        let db = self.lock();
        let mut st = db.c.prepare(&format!("SELECT {COLS} FROM entries ORDER BY seq")).map_err(db_err)?;
        let rows = st.query_map([], row_entry).map_err(db_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
    }

    fn data(&self, seq: i64) -> Result<Vec<u8>, String> {
        self.lock().c.query_row("SELECT data FROM entries WHERE seq = ?1", [seq], |r| r.get(0)).map_err(db_err)
    }

    fn verify(&self) -> Result<Vec<Problem>, String> {
        let mut problems = Vec::new();
        let mut p = |seq: Option<i64>, code: &'static str, de: String, en: String| {
            problems.push(Problem { seq, code, message: de, message_en: en })
        };
        // The head first: a writer commits before it writes the head, so the entries read
        // next reach at least as far. A head behind the newest entry is then a commit in
        // progress (or a crash before the head write) and fine if it names its entry.
        let head = match (self.read_head(), self.head.exists()) {
            (Some(h), _) => Some(h),
            // Present but garbled: a head that matches no entry.
            (None, true) => Some((-1, String::new())),
            (None, false) => None,
        };
        // The genesis head of a new archive names no entry; behind that is every entry.
        let mut head_entry_ok = head.as_ref().is_some_and(|(hs, hh)| *hs == 0 && hh == GENESIS);
        let db = self.lock();
        let mut st = db.c.prepare(&format!("SELECT {COLS}, data FROM entries ORDER BY seq")).map_err(db_err)?;
        let mut rows = st.query([]).map_err(db_err)?;
        let mut expect_seq = 1i64;
        let mut prev = GENESIS.to_string();
        let mut last: Option<(i64, String)> = None;
        while let Some(r) = rows.next().map_err(db_err)? {
            let e = row_entry(r).map_err(db_err)?;
            let data: Vec<u8> = r.get(12).map_err(db_err)?;
            let s = e.seq;
            if s != expect_seq {
                p(
                    Some(s),
                    "archive.gap",
                    format!("Einträge {expect_seq} bis {} fehlen (gelöscht).", s - 1),
                    format!("Entries {expect_seq} to {} are missing (deleted).", s - 1),
                );
            }
            if sha256_hex(&data) != e.sha256 || data.len() as i64 != e.size {
                p(
                    Some(s),
                    "archive.data_altered",
                    format!("Eintrag {s}: Nachrichteninhalt wurde verändert."),
                    format!("Entry {s}: message content was altered."),
                );
            }
            if e.prev_hash != prev {
                p(
                    Some(s),
                    "archive.chain_broken",
                    format!("Eintrag {s}: Verkettung zum Vorgänger stimmt nicht."),
                    format!("Entry {s}: link to the previous entry does not match."),
                );
            }
            if entry_hash(&e) != e.hash {
                p(
                    Some(s),
                    "archive.entry_altered",
                    format!("Eintrag {s}: Metadaten wurden verändert."),
                    format!("Entry {s}: metadata was altered."),
                );
            }
            if head.as_ref().is_some_and(|(hs, hh)| *hs == s && *hh == e.hash) {
                head_entry_ok = true;
            }
            prev = e.hash.clone();
            expect_seq = s + 1;
            last = Some((s, e.hash));
        }
        match (head, last) {
            (None, None) => {}
            (Some((0, _)), None) if head_entry_ok => {}
            (Some((hs, _)), Some((ls, _))) if hs <= ls && head_entry_ok => {}
            (Some((hs, _)), Some((ls, _))) if hs > ls => p(
                None,
                "archive.truncated",
                format!("Die letzten Einträge ({} bis {hs}) fehlen.", ls + 1),
                format!("The newest entries ({} to {hs}) are missing.", ls + 1),
            ),
            (None, Some(_)) => p(
                None,
                "archive.head_missing",
                "Die Kopfdatei (.head) fehlt.".into(),
                "The head file (.head) is missing.".into(),
            ),
            _ => p(
                None,
                "archive.head_mismatch",
                "Der letzte Eintrag passt nicht zur Kopfdatei (.head).".into(),
                "The newest entry does not match the head file (.head).".into(),
            ),
        }
        Ok(problems)
    }
}

/// Write every entry as `<seq>-<direction>.eml` plus `manifest.json` with hashes.
pub fn export(a: &dyn Archive, dir: &Path) -> Result<usize, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let entries = a.entries()?;
    let mut manifest = Vec::new();
    for e in &entries {
        let file = format!("{:08}-{}.eml", e.seq, e.direction);
        let data = a.data(e.seq)?;
        std::fs::write(dir.join(&file), &data).map_err(|er| format!("{file}: {er}"))?;
        let mut v = serde_json::to_value(e).map_err(|er| er.to_string())?;
        v["file"] = serde_json::Value::String(file);
        manifest.push(v);
    }
    let m = serde_json::json!({ "format": "demail-archive-export/1", "entries": manifest });
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec_pretty(&m).map_err(|e| e.to_string())?)
        .map_err(|e| format!("manifest.json: {e}"))?;
    Ok(entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(a: &SqliteArchive, dir: &str, pid: &str, data: &[u8]) -> Entry {
        a.append(&NewEntry {
            direction: dir,
            private_id: Some(pid),
            message_id: None,
            sender: "a@x.de-mail.de",
            recipients: &["b@y.de-mail.de".into()],
            data,
        })
        .unwrap()
    }

    #[test]
    fn record_outbound_marks_accepted() {
        let d = tempfile::tempdir().unwrap();
        let a = SqliteArchive::open(&d.path().join("a.sqlite")).unwrap();
        let e = NewEntry {
            direction: "out",
            private_id: Some("P"),
            message_id: Some("<m@x>"),
            sender: "a@x.de-mail.de",
            recipients: &[],
            data: b"m",
        };
        let b = Bill { queue_id: "q1", sender: "a@x.de", cost_unit: "K", recipients: 1, options: "private" };
        a.record_outbound(&e, &b).unwrap();
        assert!(a.is_recorded("q1").unwrap());
        assert_eq!(a.accepted_as("<m@x>", "a@x.de").unwrap().as_deref(), Some("q1"));
        assert_eq!(a.accepted_as("<m@x>", "b@x.de").unwrap(), None);
        assert_eq!(a.billing_rows(0, i64::MAX).unwrap().len(), 1);
        // The same queue id twice is refused as a whole: no half records.
        assert!(a.record_outbound(&e, &b).is_err());
        assert_eq!(a.entries().unwrap().len(), 1);
        assert!(a.verify().unwrap().is_empty());
    }

    /// Group commit: parallel writers share transactions; every caller that got Ok is in
    /// the chain, in a consistent order, and one writer's failure takes no one else's rows.
    #[test]
    fn parallel_writers_share_commits_and_keep_the_chain() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a.sqlite");
        let a = std::sync::Arc::new(SqliteArchive::open(&path).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let a = a.clone();
                std::thread::spawn(move || {
                    let mut seqs = Vec::new();
                    for i in 0..25 {
                        // Every thread also retries queue id "dup" once: only the first wins.
                        let q = if i == 7 { "dup".to_string() } else { format!("q{t}-{i}") };
                        let e = NewEntry {
                            direction: "out",
                            private_id: Some("P"),
                            message_id: None,
                            sender: "a@x.de-mail.de",
                            recipients: &[],
                            data: q.as_bytes(),
                        };
                        let b = Bill { queue_id: &q, sender: "a@x.de", cost_unit: "K", recipients: 1, options: "" };
                        if let Ok(entry) = a.record_outbound(&e, &b) {
                            seqs.push((q, entry.seq));
                        }
                    }
                    seqs
                })
            })
            .collect();
        let ok: Vec<(String, i64)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        assert_eq!(ok.len(), 8 * 24 + 1, "all but the seven duplicate tries");
        assert_eq!(ok.iter().filter(|(q, _)| q == "dup").count(), 1);
        let entries = a.entries().unwrap();
        assert_eq!(entries.len(), ok.len());
        for (q, seq) in &ok {
            assert!(a.is_recorded(q).unwrap());
            assert_eq!(a.data(*seq).unwrap(), q.as_bytes(), "the seq returned is the caller's own entry");
        }
        assert!(a.verify().unwrap().is_empty(), "{:?}", a.verify());
        // What the callers were told is on disk: a second connection sees all of it.
        drop(a);
        let again = SqliteArchive::open(&path).unwrap();
        assert_eq!(again.entries().unwrap().len(), ok.len());
        assert!(again.verify().unwrap().is_empty());
    }

    #[test]
    fn chain_links_and_tamper_detection() {
        let (_d, _, a) = fresh();
        let out = add(&a, "out", "AZ-1", b"m1");
        let r = add(&a, "receipt", "AZ-1", b"r1");
        add(&a, "in", "X", b"m2");
        assert_eq!(r.link, Some(out.seq));
        assert!(a.verify().unwrap().is_empty());
        // The triggers refuse changes.
        assert!(a.lock().c.execute("UPDATE entries SET data = x'00' WHERE seq = 1", []).is_err());
        // Around the triggers: alter data of entry 2.
        a.lock()
            .c
            .execute_batch("DROP TRIGGER entries_no_update; UPDATE entries SET data = x'00' WHERE seq = 2;")
            .unwrap();
        let p = a.verify().unwrap();
        assert_eq!(p[0].code, "archive.data_altered");
        // Delete the newest entry: the head file notices.
        let (_d2, _, a2) = fresh();
        add(&a2, "out", "1", b"x");
        add(&a2, "out", "2", b"y");
        a2.lock().c.execute_batch("DROP TRIGGER entries_no_delete; DELETE FROM entries WHERE seq = 2;").unwrap();
        assert_eq!(a2.verify().unwrap()[0].code, "archive.truncated");
    }

    /// A new archive in its own directory, and its path.
    fn fresh() -> (tempfile::TempDir, PathBuf, SqliteArchive) {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a.sqlite");
        let a = SqliteArchive::open(&path).unwrap();
        (d, path, a)
    }

    fn head_path(path: &Path) -> PathBuf {
        path.with_extension("sqlite.head")
    }

    fn head_of(path: &Path) -> String {
        std::fs::read_to_string(head_path(path)).unwrap()
    }

    #[test]
    fn a_head_left_behind_by_a_crash_is_accepted_and_moved_forward() {
        let (_d, path, a) = fresh();
        let first = add(&a, "out", "1", b"x");
        let after_first = head_of(&path);
        add(&a, "out", "2", b"y");
        let third = add(&a, "in", "3", b"z");
        // The crash: entries 2 and 3 committed, their head writes lost.
        std::fs::write(head_path(&path), &after_first).unwrap();
        drop(a);
        let a = SqliteArchive::open(&path).unwrap();
        assert!(a.verify().unwrap().is_empty(), "{:?}", a.verify());
        assert_eq!(a.heal_head().unwrap(), Some((first.seq, third.seq)));
        assert_eq!(head_of(&path).trim(), format!("{} {}", third.seq, third.hash));
        assert_eq!(a.heal_head().unwrap(), None, "nothing left to move");
        assert!(a.verify().unwrap().is_empty());
    }

    #[test]
    fn a_crash_in_the_first_commit_leaves_a_genesis_head_that_is_healed() {
        let (_d, path, a) = fresh();
        assert!(!head_path(&path).exists(), "opening writes nothing");
        assert_eq!(a.heal_head().unwrap(), None);
        let genesis = head_of(&path);
        assert_eq!(genesis.trim(), format!("0 {GENESIS}"));
        assert!(a.verify().unwrap().is_empty(), "a new archive is intact");
        let first = add(&a, "out", "1", b"x");
        let second = add(&a, "out", "2", b"y");
        std::fs::write(head_path(&path), &genesis).unwrap();
        assert!(a.verify().unwrap().is_empty(), "{:?}", a.verify());
        assert_eq!(a.heal_head().unwrap(), Some((0, second.seq)));
        assert_ne!(first.hash, second.hash);
        assert_eq!(head_of(&path).trim(), format!("2 {}", second.hash));
        // Reopening an archive with entries does not reset its head.
        drop(a);
        let a = SqliteArchive::open(&path).unwrap();
        assert_eq!(a.heal_head().unwrap(), None);
        assert_eq!(head_of(&path).trim(), format!("2 {}", second.hash));
        drop(a);
        // A deleted head file is not recreated: it stays a finding.
        std::fs::remove_file(head_path(&path)).unwrap();
        let a = SqliteArchive::open(&path).unwrap();
        assert_eq!(a.heal_head().unwrap(), None);
        assert_eq!(a.verify().unwrap()[0].code, "archive.head_missing");
    }

    #[test]
    fn a_head_that_names_no_entry_is_reported_and_not_moved() {
        let (_d, path, a) = fresh();
        add(&a, "out", "1", b"x");
        add(&a, "out", "2", b"y");
        let hp = head_path(&path);
        for bad in [format!("1 {GENESIS}\n"), "kaputt\n".to_string()] {
            std::fs::write(&hp, &bad).unwrap();
            assert_eq!(a.heal_head().unwrap(), None);
            assert_eq!(std::fs::read_to_string(&hp).unwrap(), bad, "left as found");
            let p = a.verify().unwrap();
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].code, "archive.head_mismatch");
        }
    }

    #[test]
    fn a_head_is_not_moved_over_an_altered_entry() {
        let (_d, path, a) = fresh();
        add(&a, "out", "1", b"x");
        let after_first = head_of(&path);
        add(&a, "out", "2", b"y");
        add(&a, "out", "3", b"z");
        std::fs::write(head_path(&path), &after_first).unwrap();
        a.lock()
            .c
            .execute_batch("DROP TRIGGER entries_no_update; UPDATE entries SET sender = 'x@evil.de' WHERE seq = 3;")
            .unwrap();
        assert_eq!(a.heal_head().unwrap(), None);
        assert_eq!(head_of(&path), after_first);
        let codes: Vec<_> = a.verify().unwrap().iter().map(|p| p.code).collect();
        assert_eq!(codes, ["archive.entry_altered"]);
    }
}
