//! The organisation's directory (Active Directory or OpenLDAP) over LDAP with verified TLS:
//! who a person is (by login or Kerberos principal), their mail addresses, their groups
//! (direct and nested), and password checks by a bind as the person.
//!
//! Facts are cached for `cache_ttl` (a removal from a group takes effect within it). When
//! the directory cannot be reached, cached facts hold for `grace` more; after that the
//! caller answers with a temporary error, so the message waits in the helper's outbox.

use demail_core::rights::{addresses_from_directory, Person};
use demail_core::Error;
use ldap3::{ldap_escape, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use serde::Deserialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// `[directory]` in gateway.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// `ldaps://dc1.example.org` or `ldap://…` (then `starttls` must be true).
    pub url: String,
    #[serde(default)]
    pub starttls: bool,
    /// CA certificate(s) (PEM) that issued the directory's TLS certificate.
    pub ca: PathBuf,
    /// The gateway's own (read-only) directory account.
    pub bind_dn: String,
    /// Its password: a secret like the others (environment, keyring or systemd credential).
    #[serde(default)]
    pub bind_password_env: Option<String>,
    #[serde(default)]
    pub bind_password_keyring: Option<String>,
    #[serde(default)]
    pub bind_password_credential: Option<String>,
    pub base_dn: String,
    /// Finds a person by the name they sign in with; `{login}` is replaced (escaped).
    #[serde(default = "default_login_filter")]
    pub login_filter: String,
    /// Finds a person by Kerberos principal; `{principal}` and `{login}` (the part before `@`).
    #[serde(default = "default_principal_filter")]
    pub principal_filter: String,
    /// Finds the person who owns a mail address (for mail a connector relays); `{mail}`.
    #[serde(default = "default_mail_filter")]
    pub mail_filter: String,
    /// Which objects are groups (combined with `(member=<dn>)` when walking nested groups).
    #[serde(default = "default_group_filter")]
    pub group_filter: String,
    #[serde(default = "default_display_name")]
    pub display_name_attribute: String,
    /// Attributes with the person's mail addresses (`mail`, Exchange's `proxyAddresses`).
    #[serde(default = "default_mail_attributes")]
    pub mail_attributes: Vec<String>,
    #[serde(default = "default_ttl")]
    pub cache_ttl_secs: u64,
    #[serde(default = "default_grace")]
    pub grace_secs: u64,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Nested groups are followed this deep.
    #[serde(default = "default_depth")]
    pub max_group_depth: usize,
}

fn default_login_filter() -> String {
    "(|(sAMAccountName={login})(uid={login}))".into()
}
fn default_principal_filter() -> String {
    "(|(userPrincipalName={principal})(sAMAccountName={login})(uid={login}))".into()
}
fn default_mail_filter() -> String {
    "(|(mail={mail})(proxyAddresses=smtp:{mail}))".into()
}
fn default_group_filter() -> String {
    "(|(objectClass=group)(objectClass=groupOfNames))".into()
}
fn default_display_name() -> String {
    "displayName".into()
}
fn default_mail_attributes() -> Vec<String> {
    vec!["mail".into(), "proxyAddresses".into()]
}
fn default_ttl() -> u64 {
    60
}
fn default_grace() -> u64 {
    900
}
fn default_timeout() -> u64 {
    5
}
fn default_depth() -> usize {
    8
}

impl DirectoryConfig {
    pub fn bind_password(&self) -> crate::config::Secret {
        crate::config::Secret {
            secret_env: self.bind_password_env.clone(),
            secret_keyring: self.bind_password_keyring.clone(),
            credential: self.bind_password_credential.clone(),
        }
    }

