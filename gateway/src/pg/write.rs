//! The cluster's hot writes: acceptance and settlement.
//!
//! Appending transactions share the archive head: whoever holds its row lock holds up every
//! other appender in the cluster until it commits. So each node commits its appends in
//! groups (as the SQLite store does): one open transaction per node ("batch") takes the
//! head lock once, each acceptance or settlement writes its rows in a savepoint of it and
//! its entry onto the head the batch already knows, and one COMMIT, sent as soon as the
//! previous one is done, ends all that joined meanwhile. An SMTP 250 or a settled delivery
//! still follows the commit of its own rows. The lock is never held across a wait for a
//! node's next statement, only across the statements already sent and the commit.
//!
//! Statements of one step travel in one flight: tokio-postgres sends requests in the order
//! they are first polled, and `join!` polls in order.

use super::{db_err, timed_out, Job, Outcome, Pg};
use crate::archive::{self, Entry, NewEntry};
use crate::billing::Bill;
use crate::spool::{Kind, Meta};
use deadpool_postgres::Object;
use demail_core::Error;
use std::sync::{Arc, OnceLock};
use tokio_postgres::types::ToSql;
use tokio_postgres::Statement;

pub(super) const RESERVE: &str = "INSERT INTO reservations (message_id, sender, queue_id, time) VALUES ($1, $2, $3, $4)
     ON CONFLICT DO NOTHING";
const MARK_ACCEPTED: &str = "INSERT INTO accepted (queue_id, message_id, sender, time) VALUES ($1, $2, $3, $4)";
const INSERT_MESSAGES: &str = "INSERT INTO messages (id, kind, meta, body, accepted_by)
     SELECT unnest($1::text[]), unnest($2::text[]), unnest($3::text[]), $4, $5";
const INSERT_RECIPIENTS: &str =
    "INSERT INTO recipients (message_id, rcpt) SELECT unnest($1::text[]), unnest($2::text[]) ON CONFLICT DO NOTHING";
/// One billing row per recipient for an event; the unique key refuses a second.
pub(super) const INSERT_BILLS: &str =
    "INSERT INTO billing (time, queue_id, recipient, event, sender, cost_unit, options, person)
     SELECT $1, $2, unnest($3::text[]), $4, $5, $6, $7, $8";
/// Settle recipients as `$4`, fenced: fewer rows than asked = the lease is no longer ours.
const SET_STATE: &str = "UPDATE recipients SET state = $4, sending = false, lease_owner = NULL, lease_until = NULL
      WHERE message_id = $1 AND rcpt = ANY($2) AND lease_epoch = $3 AND state = 'queued'";
const RETRY: &str = "UPDATE recipients
        SET due_at = now() + $4 * interval '1 second', attempts = attempts + 1, last_error = $5,
            held = $6, sending = false, lease_owner = NULL, lease_until = NULL
      WHERE message_id = $1 AND rcpt = ANY($2) AND lease_epoch = $3 AND state = 'queued'";
const DELETE_SETTLED: &str = "DELETE FROM messages WHERE id = $1 AND NOT EXISTS
     (SELECT 1 FROM recipients WHERE message_id = $1 AND state = 'queued')";
pub(super) const LOCK_HEAD: &str = "SELECT seq, hash FROM archive_head WHERE id = 1 FOR UPDATE";
pub(super) const SENT_WITH: &str =
    "SELECT seq FROM entries WHERE direction = 'out' AND private_id = $1 ORDER BY seq DESC LIMIT 1";
pub(super) const MOVE_HEAD: &str = "UPDATE archive_head SET seq = $1, hash = $2 WHERE id = 1";
pub(super) const COLS: &str =
    "seq, time, direction, private_id, message_id, sender, recipients, sha256, size, link, prev_hash, hash, actor";

/// Appends a batch takes before it commits (each is a subtransaction; PostgreSQL keeps
/// up to 64 per transaction cheaply visible to others).
const MAX_BATCH: usize = 32;

type PgResult<T> = Result<T, tokio_postgres::Error>;

pub(super) const INSERT_ENTRY: &str = "INSERT INTO entries (seq, time, direction, private_id, message_id, sender, \
     recipients, sha256, size, link, prev_hash, hash, actor, data)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

