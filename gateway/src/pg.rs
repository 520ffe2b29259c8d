//! PostgreSQL storage for a gateway cluster (`[storage] backend = "postgres"`,
//! docs/gateway.md "Cluster"): several nodes share one queue, one archive chain, billing
//! and the Message-ID reservations.
//!
//! - Acceptance writes all or nothing (reservation, message and body, recipients, acceptance
//!   mark, billing rows, the archive entry); the SMTP 250 follows its commit.
//! - Recipients are claimed with `FOR UPDATE SKIP LOCKED` under a lease (owner, `lease_until`
//!   from the database clock, an epoch from a sequence, unique per claim). Every later write
//!   names the epoch: 0 rows = the lease went to another node = nothing is written.
//! - The archive head row is locked by a transaction that appends and held to its commit,
//!   so chain order is commit order; `entries` has `PRIMARY KEY (seq)` and `UNIQUE (prev_hash)`.
//!   A node's appends share one such transaction ([`write`]: group commit).

use crate::archive::{self, AccessRecord, Archive, Checkpoint, Entry, NewEntry, Store, Tx, GENESIS};
use crate::billing::Bill;
use crate::config::Storage;
use crate::spool::{Kind, Meta, State};
use deadpool_postgres::Transaction;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use demail_core::{Error, Reason};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::{Host, SslMode};
use write::{
    entry_params, Chain, MessageRows, Settle, Writes, Wrote, COLS, INSERT_BILLS, INSERT_ENTRY, LOCK_HEAD, MOVE_HEAD,
    SENT_WITH,
};

mod write;

/// The migrations in order; a row in `schema_migrations` per applied one, with its hash.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/postgres/001_initial.sql")),
    (2, "lz4_bodies", include_str!("../migrations/postgres/002_lz4_bodies.sql")),
    (3, "checkpoints", include_str!("../migrations/postgres/003_checkpoints.sql")),
];

/// The advisory lock under which nodes apply migrations (one at a time).
const MIGRATION_LOCK: i64 = 0x0064_656d_6169_6c01;

fn db_err(e: impl std::fmt::Display + 'static) -> Error {
    // tokio-postgres says only "db error"; the server's code and text are what an admin needs.
    let any: &dyn std::any::Any = &e;
    let cause = match any.downcast_ref::<tokio_postgres::Error>() {
        Some(pg) => match (pg.as_db_error(), std::error::Error::source(pg)) {
            (Some(db), _) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
            (None, Some(src)) => format!("{pg}: {src}"),
            (None, None) => pg.to_string(),
        },
        None => e.to_string(),
    };
    Error::new(
        "storage.database",
        "Die Datenbank (PostgreSQL) meldet einen Fehler.",
        "The database (PostgreSQL) reported an error.",
    )
    .caused_by(cause)
}

fn timed_out() -> Error {
    Error::new(
        "storage.timeout",
        "Die Datenbank (PostgreSQL) antwortet nicht rechtzeitig.",
        "The database (PostgreSQL) does not answer in time.",
    )
}

fn unreachable_db(e: impl std::fmt::Display) -> Error {
    Error::new(
        "storage.unavailable",
        "Die Datenbank (PostgreSQL) ist nicht erreichbar.",
        "The database (PostgreSQL) cannot be reached.",
    )
    .caused_by(e)
}

fn is_loopback(h: &Host) -> bool {
    match h {
        Host::Unix(_) => true,
        Host::Tcp(name) => name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
    }
}

/// The connection settings without the password (that is a secret).
fn pg_config(s: &Storage) -> Result<tokio_postgres::Config, Reason> {
    let mut c = match &s.url {
        Some(u) => u.parse::<tokio_postgres::Config>().map_err(|e| {
            Reason::new(
                "storage.url_invalid",
                format!("storage.url ist keine PostgreSQL-Adresse: {e}"),
                format!("storage.url is not a PostgreSQL address: {e}"),
            )
        })?,
        None => tokio_postgres::Config::new(),
    };
    if let Some(h) = &s.host {
        c.host(h);
    }
    if let Some(p) = s.port {
        c.port(p);
    }
    if let Some(d) = &s.database {
        c.dbname(d);
    }
    if let Some(u) = &s.user {
        c.user(u);
    }
    Ok(c)
}

