//! The JSON boundary: one entry point, [`call`], used by the admin CLI, the wasm
//! module and the helper. Same input, same output, byte for byte.
//!
//! Operations (`op`), their input and output shapes are documented in `docs/core-api.md`.

use crate::check::{check, CheckInput};
use crate::classify::{classify_headers, classify_raw, HeaderList};
use crate::message::Reason;
use crate::options::{apply_rules, generate_private_id, option_headers, validate_private_id, OptionSet};
use crate::policy::{Policy, PolicyError};
use crate::subject;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What the caller provides that the core may not fetch itself.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub now_millis: u64,
    /// At least 8 random bytes, for generated private-ids.
    pub entropy: Vec<u8>,
}

/// An error at the boundary: stable code, German and English text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiError {
    #[serde(flatten)]
    pub reason: Reason,
    /// Position details for policy errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Box<PolicyError>>,
}

impl From<Reason> for ApiError {
    fn from(reason: Reason) -> Self {
        ApiError { reason, policy: None }
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        ApiError { reason: e.reason.clone(), policy: Some(Box::new(e)) }
    }
}

/// All operations, in the order they were added.
pub const OPS: [&str; 13] = [
    "version",
    "policy.check",
    "subject.parse",
    "subject.format",
    "check",
    "classify",
    "classify.headers",
    "headers",
    "map",
    "options",
    "classify.candidate",
    "seal.verify",
    "seal.canonical",
];

fn bad_input(e: impl std::fmt::Display) -> ApiError {
    let msg = crate::message::quote(&e.to_string());
    Reason::new(
        "input.invalid",
        format!("Ungültige Eingabe: {msg}"),
        format!("Invalid input: {msg}"),
    )
    .into()
}

/// An operation's input: already-parsed JSON (Rust callers) or JSON text (wasm, CLI),
/// which is deserialised straight into the operation's type without a `Value` tree.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    Value(&'a Value),
    Json(&'a str),
}

impl Input<'_> {
    fn parse<T: serde::de::DeserializeOwned>(self) -> Result<T, ApiError> {
        // Field validators (option ids) carry their own code through serde's string errors.
        let data_error = |e: serde_json::Error| match crate::policy::decode_reason(&e.to_string()) {
            Some(r) => ApiError::from(r),
            None => bad_input(e),
        };
        match self {
            Input::Value(v) => T::deserialize(v).map_err(data_error),
            Input::Json(s) => {
                let s = if s.trim().is_empty() { "null" } else { s };
                serde_json::from_str(s).map_err(|e| {
                    if e.is_syntax() || e.is_eof() {
                        json_error(&e)
                    } else {
                        data_error(e)
                    }
                })
            }
        }
    }
}

fn json_error(e: &serde_json::Error) -> ApiError {
    ApiError::from(Reason::new(
        "input.json",
        format!("Die Eingabe ist kein gültiges JSON: {}", crate::message::quote(&e.to_string())),
        format!("The input is not valid JSON: {}", crate::message::quote(&e.to_string())),
    ))
}

/// An operation's result, serialised directly (no intermediate `Value`).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Output {
    Value(Value),
    Check(crate::check::CheckResult),
    Classification(crate::classify::Classification),
    Subject(subject::ParsedSubject),
}

impl Output {
    pub fn into_value(self) -> Value {
        match self {
            Output::Value(v) => v,
            other => serde_json::to_value(other).unwrap_or(Value::Null),
        }
    }
}

/// Load a policy from TOML or JSON text; `None` or blank text gives the built-in default.
pub fn load_policy(src: Option<&str>) -> Result<Policy, ApiError> {
    match src {
        Some(s) if !s.trim().is_empty() => Policy::parse(s).map_err(ApiError::from),
        _ => Ok(Policy::default()),
    }
}

