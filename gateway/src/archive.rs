//! Audit-proof archive: append-only entries in a hash chain.
//!
//! Each entry stores the exact message bytes, their SHA-256, and the hash of the
//! previous entry; the newest (seq, hash) is also written to a head file so that
//! removing the newest entries is detected too. `verify` recomputes all of it.
//!
//! This module holds the chain rules. Where entries live is a [`Store`]: SQLite
//! ([`sqlite`]) today; a store shared by a gateway cluster implements the same trait.

pub mod checkpoint;
pub mod export;
pub mod sqlite;

pub use checkpoint::{Checkpoint, Trust};

use crate::billing::Bill;
use demail_core::Error;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

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
    /// Who caused it, as `<method>:<identity>` (`kerberos:peter@REALM`, `ldap:peter`,
    /// `connector:exchange`, `admin:root`); none for what the provider sent.
    pub actor: Option<&'a str>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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
    /// [`NewEntry::actor`]; left out of the JSON (and of the hash) when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// Whether a person holds the De-Mail right by request (`[access]`), keyed by the
/// directory entry. The events behind it are archive entries (direction `access`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessRecord {
    pub dn: String,
    pub login: String,
    pub name: String,
    /// `requested`, `granted`, `revoked` or `refused`.
    pub state: String,
    /// Unix seconds of the last change.
    pub time: i64,
    /// Who changed it: the person (a request, self-service) or the administrator.
    pub by: String,
}

/// A finding of `verify`.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub seq: Option<i64>,
    pub code: &'static str,
    pub message: String,
    pub message_en: String,
}

/// What `verify` found: the problems (none when intact) and how far checkpoints reach.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub problems: Vec<Problem>,
    pub entries: i64,
    pub checkpoints: usize,
    /// The newest entry a valid signed checkpoint covers.
    pub signed_upto: i64,
    /// Checkpoints whose time stamp was checked against the TSA's CA.
    pub stamped: usize,
}

/// One transaction of a [`Store`]: the rows an archive write consists of.
pub trait Tx {
    /// The newest entry's (seq, hash); appends are serialised, so nobody else adds one meanwhile.
    fn newest(&mut self) -> Result<Option<(i64, String)>, Error>;
    /// Seq of the newest `out` entry with this private-id.
    fn sent_with(&mut self, private_id: &str) -> Result<Option<i64>, Error>;
    fn insert(&mut self, entry: &Entry, data: &[u8]) -> Result<(), Error>;
    /// Unix seconds.
    fn insert_bill(&mut self, time: i64, bill: &Bill<'_>) -> Result<(), Error>;
    /// The duplicate mark: this sender's Message-ID was accepted as `queue_id` (unique).
    fn mark_accepted(&mut self, time: i64, queue_id: &str, message_id: Option<&str>, sender: &str)
        -> Result<(), Error>;
    /// The queue id holding the reservation of this sender's Message-ID.
    fn reserved(&mut self, message_id: &str, sender: &str) -> Result<Option<String>, Error>;
    /// Reserve this sender's Message-ID for `queue_id`: a new row (the pair is a unique
    /// key), or, with `stale`, the row held by that queue id taken over.
    fn set_reservation(
        &mut self,
        time: i64,
        message_id: &str,
        sender: &str,
        queue_id: &str,
        stale: Option<&str>,
    ) -> Result<(), Error>;
    /// Remove the reservation if `queue_id` still holds it.
    /// The person's access record (keyed by the lower-case DN), replaced.
    fn set_access(&mut self, record: &AccessRecord) -> Result<(), Error>;
    fn delete_reservation(&mut self, message_id: &str, sender: &str, queue_id: &str) -> Result<(), Error>;
    /// Store a checkpoint if entry `cp.seq` still has `cp.hash` and none has its seq yet
    /// (another node may have made it); true when stored.
    fn insert_checkpoint(&mut self, cp: &Checkpoint) -> Result<bool, Error>;
    /// The time stamp of a checkpoint that has none (never replaced).
    fn set_timestamp(&mut self, seq: i64, token: &[u8]) -> Result<(), Error>;
}

/// Where the archive, the billing rows and the acceptance marks are kept: one database,
/// so that recording an outbound message is all or nothing.
pub trait Store: Send + Sync {
    /// Run `write` in a transaction and return once that is durable. A failing `write`
    /// leaves none of its rows. `committed` is called with the newest entry of each
    /// committed transaction, in commit order, before any of its writers returns.
    fn append(
        &self,
        write: &mut dyn FnMut(&mut dyn Tx) -> Result<Entry, Error>,
        committed: &dyn Fn(i64, &str) -> Result<(), Error>,
    ) -> Result<Entry, Error>;
    /// Like [`Store::append`] for a write that adds no entry (reservations).
    fn transact(
        &self,
        write: &mut dyn FnMut(&mut dyn Tx) -> Result<(), Error>,
        committed: &dyn Fn(i64, &str) -> Result<(), Error>,
    ) -> Result<(), Error>;
    /// Up to `limit` entries with a seq above `after`, in order, without their data.
    fn entries(&self, after: i64, limit: usize) -> Result<Vec<Entry>, Error>;
    fn data(&self, seq: i64) -> Result<Vec<u8>, Error>;
    /// [`Store::entries`] with each entry's data (`verify` reads everything once).
    fn entries_with_data(&self, after: i64, limit: usize) -> Result<Vec<(Entry, Vec<u8>)>, Error> {
        self.entries(after, limit)?.into_iter().map(|e| self.data(e.seq).map(|d| (e, d))).collect()
    }
    /// Is this queued message recorded (archive, billing)?
    fn is_recorded(&self, queue_id: &str) -> Result<bool, Error>;
    /// Billing rows with `from <= time < to` (unix seconds): (cost_unit, recipients, options).
    fn billing_rows(&self, from: i64, to: i64) -> Result<Vec<(String, i64, String)>, Error>;
    /// Every access record, oldest change first.
    fn access_records(&self) -> Result<Vec<AccessRecord>, Error>;
    /// The newest `out` entry with this private-id: its seq and the bytes relayed.
    fn sent(&self, private_id: &str) -> Result<Option<(i64, Vec<u8>)>, Error> {
        let _ = private_id;
        Ok(None)
    }
    /// Every checkpoint, by seq.
    fn checkpoints(&self) -> Result<Vec<Checkpoint>, Error>;
    /// The newest checkpoint's (seq, hash).
    fn newest_checkpoint(&self) -> Result<Option<(i64, String)>, Error>;
    /// The chain head kept as a row of this store (seq, hash); `None` where the archive
    /// keeps a head file instead.
    fn head_row(&self) -> Result<Option<(i64, String)>, Error> {
        Ok(None)
    }
}

/// The hash before the first entry, and the head of an archive without entries.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Entries read at once by `verify` and `heal_head`.
const PAGE: usize = 256;

/// Lower-case hex (verify writes three per entry: no allocation per byte).
pub(crate) fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(char::from(DIGITS[usize::from(x >> 4)]));
        s.push(char::from(DIGITS[usize::from(x & 15)]));
    }
    s
}

