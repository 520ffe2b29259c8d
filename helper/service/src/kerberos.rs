//! Kerberos single sign-on at the gateway: SASL GSSAPI (RFC 4752), the client's side,
//! over lettre's SMTP connection. lettre has no GSSAPI, so this adds only the mechanism
//! exchange (`AUTH GSSAPI`, `334` challenges, our responses) on its connection; TLS and
//! everything else stay lettre's.
//!
//! The ticket comes from the person's credential cache (Linux `KRB5CCNAME` or the
//! default cache; Windows: SSPI with the logged-on user), never from a password here.

use base64::Engine;
use cross_krb5::{ClientCtx, InitiateFlags, K5Ctx, PendingClientCtx, Step};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use std::fmt;

/// Why Kerberos sign-in did not work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No usable ticket (none, expired, or the KDC does not know the gateway): the
    /// person must sign in again. The text is the Kerberos library's, for the log.
    NoTicket(String),
    /// The gateway refused (535) or broke off the exchange; its reply.
    Refused(String),
    /// The gateway cannot decide now (454, the directory is down); its reply.
    Temporary(String),
    /// The gateway does not offer GSSAPI (504); its reply.
    NotOffered(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NoTicket(s) => write!(f, "no Kerberos ticket: {s}"),
            Failure::Refused(s) => write!(f, "refused: {s}"),
            Failure::Temporary(s) => write!(f, "temporary: {s}"),
            Failure::NotOffered(s) => write!(f, "not offered: {s}"),
        }
    }
}

/// One line to the server; lettre writes a command's `Display` as it is.
struct Line(String);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\r\n", self.0)
    }
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

/// The gateway's service principal for a host: `smtp/<host>` (the realm comes from the
/// Kerberos configuration's domain mapping).
pub fn service_principal(host: &str) -> String {
    format!("smtp/{}", host.trim().to_lowercase())
}

/// The client context: the first token for `target`. Blocking (it may ask the KDC for a
/// service ticket), so callers run it off the async runtime.
pub fn start(target: &str) -> Result<(PendingClientCtx, Vec<u8>), Failure> {
    ClientCtx::new(InitiateFlags::empty(), None, target, None)
        .map(|(p, t)| (p, t.to_vec()))
        .map_err(|e| Failure::NoTicket(format!("{e:#}")))
}

/// Run `AUTH GSSAPI` on an open (TLS) connection. Returns the gateway's 235 text,
/// which names the person as the directory knows them.
pub async fn authenticate(conn: &mut AsyncSmtpConnection, target: &str) -> Result<String, Failure> {
    let t = target.to_string();
    let (pending, first) =
        tokio::task::spawn_blocking(move || start(&t)).await.map_err(|e| Failure::NoTicket(e.to_string()))??;
    let mut pending = Some(pending);
    let mut ctx: Option<ClientCtx> = None;
    let mut reply = send(conn, format!("AUTH GSSAPI {}", b64(&first))).await?;
    for _ in 0..8 {
        if reply.0 == 235 {
            return Ok(reply.1);
        }
        let challenge = base64::engine::general_purpose::STANDARD
            .decode(reply.1.trim())
            .map_err(|_| Failure::Refused(format!("challenge is not base64: {}", reply.1)))?;
        let response = if let Some(p) = pending.take() {
            // Context tokens; the last server token may finish it (our answer is then empty).
            match p.step(&challenge).map_err(|e| Failure::Refused(format!("{e:#}")))? {
                Step::Continue((p, tok)) => {
                    pending = Some(p);
                    tok.to_vec()
                }
                Step::Finished((c, tok)) => {
                    ctx = Some(c);
                    tok.map(|t| t.to_vec()).unwrap_or_default()
                }
            }
        } else {
            // The security-layer offer: we take "none" (TLS protects the session) and ask
            // for no other identity than our own.
            let c = ctx.as_mut().ok_or_else(|| Failure::Refused("exchange out of order".into()))?;
            let offer = c.unwrap(&challenge).map_err(|e| Failure::Refused(format!("{e:#}")))?;
            if offer.first().is_none_or(|b| b & 1 == 0) {
                return Err(Failure::Refused("the gateway offers no plain session".into()));
            }
            c.wrap(false, &[1, 0, 0, 0]).map_err(|e| Failure::Refused(format!("{e:#}")))?.to_vec()
        };
        reply = send(conn, b64(&response)).await?;
    }
    Err(Failure::Refused("exchange did not end".into()))
}

/// Send a line, read the reply: `(code, first line of text)`; 4xx/5xx become failures.
async fn send(conn: &mut AsyncSmtpConnection, line: String) -> Result<(u16, String), Failure> {
    match conn.command(Line(line)).await {
        Ok(r) => {
            let code: u16 = r.code().to_string().parse().unwrap_or(0);
            Ok((code, r.message().collect::<Vec<_>>().join(" ")))
        }
        Err(e) => {
            let text = format!("{e}");
            let status = e.status().map(|s| s.to_string()).unwrap_or_default();
            Err(if status.starts_with('4') {
                Failure::Temporary(text)
            } else if status == "504" {
                Failure::NotOffered(text)
            } else {
                Failure::Refused(text)
            })
        }
    }
}
