//! The gateway's TOML configuration (reference: docs/gateway.md).
//!
//! Secrets are never in this file: a field names where one lives (crate::secret):
//! a systemd credential (`*_credential`), a keyring entry (`*_keyring = "service/user"`)
//! or, for tests and demos, an environment variable (`*_env`).

pub use crate::secret::Secret;
use demail_core::{Error, Policy, Reason};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: General,
    pub tls: Option<TlsFiles>,
    pub outbound: Listener,
    pub inbound: Inbound,
    #[serde(default)]
    pub providers: Vec<Provider>,
    #[serde(default)]
    pub queue: Queue,
    /// Gateway seal on inbound messages (docs/gateway.md, core `seal`).
    #[serde(default)]
    pub seal: Option<SealCfg>,
    /// Who may sign in on the outbound listener and what they may send (docs/gateway.md).
    #[serde(default)]
    pub identity: crate::identity::IdentityConfig,
    /// The organisation's directory (Active Directory or LDAP).
    #[serde(default)]
    pub directory: Option<crate::identity::directory::DirectoryConfig>,
    /// De-Mail right by request or self-service, where IT has no directory group for it.
    #[serde(default)]
    pub access: crate::identity::AccessConfig,
    /// Where queue, archive and billing live: SQLite and files (one node), or PostgreSQL (a cluster).
    #[serde(default)]
    pub storage: Storage,
    /// Health and metrics over HTTP (`/healthz/live`, `/healthz/ready`, `/metrics`).
    #[serde(default)]
    pub health: Health,
    /// Signed checkpoints of the archive and their time stamps.
    #[serde(default)]
    pub archive: ArchiveCfg,
}

/// `[archive]`: checkpoints of the chain signed with the [seal] key, time-stamped by a TSA
/// (RFC 3161) where IT configures one (docs/gateway.md, "Archive").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveCfg {
    /// Seconds between checkpoints; one is also made at start and at a graceful stop. 0: none.
    pub checkpoint_secs: u64,
    /// `http(s)://…` of the time stamp authority.
    pub tsa_url: Option<String>,
    /// PEM CA certificate(s) the TSA's signing certificate chains to (required with tsa_url).
    pub tsa_ca: Option<PathBuf>,
    /// PEM CA of an https TSA's server certificate.
    pub tsa_tls_ca: Option<PathBuf>,
    /// TSA policy OID to request (optional).
    pub tsa_policy: Option<String>,
}

impl Default for ArchiveCfg {
    fn default() -> Self {
        ArchiveCfg { checkpoint_secs: 300, tsa_url: None, tsa_ca: None, tsa_tls_ca: None, tsa_policy: None }
    }
}

/// `[health]`: off unless `listen` is set (e.g. "10.0.0.5:9187" for the load balancer).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    pub listen: Option<String>,
    /// After SIGTERM: seconds the node still serves while `/healthz/ready` says 503, so the
    /// balancer moves new sessions elsewhere before the listeners close.
    pub drain_secs: u64,
}

impl Default for Health {
    fn default() -> Self {
        Health { listen: None, drain_secs: 5 }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The spool directory and the SQLite archive of one gateway (the default).
    #[default]
    Sqlite,
    /// One PostgreSQL database shared by several gateway nodes.
    Postgres,
}

/// `[storage]`: the backend and, for PostgreSQL, how to reach it (docs/gateway.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    pub backend: Backend,
    /// `postgresql://user@host:port/database?…` (no password in it: that is a secret).
    pub url: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub database: Option<String>,
    pub user: Option<String>,
    pub password_credential: Option<String>,
    pub password_keyring: Option<String>,
    /// Tests and demos only.
    pub password_env: Option<String>,
    /// CA (PEM) of the server certificate; always verified.
    pub ca: Option<PathBuf>,
    /// This node's name in leases and logs; default: the host name and process id.
    pub node: Option<String>,
    /// How long a claimed recipient stays with this node without a renewal.
    pub lease_secs: u64,
    /// Connections per node.
    pub pool_size: usize,
    /// Longest wait for a connection and for one statement.
    pub timeout_secs: u64,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            backend: Backend::Sqlite,
            url: None,
            host: None,
            port: None,
            database: None,
            user: None,
            password_credential: None,
            password_keyring: None,
            password_env: None,
            ca: None,
            node: None,
            lease_secs: 15,
            pool_size: 16,
            timeout_secs: 10,
        }
    }
}

