//! Every error code the helper itself gives out, and no other module spells one: clients
//! branch on them, so `docs/protocol.md` §6 and `docs/helper.md` list exactly the groups
//! below (`tests/codes.rs` compares, and fails on a code literal elsewhere in the
//! helper or the tray).
//!
//! Codes the core decides (an invalid address, an unknown option) reach API clients
//! unchanged; the docs list them as families (`address.*`), see [`CORE_FAMILIES`].

use axum::http::StatusCode;

/// An API error code with the HTTP status it always comes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiCode {
    pub id: &'static str,
    pub status: StatusCode,
}

const fn api(id: &'static str, status: StatusCode) -> ApiCode {
    ApiCode { id, status }
}

// ------------------------------------------------------------------ API responses (protocol.md §6)

pub const REQUEST_HOST: ApiCode = api("request.host", StatusCode::FORBIDDEN);
pub const REQUEST_ORIGIN: ApiCode = api("request.origin", StatusCode::FORBIDDEN);
pub const AUTH_MISSING: ApiCode = api("auth.missing", StatusCode::UNAUTHORIZED);
pub const AUTH_INVALID: ApiCode = api("auth.invalid", StatusCode::UNAUTHORIZED);
pub const AUTH_PENDING: ApiCode = api("auth.pending", StatusCode::FORBIDDEN);
pub const PAIRING_LIMIT: ApiCode = api("pairing.limit", StatusCode::TOO_MANY_REQUESTS);
pub const REQUEST_JSON: ApiCode = api("request.json", StatusCode::BAD_REQUEST);
pub const REQUEST_INVALID: ApiCode = api("request.invalid", StatusCode::BAD_REQUEST);
pub const REQUEST_CONTENT_TYPE: ApiCode = api("request.content_type", StatusCode::UNSUPPORTED_MEDIA_TYPE);
pub const REQUEST_TOO_LARGE: ApiCode = api("request.too_large", StatusCode::PAYLOAD_TOO_LARGE);
pub const REQUEST_TIMEOUT: ApiCode = api("request.timeout", StatusCode::REQUEST_TIMEOUT);
pub const REQUEST_NOT_FOUND: ApiCode = api("request.not_found", StatusCode::NOT_FOUND);
pub const REQUEST_METHOD: ApiCode = api("request.method", StatusCode::METHOD_NOT_ALLOWED);
pub const REQUEST_BODY: ApiCode = api("request.body", StatusCode::BAD_REQUEST);
pub const SUBMIT_CRLF: ApiCode = api("submit.crlf", StatusCode::BAD_REQUEST);
pub const SUBMIT_MIME_INVALID: ApiCode = api("submit.mime_invalid", StatusCode::BAD_REQUEST);
pub const SUBMIT_BARE_CR: ApiCode = api("submit.bare_cr", StatusCode::BAD_REQUEST);
pub const SUBMIT_NUL: ApiCode = api("submit.nul", StatusCode::BAD_REQUEST);
pub const SUBMIT_MESSAGE_ID_TAKEN: ApiCode = api("submit.message_id_taken", StatusCode::CONFLICT);
pub const SUBMIT_BLOCKED: ApiCode = api("submit.blocked", StatusCode::UNPROCESSABLE_ENTITY);
pub const SUBMIT_CONFIRM_REQUIRED: ApiCode = api("submit.confirm_required", StatusCode::CONFLICT);
pub const SUBMIT_NOT_DEMAIL: ApiCode = api("submit.not_demail", StatusCode::UNPROCESSABLE_ENTITY);
pub const SUBMIT_TOO_LARGE: ApiCode = api("submit.too_large", StatusCode::PAYLOAD_TOO_LARGE);
pub const OUTBOX_NOT_FOUND: ApiCode = api("outbox.not_found", StatusCode::NOT_FOUND);
pub const OUTBOX_STATE: ApiCode = api("outbox.state", StatusCode::CONFLICT);
pub const JOURNAL_NOT_A_RECEIPT: ApiCode = api("journal.not_a_receipt", StatusCode::UNPROCESSABLE_ENTITY);
pub const POLICY_INVALID: ApiCode = api("policy.invalid", StatusCode::SERVICE_UNAVAILABLE);
pub const POLICY_UNREADABLE: ApiCode = api("policy.unreadable", StatusCode::SERVICE_UNAVAILABLE);
pub const STORE_UNAVAILABLE: ApiCode = api("store.unavailable", StatusCode::SERVICE_UNAVAILABLE);
pub const INTERNAL: ApiCode = api("internal", StatusCode::INTERNAL_SERVER_ERROR);

