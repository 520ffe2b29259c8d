//! Durable state in one SQLite file per user: outbox, journal (receipts) and pairings.
//!
//! `journal_mode=WAL` with `synchronous=FULL`: a commit has reached the disk when it
//! returns, so the API may answer 202 right after storing a message. The CLI opens the
//! same file (pairing approval, outbox commands) while the service runs.

use crate::code;
use demail_core::Reason;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const DB_FILE: &str = "helper.sqlite3";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS messages (
    id              TEXT PRIMARY KEY,
    message_id      TEXT NOT NULL UNIQUE,
    private_id      TEXT NOT NULL,
    sender          TEXT NOT NULL,
    recipients      TEXT NOT NULL,
    subject         TEXT NOT NULL,
    options         TEXT NOT NULL,
    dialect         TEXT NOT NULL,
    size            INTEGER NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('queued','sending','sent','failed','cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    error_code      TEXT,
    error           TEXT,
    error_en        TEXT,
    gateway_reply   TEXT,
    client          TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    sent_at         INTEGER
);
CREATE INDEX IF NOT EXISTS messages_due ON messages(status, next_attempt_at);

-- The message itself, in its own table with the blob as the last column: SQLite then
-- writes it from a zeroblob in place instead of building the whole record in memory.
CREATE TABLE IF NOT EXISTS message_bodies (
    message TEXT PRIMARY KEY REFERENCES messages(id),
    mime    BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_private_id ON messages(private_id);

CREATE TABLE IF NOT EXISTS receipts (
    id                 INTEGER PRIMARY KEY,
    private_id         TEXT NOT NULL,
    type               TEXT NOT NULL CHECK (type IN ('dispatch','receipt','retrieve')),
    time               TEXT,
    receipt_message_id TEXT NOT NULL DEFAULT '',
    reported_at        INTEGER NOT NULL,
    -- The helper's check of the receipt (api.rs `ReceiptVerdict`); only `matches` counts.
    verdict            TEXT NOT NULL DEFAULT 'unchecked',
    reasons            TEXT NOT NULL DEFAULT '[]',
    -- The sent message (messages.id) it certifies, when it matches one: a private-id
    -- (a file number) may be used for several De-Mails.
    message            TEXT,
    UNIQUE (private_id, type, receipt_message_id)
);

CREATE TABLE IF NOT EXISTS pairings (
    id           TEXT PRIMARY KEY,
    client       TEXT NOT NULL,
    code         TEXT,
    token_hash   BLOB NOT NULL UNIQUE,
    status       TEXT NOT NULL CHECK (status IN ('pending','approved','denied','revoked')),
    source       TEXT NOT NULL,
    origin       TEXT,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    decided_at   INTEGER,
    last_used_at INTEGER,
    -- The add-in's id: verified for native pairings (Thunderbird passes it to the host),
    -- as stated by the add-in for requests over HTTP.
    addon_id     TEXT
);
"#;

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as i64
}

/// A store failure: the person gets a stable code and text, the log the SQLite or I/O
/// cause (which never holds message content or secrets).
#[derive(Debug)]
pub struct StoreError(pub demail_core::Error);

impl StoreError {
    pub fn new(cause: impl std::fmt::Display) -> Self {
        StoreError(
            demail_core::Error::new(
                code::STORE_UNAVAILABLE.id,
                "Der Speicher des Helfers ist nicht verfügbar (Datenträger, Rechte?).",
                "The helper's storage is not available (disk, permissions?).",
            )
            .caused_by(cause),
        )
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::new(e)
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::new(e)
    }
}

impl From<StoreError> for demail_core::Error {
    fn from(e: StoreError) -> Self {
        e.0
    }
}

/// The outbox directory itself cannot be used (the cause goes to the log).
pub(crate) fn unusable(dir: &Path) -> Reason {
    Reason::new(
        code::STORE_UNAVAILABLE.id,
        format!("Der Postausgang in {} kann nicht geöffnet werden.", dir.display()),
        format!("The outbox in {} cannot be opened.", dir.display()),
    )
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Create a directory readable only by its owner.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Write a file via a temporary file, fsync and rename; the file is readable by its owner only.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, bytes, None)
}

