//! The archive's SQLite store: WAL, `synchronous=FULL`, triggers refusing UPDATE and
//! DELETE on entries, and group commit.
//!
//! Group commit: each writer adds its rows to one shared open transaction (in its own
//! savepoint) and then waits until that transaction is committed. Whoever commits takes
//! everyone who joined meanwhile, so parallel sessions share one fsync round (WAL commit
//! plus head file) instead of queueing one round each. A caller still returns only after
//! its rows are durable.

use super::{AccessRecord, Archive, Checkpoint, Entry, Store, Tx};
use crate::billing::{self, Bill};
use demail_core::Error;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The archive at `path`, its head file beside it (`<path>.head`).
pub fn open(path: &Path) -> Result<Archive, Error> {
    let mut head = path.as_os_str().to_owned();
    head.push(".head");
    Ok(Archive::new(Box::new(SqliteStore::open(path)?), PathBuf::from(head)))
}

pub struct SqliteStore {
    conn: Mutex<Db>,
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
    failed: HashMap<u64, Error>,
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
    data BLOB NOT NULL,
    actor TEXT
);
CREATE INDEX IF NOT EXISTS entries_private_id ON entries(private_id);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries BEGIN SELECT RAISE(ABORT, 'archive is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries BEGIN SELECT RAISE(ABORT, 'archive is append-only'); END;
CREATE TABLE IF NOT EXISTS accepted (
    queue_id TEXT PRIMARY KEY,
    message_id TEXT,
    sender TEXT NOT NULL,
    time INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS accepted_message_id ON accepted(message_id, sender);
CREATE TABLE IF NOT EXISTS access (
    dn TEXT PRIMARY KEY,
    login TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    time INTEGER NOT NULL,
    by TEXT NOT NULL
);
-- Signed checkpoints (archive/checkpoint.rs): never removed; a time stamp is added once.
CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    from_seq INTEGER NOT NULL,
    hashes BLOB NOT NULL,
    time INTEGER NOT NULL,
    kid TEXT NOT NULL,
    signature TEXT NOT NULL,
    timestamp BLOB
);
CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_stamp_once BEFORE UPDATE ON checkpoints
    WHEN OLD.timestamp IS NOT NULL OR NEW.seq != OLD.seq OR NEW.hash != OLD.hash OR NEW.hashes != OLD.hashes
      OR NEW.time != OLD.time OR NEW.signature != OLD.signature
    BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TABLE IF NOT EXISTS reservations (
    message_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    queue_id TEXT NOT NULL,
    time INTEGER NOT NULL,
    PRIMARY KEY (message_id, sender)
);
";

/// An archive from before reservations: its accepted messages hold theirs (the first
/// acceptance of a pair wins), so a client's retry of one is still recognised.
const MIGRATE_RESERVATIONS: &str = "
INSERT OR IGNORE INTO reservations (message_id, sender, queue_id, time)
    SELECT message_id, sender, queue_id, time FROM accepted WHERE message_id IS NOT NULL ORDER BY time, rowid;
";

/// `ALTER TABLE … ADD COLUMN` unless the column is there already.
pub(crate) fn add_column(c: &Connection, table: &str, column: &str, decl: &str) -> Result<(), Error> {
    let have: bool = c
        .query_row(&format!("SELECT count(*) FROM pragma_table_info('{table}') WHERE name = ?1"), [column], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(db_err)?
        > 0;
    if !have {
        c.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}")).map_err(db_err)?;
    }
    Ok(())
}

fn db_err(e: impl std::fmt::Display) -> Error {
    Error::new(
        "archive.database",
        "Die Archiv-Datenbank meldet einen Fehler.",
        "The archive database reported an error.",
    )
    .caused_by(e)
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
        actor: r.get(12)?,
    })
}

