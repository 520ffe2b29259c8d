//! The relay worker: takes due messages from the outbox and submits them to the gateway
//! over verified TLS (STARTTLS or implicit). The person signs in with their Kerberos
//! ticket (SASL GSSAPI) or their directory password from the OS keyring; the gateway
//! names them in its reply, which the tray shows.
//!
//! - 2xx: `sent`, the gateway's reply is kept.
//! - 4xx, network, TLS and AUTH problems: stays `queued` with the reason, retried with
//!   exponential backoff; after `relay.give_up_after` it becomes `failed`.
//! - 5xx for the message: `failed` with the gateway's reply.
//!
//! Idempotency: the Message-ID is unique in the outbox, and a message is claimed
//! (`sending`) in a committed transaction before it is sent. After a crash during a
//! send the message is retried with the same Message-ID, so the gateway can drop the
//! second copy (docs/protocol.md, "Delivery guarantees").

use crate::code;
use crate::config::{AuthMode, Config, TlsMode};
use crate::state::{AppState, GatewayState};
use crate::store::{now_ms, OutboxEntry};
use demail_core::Reason;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What one delivery attempt came to; the reason is what the outbox shows.
#[derive(Debug)]
pub enum Outcome {
    Sent(String),
    Retry(Reason, Option<String>),
    Failed(Reason, Option<String>),
}

/// Whom the gateway signed in for a session, as it named them (`235 Angemeldet als …`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedIn {
    /// The person as the directory knows them (display name, else login).
    pub person: String,
    /// `kerberos`, `ldap` or `account` (the gateway's method names).
    pub method: String,
    /// The method in words for the caseworker, German and English (the tray shows these).
    #[serde(default)]
    pub method_label: String,
    #[serde(default)]
    pub method_label_en: String,
}

impl SignedIn {
    /// From the gateway's 235 text `Angemeldet als <person> (<method>).`; other servers'
    /// texts are kept whole.
    fn from_reply(text: &str, method: &str) -> SignedIn {
        // "2.7.0 Angemeldet als Peter Meier (kerberos). 2.7.0 Authenticated as …"
        // The method is the last parenthesis before ")." (a name may hold parentheses).
        let named = text
            .split_once("Angemeldet als ")
            .and_then(|(_, r)| r.split_once(").").map(|(s, _)| s).or(Some(r)))
            .and_then(|s| s.rsplit_once(" ("));
        match named {
            // The gateway's own word for how (`ldap`, `kerberos`, `account`).
            Some((person, how)) => SignedIn::new(person.trim(), how.trim_end_matches(')').trim()),
            None => SignedIn::new(text.lines().next().unwrap_or("").trim(), method),
        }
    }

    fn new(person: &str, method: &str) -> SignedIn {
        let (de, en) = match method {
            "kerberos" => ("Kerberos", "Kerberos"),
            "ldap" => ("Verzeichnis-Kennwort", "directory password"),
            "account" => ("Anwendungskonto", "application account"),
            other => (other, other),
        };
        SignedIn {
            person: person.to_string(),
            method: method.to_string(),
            method_label: de.to_string(),
            method_label_en: en.to_string(),
        }
    }
}

fn signin_required(why_de: &str, why_en: &str) -> Reason {
    Reason::new(
        code::RELAY_SIGNIN,
        format!("Bitte melden Sie sich neu an: {why_de} Die Nachricht bleibt im Postausgang und geht nach der Anmeldung hinaus."),
        format!("Please sign in again: {why_en} The message stays in the outbox and goes out after you sign in."),
    )
}

/// 454: the gateway cannot check a sign-in now (its directory is away).
fn signin_unavailable(text: &str) -> Reason {
    Reason::new(
        code::RELAY_DEFERRED,
        format!("Das Gateway kann die Anmeldung gerade nicht prüfen; die Nachricht bleibt im Postausgang und wird später gesendet. Antwort: {text}"),
        format!("The gateway cannot check the sign-in right now; the message stays in the outbox and is sent later. Reply: {text}"),
    )
}