pub const API: &[ApiCode] = &[
    REQUEST_HOST,
    REQUEST_ORIGIN,
    AUTH_MISSING,
    AUTH_INVALID,
    AUTH_PENDING,
    PAIRING_LIMIT,
    REQUEST_JSON,
    REQUEST_INVALID,
    REQUEST_CONTENT_TYPE,
    REQUEST_TOO_LARGE,
    REQUEST_TIMEOUT,
    REQUEST_NOT_FOUND,
    REQUEST_METHOD,
    REQUEST_BODY,
    SUBMIT_CRLF,
    SUBMIT_MIME_INVALID,
    SUBMIT_BARE_CR,
    SUBMIT_NUL,
    SUBMIT_MESSAGE_ID_TAKEN,
    SUBMIT_BLOCKED,
    SUBMIT_CONFIRM_REQUIRED,
    SUBMIT_NOT_DEMAIL,
    SUBMIT_TOO_LARGE,
    OUTBOX_NOT_FOUND,
    OUTBOX_STATE,
    JOURNAL_NOT_A_RECEIPT,
    POLICY_INVALID,
    POLICY_UNREADABLE,
    STORE_UNAVAILABLE,
    INTERNAL,
];

/// The families of core codes the API passes on (`address.*` …; the core's codes are in
/// `docs/core-api.md`). [`crate::error::ApiError::core`] refuses others in debug builds.
pub const CORE_FAMILIES: &[&str] = &["input", "options", "address", "private_id", "subject", "header"];

/// Whether `code` belongs to one of [`CORE_FAMILIES`].
pub fn is_core(code: &str) -> bool {
    code.split_once('.').is_some_and(|(family, _)| CORE_FAMILIES.contains(&family))
}

// ------------------------------------------------------------------ outbox `error.code` (protocol.md §6)

pub const RELAY_NOT_CONFIGURED: &str = "relay.not_configured";
pub const RELAY_UNREACHABLE: &str = "relay.unreachable";
pub const RELAY_TLS: &str = "relay.tls";
pub const RELAY_TLS_SETUP: &str = "relay.tls_setup";
pub const RELAY_CA_FILE: &str = "relay.ca_file";
pub const RELAY_NO_STARTTLS: &str = "relay.no_starttls";
pub const RELAY_AUTH: &str = "relay.auth";
pub const RELAY_SIGNIN: &str = "relay.signin_required";
pub const RELAY_DEFERRED: &str = "relay.deferred";
pub const RELAY_REJECTED: &str = "relay.rejected";
pub const RELAY_ADDRESS: &str = "relay.address";
pub const RELAY_GAVE_UP: &str = "relay.gave_up";
pub const SECRETS_MISSING: &str = "secrets.missing";
pub const SECRETS_UNAVAILABLE: &str = "secrets.unavailable";
pub const SECRETS_ENCODING: &str = "secrets.encoding";
pub const SECRETS_FAILED: &str = "secrets.failed";

pub const OUTBOX: &[&str] = &[
    RELAY_NOT_CONFIGURED,
    RELAY_UNREACHABLE,
    RELAY_TLS,
    RELAY_TLS_SETUP,
    RELAY_CA_FILE,
    RELAY_NO_STARTTLS,
    RELAY_AUTH,
    RELAY_SIGNIN,
    SECRETS_MISSING,
    SECRETS_UNAVAILABLE,
    SECRETS_ENCODING,
    SECRETS_FAILED,
    RELAY_DEFERRED,
    INTERNAL.id,
    RELAY_REJECTED,
    RELAY_ADDRESS,
    RELAY_GAVE_UP,
];