/// A SHA-256 value written as 64 hex digits (entry hashes, fingerprints).
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Hash of one entry: JSON of every field in a fixed order, so no separator is ambiguous.
/// Public so that tests can play whoever rewrites the database and recomputes the chain.
pub fn entry_hash(e: &Entry) -> String {
    // A tuple serialises as the JSON array a `json!` list would, without building one
    // (held to that form by a test: archived hashes must not change).
    let fields = (
        &e.prev_hash,
        e.seq,
        e.time,
        &e.direction,
        &e.private_id,
        &e.message_id,
        &e.sender,
        &e.recipients,
        &e.sha256,
        e.size,
        e.link,
    );
    let mut canon = serde_json::to_string(&fields).unwrap_or_default();
    // Appended only when present: entries written before actors existed keep their hash.
    if let Some(a) = &e.actor {
        canon.pop();
        canon.push(',');
        canon.push_str(&serde_json::to_string(a).unwrap_or_default());
        canon.push(']');
    }
    sha256_hex(canon.as_bytes())
}

/// The entry that follows `prev` (the newest entry's seq and hash, none for the first):
/// the chain rule every store uses, inside the transaction that holds the chain head.
/// `sha256` is [`sha256_hex`] of the data, computed before the head is taken.
pub fn next_entry(
    prev: Option<(i64, String)>,
    link: Option<i64>,
    e: &NewEntry<'_>,
    time_ms: i64,
    sha256: String,
) -> Entry {
    let (prev_seq, prev_hash) = prev.unwrap_or((0, GENESIS.to_string()));
    let mut entry = Entry {
        seq: prev_seq + 1,
        time: time_ms,
        direction: e.direction.to_string(),
        private_id: e.private_id.map(str::to_string),
        message_id: e.message_id.map(str::to_string),
        sender: e.sender.to_string(),
        recipients: e.recipients.join(","),
        sha256,
        size: e.data.len() as i64,
        link,
        prev_hash,
        hash: String::new(),
        actor: e.actor.map(str::to_string),
    };
    entry.hash = entry_hash(&entry);
    entry
}

/// Receipts and notifications point at the De-Mail they are about (by private-id).
pub fn wants_link<'a>(e: &NewEntry<'a>) -> Option<&'a str> {
    match (e.direction, e.private_id) {
        ("receipt" | "notification" | "malware", Some(pid)) => Some(pid),
        _ => None,
    }
}