impl Storage {
    pub fn password(&self) -> Secret {
        Secret {
            secret_env: self.password_env.clone(),
            secret_keyring: self.password_keyring.clone(),
            credential: self.password_credential.clone(),
        }
    }
}

/// `[seal]`: key id and where the Ed25519 private key lives (OS store only: a systemd
/// credential or the keyring; there is no file or environment variant).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealCfg {
    pub kid: String,
    /// Keyring entry `service/user` holding the base64 private key.
    #[serde(default)]
    pub key_keyring: Option<String>,
    /// systemd credential holding the base64 private key.
    #[serde(default)]
    pub key_credential: Option<String>,
}

impl SealCfg {
    pub fn key(&self) -> Secret {
        Secret {
            secret_keyring: self.key_keyring.clone(),
            credential: self.key_credential.clone(),
            ..Default::default()
        }
    }

    /// The private key (in the service). Errors name the place, never the value.
    pub fn read_key(&self) -> Result<[u8; 32], Error> {
        self.decode_key(self.key().read())
    }

    /// The private key as the administrator (`secret public`), also outside the service.
    pub fn read_key_admin(&self, store: &crate::secret::CredStore) -> Result<[u8; 32], Error> {
        self.decode_key(self.key().read_admin(store))
    }

    fn decode_key(&self, read: Result<String, Error>) -> Result<[u8; 32], Error> {
        use base64::Engine;
        let place = self.key().place();
        let b64 = read.map_err(|e| crate::secret::concerning("seal", e))?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| {
            Error::new(
                "seal.key_not_base64",
                format!("Siegel-Schlüssel {place}: kein Base64."),
                format!("seal key {place}: not base64."),
            )
        })?;
        bytes.try_into().map_err(|_| {
            Error::new(
                "seal.key_length",
                format!("Siegel-Schlüssel {place}: 32 Byte erwartet."),
                format!("seal key {place}: 32 bytes expected."),
            )
        })
    }

    /// Store a private key where the configuration says.
    pub fn write_key(&self, key: &[u8; 32], store: &crate::secret::CredStore) -> Result<String, Error> {
        use base64::Engine;
        self.key().store(&base64::engine::general_purpose::STANDARD.encode(key), store)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct General {
    /// Name in greetings, Received headers and DSNs.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// The spool and the SQLite archive (`[storage] backend = "sqlite"`, the default).
    #[serde(default)]
    pub spool_dir: PathBuf,
    #[serde(default)]
    pub archive_db: PathBuf,
    /// The core policy file (docs/policy.md).
    pub policy: PathBuf,
    /// Sender address of bounces (DSNs).
    pub postmaster: String,
}

fn default_hostname() -> String {
    "demail-gateway".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// STARTTLS, required before MAIL.
    Starttls,
    /// TLS from the first byte.
    Implicit,
    /// No TLS (only for a loopback LMTP target or tests).
    None,
}

/// The SMTP listener for the organisation (helpers, the internal mail server).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub listen: String,
    pub tls: TlsMode,
    #[serde(default = "yes")]
    pub require_auth: bool,
    /// Client networks (CIDR); empty allows all.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    /// Load balancers (CIDR) that open each connection with a PROXY protocol v2 header.
    #[serde(default)]
    pub proxy_protocol_from: Vec<String>,
    /// Bytes; the policy's `max_size` still applies to De-Mail.
    #[serde(default = "default_max")]
    pub max_message_size: usize,
    /// Application accounts (a Fachverfahren), each bound to its own exact sender
    /// addresses. People sign in through `[identity]`, never with one of these.
    #[serde(default)]
    pub users: Vec<User>,
    /// The organisation's mail server relaying for the people it authenticated.
    #[serde(default)]
    pub connectors: Vec<crate::identity::ConnectorConfig>,
    #[serde(default = "default_cmd_timeout")]
    pub command_timeout_secs: u64,
    /// `[outbound.limits]`
    #[serde(default)]
    pub limits: Limits,
}

