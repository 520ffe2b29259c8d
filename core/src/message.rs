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
