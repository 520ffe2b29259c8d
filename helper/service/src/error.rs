//! The helper's errors, all built on the core's [`Reason`]: [`ApiError`] for the loopback
//! API (HTTP status, reason, details for the client, cause for the log), and
//! [`demail_core::Error`] for the CLI, the tray, a failed start, the keyring and the store.
//! The cause (`source`) goes to the log only, never to the person.

use crate::code::{self, ApiCode};
use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

pub use demail_core::{Error, Reason};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: Error,
    /// Extra data, e.g. the core's reasons for a blocked submit.
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: ApiCode, de: impl Into<String>, en: impl Into<String>) -> Self {
        ApiError { status: code.status, error: Error::new(code.id, de, en), details: None }
    }

    /// A reason the core decided, passed on under its own code (docs/protocol.md §6 lists
    /// the families; a new one must be documented first).
    pub fn core(status: StatusCode, reason: Reason) -> Self {
        debug_assert!(code::is_core(&reason.code), "{} is not in code::CORE_FAMILIES", reason.code);
        ApiError { status, error: reason.into(), details: None }
    }

    /// The core's reason under one of the helper's codes: its text says why.
    pub fn wrap(code: ApiCode, reason: Reason) -> Self {
        ApiError { status: code.status, error: Reason { code: code.id.into(), ..reason }.into(), details: None }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn code(&self) -> &str {
        self.error.code()
    }

    pub fn reason(&self) -> &Reason {
        &self.error.reason
    }

    pub fn body(&self) -> Value {
        envelope(&self.error.reason, self.details.as_ref())
    }

    /// A bug: the client gets a fixed text, the log the cause.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let mut e = ApiError::new(
            code::INTERNAL,
            "Interner Fehler im De-Mail-Helfer. Details stehen im Protokoll des Helfers.",
            "Internal error in the De-Mail helper. Details are in the helper's log.",
        );
        e.error = e.error.caused_by(cause);
        e
    }

    pub fn invalid(field: &str, de: &str, en: &str) -> Self {
        ApiError::new(code::REQUEST_INVALID, format!("{field}: {de}"), format!("{field}: {en}"))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // The API says more than the store: whatever was asked, nothing was done (protocol.md §6).
        let reason = Reason::new(
            code::STORE_UNAVAILABLE.id,
            "Der Postausgang des Helfers ist nicht verfügbar (Datenträger?). Die Nachricht wurde nicht angenommen.",
            "The helper's outbox is not available (disk?). The message was not accepted.",
        );
        ApiError { status: code::STORE_UNAVAILABLE.status, error: Error { reason, ..e.0 }, details: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        log_cause(&self.error);
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"demail-helper\""),
            );
        }
        resp
    }
}

/// `{"ok": false, "error": {"code", "message", "message_en"[, "details"]}}`: the error
/// answer of the API, the tray's commands and the native-messaging host.
pub fn envelope(r: &Reason, details: Option<&Value>) -> Value {
    let mut e = json!({ "code": r.code, "message": r.message, "message_en": r.message_en });
    if let Some(d) = details {
        e["details"] = d.clone();
    }
    json!({ "ok": false, "error": e })
}

/// Put an error's cause into the log (the person has the reason already).
pub fn log_cause(e: &Error) {
    if let Some(cause) = &e.source {
        tracing::error!(code = %e.code(), cause = %cause, "{}", e.reason.message_en);
    }
}

/// The two lines for a terminal or a start-error file: `Fehler [code]: …`, `Error [code]: …`.
pub fn bilingual(r: &Reason) -> String {
    format!("Fehler [{c}]: {}\nError [{c}]: {}\n", r.message, r.message_en, c = r.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_failure_shows_its_code_and_keeps_its_cause_for_the_log() {
        let e = ApiError::from(StoreError::new("disk I/O error: /home/peter/.local/share/demail"));
        assert_eq!((e.code(), e.status), ("store.unavailable", StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(e.error.source.as_deref(), Some("disk I/O error: /home/peter/.local/share/demail"));
        let body = e.body().to_string();
        assert!(!body.contains("disk I/O") && !body.contains("/home/peter"), "{body}");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "not in code::CORE_FAMILIES")]
    fn an_undocumented_core_family_is_refused() {
        ApiError::core(StatusCode::BAD_REQUEST, Reason::new("seal.missing", "de", "en"));
    }
}
