//! The loopback HTTP API, `/v1/…` (docs/protocol.md).
//!
//! Every request passes [`guard`] first: `Host` must be this helper's loopback
//! address (DNS rebinding), `Origin` must be absent, an add-in (`moz-extension://`) or an
//! origin IT listed; web pages get 403 and never a CORS header. Bodies are read with a
//! limit, every request has a deadline, and all routes except health, version and the
//! pairing request need a paired token.

use crate::code;
use crate::error::ApiError;
use crate::mime::{self, RawExtras, SubmitRequest};
use crate::pairing::{self, TokenState};
use crate::state::AppState;
use crate::store::{Enqueued, NewReceipt, OutboxEntry, Receipt};
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use demail_core::api::Env;
use demail_core::classify::{classify_raw, Kind, ReceiptType};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// The protocol version (docs/protocol.md). Bumped when actions are added.
pub const PROTOCOL: u32 = 2;

/// Actions and the protocol version that added them.
pub const ACTIONS: &[(&str, u32)] = &[
    ("health", 1),
    ("version", 1),
    ("pairing.request", 1),
    ("pairing.status", 1),
    ("policy", 1),
    ("check", 1),
    ("messages.submit", 1),
    ("outbox.list", 1),
    ("outbox.get", 1),
    ("outbox.raw", 1),
    ("outbox.retry", 1),
    ("outbox.cancel", 1),
    ("journal.list", 1),
    ("journal.receipt", 1),
    // Receipts with `raw` are checked; `check`, `counts`, `reasons` in the journal.
    ("journal.receipt_check", 2),
];

type AppResult<T> = Result<T, ApiError>;

fn ok(status: StatusCode, result: Value) -> Response {
    (status, Json(json!({ "ok": true, "result": result }))).into_response()
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/version", get(version))
        .route("/v1/pairing", post(pairing_request).get(pairing_status))
        .route("/v1/policy", get(policy))
        .route("/v1/check", post(check))
        .route("/v1/messages", post(submit))
        .route("/v1/outbox", get(outbox_list))
        .route("/v1/outbox/{id}", get(outbox_get))
        .route("/v1/outbox/{id}/raw", get(outbox_raw))
        .route("/v1/outbox/{id}/retry", post(outbox_retry))
        .route("/v1/outbox/{id}/cancel", post(outbox_cancel))
        .route("/v1/journal", get(journal))
        .route("/v1/journal/receipts", post(journal_receipt))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(code::REQUEST_NOT_FOUND, "Diese Adresse gibt es nicht.", "No such endpoint.")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(code::REQUEST_METHOD, "Diese Methode ist hier nicht erlaubt.", "This method is not allowed here.")
}

// ------------------------------------------------------------------ guard

fn forbidden(code: code::ApiCode, de: &str, en: &str) -> Response {
    ApiError::new(code, de, en).into_response()
}