/// `[storage]` for PostgreSQL: where, who, and verified TLS. The field and the reason.
pub fn check_config(s: &Storage) -> Result<(), (&'static str, Reason)> {
    let c = pg_config(s).map_err(|r| ("url", r))?;
    if c.get_password().is_some() {
        return Err((
            "url",
            Reason::new(
                "storage.password_in_url",
                "storage.url enthält ein Passwort: Geheimnisse stehen nie in der Konfiguration (password_credential, password_keyring).",
                "storage.url contains a password: secrets are never in the configuration (password_credential, password_keyring).",
            ),
        ));
    }
    if c.get_hosts().is_empty() || c.get_user().is_none() || c.get_dbname().is_none() {
        return Err((
            "host",
            Reason::new(
                "storage.incomplete",
                "[storage] braucht host (oder url), database und user.",
                "[storage] needs host (or url), database and user.",
            ),
        ));
    }
    let local = c.get_hosts().iter().all(is_loopback);
    if c.get_ssl_mode() == SslMode::Disable && !local {
        return Err((
            "url",
            Reason::new(
                "storage.tls_required",
                "sslmode=disable nur für eine Datenbank auf diesem Rechner (Loopback): sonst immer TLS mit geprüftem Zertifikat (ca).",
                "sslmode=disable only for a database on this host (loopback): otherwise always TLS with a verified certificate (ca).",
            ),
        ));
    }
    if c.get_ssl_mode() != SslMode::Disable {
        match &s.ca {
            None => {
                return Err((
                    "ca",
                    Reason::new(
                        "storage.ca_missing",
                        "[storage] ca fehlt: die CA (PEM) des Datenbank-Zertifikats, gegen die immer geprüft wird.",
                        "[storage] ca is missing: the CA (PEM) of the database certificate, always verified against.",
                    ),
                ))
            }
            Some(p) if !p.is_file() => {
                return Err((
                    "ca",
                    Reason::new(
                        "config.file_missing",
                        format!("storage: CA-Datei {} fehlt", p.display()),
                        format!("storage: CA file {} is missing", p.display()),
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    if s.lease_secs < 3 || s.pool_size < 2 || s.timeout_secs == 0 {
        return Err((
            "lease_secs",
            Reason::new(
                "storage.limits",
                "[storage] lease_secs mindestens 3, pool_size mindestens 2, timeout_secs über 0.",
                "[storage] lease_secs at least 3, pool_size at least 2, timeout_secs above 0.",
            ),
        ));
    }
    Ok(())
}

/// This node's name in leases: configured, else host name and process id.
fn node_name(s: &Storage) -> String {
    s.node.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}

fn tls(ca: &std::path::Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, Error> {
    use rustls_pki_types::pem::PemObject;
    let bad = |e: &dyn std::fmt::Display| {
        Error::new(
            "storage.ca_unusable",
            "Die CA-Datei der Datenbank ([storage] ca) ist nicht nutzbar.",
            "The database CA file ([storage] ca) cannot be used.",
        )
        .caused_by(format!("{}: {e}", ca.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(cfg))
}

/// A pool of verified connections, the schema migrated. `password`: read from its place.
pub async fn connect(s: &Storage, password: &str) -> Result<Pool, Error> {
    let mut c = pg_config(s).map_err(Error::from)?;
    let node = node_name(s);
    let t = Duration::from_secs(s.timeout_secs);
    c.password(password)
        .application_name(format!("demail-gateway {node}"))
        .connect_timeout(t)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        // A node stopped inside a transaction must not hold the chain head for long.
        .options(format!(
            "-c idle_in_transaction_session_timeout={} -c statement_timeout={}",
            s.timeout_secs * 1000,
            s.timeout_secs * 1000
        ));
    let mgr_cfg = ManagerConfig { recycling_method: RecyclingMethod::Fast };
    let mgr = if c.get_ssl_mode() == SslMode::Disable {
        Manager::from_config(c, tokio_postgres::NoTls, mgr_cfg)
    } else {
        c.ssl_mode(SslMode::Require);
        let ca =
            s.ca.as_deref()
                .ok_or_else(|| Error::new("storage.ca_missing", "[storage] ca fehlt.", "[storage] ca is missing."))?;
        Manager::from_config(c, tls(ca)?, mgr_cfg)
    };
    let pool = Pool::builder(mgr)
        .max_size(s.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(t))
        .create_timeout(Some(t))
        .recycle_timeout(Some(t))
        .build()
        .map_err(db_err)?;
    // Starting against a database that does not answer fails instead of hanging.
    tokio::time::timeout(t * 6, migrate(&pool)).await.map_err(|_| timed_out())??;
    Ok(pool)
}

/// Apply what `schema_migrations` does not list, one node at a time (advisory lock).
async fn migrate(pool: &Pool) -> Result<(), Error> {
    let mut c = pool.get().await.map_err(unreachable_db)?;
    c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.map_err(db_err)?;
    let res = async {
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(db_err)?;
        for (version, name, sql) in MIGRATIONS {
            let hash = archive::sha256_hex(sql.as_bytes());
            let row = c
                .query_opt("SELECT sha256 FROM schema_migrations WHERE version = $1", &[version])
                .await
                .map_err(db_err)?;
            match row {
                Some(r) if r.get::<_, String>(0) == hash => continue,
                Some(_) => {
                    return Err(Error::new(
                        "storage.migration_changed",
                        format!("Die Datenbank-Migration {version:03}_{name} wurde nach dem Einspielen geändert."),
                        format!("The database migration {version:03}_{name} was changed after it was applied."),
                    ))
                }
                None => {}
            }
            let tx = c.transaction().await.map_err(db_err)?;
            tx.batch_execute(sql).await.map_err(db_err)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, sha256) VALUES ($1, $2, $3)",
                &[version, name, &hash],
            )
            .await
            .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            tracing::info!(version, name, "database migration applied");
        }
        let newest: Option<i32> =
            c.query_one("SELECT max(version) FROM schema_migrations", &[]).await.map_err(db_err)?.get(0);
        if newest.unwrap_or(0) > MIGRATIONS.len() as i32 {
            tracing::warn!(
                database = newest,
                this_node = MIGRATIONS.len(),
                "the database schema is newer than this node knows (a node was upgraded first); running on"
            );
        }
        Ok(())
    }
    .await;
    let _ = c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    res
}

/// Recipients of one message claimed by this node under one lease epoch.
#[derive(Debug, Clone)]
pub struct Job {
    pub meta: Meta,
    pub rcpts: Vec<String>,
    pub epoch: i64,
    /// Highest attempt count among them.
    pub attempts: u32,
    /// A DATA phase of an earlier attempt was not answered (crash, lost lease).
    pub interrupted: bool,
}

/// What became of a claimed job, written in one fenced transaction.
#[derive(Default)]
pub struct Outcome<'a> {
    /// Accepted by the target.
    pub delivered: Vec<String>,
    /// Settled without delivery: refused for good and reported to the sender, or (inbound)
    /// handed to the Sammelpostfach.
    pub bounced: Vec<String>,
    /// A message to queue with it: the bounce (DSN), or the Sammelpostfach's wrapper.
    pub follow_up: Option<(Meta, Vec<u8>)>,
    /// Due again after `retry_secs` (with `error`), or parked for an administrator (`held`).
    pub retry: Vec<String>,
    pub retry_secs: u64,
    pub error: Option<String>,
    pub held: bool,
    /// For a De-Mail the provider accepted: the billing rows and the archive entry.
    pub record: Option<Delivery<'a>>,
}

pub struct Delivery<'a> {
    pub provider: &'a str,
    pub body: &'a [u8],
}

/// How a settlement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Written,
    /// The lease is no longer ours (another node claimed these recipients, or they are
    /// settled already): nothing was written.
    Fenced,
}

/// The cluster's queue on PostgreSQL: acceptance, claims, leases and settlement.
pub struct Pg {
    pool: Pool,
    group: write::Group,
    pub node: String,
    pub lease: Duration,
    timeout: Duration,
}

/// Run `$body` (an async block using `$c`, a pooled connection) under the node's timeout;
/// a connection that timed out or broke is not handed out again.
/// `$c.$method(sql, params)` with the statement prepared once per connection and kept
/// (deadpool's cache): PostgreSQL parses and plans it once, not on every call.
macro_rules! cached {
    ($c:expr, $method:ident, $sql:expr, $params:expr) => {{
        let st = $c.prepare_cached($sql).await.map_err(db_err)?;
        $c.$method(&st, $params).await.map_err(db_err)
    }};
}

macro_rules! with_client {
    ($pg:expr, $c:ident, $body:expr) => {{
        let mut obj = $pg.client().await?;
        let res = {
            let $c: &mut Object = &mut obj;
            tokio::time::timeout($pg.timeout, $body).await
        };
        $pg.done(obj, res)
    }};
}

fn now_secs() -> i64 {
    crate::spool::now() as i64
}

impl Pg {
    pub fn new(pool: Pool, s: &Storage) -> Pg {
        Pg {
            pool,
            group: write::Group::default(),
            node: node_name(s),
            lease: Duration::from_secs(s.lease_secs),
            timeout: Duration::from_secs(s.timeout_secs),
        }
    }

    async fn client(&self) -> Result<Object, Error> {
        self.pool.get().await.map_err(unreachable_db)
    }

    fn done<T>(&self, obj: Object, res: Result<Result<T, Error>, tokio::time::error::Elapsed>) -> Result<T, Error> {
        match res {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if obj.is_closed() {
                    drop(Object::take(obj));
                }
                Err(e)
            }
            Err(_) => {
                // The answer may still come on this connection: never reuse it.
                drop(Object::take(obj));
                Err(timed_out())
            }
        }
    }

    /// Accept an outbound De-Mail: `metas[0]` to the provider (its recipients billed),
    /// further metas (internal copies) beside it. With `key` (Message-ID, sender) a
    /// submission already accepted returns its queue id and nothing is written.
    /// Returns the queue id that holds the message.
    pub async fn accept_outbound(
        &self,
        metas: &[Meta],
        body: &[u8],
        key: Option<(&str, &str)>,
        entry: &NewEntry<'_>,
        bill: &Bill<'_>,
    ) -> Result<String, Error> {
        let id = &metas[0].id;
        let w = Writes::Outbound {
            rows: MessageRows::of(metas)?,
            body,
            key,
            bill,
            rcpts: &metas[0].rcpt_to,
            now: now_secs(),
        };
        match self.append(&w, &Chain::new(entry)).await? {
            (Wrote::Duplicate, _) => {
                let (mid, sender) = key.expect("a duplicate only with a key");
                let row = with_client!(self, c, async {
                    cached!(
                        c,
                        query_one,
                        "SELECT queue_id FROM reservations WHERE message_id = $1 AND sender = $2",
                        &[&mid, &sender]
                    )
                })?;
                Ok(row.get::<_, String>(0))
            }
            _ => Ok(id.clone()),
        }
    }

    /// Accept an inbound message: the provider's exact bytes into the archive, the
    /// (sealed) bytes into the queue. Returns the archive entry.
    pub async fn accept_inbound(&self, meta: &Meta, queued: &[u8], entry: &NewEntry<'_>) -> Result<Entry, Error> {
        let w = Writes::Inbound { rows: MessageRows::of(std::slice::from_ref(meta))?, body: queued };
        match self.append(&w, &Chain::new(entry)).await? {
            (_, Some(e)) => Ok(e),
            (_, None) => Err(db_err("inbound acceptance wrote no archive entry")),
        }
    }

    /// Undelivered recipients by state (`queued`, `held`, `sending`) with the age in
    /// seconds of the oldest message among them, for the metrics.
    pub async fn queue_depth(&self) -> Result<Vec<(String, i64, f64)>, Error> {
        let rows = with_client!(self, c, async {
            cached!(
                c,
                query,
                "SELECT CASE WHEN r.held THEN 'held' WHEN r.sending THEN 'sending' ELSE 'queued' END,
                        count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(m.created)), 0)::float8
                   FROM recipients r JOIN messages m ON m.id = r.message_id
                  WHERE r.state = 'queued' GROUP BY 1",
                &[]
            )
        })?;
        Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1), r.get::<_, f64>(2))).collect())
    }

    /// Messages with a recipient still queued after `secs`: id, age in seconds, held or not.
    pub async fn overdue(&self, secs: u64) -> Result<Vec<(String, u64, bool)>, Error> {
        let secs = secs as f64;
        let rows = with_client!(self, c, async {
            cached!(
                c,
                query,
                "SELECT m.id, EXTRACT(EPOCH FROM now() - m.created)::float8, bool_or(r.held)
                   FROM recipients r JOIN messages m ON m.id = r.message_id
                  WHERE r.state = 'queued' AND m.created < now() - make_interval(secs => $1)
                  GROUP BY m.id, m.created",
                &[&secs]
            )
        })?;
        Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, f64>(1) as u64, r.get::<_, bool>(2))).collect())
    }

    /// Whether this node can write: its connection goes to a primary, not a standby.
    pub async fn writable(&self) -> Result<bool, Error> {
        let row = with_client!(self, c, async { cached!(c, query_one, "SELECT NOT pg_is_in_recovery()", &[]) })?;
        Ok(row.get::<_, bool>(0))
    }

    /// Claim up to `max` due recipients (oldest first) whose lease is free or lapsed,
    /// grouped by message, each job with its message's bytes.
    pub async fn claim(&self, max: usize) -> Result<Vec<(Job, Vec<u8>)>, Error> {
        let lease = self.lease.as_secs_f64();
        let limit = max as i64;
        let (rows, messages) = with_client!(self, c, async {
            let rows = cached!(
                c,
                query,
                "WITH e AS (SELECT nextval('lease_epochs') AS epoch),
                 due AS (
                    SELECT message_id, rcpt FROM recipients
                    WHERE state = 'queued' AND NOT held AND due_at <= now()
                      AND (lease_until IS NULL OR lease_until < now())
                    ORDER BY due_at, message_id
                    LIMIT $2
                    FOR UPDATE SKIP LOCKED)
                 UPDATE recipients r
                    SET lease_owner = $1, lease_until = now() + $3 * interval '1 second', lease_epoch = e.epoch
                   FROM due, e
                  WHERE r.message_id = due.message_id AND r.rcpt = due.rcpt
                 RETURNING r.message_id, r.rcpt, r.lease_epoch, r.attempts, r.sending",
                &[&self.node, &limit, &lease]
            )?;
            if rows.is_empty() {
                return Ok((rows, Vec::new()));
            }
            let ids: Vec<&str> = rows.iter().map(|r| r.get(0)).collect();
            let messages = cached!(c, query, "SELECT id, meta, body FROM messages WHERE id = ANY($1)", &[&ids])?;
            Ok((rows, messages))
        })?;
        let mut jobs: Vec<Job> = Vec::new();
        for r in rows {
            let id: String = r.get(0);
            let (rcpt, epoch, attempts, sending): (String, i64, i32, bool) = (r.get(1), r.get(2), r.get(3), r.get(4));
            match jobs.iter_mut().find(|j| j.meta.id == id) {
                Some(j) => {
                    j.rcpts.push(rcpt);
                    j.attempts = j.attempts.max(attempts as u32);
                    j.interrupted |= sending;
                }
                None => jobs.push(Job {
                    meta: Meta { id, ..placeholder_meta() },
                    rcpts: vec![rcpt],
                    epoch,
                    attempts: attempts as u32,
                    interrupted: sending,
                }),
            }
        }
        let mut out = Vec::with_capacity(jobs.len());
        for mut j in jobs {
            // Gone meanwhile (dropped by an administrator): its recipients went with it.
            let Some(m) = messages.iter().find(|m| m.get::<_, &str>(0) == j.meta.id) else { continue };
            j.meta = serde_json::from_str(m.get::<_, &str>(1)).map_err(db_err)?;
            out.push((j, m.get(2)));
        }
        Ok(out)
    }

    /// Extend the lease of a job; false when it is no longer ours (another node holds the
    /// epoch now, or the recipients are settled).
    pub async fn renew(&self, job: &Job) -> Result<bool, Error> {
        let lease = self.lease.as_secs_f64();
        let n = with_client!(self, c, async {
            cached!(
                c,
                execute,
                "UPDATE recipients SET lease_until = now() + $4 * interval '1 second'
                  WHERE message_id = $1 AND rcpt = ANY($2) AND lease_epoch = $3 AND state = 'queued'",
                &[&job.meta.id, &job.rcpts, &job.epoch, &lease]
            )
        })?;
        Ok(n as usize == job.rcpts.len())
    }

    /// Give back every lease this node holds (graceful stop): the recipients are due at
    /// once for any node. The epoch stays; a later claim takes a new one and so fences
    /// whatever of ours might still try to settle.
    pub async fn release_leases(&self) -> Result<u64, Error> {
        with_client!(self, c, async {
            cached!(
                c,
                execute,
                "UPDATE recipients SET lease_owner = NULL, lease_until = NULL
                  WHERE lease_owner = $1 AND state = 'queued'",
                &[&self.node]
            )
        })
    }

    /// DATA is about to start (a diagnosis for the next attempt; not waited for).
    pub async fn mark_sending(&self, job: &Job) -> Result<(), Error> {
        with_client!(self, c, async {
            cached!(
                c,
                execute,
                "UPDATE recipients SET sending = true WHERE message_id = $1 AND rcpt = ANY($2) AND lease_epoch = $3",
                &[&job.meta.id, &job.rcpts, &job.epoch]
            )
            .map(|_| ())
        })
    }

    /// Write what became of a job in one transaction, fenced by its epoch: delivered and
    /// bounced recipients settled, billing rows and the archive entry for a delivery, a
    /// DSN queued, the rest due again. Any recipient no longer held under the epoch rolls
    /// everything back ([`Settled::Fenced`]).
    pub async fn settle(&self, job: &Job, o: &Outcome<'_>) -> Result<Settled, Error> {
        let (id, m) = (&job.meta.id, &job.meta);
        let follow = match &o.follow_up {
            Some((fm, d)) => Some((MessageRows::of(std::slice::from_ref(fm))?, d.as_slice())),
            None => None,
        };
        // A delivery's facts: billing rows and the archive entry.
        let record = match (&o.record, o.delivered.is_empty()) {
            (Some(d), false) => Some(
                serde_json::json!({
                    "queue_id": id,
                    "provider": d.provider,
                    "node": self.node,
                    "recipients": o.delivered,
                    "sha256": archive::sha256_hex(d.body),
                })
                .to_string()
                .into_bytes(),
            ),
            _ => None,
        };
        let (unit, options) =
            (m.cost_unit.clone().unwrap_or_else(|| crate::billing::UNASSIGNED.to_string()), m.options.join(","));
        let bill = record.as_ref().map(|_| Bill {
            queue_id: id,
            sender: m.bounce_to.as_deref().unwrap_or(&m.mail_from),
            cost_unit: &unit,
            recipients: o.delivered.len(),
            options: &options,
            person: m.actor.as_deref().unwrap_or(""),
        });
        let w = Writes::Settle(Settle { job, o, follow, bill, now: now_secs() });
        let wrote = match &record {
            Some(data) => {
                let entry = NewEntry {
                    direction: "delivered",
                    private_id: m.private_id.as_deref(),
                    message_id: m.message_id.as_deref(),
                    sender: &m.mail_from,
                    recipients: &o.delivered,
                    data,
                    actor: None,
                };
                self.append(&w, &Chain::new(&entry)).await?.0
            }
            None => write::plain(self, &w).await?,
        };
        Ok(if wrote == Wrote::Fenced { Settled::Fenced } else { Settled::Written })
    }

    /// Every queued message with its state (as `queue list` shows it), oldest first.
    pub async fn list(&self) -> Result<Vec<(Meta, State)>, Error> {
        let rows = with_client!(self, c, async {
            cached!(
                c,
                query,
                "SELECT m.id, m.meta, r.rcpt, r.state, r.attempts, extract(epoch FROM r.due_at)::bigint, r.last_error,
                        r.held, r.lease_owner
                   FROM messages m JOIN recipients r ON r.message_id = m.id ORDER BY m.id, r.rcpt",
                &[]
            )
        })?;
        let mut out: Vec<(Meta, State)> = Vec::new();
        for r in rows {
            let id: String = r.get(0);
            if out.last().is_none_or(|(m, _)| m.id != id) {
                let meta: Meta = serde_json::from_str(r.get::<_, &str>(1)).map_err(db_err)?;
                out.push((meta, State { next_try: u64::MAX, ..State::default() }));
            }
            let (_, st) = out.last_mut().expect("pushed above");
            let rcpt: String = r.get(2);
            match r.get::<_, &str>(3) {
                "queued" => {
                    st.attempts = st.attempts.max(r.get::<_, i32>(4) as u32);
                    st.next_try = st.next_try.min(r.get::<_, i64>(5).max(0) as u64);
                    if let Some(e) = r.get::<_, Option<String>>(6) {
                        st.last_error = Some(e);
                    }
                    st.held |= r.get::<_, bool>(7);
                }
                "bounced" => {
                    st.done_rcpts.push(rcpt.clone());
                    st.bounced_rcpts.push(rcpt);
                }
                _ => st.done_rcpts.push(rcpt),
            }
        }
        for (_, st) in &mut out {
            if st.next_try == u64::MAX {
                st.next_try = 0;
            }
        }
        Ok(out)
    }

    /// Due now (also releases held recipients). False when the message is not queued.
    pub async fn retry(&self, id: &str) -> Result<bool, Error> {
        let n = with_client!(self, c, async {
            cached!(
                c,
                execute,
                "UPDATE recipients SET due_at = now(), held = false WHERE message_id = $1 AND state = 'queued'",
                &[&id]
            )
        })?;
        Ok(n > 0)
    }

    /// Remove a message without sending it. A node delivering it is fenced.
    pub async fn drop_message(&self, id: &str) -> Result<bool, Error> {
        let n = with_client!(self, c, async { cached!(c, execute, "DELETE FROM messages WHERE id = $1", &[&id]) })?;
        Ok(n > 0)
    }

    pub fn archive(&self, handle: tokio::runtime::Handle) -> Archive {
        Archive::with_head_row(Box::new(PgStore { pool: self.pool.clone(), handle, timeout: self.timeout, _rt: None }))
    }
}