    /// Configuration mistakes that would make every lookup fail or go unprotected.
    pub fn validate(&self) -> Result<(), Error> {
        let url = self.url.to_ascii_lowercase();
        if !(url.starts_with("ldaps://") || url.starts_with("ldap://") && self.starttls) {
            return Err(Error::new(
                "directory.tls_required",
                "[directory] url muss ldaps:// sein, oder ldap:// mit starttls = true: Passwörter gehen nie unverschlüsselt über das Netz.",
                "[directory] url must be ldaps://, or ldap:// with starttls = true: passwords never cross the network unencrypted.",
            ));
        }
        if self.cache_ttl_secs > 60 {
            return Err(Error::new(
                "directory.ttl_too_long",
                "[directory] cache_ttl_secs darf höchstens 60 sein: eine Entfernung aus der De-Mail-Gruppe muss binnen einer Minute wirken.",
                "[directory] cache_ttl_secs must be at most 60: a removal from the De-Mail group must take effect within a minute.",
            ));
        }
        Ok(())
    }
}

/// How a person is looked up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Login(String),
    Principal(String),
    /// The owner of a mail address.
    Mail(String),
}

impl Key {
    fn cache_key(&self) -> String {
        match self {
            Key::Login(l) => format!("l:{}", l.to_lowercase()),
            Key::Principal(p) => format!("p:{}", p.to_lowercase()),
            Key::Mail(m) => format!("m:{}", m.to_lowercase()),
        }
    }
}

/// Why a lookup or a password check did not give a person.
#[derive(Debug)]
pub enum Failure {
    /// The directory answered: no such person, or the password is wrong.
    Refused(Error),
    /// The directory could not be asked (down, timeout, TLS); try again later.
    Unavailable(Error),
}