/// Is this `Origin` allowed? `None`: no Origin header (native clients, extension
/// background pages that send none).
fn origin_allowed(state: &AppState, origin: &str) -> bool {
    let api = &state.config.api;
    if api.allowed_origins.iter().any(|o| o == origin) {
        return true;
    }
    api.allow_moz_extension
        && origin
            .strip_prefix("moz-extension://")
            .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

async fn guard(State(state): State<Arc<AppState>>, req: Request<Body>, next: Next) -> Response {
    let port = state.port();
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let host_ok = host == format!("127.0.0.1:{port}") || host == format!("localhost:{port}");
    if !host_ok {
        return forbidden(
            code::REQUEST_HOST,
            "Falscher Host-Kopf: Der Helfer antwortet nur unter 127.0.0.1 oder localhost mit seinem Port.",
            "Wrong Host header: the helper answers only as 127.0.0.1 or localhost with its port.",
        );
    }
    let origin = match req.headers().get(header::ORIGIN).map(|o| o.to_str()) {
        None => None,
        Some(Ok(o)) if origin_allowed(&state, o) => Some(o.to_string()),
        Some(_) => {
            return forbidden(
                code::REQUEST_ORIGIN,
                "Anfragen von Webseiten sind nicht erlaubt.",
                "Requests from web pages are not allowed.",
            )
        }
    };
    // CORS only for origins IT listed explicitly (e.g. an Outlook add-in served over https).
    let cors = origin.filter(|o| state.config.api.allowed_origins.iter().any(|a| a == o));
    if req.method() == Method::OPTIONS {
        let Some(o) = cors else {
            return forbidden(
                code::REQUEST_ORIGIN,
                "Keine CORS-Freigabe für diesen Ursprung.",
                "No CORS permission for this origin.",
            );
        };
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&o) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        return r;
    }
    let timeout = Duration::from_secs(state.config.api.request_timeout.max(1));
    let mut resp = match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            ApiError::new(code::REQUEST_TIMEOUT, "Die Anfrage hat zu lange gedauert.", "The request took too long.")
                .into_response()
        }
    };
    let h = resp.headers_mut();
    h.insert("x-demail-protocol", HeaderValue::from(PROTOCOL));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if let Some(o) = cors.and_then(|o| HeaderValue::from_str(&o).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

// ------------------------------------------------------------------ auth

fn bearer(headers: &HeaderMap) -> Result<String, ApiError> {
    let missing = || {
        ApiError::new(
            code::AUTH_MISSING,
            "Anmeldung fehlt: Das Add-in muss mit dem Helfer gekoppelt sein (Authorization: Bearer …).",
            "Authentication missing: the add-in must be paired with the helper (Authorization: Bearer …).",
        )
    };
    let v = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let v = v.to_str().map_err(|_| missing())?;
    let t = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).ok_or_else(missing)?.trim();
    if t.is_empty() || t.len() > 200 {
        return Err(invalid_token());
    }
    Ok(t.to_string())
}

fn invalid_token() -> ApiError {
    ApiError::new(
        code::AUTH_INVALID,
        "Die Kopplung ist ungültig oder wurde widerrufen. Bitte koppeln Sie das Add-in neu.",
        "The pairing is invalid or was revoked. Please pair the add-in again.",
    )
}

async fn token_state(state: &Arc<AppState>, headers: &HeaderMap) -> Result<TokenState, ApiError> {
    let token = bearer(headers)?;
    let ttl = pairing::token_ttl(&state.config);
    Ok(state.with_store(move |s| pairing::verify(s, &token, ttl)).await?)
}

/// A request with an approved pairing.
pub struct Authed {
    #[allow(dead_code)]
    pub pairing_id: String,
}

impl FromRequestParts<Arc<AppState>> for Authed {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        match token_state(state, &parts.headers).await? {
            TokenState::Approved(id) => Ok(Authed { pairing_id: id }),
            TokenState::Pending(_) => Err(ApiError::new(
                code::AUTH_PENDING,
                "Die Kopplung wartet noch auf die Bestätigung durch den Benutzer.",
                "The pairing is still waiting for the user's approval.",
            )),
            TokenState::Invalid => Err(invalid_token()),
        }
    }
}

// ------------------------------------------------------------------ body

/// The largest pairing request: a name and an add-in id. It needs no token, so nobody
/// may make the helper read more than this without one.
pub const PAIRING_MAX_BODY: usize = 4096;

