//! Shared state of a running helper.

use crate::code;
use crate::config::Config;
use crate::error::ApiError;
use crate::store::{Store, StoreError};
use demail_core::{Policy, Reason};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::RwLock;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};
use tokio::sync::{watch, Notify};

/// What the helper last saw of the gateway (the tray colours by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatewayState {
    /// Nothing sent yet since start.
    Unknown,
    Connected,
    Unreachable,
    Error,
}

/// Who is signed in at the gateway, as the last session showed (the tray says
/// "Angemeldet als …"), or why signing in did not work.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SignIn {
    pub signed_in: Option<crate::relay::SignedIn>,
    /// When the gateway last named the person (ms since the epoch).
    pub at: Option<i64>,
    pub problem: Option<Reason>,
}

struct PolicyCache {
    policy: Arc<Policy>,
    source: String,
    checked: Instant,
    mtime: Option<SystemTime>,
}

pub struct AppState {
    /// The configuration the helper started with (API, storage, listeners).
    pub config: Arc<Config>,
    /// The configuration for the relay, replaceable at run time (tray settings).
    current: RwLock<(Arc<Config>, u64)>,
    config_gen: AtomicU64,
    store: Arc<Mutex<Store>>,
    /// Wakes the relay worker (new or retried message).
    pub wake: Notify,
    shutdown_tx: watch::Sender<bool>,
    gateway: Mutex<(GatewayState, Option<Reason>)>,
    signin: Mutex<SignIn>,
    policy: Mutex<Option<PolicyCache>>,
    pub port: AtomicU16,
    pub started: Instant,
}

impl AppState {
    pub fn new(config: Config, store: Store) -> Arc<AppState> {
        let (shutdown_tx, _) = watch::channel(false);
        let config = Arc::new(config);
        Arc::new(AppState {
            current: RwLock::new((config.clone(), 0)),
            config_gen: AtomicU64::new(0),
            config,
            store: Arc::new(Mutex::new(store)),
            wake: Notify::new(),
            shutdown_tx,
            gateway: Mutex::new((GatewayState::Unknown, None)),
            signin: Mutex::new(SignIn::default()),
            policy: Mutex::new(None),
            port: AtomicU16::new(0),
            started: Instant::now(),
        })
    }

    /// Run a store operation on the blocking pool.
    pub async fn with_store<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    {
        let s = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut g = s.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut g)
        })
        .await
        .map_err(|e| StoreError::new(format!("store task: {e}")))?
    }

    pub fn shutdown(&self) {
        let _ = self.shutdown_tx.send(true);
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown_tx.borrow()
    }

    /// Resolves once shutdown is requested.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.shutdown_tx.subscribe();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    pub fn set_gateway(&self, s: GatewayState, err: Option<Reason>) {
        let mut g = self.gateway.lock().unwrap_or_else(|p| p.into_inner());
        *g = (s, err);
    }

    pub fn gateway(&self) -> (GatewayState, Option<Reason>) {
        self.gateway.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A session signed in (`None`: the gateway asked for no sign-in).
    pub fn set_signed_in(&self, who: Option<crate::relay::SignedIn>) {
        let mut g = self.signin.lock().unwrap_or_else(|p| p.into_inner());
        *g = SignIn { at: who.as_ref().map(|_| crate::store::now_ms()), signed_in: who, problem: None };
    }

    /// Signing in did not work; the tray shows why until the next successful session.
    pub fn set_signin_problem(&self, why: Reason) {
        let mut g = self.signin.lock().unwrap_or_else(|p| p.into_inner());
        g.signed_in = None;
        g.problem = Some(why);
    }

    pub fn signin(&self) -> SignIn {
        self.signin.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The relay's configuration and its generation (bumped by [`AppState::replace_config`]).
    pub fn current_config(&self) -> (Arc<Config>, u64) {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// New gateway/relay settings (e.g. saved in the tray): relay sessions reconnect.
    pub fn replace_config(&self, cfg: Config) {
        let gen = self.config_gen.fetch_add(1, Ordering::SeqCst) + 1;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(cfg), gen);
        self.wake.notify_one();
    }

    pub fn port(&self) -> u16 {
        self.port.load(Ordering::Relaxed)
    }

    /// The effective policy, re-read when the file changed (checked at most every
    /// `policy.cache_ttl` seconds).
    pub fn policy(&self) -> Result<(Arc<Policy>, String), ApiError> {
        let mut cache = self.policy.lock().unwrap_or_else(|p| p.into_inner());
        let ttl = std::time::Duration::from_secs(self.config.policy.cache_ttl);
        let path = PathBuf::from(self.config.policy.file.trim());
        if let Some(c) = cache.as_ref() {
            if c.checked.elapsed() < ttl {
                return Ok((c.policy.clone(), c.source.clone()));
            }
        }
        let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if let Some(c) = cache.as_mut() {
            if c.mtime == mtime {
                c.checked = Instant::now();
                return Ok((c.policy.clone(), c.source.clone()));
            }
        }
        let (policy, source) = load_policy(&path)?;
        let policy = Arc::new(policy);
        *cache = Some(PolicyCache { policy: policy.clone(), source: source.clone(), checked: Instant::now(), mtime });
        Ok((policy, source))
    }
}

/// Load the policy file; a missing file means the built-in rules.
pub fn load_policy(path: &std::path::Path) -> Result<(Policy, String), ApiError> {
    if path.as_os_str().is_empty() {
        return Ok((Policy::default(), "built-in".into()));
    }
    match std::fs::read_to_string(path) {
        Ok(text) => Policy::parse(&text).map(|p| (p, path.display().to_string())).map_err(|e| {
            let e = e.with_file(path.display().to_string());
            let details = serde_json::json!({ "policy_error": &e });
            ApiError::wrap(code::POLICY_INVALID, e.reason).with_details(details)
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Policy::default(), "built-in".into())),
        Err(e) => Err(ApiError::new(
            code::POLICY_UNREADABLE,
            format!("Die Richtlinie {} kann nicht gelesen werden ({e}).", path.display()),
            format!("The policy {} cannot be read ({e}).", path.display()),
        )),
    }
}
