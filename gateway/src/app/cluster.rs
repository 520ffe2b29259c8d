//! Acceptance and the queue runner on PostgreSQL (`[storage] backend = "postgres"`):
//! any node accepts, any node delivers what is due, leases keep two nodes from working on
//! the same recipients, and the epoch fences a node that lost its lease.

use super::{backoff, out_bill, out_entry, App};
use crate::pg::{Delivery, Job, Outcome, Pg, Settled};
use crate::relay::{self, Failure};
use crate::spool::{self, Kind, Meta};
use crate::{billing, dsn};
use demail_core::Error;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{error, info, warn};

/// Accept in one transaction; the queue id holding the message (an earlier one for a
/// duplicate of `key`).
pub(super) async fn accept_outbound(
    pg: &Pg,
    metas: &[Meta],
    message: &[u8],
    key: Option<(&str, &str)>,
) -> Result<String, Error> {
    let m = &metas[0];
    let unit = m.cost_unit.clone().unwrap_or_else(|| billing::UNASSIGNED.to_string());
    let options = m.options.join(",");
    pg.accept_outbound(metas, message, key, &out_entry(m, message), &out_bill(m, &unit, &options)).await
}

/// Claim due recipients and deliver them, until the process ends.
pub(super) async fn run(app: Arc<App>, pg: Arc<Pg>) {
    let interval = Duration::from_millis(app.cfg.queue.scan_interval_ms.max(10));
    let limit = app.cfg.queue.concurrency.max(1);
    // Sessions to a target (the limit) and deliveries not yet recorded (for the stop).
    let (sessions, running) = (Arc::new(AtomicUsize::new(0)), app.delivering.clone());
    loop {
        let free = limit.saturating_sub(sessions.load(Ordering::SeqCst));
        let mut more = false;
        // Stopping: nothing new is claimed; what runs may finish (App::finish).
        if free > 0 && !app.is_stopping() {
            match pg.claim(free).await {
                Ok(jobs) => {
                    more = jobs.iter().map(|(j, _)| j.rcpts.len()).sum::<usize>() >= free;
                    for (job, body) in jobs {
                        running.fetch_add(1, Ordering::SeqCst);
                        let slot = Slot::take(&sessions, &app);
                        let (app, pg, running) = (app.clone(), pg.clone(), running.clone());
                        tokio::spawn(async move {
                            deliver(&app, &pg, job, body, slot).await;
                            running.fetch_sub(1, Ordering::SeqCst);
                            app.wake.notify_one();
                        });
                    }
                }
                Err(e) => warn!(error = %e, "cannot claim due recipients (database); trying again"),
            }
        }
        if more {
            continue;
        }
        tokio::select! {
            _ = app.wake.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Keep the lease while the session runs. Returns when the lease is lost: another node
/// holds the recipients now, or renewals failed until the lease, as this node last saw it,
/// ran out (the database may give it to another node from then on).
async fn keep_lease(pg: &Pg, job: &Job, claimed: Instant) {
    let lease = pg.lease;
    // Stop a little before the database's lease ends: clocks run alike, sessions do not stop at once.
    let margin = Duration::from_millis(500).max(lease / 10);
    let mut until = claimed + lease - margin;
    loop {
        tokio::time::sleep(lease / 3).await;
        let asked = Instant::now();
        match pg.renew(job).await {
            Ok(true) => until = asked + lease - margin,
            Ok(false) => {
                warn!(id = %job.meta.id, epoch = job.epoch, "lease taken over by another node");
                return;
            }
            Err(e) => {
                warn!(id = %job.meta.id, error = %e, "cannot renew the lease");
                if Instant::now() >= until {
                    return;
                }
            }
        }
    }
}

/// One of the `queue.concurrency` sessions; given back (and the runner woken) when dropped.
struct Slot(Arc<AtomicUsize>, Arc<App>);

impl Slot {
    fn take(sessions: &Arc<AtomicUsize>, app: &Arc<App>) -> Slot {
        sessions.fetch_add(1, Ordering::SeqCst);
        Slot(sessions.clone(), app.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        self.1.wake.notify_one();
    }
}

async fn deliver(app: &Arc<App>, pg: &Arc<Pg>, job: Job, body: Vec<u8>, slot: Slot) {
    let claimed = Instant::now();
    let id = job.meta.id.clone();
    if job.interrupted {
        warn!(id = %id, "previous attempt interrupted during DATA (crash or lost lease); sending again with the same Message-ID");
    }
    let helo = app.cfg.gateway.hostname.clone();
    let work = async {
        match job.meta.kind {
            Kind::Provider => {
                let provider =
                    job.meta.provider.as_deref().and_then(|n| app.cfg.providers.iter().find(|p| p.name == n));
                let Some(p) = provider else {
                    let f = Failure::Transient(format!(
                        "provider {:?} not configured / Anbieter nicht konfiguriert",
                        job.meta.provider
                    ));
                    return Err(f);
                };
                let mark = || {
                    let (pg, job) = (pg.clone(), job.clone());
                    tokio::spawn(async move {
                        let _ = pg.mark_sending(&job).await;
                    });
                };
                relay::to_provider(p, &helo, &job.meta.mail_from, &job.rcpts, &body, mark).await.map(Ok)
            }
            Kind::Internal => {
                Ok(Err(
                    relay::to_internal(&app.cfg.inbound.deliver, &helo, &job.meta.mail_from, &job.rcpts, &body).await
                ))
            }
        }
    };
    let result = tokio::select! {
        r = work => r,
        _ = keep_lease(pg, &job, claimed) => {
            // Dropping the session closes the connection: a DATA phase not yet ended by
            // its final dot is discarded by the peer.
            warn!(id = %id, epoch = job.epoch, "lease lost during delivery; session aborted, nothing recorded");
            return;
        }
    };
    // The session is over: the next one may start while this outcome is recorded (the
    // lease keeps these recipients ours until then).
    drop(slot);
    let mut o = Outcome::default();
    let expired = spool::now().saturating_sub(job.meta.created) > app.cfg.queue.give_up_after_secs;
    let retry_secs = backoff(&app.cfg.queue, job.attempts + 1);
    match result {
        Ok(Ok(d)) => {
            o.delivered = d.accepted.clone();
            if !d.refused.is_empty() {
                match dsn_for(app, &job.meta, &d.refused, &d.accepted, &body) {
                    Some(m) => {
                        o.bounced = d.refused.iter().map(|(r, _)| r.clone()).collect();
                        o.follow_up = Some(m);
                        info!(id = %id, refused = d.refused.len(), delivered = d.accepted.len(), "provider refused some recipients; sender informed about just those");
                    }
                    None => o.retry.extend(d.refused.iter().map(|(r, _)| r.clone())),
                }
            }
            o.retry.extend(d.deferred.iter().map(|(r, _)| r.clone()));
            o.error = d.deferred.first().map(|(r, why)| format!("{r}: {why}"));
            o.record = Some(Delivery { provider: job.meta.provider.as_deref().unwrap_or(""), body: &body });
        }
        Err(f) if matches!(f, Failure::Permanent(_)) || expired => {
            let failed: Vec<(String, String)> = job.rcpts.iter().map(|r| (r.clone(), f.text().to_string())).collect();
            match dsn_for(app, &job.meta, &failed, &[], &body) {
                Some(m) => {
                    o.bounced = job.rcpts.clone();
                    o.follow_up = Some(m);
                }
                None => {
                    warn!(id = %id, "permanent failure and no DSN could be queued; message held");
                    o.retry = job.rcpts.clone();
                    o.held = true;
                }
            }
            o.error = Some(f.text().chars().take(500).collect());
        }
        Err(f) => {
            o.retry = job.rcpts.clone();
            o.error = Some(f.text().chars().take(500).collect());
        }
        Ok(Err(r)) => {
            let io = app.internal_outcome(&job.meta, &job.rcpts, r, &body);
            let settled = |x: &String| io.done.contains(x) || io.collected.contains(x);
            o.retry = job.rcpts.iter().filter(|r| !settled(r)).cloned().collect();
            o.delivered = io.done;
            // The wrapper is queued in the settling transaction, as a DSN is.
            if let Some(w) = io.wrapper {
                app.collected(&id, &io.collected, &w.0.id);
                o.bounced = io.collected;
                o.follow_up = Some(w);
            }
            if let Some(f) = io.failure {
                // Never drop mail for the organisation: park it for an administrator.
                o.held = matches!(f, Failure::Permanent(_)) || expired;
                o.error = Some(f.text().chars().take(500).collect());
            }
        }
    }
    o.retry_secs = retry_secs;
    // Fencing makes a retry safe: once another node holds the epoch, nothing is written.
    let mut wait = Duration::from_millis(200);
    let until = Instant::now() + Duration::from_secs(300);
    loop {
        match pg.settle(&job, &o).await {
            Ok(Settled::Written) => break,
            Ok(Settled::Fenced) => {
                warn!(id = %id, epoch = job.epoch, "lease lost (another node holds these recipients, or they are settled); nothing recorded");
                app.metrics.leases_lost.inc();
                return;
            }
            Err(e) if Instant::now() < until => {
                warn!(id = %id, error = %e, "cannot record the outcome yet (database); trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                error!(id = %id, error = %e, "outcome not recorded; the lease lapses and another attempt follows");
                return;
            }
        }
    }
    if o.follow_up.is_some() {
        app.wake.notify_one();
    }
    if o.retry.is_empty() {
        info!(id = %id, kind = ?job.meta.kind, rcpts = o.delivered.len(), node = %pg.node, "delivered");
        app.metrics.delivered(if job.meta.kind == Kind::Provider { "provider" } else { "internal" });
    } else if o.held {
        error!(id = %id, error = ?o.error, "delivery refused; recipients held (queue list / queue retry)");
        app.metrics.failed(true);
    } else {
        warn!(id = %id, attempts = job.attempts + 1, retry_secs, error = ?o.error, "delivery deferred");
        app.metrics.failed(false);
    }
}

/// A DSN to the internal sender for `failed` (naming who got it); none without a sender.
fn dsn_for(
    app: &App,
    meta: &Meta,
    failed: &[(String, String)],
    delivered: &[String],
    message: &[u8],
) -> Option<(Meta, Vec<u8>)> {
    let to = meta.bounce_to.clone().filter(|s| !s.is_empty())?;
    let d = dsn::build(&app.cfg.gateway.postmaster, &app.cfg.gateway.hostname, &to, failed, delivered, message);
    let m = App::meta(Kind::Internal, "", vec![to], meta.private_id.clone(), None, None);
    info!(id = %meta.id, dsn = %m.id, "bounce queued to sender");
    Some((m, d))
}