/// Read a body of at most `limit` bytes: a larger `Content-Length` is refused before a
/// byte is read, a chunked body as soon as it passes the limit (413), never buffered whole.
async fn read_body(limit: usize, headers: &HeaderMap, body: Body) -> AppResult<axum::body::Bytes> {
    let too_large = || {
        ApiError::new(
            code::REQUEST_TOO_LARGE,
            format!("Die Anfrage ist größer als die erlaubten {} Bytes.", limit),
            format!("The request is larger than the allowed {} bytes.", limit),
        )
    };
    if let Some(len) =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    // Collect the frames into one buffer sized by Content-Length: a large message is
    // held once, not as frames plus a contiguous copy.
    let hint = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut buf: Vec<u8> = Vec::with_capacity(hint.min(limit));
    let mut body = http_body_util::Limited::new(body, limit);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return Err(too_large()),
            Err(_) => {
                return Err(ApiError::new(
                    code::REQUEST_BODY,
                    "Der Inhalt der Anfrage konnte nicht gelesen werden.",
                    "The request body could not be read.",
                ))
            }
        }
    }
    Ok(buf.into())
}

fn max_body(state: &AppState) -> usize {
    state.config.api.max_body.0 as usize
}

/// A JSON body straight into its type, without a generic `Value` in between. A shape
/// error in a body that is not JSON at all is reported as the JSON error (checked without
/// building anything).
fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> AppResult<T> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Err(syntax) => json_error(&syntax),
            Ok(_) => shape_error(&e),
        },
        _ => json_error(&e),
    })
}

fn json_error(e: &serde_json::Error) -> ApiError {
    ApiError::new(
        code::REQUEST_JSON,
        format!("Die Anfrage ist kein gültiges JSON (Zeile {}, Spalte {}).", e.line(), e.column()),
        format!("The request is not valid JSON (line {}, column {}).", e.line(), e.column()),
    )
}

fn shape_error(e: &serde_json::Error) -> ApiError {
    let msg = e.to_string();
    // Option ids carry the core's reason.
    match demail_core::reason::decode_reason(&msg) {
        Some(r) => ApiError::core(StatusCode::BAD_REQUEST, r),
        None => ApiError::new(
            code::REQUEST_INVALID,
            format!("Die Anfrage hat nicht die erwartete Form: {msg}"),
            format!("The request does not have the expected shape: {msg}"),
        ),
    }
}

fn parse_json(bytes: &[u8]) -> AppResult<Value> {
    serde_json::from_slice(bytes).map_err(|e| json_error(&e))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"))
        .unwrap_or(false)
}

fn need_json(headers: &HeaderMap) -> AppResult<()> {
    if is_json(headers) {
        Ok(())
    } else {
        Err(ApiError::new(
            code::REQUEST_CONTENT_TYPE,
            "Erwartet wird Content-Type: application/json.",
            "Expected Content-Type: application/json.",
        ))
    }
}

pub(crate) fn env() -> Env {
    let mut entropy = vec![0u8; 16];
    let _ = getrandom::fill(&mut entropy);
    Env { now_millis: crate::store::now_ms().max(0) as u64, entropy }
}

// ------------------------------------------------------------------ handlers

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let (gw, _) = state.gateway();
    ok(
        StatusCode::OK,
        json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": PROTOCOL,
            "gateway": gw,
            // The add-in waits longer than this for a submit (docs/protocol.md).
            "request_timeout": state.config.api.request_timeout.max(1),
        }),
    )
}

async fn version() -> Response {
    let actions: Vec<Value> = ACTIONS.iter().map(|(a, v)| json!({ "action": a, "since": v })).collect();
    ok(
        StatusCode::OK,
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "core_version": demail_core::VERSION,
            "protocol": PROTOCOL,
            "actions": actions,
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PairingRequest {
    /// Who asks, shown to the user ("Thunderbird De-Mail-Add-in").
    client: String,
    /// The add-in's id as it states it (`browser.runtime.id`), shown to the user.
    #[serde(default)]
    addon_id: Option<String>,
}

fn printable(field: &str, v: &str) -> AppResult<String> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > 100 || v.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            "muss 1 bis 100 druckbare Zeichen haben.",
            "must have 1 to 100 printable characters.",
        ));
    }
    Ok(v.to_string())
}

