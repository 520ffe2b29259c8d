//! The running gateway: SMTP handlers for both directions and the queue runner.

use crate::archive::{self, Archive, NewEntry, Reserved};
use crate::billing::{self, Bill};
use crate::config::{parse_net, Config, TlsMode};
use crate::identity::directory::Directory;
use crate::identity::{self, Identity, METHOD_ACCOUNT, METHOD_CONNECTOR, METHOD_KERBEROS, METHOD_LDAP};
use crate::pg::Pg;
use crate::relay::{self, Failure};
use crate::spool::{self, Kind, Meta, Spool, State};
use crate::{dsn, pipeline};
use demail_core::classify::{classify_raw, Kind as MsgKind};
use demail_core::submission::unconfirmed;
use demail_core::{Error, Policy, Reason};
use demail_smtp::{Accepted, AuthResult, Authenticated, Envelope, Handler, Reject, SaslExchange, SessionInfo};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{error, info, warn};

mod cluster;

/// Where accepted mail waits: the spool directory (with the SQLite archive) of one
/// gateway, or the PostgreSQL database shared by a cluster's nodes.
pub enum Backend {
    Files(Spool),
    Postgres(Arc<Pg>),
}

pub struct App {
    pub cfg: Config,
    pub policy: Policy,
    pub backend: Backend,
    pub archive: Archive,
    wake: Notify,
    inflight: Mutex<HashSet<String>>,
    /// Outbound queue ids whose acceptance is being decided: reserved, not yet spooled
    /// and recorded, nor rolled back. A duplicate waits for them ([`App::settled`]).
    accepting: Mutex<HashSet<String>>,
    settled: Notify,
    /// Test-only fault hook ([`SPOOL_FAULT_ENV`]): outbound spool writes still to fail.
    spool_faults: AtomicU32,
    /// Seal key id and private key (from the keyring), read once at start.
    seal: Option<(String, [u8; 32])>,
    /// Outbound listener accounts and their secrets, read once at start.
    users: Vec<(crate::config::User, String)>,
    /// People's sign-in and rights (`[identity]`, `[directory]`).
    pub identity: Arc<Identity>,
    /// What `/metrics` reports.
    pub metrics: crate::health::Metrics,
    /// SIGTERM arrived: not ready any more, and no new deliveries start.
    stopping: std::sync::atomic::AtomicBool,
    /// Deliveries in flight on PostgreSQL (the spool's runner counts `inflight`).
    pub(crate) delivering: Arc<std::sync::atomic::AtomicUsize>,
    /// The TSA for checkpoints and the CA its tokens must chain to (`[archive]`).
    tsa: Option<(crate::tsa::Client, Vec<demail_core::cert::Cert>)>,
}

pub(crate) fn spool_unreadable(e: std::io::Error) -> Error {
    Error::new("spool.read", "Die Warteschlange ist nicht lesbar.", "The queue cannot be read.").caused_by(e)
}

fn spool_unwritable(e: std::io::Error) -> Error {
    Error::new(
        "spool.write",
        "Die Nachricht lässt sich nicht in die Warteschlange schreiben.",
        "The message cannot be written to the queue.",
    )
    .caused_by(e)
}

/// Test-only (docs/gateway.md): `DEMAIL_GATEWAY_TEST_FAIL_SPOOL=N` makes the first N
/// outbound spool writes fail after their file reached the queue (the worst moment), so
/// tests can see the roll-back. Unset (always in production) it does nothing.
pub const SPOOL_FAULT_ENV: &str = "DEMAIL_GATEWAY_TEST_FAIL_SPOOL";

/// How long a duplicate waits for the first submission's outcome before answering 451.
const DUPLICATE_WAIT: Duration = Duration::from_secs(60);

/// 451 for a failure of our own (queue, archive): the code first, the client retries.
fn local_error(e: Error) -> Reject {
    error!(error = %e, "local failure; message not accepted");
    let r = &e.reason;
    Reject::temporary(
        format!("[{}] {} Vorübergehender Fehler im Gateway; bitte später erneut senden.", r.code, r.message),
        format!("[{}] {} Temporary gateway failure; please send again later.", r.code, r.message_en),
    )
}

fn task_failed(e: tokio::task::JoinError) -> Error {
    Error::new("gateway.internal", "Interner Fehler im Gateway.", "Internal gateway failure.").caused_by(e)
}

/// Constant-time comparison, so response times do not reveal a password prefix.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

impl App {
    /// The spool and archive of `[storage]`: files and SQLite, or PostgreSQL (connected,
    /// its schema migrated).
    pub async fn open(cfg: Config, policy: Policy) -> Result<Arc<App>, Error> {
        let (backend, archive) = match cfg.storage.backend {
            crate::config::Backend::Sqlite => {
                let spool = Spool::open(&cfg.gateway.spool_dir).map_err(|e| {
                    Error::new(
                        "spool.open",
                        "Die Warteschlange (spool_dir) lässt sich nicht öffnen.",
                        "The queue (spool_dir) cannot be opened.",
                    )
                    .caused_by(format!("{}: {e}", cfg.gateway.spool_dir.display()))
                })?;
                spool.clean().map_err(spool_unreadable)?;
                (Backend::Files(spool), archive::sqlite::open(&cfg.gateway.archive_db)?)
            }
            crate::config::Backend::Postgres => {
                let s = &cfg.storage;
                let password = s.password().read().map_err(|e| crate::secret::concerning("storage", e))?;
                let pg = Pg::new(crate::pg::connect(s, &password).await?, s);
                info!(node = %pg.node, lease_secs = s.lease_secs, "storage: PostgreSQL (cluster)");
                let archive = pg.archive(tokio::runtime::Handle::current());
                (Backend::Postgres(Arc::new(pg)), archive)
            }
        };
        App::new(cfg, policy, backend, archive)
    }