pub(super) fn entry_params<'p>(e: &'p Entry, data: &'p &[u8]) -> [&'p (dyn ToSql + Sync); 14] {
    [
        &e.seq,
        &e.time,
        &e.direction,
        &e.private_id,
        &e.message_id,
        &e.sender,
        &e.recipients,
        &e.sha256,
        &e.size,
        &e.link,
        &e.prev_hash,
        &e.hash,
        &e.actor,
        data,
    ]
}

/// A statement that may be left out of a flight: made from `v` when there is one.
async fn when<V, T, F: std::future::Future<Output = PgResult<T>>>(
    v: Option<V>,
    f: impl FnOnce(V) -> F,
) -> PgResult<Option<T>> {
    match v {
        Some(v) => f(v).await.map(Some),
        None => Ok(None),
    }
}

fn non_empty(v: &[String]) -> Option<&[String]> {
    (!v.is_empty()).then_some(v)
}

/// Every statement of the hot paths, prepared once per connection (deadpool's cache).
struct Statements {
    reserve: Statement,
    accept: Statement,
    messages: Statement,
    recipients: Statement,
    bills: Statement,
    set_state: Statement,
    retry: Statement,
    delete: Statement,
    link: Statement,
    head: Statement,
    insert: Statement,
    move_head: Statement,
}

impl Statements {
    async fn prepare(c: &Object) -> Result<Statements, Error> {
        let p = |sql: &'static str| async move { c.prepare_cached(sql).await.map_err(db_err) };
        Ok(Statements {
            reserve: p(RESERVE).await?,
            accept: p(MARK_ACCEPTED).await?,
            messages: p(INSERT_MESSAGES).await?,
            recipients: p(INSERT_RECIPIENTS).await?,
            bills: p(INSERT_BILLS).await?,
            set_state: p(SET_STATE).await?,
            retry: p(RETRY).await?,
            delete: p(DELETE_SETTLED).await?,
            link: p(SENT_WITH).await?,
            head: p(LOCK_HEAD).await?,
            insert: p(INSERT_ENTRY).await?,
            move_head: p(MOVE_HEAD).await?,
        })
    }
}

/// Messages as the columns of [`INSERT_MESSAGES`] and [`INSERT_RECIPIENTS`]: one
/// statement each, however many messages an acceptance queues.
pub(super) struct MessageRows {
    ids: Vec<String>,
    kinds: Vec<&'static str>,
    metas: Vec<String>,
    rcpt_ids: Vec<String>,
    rcpts: Vec<String>,
}

impl MessageRows {
    pub(super) fn of(ms: &[Meta]) -> Result<MessageRows, Error> {
        let mut r = MessageRows { ids: vec![], kinds: vec![], metas: vec![], rcpt_ids: vec![], rcpts: vec![] };
        for m in ms {
            r.ids.push(m.id.clone());
            r.kinds.push(match m.kind {
                Kind::Provider => "provider",
                Kind::Internal => "internal",
            });
            r.metas.push(serde_json::to_string(m).map_err(db_err)?);
            for rcpt in &m.rcpt_to {
                r.rcpt_ids.push(m.id.clone());
                r.rcpts.push(rcpt.clone());
            }
        }
        Ok(r)
    }

    async fn insert_messages(&self, c: &Object, st: &Statements, body: &[u8], node: &str) -> PgResult<u64> {
        c.execute(&st.messages, &[&self.ids, &self.kinds, &self.metas, &body, &node]).await
    }

    async fn insert_recipients(&self, c: &Object, st: &Statements) -> PgResult<u64> {
        c.execute(&st.recipients, &[&self.rcpt_ids, &self.rcpts]).await
    }
}

/// What one acceptance or settlement writes besides its archive entry.
pub(super) enum Writes<'a> {
    Outbound {
        rows: MessageRows,
        body: &'a [u8],
        /// (Message-ID, sender): one acceptance per pair.
        key: Option<(&'a str, &'a str)>,
        /// Its queue id and facts; `rcpts` are billed as accepted.
        bill: &'a Bill<'a>,
        rcpts: &'a [String],
        now: i64,
    },
    Inbound {
        rows: MessageRows,
        body: &'a [u8],
    },
    Settle(Settle<'a>),
}

pub(super) struct Settle<'a> {
    pub job: &'a Job,
    pub o: &'a Outcome<'a>,
    pub follow: Option<(MessageRows, &'a [u8])>,
    /// Billing rows for the delivered recipients.
    pub bill: Option<Bill<'a>>,
    pub now: i64,
}