fn auth_refused(text: &str) -> Reason {
    Reason::new(
        code::RELAY_AUTH,
        format!("Die Anmeldung am Gateway ist fehlgeschlagen. Prüfen Sie Anmeldename und Kennwort (im Helfer-Fenster oder mit „demail credentials set“). Die Nachricht bleibt im Postausgang. Antwort: {text}"),
        format!("Signing in at the gateway failed. Check login and password (in the helper window or with \"demail credentials set\"). The message stays in the outbox. Reply: {text}"),
    )
}

/// The full error text including sources, without secrets (lettre never prints credentials).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = x.source();
    }
    s
}

fn ca_pem(cfg: &Config) -> Result<Option<Vec<u8>>, Reason> {
    let g = &cfg.gateway;
    if g.ca_file.trim().is_empty() {
        if g.ca_only {
            return Err(Reason::new(
                code::RELAY_CA_FILE,
                "gateway.ca_only ist gesetzt, aber gateway.ca_file fehlt.",
                "gateway.ca_only is set, but gateway.ca_file is missing.",
            ));
        }
        return Ok(None);
    }
    std::fs::read(g.ca_file.trim()).map(Some).map_err(|e| {
        Reason::new(
            code::RELAY_CA_FILE,
            format!("Die CA-Datei {} kann nicht gelesen werden ({e}).", g.ca_file),
            format!("The CA file {} cannot be read ({e}).", g.ca_file),
        )
    })
}

fn bad_ca(cfg: &Config) -> Reason {
    Reason::new(
        code::RELAY_CA_FILE,
        format!("Die CA-Datei {} enthält kein gültiges PEM-Zertifikat.", cfg.gateway.ca_file),
        format!("The CA file {} holds no valid PEM certificate.", cfg.gateway.ca_file),
    )
}

/// lettre's TLS parameters for STARTTLS: system roots (unless `ca_only`) plus the internal CA.
fn tls_parameters(cfg: &Config, host: &str) -> Result<TlsParameters, Reason> {
    let mut tls = TlsParameters::builder(host.to_string());
    if cfg.gateway.ca_only {
        tls = tls.certificate_store(CertificateStore::None);
    }
    if let Some(pem) = ca_pem(cfg)? {
        tls = tls.add_root_certificate(Certificate::from_pem(&pem).map_err(|_| bad_ca(cfg))?);
    }
    tls.build_rustls().map_err(|e| {
        Reason::new(
            code::RELAY_TLS_SETUP,
            format!("TLS kann nicht eingerichtet werden: {}", chain(&e)),
            format!("TLS cannot be set up: {}", chain(&e)),
        )
    })
}

/// The same trust for implicit TLS, which we set up ourselves (see [`TlsTcp`]).
fn rustls_config(cfg: &Config) -> Result<Arc<rustls::ClientConfig>, Reason> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    if !cfg.gateway.ca_only {
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
    }
    if let Some(pem) = ca_pem(cfg)? {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|_| bad_ca(cfg))?;
        if certs.is_empty() {
            return Err(bad_ca(cfg));
        }
        for c in certs {
            roots.add(c).map_err(|_| bad_ca(cfg))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            Reason::new(
                code::RELAY_TLS_SETUP,
                format!("TLS kann nicht eingerichtet werden: {e}"),
                format!("TLS cannot be set up: {e}"),
            )
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(c))
}

/// A TLS stream over TCP that lettre can drive (implicit TLS, port 465/1465 style).
struct TlsTcp(tokio_rustls::client::TlsStream<TcpStream>);

impl std::fmt::Debug for TlsTcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsTcp")
    }
}