fn placeholder_meta() -> Meta {
    Meta {
        id: String::new(),
        kind: Kind::Provider,
        mail_from: String::new(),
        rcpt_to: Vec::new(),
        created: 0,
        private_id: None,
        provider: None,
        bounce_to: None,
        message_id: None,
        cost_unit: None,
        options: Vec::new(),
        actor: None,
    }
}

async fn sent_with(tx: &Transaction<'_>, pid: &str) -> Result<Option<i64>, Error> {
    let row = cached!(tx, query_opt, SENT_WITH, &[&pid])?;
    Ok(row.map(|r| r.get(0)))
}

/// One billing row per recipient for `event` (the generic path's numbered rows).
async fn insert_bills(
    tx: &Transaction<'_>,
    time: i64,
    b: &Bill<'_>,
    rcpts: &[String],
    event: &str,
) -> Result<(), Error> {
    cached!(
        tx,
        execute,
        INSERT_BILLS,
        &[&time, &b.queue_id, &rcpts, &event, &b.sender, &b.cost_unit, &b.options, &b.person]
    )?;
    Ok(())
}

async fn insert_entry(tx: &Transaction<'_>, e: &Entry, data: &[u8]) -> Result<(), Error> {
    cached!(tx, execute, INSERT_ENTRY, &entry_params(e, &data))?;
    cached!(tx, execute, MOVE_HEAD, &[&e.seq, &e.hash])?;
    Ok(())
}

