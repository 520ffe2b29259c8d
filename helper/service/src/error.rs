//! API errors: an HTTP status, a stable code, a German and an English text.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use demail_core::Reason;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub message_en: String,
    /// Extra data, e.g. the core's reasons for a blocked submit.
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, de: impl Into<String>, en: impl Into<String>) -> Self {
        ApiError { status, code: code.into(), message: de.into(), message_en: en.into(), details: None }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn from_reason(status: StatusCode, r: &Reason) -> Self {
        ApiError::new(status, &r.code, r.message.clone(), r.message_en.clone())
    }

    pub fn body(&self) -> Value {
        let mut e = json!({ "code": self.code, "message": self.message, "message_en": self.message_en });
        if let Some(d) = &self.details {
            e["details"] = d.clone();
        }
        json!({ "ok": false, "error": e })
    }

    // ------------------------------------------------------------ common errors

    pub fn internal(what: &str) -> Self {
        // `what` is for the log only; the client gets a fixed text.
        tracing::error!(error = what, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Interner Fehler im De-Mail-Helfer. Details stehen im Protokoll des Helfers.",
            "Internal error in the De-Mail helper. Details are in the helper's log.",
        )
    }

    pub fn store(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "store error");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store.unavailable",
            "Der Postausgang des Helfers ist nicht verfügbar (Datenträger?). Die Nachricht wurde nicht angenommen.",
            "The helper's outbox is not available (disk?). The message was not accepted.",
        )
    }

    pub fn not_found(what_de: &str, what_en: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "request.not_found",
            format!("{what_de} nicht gefunden."),
            format!("{what_en} not found."),
        )
    }

    pub fn invalid(field: &str, de: &str, en: &str) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "request.invalid", format!("{field}: {de}"), format!("{field}: {en}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
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
