//! `demail serve`: load the configuration, open the outbox, bind 127.0.0.1, publish the
//! port for discovery, run the API and the relay worker until SIGINT/SIGTERM.

use crate::config::{Config, ConfigIssue, Paths};
use crate::error::{bilingual, log_cause};
use crate::state::AppState;
use crate::store::Store;
use crate::{api, code, discovery, relay};
use demail_core::Error;
use serde_json::json;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Default, Clone)]
pub struct ServeOptions {
    /// `--port`; overrides `api.port` (unless IT locked it).
    pub port: Option<u16>,
    /// `--config`: the per-user file to use instead of the default.
    pub config: Option<PathBuf>,
}

/// Logging: stderr plus daily-rotated files in the log directory. Nothing logged by
/// this crate contains message content, passwords or tokens.
pub fn init_logging(cfg: &Config) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::Layer;
    let filter = || EnvFilter::try_new(&cfg.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .with_filter(filter());
    match log_file(cfg) {
        Some(appender) => {
            // A small queue (the default holds 128,000 lines, 4 MB): lines beyond it are dropped
            // rather than blocking the service.
            let (nb, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .buffered_lines_limit(2048)
                .finish(appender);
            let layer = tracing_subscriber::fmt::layer().with_writer(nb).with_ansi(false).with_filter(filter());
            let _ = tracing_subscriber::registry().with(stderr).with(layer).try_init();
            Some(guard)
        }
        None => {
            let _ = tracing_subscriber::registry().with(stderr).try_init();
            None
        }
    }
}

/// The daily log files in the log directory.
fn log_file(cfg: &Config) -> Option<tracing_appender::rolling::RollingFileAppender> {
    let dir = cfg.log_dir();
    crate::store::private_dir(&dir).ok()?;
    tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("helper")
        .filename_suffix("log")
        .max_log_files(cfg.log.max_files.max(1) as usize)
        .build(&dir)
        .ok()
}

/// For one-shot programs (the CLI's helper commands, the native-messaging host): an
/// error's cause goes into the helper's log file, the person gets only the reason.
pub fn log_cause_to_file(cfg: &Config, e: &Error) {
    if e.source.is_none() {
        return;
    }
    if let Some(file) = log_file(cfg) {
        let subscriber = tracing_subscriber::fmt().with_writer(file).with_ansi(false).finish();
        tracing::subscriber::with_default(subscriber, || log_cause(e));
    }
}

/// Load the configuration for `serve` and the CLI.
pub fn load_config(user_file: Option<&std::path::Path>) -> Result<(Config, Paths), Box<ConfigIssue>> {
    let paths = Paths::resolve(user_file);
    let cfg = Config::load(&paths)?;
    Ok((cfg, paths))
}

/// Run the helper in the foreground. Returns when a signal arrives.
/// The configuration for `serve`/`tray`: files plus `--port` (refused when IT locked it).
pub fn effective_config(opts: &ServeOptions) -> Result<Config, Error> {
    let (mut cfg, _paths) = load_config(opts.config.as_deref())?;
    if let Some(p) = opts.port {
        if cfg.is_locked("api.port") && p != cfg.api.port {
            return Err(Error::new(
                code::CONFIG_LOCKED,
                format!("Der Port ist von der IT auf {} festgelegt; --port {p} ist nicht erlaubt.", cfg.api.port),
                format!("The port is locked by IT to {}; --port {p} is not allowed.", cfg.api.port),
            ));
        }
        cfg.api.port = p;
    }
    Ok(cfg)
}

/// Where the tray and `demail-service.exe` record start errors (in `<data dir>/logs/`).
pub const TRAY_START_ERRORS: &str = "tray-start-error.log";
pub const SERVICE_START_ERRORS: &str = "service-start-error.log";
pub const START_ERROR_FILES: [&str; 2] = [TRAY_START_ERRORS, SERVICE_START_ERRORS];

/// `<data dir>/logs` from the defaults: the configuration may be what failed.
pub fn start_error_dir() -> PathBuf {
    crate::config::default_data_dir().join("logs")
}

/// For programs started without a console (Windows logon, a desktop menu entry): the start
/// error in German and English, also appended to `<data dir>/logs/<file>`, because what
/// failed may be the configuration that would have set up the log. A successful start of
/// any helper removes these files. Returns the text.
pub fn record_start_error(file: &str, e: &Error) -> String {
    let text = bilingual(&e.reason);
    let dir = start_error_dir();
    if crate::store::private_dir(&dir).is_ok() {
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(file)) {
            let _ = f.write_all(text.as_bytes());
        }
    }
    text
}

pub fn serve(opts: ServeOptions) -> Result<(), Error> {
    let cfg = effective_config(&opts)?;
    let _guard = init_logging(&cfg);
    for w in &cfg.warnings {
        tracing::warn!(code = %w.reason.code, "{}", w.reason.message_en);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| {
        Error::new(code::INTERNAL.id, format!("Laufzeit kann nicht starten: {e}"), format!("Runtime cannot start: {e}"))
    })?;
    rt.block_on(run(cfg)).inspect_err(log_cause)
}

async fn run(cfg: Config) -> Result<(), Error> {
    let running = start(cfg).await?;
    running.announce();
    running.serve(signal()).await
}