fn row_entry(r: &tokio_postgres::Row) -> Entry {
    Entry {
        seq: r.get(0),
        time: r.get(1),
        direction: r.get(2),
        private_id: r.get(3),
        message_id: r.get(4),
        sender: r.get(5),
        recipients: r.get(6),
        sha256: r.get(7),
        size: r.get(8),
        link: r.get(9),
        prev_hash: r.get(10),
        hash: r.get(11),
        actor: r.get(12),
    }
}

/// The archive's [`Store`] on PostgreSQL for the chain rules, `archive verify`/`export`,
/// billing reports and access records. Synchronous like the trait: it blocks on `handle`,
/// so call it from a blocking thread (or, on the command line, outside the runtime).
/// Every statement has the node's timeout: a partition gives an error, never a hang.
pub struct PgStore {
    pool: Pool,
    handle: tokio::runtime::Handle,
    timeout: Duration,
    /// The command line's own runtime, kept alive for the pool's connections.
    _rt: Option<Arc<tokio::runtime::Runtime>>,
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::new("gateway.internal", "Interner Fehler.", "Internal error.").caused_by(e))
}

/// The archive of the cluster database for the command line (its own small runtime).
pub fn open_archive(s: &Storage) -> Result<Archive, Error> {
    let rt = Arc::new(runtime()?);
    let password = s.password().read().map_err(|e| crate::secret::concerning("storage", e))?;
    let pool = rt.block_on(connect(s, &password))?;
    let store =
        PgStore { pool, handle: rt.handle().clone(), timeout: Duration::from_secs(s.timeout_secs), _rt: Some(rt) };
    Ok(Archive::with_head_row(Box::new(store)))
}