fn pairing_limit() -> ApiError {
    ApiError::new(
        code::PAIRING_LIMIT,
        "Es warten bereits zu viele Kopplungsanfragen. Bestätigen oder verwerfen Sie diese zuerst („demail pair list“).",
        "Too many pairing requests are waiting. Approve or deny them first (\"demail pair list\").",
    )
}

/// `POST /v1/pairing`, the one action that reads a body without a token: at most
/// [`PAIRING_MAX_BODY`] bytes, parsed straight into [`PairingRequest`]. Open requests are
/// limited per origin and per add-in id, so one client's flood does not block another.
async fn pairing_request(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> AppResult<Response> {
    need_json(&headers)?;
    let bytes = read_body(PAIRING_MAX_BODY, &headers, body).await?;
    let req: PairingRequest = parse(&bytes)?;
    drop(bytes);
    let client = printable("client", &req.client)?;
    let addon_id = req.addon_id.as_deref().map(|a| printable("addon_id", a)).transpose()?;
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()).map(str::to_string);
    let p = &state.config.pairing;
    let (per_origin, max, ttl) = (i64::from(p.pending_per_origin), i64::from(p.pending_max), p.pending_ttl);
    let res = state
        .with_store(move |s| {
            let now = crate::store::now_ms();
            s.purge_pairings(now)?;
            let n = s.pending_counts(now, origin.as_deref(), addon_id.as_deref())?;
            if n.origin >= per_origin || n.addon >= per_origin || n.total >= max {
                return Ok(None);
            }
            pairing::request(s, &client, origin.as_deref(), addon_id.as_deref(), ttl).map(Some)
        })
        .await?;
    let Some((p, token)) = res else {
        return Err(pairing_limit());
    };
    tracing::info!(pairing = %p.id, client = %p.client, origin = ?p.origin, addon_id = ?p.addon_id, "pairing requested");
    Ok(ok(
        StatusCode::CREATED,
        json!({
            "pairing_id": p.id,
            "code": p.code,
            "token": token,
            "status": p.status,
            "expires_at": p.expires_at,
            "approve_hint": format!("demail pair approve {}", p.code.clone().unwrap_or_default()),
        }),
    ))
}

async fn pairing_status(State(state): State<Arc<AppState>>, headers: HeaderMap) -> AppResult<Response> {
    let st = token_state(&state, &headers).await?;
    let id = match st {
        TokenState::Approved(id) | TokenState::Pending(id) => id,
        TokenState::Invalid => return Err(invalid_token()),
    };
    let p = state.with_store(move |s| s.pairing(&id)).await?.ok_or_else(invalid_token)?;
    Ok(ok(StatusCode::OK, json!({ "pairing_id": p.id, "client": p.client, "status": p.status })))
}

#[derive(Deserialize)]
struct PolicyQuery {
    sender: Option<String>,
}

async fn policy(State(state): State<Arc<AppState>>, _a: Authed, Query(q): Query<PolicyQuery>) -> AppResult<Response> {
    let (p, source) = state.policy()?;
    let mut summary = json!({
        "demail_domains": p.demail.domain_patterns.iter().chain(p.demail.extra_domains.iter()).map(|d| d.as_string()).collect::<Vec<_>>(),
        "excluded_domains": p.demail.excluded_domains.iter().map(|d| d.as_string()).collect::<Vec<_>>(),
        "internal_domains": p.organisation.internal_domains.iter().map(|d| d.as_string()).collect::<Vec<_>>(),
        "mixed_addressing": p.rules.mixed_addressing,
        "max_size": p.rules.max_size,
        "options": p.authorization.default_options,
    });
    if let Some(sender) = q.sender {
        let addr = demail_core::address::normalize_addr_spec(&sender)
            .map_err(|r| ApiError::core(StatusCode::BAD_REQUEST, r))?;
        let grant = p.grant(&addr);
        summary["sender"] = json!(addr);
        summary["authorized"] = json!(grant.allowed);
        summary["options"] = json!(grant.options);
        summary["cost_unit"] = json!(grant.cost_unit);
    }
    Ok(ok(
        StatusCode::OK,
        json!({ "source": source, "dialect": state.config.gateway.dialect, "summary": summary, "policy": &*p }),
    ))
}

