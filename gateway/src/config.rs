//! The gateway's TOML configuration (reference: docs/gateway.md).
//!
//! Secrets are never in this file: a field names an environment variable
//! (`*_env`, tests and demos) or a keyring entry (`*_keyring = "service/user"`).

use demail_core::Policy;
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
}

/// `[seal]`: key id and where the Ed25519 private key lives (OS keyring only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealCfg {
    pub kid: String,
    /// Keyring entry `service/user` holding the base64 private key.
    pub key_keyring: String,
}

impl SealCfg {
    fn entry(&self) -> Result<keyring::Entry, String> {
        let (service, user) = self.key_keyring.split_once('/').ok_or_else(|| {
            format!(
                "seal.key_keyring „{}“: erwartet service/user / expected service/user",
                self.key_keyring
            )
        })?;
        keyring::Entry::new(service, user).map_err(|e| format!("keyring {}: {e}", self.key_keyring))
    }

    /// The private key from the keyring. Errors name the entry, never the value.
    pub fn read_key(&self) -> Result<[u8; 32], String> {
        use base64::Engine;
        let b64 = self.entry()?.get_password().map_err(|e| {
            format!("Siegel-Schlüssel im Schlüsselbund {} nicht lesbar / seal key in keyring {} not readable: {e}", self.key_keyring, self.key_keyring)
        })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| {
                format!(
                    "Siegel-Schlüssel {}: kein Base64 / seal key {}: not base64",
                    self.key_keyring, self.key_keyring
                )
            })?;
        bytes.try_into().map_err(|_| {
            format!(
                "Siegel-Schlüssel {}: 32 Byte erwartet / seal key {}: 32 bytes expected",
                self.key_keyring, self.key_keyring
            )
        })
    }

    /// Store a private key in the keyring.
    pub fn write_key(&self, key: &[u8; 32]) -> Result<(), String> {
        use base64::Engine;
        self.entry()?
            .set_password(&base64::engine::general_purpose::STANDARD.encode(key))
            .map_err(|e| format!("keyring {}: {e}", self.key_keyring))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct General {
    /// Name in greetings, Received headers and DSNs.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    pub spool_dir: PathBuf,
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
    /// Bytes; the policy's `max_size` still applies to De-Mail.
    #[serde(default = "default_max")]
    pub max_message_size: usize,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default = "default_cmd_timeout")]
    pub command_timeout_secs: u64,
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
    /// The From addresses this account may send as: `user@domain` or `*@domain`.
    #[serde(default)]
    pub senders: Vec<String>,
    /// Policy groups (`[[authorization.groups]]` names) whose members it may send as.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl User {
    /// Neither senders nor groups: the account may send for every sender of the
    /// organisation (the internal mail server); the policy still decides who may send De-Mail.
    pub fn unbound(&self) -> bool {
        self.senders.is_empty() && self.groups.is_empty()
    }

    /// May this account send with `from` (a normalised address) as the header From?
    pub fn may_send_as(&self, from: &str, policy: &Policy) -> bool {
        if self.unbound() {
            return true;
        }
        let pattern = |p: &str| demail_core::policy::MemberPattern(p.trim().to_ascii_lowercase());
        self.senders.iter().any(|p| pattern(p).matches(from))
            || policy
                .authorization
                .groups
                .iter()
                .any(|g| self.groups.contains(&g.name) && g.members.iter().any(|m| m.matches(from)))
    }
}

impl User {
    pub fn password(&self) -> Secret {
        Secret {
            secret_env: self.password_env.clone(),
            secret_keyring: self.password_keyring.clone(),
        }
    }
}

/// Where a secret lives: an environment variable or a keyring entry.
#[derive(Debug, Clone, Default)]
pub struct Secret {
    pub secret_env: Option<String>,
    /// Keyring entry `service/user` (Linux kernel keyring).
    pub secret_keyring: Option<String>,
}