impl Failure {
    pub fn error(&self) -> &Error {
        match self {
            Failure::Refused(e) | Failure::Unavailable(e) => e,
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> Failure {
    Failure::Unavailable(
        Error::new(
            "directory.unavailable",
            "Das Verzeichnis (Active Directory/LDAP) ist nicht erreichbar; bitte später erneut versuchen.",
            "The directory (Active Directory/LDAP) cannot be reached; please try again later.",
        )
        .caused_by(e),
    )
}

fn unknown(who: &str) -> Failure {
    Failure::Refused(Error::new(
        "directory.unknown_person",
        format!("„{who}“ ist im Verzeichnis nicht zu finden."),
        format!("\"{who}\" is not found in the directory."),
    ))
}

fn wrong_password() -> Failure {
    Failure::Refused(Error::new(
        "identity.wrong_password",
        "Benutzername oder Passwort ist falsch.",
        "The user name or password is wrong.",
    ))
}

struct Cached {
    person: Person,
    fetched: Instant,
}

pub struct Directory {
    cfg: DirectoryConfig,
    password: String,
    tls: Arc<rustls::ClientConfig>,
    cache: Mutex<HashMap<String, Cached>>,
}

/// Where a person's facts came from (logged; a stale answer is worth a warning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    Cached,
    /// The directory is unreachable; facts older than the TTL, within the grace time.
    Stale,
}

impl Directory {
    pub fn new(cfg: DirectoryConfig, password: String) -> Result<Directory, Error> {
        cfg.validate()?;
        let tls = demail_smtp::tls::client_config(&cfg.ca, None).map_err(|e| {
            Error::new(
                "directory.ca",
                format!("Die CA des Verzeichnisses ({}) ist nicht lesbar.", cfg.ca.display()),
                format!("The directory's CA ({}) cannot be read.", cfg.ca.display()),
            )
            .caused_by(e)
        })?;
        Ok(Directory { cfg, password, tls, cache: Mutex::new(HashMap::new()) })
    }

    pub fn config(&self) -> &DirectoryConfig {
        &self.cfg
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.timeout_secs.max(1))
    }

    async fn connect(&self) -> Result<ldap3::Ldap, Failure> {
        let mut settings = LdapConnSettings::new()
            .set_config(self.tls.clone())
            .set_starttls(self.cfg.starttls)
            .set_conn_timeout(self.timeout());
        // LDAP is small requests and answers: without TCP_NODELAY every exchange waits for a
        // delayed ACK (measured: 88 ms per password check). ldap3 takes a stream we opened.
        let url = url::Url::parse(&self.cfg.url).map_err(unavailable)?;
        if matches!(url.scheme(), "ldap" | "ldaps") {
            let port = url.port().unwrap_or(if url.scheme() == "ldaps" { 636 } else { 389 });
            let host = url.host_str().filter(|h| !h.is_empty()).unwrap_or("localhost");
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let tcp = tokio::time::timeout(self.timeout(), tokio::net::TcpStream::connect((host, port)))
                .await
                .map_err(|_| unavailable("connect timeout"))?
                .map_err(unavailable)?;
            let _ = tcp.set_nodelay(true);
            settings = settings.set_std_stream(ldap3::StdStream::Tcp(tcp.into_std().map_err(unavailable)?));
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.cfg.url).await.map_err(unavailable)?;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    /// A connection bound as the gateway's own account.
    async fn service(&self) -> Result<ldap3::Ldap, Failure> {
        let mut ldap = self.connect().await?;
        let r = tokio::time::timeout(self.timeout(), ldap.simple_bind(&self.cfg.bind_dn, &self.password))
            .await
            .map_err(|_| unavailable("bind timeout"))?
            .map_err(unavailable)?;
        if r.rc != 0 {
            // The gateway's own account is refused: IT must act; to a sender it is "try later".
            return Err(unavailable(format!("service bind refused (rc {}): {}", r.rc, r.text)));
        }
        Ok(ldap)
    }

    fn filter(&self, key: &Key) -> String {
        match key {
            Key::Login(l) => self.cfg.login_filter.replace("{login}", &ldap_escape(l.as_str())),
            Key::Principal(p) => {
                let login = p.split('@').next().unwrap_or(p);
                self.cfg
                    .principal_filter
                    .replace("{principal}", &ldap_escape(p.as_str()))
                    .replace("{login}", &ldap_escape(login))
            }
            Key::Mail(m) => self.cfg.mail_filter.replace("{mail}", &ldap_escape(m.as_str())),
        }
    }

    /// The person's entry: (DN, Person without groups).
    async fn find(&self, ldap: &mut ldap3::Ldap, key: &Key) -> Result<(String, Person), Failure> {
        let mut attrs: Vec<&str> = vec![&self.cfg.display_name_attribute, "cn", "sAMAccountName", "uid"];
        attrs.extend(self.cfg.mail_attributes.iter().map(String::as_str));
        let filter = self.filter(key);
        let (entries, _) =
            tokio::time::timeout(self.timeout(), ldap.search(&self.cfg.base_dn, Scope::Subtree, &filter, attrs))
                .await
                .map_err(|_| unavailable("search timeout"))?
                .map_err(unavailable)?
                .success()
                .map_err(unavailable)?;
        let who = match key {
            Key::Login(l) | Key::Principal(l) | Key::Mail(l) => l.clone(),
        };
        let mut found = entries.into_iter().map(SearchEntry::construct);
        let Some(e) = found.next() else { return Err(unknown(&who)) };
        if found.next().is_some() {
            // Two people for one login would make the sender ambiguous: refuse, loudly.
            warn!(login = %who, filter = %filter, "directory: the filter matches more than one entry");
            return Err(Failure::Refused(Error::new(
                "directory.ambiguous",
                format!("„{who}“ passt auf mehrere Einträge im Verzeichnis; die IT muss das bereinigen."),
                format!("\"{who}\" matches several directory entries; IT must resolve this."),
            )));
        }
        let first = |a: &str| e.attrs.get(a).and_then(|v| v.first()).cloned();
        let display_name =
            first(&self.cfg.display_name_attribute).or_else(|| first("cn")).unwrap_or_else(|| who.clone());
        // The account name IT knows the person by (AD, then OpenLDAP), whatever they signed in with.
        let login = first("sAMAccountName").or_else(|| first("uid")).unwrap_or_else(|| who.clone());
        let values: Vec<&str> = self
            .cfg
            .mail_attributes
            .iter()
            .filter_map(|a| e.attrs.get(a))
            .flat_map(|v| v.iter().map(String::as_str))
            .collect();
        let person = Person {
            dn: e.dn.clone(),
            login,
            display_name,
            addresses: addresses_from_directory(values),
            groups: Vec::new(),
        };
        Ok((e.dn, person))
    }

    /// Every group containing `dn`, directly or through other groups (breadth first).
    async fn groups(&self, ldap: &mut ldap3::Ldap, dn: &str) -> Result<Vec<String>, Failure> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        let mut frontier: VecDeque<(String, usize)> = VecDeque::from([(dn.to_string(), 0)]);
        while let Some((member, depth)) = frontier.pop_front() {
            if depth >= self.cfg.max_group_depth {
                continue;
            }
            let filter = format!("(&{}(member={}))", self.cfg.group_filter, ldap_escape(member.as_str()));
            let (entries, _) = tokio::time::timeout(
                self.timeout(),
                ldap.search(&self.cfg.base_dn, Scope::Subtree, &filter, vec!["1.1"]),
            )
            .await
            .map_err(|_| unavailable("group search timeout"))?
            .map_err(unavailable)?
            .success()
            .map_err(unavailable)?;
            for e in entries {
                let g = SearchEntry::construct(e).dn;
                if seen.insert(g.to_lowercase()) {
                    out.push(g.clone());
                    frontier.push_back((g, depth + 1));
                }
            }
        }
        Ok(out)
    }

    async fn fetch(&self, key: &Key) -> Result<Person, Failure> {
        let mut ldap = self.service().await?;
        let (dn, mut person) = self.find(&mut ldap, key).await?;
        person.groups = self.groups(&mut ldap, &dn).await?;
        let _ = ldap.unbind().await;
        Ok(person)
    }

    /// The person's facts: from the cache while fresh, else from the directory; when the
    /// directory is unreachable, the cached facts within the grace time.
    pub async fn person(&self, key: &Key) -> Result<(Person, Freshness), Failure> {
        let ck = key.cache_key();
        let ttl = Duration::from_secs(self.cfg.cache_ttl_secs);
        let grace = Duration::from_secs(self.cfg.grace_secs);
        if let Some(c) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&ck) {
            if c.fetched.elapsed() < ttl {
                return Ok((c.person.clone(), Freshness::Cached));
            }
        }
        match self.fetch(key).await {
            Ok(p) => {
                self.cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(ck, Cached { person: p.clone(), fetched: Instant::now() });
                Ok((p, Freshness::Fresh))
            }
            Err(Failure::Unavailable(e)) => {
                let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                match cache.get(&ck) {
                    Some(c) if c.fetched.elapsed() < ttl + grace => {
                        warn!(person = %c.person.login, age_secs = c.fetched.elapsed().as_secs(), error = %e, "directory unreachable; using cached rights within the grace time");
                        Ok((c.person.clone(), Freshness::Stale))
                    }
                    _ => Err(Failure::Unavailable(e)),
                }
            }
            Err(f) => {
                // The directory says no (person gone): forget what was cached.
                self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(&ck);
                Err(f)
            }
        }
    }

