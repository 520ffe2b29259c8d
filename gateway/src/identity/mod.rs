//! Who sends: each person is authenticated by the organisation's directory, never by a
//! secret shared between desks. Kerberos single sign-on (SASL GSSAPI, [`kerberos`]) or a
//! password checked by an LDAP bind ([`directory`]); the person's De-Mail rights come
//! from the directory and are decided by [`demail_core::rights`].
//!
//! The organisation's own mail server may relay for people it authenticated, as a
//! **connector**: fixed source addresses and a client certificate (mutual TLS), never a
//! password ([`ConnectorConfig`]).

pub mod directory;
pub mod kerberos;

use demail_core::rights::{self, OptionGroups, Person, Rules, SharedSender};
use demail_core::{DeMailOption, Error, OptionSet, Reason};
use demail_smtp::{AuthResult, Authenticated, Reject, SaslExchange, SaslStep, SessionInfo};
use directory::{Directory, Failure, Freshness, Key};
use serde::Deserialize;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tracing::{info, warn};

/// The words the archive, billing and logs use for how a person signed in.
pub const METHOD_KERBEROS: &str = "kerberos";
pub const METHOD_LDAP: &str = "ldap";
pub const METHOD_CONNECTOR: &str = "connector";
/// An application account of `[[outbound.users]]` (a Fachverfahren with its own senders).
pub const METHOD_ACCOUNT: &str = "account";

/// `[identity]` in gateway.toml.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Kerberos single sign-on (SASL GSSAPI) on the outbound listener.
    #[serde(default)]
    pub kerberos: bool,
    /// The gateway's keytab (else `KRB5_KTNAME` or the system default).
    #[serde(default)]
    pub keytab: Option<PathBuf>,
    /// The gateway's service principal (`smtp/gw.example.org@REALM`); any key in the keytab when unset.
    #[serde(default)]
    pub service_principal: Option<String>,
    /// Realms whose people may sign in; empty: any the keytab can check.
    #[serde(default)]
    pub realms: Vec<String>,
    /// AUTH PLAIN/LOGIN, checked by an LDAP bind as the person (over TLS only).
    #[serde(default)]
    pub ldap_password: bool,
    /// Members (direct or nested) hold the De-Mail right.
    #[serde(default)]
    pub demail_group: Option<String>,
    #[serde(default)]
    pub shared_senders: Vec<SharedSenderConfig>,
    #[serde(default)]
    pub limited_options: Vec<LimitedOptionConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedSenderConfig {
    pub address: String,
    pub group: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitedOptionConfig {
    pub option: String,
    pub groups: Vec<String>,
}

/// `[[outbound.connectors]]`: the organisation's mail server relaying for the people it
/// authenticated. Recognised by source address AND client certificate, never a password.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    pub name: String,
    /// Source networks (CIDR), e.g. the Exchange servers.
    pub sources: Vec<String>,
    /// SHA-256 fingerprints (hex, colons allowed) of the client certificates it presents.
    pub certificate_sha256: Vec<String>,
}

/// `[access]`: the De-Mail right where IT keeps no directory group for it (the
/// article's two processes): a person asks ("De-Mail für mich beantragen" in the helper)
/// and IT approves with `demail-gateway access approve`, or, with `self_service`, the
/// request grants it at once. Every request, grant, revocation and refusal is an entry
/// in the audit archive.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    pub self_service: bool,
    /// The envelope recipient of a request (`RCPT TO`); `de-mail-zugang@<hostname>` by default.
    pub request_address: Option<String>,
}

impl AccessConfig {
    /// Where requests go: the configured address, else `de-mail-zugang@<hostname>`.
    pub fn request_address(&self, hostname: &str) -> String {
        self.request_address.clone().unwrap_or_else(|| format!("de-mail-zugang@{hostname}")).to_lowercase()
    }
}

/// The access states of [`crate::archive::AccessRecord`].
pub const ACCESS_REQUESTED: &str = "requested";
pub const ACCESS_GRANTED: &str = "granted";
pub const ACCESS_REVOKED: &str = "revoked";
pub const ACCESS_REFUSED: &str = "refused";