impl Secret {
    /// Read the secret. The error names where it was looked for, never the value.
    pub fn read(&self) -> Result<String, String> {
        if let Some(var) = &self.secret_env {
            return std::env::var(var).map_err(|_| {
                format!("Umgebungsvariable {var} fehlt / environment variable {var} is not set")
            });
        }
        if let Some(entry) = &self.secret_keyring {
            let (service, user) = entry
                .split_once('/')
                .ok_or_else(|| format!("Schlüsselbund-Eintrag „{entry}“: erwartet service/user / keyring entry \"{entry}\": expected service/user"))?;
            let e =
                keyring::Entry::new(service, user).map_err(|e| format!("keyring {entry}: {e}"))?;
            return e
                .get_password()
                .map_err(|e| format!("keyring {entry}: {e}"));
        }
        Err("kein Geheimnis konfiguriert (secret_env oder secret_keyring) / no secret configured (secret_env or secret_keyring)".into())
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
    #[serde(default = "default_max")]
    pub max_message_size: usize,
    /// Where inbound De-Mail (and DSNs) go: the internal mail server.
    pub deliver: Target,
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
}

impl Provider {
    pub fn secret(&self) -> Secret {
        Secret {
            secret_env: self.secret_env.clone(),
            secret_keyring: self.secret_keyring.clone(),
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
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            retry_initial_secs: 60,
            retry_max_secs: 3600,
            give_up_after_secs: 5 * 86_400,
            scan_interval_ms: 1000,
            concurrency: 8,
        }
    }
}

/// A config error with file, line and field.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub field: Option<String>,
    pub de: String,
    pub en: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let loc_de = match (self.line, &self.field) {
            (Some(l), Some(k)) => format!(" (Zeile {l}, Feld „{k}“)"),
            (Some(l), None) => format!(" (Zeile {l})"),
            (None, Some(k)) => format!(" (Feld „{k}“)"),
            _ => String::new(),
        };
        let loc_en = match (self.line, &self.field) {
            (Some(l), Some(k)) => format!(" (line {l}, field \"{k}\")"),
            (Some(l), None) => format!(" (line {l})"),
            (None, Some(k)) => format!(" (field \"{k}\")"),
            _ => String::new(),
        };
        write!(
            f,
            "{}: {}{loc_de}\n{}: {}{loc_en}",
            self.file, self.de, self.file, self.en
        )
    }
}

fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The first line that mentions `key` (for semantic errors found after parsing).
fn line_of_key(src: &str, key: &str) -> Option<usize> {
    let last = key.rsplit('.').next().unwrap_or(key);
    src.lines()
        .position(|l| l.trim_start().starts_with(last))
        .map(|i| i + 1)
}