/// The queue of the cluster database for the command line, with the runtime to drive it.
pub fn open_queue(s: &Storage) -> Result<(Pg, tokio::runtime::Runtime), Error> {
    let rt = runtime()?;
    let password = s.password().read().map_err(|e| crate::secret::concerning("storage", e))?;
    let pool = rt.block_on(connect(s, &password))?;
    Ok((Pg::new(pool, s), rt))
}

/// A connection given up on (timed out, or closed by the server) is not handed out again.
fn discard_if(obj: Object, broken: bool) {
    if broken || obj.is_closed() {
        drop(Object::take(obj));
    }
}

/// Run `$body` (a future using `$c`, a pooled connection) on the store's runtime with its timeout.
macro_rules! blocking_read {
    ($s:expr, $c:ident, $body:expr) => {{
        let obj = $s.get()?;
        let res = {
            let $c: &Object = &obj;
            // The timer is made inside: the command line calls from outside the runtime.
            $s.handle.block_on(async { tokio::time::timeout($s.timeout, $body).await })
        };
        let broken = res.is_err();
        discard_if(obj, broken);
        match res {
            Ok(r) => r.map_err(db_err),
            Err(_) => Err(timed_out()),
        }
    }};
}

impl PgStore {
    fn get(&self) -> Result<Object, Error> {
        self.handle.block_on(self.pool.get()).map_err(unreachable_db)
    }