/// The next entry of the chain, inside the writer's transaction.
fn link_and_insert(tx: &mut dyn Tx, e: &NewEntry<'_>) -> Result<Entry, Error> {
    let link = match wants_link(e) {
        Some(pid) => tx.sent_with(pid)?,
        None => None,
    };
    let sha256 = sha256_hex(e.data);
    // The head last: a store that locks it holds the lock only until its commit.
    let prev = tx.newest()?;
    let entry = next_entry(prev, link, e, crate::spool::now_millis() as i64, sha256);
    tx.insert(&entry, e.data)?;
    Ok(entry)
}

/// Where the newest (seq, hash) is kept apart from the entries.
enum Head {
    /// A file beside the SQLite archive, written after each commit.
    File(HeadFile),
    /// A row of a shared store, moved in the appending transaction ([`Store::head_row`]).
    Row,
}

impl Head {
    /// None when missing or garbled.
    fn read(&self, store: &dyn Store) -> Result<Option<(i64, String)>, Error> {
        match self {
            Head::File(f) => Ok(f.read()),
            Head::Row => store.head_row(),
        }
    }

    fn exists(&self) -> bool {
        match self {
            Head::File(f) => f.exists(),
            Head::Row => true,
        }
    }

    fn write(&self, seq: i64, hash: &str) -> Result<(), Error> {
        match self {
            Head::File(f) => f.write(seq, hash),
            Head::Row => Ok(()),
        }
    }
}

fn parse_head(text: &str) -> Option<(i64, String)> {
    let (s, h) = text.trim().split_once(' ')?;
    Some((s.parse().ok()?, h.to_string()))
}

/// `<seq> <hash>` of the newest entry, outside the store: removing the newest entries
/// (or the whole database) is then noticed. Copies on write-once storage keep it honest.
struct HeadFile {
    path: PathBuf,
}

impl HeadFile {
    /// None when missing or garbled.
    fn read(&self) -> Option<(i64, String)> {
        parse_head(&std::fs::read_to_string(&self.path).ok()?)
    }

    fn exists(&self) -> bool {
        self.path.exists()
    }

    /// In place and only forward: the gateway and an administrator's command (`access
    /// approve`) both append, each writing the head after its commit, so under a lock a
    /// head never replaces a newer one. In place like PostgreSQL's `pg_control`: the line
    /// is far below one 512-byte sector, whose overwrite disks make atomic, so a commit
    /// costs one `fdatasync` and no new file (creating one per commit was a tenth of the
    /// gateway's CPU under load).
    fn write(&self, seq: i64, hash: &str) -> Result<(), Error> {
        let res = (|| -> std::io::Result<()> {
            use std::io::{Read, Seek, Write};
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(self.path.with_extension("head.lock"))?;
            lock.lock()?;
            let mut f =
                std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&self.path)?;
            let mut cur = String::new();
            let _ = f.read_to_string(&mut cur);
            if parse_head(&cur).is_some_and(|(cur, _)| cur > seq) {
                return Ok(());
            }
            let line = format!("{seq} {hash}\n");
            f.seek(std::io::SeekFrom::Start(0))?;
            f.write_all(line.as_bytes())?;
            if cur.len() > line.len() {
                f.set_len(line.len() as u64)?;
            }
            f.sync_data()
        })();
        res.map_err(|e| {
            Error::new(
                "archive.head_write",
                "Die Kopfdatei des Archivs (.head) lässt sich nicht schreiben.",
                "The archive head file (.head) cannot be written.",
            )
            .caused_by(format!("{}: {e}", self.path.display()))
        })
    }
}

/// The outcome of [`Archive::reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    /// The caller's queue id holds the reservation: it may spool the message.
    Ours,
    /// Another queue id holds it (accepted, being accepted, or a stale attempt).
    Held(String),
}

/// The archive: chain rules over a [`Store`] and the head file.
pub struct Archive {
    store: Box<dyn Store>,
    head: Head,
}

impl Archive {
    pub fn new(store: Box<dyn Store>, head_file: PathBuf) -> Archive {
        Archive { store, head: Head::File(HeadFile { path: head_file }) }
    }

    /// An archive whose store keeps the chain head as a row ([`Store::head_row`]).
    pub fn with_head_row(store: Box<dyn Store>) -> Archive {
        Archive { store, head: Head::Row }
    }

    fn write(&self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<Entry, Error>) -> Result<Entry, Error> {
        self.store.append(f, &|seq, hash| self.head.write(seq, hash))
    }

    pub fn append(&self, e: &NewEntry<'_>) -> Result<Entry, Error> {
        self.write(&mut |tx| link_and_insert(tx, e))
    }