impl AsyncRead for TlsTcp {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsTcp {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsTcp {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

fn unreachable_err(host: &str, text: &str) -> Reason {
    Reason::new(
        code::RELAY_UNREACHABLE,
        format!("Das Gateway {host} ist nicht erreichbar; die De-Mail wird später erneut gesendet ({text})."),
        format!("The gateway {host} is not reachable; the De-Mail will be sent again later ({text})."),
    )
}

fn tls_err(host: &str, text: &str) -> Reason {
    Reason::new(
        code::RELAY_TLS,
        format!("Die TLS-Verbindung zum Gateway {host} wurde abgelehnt: Das Zertifikat des Gateways ist nicht vertrauenswürdig oder passt nicht zum Namen. Prüfen Sie gateway.ca_file und gateway.host. ({text})"),
        format!("The TLS connection to the gateway {host} was refused: the gateway's certificate is not trusted or does not match its name. Check gateway.ca_file and gateway.host. ({text})"),
    )
}

async fn timed<T, E: std::fmt::Display>(
    secs: u64,
    host: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<Result<T, E>, Reason> {
    tokio::time::timeout(Duration::from_secs(secs.max(1)), f)
        .await
        .map_err(|_| unreachable_err(host, &format!("keine Antwort nach {secs} s / no answer after {secs} s")))
}

/// A connection to the gateway: TCP with `TCP_NODELAY`, verified TLS (STARTTLS required,
/// or implicit). Nothing is ever sent in clear; nobody is signed in yet. When `gateway.host`
/// cannot be reached, the nodes in `gateway.fallback` are tried in turn. Returns the host
/// that answered (its certificate and Kerberos principal carry that name).
pub async fn open_tls(cfg: &Config) -> Result<(AsyncSmtpConnection, String), Reason> {
    let g = &cfg.gateway;
    if g.host.trim().is_empty() {
        return Err(Reason::new(
            code::RELAY_NOT_CONFIGURED,
            "Es ist kein Gateway konfiguriert (gateway.host). Die Nachricht bleibt im Postausgang.",
            "No gateway is configured (gateway.host). The message stays in the outbox.",
        ));
    }
    let mut last = None;
    for (host, port) in g.nodes() {
        match open_tls_to(cfg, &host, port).await {
            Ok(c) => return Ok((c, host)),
            // Only a node that does not answer is skipped: a TLS or protocol error is a
            // configuration to fix, not something to send around.
            Err(r) if r.code == code::RELAY_UNREACHABLE => {
                tracing::warn!(host = %host, port, "gateway node not reachable; trying the next: {}", r.message_en);
                last = Some(r);
            }
            Err(r) => return Err(r),
        }
    }
    Err(last.unwrap_or_else(|| unreachable_err(g.host.trim(), "")))
}

async fn open_tls_to(cfg: &Config, host: &str, port: u16) -> Result<AsyncSmtpConnection, Reason> {
    let g = &cfg.gateway;
    let hello = if g.hello_name.trim().is_empty() {
        ClientId::default()
    } else {
        ClientId::Domain(g.hello_name.trim().to_string())
    };
    let tcp = timed(g.timeout, host, TcpStream::connect((host, port)))
        .await?
        .map_err(|e| unreachable_err(host, &e.to_string()))?;
    // SMTP is a ping-pong of small writes: without this, Nagle and delayed ACKs cost 40 ms a message.
    let _ = tcp.set_nodelay(true);
    let conn = match g.tls {
        TlsMode::Starttls => {
            let params = tls_parameters(cfg, host)?;
            let mut conn = timed(g.timeout, host, AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello))
                .await?
                .map_err(|e| classify_error(&e, host))?;
            if !conn.can_starttls() {
                conn.abort().await;
                return Err(Reason::new(
                    code::RELAY_NO_STARTTLS,
                    format!("Das Gateway {host} bietet kein STARTTLS an. Ohne TLS sendet der Helfer nicht; prüfen Sie gateway.tls und gateway.port."),
                    format!("The gateway {host} does not offer STARTTLS. The helper never sends without TLS; check gateway.tls and gateway.port."),
                ));
            }
            timed(g.timeout, host, conn.starttls(params, &hello)).await?.map_err(|e| classify_error(&e, host))?;
            conn
        }
        TlsMode::Implicit => {
            let config = rustls_config(cfg)?;
            let name = rustls_pki_types::ServerName::try_from(host.to_string()).map_err(|_| {
                Reason::new(
                    code::RELAY_TLS_SETUP,
                    format!("Ungültiger Host-Name {host}."),
                    format!("Invalid host name {host}."),
                )
            })?;
            let tls = timed(g.timeout, host, tokio_rustls::TlsConnector::from(config).connect(name, tcp))
                .await?
                .map_err(|e| tls_err(host, &chain(&e)))?;
            timed(g.timeout, host, AsyncSmtpConnection::connect_with_transport(Box::new(TlsTcp(tls)), &hello))
                .await?
                .map_err(|e| classify_error(&e, host))?
        }
    };
    Ok(conn)
}

/// Sign the person in on an open TLS session, as `gateway.auth` says: their Kerberos
/// ticket, else (in `auto`) their stored password. `Ok(None)`: nothing to sign in with
/// in `auto` (the gateway then refuses with its reason).
pub async fn sign_in(
    cfg: &Arc<Config>,
    conn: &mut AsyncSmtpConnection,
    host: &str,
) -> Result<Option<SignedIn>, Reason> {
    let g = &cfg.gateway;
    let mode = g.effective_auth();
    if mode != AuthMode::Password {
        let target = format!("{}/{}", g.kerberos_service.trim(), host.to_lowercase());
        match timed(g.timeout, host, crate::kerberos::authenticate(conn, &target)).await? {
            Ok(text) => return Ok(Some(SignedIn::from_reply(&text, "kerberos"))),
            Err(crate::kerberos::Failure::NoTicket(why)) => {
                tracing::info!(target = %target, "no Kerberos ticket: {why}");
                if mode == AuthMode::Kerberos {
                    return Err(signin_required(
                        "Es gibt kein gültiges Kerberos-Ticket (abgemeldet, gesperrt oder abgelaufen). Melden Sie sich am Rechner ab und wieder an.",
                        "there is no valid Kerberos ticket (logged out, locked or expired). Log off and on again at this computer.",
                    ));
                }
            }
            Err(crate::kerberos::Failure::NotOffered(text)) if mode == AuthMode::Auto => {
                tracing::info!("the gateway offers no Kerberos sign-in: {text}");
            }
            Err(crate::kerberos::Failure::Temporary(text)) => return Err(signin_unavailable(&text)),
            Err(crate::kerberos::Failure::Refused(text) | crate::kerberos::Failure::NotOffered(text)) => {
                if mode == AuthMode::Kerberos {
                    return Err(signin_required(
                        &format!("Das Gateway hat das Kerberos-Ticket nicht angenommen ({text})."),
                        &format!("the gateway did not accept the Kerberos ticket ({text})."),
                    ));
                }
                tracing::warn!("Kerberos sign-in refused, trying the password: {text}");
            }
        }
    }
    // Password mode: a missing password is the keyring's missing-secret code (set it in the
    // tray or with `demail credentials set`); auto: nothing to sign in with.
    let Some(password) = password(cfg, mode == AuthMode::Password).await? else { return Ok(None) };
    let creds = Credentials::new(g.login(), password);
    match timed(g.timeout, host, conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds)).await? {
        Ok(r) => Ok(Some(SignedIn::from_reply(&r.message().collect::<Vec<_>>().join("\n"), "ldap"))),
        Err(e) => Err(match classify(&e, host) {
            Refusal { reason, .. } if reason.code == code::RELAY_AUTH || reason.code == code::RELAY_DEFERRED => reason,
            _ => auth_refused(&chain(&e)),
        }),
    }
}

/// A signed-in session: TLS, then the person's sign-in. `Err` is a reason to retry later.
pub async fn connect(cfg: &Arc<Config>) -> Result<(AsyncSmtpConnection, Option<SignedIn>), Reason> {
    let (mut conn, host) = open_tls(cfg).await?;
    match sign_in(cfg, &mut conn, &host).await {
        Ok(who) => Ok((conn, who)),
        Err(r) => {
            conn.abort().await;
            Err(r)
        }
    }
}

/// Fetch the person's password (blocking keyring call); `None` when none is stored.
async fn password(cfg: &Arc<Config>, required: bool) -> Result<Option<String>, Reason> {
    let c = cfg.clone();
    let r = tokio::task::spawn_blocking(move || crate::secrets::get(&c)).await.map_err(|e| {
        tracing::error!(error = %e, "keyring task failed");
        Reason::new(
            code::INTERNAL.id,
            "Interner Fehler beim Lesen des Schlüsselbunds.",
            "Internal error reading the keyring.",
        )
    })?;
    match r {
        Ok(p) => Ok(p.map(|(p, _)| p)),
        // Nothing stored: without `required` that only means "no password sign-in".
        Err(e) if e.code() == code::SECRETS_MISSING && !required => Ok(None),
        Err(e) => Err(e.reason),
    }
}

fn reply_text(e: &lettre::transport::smtp::Error) -> Option<String> {
    e.status().map(|_| chain(e))
}

/// Why the gateway (or the way to it) refused: the outbox reason, the gateway's reply if
/// it gave one, and whether trying again can help.
struct Refusal {
    reason: Reason,
    reply: Option<String>,
    permanent: bool,
}

impl From<Refusal> for Outcome {
    fn from(r: Refusal) -> Self {
        if r.permanent {
            Outcome::Failed(r.reason, r.reply)
        } else {
            Outcome::Retry(r.reason, r.reply)
        }
    }
}

/// Classify a lettre error.
fn classify(e: &lettre::transport::smtp::Error, host: &str) -> Refusal {
    let text = chain(e);
    let lower = text.to_ascii_lowercase();
    let transient = |reason: Reason, reply: Option<String>| Refusal { reason, reply, permanent: false };
    if e.is_tls() || lower.contains("certificate") || lower.contains("handshake") {
        return transient(tls_err(host, &text), None);
    }
    let code = e.status().map(|c| c.to_string());
    let code_num: u16 = code.as_deref().and_then(|c| c.parse().ok()).unwrap_or(0);
    if code_num == 530 {
        return transient(
            signin_required(
                &format!("Das Gateway verlangt eine Anmeldung (kein Kerberos-Ticket und kein gespeichertes Kennwort). Antwort: {text}"),
                &format!("the gateway requires a sign-in (no Kerberos ticket and no stored password). Reply: {text}"),
            ),
            reply_text(e),
        );
    }
    if matches!(code_num, 534 | 535 | 538) {
        return transient(auth_refused(&text), reply_text(e));
    }
    if code_num == 454 {
        return transient(signin_unavailable(&text), reply_text(e));
    }
    if e.is_permanent() {
        return Refusal {
            reason: Reason::new(
                code::RELAY_REJECTED,
                format!("Das Gateway hat die De-Mail endgültig abgelehnt: {text}"),
                format!("The gateway rejected the De-Mail permanently: {text}"),
            ),
            reply: reply_text(e),
            permanent: true,
        };
    }
    if e.is_transient() {
        return transient(
            Reason::new(
                code::RELAY_DEFERRED,
                format!("Das Gateway hat die De-Mail vorläufig abgelehnt; sie wird später erneut gesendet: {text}"),
                format!("The gateway deferred the De-Mail; it will be sent again later: {text}"),
            ),
            reply_text(e),
        );
    }
    if text.to_ascii_lowercase().contains("auth") {
        return transient(
            Reason::new(
                code::RELAY_AUTH,
                format!("Die Anmeldung am Gateway ist nicht möglich: {text}"),
                format!("Authentication at the gateway is not possible: {text}"),
            ),
            None,
        );
    }
    transient(unreachable_err(host, &text), None)
}

/// The reason for a failed connection or send, as the outbox would show it.
pub fn classify_error(e: &lettre::transport::smtp::Error, host: &str) -> Reason {
    classify(e, host).reason
}

/// Envelope from the outbox entry; an address lettre refuses is a permanent failure.
fn envelope(entry: &OutboxEntry) -> Result<Envelope, Outcome> {
    let bad = |a: &str| {
        Outcome::Failed(
            Reason::new(
                code::RELAY_ADDRESS,
                format!("Die Adresse {a} ist für SMTP ungültig."),
                format!("The address {a} is invalid for SMTP."),
            ),
            None,
        )
    };
    let sender = entry.sender.parse::<lettre::Address>().map_err(|_| bad(&entry.sender))?;
    let mut rcpts = Vec::new();
    for r in &entry.recipients {
        rcpts.push(r.parse::<lettre::Address>().map_err(|_| bad(r))?);
    }
    Envelope::new(Some(sender), rcpts)
        .map_err(|_| Outcome::Failed(Reason::new(code::RELAY_ADDRESS, "Keine Empfänger.", "No recipients."), None))
}

/// "De-Mail für mich beantragen": a short message to the gateway's request address on a
/// signed-in session. Returns the gateway's 250 text (`zugang-beantragt`, `zugang-erteilt`
/// or `zugang-besteht`).
pub async fn send_request(cfg: &Config, conn: &mut AsyncSmtpConnection) -> Result<String, Reason> {
    let host = cfg.gateway.host.trim();
    let to = cfg.gateway.request_address();
    let rcpt = to.parse::<lettre::Address>().map_err(|_| {
        Reason::new(
            code::RELAY_ADDRESS,
            format!("Die Antragsadresse {to} ist ungültig."),
            format!("The request address {to} is invalid."),
        )
    })?;
    let envelope = Envelope::new(None, vec![rcpt.clone()])
        .map_err(|_| Reason::new(code::RELAY_ADDRESS, "Keine Empfänger.", "No recipients."))?;
    let body = mail_builder::MessageBuilder::new()
        .from(("De-Mail-Helfer", to.as_str()))
        .to(to.as_str())
        .subject("Antrag: De-Mail für mich / request: De-Mail for me")
        .text_body("Bitte schalten Sie De-Mail für mich frei.\r\nPlease enable De-Mail for me.\r\n")
        .write_to_vec()
        .map_err(|e| {
            tracing::error!(error = %e, "request message not buildable");
            Reason::new(code::INTERNAL.id, "Interner Fehler.", "Internal error.")
        })?;
    match timed(cfg.gateway.timeout, host, transaction(conn, &envelope, &body)).await? {
        Ok(r) => Ok(r.message().collect::<Vec<_>>().join(" ")),
        Err(e) => Err(classify(&e, host).reason),
    }
}

/// MAIL, RCPT, DATA and the message in 64 KiB pieces (lettre's `send` would copy the
/// whole message once more for dot-stuffing).
async fn transaction(
    conn: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    mime: &[u8],
) -> Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error> {
    use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
    use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};
    let mut params = Vec::new();
    let ascii = |a: &lettre::Address| AsRef::<str>::as_ref(a).is_ascii();
    let non_ascii_addr = envelope.from().is_some_and(|a| !ascii(a)) || envelope.to().iter().any(|a| !ascii(a));
    if non_ascii_addr && conn.server_info().supports_feature(Extension::SmtpUtfEight) {
        params.push(MailParameter::SmtpUtfEight);
    }
    if !mime.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    conn.command(Mail::new(envelope.from().cloned(), params)).await?;
    for to in envelope.to() {
        conn.command(Rcpt::new(to.clone(), vec![])).await?;
    }
    conn.command(Data).await?;
    conn.message_iter(mime.chunks(64 * 1024)).await
}

/// One attempt for one message over an open session.
pub async fn deliver(cfg: &Config, conn: &mut AsyncSmtpConnection, entry: &OutboxEntry, mime: &[u8]) -> Outcome {
    let envelope = match envelope(entry) {
        Ok(e) => e,
        Err(o) => return o,
    };
    let host = cfg.gateway.host.trim();
    // Generous: DATA of a large message over a slow line.
    let secs = cfg.gateway.timeout.max(1) + (mime.len() as u64 / 100_000);
    match timed(secs, host, transaction(conn, &envelope, mime)).await {
        Err(i) => Outcome::Retry(i, None),
        Ok(Ok(resp)) => Outcome::Sent(format!("{} {}", resp.code(), resp.message().collect::<Vec<_>>().join(" "))),
        Ok(Err(e)) => classify(&e, host).into(),
    }
}

/// Delay before attempt `attempts + 1`.
pub fn backoff(cfg: &Config, attempts: i64) -> Duration {
    let exp = attempts.clamp(1, 30) as u32 - 1;
    let secs = cfg.relay.retry_initial.saturating_mul(1u64 << exp.min(20)).min(cfg.relay.retry_max);
    Duration::from_secs(secs)
}

/// The relay: `relay.connections` workers, each with its own gateway session, taking
/// messages from the outbox one at a time. Ends when shutdown is requested.
pub async fn run(state: Arc<AppState>) {
    let n = state.config.relay.connections.clamp(1, 16);
    let workers: Vec<_> = (0..n).map(|i| tokio::spawn(worker(state.clone(), i))).collect();
    for w in workers {
        let _ = w.await;
    }
}

async fn worker(state: Arc<AppState>, n: u32) {
    tracing::info!(worker = n, host = %state.config.gateway.host, port = state.config.gateway.port, "relay worker started");
    let mut session: Option<(AsyncSmtpConnection, Instant)> = None;
    let mut session_gen = 0u64;
    loop {
        if state.is_shutting_down() {
            break;
        }
        // Settings changed in the tray take effect with the next session.
        let (cfg, gen) = state.current_config();
        if gen != session_gen {
            if let Some((mut c, _)) = session.take() {
                let _ = c.quit().await;
            }
            session_gen = gen;
        }
        let claimed = state.with_store(|s| s.claim_due(now_ms())).await;
        match claimed {
            Ok(Some((entry, mime))) => {
                tracing::info!(id = %entry.id, message_id = %entry.message_id, attempt = entry.attempts, "relaying");
                // A connection idle for a while may have been closed by the gateway: NOOP first.
                if let Some((c, used)) = session.as_mut() {
                    if used.elapsed() > Duration::from_secs(5) && !c.test_connected().await {
                        session = None;
                    }
                }
                if session.is_none() {
                    match connect(&cfg).await {
                        Ok((c, who)) => {
                            state.set_signed_in(who);
                            session = Some((c, Instant::now()));
                        }
                        Err(e) => {
                            record(&state, &entry, Outcome::Retry(e, None)).await;
                            continue;
                        }
                    }
                }
                let Some((conn, used)) = session.as_mut() else { continue };
                let outcome = deliver(&cfg, conn, &entry, &mime).await;
                *used = Instant::now();
                // After a refusal the session may be in any state: start the next one fresh.
                if !matches!(outcome, Outcome::Sent(_)) {
                    if let Some((mut c, _)) = session.take() {
                        c.abort().await;
                    }
                }
                record(&state, &entry, outcome).await;
            }
            Ok(None) => {
                if session.as_ref().is_some_and(|(_, used)| used.elapsed() > Duration::from_secs(30)) {
                    if let Some((mut c, _)) = session.take() {
                        let _ = c.quit().await;
                    }
                }
                let next = state.with_store(|s| s.next_due()).await.ok().flatten();
                let poll = Duration::from_secs(cfg.relay.poll_interval.max(1));
                let wait = next.map(|t| Duration::from_millis((t - now_ms()).max(0) as u64).min(poll)).unwrap_or(poll);
                tokio::select! {
                    _ = state.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = state.shutdown_requested() => break,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "outbox not readable; retrying in 5 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = state.shutdown_requested() => break,
                }
            }
        }
    }
    if let Some((mut c, _)) = session.take() {
        let _ = c.quit().await;
    }
    tracing::info!(worker = n, "relay worker stopped");
}

async fn record(state: &Arc<AppState>, entry: &OutboxEntry, outcome: Outcome) {
    let (cfg, _) = state.current_config();
    let cfg = &cfg;
    let id = entry.id.clone();
    let result = match outcome {
        Outcome::Sent(reply) => {
            tracing::info!(id = %id, "sent");
            state.set_gateway(GatewayState::Connected, None);
            state.with_store(move |s| s.mark_sent(&id, &reply)).await
        }
        Outcome::Failed(err, reply) => {
            tracing::warn!(id = %id, code = %err.code, "failed permanently: {}", err.message_en);
            state.set_gateway(GatewayState::Connected, None);
            state.with_store(move |s| s.mark_failed(&id, &err, reply.as_deref())).await
        }
        Outcome::Retry(err, reply) => {
            let age_secs = ((now_ms() - entry.created_at) / 1000).max(0) as u64;
            let gw = if err.code == code::RELAY_UNREACHABLE { GatewayState::Unreachable } else { GatewayState::Error };
            if err.code == code::RELAY_SIGNIN || err.code == code::RELAY_AUTH {
                state.set_signin_problem(err.clone());
            }
            state.set_gateway(gw, Some(err.clone()));
            if age_secs >= cfg.relay.give_up_after {
                tracing::warn!(id = %id, code = %err.code, "giving up after {age_secs} s");
                let err = Reason::new(
                    code::RELAY_GAVE_UP,
                    format!(
                        "Die De-Mail konnte nicht zugestellt werden; der Helfer hat aufgegeben. Letzter Grund: {}",
                        err.message
                    ),
                    format!("The De-Mail could not be delivered; the helper gave up. Last reason: {}", err.message_en),
                );
                state.with_store(move |s| s.mark_failed(&id, &err, reply.as_deref())).await
            } else {
                let delay = backoff(cfg, entry.attempts);
                tracing::info!(id = %id, code = %err.code, retry_in_s = delay.as_secs(), "deferred: {}", err.message_en);
                let next = now_ms() + delay.as_millis() as i64;
                state.with_store(move |s| s.mark_retry(&id, next, &err, reply.as_deref())).await
            }
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot record the relay result");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_person_is_read_from_the_gateway_reply() {
        let s = SignedIn::from_reply(
            "2.7.0 Angemeldet als Peter Meier (kerberos). 2.7.0 Authenticated as Peter Meier (kerberos).",
            "kerberos",
        );
        assert_eq!((s.person.as_str(), s.method.as_str()), ("Peter Meier", "kerberos"));
        let s = SignedIn::from_reply("2.7.0 Angemeldet als fachverfahren (account).", "ldap");
        assert_eq!((s.person.as_str(), s.method.as_str()), ("fachverfahren", "account"));
        assert_eq!((s.method_label.as_str(), s.method_label_en.as_str()), ("Anwendungskonto", "application account"));
        let s =
            SignedIn::from_reply("Angemeldet als Meier (Bauamt) (ldap). Authenticated as Meier (Bauamt) (ldap).", "x");
        assert_eq!((s.person.as_str(), s.method.as_str()), ("Meier (Bauamt)", "ldap"));
        assert_eq!(SignedIn::from_reply("Authentication succeeded", "ldap").person, "Authentication succeeded");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let mut c = Config::default();
        c.relay.retry_initial = 10;
        c.relay.retry_max = 100;
        let s: Vec<u64> = (1..=6).map(|a| backoff(&c, a).as_secs()).collect();
        assert_eq!(s, vec![10, 20, 40, 80, 100, 100]);
    }
}