    /// One statement inside a transaction, with the timeout; `broken` is set when it
    /// timed out (the connection must not be reused).
    fn block<T, E: std::fmt::Display + 'static>(
        &self,
        broken: &mut bool,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, Error> {
        match self.handle.block_on(async { tokio::time::timeout(self.timeout, f).await }) {
            Ok(r) => r.map_err(db_err),
            Err(_) => {
                *broken = true;
                Err(timed_out())
            }
        }
    }
}

struct PgTx<'a, 'b> {
    tx: &'a Transaction<'b>,
    store: &'a PgStore,
    broken: bool,
}

impl PgTx<'_, '_> {
    fn run<T, E: std::fmt::Display + 'static>(
        &mut self,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, Error> {
        self.store.block(&mut self.broken, f)
    }
}

impl Tx for PgTx<'_, '_> {
    fn newest(&mut self) -> Result<Option<(i64, String)>, Error> {
        let tx = self.tx;
        let r = self.run(tx.query_one(LOCK_HEAD, &[]))?;
        let (seq, hash): (i64, String) = (r.get(0), r.get(1));
        Ok((seq > 0).then_some((seq, hash)))
    }
    fn sent_with(&mut self, private_id: &str) -> Result<Option<i64>, Error> {
        let tx = self.tx;
        self.run(sent_with(tx, private_id))
    }
    fn insert(&mut self, entry: &Entry, data: &[u8]) -> Result<(), Error> {
        let tx = self.tx;
        self.run(insert_entry(tx, entry, data))
    }
    /// Through this generic path the recipients' addresses are unknown: numbered rows.
    fn insert_bill(&mut self, time: i64, bill: &Bill<'_>) -> Result<(), Error> {
        let rcpts: Vec<String> = (1..=bill.recipients).map(|i| format!("#{i}")).collect();
        let tx = self.tx;
        self.run(insert_bills(tx, time, bill, &rcpts, "accepted"))
    }
    fn mark_accepted(
        &mut self,
        time: i64,
        queue_id: &str,
        message_id: Option<&str>,
        sender: &str,
    ) -> Result<(), Error> {
        let tx = self.tx;
        self.run(tx.execute(
            "INSERT INTO accepted (queue_id, message_id, sender, time) VALUES ($1, $2, $3, $4)",
            &[&queue_id, &message_id, &sender, &time],
        ))
        .map(|_| ())
    }
    fn reserved(&mut self, message_id: &str, sender: &str) -> Result<Option<String>, Error> {
        let tx = self.tx;
        self.run(tx.query_opt(
            "SELECT queue_id FROM reservations WHERE message_id = $1 AND sender = $2",
            &[&message_id, &sender],
        ))
        .map(|r| r.map(|r| r.get(0)))
    }
    fn set_reservation(
        &mut self,
        time: i64,
        message_id: &str,
        sender: &str,
        queue_id: &str,
        stale: Option<&str>,
    ) -> Result<(), Error> {
        let tx = self.tx;
        let n = match stale {
            None => self.run(tx.execute(
                "INSERT INTO reservations (message_id, sender, queue_id, time) VALUES ($1, $2, $3, $4)",
                &[&message_id, &sender, &queue_id, &time],
            ))?,
            Some(old) => self.run(tx.execute(
                "UPDATE reservations SET queue_id = $3, time = $4 WHERE message_id = $1 AND sender = $2 AND queue_id = $5",
                &[&message_id, &sender, &queue_id, &time, &old],
            ))?,
        };
        if n != 1 {
            return Err(db_err(format!("reservation of {message_id} changed meanwhile")));
        }
        Ok(())
    }
    fn set_access(&mut self, r: &AccessRecord) -> Result<(), Error> {
        let tx = self.tx;
        self.run(tx.execute(
            "INSERT INTO access (dn, login, name, state, time, \"by\") VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (dn) DO UPDATE SET login = $2, name = $3, state = $4, time = $5, \"by\" = $6",
            &[&r.dn.to_lowercase(), &r.login, &r.name, &r.state, &r.time, &r.by],
        ))
        .map(|_| ())
    }
    fn delete_reservation(&mut self, message_id: &str, sender: &str, queue_id: &str) -> Result<(), Error> {
        let tx = self.tx;
        self.run(tx.execute(
            "DELETE FROM reservations WHERE message_id = $1 AND sender = $2 AND queue_id = $3",
            &[&message_id, &sender, &queue_id],
        ))
        .map(|_| ())
    }
    fn insert_checkpoint(&mut self, cp: &Checkpoint) -> Result<bool, Error> {
        let tx = self.tx;
        let n = self.run(tx.execute(
            "INSERT INTO checkpoints (seq, hash, from_seq, hashes, time, kid, signature, timestamp)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE EXISTS (SELECT 1 FROM entries WHERE seq = $1 AND hash = $2)
             ON CONFLICT (seq) DO NOTHING",
            &[&cp.seq, &cp.hash, &cp.from, &cp.hashes, &cp.time, &cp.kid, &cp.signature, &cp.timestamp],
        ))?;
        Ok(n == 1)
    }
    fn set_timestamp(&mut self, seq: i64, token: &[u8]) -> Result<(), Error> {
        let tx = self.tx;
        self.run(
            tx.execute("UPDATE checkpoints SET timestamp = $2 WHERE seq = $1 AND timestamp IS NULL", &[&seq, &token]),
        )
        .map(|_| ())
    }
}