    /// Archive entry, billing row and the "accepted" mark of a spooled outbound
    /// message, all or nothing. The reservation of its Message-ID is set to it as well
    /// (after a crash, or for a message spooled before reservations existed).
    /// An access event (request, grant, revocation, refusal): an `access` entry in the
    /// chain with the record as its content, and the person's record, in one transaction.
    pub fn record_access(&self, record: &AccessRecord, actor: &str, sender: &str) -> Result<Entry, Error> {
        let data = serde_json::to_vec(record)
            .map_err(|e| Error::new("archive.encode", "Interner Fehler.", "Internal error.").caused_by(e))?;
        let e = NewEntry {
            direction: "access",
            private_id: None,
            message_id: None,
            sender,
            recipients: &[],
            data: &data,
            actor: Some(actor),
        };
        self.write(&mut |tx| {
            let entry = link_and_insert(tx, &e)?;
            tx.set_access(record)?;
            Ok(entry)
        })
    }

    /// The access record of a person (by DN, any case).
    pub fn access(&self, dn: &str) -> Result<Option<AccessRecord>, Error> {
        Ok(self.store.access_records()?.into_iter().find(|r| r.dn.eq_ignore_ascii_case(dn)))
    }

    pub fn access_records(&self) -> Result<Vec<AccessRecord>, Error> {
        self.store.access_records()
    }

    pub fn record_outbound(&self, e: &NewEntry<'_>, bill: &Bill<'_>) -> Result<Entry, Error> {
        self.write(&mut |tx| {
            let entry = link_and_insert(tx, e)?;
            let now = crate::spool::now() as i64;
            tx.insert_bill(now, bill)?;
            tx.mark_accepted(now, bill.queue_id, e.message_id, bill.sender)?;
            if let Some(mid) = e.message_id {
                match tx.reserved(mid, bill.sender)? {
                    Some(q) if q == bill.queue_id => {}
                    held => tx.set_reservation(now, mid, bill.sender, bill.queue_id, held.as_deref())?,
                }
            }
            Ok(entry)
        })
    }

    pub fn is_recorded(&self, queue_id: &str) -> Result<bool, Error> {
        self.store.is_recorded(queue_id)
    }

    /// Reserve this sender's Message-ID for `queue_id` before its message is spooled, in
    /// one transaction, durable on return. `stale`: a queue id known to hold the
    /// reservation without being queued (a failed or crashed attempt), to take over.
    pub fn reserve(
        &self,
        message_id: &str,
        sender: &str,
        queue_id: &str,
        stale: Option<&str>,
    ) -> Result<Reserved, Error> {
        let mut out = Reserved::Ours;
        self.store.transact(
            &mut |tx| {
                out = match tx.reserved(message_id, sender)? {
                    Some(q) if q == queue_id => Reserved::Ours,
                    Some(q) if stale != Some(q.as_str()) => Reserved::Held(q),
                    held => {
                        let now = crate::spool::now() as i64;
                        tx.set_reservation(now, message_id, sender, queue_id, held.as_deref())?;
                        Reserved::Ours
                    }
                };
                Ok(())
            },
            &|seq, hash| self.head.write(seq, hash),
        )?;
        Ok(out)
    }

    /// Give up `queue_id`'s reservation (its spooling failed and was rolled back).
    pub fn release(&self, message_id: &str, sender: &str, queue_id: &str) -> Result<(), Error> {
        self.store.transact(&mut |tx| tx.delete_reservation(message_id, sender, queue_id), &|seq, hash| {
            self.head.write(seq, hash)
        })
    }

