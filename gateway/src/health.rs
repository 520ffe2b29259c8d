//! Health and metrics over HTTP for the load balancer and monitoring (`[health] listen`):
//! `/healthz/live` (the process answers), `/healthz/ready` (it can write where it keeps the
//! queue: the spool and archive, or the PostgreSQL primary; not while stopping), and
//! `/metrics` in the Prometheus text format (prometheus-client).

use crate::app::{App, Backend};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// What the gateway counts while it runs; queue depth and age are read at each scrape.
pub struct Metrics {
    registry: Registry,
    depth: Family<StateLabel, Gauge>,
    oldest: Gauge<f64, AtomicU64>,
    /// Deliveries by kind (`provider`: to the De-Mail provider, `internal`: to the mail server).
    pub deliveries: Family<KindLabel, Counter>,
    /// Failed attempts by kind (`temporary`, `permanent`).
    pub failures: Family<KindLabel, Counter>,
    /// Leases this node lost to another node (cluster).
    pub leases_lost: Counter,
    /// Seconds to append to the archive (the accepting transaction).
    pub archive_append: Histogram,
    /// Messages queued longer than `queue.warn_after_secs` (set by the overdue watch).
    pub overdue: Gauge,
    /// Inbound messages handed to the Sammelpostfach because the mail server refused them.
    pub collected: Counter,
    /// Archive checkpoints not signed or not time-stamped (retried at the next round).
    pub checkpoint_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("demail");
        let depth = Family::<StateLabel, Gauge>::default();
        registry.register("queue_depth", "Undelivered recipients by state (queued, held, sending)", depth.clone());
        let oldest = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "oldest_undelivered_seconds",
            "Age of the oldest message not yet delivered (0: none)",
            oldest.clone(),
        );
        let deliveries = Family::<KindLabel, Counter>::default();
        registry.register("deliveries", "Messages delivered, by kind (provider, internal)", deliveries.clone());
        let failures = Family::<KindLabel, Counter>::default();
        registry.register("delivery_failures", "Failed delivery attempts (temporary, permanent)", failures.clone());
        let leases_lost = Counter::default();
        registry.register("leases_lost", "Leases this node lost to another node (cluster)", leases_lost.clone());
        let archive_append = Histogram::new(exponential_buckets(0.000_5, 2.0, 14));
        registry.register(
            "archive_append_seconds",
            "Archive append, in the accepting transaction",
            archive_append.clone(),
        );
        let overdue = Gauge::default();
        registry.register("overdue_messages", "Messages queued longer than queue.warn_after_secs", overdue.clone());
        let collected = Counter::default();
        registry.register(
            "collected",
            "Inbound messages handed to the Sammelpostfach after the mail server refused them",
            collected.clone(),
        );
        let checkpoint_failures = Counter::default();
        registry.register(
            "archive_checkpoint_failures",
            "Archive checkpoints not signed or not time-stamped (tried again at the next one)",
            checkpoint_failures.clone(),
        );
        Metrics {
            registry,
            depth,
            oldest,
            deliveries,
            failures,
            leases_lost,
            archive_append,
            overdue,
            collected,
            checkpoint_failures,
        }
    }
}

impl Metrics {
    pub fn delivered(&self, kind: &str) {
        self.deliveries.get_or_create(&KindLabel { kind: kind.into() }).inc();
    }

    pub fn failed(&self, permanent: bool) {
        let kind = if permanent { "permanent" } else { "temporary" };
        self.failures.get_or_create(&KindLabel { kind: kind.into() }).inc();
    }

    pub fn appended(&self, since: Instant) {
        self.archive_append.observe(since.elapsed().as_secs_f64());
    }
}

/// Undelivered recipients by state and the age of the oldest message among them.
async fn queue_depth(app: &App) -> Result<(Vec<(String, i64)>, f64), demail_core::Error> {
    match &app.backend {
        Backend::Postgres(pg) => {
            let rows = pg.queue_depth().await?;
            let oldest = rows.iter().map(|r| r.2).fold(0.0, f64::max);
            Ok((rows.into_iter().map(|(s, n, _)| (s, n)).collect(), oldest))
        }
        Backend::Files(spool) => {
            let list = spool.list().map_err(crate::app::spool_unreadable)?;
            let now = crate::spool::now();
            let (mut queued, mut held, mut oldest) = (0i64, 0i64, 0u64);
            for (m, st) in &list {
                let open = m.rcpt_to.iter().filter(|r| !st.done_rcpts.contains(r)).count() as i64;
                if st.held {
                    held += open;
                } else {
                    queued += open;
                }
                oldest = oldest.max(now.saturating_sub(m.created));
            }
            Ok((vec![("queued".into(), queued), ("held".into(), held)], oldest as f64))
        }
    }
}

async fn live() -> &'static str {
    "ok\n"
}

async fn ready(State(app): State<Arc<App>>) -> Response {
    if app.is_stopping() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    }
    match app.writable().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(code = %e.code(), source = ?e.source, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: [{}] {}\n", e.code(), e.reason.message_en))
                .into_response()
        }
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let m = &app.metrics;
    match queue_depth(&app).await {
        Ok((states, oldest)) => {
            m.depth.clear();
            for (state, n) in states {
                m.depth.get_or_create(&StateLabel { state }).set(n);
            }
            m.oldest.set(oldest);
        }
        Err(e) => tracing::warn!(code = %e.code(), "queue depth not readable for the metrics"),
    }
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, &m.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz/live", get(live))
        .route("/healthz/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(app)
}