async fn check(State(state): State<Arc<AppState>>, _a: Authed, headers: HeaderMap, body: Body) -> AppResult<Response> {
    need_json(&headers)?;
    let bytes = read_body(max_body(&state), &headers, body).await?;
    let input = parse_json(&bytes)?;
    let (p, _) = state.policy()?;
    let out = demail_core::api::call("check", &p, &input, &env())
        .map_err(|e| ApiError::core(StatusCode::BAD_REQUEST, e.reason))?;
    Ok(ok(StatusCode::OK, out))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawQuery {
    options: Option<String>,
    private_id: Option<String>,
    confirmed: bool,
    forwarded_demail: bool,
}

async fn submit(
    State(state): State<Arc<AppState>>,
    _a: Authed,
    Query(q): Query<RawQuery>,
    headers: HeaderMap,
    body: Body,
) -> AppResult<Response> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let is_rfc822 = ct.split(';').next().map(str::trim) == Some("message/rfc822");
    if !is_rfc822 {
        need_json(&headers)?;
    }
    let bytes = read_body(max_body(&state), &headers, body).await?;
    let (policy, _) = state.policy()?;
    let dialect = state.config.gateway.dialect;
    let prepared = if is_rfc822 {
        let options: Vec<String> = q.options.unwrap_or_default().split(',').map(str::to_string).collect();
        let private_id = q.private_id;
        let (confirmed, forwarded) = (q.confirmed, q.forwarded_demail);
        tokio::task::spawn_blocking(move || {
            let extras = RawExtras {
                options: &options,
                private_id: private_id.as_deref(),
                confirmed,
                forwarded_demail: forwarded,
                envelope_rcpts: None,
            };
            mime::prepare_raw(bytes, &extras, &policy, dialect, &env())
        })
        .await
        .map_err(ApiError::internal)??
    } else {
        let req: SubmitRequest = parse(&bytes)?;
        drop(bytes);
        tokio::task::spawn_blocking(move || {
            if let Some(raw_b64) = &req.raw {
                let structured = !req.from.is_empty()
                    || !req.to.is_empty()
                    || !req.cc.is_empty()
                    || !req.bcc.is_empty()
                    || !req.subject.is_empty()
                    || req.text.is_some()
                    || req.html.is_some()
                    || !req.attachments.is_empty()
                    || req.message_id.is_some();
                if structured {
                    return Err(ApiError::invalid(
                        "raw",
                        "Entweder „raw“ oder die einzelnen Felder angeben, nicht beides.",
                        "Give either \"raw\" or the single fields, not both.",
                    ));
                }
                use base64::Engine;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(raw_b64.trim())
                    .map_err(|_| ApiError::invalid("raw", "ist kein gültiges Base64.", "is not valid base64."))?;
                let extras = RawExtras {
                    options: &req.options,
                    private_id: req.private_id.as_deref(),
                    confirmed: req.confirmed,
                    forwarded_demail: req.forwarded_demail,
                    envelope_rcpts: None,
                };
                mime::prepare_raw(raw.into(), &extras, &policy, dialect, &env())
            } else {
                mime::prepare_structured(&req, &policy, dialect, &env())
            }
        })
        .await
        .map_err(ApiError::internal)??
    };

    let check = serde_json::to_value(&prepared.check).unwrap_or(Value::Null);
    let generated = prepared.private_id_generated;
    let (entry, duplicate) = store_prepared(&state, prepared, None).await?;
    let status = if duplicate { StatusCode::OK } else { StatusCode::ACCEPTED };
    let mut v = outbox_json(&entry);
    v["duplicate"] = json!(duplicate);
    v["private_id_generated"] = json!(generated && !duplicate);
    v["check"] = check;
    Ok(ok(status, v))
}