    /// Check a password by binding as the person. Never cached: a changed or locked
    /// password must count at once; an unreachable directory is a temporary failure.
    pub async fn check_password(&self, login: &str, password: &str) -> Result<Person, Failure> {
        // An empty password is an "unauthenticated bind", which LDAP servers accept.
        if login.is_empty() || password.is_empty() {
            return Err(wrong_password());
        }
        let key = Key::Login(login.to_string());
        let mut service = self.service().await?;
        let (dn, mut person) = match self.find(&mut service, &key).await {
            Ok(x) => x,
            // Do not tell an unknown login from a wrong password.
            Err(Failure::Refused(_)) => return Err(wrong_password()),
            Err(f) => return Err(f),
        };
        let mut user = self.connect().await?;
        let r = tokio::time::timeout(self.timeout(), user.simple_bind(&dn, password))
            .await
            .map_err(|_| unavailable("bind timeout"))?
            .map_err(unavailable)?;
        let _ = user.unbind().await;
        match r.rc {
            0 => {}
            // invalidCredentials (49); AD adds sub-codes for locked/expired in the text.
            49 => {
                info!(login, "directory: wrong password");
                return Err(wrong_password());
            }
            rc => return Err(unavailable(format!("bind as the person: rc {rc}: {}", r.text))),
        }
        person.groups = self.groups(&mut service, &dn).await?;
        let _ = service.unbind().await;
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.cache_key(), Cached { person: person.clone(), fetched: Instant::now() });
        Ok(person)
    }
}