/// How a step's own statements went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wrote {
    Done,
    /// The (Message-ID, sender) pair was accepted before: nothing written.
    Duplicate,
    /// A recipient is no longer held under the job's epoch: nothing written.
    Fenced,
}

impl Writes<'_> {
    /// Send every statement in one flight, then read the answers.
    async fn send(&self, c: &Object, st: &Statements, node: &str) -> PgResult<Wrote> {
        match self {
            Writes::Outbound { rows, body, key, bill, rcpts, now } => {
                let id = &bill.queue_id;
                let (reserved, msgs, rc, acc, billed) = futures_util::join!(
                    when(*key, |(mid, sender)| async move { c.execute(&st.reserve, &[&mid, &sender, id, now]).await }),
                    rows.insert_messages(c, st, body, node),
                    rows.insert_recipients(c, st),
                    async { c.execute(&st.accept, &[id, &key.map(|k| k.0), &bill.sender, now]).await },
                    insert_bills(c, st, *now, bill, rcpts, "accepted"),
                );
                let reserved = reserved?;
                msgs?;
                rc?;
                acc?;
                billed?;
                Ok(if reserved == Some(0) { Wrote::Duplicate } else { Wrote::Done })
            }
            Writes::Inbound { rows, body } => {
                let (msgs, rc) =
                    futures_util::join!(rows.insert_messages(c, st, body, node), rows.insert_recipients(c, st));
                msgs?;
                rc?;
                Ok(Wrote::Done)
            }
            Writes::Settle(s) => s.send(c, st, node).await,
        }
    }
}

impl Settle<'_> {
    async fn send(&self, c: &Object, st: &Statements, node: &str) -> PgResult<Wrote> {
        let (job, o, id) = (self.job, self.o, &self.job.meta.id);
        let secs = o.retry_secs as f64;
        let (delivered, bounced, retried, msgs, rc, deleted, billed) = futures_util::join!(
            set_state(c, st, job, "delivered", &o.delivered),
            set_state(c, st, job, "bounced", &o.bounced),
            when(non_empty(&o.retry), |r| async move {
                c.execute(&st.retry, &[id, &r, &job.epoch, &secs, &o.error, &o.held]).await
            }),
            when(self.follow.as_ref(), |(f, body)| f.insert_messages(c, st, body, node)),
            when(self.follow.as_ref(), |(f, _)| f.insert_recipients(c, st)),
            // Nothing left to deliver: the bytes are in the archive, the facts in billing.
            async { c.execute(&st.delete, &[id]).await },
            when(self.bill.as_ref(), |b| insert_bills(c, st, self.now, b, &o.delivered, "delivered")),
        );
        // Fenced first: a later statement may fail only because the recipients are another
        // node's now (its billing row exists already); the step is undone either way.
        let lost = |n: &PgResult<Option<u64>>, want: &[String]| matches!(n, Ok(Some(n)) if *n as usize != want.len());
        if lost(&delivered, &o.delivered) || lost(&bounced, &o.bounced) || lost(&retried, &o.retry) {
            return Ok(Wrote::Fenced);
        }
        delivered?;
        bounced?;
        retried?;
        msgs?;
        rc?;
        deleted?;
        billed?;
        Ok(Wrote::Done)
    }
}

/// One billing row per recipient of `b` for `event`.
async fn insert_bills(
    c: &Object,
    st: &Statements,
    now: i64,
    b: &Bill<'_>,
    rcpts: &[String],
    event: &str,
) -> PgResult<u64> {
    let p: [&(dyn ToSql + Sync); 8] =
        [&now, &b.queue_id, &rcpts, &event, &b.sender, &b.cost_unit, &b.options, &b.person];
    c.execute(&st.bills, &p).await
}

/// Settle `rcpts` of `job` as `state` (nothing when there are none); the count tells
/// whether all were still held under the job's epoch.
async fn set_state(c: &Object, st: &Statements, job: &Job, state: &str, rcpts: &[String]) -> PgResult<Option<u64>> {
    when(non_empty(rcpts), |r| async move { c.execute(&st.set_state, &[&job.meta.id, &r, &job.epoch, &state]).await })
        .await
}

/// The archive entry a step appends.
pub(super) struct Chain<'a> {
    entry: &'a NewEntry<'a>,
    sha256: String,
}