/// A SHA-256 fingerprint written as hex, with or without colons, in any case.
pub fn fingerprint(text: &str) -> Option<[u8; 32]> {
    let hex: String = text.chars().filter(|c| *c != ':' && !c.is_whitespace()).collect();
    crate::archive::unhex32(&hex)
}

impl IdentityConfig {
    pub fn rules(&self) -> Result<Rules, Error> {
        let mut limited = Vec::new();
        for l in &self.limited_options {
            let option = DeMailOption::from_id(&l.option).ok_or_else(|| {
                Error::new(
                    "identity.unknown_option",
                    format!("[identity] limited_options: unbekannte Option „{}“.", l.option),
                    format!("[identity] limited_options: unknown option \"{}\".", l.option),
                )
            })?;
            limited.push(OptionGroups { option, groups: l.groups.clone() });
        }
        Ok(Rules {
            demail_group: self.demail_group.clone(),
            shared_senders: self
                .shared_senders
                .iter()
                .map(|s| SharedSender { address: s.address.trim().to_lowercase(), group: s.group.clone() })
                .collect(),
            limited_options: limited,
        })
    }
}

/// The running identity side of the outbound listener.
pub struct Identity {
    pub cfg: IdentityConfig,
    pub rules: Rules,
    pub directory: Option<Arc<Directory>>,
}

fn temporary(e: &Error) -> Reject {
    Reject::new(
        454,
        "4.7.0",
        format!("[{}] {}", e.reason.code, e.reason.message),
        format!("[{}] {}", e.reason.code, e.reason.message_en),
    )
}

/// A person's sign-in as the SMTP session records it.
fn signed_in(person: &Person, user: &str, method: &str) -> Authenticated {
    Authenticated { user: user.to_string(), method: method.to_string(), display: Some(person.display_name.clone()) }
}

impl Identity {
    pub fn new(cfg: IdentityConfig, directory: Option<Arc<Directory>>) -> Result<Identity, Error> {
        let rules = cfg.rules()?;
        Ok(Identity { cfg, rules, directory })
    }

    /// Who the session's user is, from the directory (cached). `method` says which key:
    /// a Kerberos principal or a login.
    pub async fn person(&self, user: &str, method: &str) -> Result<(Person, Freshness), Failure> {
        let Some(d) = &self.directory else {
            return Err(Failure::Unavailable(Error::new(
                "directory.not_configured",
                "Es ist kein Verzeichnis konfiguriert ([directory]).",
                "No directory is configured ([directory]).",
            )));
        };
        let key = match method {
            METHOD_KERBEROS => Key::Principal(user.into()),
            METHOD_CONNECTOR => Key::Mail(user.into()),
            _ => Key::Login(user.into()),
        };
        d.person(&key).await
    }

    /// AUTH PLAIN/LOGIN: an LDAP bind as the person.
    pub async fn check_password(&self, login: &str, password: &str) -> AuthResult {
        let Some(d) = self.directory.as_ref().filter(|_| self.cfg.ldap_password) else {
            return AuthResult::Refused;
        };
        match d.check_password(login, password).await {
            Ok(p) => AuthResult::Accepted(signed_in(&p, login, METHOD_LDAP)),
            Err(Failure::Refused(e)) => {
                info!(login, code = %e.reason.code, "password sign-in refused");
                AuthResult::Refused
            }
            Err(Failure::Unavailable(e)) => {
                warn!(login, error = %e, "password sign-in not possible now");
                AuthResult::Unavailable(temporary(&e))
            }
        }
    }