impl Listener {
    /// Only clients on this host may connect (then a listener without TLS carries no
    /// password across a network).
    pub fn loopback_only(&self) -> bool {
        !self.allowed_clients.is_empty()
            && self.allowed_clients.iter().all(|n| parse_net(n).is_some_and(|n| n.addr().is_loopback()))
    }
}

/// `[outbound.limits]` / `[inbound.limits]`: what one client may hold of a listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Concurrent connections in all.
    pub max_connections: usize,
    /// Concurrent connections from one client address.
    pub max_connections_per_ip: usize,
    /// Longest idle wait before AUTH or MAIL (and for the TLS handshake).
    pub pre_auth_timeout_secs: u64,
    /// AUTH failures from one address before it is locked out.
    pub auth_failures_per_ip: u32,
    /// AUTH failures for one user name before it is locked out for addresses it has
    /// not logged in from during the last day.
    pub auth_failures_per_user: u32,
    /// First lock-out; doubles with each further failure up to `auth_lockout_max_secs`.
    pub auth_lockout_secs: u64,
    pub auth_lockout_max_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 200,
            max_connections_per_ip: 20,
            pre_auth_timeout_secs: 30,
            auth_failures_per_ip: 5,
            auth_failures_per_user: 10,
            auth_lockout_secs: 60,
            auth_lockout_max_secs: 3600,
        }
    }
}

impl Limits {
    /// The first key whose value cannot work (0, or a maximum below the first lock).
    fn invalid(&self) -> Option<&'static str> {
        let zero = [
            ("max_connections", self.max_connections as u64),
            ("max_connections_per_ip", self.max_connections_per_ip as u64),
            ("pre_auth_timeout_secs", self.pre_auth_timeout_secs),
            ("auth_failures_per_ip", self.auth_failures_per_ip.into()),
            ("auth_failures_per_user", self.auth_failures_per_user.into()),
            ("auth_lockout_secs", self.auth_lockout_secs),
        ];
        zero.iter()
            .find(|(_, v)| *v == 0)
            .map(|(k, _)| *k)
            .or((self.auth_lockout_max_secs < self.auth_lockout_secs).then_some("auth_lockout_max_secs"))
    }
}

fn yes() -> bool {
    true
}
fn default_max() -> usize {
    25 * 1024 * 1024
}
fn default_cmd_timeout() -> u64 {
    300
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// Environment variable with the password (tests, demos).
    #[serde(default)]
    pub password_env: Option<String>,
    /// Keyring entry `service/user` with the password.
    #[serde(default)]
    pub password_keyring: Option<String>,
    /// systemd credential with the password.
    #[serde(default)]
    pub password_credential: Option<String>,
    /// The exact From addresses this account may send as.
    #[serde(default)]
    pub senders: Vec<String>,
    /// No longer allowed (an account for a whole group is a shared account); kept so
    /// that an old configuration gets a clear refusal instead of "unknown field".
    #[serde(default)]
    pub groups: Vec<String>,
    /// The client behind this account (the helper) runs the send check and asks the
    /// person before it submits: its `confirm` verdicts count as confirmed.
    #[serde(default)]
    pub confirmed_by_client: bool,
}

impl User {
    /// An account that may send for more than its own exact addresses (none given, a
    /// `*@domain` pattern, a group): a secret shared by everyone it covers. Refused.
    pub fn shared(&self) -> bool {
        self.senders.is_empty() || !self.groups.is_empty() || self.senders.iter().any(|s| s.contains('*'))
    }

    /// May this account send with `from` (a normalised address) as the header From?
    pub fn may_send_as(&self, from: &str) -> bool {
        !self.shared() && self.senders.iter().any(|s| s.trim().eq_ignore_ascii_case(from))
    }
}