impl<'a> Chain<'a> {
    pub(super) fn new(entry: &'a NewEntry<'a>) -> Chain<'a> {
        // Hashed before the lock is taken: a 10 MB message keeps nobody waiting.
        Chain { entry, sha256: archive::sha256_hex(entry.data) }
    }

    async fn link(&self, c: &Object, st: &Statements) -> PgResult<Option<i64>> {
        match archive::wants_link(self.entry) {
            Some(pid) => Ok(c.query_opt(&st.link, &[&pid]).await?.map(|r| r.get(0))),
            None => Ok(None),
        }
    }

    fn next(&self, head: &(i64, String), link: Option<i64>) -> Entry {
        let prev = (head.0 > 0).then(|| head.clone());
        archive::next_entry(prev, link, self.entry, crate::spool::now_millis() as i64, self.sha256.clone())
    }
}

/// One node's open appending transaction.
struct Batch {
    c: Object,
    st: Statements,
    /// The chain head with this transaction's entries (the row is locked since BEGIN and
    /// moved once, at the commit).
    head: (i64, String),
    moved: bool,
    steps: usize,
    outcome: Arc<OnceLock<Result<(), Error>>>,
}

/// Group commit of one node's appends (see the module).
#[derive(Default)]
pub(super) struct Group {
    open: tokio::sync::Mutex<Option<Batch>>,
    /// Held while a batch commits: who waits here finds its batch committed, or commits it.
    gate: tokio::sync::Mutex<()>,
}

impl Pg {
    /// Write `w` and append its entry, committed with whatever else this node appends
    /// meanwhile. Returns how the writes went and the entry (none unless [`Wrote::Done`]).
    pub(super) async fn append(&self, w: &Writes<'_>, chain: &Chain<'_>) -> Result<(Wrote, Option<Entry>), Error> {
        let g = &self.group;
        let (wrote, entry, outcome) = loop {
            let mut open = g.open.lock().await;
            if open.as_ref().is_some_and(|b| b.steps >= MAX_BATCH) {
                let outcome = open.as_ref().map(|b| b.outcome.clone()).expect("checked");
                drop(open);
                let _ = self.commit(&outcome).await;
                continue;
            }
            let res = tokio::time::timeout(self.timeout, self.step(&mut open, w, chain)).await;
            match res {
                Ok(Ok((wrote, entry))) => {
                    let outcome = open.as_ref().map(|b| b.outcome.clone()).expect("a step leaves its batch open");
                    break (wrote, entry, outcome);
                }
                Ok(Err((e, true))) => {
                    fail(&mut open, e.clone());
                    return Err(e);
                }
                Ok(Err((e, false))) => {
                    // Only this step was undone; the batch (with at least the head's lock)
                    // must still end.
                    if let Some(outcome) = open.as_ref().map(|b| b.outcome.clone()) {
                        drop(open);
                        let _ = self.commit(&outcome).await;
                    }
                    return Err(e);
                }
                Err(_) => {
                    // An answer may still come on this connection: the batch is lost.
                    fail(&mut open, timed_out());
                    return Err(timed_out());
                }
            }
        };
        self.commit(&outcome).await?;
        Ok((wrote, entry))
    }

