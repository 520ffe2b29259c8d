//! Optional local SMTP submission (issue 4 §3), off by default: mail programs and
//! specialist applications on the same desk that lack the add-in submit De-Mail to
//! `127.0.0.1:<port>`. Options come from subject tags (`[P, VB] Betreff`) or
//! `X-de-mail-*` headers and are turned into headers by the core; the message goes into
//! the same outbox as the add-in's.
//!
//! Authentication: AUTH PLAIN/LOGIN with any user name and a pairing token as password
//! (`demail pair provision --client "Fachverfahren X"`), so every program is paired and
//! can be revoked like an add-in. The listener speaks SMTP without TLS because it binds
//! only to loopback; the SMTP server framework is demail-smtp.

use crate::api;
use crate::mime::{self, RawExtras};
use crate::pairing::{self, TokenState};
use crate::state::AppState;
use demail_smtp::{Accepted, AuthResult, Authenticated, Envelope, Handler, Reject};
use std::sync::Arc;

pub struct Submission {
    pub state: Arc<AppState>,
}

/// The API's refusal as an SMTP reply: `[code] German … / … English`.
fn reject_from(e: &crate::error::ApiError) -> Reject {
    crate::error::log_cause(&e.error);
    let (code, enhanced) = match e.status.as_u16() {
        413 => (552, "5.3.4"),
        409 | 422 | 400 => (550, "5.7.1"),
        _ => (451, "4.3.0"),
    };
    let r = e.reason();
    Reject::new(code, enhanced, r.to_string(), format!("[{}] {}", r.code, r.message_en))
}

impl Handler for Submission {
    async fn authenticate(&self, user: &str, password: &str) -> AuthResult {
        let token = password.to_string();
        let ttl = pairing::token_ttl(&self.state.config);
        match self.state.with_store(move |s| pairing::verify(s, &token, ttl)).await {
            Ok(TokenState::Approved(_)) => {
                AuthResult::Accepted(Authenticated { user: user.to_string(), method: "token".into(), display: None })
            }
            _ => AuthResult::Refused,
        }
    }

    async fn deliver(&self, env: &Envelope, message: Vec<u8>) -> Result<Accepted, Reject> {
        let state = self.state.clone();
        let (policy, _) = state.policy().map_err(|e| reject_from(&e))?;
        let dialect = state.config.gateway.dialect;
        let rcpts = env.rcpt_to.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            let extras = RawExtras {
                options: &[],
                private_id: None,
                confirmed: false,
                forwarded_demail: false,
                envelope_rcpts: Some(&rcpts),
            };
            mime::prepare_raw(message.into(), &extras, &policy, dialect, &api::env())
        })
        .await
        .map_err(|_| Reject::temporary("Interner Fehler im De-Mail-Helfer.", "Internal error in the De-Mail helper."))?
        .map_err(|e| reject_from(&e))?;
        let client = env.session.auth_user.as_ref().map(|u| format!("smtp:{u}"));
        let (entry, _dup) = api::store_prepared(&state, prepared, client).await.map_err(|e| reject_from(&e))?;
        Ok(Accepted { id: entry.id })
    }
}

/// The server settings: loopback, AUTH required (without TLS, loopback only).
pub fn smtp_config(state: &AppState) -> demail_smtp::Config {
    demail_smtp::Config {
        hostname: "demail-helper.localhost".into(),
        offer_auth: true,
        require_auth: true,
        allow_auth_without_tls: true,
        allowed_clients: vec!["127.0.0.0/8".parse().expect("valid network")],
        max_message_size: state.config.api.max_body.0 as usize,
        max_recipients: 500,
        max_connections: 20,
        ..Default::default()
    }
}