impl User {
    pub fn password(&self) -> Secret {
        Secret {
            secret_env: self.password_env.clone(),
            secret_keyring: self.password_keyring.clone(),
            credential: self.password_credential.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inbound {
    pub listen: String,
    pub tls: TlsMode,
    /// When set, the provider must present a client certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    /// Load balancers (CIDR) that open each connection with a PROXY protocol v2 header.
    #[serde(default)]
    pub proxy_protocol_from: Vec<String>,
    #[serde(default = "default_max")]
    pub max_message_size: usize,
    /// Where inbound De-Mail (and DSNs) go: the internal mail server.
    pub deliver: Target,
    /// `[inbound.limits]`
    #[serde(default)]
    pub limits: Limits,
    /// A temporary refusal by the internal mail server is retried this long; then the
    /// De-Mail goes to the Sammelpostfach (a permanent refusal goes there at once).
    #[serde(default = "default_collect_after")]
    pub collect_after_secs: u64,
    /// Write a `Keywords` field (Exchange: categories) naming the kind and a warning.
    #[serde(default)]
    pub keywords: bool,
}

fn default_collect_after() -> u64 {
    3600
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Lmtp,
    Smtp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// CA for verifying the target when TLS is used.
    pub ca: Option<PathBuf>,
}

/// A De-Mail provider (DMDA) the gateway submits to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub name: String,
    /// The sender De-Mail domains this provider serves.
    pub domains: Vec<String>,
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// Name expected in the provider's certificate; defaults to `host`.
    pub tls_name: Option<String>,
    /// CA that signed the provider's certificate (always verified).
    pub ca: PathBuf,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub username: String,
    /// Environment variable with the token secret (tests, demos).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Keyring entry `service/user` with the token secret.
    #[serde(default)]
    pub secret_keyring: Option<String>,
    /// systemd credential with the token secret (the system service).
    #[serde(default)]
    pub secret_credential: Option<String>,
    /// The second factor of the "hoch" login: a TOTP secret (base32), in the same places
    /// as the token secret; its current code follows the secret (relay.rs).
    #[serde(default)]
    pub totp_secret_env: Option<String>,
    #[serde(default)]
    pub totp_secret_keyring: Option<String>,
    #[serde(default)]
    pub totp_secret_credential: Option<String>,
}

impl Provider {
    pub fn secret(&self) -> Secret {
        Secret {
            secret_env: self.secret_env.clone(),
            secret_keyring: self.secret_keyring.clone(),
            credential: self.secret_credential.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Queue {
    pub retry_initial_secs: u64,
    pub retry_max_secs: u64,
    /// After this long a message counts as undeliverable and bounces.
    pub give_up_after_secs: u64,
    /// How often the queue runner looks for due messages.
    pub scan_interval_ms: u64,
    pub concurrency: usize,
    /// A message still queued after this long gets a warning in the log (once) and counts
    /// in the `demail_overdue_messages` metric.
    pub warn_after_secs: u64,
    /// After SIGTERM (and `health.drain_secs`): how long deliveries in flight may finish.
    /// What is still running then is released (cluster: its leases), not waited for.
    pub stop_grace_secs: u64,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            retry_initial_secs: 60,
            retry_max_secs: 3600,
            give_up_after_secs: 5 * 86_400,
            scan_interval_ms: 1000,
            concurrency: 8,
            warn_after_secs: 3600,
            stop_grace_secs: 20,
        }
    }
}

/// A config error with file, line and field. Its texts name line and field too, as the
/// core's policy errors do.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub field: Option<String>,
    pub reason: Reason,
}

impl ConfigError {
    fn at(file: &str, line: Option<usize>, field: Option<String>, mut reason: Reason) -> ConfigError {
        let (loc_de, loc_en) = match (line, &field) {
            (Some(l), Some(k)) => (format!(" (Zeile {l}, Feld „{k}“)"), format!(" (line {l}, field \"{k}\")")),
            (Some(l), None) => (format!(" (Zeile {l})"), format!(" (line {l})")),
            (None, Some(k)) => (format!(" (Feld „{k}“)"), format!(" (field \"{k}\")")),
            _ => (String::new(), String::new()),
        };
        reason.message.push_str(&loc_de);
        reason.message_en.push_str(&loc_en);
        ConfigError { file: file.to_string(), line, field, reason }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (file, r) = (&self.file, &self.reason);
        write!(f, "{file}: {r}\n{file}: [{}] {}", r.code, r.message_en)
    }
}

fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())].iter().filter(|b| **b == b'\n').count() + 1
}

/// The first line that mentions `key` (for semantic errors found after parsing).
fn line_of_key(src: &str, key: &str) -> Option<usize> {
    let last = key.rsplit('.').next().unwrap_or(key);
    src.lines().position(|l| l.trim_start().starts_with(last)).map(|i| i + 1)
}