    fn new(cfg: Config, policy: Policy, backend: Backend, archive: Archive) -> Result<Arc<App>, Error> {
        let mut users = Vec::new();
        for u in &cfg.outbound.users {
            let password =
                u.password().read().map_err(|e| crate::secret::concerning(&format!("outbound.users {}", u.name), e))?;
            users.push((u.clone(), password));
        }
        let directory = match &cfg.directory {
            Some(d) => {
                let pw = d.bind_password().read().map_err(|e| crate::secret::concerning("directory", e))?;
                Some(Arc::new(Directory::new(d.clone(), pw)?))
            }
            None => None,
        };
        let identity = Arc::new(Identity::new(cfg.identity.clone(), directory)?);
        let seal = match &cfg.seal {
            Some(sc) => {
                let key = sc.read_key()?;
                let public = demail_core::seal::public_key(&sc.kid, &key);
                if !policy.seal.public_keys.contains(&public) {
                    warn!(kid = %sc.kid, "the seal key's public half is not in the policy's [seal] public_keys; add-ins will not accept the seal");
                }
                Some((sc.kid.clone(), key))
            }
            None => {
                warn!("no [seal] configured: inbound mail is not sealed; add-ins cannot tell it from forged X-de-mail-* headers");
                None
            }
        };
        let tsa = match (&cfg.archive.tsa_url, &cfg.archive.tsa_ca) {
            (Some(url), Some(ca)) => Some((
                crate::tsa::Client::new(url, cfg.archive.tsa_tls_ca.as_deref(), cfg.archive.tsa_policy.clone())?,
                crate::tsa::anchors(ca)?,
            )),
            _ => None,
        };
        if seal.is_none() && cfg.archive.checkpoint_secs > 0 {
            warn!("no [seal] key: the archive gets no signed checkpoints; a rewrite of the database and its head is not detectable");
        }
        let spool_faults = std::env::var(SPOOL_FAULT_ENV).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        if spool_faults > 0 {
            warn!(
                env = SPOOL_FAULT_ENV,
                count = spool_faults,
                "TEST-ONLY fault hook set: outbound spool writes will fail"
            );
        }
        Ok(Arc::new(App {
            seal,
            cfg,
            policy,
            backend,
            archive,
            wake: Notify::new(),
            inflight: Mutex::new(HashSet::new()),
            accepting: Mutex::new(HashSet::new()),
            settled: Notify::new(),
            spool_faults: AtomicU32::new(spool_faults),
            users,
            identity,
            metrics: crate::health::Metrics::default(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            delivering: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            tsa,
        }))
    }

    /// Stop being ready (SIGTERM): the balancer sends new sessions elsewhere.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The last step of a graceful stop: wait up to `queue.stop_grace_secs` for the
    /// deliveries in flight, then give back what is still running (cluster: its leases,
    /// so another node takes the recipients over at once instead of after `lease_secs`).
    pub async fn finish(&self) {
        let in_flight = || match &self.backend {
            Backend::Postgres(_) => self.delivering.load(Ordering::SeqCst),
            Backend::Files(_) => self.inflight.lock().unwrap_or_else(|p| p.into_inner()).len(),
        };
        let until = tokio::time::Instant::now() + Duration::from_secs(self.cfg.queue.stop_grace_secs);
        while in_flight() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = in_flight();
        match &self.backend {
            Backend::Postgres(pg) => match pg.release_leases().await {
                Ok(n) => info!(in_flight = left, released = n, "stopping: leases released"),
                Err(e) => warn!(error = %e, "stopping: leases not released; they lapse after lease_secs"),
            },
            // A delivery cut off here is in the spool still (and marked if DATA had begun).
            Backend::Files(_) if left > 0 => {
                info!(in_flight = left, "stopping: deliveries cut off; sent again at start")
            }
            Backend::Files(_) => {}
        }
    }

    /// Can this node accept a message now: its queue and archive take writes.
    pub async fn writable(self: &Arc<Self>) -> Result<(), Error> {
        match &self.backend {
            Backend::Postgres(pg) => match pg.writable().await? {
                true => Ok(()),
                false => Err(Error::new(
                    "storage.read_only",
                    "Die Datenbank nimmt nur Lesezugriffe an (Standby statt Primärserver).",
                    "The database takes reads only (a standby, not the primary).",
                )),
            },
            Backend::Files(_) => {
                let app = self.clone();
                tokio::task::spawn_blocking(move || {
                    app.spool().probe().map_err(spool_unwritable)?;
                    app.archive.store().entries(i64::MAX, 1).map(|_| ())
                })
                .await
                .map_err(|e| Error::new("internal", "Interner Fehler.", "Internal error.").caused_by(e))?
            }
        }
    }

    fn smtp_config(
        &self,
        tls: TlsMode,
        nets: &[String],
        max: usize,
        client_ca: Option<&std::path::Path>,
        limits: &crate::config::Limits,
    ) -> Result<demail_smtp::Config, Error> {
        let tls_cfg = match (tls, &self.cfg.tls) {
            (TlsMode::None, _) => None,
            (_, Some(t)) => Some(demail_smtp::tls::server_config(&t.cert, &t.key, client_ca).map_err(|e| {
                Error::new(
                    "tls.server_config",
                    "Zertifikat oder Schlüssel aus [tls] sind nicht nutzbar.",
                    "The certificate or key from [tls] cannot be used.",
                )
                .caused_by(e)
            })?),
            (_, None) => return Err(crate::config::tls_missing().into()),
        };
        Ok(demail_smtp::Config {
            hostname: self.cfg.gateway.hostname.clone(),
            tls: tls_cfg,
            implicit_tls: tls == TlsMode::Implicit,
            require_tls: tls != TlsMode::None,
            allowed_clients: nets.iter().filter_map(|n| parse_net(n)).collect(),
            max_message_size: max,
            command_timeout: Duration::from_secs(self.cfg.outbound.command_timeout_secs),
            max_connections: limits.max_connections,
            max_connections_per_ip: limits.max_connections_per_ip,
            pre_auth_timeout: Duration::from_secs(limits.pre_auth_timeout_secs),
            auth_throttle: Arc::new(demail_smtp::AuthThrottle::new(demail_smtp::AuthLimits {
                per_ip: limits.auth_failures_per_ip,
                per_user: limits.auth_failures_per_user,
                lockout: Duration::from_secs(limits.auth_lockout_secs),
                lockout_max: Duration::from_secs(limits.auth_lockout_max_secs),
            })),
            ..demail_smtp::Config::default()
        })
    }

    pub fn outbound_smtp(&self) -> Result<demail_smtp::Config, Error> {
        let o = &self.cfg.outbound;
        let mut c = self.smtp_config(o.tls, &o.allowed_clients, o.max_message_size, None, &o.limits)?;
        let id = &self.cfg.identity;
        c.offer_auth = !self.users.is_empty() || id.kerberos || id.ldap_password;
        c.password_auth = !self.users.is_empty() || id.ldap_password;
        // Start-up refuses a plaintext listener that is reachable from other hosts.
        c.allow_auth_without_tls = o.tls == TlsMode::None && o.loopback_only();
        // Connectors sign in with a pinned client certificate; people do not present one.
        if !o.connectors.is_empty() {
            if let Some(t) = &self.cfg.tls {
                let pins = o
                    .connectors
                    .iter()
                    .flat_map(|c| c.certificate_sha256.iter().filter_map(|f| identity::fingerprint(f)))
                    .collect();
                c.tls = Some(demail_smtp::tls::server_config_pinned_clients(&t.cert, &t.key, pins).map_err(|e| {
                    Error::new(
                        "tls.server_config",
                        "Zertifikat oder Schlüssel aus [tls] sind nicht nutzbar.",
                        "The certificate or key from [tls] cannot be used.",
                    )
                    .caused_by(e)
                })?);
            }
        }
        c.require_auth = o.require_auth;
        c.proxy_from = o.proxy_protocol_from.iter().filter_map(|n| parse_net(n)).collect();
        Ok(c)
    }

    pub fn inbound_smtp(&self) -> Result<demail_smtp::Config, Error> {
        let i = &self.cfg.inbound;
        let mut c =
            self.smtp_config(i.tls, &i.allowed_clients, i.max_message_size, i.client_ca.as_deref(), &i.limits)?;
        c.proxy_from = i.proxy_protocol_from.iter().filter_map(|n| parse_net(n)).collect();
        Ok(c)
    }

    fn meta(
        kind: Kind,
        from: &str,
        rcpts: Vec<String>,
        private_id: Option<String>,
        provider: Option<String>,
        bounce_to: Option<String>,
    ) -> Meta {
        Meta {
            id: spool::new_id(),
            kind,
            mail_from: from.to_string(),
            rcpt_to: rcpts,
            created: spool::now(),
            private_id,
            provider,
            bounce_to,
            message_id: None,
            cost_unit: None,
            options: Vec::new(),
            actor: None,
        }
    }

    /// The spool: only on the files backend's paths (the PostgreSQL ones never call it).
    fn spool(&self) -> &Spool {
        match &self.backend {
            Backend::Files(s) => s,
            Backend::Postgres(_) => unreachable!("the spool belongs to the files backend"),
        }
    }

    /// Does an approved request (or self-service) give this person the De-Mail right?
    async fn granted(self: &Arc<Self>, dn: &str) -> Result<bool, Reject> {
        let (app, dn) = (self.clone(), dn.to_string());
        let rec = blocking(move || app.archive.access(&dn)).await?;
        Ok(rec.is_some_and(|r| r.state == identity::ACCESS_GRANTED))
    }

    /// "De-Mail für mich beantragen": a signed-in person's request, sent by their helper
    /// to the request address. Recorded in the archive; with self-service it grants at once.
    async fn access_request(self: &Arc<Self>, env: &Envelope, user: &str, method: &str) -> Result<Accepted, Reject> {
        if env.rcpt_to.len() != 1 {
            return Err(identity::refusal(&Reason::new(
                "access.request_mixed",
                "Ein Antrag auf De-Mail geht allein an die Antragsadresse, nicht zusammen mit anderen Empfängern.",
                "A De-Mail request goes to the request address alone, not together with other recipients.",
            )));
        }
        if method != METHOD_KERBEROS && method != METHOD_LDAP {
            return Err(identity::refusal(&Reason::new(
                "access.request_not_a_person",
                "Nur Personen können De-Mail für sich beantragen.",
                "Only people can request De-Mail for themselves.",
            )));
        }
        let person = self.identity.signed_in_person(user, method).await?;
        let granted = self.granted(&person.dn).await?;
        if demail_core::rights::has_demail_right(&person, &self.identity.rules, granted) {
            info!(user, "access request: already holds the De-Mail right");
            return Ok(Accepted { id: "zugang-besteht".into() });
        }
        let state = if self.cfg.access.self_service { identity::ACCESS_GRANTED } else { identity::ACCESS_REQUESTED };
        let actor = format!("{method}:{user}");
        let record = crate::archive::AccessRecord {
            dn: person.dn.clone(),
            login: person.login.clone(),
            name: person.display_name.clone(),
            state: state.into(),
            time: spool::now() as i64,
            by: actor.clone(),
        };
        let sender = person.addresses.first().cloned().unwrap_or_else(|| person.login.clone());
        let app = self.clone();
        blocking(move || app.archive.record_access(&record, &actor, &sender).map(|_| ())).await?;
        info!(user, state, "access request recorded");
        Ok(Accepted {
            id: if state == identity::ACCESS_GRANTED { "zugang-erteilt" } else { "zugang-beantragt" }.into(),
        })
    }

    /// Archive entry, billing row and duplicate mark for a spooled outbound message.
    fn record(&self, m: &Meta, message: &[u8]) -> Result<(), Error> {
        let unit = m.cost_unit.clone().unwrap_or_else(|| billing::UNASSIGNED.to_string());
        let options = m.options.join(",");
        let t = std::time::Instant::now();
        let r = self.archive.record_outbound(&out_entry(m, message), &out_bill(m, &unit, &options)).map(|_| ());
        self.metrics.appended(t);
        r
    }

    /// After a crash: record every spooled outbound message that was not recorded yet,
    /// before the listeners open (so a client's retry is recognised as a duplicate).
    pub fn recover(&self) -> Result<usize, Error> {
        // On PostgreSQL acceptance is one transaction: nothing is half written.
        if matches!(self.backend, Backend::Postgres(_)) {
            return Ok(0);
        }
        if let Some((from, to)) = self.archive.heal_head()? {
            warn!(from, to, "archive head file was behind its newest entries (unclean stop); moved forward");
        }
        let mut n = 0;
        for (m, _) in self.spool().list().map_err(spool_unreadable)? {
            if m.kind == Kind::Provider && !self.archive.is_recorded(&m.id)? {
                let (_, body) = self.spool().load(&m.id).map_err(spool_unreadable)?;
                self.record(&m, &body)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// The archive entry of an accepted outbound De-Mail.
fn out_entry<'a>(m: &'a Meta, message: &'a [u8]) -> NewEntry<'a> {
    NewEntry {
        direction: "out",
        private_id: m.private_id.as_deref(),
        message_id: m.message_id.as_deref(),
        sender: &m.mail_from,
        recipients: &m.rcpt_to,
        data: message,
        actor: m.actor.as_deref(),
    }
}

/// Its billing facts (`unit`: the cost unit, or [`billing::UNASSIGNED`]; `options` joined by commas).
fn out_bill<'a>(m: &'a Meta, unit: &'a str, options: &'a str) -> Bill<'a> {
    Bill {
        queue_id: &m.id,
        sender: m.bounce_to.as_deref().unwrap_or(&m.mail_from),
        cost_unit: unit,
        recipients: m.rcpt_to.len(),
        options,
        person: m.actor.as_deref().unwrap_or(""),
    }
}

/// Queue ids the runner must not touch yet (still being accepted).
struct Inflight {
    app: Arc<App>,
    ids: Vec<String>,
}

impl Inflight {
    fn new(app: &Arc<App>, ids: Vec<String>) -> Inflight {
        let mut set = app.inflight.lock().unwrap_or_else(|p| p.into_inner());
        set.extend(ids.iter().cloned());
        Inflight { app: app.clone(), ids }
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        let mut set = self.app.inflight.lock().unwrap_or_else(|p| p.into_inner());
        for id in &self.ids {
            set.remove(id);
        }
    }
}

/// A queue id whose acceptance is being decided. Marked before its reservation is
/// written, so whoever finds the reservation also finds the mark; on drop the outcome is
/// settled (spooled, or rolled back) and waiting duplicates look again.
struct Accepting {
    app: Arc<App>,
    id: String,
}

impl Accepting {
    fn new(app: &Arc<App>, id: &str) -> Accepting {
        app.accepting.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string());
        Accepting { app: app.clone(), id: id.to_string() }
    }
}

impl Drop for Accepting {
    fn drop(&mut self) {
        self.app.accepting.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
        self.app.settled.notify_waiters();
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Reject> {
    tokio::task::spawn_blocking(f).await.map_err(task_failed).and_then(|r| r).map_err(local_error)
}

impl App {
    fn is_accepting(&self, id: &str) -> bool {
        self.accepting.lock().unwrap_or_else(|p| p.into_inner()).contains(id)
    }

    /// Until `id`'s acceptance is settled (or `until` passes).
    async fn wait_settled(&self, id: &str, until: tokio::time::Instant) {
        while tokio::time::Instant::now() < until {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_accepting(id) {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
        }
    }

    /// Queued or already sent: in the spool, or recorded (the runner records before sending).
    fn committed(&self, id: &str) -> Result<bool, Error> {
        Ok(self.spool().exists(id) || self.archive.is_recorded(id)?)
    }

    /// Reserve (Message-ID, sender) for `id` before spooling. `None`: ours, go on.
    /// `Some(earlier)`: a submission with the same pair is queued as `earlier`; if it is
    /// still being accepted, wait for its outcome: when it rolls back, this one goes on.
    async fn reserve(self: &Arc<Self>, mid: &str, sender: &str, id: &str) -> Result<Option<String>, Reject> {
        let until = tokio::time::Instant::now() + DUPLICATE_WAIT;
        let mut stale: Option<String> = None;
        while tokio::time::Instant::now() < until {
            let (app, m, s, i, st) = (self.clone(), mid.to_string(), sender.to_string(), id.to_string(), stale.take());
            let held = match blocking(move || app.archive.reserve(&m, &s, &i, st.as_deref())).await? {
                Reserved::Ours => return Ok(None),
                Reserved::Held(q) => q,
            };
            if self.is_accepting(&held) {
                self.wait_settled(&held, until).await;
                continue;
            }
            let (app, q) = (self.clone(), held.clone());
            if blocking(move || app.committed(&q)).await? {
                return Ok(Some(held));
            }
            // Neither queued nor sent: an attempt that failed or died; take its place.
            warn!(stale = %held, id, "stale reservation of this Message-ID taken over");
            stale = Some(held);
        }
        Err(Reject::temporary(
            "[gateway.duplicate_pending] Dieselbe Nachricht wird gerade schon angenommen; bitte später erneut senden.",
            "[gateway.duplicate_pending] The same message is being accepted right now; please send again later.",
        ))
    }

    /// Spool an outbound message (the test-only fault hook applies here).
    fn put_outbound(&self, m: &Meta, message: &[u8]) -> std::io::Result<()> {
        self.spool().put(m, message)?;
        if self.spool_faults.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(std::io::Error::other(format!("injected fault ({SPOOL_FAULT_ENV}, test only)")));
        }
        Ok(())
    }

    /// Spool every part of a submission, or none: on a failure the parts already written
    /// (and the failing one, should its file exist) are removed and the reservation
    /// released, so the client's retry is taken once. If a part cannot be removed, the
    /// reservation stays: that part will be sent, and a retry is answered as a duplicate.
    fn spool_all(&self, metas: &[Meta], message: &[u8], key: Option<(&str, &str)>) -> Result<(), Error> {
        for (i, m) in metas.iter().enumerate() {
            let Err(e) = self.put_outbound(m, message) else { continue };
            let mut clean = true;
            for m in &metas[..=i] {
                match self.spool().remove(&m.id) {
                    Ok(()) => {}
                    Err(r) if r.kind() == std::io::ErrorKind::NotFound => {}
                    Err(r) => {
                        clean = false;
                        error!(id = %m.id, error = %r, "cannot remove a partly spooled submission; it stays queued");
                    }
                }
            }
            if let (true, Some((mid, sender))) = (clean, key) {
                if let Err(r) = self.archive.release(mid, sender, &metas[0].id) {
                    // Harmless: a reservation whose message is not queued is taken over.
                    warn!(id = %metas[0].id, error = %r, "cannot release the reservation");
                }
            }
            return Err(spool_unwritable(e));
        }
        Ok(())
    }
}

/// The organisation side: helpers and the internal mail server submit here.
pub struct Outbound(pub Arc<App>);

impl Handler for Outbound {
    async fn authenticate(&self, user: &str, password: &str) -> AuthResult {
        // An application account (exact senders only), else a person by directory bind.
        let mut ok = false;
        for (u, p) in &self.0.users {
            ok |= same(&u.name, user) & same(p, password);
        }
        if ok {
            return AuthResult::Accepted(Authenticated {
                user: user.to_string(),
                method: METHOD_ACCOUNT.into(),
                display: None,
            });
        }
        if self.0.users.iter().any(|(u, _)| same(&u.name, user)) {
            return AuthResult::Refused;
        }
        self.0.identity.check_password(user, password).await
    }

    fn sasl_mechanisms(&self) -> u64 {
        if self.0.cfg.identity.kerberos {
            demail_smtp::AUTH_GSSAPI
        } else {
            0
        }
    }

    fn tls_identity(&self, session: &SessionInfo) -> Option<Authenticated> {
        self.0.identity.connector_for(&self.0.cfg.outbound.connectors, session)
    }

    fn sasl_start(&self, mechanism: u64, _session: &SessionInfo) -> Option<Box<dyn SaslExchange>> {
        (mechanism == demail_smtp::AUTH_GSSAPI && self.0.cfg.identity.kerberos)
            .then(|| self.0.identity.kerberos_exchange())
    }

    async fn deliver(&self, env: &Envelope, message: Vec<u8>) -> Result<Accepted, Reject> {
        let app = &self.0;
        let (user, method) = match (&env.session.auth_user, &env.session.auth_method) {
            (Some(u), Some(m)) => (u.as_str(), m.as_str()),
            // require_auth is enforced at start-up; a session without a sign-in never gets here.
            _ => return Err(identity::refusal(&identity::not_signed_in())),
        };
        let request_to = app.cfg.access.request_address(&app.cfg.gateway.hostname);
        if env.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(&request_to)) {
            return app.access_request(env, user, method).await;
        }
        let entropy = spool::random_bytes::<8>();
        let p = pipeline::prepare(&app.policy, &env.mail_from, &env.rcpt_to, message, spool::now_millis(), &entropy)?;
        let account = (method == METHOD_ACCOUNT).then(|| app.users.iter().find(|(u, _)| u.name == user)).flatten();
        match method {
            // An application account sends only as its own senders, and names only those as Sender.
            METHOD_ACCOUNT => {
                let may = |addr: &str| account.is_some_and(|(u, _)| u.may_send_as(addr));
                if !may(&p.sender_email) {
                    warn!(user = %user, sender = %p.sender_email, "account may not send as this sender");
                    return Err(Reject::new(
                        550,
                        "5.7.1",
                        format!(
                            "[gateway.sender_not_bound] Das Konto {user} darf nicht als {} senden.",
                            p.sender_email
                        ),
                        format!("[gateway.sender_not_bound] The account {user} may not send as {}.", p.sender_email),
                    ));
                }
                if let Some(s) = p.sender_field.iter().find(|s| !may(s)) {
                    warn!(user = %user, sender_field = %s, "account may not name this Sender");
                    return Err(Reject::new(
                        550,
                        "5.7.1",
                        format!(
                            "[gateway.sender_field_not_bound] Das Konto {user} darf {s} nicht als „Sender“ nennen."
                        ),
                        format!("[gateway.sender_field_not_bound] The account {user} may not name {s} as \"Sender\"."),
                    ));
                }
            }
            // A person: the directory says which senders and options, and whether De-Mail at all.
            METHOD_KERBEROS | METHOD_LDAP => {
                let person = app.identity.signed_in_person(user, method).await?;
                let granted = app.granted(&person.dn).await?;
                app.identity.authorize(&person, granted, &p.sender_email, p.options)?;
                let allowed = demail_core::rights::allowed_senders(&person, &app.identity.rules);
                if let Some(s) = p.sender_field.iter().find(|s| !allowed.contains(&s.to_lowercase())) {
                    warn!(user = %user, sender_field = %s, "person may not name this Sender");
                    return Err(Reject::new(
                        550,
                        "5.7.1",
                        format!(
                            "[identity.sender_field_not_allowed] {} darf {s} nicht als „Sender“ nennen.",
                            person.display_name
                        ),
                        format!(
                            "[identity.sender_field_not_allowed] {} may not name {s} as \"Sender\".",
                            person.display_name
                        ),
                    ));
                }
            }
            // The organisation's mail server authenticated the person; the directory still
            // says whether the owner of the From address may send De-Mail.
            METHOD_CONNECTOR => {
                if app.identity.directory.is_some() {
                    let person = app.identity.signed_in_person(&p.sender_email, METHOD_CONNECTOR).await?;
                    let granted = app.granted(&person.dn).await?;
                    app.identity.authorize(&person, granted, &p.sender_email, p.options)?;
                }
            }
            _ => return Err(identity::refusal(&identity::not_signed_in())),
        }
        let actor = match method {
            METHOD_CONNECTOR => format!("{method}:{user}/{}", p.sender_email),
            _ => format!("{method}:{user}"),
        };
        // `confirm` verdicts: the gateway cannot ask the person. What the client states as
        // confirmed passed already; an account whose client asks (the helper) counts as
        // confirmed; anything else is refused with how to confirm.
        if !p.unconfirmed.is_empty() {
            let codes: Vec<&str> = p.unconfirmed.iter().map(|r| r.code.as_str()).collect();
            let asks = account.is_some_and(|(u, _)| u.confirmed_by_client);
            if asks {
                info!(codes = ?codes, user = ?env.session.auth_user, "confirm verdict taken as confirmed by the account's client");
            } else {
                warn!(codes = ?codes, sender = %p.sender_email, "confirm verdict without a confirmation; refused");
                let rs: Vec<Reason> = p.unconfirmed.iter().map(|r| unconfirmed(r, &app.policy.subject)).collect();
                return Err(Reject::new(
                    550,
                    "5.7.1",
                    rs.iter().map(|r| format!("[{}] {}", r.code, r.message)).collect::<Vec<_>>().join(" "),
                    rs.iter().map(|r| format!("[{}] {}", r.code, r.message_en)).collect::<Vec<_>>().join(" "),
                ));
            }
        }
        let domain = p.sender_demail.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let provider = app.cfg.provider_for(domain).ok_or_else(|| {
            warn!(domain, "no provider configured for sender domain");
            Reject::new(
                451,
                "4.3.5",
                format!("[gateway.no_provider] Für die De-Mail-Domain {domain} ist kein Anbieter eingerichtet; die IT ist informiert."),
                format!("[gateway.no_provider] No provider is configured for the De-Mail domain {domain}; IT has been notified."),
            )
        })?;
        let mut meta_out = App::meta(
            Kind::Provider,
            &p.sender_demail,
            p.demail_rcpts.clone(),
            Some(p.private_id.clone()),
            Some(provider.name.clone()),
            Some(p.sender_email.clone()),
        );
        meta_out.message_id = p.message_id.clone();
        meta_out.cost_unit = p.cost_unit.clone();
        meta_out.options = p.options.ids().into_iter().map(str::to_string).collect();
        meta_out.actor = Some(actor.clone());
        let prov_name = provider.name.clone();
        let id = meta_out.id.clone();
        let mut metas = vec![meta_out];
        if !p.email_rcpts.is_empty() {
            // Allowed mixed addressing: internal recipients get their copy as e-mail.
            metas.push(App::meta(
                Kind::Internal,
                &p.sender_email,
                p.email_rcpts.clone(),
                Some(p.private_id.clone()),
                None,
                None,
            ));
        }
        let rcpt_count = p.demail_rcpts.len();
        let generated = p.private_id_generated;
        if let Backend::Postgres(pg) = &app.backend {
            // One transaction: reservation, message, recipients, billing, archive entry.
            let key = p.message_id.as_deref().map(|m| (m, p.sender_email.as_str()));
            let t = std::time::Instant::now();
            let held = cluster::accept_outbound(pg, &metas, &p.message, key).await.map_err(local_error)?;
            app.metrics.appended(t);
            if held != id {
                info!(id = %held, "duplicate submission (same Message-ID and sender); not queued again");
            } else {
                app.wake.notify_one();
                info!(id = %id, provider = %prov_name, rcpts = rcpt_count, generated_private_id = generated, node = %pg.node, "De-Mail queued");
            }
            return Ok(Accepted { id: held });
        }
        // The runner leaves these alone until they are recorded.
        let guard = Inflight::new(app, metas.iter().map(|m| m.id.clone()).collect());
        let accepting = Accepting::new(app, &id);
        // One acceptance per (Message-ID, sender): reserved before anything is spooled, so
        // a client retrying after a lost 250, or the same message submitted twice at
        // once, gets the first queue id instead of a second De-Mail.
        let sender_email = p.sender_email.clone();
        if let Some(mid) = &p.message_id {
            if let Some(earlier) = app.reserve(mid, &sender_email, &id).await? {
                info!(id = %earlier, "duplicate submission (same Message-ID and sender); not queued again");
                return Ok(Accepted { id: earlier });
            }
        }
        // The spool is the commit point; the record (archive, billing, duplicate mark)
        // follows. Should recording fail, the runner records before sending, and a
        // restart records everything spooled: no message leaves unrecorded.
        let app2 = app.clone();
        let mid = p.message_id.clone();
        blocking(move || {
            app2.spool_all(&metas, &p.message, mid.as_deref().map(|m| (m, sender_email.as_str())))?;
            if let Err(e) = app2.record(&metas[0], &p.message) {
                error!(id = %metas[0].id, error = %e, "spooled but not yet recorded; recorded before sending");
            }
            Ok(())
        })
        .await?;
        // Settled: duplicates may look, the runner may send.
        drop((accepting, guard));
        app.wake.notify_one();
        info!(id = %id, provider = %prov_name, rcpts = rcpt_count, generated_private_id = generated, "De-Mail queued");
        Ok(Accepted { id })
    }
}
/// The provider side: De-Mails, receipts and notifications arrive here.
pub struct Inbound(pub Arc<App>);

impl Handler for Inbound {
    fn rcpt_to(&self, _env: &Envelope, rcpt: &str) -> Result<(), Reject> {
        // Unmapped addresses go to the Sammelpostfach; refuse only when there is none,
        // so the provider returns the De-Mail instead of it vanishing here.
        match self.0.policy.demail_to_email(rcpt) {
            Some(_) => Ok(()),
            None => Err(Reject::new(
                550,
                "5.1.1",
                "Empfänger unbekannt und kein Sammelpostfach eingerichtet.",
                "Recipient unknown and no catch-all mailbox configured.",
            )),
        }
    }

    async fn deliver(&self, env: &Envelope, message: Vec<u8>) -> Result<Accepted, Reject> {
        let app = &self.0;
        let c = classify_raw(&message, &app.policy);
        let direction = match c.kind {
            MsgKind::Receipt => "receipt",
            MsgKind::Notification => "notification",
            MsgKind::Malware => "malware",
            MsgKind::Demail | MsgKind::Email => "in",
        };
        let kind = c.kind;
        let mut internal: Vec<String> = Vec::new();
        for r in &env.rcpt_to {
            if let Some(m) = app.policy.demail_to_email(r) {
                if !internal.contains(&m.address) {
                    internal.push(m.address);
                }
            }
        }
        let meta = App::meta(Kind::Internal, &env.mail_from, internal.clone(), c.private_id.clone(), None, None);
        let id = meta.id.clone();
        let app2 = app.clone();
        let rcpts = env.rcpt_to.clone();
        let from = env.mail_from.clone();
        let (pid, mid) = (c.private_id.clone(), c.message_id.clone());
        if let Backend::Postgres(pg) = &app.backend {
            let (app2, original) = (app.clone(), message.clone());
            let p2 = pid.clone();
            let sealed = blocking(move || app2.sealed(original, kind, p2.as_deref())).await?;
            let entry = NewEntry {
                direction,
                private_id: pid.as_deref(),
                message_id: mid.as_deref(),
                sender: &from,
                recipients: &rcpts,
                data: &message,
                actor: None,
            };
            let t = std::time::Instant::now();
            let e = pg.accept_inbound(&meta, &sealed, &entry).await.map_err(local_error)?;
            app.metrics.appended(t);
            app.wake.notify_one();
            info!(id = %id, kind = direction, linked_to = ?e.link, rcpts = internal.len(), node = %pg.node, "inbound queued");
            return Ok(Accepted { id });
        }
        let res = tokio::task::spawn_blocking(move || -> Result<Option<i64>, Error> {
            // The archive keeps the provider's exact bytes; the mailbox gets them sealed.
            let t = std::time::Instant::now();
            let e = app2.archive.append(&NewEntry {
                direction,
                private_id: pid.as_deref(),
                message_id: mid.as_deref(),
                sender: &from,
                recipients: &rcpts,
                data: &message,
                actor: None,
            })?;
            app2.metrics.appended(t);
            let message = app2.sealed(message, kind, pid.as_deref())?;
            app2.spool().put(&meta, &message).map_err(spool_unwritable)?;
            Ok(e.link)
        })
        .await;
        let link = res.map_err(task_failed).and_then(|r| r).map_err(local_error)?;
        app.wake.notify_one();
        info!(id = %id, kind = direction, linked_to = ?link, rcpts = internal.len(), "inbound queued");
        Ok(Accepted { id })
    }
}

impl App {
    /// What the mailbox gets: the provider's integrity signature checked and the result
    /// on top (`Authentication-Results`), foreign seals removed, ours on top (when configured).
    /// A receipt is held against the De-Mail its private-id names, as archived.
    fn sealed(&self, message: Vec<u8>, kind: MsgKind, private_id: Option<&str>) -> Result<Vec<u8>, Error> {
        let sent = match (kind, private_id) {
            (MsgKind::Receipt, Some(pid)) => self.archive.sent(pid)?,
            _ => None,
        };
        let checked = crate::border::check(
            message,
            &self.policy,
            &self.cfg.gateway.hostname,
            spool::now_millis(),
            sent.as_ref().map(|(seq, b)| (*seq, b.as_slice())),
        );
        if let Some(r) = checked.receipt {
            info!(result = r, sent = ?sent.as_ref().map(|(s, _)| s), "receipt held against the sent De-Mail");
        }
        if checked.removed > 0 {
            warn!(
                removed = checked.removed,
                "Authentication-Results under this gateway's name removed from an inbound message"
            );
        }
        info!(result = checked.result, "provider integrity checked at the border");
        let message = if self.cfg.inbound.keywords {
            // A receipt that does not confirm what was sent is a warning too.
            let result = if checked.receipt == Some("fail") { "fail" } else { checked.result };
            crate::border::keywords(checked.message, kind, result)
        } else {
            checked.message
        };
        Ok(match &self.seal {
            Some((kid, key)) => {
                let r = crate::seal::reseal(&message, kid, key)?;
                if r.removed > 0 {
                    warn!(removed = r.removed, "foreign gateway seal removed from an inbound message");
                }
                if !r.sealed {
                    warn!("inbound message too malformed to carry a seal that verifies; delivered unsealed");
                }
                r.message
            }
            None => crate::seal::strip(message),
        })
    }
}

/// See [`App::internal_outcome`].
pub(crate) struct InternalOutcome {
    pub done: Vec<String>,
    /// Settled by `wrapper`, the message for the Sammelpostfach.
    pub collected: Vec<String>,
    pub wrapper: Option<(Meta, Vec<u8>)>,
    /// What is left: temporary (retry) or permanent (held for an administrator).
    pub failure: Option<Failure>,
}

/// The recipients of a queued message not yet delivered or bounced.
fn pending_rcpts(all: &[String], done: &[String]) -> Vec<String> {
    all.iter().filter(|r| !done.contains(r)).cloned().collect()
}

fn backoff(cfg: &crate::config::Queue, attempts: u32) -> u64 {
    let exp = cfg.retry_initial_secs.saturating_mul(1u64 << attempts.min(20).saturating_sub(1));
    exp.min(cfg.retry_max_secs).max(1)
}

impl App {
    /// Deliver due messages until the process ends.
    pub async fn run_queue(self: Arc<Self>) {
        if let Backend::Postgres(pg) = &self.backend {
            return cluster::run(self.clone(), pg.clone()).await;
        }
        let interval = Duration::from_millis(self.cfg.queue.scan_interval_ms.max(10));
        let limit = Arc::new(tokio::sync::Semaphore::new(self.cfg.queue.concurrency.max(1)));
        loop {
            let now = spool::now();
            let list = {
                let app = self.clone();
                tokio::task::spawn_blocking(move || app.spool().list()).await
            };
            match list {
                Ok(Ok(list)) => {
                    for (meta, st) in list {
                        if st.held || st.next_try > now || self.is_stopping() {
                            continue;
                        }
                        {
                            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
                            if !inflight.insert(meta.id.clone()) {
                                continue;
                            }
                        }
                        let Ok(permit) = limit.clone().acquire_owned().await else {
                            return;
                        };
                        let app = self.clone();
                        tokio::spawn(async move {
                            let id = meta.id.clone();
                            app.attempt(meta, st).await;
                            app.inflight.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                            drop(permit);
                        });
                    }
                }
                Ok(Err(e)) => error!(error = %e, "cannot read spool"),
                Err(e) => error!(error = %e, "spool scan task failed"),
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    async fn attempt(self: &Arc<Self>, meta: Meta, mut st: State) {
        let id = meta.id.clone();
        let message = match self.spool().load(&id) {
            Ok((_, m)) => m,
            Err(e) => {
                // Dropped by an administrator meanwhile, or unreadable: leave it alone.
                warn!(id = %id, error = %e, "cannot load queued message");
                return;
            }
        };
        let helo = self.cfg.gateway.hostname.clone();
        if meta.kind == Kind::Provider {
            let recorded =
                self.archive.is_recorded(&id).and_then(|r| if r { Ok(()) } else { self.record(&meta, &message) });
            if let Err(e) = recorded {
                // A De-Mail must not leave without its archive record: wait.
                st.attempts += 1;
                st.last_error = Some(format!("archive: {e}"));
                st.next_try = spool::now() + backoff(&self.cfg.queue, st.attempts);
                let _ = self.spool().set_state(&id, &st);
                error!(id = %id, error = %e, "cannot record; not sending yet");
                return;
            }
        }
        let result: Result<(), Failure> = match meta.kind {
            Kind::Provider => {
                match meta.provider.as_deref().and_then(|n| self.cfg.providers.iter().find(|p| p.name == n)) {
                    Some(p) => {
                        let todo = pending_rcpts(&meta.rcpt_to, &st.done_rcpts);
                        if self.spool().was_sending(&id) {
                            // The provider may hold it already; the Message-ID is unchanged, so a
                            // provider that deduplicates (as the simulator does) stores it once.
                            warn!(id = %id, "previous attempt interrupted during DATA (crash or lost answer); sending again with the same Message-ID");
                        }
                        let spool = &self.spool();
                        match relay::to_provider(p, &helo, &meta.mail_from, &todo, &message, || spool.mark_sending(&id))
                            .await
                        {
                            Ok(d) => self.after_provider(&meta, &mut st, d, &message),
                            Err(f) => Err(f),
                        }
                    }
                    None => Err(Failure::Transient(format!(
                        "provider {:?} not configured / Anbieter nicht konfiguriert",
                        meta.provider
                    ))),
                }
            }
            Kind::Internal => {
                let todo = pending_rcpts(&meta.rcpt_to, &st.done_rcpts);
                let r = relay::to_internal(&self.cfg.inbound.deliver, &helo, &meta.mail_from, &todo, &message).await;
                let o = self.internal_outcome(&meta, &todo, r, &message);
                st.done_rcpts.extend(o.done);
                match o.wrapper {
                    Some((m, w)) => match self.spool().put(&m, &w) {
                        Ok(()) => {
                            self.collected(&meta.id, &o.collected, &m.id);
                            st.done_rcpts.extend(o.collected);
                            self.wake.notify_one();
                            o.failure.map_or(Ok(()), Err)
                        }
                        Err(e) => Err(Failure::Transient(format!("Sammelpostfach: {e}"))),
                    },
                    None => o.failure.map_or(Ok(()), Err),
                }
            }
        };
        match result {
            Ok(()) => {
                info!(id = %id, kind = ?meta.kind, "delivered");
                self.metrics.delivered(if meta.kind == Kind::Provider { "provider" } else { "internal" });
                if let Err(e) = self.spool().remove(&id) {
                    error!(id = %id, error = %e, "delivered but cannot remove from spool (may be sent again)");
                }
            }
            Err(f) => {
                st.attempts += 1;
                st.last_error = Some(f.text().chars().take(500).collect());
                let expired = spool::now().saturating_sub(meta.created) > self.cfg.queue.give_up_after_secs;
                let permanent = matches!(f, Failure::Permanent(_));
                self.metrics.failed(permanent);
                match (&f, meta.kind) {
                    (_, Kind::Provider) if permanent || expired => {
                        self.bounce(&meta, &st, f.text(), &message).await;
                    }
                    (Failure::Permanent(_), Kind::Internal) => {
                        // Never drop mail for the organisation: park it for an administrator.
                        st.held = true;
                        error!(id = %id, error = %f.text(), "internal delivery refused; message held (queue list / queue retry)");
                        let _ = self.spool().set_state(&id, &st);
                    }
                    _ => {
                        st.held = expired;
                        st.next_try = spool::now() + backoff(&self.cfg.queue, st.attempts);
                        warn!(id = %id, attempts = st.attempts, next_try = st.next_try, error = %f.text(), "delivery deferred");
                        if let Err(e) = self.spool().set_state(&id, &st) {
                            error!(id = %id, error = %e, "cannot update queue state");
                        }
                    }
                }
            }
        }
    }

    /// What internal delivery leaves to do: recipients the mail server refused for good, or
    /// only temporarily but for longer than `inbound.collect_after_secs`, go to the
    /// Sammelpostfach in one wrapper. Without a Sammelpostfach, or when it is the one
    /// refusing, they stay for an administrator (a permanent failure: held).
    pub(crate) fn internal_outcome(
        &self,
        meta: &Meta,
        todo: &[String],
        r: relay::Internal,
        message: &[u8],
    ) -> InternalOutcome {
        let mut refused = r.refused;
        let mut failure = None;
        if let Some(f) = r.failure {
            let age = spool::now().saturating_sub(meta.created);
            if age > self.cfg.inbound.collect_after_secs {
                let settled = |x: &String| r.done.contains(x) || refused.iter().any(|(y, _)| y == x);
                let rest: Vec<String> = todo.iter().filter(|x| !settled(x)).cloned().collect();
                let why = format!("{} (seit {} Min. / for {} min)", f.text(), age / 60, age / 60);
                refused.extend(rest.into_iter().map(|x| (x, why.clone())));
            } else {
                failure = Some(f);
            }
        }
        let catch_all = self.policy.mapping.catch_all.as_ref().map(|c| c.0.clone());
        let (collect, stay): (Vec<_>, Vec<_>) =
            refused.into_iter().partition(|(x, _)| catch_all.as_ref().is_some_and(|c| !c.eq_ignore_ascii_case(x)));
        if failure.is_none() && !stay.is_empty() {
            let why: Vec<String> = stay.iter().map(|(x, w)| format!("{x}: {w}")).collect();
            failure = Some(Failure::Permanent(why.join("; ")));
        }
        let wrapper = match (&catch_all, collect.is_empty()) {
            (Some(c), false) => {
                let w = crate::collect::wrap(&self.cfg.gateway.postmaster, c, &collect, message);
                Some((App::meta(Kind::Internal, "", vec![c.clone()], meta.private_id.clone(), None, None), w))
            }
            _ => None,
        };
        InternalOutcome { done: r.done, collected: collect.into_iter().map(|(x, _)| x).collect(), wrapper, failure }
    }

    /// Log and count a hand-over to the Sammelpostfach.
    pub(crate) fn collected(&self, id: &str, rcpts: &[String], wrapper: &str) {
        self.metrics.collected.inc();
        warn!(id, rcpts = ?rcpts, sammelpostfach = %wrapper, "internal recipient refused; De-Mail handed to the Sammelpostfach");
    }

    /// Warn once for each message queued longer than `queue.warn_after_secs`, and keep
    /// the `demail_overdue_messages` gauge current. Runs until the process ends.
    /// Sign a checkpoint of what the archive holds now with the [seal] key, and have it
    /// and any checkpoint still without one time-stamped. A failure is logged and retried
    /// at the next round: the chain itself is unharmed.
    pub async fn checkpoint(self: &Arc<Self>) {
        let Some((kid, key)) = self.seal.clone() else { return };
        let app = self.clone();
        let made = tokio::task::spawn_blocking(move || {
            let cp = app.archive.checkpoint(&kid, &key)?;
            let unstamped = match app.tsa {
                Some(_) => app.archive.unstamped(8)?,
                None => Vec::new(),
            };
            Ok::<_, Error>((cp, unstamped))
        })
        .await
        .map_err(task_failed)
        .and_then(|r| r);
        let unstamped = match made {
            Ok((cp, unstamped)) => {
                if let Some(cp) = cp {
                    info!(seq = cp.seq, from = cp.from, "archive checkpoint signed");
                }
                unstamped
            }
            Err(e) => {
                error!(error = %e, "archive checkpoint not made");
                self.metrics.checkpoint_failures.inc();
                return;
            }
        };
        let Some((client, anchors)) = &self.tsa else { return };
        for cp in unstamped {
            let stamped = match client.stamp(&cp.stamped_digest(), anchors).await {
                Ok(token) => {
                    let app = self.clone();
                    tokio::task::spawn_blocking(move || app.archive.set_timestamp(cp.seq, &token))
                        .await
                        .map_err(task_failed)
                        .and_then(|r| r)
                }
                Err(e) => Err(e),
            };
            match stamped {
                Ok(()) => info!(seq = cp.seq, "archive checkpoint time-stamped"),
                Err(e) => {
                    warn!(seq = cp.seq, error = %e, "archive checkpoint not time-stamped; tried again at the next one");
                    self.metrics.checkpoint_failures.inc();
                    return;
                }
            }
        }
    }

    /// A checkpoint every `archive.checkpoint_secs` (the first at start).
    pub async fn run_checkpoints(self: Arc<Self>) {
        let secs = self.cfg.archive.checkpoint_secs;
        if secs == 0 {
            return;
        }
        loop {
            self.checkpoint().await;
            tokio::time::sleep(Duration::from_secs(secs)).await;
        }
    }

    pub async fn watch_overdue(self: Arc<Self>) {
        let limit = self.cfg.queue.warn_after_secs;
        let every = Duration::from_secs((limit / 2).clamp(1, 60));
        let mut warned: HashSet<String> = HashSet::new();
        loop {
            let found: Result<Vec<(String, u64, bool)>, Error> = match &self.backend {
                Backend::Postgres(pg) => pg.overdue(limit).await,
                Backend::Files(_) => {
                    let app = self.clone();
                    tokio::task::spawn_blocking(move || {
                        let now = spool::now();
                        let list = app.spool().list().map_err(spool_unreadable)?;
                        Ok(list
                            .into_iter()
                            .filter(|(m, _)| now.saturating_sub(m.created) > limit)
                            .map(|(m, st)| (m.id, now.saturating_sub(m.created), st.held))
                            .collect())
                    })
                    .await
                    .map_err(task_failed)
                    .and_then(|r| r)
                }
            };
            match found {
                Ok(list) => {
                    self.metrics.overdue.set(list.len() as i64);
                    for (id, age, held) in &list {
                        if warned.insert(id.clone()) {
                            warn!(id = %id, age_secs = age, held, limit_secs = limit, "message still queued after queue.warn_after_secs (queue list)");
                        }
                    }
                    warned.retain(|id| list.iter().any(|(x, _, _)| x == id));
                }
                Err(e) => warn!(error = %e, "cannot look for overdue messages"),
            }
            tokio::time::sleep(every).await;
        }
    }

    /// The provider answered DATA: record who has it, report who was refused for good.
    /// `Ok` when every recipient is settled, else a transient failure (retry the rest).
    fn after_provider(&self, meta: &Meta, st: &mut State, d: relay::Delivered, message: &[u8]) -> Result<(), Failure> {
        st.done_rcpts.extend(d.accepted.iter().cloned());
        self.spool().clear_sending(&meta.id);
        if !d.refused.is_empty() {
            let delivered: Vec<String> =
                st.done_rcpts.iter().filter(|r| !st.bounced_rcpts.contains(r)).cloned().collect();
            if self.queue_dsn(meta, &d.refused, &delivered, message) {
                for (r, _) in &d.refused {
                    st.done_rcpts.push(r.clone());
                    st.bounced_rcpts.push(r.clone());
                }
                info!(id = %meta.id, refused = d.refused.len(), delivered = delivered.len(), "provider refused some recipients; sender informed about just those");
            }
        }
        if let Some((r, why)) = d.deferred.first() {
            return Err(Failure::Transient(format!("{r}: {why}")));
        }
        if meta.rcpt_to.iter().all(|r| st.done_rcpts.contains(r)) {
            Ok(())
        } else {
            Err(Failure::Transient("Unzustellbarkeitsbericht nicht eingereiht / DSN not queued".into()))
        }
    }

    /// Queue a DSN to the internal sender; false when it could not be spooled.
    fn queue_dsn(&self, meta: &Meta, failed: &[(String, String)], delivered: &[String], message: &[u8]) -> bool {
        let Some(to) = meta.bounce_to.clone().filter(|s| !s.is_empty()) else {
            return false;
        };
        let d = dsn::build(&self.cfg.gateway.postmaster, &self.cfg.gateway.hostname, &to, failed, delivered, message);
        let m = App::meta(Kind::Internal, "", vec![to], meta.private_id.clone(), None, None);
        match self.spool().put(&m, &d) {
            Ok(()) => {
                info!(id = %meta.id, dsn = %m.id, "bounce queued to sender");
                self.wake.notify_one();
                true
            }
            Err(e) => {
                error!(id = %meta.id, error = %e, "cannot queue DSN");
                false
            }
        }
    }

    /// Permanent failure or given up: bounce every recipient not yet settled.
    async fn bounce(self: &Arc<Self>, meta: &Meta, st: &State, reason: &str, message: &[u8]) {
        let id = &meta.id;
        let failed: Vec<(String, String)> =
            pending_rcpts(&meta.rcpt_to, &st.done_rcpts).into_iter().map(|r| (r, reason.to_string())).collect();
        let delivered: Vec<String> = st.done_rcpts.iter().filter(|r| !st.bounced_rcpts.contains(r)).cloned().collect();
        if self.queue_dsn(meta, &failed, &delivered, message) {
            if let Err(e) = self.spool().remove(id) {
                error!(id = %id, error = %e, "cannot remove bounced message");
            }
        } else {
            warn!(id = %id, "permanent failure and no DSN could be queued; message held");
            let st = State { held: true, last_error: Some(reason.to_string()), ..st.clone() };
            let _ = self.spool().set_state(id, &st);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_compare() {
        assert!(super::same("abc", "abc"));
        assert!(!super::same("abc", "abd"));
        assert!(!super::same("abc", "abcd"));
    }
}