/// [`write_atomic`], giving the file `perms` instead (e.g. those of the file it replaces,
/// which others may have to read). A failed write leaves no temporary file behind.
pub fn write_atomic_with(path: &Path, bytes: &[u8], perms: Option<std::fs::Permissions>) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        if let Some(p) = perms {
            f.set_permissions(p)?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if let Some(dir) = path.parent() {
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Random lower-case hex.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    // getrandom fails only without an OS random source; then the process cannot work safely.
    getrandom::fill(&mut b).expect("operating system random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub struct Store {
    conn: Connection,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutboxEntry {
    pub id: String,
    pub message_id: String,
    pub private_id: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub options: Vec<String>,
    pub dialect: String,
    pub size: i64,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub error: Option<Reason>,
    pub gateway_reply: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub sent_at: Option<i64>,
}

/// A receipt report with the helper's check, for [`Store::add_receipt`].
#[derive(Debug, Clone, Copy)]
pub struct NewReceipt<'a> {
    pub private_id: &'a str,
    /// `dispatch`, `receipt`, `retrieve`.
    pub kind: &'a str,
    pub time: Option<&'a str>,
    pub receipt_message_id: Option<&'a str>,
    pub verdict: &'a str,
    pub reasons: &'a [Reason],
    /// The sent message it certifies (`matches` only).
    pub message: Option<&'a str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Receipt {
    #[serde(rename = "type")]
    pub kind: String,
    pub time: Option<String>,
    pub message_id: Option<String>,
    pub reported_at: i64,
    /// The helper's check: `matches`, `mismatch`, `invalid-signature`, `unsigned`,
    /// `untrusted`, `unknown-sent`, `unchecked`.
    pub check: String,
    /// Only a receipt that `matches` counts as proof (and moves `receipt_status`).
    pub counts: bool,
    pub reasons: Vec<Reason>,
    /// The sent message it certifies (`matches` only).
    #[serde(skip)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Pairing {
    pub id: String,
    pub client: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub status: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
    /// The add-in's id (verified for `source = "native"`, stated by the add-in otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addon_id: Option<String>,
}

/// A pairing to store.
pub struct NewPairing<'a> {
    pub client: &'a str,
    pub code: Option<&'a str>,
    pub token_hash: &'a [u8],
    /// `pending` or `approved`.
    pub status: &'a str,
    /// `request` (HTTP), `native` (native host), `provisioned` (CLI).
    pub source: &'a str,
    pub origin: Option<&'a str>,
    pub addon_id: Option<&'a str>,
    pub expires_at: Option<i64>,
}

/// Open pairing requests: all of them, from one origin, for one add-in id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingCounts {
    pub total: i64,
    pub origin: i64,
    pub addon: i64,
}

/// The outcome of deciding a request in the tray.
#[derive(Debug)]
pub enum Decision {
    Decided(Box<Pairing>),
    /// The typed code is not this request's: nothing changed.
    WrongCode,
    /// No open request with this id (decided, expired, purged).
    Unknown,
}

/// (pairing id, token hash, status, expires_at) of a pairing that may authenticate.
pub type LiveToken = (String, Vec<u8>, String, Option<i64>);

/// A new outbox message.
pub struct NewMessage<'a> {
    pub message_id: &'a str,
    pub private_id: &'a str,
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub subject: &'a str,
    pub options: &'a [String],
    pub dialect: &'a str,
    /// The message as header block and body; stored as one blob without joining them.
    pub mime_head: &'a [u8],
    pub mime_body: &'a [u8],
    pub client: Option<&'a str>,
}

/// The result of [`Store::enqueue`].
pub enum Enqueued {
    New(OutboxEntry),
    /// The Message-ID was already in the outbox from the same sender: the earlier entry,
    /// nothing stored twice (a resend after a lost answer).
    Existing(OutboxEntry),
    /// The Message-ID is in the outbox from another sender: nothing stored.
    Taken,
}

const OUTBOX_COLS: &str = "id, message_id, private_id, sender, recipients, subject, options, dialect, size, status, attempts, next_attempt_at, error_code, error, error_en, gateway_reply, created_at, updated_at, sent_at";