    /// The queue id holding the reservation of this sender's Message-ID.
    pub fn reserved(&self, message_id: &str, sender: &str) -> Result<Option<String>, Error> {
        let mut out = None;
        self.store.transact(
            &mut |tx| {
                out = tx.reserved(message_id, sender)?;
                Ok(())
            },
            &|seq, hash| self.head.write(seq, hash),
        )?;
        Ok(out)
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// All entries without their data, in order.
    pub fn entries(&self) -> Result<Vec<Entry>, Error> {
        self.store.entries(0, usize::MAX)
    }

    pub fn data(&self, seq: i64) -> Result<Vec<u8>, Error> {
        self.store.data(seq)
    }

    /// After a crash between a commit and its head-file write, the head names an older
    /// entry. Move it to the newest entry when the entries after it chain from it; any
    /// other difference stays for `verify` to report. Returns (old seq, new seq) if moved.
    /// Call at start, before writers.
    pub fn heal_head(&self) -> Result<Option<(i64, i64)>, Error> {
        // A head row moves with its entries: nothing is left behind.
        let Head::File(file) = &self.head else { return Ok(None) };
        let Some((hs, hh)) = file.read() else {
            // A new archive gets a head at the genesis, so that a crash in its very first
            // commit leaves a head that is behind, not one that is missing (which stays a
            // finding: it may have been deleted). Only here, in the gateway's start: the
            // CLI opens the same archive and must not write.
            if !self.head.exists() && self.store.entries(0, 1)?.is_empty() {
                self.head.write(0, GENESIS)?;
            }
            return Ok(None);
        };
        let named = if hs == 0 {
            hh == GENESIS
        } else {
            self.store.entries(hs - 1, 1)?.first().is_some_and(|e| e.seq == hs && e.hash == hh)
        };
        if !named {
            return Ok(None);
        }
        let (mut seq, mut hash) = (hs, hh);
        loop {
            let page = self.store.entries(seq, PAGE)?;
            if page.is_empty() {
                break;
            }
            for e in page {
                if e.seq != seq + 1 || e.prev_hash != hash || entry_hash(&e) != e.hash {
                    return Ok(None);
                }
                (seq, hash) = (e.seq, e.hash);
            }
        }
        if seq == hs {
            return Ok(None);
        }
        self.head.write(seq, &hash)?;
        Ok(Some((hs, seq)))
    }

    /// Sign the entries since the newest checkpoint with the gateway's key; none when
    /// nothing is new, or another node stored one for the same head first.
    pub fn checkpoint(&self, kid: &str, secret: &[u8; 32]) -> Result<Option<Checkpoint>, Error> {
        let (mut seq, mut hash) = self.store.newest_checkpoint()?.unwrap_or((0, GENESIS.to_string()));
        let from = seq + 1;
        let mut hashes = Vec::new();
        loop {
            let page = self.store.entries(seq, PAGE)?;
            let Some(last) = page.last() else { break };
            checkpoint::chains((seq, &hash), &page, &mut hashes)?;
            (seq, hash) = (last.seq, last.hash.clone());
        }
        if seq < from {
            return Ok(None);
        }
        let cp = Checkpoint::sign(from, (seq, hash), hashes, kid, secret, crate::spool::now_millis() as i64);
        let mut stored = false;
        self.store.transact(
            &mut |tx| {
                stored = tx.insert_checkpoint(&cp)?;
                Ok(())
            },
            &|seq, hash| self.head.write(seq, hash),
        )?;
        Ok(stored.then_some(cp))
    }

    /// Checkpoints still without a time stamp (the TSA was unreachable), newest first.
    pub fn unstamped(&self, limit: usize) -> Result<Vec<Checkpoint>, Error> {
        let mut all = self.store.checkpoints()?;
        all.retain(|c| c.timestamp.is_none());
        all.reverse();
        all.truncate(limit);
        Ok(all)
    }

    pub fn set_timestamp(&self, seq: i64, token: &[u8]) -> Result<(), Error> {
        self.store.transact(&mut |tx| tx.set_timestamp(seq, token), &|seq, hash| self.head.write(seq, hash))
    }

    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, Error> {
        self.store.checkpoints()
    }

    /// The De-Mail sent with this private-id (a receipt's counterpart): seq and exact bytes.
    pub fn sent(&self, private_id: &str) -> Result<Option<(i64, Vec<u8>)>, Error> {
        self.store.sent(private_id)
    }

    /// Every message hash, entry hash and link, and the head. Empty when intact.
    pub fn verify(&self) -> Result<Vec<Problem>, Error> {
        self.verify_with(&Trust::default()).map(|r| r.problems)
    }

    /// [`Archive::verify`] and the signed checkpoints (and their time stamps) against `trust`.
    pub fn verify_with(&self, trust: &Trust) -> Result<Report, Error> {
        let checkpoints = self.store.checkpoints()?;
        let mut checker = checkpoint::Checker::new(&checkpoints, trust);
        let mut problems = Vec::new();
        let mut count = 0i64;
        let mut p = |seq: Option<i64>, code: &'static str, de: String, en: String| {
            problems.push(Problem { seq, code, message: de, message_en: en })
        };
        // The head first: a writer commits before it writes the head, so the entries read
        // next reach at least as far. A head behind the newest entry is then a commit in
        // progress (or a crash before the head write) and fine if it names its entry.
        let head = match (self.head.read(self.store.as_ref())?, self.head.exists()) {
            (Some(h), _) => Some(h),
            // Present but garbled: a head that matches no entry.
            (None, true) => Some((-1, String::new())),
            (None, false) => None,
        };
        // The genesis head of a new archive names no entry; behind that is every entry.
        let mut head_entry_ok = head.as_ref().is_some_and(|(hs, hh)| *hs == 0 && hh == GENESIS);
        let mut expect_seq = 1i64;
        let mut prev = GENESIS.to_string();
        let mut last: Option<(i64, String)> = None;
        loop {
            let page = self.store.entries_with_data(last.as_ref().map_or(0, |(s, _)| *s), PAGE)?;
            if page.is_empty() {
                break;
            }
            for (e, data) in page {
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
                checker.entry(&e);
                count += 1;
                if head.as_ref().is_some_and(|(hs, hh)| *hs == s && *hh == e.hash) {
                    head_entry_ok = true;
                }
                prev = e.hash.clone();
                expect_seq = s + 1;
                last = Some((s, e.hash));
            }
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
        let (found, stamped, signed_upto) = checker.finish();
        problems.extend(found);
        Ok(Report { problems, entries: count, checkpoints: checkpoints.len(), signed_upto, stamped })
    }

    /// Write every entry as `<seq>-<direction>.eml`, `manifest.json` with their hashes and
    /// the head, and `checkpoints.json`: an auditor verifies it with `archive verify --export`.
    pub fn export(&self, dir: &Path) -> Result<usize, Error> {
        let failed = |what: String, e: &dyn std::fmt::Display| {
            Error::new(
                "archive.export_failed",
                "Der Export lässt sich nicht schreiben.",
                "The export cannot be written.",
            )
            .caused_by(format!("{what}: {e}"))
        };
        std::fs::create_dir_all(dir).map_err(|e| failed(dir.display().to_string(), &e))?;
        let entries = self.entries()?;
        let mut manifest = Vec::new();
        for e in &entries {
            let file = format!("{:08}-{}.eml", e.seq, e.direction);
            let data = self.data(e.seq)?;
            std::fs::write(dir.join(&file), &data).map_err(|er| failed(file.clone(), &er))?;
            let mut v = serde_json::to_value(e).map_err(|er| failed(file.clone(), &er))?;
            v["file"] = serde_json::Value::String(file);
            manifest.push(v);
        }
        // The head as this archive knows it: entries cut from the export's end are noticed.
        let head =
            self.head.read(self.store.as_ref())?.map(|(seq, hash)| serde_json::json!({"seq": seq, "hash": hash}));
        let m = serde_json::json!({
            "format": export::FORMAT,
            "exported": crate::spool::now_millis() as i64,
            "head": head,
            "entries": manifest,
        });
        let cps: Vec<_> = self.store.checkpoints()?.iter().map(Checkpoint::to_json).collect();
        for (name, v) in [("checkpoints.json", serde_json::json!(cps)), ("manifest.json", m)] {
            let text = serde_json::to_vec_pretty(&v).map_err(|e| failed(name.into(), &e))?;
            std::fs::write(dir.join(name), text).map_err(|e| failed(name.into(), &e))?;
        }
        Ok(entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The rows of a store that keeps everything in memory: the chain needs nothing but
    /// the trait. A transaction works on a copy that replaces the rows on success.
    #[derive(Default, Clone)]
    struct Rows {
        entries: Vec<(Entry, Vec<u8>)>,
        bills: Vec<(i64, String, i64, String)>,
        accepted: Vec<(String, Option<String>, String)>,
        /// (message id, sender) → queue id
        reservations: std::collections::HashMap<(String, String), String>,
        access: Vec<AccessRecord>,
        checkpoints: Vec<Checkpoint>,
    }

    impl Tx for Rows {
        fn newest(&mut self) -> Result<Option<(i64, String)>, Error> {
            Ok(self.entries.last().map(|(e, _)| (e.seq, e.hash.clone())))
        }
        fn sent_with(&mut self, pid: &str) -> Result<Option<i64>, Error> {
            let out =
                self.entries.iter().rev().find(|(e, _)| e.direction == "out" && e.private_id.as_deref() == Some(pid));
            Ok(out.map(|(e, _)| e.seq))
        }
        fn insert(&mut self, entry: &Entry, data: &[u8]) -> Result<(), Error> {
            self.entries.push((entry.clone(), data.to_vec()));
            Ok(())
        }
        fn insert_bill(&mut self, time: i64, b: &Bill<'_>) -> Result<(), Error> {
            self.bills.push((time, b.cost_unit.into(), b.recipients as i64, b.options.into()));
            Ok(())
        }
        fn mark_accepted(&mut self, _: i64, q: &str, mid: Option<&str>, sender: &str) -> Result<(), Error> {
            if self.accepted.iter().any(|(a, _, _)| a == q) {
                return Err(Error::new("test.duplicate", "doppelt", "duplicate"));
            }
            self.accepted.push((q.into(), mid.map(str::to_string), sender.into()));
            Ok(())
        }
        fn reserved(&mut self, mid: &str, sender: &str) -> Result<Option<String>, Error> {
            Ok(self.reservations.get(&(mid.into(), sender.into())).cloned())
        }
        fn set_access(&mut self, r: &AccessRecord) -> Result<(), Error> {
            self.access.retain(|a| !a.dn.eq_ignore_ascii_case(&r.dn));
            self.access.push(r.clone());
            Ok(())
        }
        fn set_reservation(&mut self, _: i64, mid: &str, s: &str, q: &str, stale: Option<&str>) -> Result<(), Error> {
            let key = (mid.to_string(), s.to_string());
            if self.reservations.get(&key).map(String::as_str) != stale {
                return Err(Error::new("test.reserved", "reserviert", "reserved"));
            }
            self.reservations.insert(key, q.into());
            Ok(())
        }
        fn delete_reservation(&mut self, mid: &str, s: &str, q: &str) -> Result<(), Error> {
            let key = (mid.to_string(), s.to_string());
            if self.reservations.get(&key).is_some_and(|h| h == q) {
                self.reservations.remove(&key);
            }
            Ok(())
        }
        fn insert_checkpoint(&mut self, cp: &Checkpoint) -> Result<bool, Error> {
            let there = self.entries.iter().any(|(e, _)| e.seq == cp.seq && e.hash == cp.hash);
            if !there || self.checkpoints.iter().any(|c| c.seq == cp.seq) {
                return Ok(false);
            }
            self.checkpoints.push(cp.clone());
            Ok(true)
        }
        fn set_timestamp(&mut self, seq: i64, token: &[u8]) -> Result<(), Error> {
            if let Some(c) = self.checkpoints.iter_mut().find(|c| c.seq == seq && c.timestamp.is_none()) {
                c.timestamp = Some(token.to_vec());
            }
            Ok(())
        }
    }

    #[derive(Default)]
    struct Memory(Mutex<Rows>);

    impl Store for Memory {
        fn append(
            &self,
            write: &mut dyn FnMut(&mut dyn Tx) -> Result<Entry, Error>,
            committed: &dyn Fn(i64, &str) -> Result<(), Error>,
        ) -> Result<Entry, Error> {
            let mut rows = self.0.lock().unwrap();
            let mut tx = rows.clone();
            let e = write(&mut tx)?;
            *rows = tx;
            committed(e.seq, &e.hash)?;
            Ok(e)
        }
        fn transact(
            &self,
            write: &mut dyn FnMut(&mut dyn Tx) -> Result<(), Error>,
            _committed: &dyn Fn(i64, &str) -> Result<(), Error>,
        ) -> Result<(), Error> {
            let mut rows = self.0.lock().unwrap();
            let mut tx = rows.clone();
            write(&mut tx)?;
            *rows = tx;
            Ok(())
        }
        fn entries(&self, after: i64, limit: usize) -> Result<Vec<Entry>, Error> {
            let rows = self.0.lock().unwrap();
            Ok(rows.entries.iter().filter(|(e, _)| e.seq > after).take(limit).map(|(e, _)| e.clone()).collect())
        }
        fn data(&self, seq: i64) -> Result<Vec<u8>, Error> {
            let rows = self.0.lock().unwrap();
            Ok(rows.entries.iter().find(|(e, _)| e.seq == seq).map(|(_, d)| d.clone()).unwrap_or_default())
        }
        fn is_recorded(&self, q: &str) -> Result<bool, Error> {
            Ok(self.0.lock().unwrap().accepted.iter().any(|(a, _, _)| a == q))
        }
        fn billing_rows(&self, from: i64, to: i64) -> Result<Vec<(String, i64, String)>, Error> {
            let rows = self.0.lock().unwrap();
            let r = rows.bills.iter().filter(|(t, ..)| (from..to).contains(t));
            Ok(r.map(|(_, u, n, o)| (u.clone(), *n, o.clone())).collect())
        }
        fn access_records(&self) -> Result<Vec<AccessRecord>, Error> {
            Ok(self.0.lock().unwrap().access.clone())
        }
        fn checkpoints(&self) -> Result<Vec<Checkpoint>, Error> {
            Ok(self.0.lock().unwrap().checkpoints.clone())
        }
        fn newest_checkpoint(&self) -> Result<Option<(i64, String)>, Error> {
            Ok(self.0.lock().unwrap().checkpoints.last().map(|c| (c.seq, c.hash.clone())))
        }
    }

    #[test]
    fn the_chain_needs_nothing_but_the_store_trait() {
        let d = tempfile::tempdir().unwrap();
        let a = Archive::new(Box::new(Memory::default()), d.path().join("memory.head"));
        assert_eq!(a.heal_head().unwrap(), None);
        assert!(a.verify().unwrap().is_empty(), "a new archive with its genesis head is intact");
        let e = |direction, data| NewEntry {
            direction,
            private_id: Some("P"),
            message_id: Some("<m@x>"),
            sender: "a@x.de-mail.de",
            recipients: &[],
            data,
            actor: None,
        };
        let bill = Bill { queue_id: "q1", sender: "a@x.de", cost_unit: "K", recipients: 1, options: "", person: "" };
        let out = a.record_outbound(&e("out", b"m"), &bill).unwrap();
        assert!(a.record_outbound(&e("out", b"m"), &bill).is_err(), "a second mark for q1 fails the whole record");
        let receipt = a.append(&e("receipt", b"r")).unwrap();
        assert_eq!((out.seq, receipt.seq, receipt.link), (1, 2, Some(1)));
        assert_eq!(receipt.prev_hash, out.hash);
        assert_eq!(a.reserved("<m@x>", "a@x.de").unwrap().as_deref(), Some("q1"), "recording reserves");
        // Reservations: one holder per (Message-ID, sender); a stale one can be taken over.
        assert_eq!(a.reserve("<n@x>", "a@x.de", "q2", None).unwrap(), Reserved::Ours);
        assert_eq!(a.reserve("<n@x>", "a@x.de", "q3", None).unwrap(), Reserved::Held("q2".into()));
        assert_eq!(a.reserve("<n@x>", "b@x.de", "q3", None).unwrap(), Reserved::Ours, "another sender");
        assert_eq!(a.reserve("<n@x>", "a@x.de", "q3", Some("q2")).unwrap(), Reserved::Ours);
        a.release("<n@x>", "a@x.de", "q2").unwrap();
        assert_eq!(a.reserved("<n@x>", "a@x.de").unwrap().as_deref(), Some("q3"), "only the holder releases");
        a.release("<n@x>", "a@x.de", "q3").unwrap();
        assert_eq!(a.reserved("<n@x>", "a@x.de").unwrap(), None);
        assert_eq!(a.store().billing_rows(0, i64::MAX).unwrap().len(), 1);
        assert!(a.verify().unwrap().is_empty(), "{:?}", a.verify());
        assert_eq!(
            std::fs::read_to_string(d.path().join("memory.head")).unwrap().trim(),
            format!("2 {}", receipt.hash)
        );
    }

    #[test]
    fn checkpoints_cover_what_came_before_and_say_what_no_checkpoint_covers() {
        let d = tempfile::tempdir().unwrap();
        let a = Archive::new(Box::new(Memory::default()), d.path().join("memory.head"));
        a.heal_head().unwrap();
        let add = |n: usize| {
            for i in 0..n {
                let data = format!("m{i}");
                let e = NewEntry {
                    direction: "out",
                    private_id: None,
                    message_id: None,
                    sender: "a@x.de-mail.de",
                    recipients: &[],
                    data: data.as_bytes(),
                    actor: None,
                };
                a.append(&e).unwrap();
            }
        };
        let key = [9u8; 32];
        assert_eq!(a.checkpoint("gw1", &key).unwrap(), None, "an empty archive has nothing to sign");
        add(3);
        let first = a.checkpoint("gw1", &key).unwrap().unwrap();
        assert_eq!((first.from, first.seq, first.hashes.len()), (1, 3, 96));
        assert_eq!(a.checkpoint("gw1", &key).unwrap(), None, "nothing new");
        add(2);
        let second = a.checkpoint("gw1", &key).unwrap().unwrap();
        assert_eq!((second.from, second.seq), (4, 5));
        let now = crate::spool::now_millis() as i64;
        let trust = Trust {
            keys: vec![demail_core::seal::public_key("gw1", &key)],
            tsa: Vec::new(),
            require: true,
            now_ms: now,
            grace_ms: 60_000,
        };
        let r = a.verify_with(&trust).unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!((r.entries, r.checkpoints, r.signed_upto), (5, 2, 5));
        // Two more: fresh ones need no checkpoint yet; an hour later they do.
        add(2);
        assert!(a.verify_with(&trust).unwrap().problems.is_empty());
        let later = Trust { now_ms: now + 3_600_000, ..trust.clone() };
        let codes: Vec<_> = a.verify_with(&later).unwrap().problems.iter().map(|p| (p.code, p.seq)).collect();
        assert_eq!(codes, [("archive.not_checkpointed", Some(6))]);
        // Another key under the same id: neither checkpoint is the gateway's.
        let stranger = Trust { keys: vec![demail_core::seal::public_key("gw1", &[1; 32])], ..trust.clone() };
        let codes: Vec<_> = a.verify_with(&stranger).unwrap().problems.iter().map(|p| (p.code, p.seq)).collect();
        assert_eq!(codes, [("archive.checkpoint_forged", Some(3)), ("archive.checkpoint_forged", Some(5))]);
    }

    #[test]
    fn the_entry_hash_keeps_its_json_form() {
        let mut e = next_entry(
            None,
            Some(7),
            &NewEntry {
                direction: "receipt",
                private_id: Some("DM-\"ü\\1"),
                message_id: None,
                sender: "a@x.de-mail.de",
                recipients: &["b@y.de-mail.de".into(), "c@y.de-mail.de".into()],
                data: b"x",
                actor: None,
            },
            1_700_000_000_123,
            sha256_hex(b"x"),
        );
        // The form every archived hash was computed with.
        let old = |e: &Entry| {
            let mut canon = serde_json::json!([
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
            if let (Some(a), Some(list)) = (&e.actor, canon.as_array_mut()) {
                list.push(serde_json::json!(a));
            }
            sha256_hex(canon.to_string().as_bytes())
        };
        assert_eq!(entry_hash(&e), old(&e));
        e.actor = Some("kerberos:peter@MUSTERSTADT.DE".into());
        assert_eq!(entry_hash(&e), old(&e));
    }
}