impl Config {
    pub fn load(path: &Path) -> Result<(Config, Policy), ConfigError> {
        let file = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| {
            let r =
                Reason::new("config.unreadable", format!("Datei nicht lesbar: {e}"), format!("cannot read file: {e}"));
            ConfigError::at(&file, None, None, r)
        })?;
        let cfg: Config = toml::from_str(&src).map_err(|e| {
            let line = e.span().map(|s| line_of(&src, s.start));
            let field = line
                .and_then(|l| src.lines().nth(l - 1))
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim().to_string());
            let r = Reason::new(
                "config.invalid",
                format!("Ungültige Konfiguration: {}", e.message()),
                format!("invalid configuration: {}", e.message()),
            );
            ConfigError::at(&file, line, field, r)
        })?;
        let err = |field: &str, reason: Reason| {
            ConfigError::at(&file, line_of_key(&src, field), Some(field.to_string()), reason)
        };
        // Relative paths are relative to the config file.
        let base = path.parent().unwrap_or(Path::new("."));
        let cfg = cfg.resolve(base);
        for (field, net) in cfg
            .outbound
            .allowed_clients
            .iter()
            .map(|n| ("outbound.allowed_clients", n))
            .chain(cfg.inbound.allowed_clients.iter().map(|n| ("inbound.allowed_clients", n)))
            .chain(cfg.outbound.proxy_protocol_from.iter().map(|n| ("outbound.proxy_protocol_from", n)))
            .chain(cfg.inbound.proxy_protocol_from.iter().map(|n| ("inbound.proxy_protocol_from", n)))
        {
            if parse_net(net).is_none() {
                return Err(err(
                    field,
                    Reason::new(
                        "config.network_invalid",
                        format!("„{net}“ ist kein Netz (z. B. 10.0.0.0/8)"),
                        format!("\"{net}\" is not a network (e.g. 10.0.0.0/8)"),
                    ),
                ));
            }
        }
        for (table, l) in [("outbound.limits", &cfg.outbound.limits), ("inbound.limits", &cfg.inbound.limits)] {
            if let Some(key) = l.invalid() {
                return Err(err(
                    key,
                    Reason::new(
                        "config.limit_invalid",
                        format!("{table}.{key}: muss größer als 0 sein (auth_lockout_max_secs mindestens auth_lockout_secs)"),
                        format!("{table}.{key}: must be above 0 (auth_lockout_max_secs at least auth_lockout_secs)"),
                    ),
                ));
            }
        }
        let needs_tls = cfg.outbound.tls != TlsMode::None || cfg.inbound.tls != TlsMode::None;
        if needs_tls {
            match &cfg.tls {
                None => return Err(err("tls", tls_missing())),
                Some(t) => {
                    for (f, p) in [("cert", &t.cert), ("key", &t.key)] {
                        if !p.is_file() {
                            return Err(err(
                                f,
                                Reason::new(
                                    "config.file_missing",
                                    format!("Datei {} fehlt", p.display()),
                                    format!("file {} is missing", p.display()),
                                ),
                            ));
                        }
                    }
                }
            }
        }
        for u in &cfg.outbound.users {
            check_place(&u.password(), "password", &format!("Benutzer {}", u.name), &format!("user {}", u.name))
                .map_err(|(f, r)| err(&f, r))?;
        }
        identity_rules(&cfg).map_err(|(f, r)| err(f, r))?;
        if cfg.archive.tsa_url.is_some() && cfg.archive.tsa_ca.is_none() {
            // A token nobody can check proves nothing.
            return Err(err(
                "tsa_url",
                Reason::new(
                    "config.tsa_ca_missing",
                    "archive.tsa_url braucht archive.tsa_ca (die CA des Zeitstempeldienstes), sonst ist kein Zeitstempel prüfbar",
                    "archive.tsa_url needs archive.tsa_ca (the time stamp authority's CA); otherwise no time stamp can be checked",
                ),
            ));
        }
        if cfg.storage.backend == Backend::Sqlite {
            for (f, p) in [("spool_dir", &cfg.gateway.spool_dir), ("archive_db", &cfg.gateway.archive_db)] {
                if p.as_os_str().is_empty() {
                    return Err(err(
                        f,
                        Reason::new(
                            "config.field_missing",
                            format!("gateway.{f} fehlt (nötig mit [storage] backend = \"sqlite\")"),
                            format!("gateway.{f} is missing (needed with [storage] backend = \"sqlite\")"),
                        ),
                    ));
                }
            }
        }
        if cfg.storage.backend == Backend::Postgres {
            crate::pg::check_config(&cfg.storage).map_err(|(f, r)| err(f, r))?;
            check_place(&cfg.storage.password(), "password", "storage", "storage").map_err(|(f, r)| err(&f, r))?;
        }
        if let Some(d) = &cfg.directory {
            d.validate().map_err(|e| err("directory", e.reason))?;
            if !d.ca.is_file() {
                return Err(err(
                    "ca",
                    Reason::new(
                        "config.file_missing",
                        format!("directory: CA-Datei {} fehlt", d.ca.display()),
                        format!("directory: CA file {} is missing", d.ca.display()),
                    ),
                ));
            }
            check_place(&d.bind_password(), "bind_password", "directory", "directory").map_err(|(f, r)| err(&f, r))?;
        }
        for p in &cfg.providers {
            if !p.ca.is_file() {
                return Err(err(
                    "ca",
                    Reason::new(
                        "config.file_missing",
                        format!("Anbieter {}: CA-Datei {} fehlt", p.name, p.ca.display()),
                        format!("provider {}: CA file {} is missing", p.name, p.ca.display()),
                    ),
                ));
            }
            if p.client_cert.is_some() != p.client_key.is_some() {
                return Err(err(
                    "client_cert",
                    Reason::new(
                        "config.client_cert_pair",
                        format!("Anbieter {}: client_cert und client_key nur zusammen", p.name),
                        format!("provider {}: client_cert and client_key go together", p.name),
                    ),
                ));
            }
            check_place(&p.secret(), "secret", &format!("Anbieter {}", p.name), &format!("provider {}", p.name))
                .map_err(|(f, r)| err(&f, r))?;
        }
        let policy_src = std::fs::read_to_string(&cfg.gateway.policy).map_err(|e| {
            err(
                "policy",
                Reason::new(
                    "config.policy_unreadable",
                    format!("Richtlinie {} nicht lesbar: {e}", cfg.gateway.policy.display()),
                    format!("cannot read policy {}: {e}", cfg.gateway.policy.display()),
                ),
            )
        })?;
        // The policy's own error, located in the policy file.
        let policy = Policy::parse(&policy_src).map_err(|e| ConfigError {
            file: cfg.gateway.policy.display().to_string(),
            line: e.line,
            field: e.field,
            reason: e.reason,
        })?;
        if let Some(sc) = &cfg.seal {
            let ok = !sc.kid.is_empty()
                && sc.kid.len() <= 64
                && sc.kid.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok {
                return Err(err(
                    "kid",
                    Reason::new(
                        "config.seal_kid",
                        "seal.kid: nur A–Z, a–z, 0–9, „.“, „_“, „-“ (1–64 Zeichen)",
                        "seal.kid: only A-Z, a-z, 0-9, '.', '_', '-' (1-64 characters)",
                    ),
                ));
            }
            check_place(&sc.key(), "key", "seal", "seal").map_err(|(f, r)| err(&f, r))?;
        }
        for u in &cfg.outbound.users {
            for p in &u.senders {
                if demail_core::address::normalize_addr_spec(p).is_err() {
                    return Err(err(
                        "senders",
                        Reason::new(
                            "config.sender_address",
                            format!("Benutzer {}: „{p}“ ist keine Adresse", u.name),
                            format!("user {}: \"{p}\" is not an address", u.name),
                        ),
                    ));
                }
            }
        }
        Ok((cfg, policy))
    }

    fn resolve(mut self, base: &Path) -> Config {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.gateway.spool_dir);
        fix(&mut self.gateway.archive_db);
        fix(&mut self.gateway.policy);
        if let Some(c) = &mut self.storage.ca {
            fix(c);
        }
        for c in [&mut self.archive.tsa_ca, &mut self.archive.tsa_tls_ca].into_iter().flatten() {
            fix(c);
        }
        if let Some(t) = &mut self.tls {
            fix(&mut t.cert);
            fix(&mut t.key);
        }
        if let Some(k) = &mut self.identity.keytab {
            fix(k);
        }
        if let Some(d) = &mut self.directory {
            fix(&mut d.ca);
        }
        if let Some(c) = &mut self.inbound.client_ca {
            fix(c);
        }
        if let Some(c) = &mut self.inbound.deliver.ca {
            fix(c);
        }
        for p in &mut self.providers {
            fix(&mut p.ca);
            if let Some(c) = &mut p.client_cert {
                fix(c);
            }
            if let Some(c) = &mut p.client_key {
                fix(c);
            }
        }
        self
    }

    /// The provider serving a sender De-Mail domain.
    pub fn provider_for(&self, demail_domain: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.domains.iter().any(|d| d.eq_ignore_ascii_case(demail_domain)))
    }
}