/// A helper that is bound, published and relaying, but not yet serving the API.
/// `demail serve` and the tray both start it this way.
pub struct Running {
    pub state: Arc<AppState>,
    pub port: u16,
    pub submission_port: Option<u16>,
    pub runtime_file: std::path::PathBuf,
    listener: tokio::net::TcpListener,
    lock: std::fs::File,
    worker: Option<tokio::task::JoinHandle<()>>,
    submission: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Lock the user's instance, open the outbox, bind the API (and the optional SMTP
/// listener) on 127.0.0.1, publish the port, start the relay.
pub async fn start(cfg: Config) -> Result<Running, Error> {
    let data = cfg.data_dir();
    let lock = discovery::lock_instance(&data)?;
    let mut store = Store::open(&data)?;
    let recovered = store.recover().unwrap_or(0);
    if let Err(e) = store.purge_pairings(crate::store::now_ms()) {
        log_cause(&e.0);
    }
    if recovered > 0 {
        tracing::warn!(count = recovered, "messages were being sent when the helper stopped; they are queued again");
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], cfg.api.port));
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::new(
            code::SERVE_BIND,
            format!("Port {} auf 127.0.0.1 ist nicht verfügbar: {e}", cfg.api.port),
            format!("Port {} on 127.0.0.1 is not available: {e}", cfg.api.port),
        )
    })?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(cfg.api.port);
    let relay_enabled = cfg.relay.enabled;
    let state = AppState::new(cfg, store);
    state.port.store(port, std::sync::atomic::Ordering::Relaxed);

    let mut submission = None;
    let mut submission_port = None;
    if state.config.submission.enabled {
        let addr = SocketAddr::from(([127, 0, 0, 1], state.config.submission.port));
        let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Error::new(
                code::SERVE_BIND,
                format!("Der SMTP-Port {} auf 127.0.0.1 ist nicht verfügbar: {e}", state.config.submission.port),
                format!("SMTP port {} on 127.0.0.1 is not available: {e}", state.config.submission.port),
            )
        })?;
        let p = l.local_addr().map(|a| a.port()).unwrap_or(0);
        let cfg = Arc::new(crate::submission::smtp_config(&state));
        let handler = Arc::new(crate::submission::Submission { state: state.clone() });
        tracing::info!(port = p, "local SMTP submission listening on 127.0.0.1");
        submission = Some(tokio::spawn(demail_smtp::serve(l, cfg, handler)));
        submission_port = Some(p);
    }
    let runtime_file = discovery::publish(port, submission_port).map_err(|e| {
        Error::new(
            code::SERVE_DISCOVERY,
            format!("Die Discovery-Datei kann nicht geschrieben werden: {e}"),
            format!("The discovery file cannot be written: {e}"),
        )
    })?;
    tracing::info!(port, data = %data.display(), "helper listening on 127.0.0.1");
    // Started: earlier start errors are history now (`demail doctor` shows what is left).
    for f in START_ERROR_FILES {
        let _ = std::fs::remove_file(start_error_dir().join(f));
    }
    let worker = relay_enabled.then(|| tokio::spawn(relay::run(state.clone())));
    tokio::spawn(purge_pairings_hourly(state.clone()));
    Ok(Running { state, port, submission_port, runtime_file, listener, lock, worker, submission })
}

impl Running {
    /// The one JSON line on stdout that tells scripts and tests the port.
    pub fn announce(&self) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{}",
            json!({
                "event": "listening", "port": self.port, "url": format!("http://127.0.0.1:{}", self.port),
                "pid": std::process::id(), "discovery": self.runtime_file, "submission_port": self.submission_port,
            })
        );
        let _ = out.flush();
    }

    /// Serve the API until `shutdown` resolves or [`AppState::shutdown`] is called; then
    /// stop the relay (waiting up to 10 s for a message on the wire) and unpublish.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Result<(), Error> {
        let Running { state, listener, lock, worker, submission, runtime_file, .. } = self;
        let app = api::router(state.clone());
        let st = state.clone();
        let header_timeout = std::time::Duration::from_secs(state.config.api.header_timeout.max(1));
        let served = serve_api(listener, app, header_timeout, async move {
            tokio::select! {
                _ = shutdown => {}
                _ = st.shutdown_requested() => {}
            }
            st.shutdown();
        })
        .await;
        state.shutdown();
        if let Some(task) = submission {
            task.abort();
        }
        if let Some(w) = worker {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), w).await;
        }
        discovery::unpublish(&runtime_file);
        drop(lock);
        tracing::info!("helper stopped");
        served.map_err(|e| {
            Error::new(
                code::SERVE_FAILED,
                format!("Der Dienst ist ausgefallen: {e}"),
                format!("The service failed: {e}"),
            )
        })
    }
}

/// Expired pairing requests and denied ones leave the table (also before each new
/// request), so tokens are never compared against them.
async fn purge_pairings_hourly(state: Arc<AppState>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = state.shutdown_requested() => return,
        }
        if let Err(e) = state.with_store(|s| s.purge_pairings(crate::store::now_ms())).await {
            log_cause(&e.0);
        }
    }
}

/// HTTP/1.1 on `listener` until `shutdown`, then up to 10 s for requests in flight.
/// Unlike `axum::serve`, a client that does not finish its request headers within
/// `header_timeout` (slowloris) is disconnected; the idle time between keep-alive
/// requests counts as well. Other connections are unaffected (one task each).
async fn serve_api(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    header_timeout: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let svc = app.clone().map_request(|r: axum::http::Request<hyper::body::Incoming>| r.map(axum::body::Body::new));
        let conn = graceful
            .watch(http.serve_connection(TokioIo::new(stream), hyper_util::service::TowerToHyperService::new(svc)));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection closed");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), graceful.shutdown()).await;
    Ok(())
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