/// Test hook: `DEMAIL_HELPER_TEST_COMMIT_DELAY_MS` makes the commit of a new message
/// wait that long inside the store (past the request's deadline, like a slow disk). Unset
/// (always, outside the tests) it does nothing.
pub const TEST_COMMIT_DELAY_ENV: &str = "DEMAIL_HELPER_TEST_COMMIT_DELAY_MS";

fn test_commit_delay() -> Option<Duration> {
    static DELAY: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        let ms = std::env::var(TEST_COMMIT_DELAY_ENV).ok()?.parse::<u64>().ok()?;
        tracing::warn!(ms, "test hook: every new message is committed late");
        Some(Duration::from_millis(ms))
    })
}

/// Commit a prepared message to the outbox (fsync) and wake the relay. Returns the
/// entry and whether its Message-ID (same sender) was already there: a resend after a
/// lost answer stores nothing twice. The same Message-ID from another sender is refused.
pub(crate) async fn store_prepared(
    state: &Arc<AppState>,
    prepared: mime::Prepared,
    client: Option<String>,
) -> AppResult<(OutboxEntry, bool)> {
    let options: Vec<String> = prepared.options.ids().into_iter().map(str::to_string).collect();
    let dialect_s = match state.config.gateway.dialect {
        crate::config::Dialect::Headers => "headers",
        crate::config::Dialect::SubjectTags => "subject-tags",
    };
    let stored = state
        .with_store(move |s| {
            if let Some(d) = test_commit_delay() {
                if !s.has_message_id(&prepared.message_id)? {
                    std::thread::sleep(d);
                }
            }
            s.enqueue(&crate::store::NewMessage {
                message_id: &prepared.message_id,
                private_id: &prepared.private_id,
                sender: &prepared.sender,
                recipients: &prepared.recipients,
                subject: &prepared.subject,
                options: &options,
                dialect: dialect_s,
                mime_head: &prepared.mime.head,
                mime_body: &prepared.mime.body,
                client: client.as_deref(),
            })
        })
        .await?;
    let (entry, duplicate) = match stored {
        Enqueued::New(e) => (e, false),
        Enqueued::Existing(e) => (e, true),
        Enqueued::Taken => {
            return Err(ApiError::new(
                code::SUBMIT_MESSAGE_ID_TAKEN,
                "Diese Message-ID gehört im Postausgang bereits zu einer Nachricht eines anderen Absenders.",
                "This Message-ID already belongs to a message of another sender in the outbox.",
            ))
        }
    };
    state.wake.notify_one();
    tracing::info!(id = %entry.id, message_id = %entry.message_id, duplicate, "message accepted");
    Ok((entry, duplicate))
}

fn outbox_json(e: &OutboxEntry) -> Value {
    serde_json::to_value(e).unwrap_or(Value::Null)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
    private_id: Option<String>,
}

async fn outbox_list(
    State(state): State<Arc<AppState>>,
    _a: Authed,
    Query(q): Query<ListQuery>,
) -> AppResult<Response> {
    if let Some(s) = &q.status {
        if !["queued", "sending", "sent", "failed", "cancelled"].contains(&s.as_str()) {
            return Err(ApiError::invalid(
                "status",
                "muss queued, sending, sent, failed oder cancelled sein.",
                "must be queued, sending, sent, failed or cancelled.",
            ));
        }
    }
    let limit = q.limit.unwrap_or(200).min(1000);
    let (list, counts) = state.with_store(move |s| Ok((s.list(q.status.as_deref(), limit)?, s.counts()?))).await?;
    let counts: serde_json::Map<String, Value> = counts.into_iter().map(|(k, v)| (k, json!(v))).collect();
    Ok(ok(StatusCode::OK, json!({ "messages": list, "counts": counts })))
}