    /// One step inside the open batch (begun here when there is none). The error says
    /// whether the batch is still usable.
    async fn step(
        &self,
        open: &mut Option<Batch>,
        w: &Writes<'_>,
        chain: &Chain<'_>,
    ) -> Result<(Wrote, Option<Entry>), (Error, bool)> {
        let fresh = open.is_none();
        if fresh {
            let c = self.client().await.map_err(|e| (e, false))?;
            let st = Statements::prepare(&c).await.map_err(|e| (e, true))?;
            // Outside the step's savepoint: a step rolled back keeps the lock for the batch.
            let (begin, head) = futures_util::join!(c.batch_execute("BEGIN"), c.query_one(&st.head, &[]));
            let head = match begin.and(head) {
                Ok(r) => (r.get::<_, i64>(0), r.get::<_, String>(1)),
                Err(e) => {
                    drop(Object::take(c));
                    return Err((db_err(e), false));
                }
            };
            *open = Some(Batch { c, st, head, moved: false, steps: 0, outcome: Arc::new(OnceLock::new()) });
        }
        let b = open.as_mut().expect("opened above");
        let (c, st) = (&b.c, &b.st);
        // A receipt names the entry of what it confirms (perhaps one of this batch).
        let link = chain.link(c, st).await.map_err(|e| (db_err(e), true))?;
        // The entry goes with the writes: one flight per step. A step that turns out a
        // duplicate or fenced is undone with its entry.
        let e = chain.next(&b.head, link);
        let data = chain.entry.data;
        let params = entry_params(&e, &data);
        // The previous step's savepoint is released first: its rows are the batch's now.
        let sp = if fresh { "SAVEPOINT step" } else { "RELEASE step; SAVEPOINT step" };
        let (saved, wrote, inserted) =
            futures_util::join!(c.batch_execute(sp), w.send(c, st, &self.node), c.execute(&st.insert, &params));
        if let Err(e) = saved {
            return Err((db_err(e), true));
        }
        b.steps += 1;
        let undo = || async move { c.batch_execute("ROLLBACK TO step").await.map_err(|e| (db_err(e), true)) };
        // A duplicate or a fenced step is undone whatever its entry's insert said.
        match (wrote, inserted) {
            (Ok(Wrote::Done), Ok(_)) => {
                b.head = (e.seq, e.hash.clone());
                b.moved = true;
                Ok((Wrote::Done, Some(e)))
            }
            (Ok(Wrote::Done), Err(err)) | (Err(err), _) => Err(undo().await.err().unwrap_or((db_err(err), false))),
            (Ok(other), _) => undo().await.map(|()| (other, None)),
        }
    }

    /// Wait until the batch behind `outcome` is committed, committing it if nobody else is.
    async fn commit(&self, outcome: &Arc<OnceLock<Result<(), Error>>>) -> Result<(), Error> {
        let g = &self.group;
        let _gate = g.gate.lock().await;
        if let Some(r) = outcome.get() {
            return r.clone();
        }
        let batch = {
            let mut open = g.open.lock().await;
            match open.take_if(|b| Arc::ptr_eq(&b.outcome, outcome)) {
                Some(b) => b,
                // Failed meanwhile (its outcome is set by `fail`).
                None => return outcome.get().cloned().unwrap_or_else(|| Err(timed_out())),
            }
        };
        let (c, head) = (&batch.c, &batch.head);
        let flight = async {
            // The head onto the batch's last entry (its trigger checks that entry), then COMMIT.
            let (moved, committed) = futures_util::join!(
                when(batch.moved.then_some(()), |()| async move {
                    c.execute(&batch.st.move_head, &[&head.0, &head.1]).await
                }),
                c.batch_execute("COMMIT"),
            );
            moved.and(committed)
        };
        let res = match tokio::time::timeout(self.timeout, flight).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(db_err(e)),
            Err(_) => Err(timed_out()),
        };
        if res.is_err() || batch.c.is_closed() {
            drop(Object::take(batch.c));
        }
        let _ = batch.outcome.set(res.clone());
        res
    }
}

/// Give up the open batch: every step in it gets `e`, its connection is not reused.
fn fail(open: &mut Option<Batch>, e: Error) {
    if let Some(b) = open.take() {
        let _ = b.outcome.set(Err(e));
        drop(Object::take(b.c));
    }
}

/// A transaction that appends nothing (a settlement without delivery): no batch, no lock.
pub(super) async fn plain(pg: &Pg, w: &Writes<'_>) -> Result<Wrote, Error> {
    let c = pg.client().await?;
    let res = tokio::time::timeout(pg.timeout, async {
        let st = Statements::prepare(&c).await?;
        let (begin, wrote) = futures_util::join!(c.batch_execute("BEGIN"), w.send(&c, &st, &pg.node));
        let wrote = match begin.and(wrote) {
            Ok(w) => w,
            Err(e) => {
                let _ = c.batch_execute("ROLLBACK").await;
                return Err(db_err(e));
            }
        };
        c.batch_execute(if wrote == Wrote::Done { "COMMIT" } else { "ROLLBACK" }).await.map_err(db_err)?;
        Ok(wrote)
    })
    .await;
    match res {
        Ok(r) => {
            if r.is_err() || c.is_closed() {
                drop(Object::take(c));
            }
            r
        }
        Err(_) => {
            drop(Object::take(c));
            Err(timed_out())
        }
    }
}