    /// A connector's TLS sign-in: its pinned certificate from one of its source networks.
    pub fn connector_for(&self, connectors: &[ConnectorConfig], session: &SessionInfo) -> Option<Authenticated> {
        let cert = session.client_cert?;
        let ip = session.client.ip();
        connectors
            .iter()
            .find(|c| {
                c.certificate_sha256.iter().any(|f| fingerprint(f) == Some(cert))
                    && c.sources.iter().any(|n| crate::config::parse_net(n).is_some_and(|n| n.contains(&ip)))
            })
            .map(|c| Authenticated {
                user: c.name.clone(),
                method: METHOD_CONNECTOR.into(),
                display: Some(c.name.clone()),
            })
    }

    /// A SASL GSSAPI exchange; at its end the principal is looked up in the directory.
    pub fn kerberos_exchange(self: &Arc<Self>) -> Box<dyn SaslExchange> {
        let server = kerberos::GssapiServer::new(self.cfg.service_principal.clone(), self.cfg.realms.clone());
        Box::new(KerberosExchange { server, identity: self.clone() })
    }

    /// The signed-in person's directory facts for a decision. `Err` is the SMTP refusal:
    /// 451 when the directory cannot say and the grace time is over, else 550.
    pub async fn signed_in_person(&self, user: &str, method: &str) -> Result<Person, Reject> {
        let (person, freshness) = self.person(user, method).await.map_err(|f| match f {
            Failure::Unavailable(e) => {
                warn!(user, error = %e, "directory unreachable beyond the grace time; sender asked to retry");
                Reject::new(
                    451,
                    "4.7.0",
                    format!("[{}] {} Die Nachricht bleibt im Postausgang.", e.reason.code, e.reason.message),
                    format!("[{}] {} The message stays in the outbox.", e.reason.code, e.reason.message_en),
                )
            }
            Failure::Refused(e) => refusal(&e.reason),
        })?;
        if freshness == Freshness::Stale {
            warn!(user, "rights from the cache (directory unreachable, within the grace time)");
        }
        Ok(person)
    }

    /// May this person send this De-Mail? `granted`: an approved request (`[access]`).
    pub fn authorize(&self, person: &Person, granted: bool, from: &str, options: OptionSet) -> Result<(), Reject> {
        rights::may_send(person, &self.rules, granted, from, options).map_err(|r| {
            info!(user = %person.login, from, code = %r.code, "De-Mail refused by the person's rights");
            refusal(&r)
        })
    }
}

/// A session that reached DATA without anyone signed in.
pub fn not_signed_in() -> Reason {
    Reason::new(
        "identity.not_signed_in",
        "Ohne Anmeldung nimmt das Gateway keine De-Mail an.",
        "The gateway takes no De-Mail without a sign-in.",
    )
}

/// A permanent refusal carrying the reason's code and both texts.
pub fn refusal(r: &Reason) -> Reject {
    Reject::new(550, "5.7.1", format!("[{}] {}", r.code, r.message), format!("[{}] {}", r.code, r.message_en))
}

struct KerberosExchange {
    server: kerberos::GssapiServer,
    identity: Arc<Identity>,
}

impl SaslExchange for KerberosExchange {
    fn step<'a>(&'a mut self, response: &'a [u8]) -> Pin<Box<dyn Future<Output = SaslStep> + Send + 'a>> {
        Box::pin(async move {
            match self.server.step(response) {
                kerberos::Step::Challenge(c) => SaslStep::Challenge(c),
                kerberos::Step::Failed(r) => {
                    info!(code = %r.code, reason = %r.message_en, "Kerberos sign-in refused");
                    SaslStep::Finished(AuthResult::Refused)
                }
                kerberos::Step::Done(principal) => {
                    SaslStep::Finished(match self.identity.person(&principal, METHOD_KERBEROS).await {
                        Ok((p, _)) => AuthResult::Accepted(signed_in(&p, &principal, METHOD_KERBEROS)),
                        // A valid ticket of someone the directory does not know: no sign-in.
                        Err(Failure::Refused(e)) => {
                            info!(principal, code = %e.reason.code, "Kerberos principal not in the directory");
                            AuthResult::Refused
                        }
                        Err(Failure::Unavailable(e)) => AuthResult::Unavailable(temporary(&e)),
                    })
                }
            }
        })
    }
}