fn outbox_missing() -> ApiError {
    ApiError::new(
        code::OUTBOX_NOT_FOUND,
        "Diese Nachricht ist nicht im Postausgang.",
        "This message is not in the outbox.",
    )
}

async fn outbox_get(State(state): State<Arc<AppState>>, _a: Authed, Path(id): Path<String>) -> AppResult<Response> {
    let e = state.with_store(move |s| s.get(&id)).await?.ok_or_else(outbox_missing)?;
    Ok(ok(StatusCode::OK, outbox_json(&e)))
}

async fn outbox_raw(State(state): State<Arc<AppState>>, _a: Authed, Path(id): Path<String>) -> AppResult<Response> {
    let m = state.with_store(move |s| s.mime(&id)).await?.ok_or_else(outbox_missing)?;
    Ok(([(header::CONTENT_TYPE, "message/rfc822")], m).into_response())
}

async fn outbox_retry(State(state): State<Arc<AppState>>, _a: Authed, Path(id): Path<String>) -> AppResult<Response> {
    let (changed, e) = state.with_store(move |s| s.retry(&id)).await?.ok_or_else(outbox_missing)?;
    if !changed {
        return Err(ApiError::new(
            code::OUTBOX_STATE,
            format!("Im Zustand „{}“ kann die Nachricht nicht erneut gesendet werden.", e.status),
            format!("The message cannot be retried in state \"{}\".", e.status),
        )
        .with_details(outbox_json(&e)));
    }
    state.wake.notify_one();
    Ok(ok(StatusCode::OK, outbox_json(&e)))
}

async fn outbox_cancel(State(state): State<Arc<AppState>>, _a: Authed, Path(id): Path<String>) -> AppResult<Response> {
    let (changed, e) = state.with_store(move |s| s.cancel(&id)).await?.ok_or_else(outbox_missing)?;
    if !changed {
        return Err(ApiError::new(
            code::OUTBOX_STATE,
            format!("Im Zustand „{}“ kann die Nachricht nicht mehr zurückgehalten werden.", e.status),
            format!("The message can no longer be cancelled in state \"{}\".", e.status),
        )
        .with_details(outbox_json(&e)));
    }
    Ok(ok(StatusCode::OK, outbox_json(&e)))
}

/// The furthest receipt step: sent → dispatched → received → retrieved. Only receipts
/// that count (checked, and certifying the message handed over) move it.
fn receipt_status(receipts: &[Receipt]) -> &'static str {
    let has = |k: &str| receipts.iter().any(|r| r.kind == k && r.counts);
    if has("retrieve") {
        "retrieved"
    } else if has("receipt") {
        "received"
    } else if has("dispatch") {
        "dispatched"
    } else {
        "sent"
    }
}