fn outbox_row(r: &rusqlite::Row) -> rusqlite::Result<OutboxEntry> {
    let recipients: String = r.get(4)?;
    let options: String = r.get(6)?;
    let status: String = r.get(9)?;
    let code: Option<String> = r.get(12)?;
    let error = match code {
        Some(code) => Some(Reason::new(
            &code,
            r.get::<_, Option<String>>(13)?.unwrap_or_default(),
            r.get::<_, Option<String>>(14)?.unwrap_or_default(),
        )),
        None => None,
    };
    let next: i64 = r.get(11)?;
    Ok(OutboxEntry {
        id: r.get(0)?,
        message_id: r.get(1)?,
        private_id: r.get(2)?,
        sender: r.get(3)?,
        recipients: serde_json::from_str(&recipients).unwrap_or_default(),
        subject: r.get(5)?,
        options: serde_json::from_str(&options).unwrap_or_default(),
        dialect: r.get(7)?,
        size: r.get(8)?,
        next_attempt_at: (status == "queued").then_some(next),
        status,
        attempts: r.get(10)?,
        error,
        gateway_reply: r.get(15)?,
        created_at: r.get(16)?,
        updated_at: r.get(17)?,
        sent_at: r.get(18)?,
    })
}

const PAIRING_COLS: &str =
    "id, client, code, status, source, origin, created_at, expires_at, decided_at, last_used_at, addon_id";

fn pairing_row(r: &rusqlite::Row) -> rusqlite::Result<Pairing> {
    let status: String = r.get(3)?;
    Ok(Pairing {
        id: r.get(0)?,
        client: r.get(1)?,
        code: if status == "pending" { r.get(2)? } else { None },
        status,
        source: r.get(4)?,
        origin: r.get(5)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        decided_at: r.get(8)?,
        last_used_at: r.get(9)?,
        addon_id: r.get(10)?,
    })
}