impl PgStore {
    fn transaction<T>(
        &self,
        write: &mut dyn FnMut(&mut dyn Tx) -> Result<T, Error>,
        newest: impl Fn(&T) -> Option<(i64, String)>,
        committed: &dyn Fn(i64, &str) -> Result<(), Error>,
    ) -> Result<T, Error> {
        let mut c = self.get()?;
        let mut broken = false;
        let res = match self.block(&mut broken, c.transaction()) {
            Err(e) => Err(e),
            Ok(tx) => {
                let mut ptx = PgTx { tx: &tx, store: self, broken: false };
                let out = write(&mut ptx);
                broken = ptx.broken;
                match out {
                    Ok(v) if !broken => self.block(&mut broken, tx.commit()).map(|()| v),
                    Ok(_) => Err(timed_out()),
                    Err(e) => {
                        if !broken {
                            let _ = self.block(&mut broken, tx.rollback());
                        }
                        Err(e)
                    }
                }
            }
        };
        discard_if(c, broken);
        let v = res?;
        if let Some((seq, hash)) = newest(&v) {
            committed(seq, &hash)?;
        }
        Ok(v)
    }
}

impl Store for PgStore {
    fn append(
        &self,
        write: &mut dyn FnMut(&mut dyn Tx) -> Result<Entry, Error>,
        committed: &dyn Fn(i64, &str) -> Result<(), Error>,
    ) -> Result<Entry, Error> {
        self.transaction(write, |e| Some((e.seq, e.hash.clone())), committed)
    }