impl Config {
    pub fn load(path: &Path) -> Result<(Config, Policy), ConfigError> {
        let file = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: None,
            field: None,
            de: format!("Datei nicht lesbar: {e}"),
            en: format!("cannot read file: {e}"),
        })?;
        let cfg: Config = toml::from_str(&src).map_err(|e| {
            let line = e.span().map(|s| line_of(&src, s.start));
            let field = line
                .and_then(|l| src.lines().nth(l - 1))
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim().to_string());
            ConfigError {
                file: file.clone(),
                line,
                field,
                de: format!("Ungültige Konfiguration: {}", e.message()),
                en: format!("invalid configuration: {}", e.message()),
            }
        })?;
        let err = |field: &str, de: String, en: String| ConfigError {
            file: file.clone(),
            line: line_of_key(&src, field),
            field: Some(field.to_string()),
            de,
            en,
        };
        // Relative paths are relative to the config file.
        let base = path.parent().unwrap_or(Path::new("."));
        let cfg = cfg.resolve(base);
        for (field, net) in cfg
            .outbound
            .allowed_clients
            .iter()
            .map(|n| ("outbound.allowed_clients", n))
            .chain(
                cfg.inbound
                    .allowed_clients
                    .iter()
                    .map(|n| ("inbound.allowed_clients", n)),
            )
        {
            if parse_net(net).is_none() {
                return Err(err(
                    field,
                    format!("„{net}“ ist kein Netz (z. B. 10.0.0.0/8)"),
                    format!("\"{net}\" is not a network (e.g. 10.0.0.0/8)"),
                ));
            }
        }
        let needs_tls = cfg.outbound.tls != TlsMode::None || cfg.inbound.tls != TlsMode::None;
        if needs_tls {
            match &cfg.tls {
                None => {
                    return Err(err(
                        "tls",
                        "Abschnitt [tls] mit cert und key fehlt".into(),
                        "section [tls] with cert and key is missing".into(),
                    ))
                }
                Some(t) => {
                    for (f, p) in [("cert", &t.cert), ("key", &t.key)] {
                        if !p.is_file() {
                            return Err(err(
                                f,
                                format!("Datei {} fehlt", p.display()),
                                format!("file {} is missing", p.display()),
                            ));
                        }
                    }
                }
            }
        }
        if let Some(u) = cfg
            .outbound
            .users
            .iter()
            .find(|u| u.password_env.is_none() == u.password_keyring.is_none())
        {
            return Err(err(
                "password_env",
                format!(
                    "Benutzer {}: genau eines von password_env oder password_keyring angeben",
                    u.name
                ),
                format!(
                    "user {}: give exactly one of password_env or password_keyring",
                    u.name
                ),
            ));
        }
        if cfg.outbound.require_auth && cfg.outbound.users.is_empty() {
            return Err(err(
                "outbound.users",
                "require_auth ist gesetzt, aber es gibt keine [[outbound.users]]".into(),
                "require_auth is set but there are no [[outbound.users]]".into(),
            ));
        }
        for p in &cfg.providers {
            if !p.ca.is_file() {
                return Err(err(
                    "ca",
                    format!("Anbieter {}: CA-Datei {} fehlt", p.name, p.ca.display()),
                    format!("provider {}: CA file {} is missing", p.name, p.ca.display()),
                ));
            }
            if p.client_cert.is_some() != p.client_key.is_some() {
                return Err(err(
                    "client_cert",
                    format!(
                        "Anbieter {}: client_cert und client_key nur zusammen",
                        p.name
                    ),
                    format!(
                        "provider {}: client_cert and client_key go together",
                        p.name
                    ),
                ));
            }
            if p.secret_env.is_none() == p.secret_keyring.is_none() {
                return Err(err(
                    "secret_env",
                    format!(
                        "Anbieter {}: genau eines von secret_env oder secret_keyring angeben",
                        p.name
                    ),
                    format!(
                        "provider {}: give exactly one of secret_env or secret_keyring",
                        p.name
                    ),
                ));
            }
        }
        let policy_src = std::fs::read_to_string(&cfg.gateway.policy).map_err(|e| {
            err(
                "policy",
                format!(
                    "Richtlinie {} nicht lesbar: {e}",
                    cfg.gateway.policy.display()
                ),
                format!("cannot read policy {}: {e}", cfg.gateway.policy.display()),
            )
        })?;
        let policy = Policy::parse(&policy_src).map_err(|e| {
            let e = e.with_file(cfg.gateway.policy.display().to_string());
            ConfigError {
                file: cfg.gateway.policy.display().to_string(),
                line: e.line,
                field: e.field.clone(),
                de: e.reason.message.clone(),
                en: e.reason.message_en.clone(),
            }
        })?;
        if let Some(sc) = &cfg.seal {
            let ok = !sc.kid.is_empty()
                && sc.kid.len() <= 64
                && sc
                    .kid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok {
                return Err(err(
                    "kid",
                    "seal.kid: nur A–Z, a–z, 0–9, „.“, „_“, „-“ (1–64 Zeichen)".into(),
                    "seal.kid: only A-Z, a-z, 0-9, '.', '_', '-' (1-64 characters)".into(),
                ));
            }
            if !sc.key_keyring.contains('/') {
                return Err(err(
                    "key_keyring",
                    "seal.key_keyring: erwartet service/user".into(),
                    "seal.key_keyring: expected service/user".into(),
                ));
            }
        }
        for u in &cfg.outbound.users {
            for g in &u.groups {
                if !policy.authorization.groups.iter().any(|pg| pg.name == *g) {
                    return Err(err(
                        "groups",
                        format!(
                            "Benutzer {}: Gruppe „{g}“ steht nicht in der Richtlinie",
                            u.name
                        ),
                        format!("user {}: group \"{g}\" is not in the policy", u.name),
                    ));
                }
            }
            for p in &u.senders {
                let ok = match p.trim().strip_prefix("*@") {
                    Some(d) => demail_core::address::domain_to_ascii(d).is_some(),
                    None => demail_core::address::normalize_addr_spec(p).is_ok(),
                };
                if !ok {
                    return Err(err(
                        "senders",
                        format!(
                            "Benutzer {}: „{p}“ ist weder eine Adresse noch „*@domain“",
                            u.name
                        ),
                        format!(
                            "user {}: \"{p}\" is neither an address nor \"*@domain\"",
                            u.name
                        ),
                    ));
                }
            }
        }
        Ok((cfg, policy))
    }

    fn resolve(mut self, base: &Path) -> Config {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.gateway.spool_dir);
        fix(&mut self.gateway.archive_db);
        fix(&mut self.gateway.policy);
        if let Some(t) = &mut self.tls {
            fix(&mut t.cert);
            fix(&mut t.key);
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
        self.providers.iter().find(|p| {
            p.domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(demail_domain))
        })
    }
}

/// `10.0.0.0/8` or a single address.
pub fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let c: Config = toml::from_str(include_str!("../../examples/gateway.toml")).unwrap();
        assert_eq!(
            c.providers[0].secret().secret_keyring.as_deref(),
            Some("demail-gateway/dmda")
        );
        assert_eq!(c.outbound.users.len(), 2);
        assert!(!c.outbound.users[0].unbound() && c.outbound.users[1].unbound());
        assert_eq!(
            c.seal.as_ref().map(|s| s.kid.as_str()),
            Some("musterstadt-2026")
        );
        assert!(c.provider_for("MusterStadt.de-mail.de").is_some());
    }

    #[test]
    fn secrets_name_their_source_not_their_value() {
        let s = Secret {
            secret_env: Some("DEMAIL_TEST_UNSET_VAR".into()),
            secret_keyring: None,
        };
        assert!(s.read().unwrap_err().contains("DEMAIL_TEST_UNSET_VAR"));
    }
}
