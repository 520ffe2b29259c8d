//! Stable reason codes with German and English texts.
//!
//! Every decision or error that reaches a person goes through here, so codes and
//! wording stay in one place for helper, gateway, CLI and add-in.

use serde::{Deserialize, Serialize};

/// How much a reason weighs in a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Sending is refused.
    Block,
    /// Sending needs an explicit confirmation by the user.
    Confirm,
    /// Worth telling, does not stop anything.
    Info,
}

/// A stable code plus its German (primary) and English text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub code: String,
    /// German text (the UI language).
    pub message: String,
    /// English text (the second locale).
    pub message_en: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// What the reason is about (an address, an option, a header name, a field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl Reason {
    pub fn new(code: &str, de: impl Into<String>, en: impl Into<String>) -> Self {
        Reason { code: code.to_string(), message: de.into(), message_en: en.into(), severity: None, subject: None }
    }

    pub fn with_severity(mut self, s: Severity) -> Self {
        self.severity = Some(s);
        self
    }

    pub fn about(mut self, what: impl Into<String>) -> Self {
        self.subject = Some(what.into());
        self
    }
}

impl std::fmt::Display for Reason {
    /// `[code] German text`: the form for logs and SMTP replies, code first so programs can match it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)
    }
}

/// The error every crate returns where a person (caseworker, admin, SMTP client) may
/// see it: a [`Reason`], plus what caused it for the log. The cause is never shown to
/// the person; it may hold paths or library texts in English.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub reason: Reason,
    pub source: Option<String>,
}

impl Error {
    pub fn new(code: &str, de: impl Into<String>, en: impl Into<String>) -> Self {
        Error { reason: Reason::new(code, de, en), source: None }
    }

    /// Attach the underlying cause (for the log only).
    pub fn caused_by(mut self, source: impl std::fmt::Display) -> Self {
        self.source = Some(source.to_string());
        self
    }

    pub fn code(&self) -> &str {
        &self.reason.code
    }
}

impl From<Reason> for Error {
    fn from(reason: Reason) -> Self {
        Error { reason, source: None }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.reason)?;
        if let Some(s) = &self.source {
            write!(f, " ({s})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

// serde's custom errors carry only a string; field validators (option ids, domains,
// sizes) put their Reason through it with this separator, and the boundary takes it apart.
const SEP: char = '\u{1f}';

/// Carry a [`Reason`] through serde's string-only custom errors.
pub(crate) fn encode_reason(r: &Reason) -> String {
    format!("{}{SEP}{}{SEP}{}", r.code, r.message, r.message_en)
}

/// The [`Reason`] a field validator put into a serde error message, if any (callers that
/// deserialise core types themselves, e.g. the helper's API, use it too).
pub fn decode_reason(msg: &str) -> Option<Reason> {
    let mut it = msg.splitn(3, SEP);
    let code = it.next()?;
    let de = it.next()?;
    let en = it.next()?;
    // serde_json appends " at line L column C"; the position is reported separately.
    let en = en.split(" at line ").next().unwrap_or(en);
    Some(Reason::new(code.trim(), de, en))
}

/// Shorten untrusted text before quoting it back in a message.
pub(crate) fn quote(s: &str) -> String {
    quote_max(s, 80)
}

/// [`quote`] with a custom length limit.
pub(crate) fn quote_max(s: &str, max: usize) -> String {
    #[allow(non_snake_case)]
    let MAX = max;
    let clean: String = s.chars().map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect();
    if clean.chars().count() > MAX {
        let cut: String = clean.chars().take(MAX).collect();
        format!("{cut}…")
    } else {
        clean
    }
}