// ------------------------------------------------------------------ native-messaging host (protocol.md §6)

pub const HELPER_NOT_RUNNING: &str = "helper.not_running";
pub const PAIRING_MANUAL: &str = "pairing.manual";
pub const NATIVE_EXTENSION: &str = "native.extension";

pub const NATIVE: &[&str] =
    &[NATIVE_EXTENSION, HELPER_NOT_RUNNING, PAIRING_MANUAL, STORE_UNAVAILABLE.id, REQUEST_INVALID.id];

// ------------------------------------------------------------------ CLI, tray and start (helper.md)

pub const CONFIG_READ: &str = "config.read";
pub const CONFIG_ENCODING: &str = "config.encoding";
pub const CONFIG_SYNTAX: &str = "config.syntax";
pub const CONFIG_UNKNOWN_KEY: &str = "config.unknown_key";
pub const CONFIG_DUPLICATE_KEY: &str = "config.duplicate_key";
pub const CONFIG_INVALID_VALUE: &str = "config.invalid_value";
pub const CONFIG_LOCKED: &str = "config.locked";
pub const CONFIG_LOCK_IN_USER_FILE: &str = "config.lock_in_user_file";
pub const CONFIG_WRITE: &str = "config.write";
pub const SERVE_RUNNING: &str = "serve.running";
pub const SERVE_BIND: &str = "serve.bind";
pub const SERVE_DISCOVERY: &str = "serve.discovery";
pub const SERVE_FAILED: &str = "serve.failed";
pub const TRAY_START: &str = "tray.start";
pub const PAIRING_UNKNOWN: &str = "pairing.unknown";
pub const PAIRING_WRONG_CODE: &str = "pairing.wrong_code";
pub const PAIRING_PROVISION_DISABLED: &str = "pairing.provision_disabled";
pub const SECRETS_NO_ACCOUNT: &str = "secrets.no_account";
pub const SECRETS_EMPTY: &str = "secrets.empty";

/// Codes only the admin side gives (`demail` helper commands, the tray, a failed start);
/// it also passes on the API's and the outbox's codes above.
pub const ADMIN: &[&str] = &[
    CONFIG_READ,
    CONFIG_ENCODING,
    CONFIG_SYNTAX,
    CONFIG_UNKNOWN_KEY,
    CONFIG_DUPLICATE_KEY,
    CONFIG_INVALID_VALUE,
    CONFIG_LOCKED,
    CONFIG_LOCK_IN_USER_FILE,
    CONFIG_WRITE,
    SERVE_RUNNING,
    SERVE_BIND,
    SERVE_DISCOVERY,
    SERVE_FAILED,
    TRAY_START,
    PAIRING_UNKNOWN,
    PAIRING_WRONG_CODE,
    PAIRING_PROVISION_DISABLED,
    SECRETS_NO_ACCOUNT,
    SECRETS_EMPTY,
];

// ------------------------------------------------------------------ receipt checks (protocol.md journal.list)

/// The helper's own reasons in a receipt's `reasons`; the others come from the core
/// (`receipt.*`, `integrity.*`).
pub const RECEIPT_SENT_UNKNOWN: &str = "journal.sent_unknown";
pub const RECEIPT_UNCHECKED: &str = "journal.receipt_unchecked";

pub const RECEIPT: &[&str] = &[RECEIPT_SENT_UNKNOWN, RECEIPT_UNCHECKED];

// ------------------------------------------------------------------ core codes the helper looks at

/// The core's reason for a message over `rules.max_size`; the helper answers it with
/// [`SUBMIT_TOO_LARGE`].
pub const CORE_SIZE_EXCEEDED: &str = "size.exceeded";