/// Exactly one place for a secret, and a well-formed one. `prefix` is the field stem
/// (`password`, `secret`, `key`); errors name the field.
fn check_place(s: &Secret, prefix: &str, who_de: &str, who_en: &str) -> Result<(), (String, Reason)> {
    let fields = format!("{prefix}_credential / {prefix}_keyring / {prefix}_env");
    if s.sources() != 1 {
        return Err((
            format!("{prefix}_credential"),
            Reason::new(
                "config.secret_place",
                format!("{who_de}: genau eines von {fields} angeben"),
                format!("{who_en}: give exactly one of {fields}"),
            ),
        ));
    }
    if let Some(k) = &s.secret_keyring {
        if !k.contains('/') {
            return Err((
                format!("{prefix}_keyring"),
                Reason::new(
                    "config.keyring_entry",
                    format!("{who_de}: {prefix}_keyring erwartet service/user"),
                    format!("{who_en}: {prefix}_keyring expects service/user"),
                ),
            ));
        }
    }
    if let Some(c) = &s.credential {
        if !crate::secret::valid_credential_name(c) {
            return Err((
                format!("{prefix}_credential"),
                Reason::new(
                    "config.credential_name",
                    format!("{who_de}: {prefix}_credential „{c}“: nur A–Z, a–z, 0–9, „.“, „_“, „-“ (1–64 Zeichen)"),
                    format!(
                        "{who_en}: {prefix}_credential \"{c}\": only A-Z, a-z, 0-9, '.', '_', '-' (1-64 characters)"
                    ),
                ),
            ));
        }
    }
    Ok(())
}