impl Store {
    /// Open (and create) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        Self::open_in(dir).map_err(|e| StoreError(demail_core::Error { reason: unusable(dir), ..e.0 }))
    }

    fn open_in(dir: &Path) -> Result<Store> {
        private_dir(dir)?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        Ok(Store { conn, path })
    }

    /// Run `f` with `synchronous=NORMAL`: still atomic and safe against a crash of the
    /// process (the WAL is in the OS cache), only a power cut may lose the last updates.
    /// Used for relay bookkeeping, where a lost update means at most one resend with the
    /// same Message-ID; accepting a message (the 202) always uses FULL.
    fn relaxed<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let r = f(self);
        let restore = self.conn.pragma_update(None, "synchronous", "FULL");
        let v = r?;
        restore?;
        Ok(v)
    }

    // ---------------------------------------------------------------- outbox

    /// Whether a message with this Message-ID is in the outbox.
    pub fn has_message_id(&self, message_id: &str) -> Result<bool> {
        Ok(self.conn.prepare("SELECT 1 FROM messages WHERE message_id = ?1")?.exists([message_id])?)
    }

    /// Store a message durably. Same Message-ID and sender twice → the existing entry.
    pub fn enqueue(&mut self, m: &NewMessage) -> Result<Enqueued> {
        let tx = self.conn.transaction()?;
        if let Some(e) = tx
            .query_row(&format!("SELECT {OUTBOX_COLS} FROM messages WHERE message_id = ?1"), [m.message_id], outbox_row)
            .optional()?
        {
            return Ok(if e.sender == m.sender { Enqueued::Existing(e) } else { Enqueued::Taken });
        }
        let id = format!("m_{}", random_hex(10));
        let now = now_ms();
        let size = m.mime_head.len() + m.mime_body.len();
        tx.execute(
            "INSERT INTO messages (id, message_id, private_id, sender, recipients, subject, options, dialect, size, status, attempts, next_attempt_at, client, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'queued', 0, ?10, ?11, ?10, ?10)",
            params![
                id,
                m.message_id,
                m.private_id,
                m.sender,
                serde_json::to_string(m.recipients).unwrap_or_else(|_| "[]".into()),
                m.subject,
                serde_json::to_string(m.options).unwrap_or_else(|_| "[]".into()),
                m.dialect,
                size as i64,
                now,
                m.client,
            ],
        )?;
        tx.execute("INSERT INTO message_bodies (message, mime) VALUES (?1, zeroblob(?2))", params![id, size as i64])?;
        {
            let rowid = tx.last_insert_rowid();
            let mut blob = tx.blob_open("main", "message_bodies", "mime", rowid, false)?;
            blob.write_at(m.mime_head, 0)?;
            blob.write_at(m.mime_body, m.mime_head.len())?;
        }
        tx.commit()?;
        Ok(Enqueued::New(self.get(&id)?.ok_or_else(|| StoreError::new("stored message vanished"))?))
    }

    pub fn get(&self, id: &str) -> Result<Option<OutboxEntry>> {
        Ok(self
            .conn
            .query_row(&format!("SELECT {OUTBOX_COLS} FROM messages WHERE id = ?1"), [id], outbox_row)
            .optional()?)
    }

    pub fn mime(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let exists: Option<i64> =
            self.conn.query_row("SELECT 1 FROM message_bodies WHERE message = ?1", [id], |r| r.get(0)).optional()?;
        match exists {
            Some(_) => Ok(Some(read_mime(&self.conn, id)?)),
            None => Ok(None),
        }
    }

    /// Newest first; `status` filters.
    pub fn list(&self, status: Option<&str>, limit: u32) -> Result<Vec<OutboxEntry>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {OUTBOX_COLS} FROM messages WHERE (?1 IS NULL OR status = ?1) ORDER BY created_at DESC, id LIMIT ?2"
        ))?;
        let rows = st.query_map(params![status, limit], outbox_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Counts per status.
    pub fn counts(&self) -> Result<Vec<(String, i64)>> {
        let mut st = self.conn.prepare("SELECT status, COUNT(*) FROM messages GROUP BY status ORDER BY status")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// After a crash, messages left in `sending` go back to `queued`. The gateway sees
    /// the same Message-ID again and can drop the duplicate (see docs/protocol.md).
    pub fn recover(&mut self) -> Result<usize> {
        Ok(self
            .conn
            .execute("UPDATE messages SET status = 'queued', updated_at = ?1 WHERE status = 'sending'", [now_ms()])?)
    }

    /// Claim the next due message: `queued` → `sending`, attempts + 1.
    pub fn claim_due(&mut self, now: i64) -> Result<Option<(OutboxEntry, Vec<u8>)>> {
        self.relaxed(|s| s.claim_due_inner(now))
    }

    fn claim_due_inner(&mut self, now: i64) -> Result<Option<(OutboxEntry, Vec<u8>)>> {
        let tx = self.conn.transaction()?;
        let row: Option<String> = tx
            .query_row(
                "SELECT id FROM messages WHERE status = 'queued' AND next_attempt_at <= ?1 ORDER BY next_attempt_at, created_at LIMIT 1",
                [now],
                |r| r.get(0),
            )
            .optional()?;
        let Some(id) = row else { return Ok(None) };
        tx.execute(
            "UPDATE messages SET status = 'sending', attempts = attempts + 1, updated_at = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        let entry = tx.query_row(&format!("SELECT {OUTBOX_COLS} FROM messages WHERE id = ?1"), [&id], outbox_row)?;
        let mime = read_mime(&tx, &id)?;
        tx.commit()?;
        Ok(Some((entry, mime)))
    }

    /// When the next queued message is due (ms), if any.
    pub fn next_due(&self) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row("SELECT MIN(next_attempt_at) FROM messages WHERE status = 'queued'", [], |r| r.get(0))?)
    }

    pub fn mark_sent(&mut self, id: &str, reply: &str) -> Result<()> {
        let now = now_ms();
        self.relaxed(|s| Ok(s.conn.execute(
            "UPDATE messages SET status = 'sent', gateway_reply = ?2, sent_at = ?3, updated_at = ?3, error_code = NULL, error = NULL, error_en = NULL WHERE id = ?1",
            params![id, reply, now],
        )?))?;
        Ok(())
    }

    /// Transient failure: back to `queued`, due again at `next`.
    pub fn mark_retry(&mut self, id: &str, next: i64, err: &Reason, reply: Option<&str>) -> Result<()> {
        self.relaxed(|s| Ok(s.conn.execute(
            "UPDATE messages SET status = 'queued', next_attempt_at = ?2, error_code = ?3, error = ?4, error_en = ?5, gateway_reply = ?6, updated_at = ?7 WHERE id = ?1 AND status = 'sending'",
            params![id, next, err.code, err.message, err.message_en, reply, now_ms()],
        )?))?;
        Ok(())
    }

    pub fn mark_failed(&mut self, id: &str, err: &Reason, reply: Option<&str>) -> Result<()> {
        self.conn.execute(
            "UPDATE messages SET status = 'failed', error_code = ?2, error = ?3, error_en = ?4, gateway_reply = ?5, updated_at = ?6 WHERE id = ?1",
            params![id, err.code, err.message, err.message_en, reply, now_ms()],
        )?;
        Ok(())
    }

    /// `failed` or `queued` → `queued`, due now. Returns the new entry, or the current one
    /// unchanged when the state does not allow it.
    pub fn retry(&mut self, id: &str) -> Result<Option<(bool, OutboxEntry)>> {
        let now = now_ms();
        let n = self.conn.execute(
            "UPDATE messages SET status = 'queued', next_attempt_at = ?2, updated_at = ?2 WHERE id = ?1 AND status IN ('failed','queued')",
            params![id, now],
        )?;
        Ok(self.get(id)?.map(|e| (n == 1, e)))
    }

    /// `queued` or `failed` → `cancelled`. A message being sent or sent cannot be cancelled.
    pub fn cancel(&mut self, id: &str) -> Result<Option<(bool, OutboxEntry)>> {
        let n = self.conn.execute(
            "UPDATE messages SET status = 'cancelled', updated_at = ?2 WHERE id = ?1 AND status IN ('queued','failed')",
            params![id, now_ms()],
        )?;
        Ok(self.get(id)?.map(|e| (n == 1, e)))
    }

    // ---------------------------------------------------------------- journal

    /// Record a receipt with the helper's check. Returns false when it was known already
    /// and nothing changed. The same receipt reported again replaces an unchecked entry
    /// with a checked one, and any entry that does not count with one that `matches`; an
    /// entry that counts is never replaced (a forged copy cannot take its place).
    pub fn add_receipt(&mut self, r: &NewReceipt<'_>) -> Result<bool> {
        let NewReceipt { private_id, kind, time, receipt_message_id, verdict, reasons, message } = *r;
        let reasons = serde_json::to_string(reasons).unwrap_or_else(|_| "[]".into());
        let n = self.conn.execute(
            "INSERT INTO receipts (private_id, type, time, receipt_message_id, reported_at, verdict, reasons, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (private_id, type, receipt_message_id) DO UPDATE
               SET time = excluded.time, reported_at = excluded.reported_at, verdict = excluded.verdict,
                   reasons = excluded.reasons, message = excluded.message
               WHERE receipts.verdict <> 'matches'
                 AND (excluded.verdict = 'matches' OR (receipts.verdict = 'unchecked' AND excluded.verdict <> 'unchecked'))",
            params![private_id, kind, time, receipt_message_id.unwrap_or(""), now_ms(), verdict, reasons, message],
        )?;
        Ok(n == 1)
    }

    /// The receipts shown with one sent message: those that certify it, and those that
    /// certify none (their warning belongs with every message of the private-id).
    pub fn receipts_for(&self, private_id: &str, message: &str) -> Result<Vec<Receipt>> {
        let mut r = self.receipts(private_id)?;
        r.retain(|x| x.message.as_deref().is_none_or(|m| m == message));
        Ok(r)
    }

    pub fn receipts(&self, private_id: &str) -> Result<Vec<Receipt>> {
        let mut st = self.conn.prepare(
            "SELECT type, time, receipt_message_id, reported_at, verdict, reasons, message FROM receipts WHERE private_id = ?1 ORDER BY reported_at, id",
        )?;
        let rows = st.query_map([private_id], |r| {
            let mid: String = r.get(2)?;
            let check: String = r.get(4)?;
            let reasons: String = r.get(5)?;
            Ok(Receipt {
                kind: r.get(0)?,
                time: r.get(1)?,
                message_id: (!mid.is_empty()).then_some(mid),
                reported_at: r.get(3)?,
                counts: check == "matches",
                check,
                reasons: serde_json::from_str(&reasons).unwrap_or_default(),
                message: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The messages as the helper handed them to the gateway, for the sent De-Mails with
    /// this private-id, newest first: `(messages.id, MIME)`.
    pub fn sent_mimes(&self, private_id: &str, limit: u32) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for e in self.journal(Some(private_id), limit)? {
            if let Some(m) = self.mime(&e.id)? {
                out.push((e.id, m));
            }
        }
        Ok(out)
    }

    /// Sent messages, newest first, optionally one private-id.
    pub fn journal(&self, private_id: Option<&str>, limit: u32) -> Result<Vec<OutboxEntry>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {OUTBOX_COLS} FROM messages WHERE status = 'sent' AND (?1 IS NULL OR private_id = ?1) ORDER BY sent_at DESC, id LIMIT ?2"
        ))?;
        let rows = st.query_map(params![private_id, limit], outbox_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    // ---------------------------------------------------------------- pairings

    /// Delete what can never authenticate again: expired requests and denied ones. Run at
    /// start, hourly and before each new request, so [`Store::live_token_hashes`] stays small.
    pub fn purge_pairings(&mut self, now: i64) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM pairings WHERE (status = 'pending' AND expires_at IS NOT NULL AND expires_at <= ?1) OR status = 'denied'",
            [now],
        )?)
    }

    /// Open requests in all, from `origin` (none: no Origin header) and for `addon_id`.
    pub fn pending_counts(&self, now: i64, origin: Option<&str>, addon_id: Option<&str>) -> Result<PendingCounts> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*),
                    COALESCE(SUM(origin IS ?2), 0),
                    COALESCE(SUM(?3 IS NOT NULL AND addon_id IS ?3), 0)
             FROM pairings WHERE status = 'pending' AND (expires_at IS NULL OR expires_at > ?1)",
            params![now, origin, addon_id],
            |r| Ok(PendingCounts { total: r.get(0)?, origin: r.get(1)?, addon: r.get(2)? }),
        )?)
    }

    pub fn add_pairing(&mut self, p: &NewPairing) -> Result<Pairing> {
        let id = insert_pairing(&self.conn, p)?;
        self.pairing(&id)?.ok_or_else(|| StoreError::new("stored pairing vanished"))
    }

    /// A native pairing replaces the add-in's earlier ones: revoke every approved native
    /// pairing of `addon_id` and store `p`, in one transaction. Returns how many were revoked.
    pub fn replace_native_pairing(&mut self, addon_id: &str, p: &NewPairing) -> Result<(Pairing, usize)> {
        let tx = self.conn.transaction()?;
        let revoked = tx.execute(
            "UPDATE pairings SET status = 'revoked', decided_at = ?2 WHERE source = 'native' AND addon_id = ?1 AND status = 'approved'",
            params![addon_id, now_ms()],
        )?;
        let id = insert_pairing(&tx, p)?;
        tx.commit()?;
        Ok((self.pairing(&id)?.ok_or_else(|| StoreError::new("stored pairing vanished"))?, revoked))
    }

    pub fn pairing(&self, id: &str) -> Result<Option<Pairing>> {
        Ok(self
            .conn
            .query_row(&format!("SELECT {PAIRING_COLS} FROM pairings WHERE id = ?1"), [id], pairing_row)
            .optional()?)
    }

    pub fn pairings(&self) -> Result<Vec<Pairing>> {
        let mut st = self.conn.prepare(&format!("SELECT {PAIRING_COLS} FROM pairings ORDER BY created_at, id"))?;
        let rows = st.query_map([], pairing_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Every (id, token hash, status, expires_at) that can still authenticate at `now`:
    /// open requests before their expiry, approved pairings used within `token_ttl` ms
    /// (each use renews them, see [`Store::touch_pairing`]). Nothing expired is compared.
    pub fn live_token_hashes(&self, now: i64, token_ttl: i64) -> Result<Vec<LiveToken>> {
        let mut st = self.conn.prepare(
            "SELECT id, token_hash, status, expires_at FROM pairings
             WHERE (status = 'pending' AND (expires_at IS NULL OR expires_at > ?1))
                OR (status = 'approved' AND COALESCE(last_used_at, decided_at, created_at) > ?1 - ?2)",
        )?;
        let rows = st.query_map(params![now, token_ttl], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Note the use of a pairing, which also renews its lifetime: at most once a minute and
    /// without waiting for the disk (a lost update costs at most a minute of lifetime).
    pub fn touch_pairing(&mut self, id: &str) -> Result<()> {
        let now = now_ms();
        self.relaxed(|s| {
            s.conn.execute(
                "UPDATE pairings SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?3)",
                params![id, now, now - 60_000],
            )?;
            Ok(())
        })
    }

    /// Approve or deny a pending, unexpired request by its code (`demail pair approve`).
    pub fn decide_by_code(&mut self, code: &str, approve: bool) -> Result<Option<Pairing>> {
        let now = now_ms();
        let norm = normalize_code(code);
        let id: Option<String> = self
            .conn
            .query_row(
                "SELECT id FROM pairings WHERE status = 'pending' AND code = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                params![norm, now],
                |r| r.get(0),
            )
            .optional()?;
        let Some(id) = id else { return Ok(None) };
        self.set_decision(&id, approve, now)?;
        self.pairing(&id)
    }

    /// The tray: approve the open request `id` only with its code as the user typed it
    /// (shown by the add-in, never by the tray); deny it without.
    pub fn decide_by_id(&mut self, id: &str, typed_code: &str, approve: bool) -> Result<Decision> {
        let now = now_ms();
        let code: Option<Option<String>> = self
            .conn
            .query_row(
                "SELECT code FROM pairings WHERE id = ?1 AND status = 'pending' AND (expires_at IS NULL OR expires_at > ?2)",
                params![id, now],
                |r| r.get(0),
            )
            .optional()?;
        let Some(code) = code else { return Ok(Decision::Unknown) };
        if approve {
            let typed = normalize_code(typed_code);
            let matches: bool =
                code.is_some_and(|c| bool::from(subtle::ConstantTimeEq::ct_eq(c.as_bytes(), typed.as_bytes())));
            if !matches {
                return Ok(Decision::WrongCode);
            }
        }
        self.set_decision(id, approve, now)?;
        Ok(self.pairing(id)?.map(|p| Decision::Decided(Box::new(p))).unwrap_or(Decision::Unknown))
    }

    /// Tests: pretend the pairing was last used at `at`.
    #[cfg(test)]
    pub(crate) fn set_last_used(&mut self, id: &str, at: i64) {
        self.conn.execute("UPDATE pairings SET last_used_at = ?2 WHERE id = ?1", params![id, at]).unwrap();
    }

    fn set_decision(&mut self, id: &str, approve: bool, now: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE pairings SET status = ?2, decided_at = ?3, expires_at = NULL WHERE id = ?1",
            params![id, if approve { "approved" } else { "denied" }, now],
        )?;
        Ok(())
    }

    /// Revoke by id (or by `all`). Returns how many were revoked.
    pub fn revoke(&mut self, id: &str) -> Result<usize> {
        let now = now_ms();
        let n = if id == "all" {
            self.conn.execute(
                "UPDATE pairings SET status = 'revoked', decided_at = ?1 WHERE status IN ('pending','approved')",
                [now],
            )?
        } else {
            self.conn.execute(
                "UPDATE pairings SET status = 'revoked', decided_at = ?2 WHERE id = ?1 AND status IN ('pending','approved')",
                params![id, now],
            )?
        };
        Ok(n)
    }
}

fn insert_pairing(conn: &Connection, p: &NewPairing) -> Result<String> {
    let id = format!("p_{}", random_hex(8));
    let now = now_ms();
    let decided = (p.status != "pending").then_some(now);
    conn.execute(
        "INSERT INTO pairings (id, client, code, token_hash, status, source, origin, created_at, expires_at, decided_at, addon_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![id, p.client, p.code, p.token_hash, p.status, p.source, p.origin, now, p.expires_at, decided, p.addon_id],
    )?;
    Ok(id)
}

/// Older databases: pairings without `addon_id`; messages kept in `messages.mime` before
/// `message_bodies`; receipts without the helper's check (they stay `unchecked`).
fn migrate(conn: &Connection) -> Result<()> {
    let has_verdict: bool =
        conn.prepare("SELECT 1 FROM pragma_table_info('receipts') WHERE name = 'verdict'")?.exists([])?;
    if !has_verdict {
        for col in ["verdict TEXT NOT NULL DEFAULT 'unchecked'", "reasons TEXT NOT NULL DEFAULT '[]'", "message TEXT"] {
            match conn.execute_batch(&format!("ALTER TABLE receipts ADD COLUMN {col};")) {
                Err(e) if e.to_string().contains("duplicate column") => {}
                r => r?,
            }
        }
    }
    let has_addon_id: bool =
        conn.prepare("SELECT 1 FROM pragma_table_info('pairings') WHERE name = 'addon_id'")?.exists([])?;
    if !has_addon_id {
        // The CLI and the service may both get here first.
        match conn.execute_batch("ALTER TABLE pairings ADD COLUMN addon_id TEXT;") {
            Err(e) if e.to_string().contains("duplicate column") => {}
            r => r?,
        }
    }
    let has_mime: bool = conn.prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = 'mime'")?.exists([])?;
    if has_mime {
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             INSERT OR IGNORE INTO message_bodies (message, mime) SELECT id, mime FROM messages;
             ALTER TABLE messages DROP COLUMN mime;
             COMMIT;",
        )?;
    }
    Ok(())
}

/// Read a stored message through SQLite's blob API straight into one buffer of the right
/// size (a plain `SELECT` would hold it twice: SQLite's copy and ours).
fn read_mime(conn: &Connection, id: &str) -> Result<Vec<u8>> {
    let rowid: i64 = conn.query_row("SELECT rowid FROM message_bodies WHERE message = ?1", [id], |r| r.get(0))?;
    let blob = conn.blob_open("main", "message_bodies", "mime", rowid, true)?;
    let mut buf = vec![0u8; blob.len()];
    blob.read_at_exact(&mut buf, 0)?;
    Ok(buf)
}

/// Codes are shown as `ABCD-EFGH`; accept any case, with or without the dash or blanks.
pub fn normalize_code(code: &str) -> String {
    let c: String = code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect();
    if c.len() == 8 {
        format!("{}-{}", &c[..4], &c[4..])
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_databases_are_migrated() {
        let dir = std::env::temp_dir().join(format!("demail-store-{}", random_hex(6)));
        std::fs::create_dir_all(&dir).unwrap();
        {
            let c = Connection::open(dir.join(DB_FILE)).unwrap();
            c.execute_batch(
                "CREATE TABLE messages (id TEXT PRIMARY KEY, message_id TEXT NOT NULL UNIQUE, private_id TEXT NOT NULL, sender TEXT NOT NULL,
                 recipients TEXT NOT NULL, subject TEXT NOT NULL, options TEXT NOT NULL, dialect TEXT NOT NULL, mime BLOB NOT NULL,
                 size INTEGER NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL,
                 error_code TEXT, error TEXT, error_en TEXT, gateway_reply TEXT, client TEXT, created_at INTEGER NOT NULL,
                 updated_at INTEGER NOT NULL, sent_at INTEGER);
                 INSERT INTO messages VALUES ('m_1','a@b','P','a@b','[]','s','[]','headers',x'41424344',4,'queued',0,0,NULL,NULL,NULL,NULL,NULL,0,0,NULL);
                 CREATE TABLE receipts (id INTEGER PRIMARY KEY, private_id TEXT NOT NULL, type TEXT NOT NULL, time TEXT,
                 receipt_message_id TEXT NOT NULL DEFAULT '', reported_at INTEGER NOT NULL, UNIQUE (private_id, type, receipt_message_id));
                 INSERT INTO receipts (private_id, type, reported_at) VALUES ('P', 'dispatch', 1);",
            )
            .unwrap();
        }
        let mut s = Store::open(&dir).unwrap();
        assert_eq!(s.mime("m_1").unwrap().unwrap(), b"ABCD");
        // Receipts recorded before the check never count.
        let r = s.receipts("P").unwrap();
        assert_eq!((r.len(), r[0].check.as_str(), r[0].counts), (1, "unchecked", false));
        let (e, m) = s.claim_due(1).unwrap().unwrap();
        assert_eq!((e.id.as_str(), m.as_slice()), ("m_1", &b"ABCD"[..]));
        let _ = std::fs::remove_dir_all(dir);
    }
}