async fn journal(State(state): State<Arc<AppState>>, _a: Authed, Query(q): Query<ListQuery>) -> AppResult<Response> {
    let limit = q.limit.unwrap_or(200).min(1000);
    let entries = state
        .with_store(move |s| {
            let list = s.journal(q.private_id.as_deref(), limit)?;
            let mut out = Vec::with_capacity(list.len());
            for e in list {
                let r = s.receipts_for(&e.private_id, &e.id)?;
                out.push((e, r));
            }
            Ok(out)
        })
        .await?;
    let list: Vec<Value> = entries
        .into_iter()
        .map(|(e, r)| {
            json!({
                "id": e.id, "message_id": e.message_id, "private_id": e.private_id, "subject": e.subject,
                "recipients": e.recipients, "options": e.options, "sent_at": e.sent_at,
                "gateway_reply": e.gateway_reply, "receipt_status": receipt_status(&r), "receipts": r,
            })
        })
        .collect();
    Ok(ok(StatusCode::OK, json!({ "messages": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptReport {
    /// The received receipt message, base64; classified and checked with the core.
    raw: Option<String>,
    private_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<ReceiptType>,
    time: Option<String>,
    message_id: Option<String>,
}

async fn journal_receipt(
    State(state): State<Arc<AppState>>,
    _a: Authed,
    headers: HeaderMap,
    body: Body,
) -> AppResult<Response> {
    need_json(&headers)?;
    let bytes = read_body(max_body(&state), &headers, body).await?;
    let r: ReceiptReport = parse(&bytes)?;
    let (private_id, kind, time, message_id, raw) = if let Some(raw) = r.raw {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .map_err(|_| ApiError::invalid("raw", "ist kein gültiges Base64.", "is not valid base64."))?;
        let (policy, _) = state.policy()?;
        let (c, raw) = tokio::task::spawn_blocking(move || (classify_raw(&raw, &policy), raw))
            .await
            .map_err(ApiError::internal)?;
        let kind = c.receipt.as_ref().and_then(|x| x.kind);
        match (c.kind, c.private_id, kind) {
            (Kind::Receipt, Some(p), Some(k)) => (p, k, c.receipt.and_then(|x| x.time), c.message_id, Some(raw)),
            _ => {
                return Err(ApiError::new(
                    code::JOURNAL_NOT_A_RECEIPT,
                    "Die Nachricht ist keine De-Mail-Bestätigung mit Nachrichten-Kennung.",
                    "The message is not a De-Mail receipt with a private-id.",
                ))
            }
        }
    } else {
        match (r.private_id, r.kind) {
            (Some(p), Some(k)) => (p, k, r.time, r.message_id, None),
            _ => {
                return Err(ApiError::invalid(
                    "private_id/type",
                    "fehlen (oder „raw“ angeben).",
                    "are missing (or give \"raw\").",
                ))
            }
        }
    };
    for (f, v) in [("private_id", Some(&private_id)), ("time", time.as_ref()), ("message_id", message_id.as_ref())] {
        if let Some(v) = v {
            if v.len() > 1024 || v.chars().any(char::is_control) {
                return Err(ApiError::invalid(
                    f,
                    "ist zu lang oder enthält Steuerzeichen.",
                    "is too long or contains control characters.",
                ));
            }
        }
    }
    let kind_s = match kind {
        ReceiptType::Dispatch => "dispatch",
        ReceiptType::Receipt => "receipt",
        ReceiptType::Retrieve => "retrieve",
    };
    let checked = match raw {
        Some(raw) => {
            let (policy, _) = state.policy()?;
            let pid = private_id.clone();
            let sent = state.with_store(move |s| s.sent_mimes(&pid, 20)).await?;
            let now = crate::store::now_ms().max(0) as u64;
            tokio::task::spawn_blocking(move || crate::receipt::check(&raw, &sent, &policy, now))
                .await
                .map_err(ApiError::internal)?
        }
        None => crate::receipt::unchecked(),
    };
    let pid = private_id.clone();
    let (verdict, reasons, sent_id) = (checked.verdict, checked.reasons.clone(), checked.message.clone());
    let (new, sent) = state
        .with_store(move |s| {
            let new = s.add_receipt(&NewReceipt {
                private_id: &pid,
                kind: kind_s,
                time: time.as_deref(),
                receipt_message_id: message_id.as_deref(),
                verdict,
                reasons: &reasons,
                message: sent_id.as_deref(),
            })?;
            Ok((new, s.journal(Some(&pid), 1)?))
        })
        .await?;
    if checked.verdict != crate::receipt::MATCHES {
        let code = checked.reasons.first().map(|r| r.code.as_str()).unwrap_or_default();
        tracing::warn!(private_id = %private_id, check = checked.verdict, code, "receipt does not count");
    }
    Ok(ok(
        if new { StatusCode::CREATED } else { StatusCode::OK },
        json!({
            "private_id": private_id, "type": kind_s, "new": new, "matched": !sent.is_empty(),
            "check": checked.verdict, "counts": checked.verdict == crate::receipt::MATCHES, "reasons": checked.reasons,
        }),
    ))
}