    fn transact(
        &self,
        write: &mut dyn FnMut(&mut dyn Tx) -> Result<(), Error>,
        committed: &dyn Fn(i64, &str) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.transaction(write, |_| None, committed)
    }

    fn entries(&self, after: i64, limit: usize) -> Result<Vec<Entry>, Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let q = format!("SELECT {COLS} FROM entries WHERE seq > $1 ORDER BY seq LIMIT $2");
        let rows = blocking_read!(self, c, c.query(&q, &[&after, &limit]))?;
        Ok(rows.iter().map(row_entry).collect())
    }

    fn data(&self, seq: i64) -> Result<Vec<u8>, Error> {
        let r = blocking_read!(self, c, c.query_one("SELECT data FROM entries WHERE seq = $1", &[&seq]))?;
        Ok(r.get(0))
    }

    fn entries_with_data(&self, after: i64, limit: usize) -> Result<Vec<(Entry, Vec<u8>)>, Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let q = format!("SELECT {COLS}, data FROM entries WHERE seq > $1 ORDER BY seq LIMIT $2");
        let rows = blocking_read!(self, c, c.query(&q, &[&after, &limit]))?;
        Ok(rows.iter().map(|r| (row_entry(r), r.get(13))).collect())
    }

    fn is_recorded(&self, queue_id: &str) -> Result<bool, Error> {
        let r = blocking_read!(self, c, c.query_opt("SELECT 1 FROM accepted WHERE queue_id = $1", &[&queue_id]))?;
        Ok(r.is_some())
    }

    /// One row per accepted message, as the report expects: the recipients counted.
    fn billing_rows(&self, from: i64, to: i64) -> Result<Vec<(String, i64, String)>, Error> {
        let rows = blocking_read!(
            self,
            c,
            c.query(
                "SELECT cost_unit, count(*), options FROM billing
                  WHERE event = 'accepted' AND time >= $1 AND time < $2
                  GROUP BY queue_id, cost_unit, options ORDER BY min(id)",
                &[&from, &to],
            )
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    fn access_records(&self) -> Result<Vec<AccessRecord>, Error> {
        let rows = blocking_read!(
            self,
            c,
            c.query("SELECT dn, login, name, state, time, \"by\" FROM access ORDER BY time, dn", &[])
        )?;
        Ok(rows
            .iter()
            .map(|r| AccessRecord {
                dn: r.get(0),
                login: r.get(1),
                name: r.get(2),
                state: r.get(3),
                time: r.get(4),
                by: r.get(5),
            })
            .collect())
    }

    fn sent(&self, private_id: &str) -> Result<Option<(i64, Vec<u8>)>, Error> {
        let r = blocking_read!(
            self,
            c,
            c.query_opt(
                "SELECT seq, data FROM entries WHERE private_id = $1 AND direction = 'out' ORDER BY seq DESC LIMIT 1",
                &[&private_id]
            )
        )?;
        Ok(r.map(|r| (r.get(0), r.get(1))))
    }

    fn checkpoints(&self) -> Result<Vec<Checkpoint>, Error> {
        let rows = blocking_read!(
            self,
            c,
            c.query(
                "SELECT seq, hash, from_seq, hashes, time, kid, signature, timestamp FROM checkpoints ORDER BY seq",
                &[]
            )
        )?;
        Ok(rows
            .iter()
            .map(|r| Checkpoint {
                seq: r.get(0),
                hash: r.get(1),
                from: r.get(2),
                hashes: r.get(3),
                time: r.get(4),
                kid: r.get(5),
                signature: r.get(6),
                timestamp: r.get(7),
            })
            .collect())
    }

    fn newest_checkpoint(&self) -> Result<Option<(i64, String)>, Error> {
        let r =
            blocking_read!(self, c, c.query_opt("SELECT seq, hash FROM checkpoints ORDER BY seq DESC LIMIT 1", &[]))?;
        Ok(r.map(|r| (r.get(0), r.get(1))))
    }

    fn head_row(&self) -> Result<Option<(i64, String)>, Error> {
        let r = blocking_read!(self, c, c.query_one("SELECT seq, hash FROM archive_head WHERE id = 1", &[]))?;
        let (seq, hash): (i64, String) = (r.get(0), r.get(1));
        // The genesis row names no entry, as a new SQLite archive's head file does.
        Ok(Some(if seq == 0 { (0, GENESIS.to_string()) } else { (seq, hash) }))
    }
}