/// Validate a policy; never fails, the verdict is data.
pub fn policy_check(src: &str) -> Value {
    match Policy::parse(src) {
        Ok(p) => json!({ "valid": true, "errors": [], "policy": p }),
        Err(e) => json!({ "valid": false, "errors": [e], "policy": null }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectIn {
    subject: String,
    #[serde(default)]
    options: OptionSet,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadersIn {
    #[serde(default)]
    options: OptionSet,
    #[serde(default)]
    private_id: Option<String>,
    /// The sender's De-Mail or e-mail address, for the pseudonym rule.
    #[serde(default)]
    sender: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum HeadersShape {
    /// `[["Subject", "x"], …]` in message order.
    Pairs(Vec<(String, String)>),
    /// `{"subject": ["x"], …}` as Thunderbird's `messages.getFull` gives it.
    Map(std::collections::BTreeMap<String, Vec<String>>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassifyHeadersIn {
    headers: HeadersShape,
    #[serde(default)]
    xml: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OptionsIn {
    from: String,
    #[serde(default)]
    options: OptionSet,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidateIn {
    author: String,
    #[serde(default)]
    subject: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MapIn {
    address: String,
    /// `to-demail` (outbound) or `to-email` (inbound).
    direction: String,
}

/// Generate the header lines for options and a private-id (generated when absent).
pub fn headers(policy: &Policy, options: OptionSet, private_id: Option<&str>, sender: Option<&str>, env: &Env) -> Result<Value, ApiError> {
    let sender_demail = sender.map(|s| {
        let s = s.trim();
        let dom = s.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        if policy.is_demail_domain(dom) {
            s.to_lowercase()
        } else {
            policy.email_to_demail(s).map(|m| m.address).unwrap_or_else(|| s.to_string())
        }
    });
    let (opts, problems) = apply_rules(options, OptionSet::EMPTY, sender_demail.as_deref());
    if let Some(p) = problems.into_iter().next() {
        return Err(p.into());
    }
    let (id, generated) = match private_id.map(str::trim).filter(|s| !s.is_empty()) {
        Some(id) => {
            validate_private_id(id)?;
            (id.to_string(), false)
        }
        None => (generate_private_id(env.now_millis, &env.entropy), true),
    };
    let lines: Vec<Value> = option_headers(opts, Some(&id))
        .into_iter()
        .map(|(n, v)| json!({ "name": n, "value": v }))
        .collect();
    Ok(json!({ "headers": lines, "options": opts, "private_id": id, "private_id_generated": generated }))
}

/// Run one operation.
pub fn call(op: &str, policy: &Policy, input: &Value, env: &Env) -> Result<Value, ApiError> {
    dispatch(op, policy, Input::Value(input), env).map(Output::into_value)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SubjectParseIn {
    Text(String),
    Object(SubjectIn),
}

/// Run one operation on typed input and output.
pub fn dispatch(op: &str, policy: &Policy, input: Input<'_>, env: &Env) -> Result<Output, ApiError> {
    let text = |what: &str| -> Result<String, ApiError> {
        input.parse::<String>().map_err(|_| bad_input(format!("{op} expects {what} as a JSON string")))
    };
    Ok(match op {
        "version" => Output::Value(json!({ "version": crate::VERSION, "ops": OPS })),
        "policy.check" => Output::Value(policy_check(&text("the policy text")?)),
        "subject.parse" => {
            let subject = match input.parse::<SubjectParseIn>()? {
                SubjectParseIn::Text(s) => s,
                SubjectParseIn::Object(o) => o.subject,
            };
            Output::Subject(subject::parse(&subject, &policy.subject))
        }
        "subject.format" => {
            let i: SubjectIn = input.parse()?;
            let s = subject::format(&i.subject, i.options, &policy.subject)?;
            Output::Value(json!({ "subject": s }))
        }
        "check" => Output::Check(check(&input.parse::<CheckInput>()?, policy)),
        "classify" => Output::Classification(classify_raw(text("the raw message")?.as_bytes(), policy)),
        "classify.headers" => {
            let i: ClassifyHeadersIn = input.parse()?;
            let list: HeaderList = match i.headers {
                HeadersShape::Pairs(p) => p,
                HeadersShape::Map(m) => m
                    .into_iter()
                    .flat_map(|(k, vs)| vs.into_iter().map(move |v| (k.clone(), v)))
                    .collect(),
            };
            Output::Classification(classify_headers(&list, i.xml.as_deref(), policy))
        }
        "headers" => {
            let i: HeadersIn = input.parse()?;
            Output::Value(headers(policy, i.options, i.private_id.as_deref(), i.sender.as_deref(), env)?)
        }
        "map" => {
            let i: MapIn = input.parse()?;
            let addr = crate::address::normalize_addr_spec(&i.address)?;
            let m = match i.direction.as_str() {
                "to-demail" => policy.email_to_demail(&addr),
                "to-email" => policy.demail_to_email(&addr),
                other => return Err(bad_input(format!("unknown direction {other:?}; use to-demail or to-email"))),
            };
            Output::Value(json!({ "address": addr, "mapped": m }))
        }
        "options" => {
            let i: OptionsIn = input.parse()?;
            Output::Value(json!(crate::check::option_states(&i.from, i.options, policy)))
        }
        "classify.candidate" => {
            let i: CandidateIn = input.parse()?;
            // The subject is accepted for future rules; the sender's domain decides today.
            let _ = i.subject;
            Output::Value(json!({ "candidate": crate::check::is_candidate(&i.author, policy) }))
        }
        "seal.verify" => {
            let raw = text("the raw header block")?;
            let v = crate::seal::verify(raw.as_bytes(), &policy.seal.public_keys, policy.seal.required);
            Output::Value(json!(v))
        }
        "seal.canonical" => {
            // For callers that verify themselves (WebCrypto Ed25519): the signed text and the seal's fields.
            let raw = text("the raw header block")?;
            let fields = crate::seal::header_fields(raw.as_bytes());
            match crate::seal::find(&fields) {
                Ok(h) => {
                    let key = policy.seal.public_keys.iter().find(|k| k.kid == h.kid).map(|k| k.to_string());
                    Output::Value(json!({
                        "canonical": crate::seal::canonical(&fields, &h.kid),
                        "seal": h,
                        "public_key": key,
                        "required": policy.seal.required,
                    }))
                }
                Err(r) => Output::Value(json!({
                    "canonical": null, "seal": null, "public_key": null,
                    "required": policy.seal.required, "code": r.code, "message": r.message, "message_en": r.message_en,
                })),
            }
        }
        other => {
            return Err(Reason::new(
                "input.unknown_op",
                format!("Unbekannte Operation „{}“.", crate::message::quote(other)),
                format!("Unknown operation \"{}\".", crate::message::quote(other)),
            )
            .into())
        }
    })
}

/// Parse a JSON input text; blank means `null`.
pub fn parse_input(input_json: &str) -> Result<Value, ApiError> {
    Input::Json(input_json).parse()
}

#[derive(Serialize)]
struct Envelope<'a> {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a Output>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a ApiError>,
}

/// JSON whose strings escape every non-ASCII character (`\u00fc`). A JS host turns an
/// all-ASCII answer into a string about 15x faster than mixed UTF-8 (Node 20, the
/// 66 KB answer of a 500-recipient check: 19 us against 323 us); `JSON.parse` gives
/// the same value either way.
struct AsciiFormatter;

impl serde_json::ser::Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + std::io::Write>(&mut self, w: &mut W, fragment: &str) -> std::io::Result<()> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut rest = fragment;
        while let Some(i) = rest.bytes().position(|b| b >= 0x80) {
            w.write_all(&rest.as_bytes()[..i])?;
            let c = rest[i..].chars().next().unwrap_or('\u{fffd}');
            let mut units = [0u16; 2];
            for &u in c.encode_utf16(&mut units).iter() {
                let h = |s: u16| HEX[usize::from((u >> s) & 0xf)];
                w.write_all(&[b'\\', b'u', h(12), h(8), h(4), h(0)])?;
            }
            rest = &rest[i + c.len_utf8()..];
        }
        w.write_all(rest.as_bytes())
    }
}

/// The wire envelope for callers that pass strings (wasm), in ASCII-only JSON:
/// `{"ok":true,"result":…}` or `{"ok":false,"error":{code,message,message_en}}`.
pub fn envelope(out: Result<Output, ApiError>) -> String {
    let env = match &out {
        Ok(r) => Envelope { ok: true, result: Some(r), error: None },
        Err(e) => Envelope { ok: false, result: None, error: Some(e) },
    };
    let mut buf = Vec::with_capacity(256);
    let written = env.serialize(&mut serde_json::Serializer::with_formatter(&mut buf, AsciiFormatter));
    match (written, String::from_utf8(buf)) {
        (Ok(()), Ok(s)) => s,
        _ => r#"{"ok":false,"error":{"code":"internal","message":"Interner Fehler.","message_en":"Internal error."}}"#.to_string(),
    }
}

/// Run `op` on JSON text against a parsed policy; returns the envelope.
pub fn call_str(op: &str, policy: &Policy, input_json: &str, env: &Env) -> String {
    envelope(dispatch(op, policy, Input::Json(input_json), env))
}

/// [`call`] with policy text and JSON text in, the envelope out.
pub fn call_json(op: &str, policy_src: Option<&str>, input_json: &str, env: &Env) -> String {
    match load_policy(policy_src) {
        Ok(p) => call_str(op, &p, input_json, env),
        Err(e) => envelope(Err(e)),
    }
}

/// Re-export so callers need one import for the option list parser.
pub fn parse_option_ids(list: &str) -> Result<OptionSet, ApiError> {
    OptionSet::parse_ids(list.split(',')).map_err(ApiError::from)
}