const COLS: &str =
    "seq, time, direction, private_id, message_id, sender, recipients, sha256, size, link, prev_hash, hash, actor";

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, Error> {
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(|e| {
                Error::new(
                    "archive.directory",
                    "Das Verzeichnis des Archivs lässt sich nicht anlegen.",
                    "The archive directory cannot be created.",
                )
                .caused_by(format!("{}: {e}", p.display()))
            })?;
        }
        let conn = Connection::open(path).map_err(db_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db_err)?;
        // FULL: a committed entry survives power loss.
        conn.pragma_update(None, "synchronous", "FULL").map_err(db_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(db_err)?;
        let had_reservations: bool = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'reservations'", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(db_err)?
            > 0;
        conn.execute_batch(SCHEMA).map_err(db_err)?;
        // Archives from before actors: the column is added (no entry changes, so the
        // append-only triggers are not involved).
        add_column(&conn, "entries", "actor", "TEXT")?;
        if !had_reservations {
            conn.execute_batch(MIGRATE_RESERVATIONS).map_err(db_err)?;
        }
        conn.execute_batch(billing::sqlite::SCHEMA).map_err(db_err)?;
        add_column(&conn, "billing", "person", "TEXT NOT NULL DEFAULT ''")?;
        Ok(SqliteStore {
            conn: Mutex::new(Db { c: conn, open: None, next_gen: 0, last: None }),
            commit_gate: Mutex::new(()),
            finished: Mutex::new(Finished::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Db> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn commit_through(&self, gen: u64, committed: &dyn Fn(i64, &str) -> Result<(), Error>) -> Result<(), Error> {
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
            Some((seq, hash)) => committed(*seq, hash),
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
}

struct SqliteTx<'a>(&'a Connection);

impl Tx for SqliteTx<'_> {
    fn newest(&mut self) -> Result<Option<(i64, String)>, Error> {
        self.0
            .query_row("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(db_err)
    }

    fn set_access(&mut self, r: &AccessRecord) -> Result<(), Error> {
        self.0
            .execute(
                "INSERT OR REPLACE INTO access (dn, login, name, state, time, by) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![r.dn.to_lowercase(), r.login, r.name, r.state, r.time, r.by],
            )
            .map(|_| ())
            .map_err(db_err)
    }

    fn sent_with(&mut self, private_id: &str) -> Result<Option<i64>, Error> {
        self.0
            .query_row(
                "SELECT seq FROM entries WHERE direction = 'out' AND private_id = ?1 ORDER BY seq DESC LIMIT 1",
                [private_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)
    }

    fn insert(&mut self, entry: &Entry, data: &[u8]) -> Result<(), Error> {
        // The message goes in through incremental blob I/O: a 25 MB message is not copied
        // into SQLite's bind buffer in one piece.
        self.0
            .execute(
                &format!(
                    "INSERT INTO entries ({COLS}, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, zeroblob(?14))"
                ),
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
                    entry.actor,
                    data.len() as i64
                ],
            )
            .map_err(db_err)?;
        use std::io::Write;
        let mut blob = self.0.blob_open("main", "entries", "data", entry.seq, false).map_err(db_err)?;
        for chunk in data.chunks(1 << 20) {
            blob.write_all(chunk).map_err(db_err)?;
        }
        Ok(())
    }

    fn insert_bill(&mut self, time: i64, bill: &Bill<'_>) -> Result<(), Error> {
        billing::sqlite::insert(self.0, time, bill).map_err(db_err)
    }

    fn mark_accepted(
        &mut self,
        time: i64,
        queue_id: &str,
        message_id: Option<&str>,
        sender: &str,
    ) -> Result<(), Error> {
        self.0
            .execute(
                "INSERT INTO accepted (queue_id, message_id, sender, time) VALUES (?1, ?2, ?3, ?4)",
                params![queue_id, message_id, sender, time],
            )
            .map(|_| ())
            .map_err(db_err)
    }

    fn reserved(&mut self, message_id: &str, sender: &str) -> Result<Option<String>, Error> {
        self.0
            .query_row(
                "SELECT queue_id FROM reservations WHERE message_id = ?1 AND sender = ?2",
                [message_id, sender],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)
    }

    fn set_reservation(
        &mut self,
        time: i64,
        message_id: &str,
        sender: &str,
        queue_id: &str,
        stale: Option<&str>,
    ) -> Result<(), Error> {
        let n = match stale {
            // The primary key refuses a second holder.
            None => self.0.execute(
                "INSERT INTO reservations (message_id, sender, queue_id, time) VALUES (?1, ?2, ?3, ?4)",
                params![message_id, sender, queue_id, time],
            ),
            Some(old) => self.0.execute(
                "UPDATE reservations SET queue_id = ?3, time = ?4 WHERE message_id = ?1 AND sender = ?2 AND queue_id = ?5",
                params![message_id, sender, queue_id, time, old],
            ),
        }
        .map_err(db_err)?;
        if n != 1 {
            return Err(db_err(format!("reservation of {message_id} changed meanwhile")));
        }
        Ok(())
    }

    fn delete_reservation(&mut self, message_id: &str, sender: &str, queue_id: &str) -> Result<(), Error> {
        self.0
            .execute(
                "DELETE FROM reservations WHERE message_id = ?1 AND sender = ?2 AND queue_id = ?3",
                [message_id, sender, queue_id],
            )
            .map(|_| ())
            .map_err(db_err)
    }

    fn insert_checkpoint(&mut self, cp: &Checkpoint) -> Result<bool, Error> {
        self.0
            .execute(
                "INSERT OR IGNORE INTO checkpoints (seq, hash, from_seq, hashes, time, kid, signature, timestamp)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE EXISTS (SELECT 1 FROM entries WHERE seq = ?1 AND hash = ?2)",
                params![cp.seq, cp.hash, cp.from, cp.hashes, cp.time, cp.kid, cp.signature, cp.timestamp],
            )
            .map(|n| n == 1)
            .map_err(db_err)
    }

    fn set_timestamp(&mut self, seq: i64, token: &[u8]) -> Result<(), Error> {
        self.0
            .execute("UPDATE checkpoints SET timestamp = ?2 WHERE seq = ?1 AND timestamp IS NULL", params![seq, token])
            .map(|_| ())
            .map_err(db_err)
    }
}

const CHECKPOINT_COLS: &str = "seq, hash, from_seq, hashes, time, kid, signature, timestamp";

fn row_checkpoint(r: &rusqlite::Row<'_>) -> rusqlite::Result<Checkpoint> {
    Ok(Checkpoint {
        seq: r.get(0)?,
        hash: r.get(1)?,
        from: r.get(2)?,
        hashes: r.get(3)?,
        time: r.get(4)?,
        kid: r.get(5)?,
        signature: r.get(6)?,
        timestamp: r.get(7)?,
    })
}

/// A writer that may append an entry.
type Write<'a> = dyn FnMut(&mut dyn Tx) -> Result<Option<Entry>, Error> + 'a;

impl SqliteStore {
    /// `write` in its own savepoint of the shared transaction, then wait until that is
    /// committed. An entry it returns becomes the head candidate.
    fn in_group(
        &self,
        write: &mut Write<'_>,
        committed: &dyn Fn(i64, &str) -> Result<(), Error>,
    ) -> Result<Option<Entry>, Error> {
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
            match write(&mut SqliteTx(&db.c)) {
                Ok(e) => {
                    db.c.execute_batch("RELEASE record").map_err(db_err)?;
                    if let Some(e) = &e {
                        db.last = Some((e.seq, e.hash.clone()));
                    }
                    (gen, e)
                }
                Err(err) => {
                    // Only this writer's rows go; the others in the transaction stay.
                    let _ = db.c.execute_batch("ROLLBACK TO record; RELEASE record");
                    return Err(err);
                }
            }
        };
        self.commit_through(gen, committed)?;
        Ok(entry)
    }
}

impl Store for SqliteStore {
    fn append(
        &self,
        write: &mut dyn FnMut(&mut dyn Tx) -> Result<Entry, Error>,
        committed: &dyn Fn(i64, &str) -> Result<(), Error>,
    ) -> Result<Entry, Error> {
        self.in_group(&mut |tx| write(tx).map(Some), committed)?.ok_or_else(|| db_err("append wrote no entry"))
    }

    fn transact(
        &self,
        write: &mut dyn FnMut(&mut dyn Tx) -> Result<(), Error>,
        committed: &dyn Fn(i64, &str) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.in_group(&mut |tx| write(tx).map(|()| None), committed).map(|_| ())
    }

    fn entries(&self, after: i64, limit: usize) -> Result<Vec<Entry>, Error> {
        let db = self.lock();
        let mut st =
            db.c.prepare(&format!("SELECT {COLS} FROM entries WHERE seq > ?1 ORDER BY seq LIMIT ?2"))
                .map_err(db_err)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = st.query_map(params![after, limit], row_entry).map_err(db_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
    }

    fn data(&self, seq: i64) -> Result<Vec<u8>, Error> {
        self.lock().c.query_row("SELECT data FROM entries WHERE seq = ?1", [seq], |r| r.get(0)).map_err(db_err)
    }

    fn entries_with_data(&self, after: i64, limit: usize) -> Result<Vec<(Entry, Vec<u8>)>, Error> {
        let db = self.lock();
        let mut st =
            db.c.prepare_cached(&format!("SELECT {COLS}, data FROM entries WHERE seq > ?1 ORDER BY seq LIMIT ?2"))
                .map_err(db_err)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = st.query_map(params![after, limit], |r| Ok((row_entry(r)?, r.get(13)?))).map_err(db_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
    }

    fn is_recorded(&self, queue_id: &str) -> Result<bool, Error> {
        self.lock()
            .c
            .query_row("SELECT 1 FROM accepted WHERE queue_id = ?1", [queue_id], |_| Ok(()))
            .optional()
            .map(|o| o.is_some())
            .map_err(db_err)
    }

    fn billing_rows(&self, from: i64, to: i64) -> Result<Vec<(String, i64, String)>, Error> {
        billing::sqlite::rows(&self.lock().c, from, to).map_err(db_err)
    }

    fn access_records(&self) -> Result<Vec<AccessRecord>, Error> {
        let db = self.lock();
        let mut st =
            db.c.prepare("SELECT dn, login, name, state, time, by FROM access ORDER BY time, dn").map_err(db_err)?;
        let rows = st
            .query_map([], |r| {
                Ok(AccessRecord {
                    dn: r.get(0)?,
                    login: r.get(1)?,
                    name: r.get(2)?,
                    state: r.get(3)?,
                    time: r.get(4)?,
                    by: r.get(5)?,
                })
            })
            .map_err(db_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
    }

    fn sent(&self, private_id: &str) -> Result<Option<(i64, Vec<u8>)>, Error> {
        self.lock()
            .c
            .query_row(
                "SELECT seq, data FROM entries WHERE private_id = ?1 AND direction = 'out' ORDER BY seq DESC LIMIT 1",
                [private_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db_err)
    }

    fn checkpoints(&self) -> Result<Vec<Checkpoint>, Error> {
        let db = self.lock();
        let mut st =
            db.c.prepare(&format!("SELECT {CHECKPOINT_COLS} FROM checkpoints ORDER BY seq")).map_err(db_err)?;
        let rows = st.query_map([], row_checkpoint).map_err(db_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
    }

    fn newest_checkpoint(&self) -> Result<Option<(i64, String)>, Error> {
        self.lock()
            .c
            .query_row("SELECT seq, hash FROM checkpoints ORDER BY seq DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(db_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{NewEntry, Reserved, GENESIS};

    /// A second connection, as someone working around the triggers would use.
    fn sql(path: &Path) -> Connection {
        Connection::open(path).unwrap()
    }

    fn add(a: &Archive, dir: &str, pid: &str, data: &[u8]) -> Entry {
        a.append(&NewEntry {
            direction: dir,
            private_id: Some(pid),
            message_id: None,
            sender: "a@x.de-mail.de",
            recipients: &["b@y.de-mail.de".into()],
            data,
            actor: None,
        })
        .unwrap()
    }

    #[test]
    fn record_outbound_marks_accepted() {
        let d = tempfile::tempdir().unwrap();
        let a = open(&d.path().join("a.sqlite")).unwrap();
        let e = NewEntry {
            direction: "out",
            private_id: Some("P"),
            message_id: Some("<m@x>"),
            sender: "a@x.de-mail.de",
            recipients: &[],
            data: b"m",
            actor: None,
        };
        let b =
            Bill { queue_id: "q1", sender: "a@x.de", cost_unit: "K", recipients: 1, options: "private", person: "" };
        a.record_outbound(&e, &b).unwrap();
        assert!(a.is_recorded("q1").unwrap());
        assert_eq!(a.reserved("<m@x>", "a@x.de").unwrap().as_deref(), Some("q1"));
        assert_eq!(a.reserved("<m@x>", "b@x.de").unwrap(), None);
        assert_eq!(a.store().billing_rows(0, i64::MAX).unwrap().len(), 1);
        // The same queue id twice is refused as a whole: no half records.
        assert!(a.record_outbound(&e, &b).is_err());
        assert_eq!(a.entries().unwrap().len(), 1);
        assert!(a.verify().unwrap().is_empty());
    }

    #[test]
    fn reservations_are_unique_and_survive_reopening() {
        let (_d, path, a) = fresh();
        assert_eq!(a.reserve("<m@x>", "a@x.de", "q1", None).unwrap(), Reserved::Ours);
        assert_eq!(a.reserve("<m@x>", "a@x.de", "q2", None).unwrap(), Reserved::Held("q1".into()));
        assert_eq!(a.reserve("<m@x>", "a@x.de", "q1", None).unwrap(), Reserved::Ours, "the holder again");
        // Only the stale holder named can be taken over.
        assert_eq!(a.reserve("<m@x>", "a@x.de", "q2", Some("q9")).unwrap(), Reserved::Held("q1".into()));
        assert_eq!(a.reserve("<m@x>", "a@x.de", "q2", Some("q1")).unwrap(), Reserved::Ours);
        a.release("<m@x>", "a@x.de", "q1").unwrap();
        drop(a);
        let a = open(&path).unwrap();
        assert_eq!(a.reserved("<m@x>", "a@x.de").unwrap().as_deref(), Some("q2"));
        a.release("<m@x>", "a@x.de", "q2").unwrap();
        assert_eq!(a.reserved("<m@x>", "a@x.de").unwrap(), None);
        // A second row for the pair is refused by the key itself, whoever writes it.
        let c = sql(&path);
        c.execute("INSERT INTO reservations VALUES ('<k@x>', 's', 'q1', 0)", []).unwrap();
        assert!(c.execute("INSERT INTO reservations VALUES ('<k@x>', 's', 'q2', 0)", []).is_err());
        assert!(a.verify().unwrap().is_empty());
    }

    #[test]
    fn an_archive_from_before_reservations_gets_them_from_its_acceptances() {
        let (_d, path, a) = fresh();
        let b = Bill { queue_id: "q1", sender: "a@x.de", cost_unit: "K", recipients: 1, options: "", person: "" };
        let e = NewEntry {
            direction: "out",
            private_id: None,
            message_id: Some("<m@x>"),
            sender: "a@x.de-mail.de",
            recipients: &[],
            data: b"m",
            actor: None,
        };
        a.record_outbound(&e, &b).unwrap();
        drop(a);
        sql(&path).execute_batch("DROP TABLE reservations;").unwrap();
        let a = open(&path).unwrap();
        assert_eq!(a.reserved("<m@x>", "a@x.de").unwrap().as_deref(), Some("q1"));
    }

    /// Group commit: parallel writers share transactions; every caller that got Ok is in
    /// the chain, in a consistent order, and one writer's failure takes no one else's rows.
    #[test]
    fn parallel_writers_share_commits_and_keep_the_chain() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a.sqlite");
        let a = std::sync::Arc::new(open(&path).unwrap());
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
                            actor: None,
                        };
                        let b = Bill {
                            queue_id: &q,
                            sender: "a@x.de",
                            cost_unit: "K",
                            recipients: 1,
                            options: "",
                            person: "",
                        };
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
        let again = open(&path).unwrap();
        assert_eq!(again.entries().unwrap().len(), ok.len());
        assert!(again.verify().unwrap().is_empty());
    }

    #[test]
    fn chain_links_and_tamper_detection() {
        let (_d, path, a) = fresh();
        let out = add(&a, "out", "AZ-1", b"m1");
        let r = add(&a, "receipt", "AZ-1", b"r1");
        add(&a, "in", "X", b"m2");
        assert_eq!(r.link, Some(out.seq));
        assert!(a.verify().unwrap().is_empty());
        // The triggers refuse changes.
        assert!(sql(&path).execute("UPDATE entries SET data = x'00' WHERE seq = 1", []).is_err());
        // Around the triggers: alter data of entry 2.
        sql(&path)
            .execute_batch("DROP TRIGGER entries_no_update; UPDATE entries SET data = x'00' WHERE seq = 2;")
            .unwrap();
        let p = a.verify().unwrap();
        assert_eq!(p[0].code, "archive.data_altered");
        // Delete the newest entry: the head file notices.
        let (_d2, path2, a2) = fresh();
        add(&a2, "out", "1", b"x");
        add(&a2, "out", "2", b"y");
        sql(&path2).execute_batch("DROP TRIGGER entries_no_delete; DELETE FROM entries WHERE seq = 2;").unwrap();
        assert_eq!(a2.verify().unwrap()[0].code, "archive.truncated");
    }

    /// A new archive in its own directory, and its path.
    fn fresh() -> (tempfile::TempDir, PathBuf, Archive) {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a.sqlite");
        let a = open(&path).unwrap();
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
        let a = open(&path).unwrap();
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
        let a = open(&path).unwrap();
        assert_eq!(a.heal_head().unwrap(), None);
        assert_eq!(head_of(&path).trim(), format!("2 {}", second.hash));
        drop(a);
        // A deleted head file is not recreated: it stays a finding.
        std::fs::remove_file(head_path(&path)).unwrap();
        let a = open(&path).unwrap();
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
        sql(&path)
            .execute_batch("DROP TRIGGER entries_no_update; UPDATE entries SET sender = 'x@evil.de' WHERE seq = 3;")
            .unwrap();
        assert_eq!(a.heal_head().unwrap(), None);
        assert_eq!(head_of(&path), after_first);
        let codes: Vec<_> = a.verify().unwrap().iter().map(|p| p.code).collect();
        assert_eq!(codes, ["archive.entry_altered"]);
    }
}
