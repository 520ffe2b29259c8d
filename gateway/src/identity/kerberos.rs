//! SASL GSSAPI (RFC 4752), the gateway's side: a caseworker's Kerberos ticket, checked
//! with the gateway's keytab (`KRB5_KTNAME`, or `[identity] keytab`). The SMTP session
//! passes each client response in and sends back what [`GssapiServer::step`] returns.
//!
//! Exchange: context tokens until the context stands; then the server offers "no
//! security layer" in a wrapped 4-byte message and the client answers with its choice and
//! an optional authorisation identity, which must be empty or the authenticated principal.
//! TLS already protects the session, so no SASL security layer is ever negotiated.

use cross_krb5::{AcceptFlags, K5Ctx, K5ServerCtx, PendingServerCtx, ServerCtx, Step as KStep};
use demail_core::Reason;

/// RFC 4752 §3.1: bit 0 of the first octet is "no security layer".
const NO_SECURITY_LAYER: u8 = 0x01;

/// What the session does next.
#[derive(Debug)]
pub enum Step {
    /// Send this challenge (`334 <base64>`), wait for the next response.
    Challenge(Vec<u8>),
    /// Authenticated as this principal (`user@REALM`).
    Done(String),
    /// Refused; the reason is for the log (the client gets a plain 535).
    Failed(Reason),
}

enum State {
    Start,
    Pending(PendingServerCtx),
    /// The context stands and its last token went out; the client answers with nothing.
    AwaitEmpty(ServerCtx),
    /// The security-layer offer went out.
    LayerOffered(ServerCtx, String),
    Over,
}

pub struct GssapiServer {
    state: State,
    service: Option<String>,
    realms: Vec<String>,
}

fn failed(what: impl std::fmt::Display) -> Step {
    Step::Failed(Reason::new(
        "identity.kerberos_failed",
        format!("Kerberos-Anmeldung gescheitert: {what}"),
        format!("Kerberos authentication failed: {what}"),
    ))
}

impl GssapiServer {
    /// `service`: the gateway's principal (`smtp/gw.example.org@REALM`), or any key in the
    /// keytab when `None`. `realms`: the realms whose people may sign in (empty: any).
    pub fn new(service: Option<String>, realms: Vec<String>) -> Self {
        GssapiServer { state: State::Start, service, realms }
    }

    pub fn step(&mut self, response: &[u8]) -> Step {
        match std::mem::replace(&mut self.state, State::Over) {
            State::Start if response.is_empty() => {
                // The client gave no initial response: ask for its first token.
                self.state = State::Start;
                Step::Challenge(Vec::new())
            }
            State::Start => match ServerCtx::new(AcceptFlags::empty(), self.service.as_deref(), None) {
                Ok(p) => self.context_step(p, response),
                Err(e) => failed(format!("keytab: {e}")),
            },
            State::Pending(p) => self.context_step(p, response),
            State::AwaitEmpty(ctx) => self.offer_layer(ctx),
            State::LayerOffered(mut ctx, principal) => {
                let msg = match ctx.unwrap(response) {
                    Ok(m) => m.to_vec(),
                    Err(e) => return failed(format!("unwrap: {e}")),
                };
                if msg.len() < 4 || msg[0] != NO_SECURITY_LAYER {
                    return failed("the client chose a security layer that was not offered");
                }
                let authz = String::from_utf8_lossy(&msg[4..]).to_string();
                if !authz.is_empty() && !authz.eq_ignore_ascii_case(&principal) {
                    return failed(format!("{principal} may not act as {authz}"));
                }
                Step::Done(principal)
            }
            State::Over => failed("exchange already over"),
        }
    }

    fn context_step(&mut self, pending: PendingServerCtx, token: &[u8]) -> Step {
        match pending.step(token) {
            Ok(KStep::Continue((p, tok))) => {
                let t = tok.to_vec();
                self.state = State::Pending(p);
                Step::Challenge(t)
            }
            Ok(KStep::Finished((ctx, Some(tok)))) => {
                let t = tok.to_vec();
                self.state = State::AwaitEmpty(ctx);
                Step::Challenge(t)
            }
            Ok(KStep::Finished((ctx, None))) => self.offer_layer(ctx),
            Err(e) => failed(e),
        }
    }

    fn offer_layer(&mut self, mut ctx: ServerCtx) -> Step {
        let principal = match ctx.client() {
            Ok(p) => p,
            Err(e) => return failed(format!("client name: {e}")),
        };
        let realm = principal.rsplit_once('@').map(|(_, r)| r).unwrap_or("");
        if !self.realms.is_empty() && !self.realms.iter().any(|r| r == realm) {
            return failed(format!("realm {realm} is not accepted"));
        }
        // No layer offered but "none"; max buffer size 0 (RFC 4752 §3.1).
        match ctx.wrap(false, &[NO_SECURITY_LAYER, 0, 0, 0]) {
            Ok(w) => {
                let w = w.to_vec();
                self.state = State::LayerOffered(ctx, principal);
                Step::Challenge(w)
            }
            Err(e) => failed(format!("wrap: {e}")),
        }
    }
}