/// Both listeners with TLS need `[tls]`.
pub fn tls_missing() -> Reason {
    Reason::new(
        "config.tls_missing",
        "Abschnitt [tls] mit cert und key fehlt",
        "section [tls] with cert and key is missing",
    )
}

/// `10.0.0.0/8` or a single address.
pub fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>().ok().or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

impl Config {
    /// The who-sends rules alone (no files touched): for templates and `config check`.
    pub fn check_identity(&self) -> Result<(), Reason> {
        identity_rules(self).map_err(|(_, r)| r)
    }
}

/// Who may sign in: refuse what would let anyone send in someone else's name
/// (docs/gateway.md, "Wer sendet"). The field and the reason of the first problem.
fn identity_rules(cfg: &Config) -> Result<(), (&'static str, Reason)> {
    let o = &cfg.outbound;
    if let Some(u) = o.users.iter().find(|u| u.shared()) {
        return Err((
            "users",
            Reason::new(
                "identity.shared_account",
                format!(
                    "Das Konto „{}“ dürfte für mehrere oder alle Absender senden (keine, „*@…“- oder Gruppen-Absender): ein Passwort, das sich Arbeitsplätze teilen. Personen melden sich über [identity] an (Kerberos oder Verzeichnis-Passwort); der Mailserver der Organisation als [[outbound.connectors]] (feste Adressen, Client-Zertifikat); ein Konto hier nur für ein Fachverfahren mit seinen eigenen, genau genannten Absendern.",
                    u.name
                ),
                format!(
                    "The account \"{}\" could send for several or all senders (none, \"*@…\" or group senders): a password shared between desks. People sign in through [identity] (Kerberos or directory password); the organisation's mail server as [[outbound.connectors]] (fixed addresses, client certificate); an account here only for an application with its own, exactly named senders.",
                    u.name
                ),
            ),
        ));
    }
    if !o.require_auth {
        return Err((
            "require_auth",
            Reason::new(
                "identity.unauthenticated_listener",
                "outbound.require_auth = false: Ohne Anmeldung wüsste das Gateway nicht, wer eine De-Mail sendet. Der Mailserver der Organisation meldet sich als [[outbound.connectors]] an (feste Adressen, Client-Zertifikat).",
                "outbound.require_auth = false: without sign-in the gateway would not know who sends a De-Mail. The organisation's mail server signs in as [[outbound.connectors]] (fixed addresses, client certificate).",
            ),
        ));
    }
    let id = &cfg.identity;
    if (id.kerberos || id.ldap_password) && cfg.directory.is_none() {
        return Err((
            "identity",
            Reason::new(
                "identity.no_directory",
                "[identity] kerberos/ldap_password braucht [directory]: die Rechte einer Person stehen im Verzeichnis.",
                "[identity] kerberos/ldap_password needs [directory]: a person's rights are in the directory.",
            ),
        ));
    }
    if o.tls == TlsMode::None && !o.loopback_only() {
        return Err((
            "tls",
            Reason::new(
                "identity.password_without_tls",
                "outbound.tls = \"none\" nur, wenn allowed_clients ausschließlich Loopback nennt (127.0.0.0/8, ::1): Passwörter gehen nie unverschlüsselt über das Netz.",
                "outbound.tls = \"none\" only when allowed_clients names loopback alone (127.0.0.0/8, ::1): passwords never cross the network unencrypted.",
            ),
        ));
    }
    if !id.kerberos && !id.ldap_password && o.users.is_empty() && o.connectors.is_empty() {
        return Err((
            "identity",
            Reason::new(
                "identity.no_sign_in",
                "Niemand kann sich am Gateway anmelden: [identity] kerberos oder ldap_password einschalten (oder einen Connector bzw. ein Fachverfahren-Konto einrichten).",
                "Nobody can sign in at the gateway: turn on [identity] kerberos or ldap_password (or set up a connector or an application account).",
            ),
        ));
    }
    if let Err(e) = id.rules() {
        return Err(("limited_options", e.reason));
    }
    for c in &o.connectors {
        if c.sources.is_empty() || c.sources.iter().any(|n| parse_net(n).is_none()) {
            return Err((
                "sources",
                Reason::new(
                    "identity.connector_sources",
                    format!("Connector {}: sources muss feste Netze nennen (z. B. 10.0.0.5/32).", c.name),
                    format!("connector {}: sources must name fixed networks (e.g. 10.0.0.5/32).", c.name),
                ),
            ));
        }
        if c.certificate_sha256.is_empty()
            || c.certificate_sha256.iter().any(|f| crate::identity::fingerprint(f).is_none())
        {
            return Err((
                "certificate_sha256",
                Reason::new(
                    "identity.connector_certificate",
                    format!(
                        "Connector {}: certificate_sha256 muss SHA-256-Fingerabdrücke der Client-Zertifikate nennen.",
                        c.name
                    ),
                    format!(
                        "connector {}: certificate_sha256 must name SHA-256 fingerprints of the client certificates.",
                        c.name
                    ),
                ),
            ));
        }
        if o.tls == TlsMode::None {
            return Err((
                "connectors",
                Reason::new(
                    "identity.connector_without_tls",
                    "Ein Connector meldet sich mit seinem Client-Zertifikat an: der Ausgangs-Listener braucht TLS.",
                    "A connector signs in with its client certificate: the outbound listener needs TLS.",
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let c: Config = toml::from_str(include_str!("../../examples/gateway.toml")).unwrap();
        assert_eq!(c.providers[0].secret().credential.as_deref(), Some("demail-gateway.provider-dmda"));
        assert_eq!(c.outbound.users.len(), 1);
        assert!(!c.outbound.users[0].shared());
        assert!(c.identity.kerberos && c.identity.ldap_password);
        assert_eq!(c.outbound.connectors[0].sources.len(), 2);
        assert!(crate::identity::fingerprint(&c.outbound.connectors[0].certificate_sha256[0]).is_some());
        assert!(c.identity.rules().is_ok());
        assert_eq!(c.directory.as_ref().map(|d| d.cache_ttl_secs), Some(60));
        assert_eq!(c.seal.as_ref().map(|s| s.kid.as_str()), Some("musterstadt-2026"));
        assert!(c.provider_for("MusterStadt.de-mail.de").is_some());
    }
}
