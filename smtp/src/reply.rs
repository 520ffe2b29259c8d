//! SMTP replies with German and English text.

use std::fmt;

/// A refusal: SMTP code, enhanced status code (RFC 3463) and the reason in German and English.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// 4xx (try again later) or 5xx (permanent).
    pub code: u16,
    /// Enhanced status code, e.g. `5.7.1`.
    pub enhanced: String,
    pub text_de: String,
    pub text_en: String,
}

impl Reject {
    pub fn new(code: u16, enhanced: &str, text_de: impl Into<String>, text_en: impl Into<String>) -> Self {
        Reject { code, enhanced: enhanced.to_string(), text_de: text_de.into(), text_en: text_en.into() }
    }

    /// 451 4.3.0: a local problem; the client should retry.
    pub fn temporary(text_de: impl Into<String>, text_en: impl Into<String>) -> Self {
        Reject::new(451, "4.3.0", text_de, text_en)
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The reply as sent on the wire: German lines first, then English.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut lines = wrap(&self.text_de);
        lines.extend(wrap(&self.text_en));
        reply(self.code, &self.enhanced, &lines)
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} / {}", self.code, self.enhanced, self.text_de, self.text_en)
    }
}

impl std::error::Error for Reject {}

/// What the handler answers for an accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Queue id, shown in the 250 reply.
    pub id: String,
}

/// Longest text per reply line; RFC 5321 allows 512 octets including code and CRLF.
const LINE_MAX: usize = 400;

/// Replace control characters (no CR/LF can reach the wire) and split into lines of
/// at most [`LINE_MAX`] bytes at word boundaries.
pub(crate) fn wrap(text: &str) -> Vec<String> {
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in clean.split(' ').filter(|w| !w.is_empty()) {
        let mut word = word;
        while word.len() > LINE_MAX {
            let mut cut = LINE_MAX;
            while !word.is_char_boundary(cut) {
                cut -= 1;
            }
            if !cur.is_empty() {
                lines.push(std::mem::take(&mut cur));
            }
            lines.push(word[..cut].to_string());
            word = &word[cut..];
        }
        if !cur.is_empty() && cur.len() + 1 + word.len() > LINE_MAX {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

/// A (multi-line) reply: `550-5.7.1 a\r\n550 5.7.1 b\r\n`.
pub(crate) fn reply(code: u16, enhanced: &str, lines: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.extend_from_slice(format!("{code}{sep}{enhanced} {l}\r\n").as_bytes());
    }
    out
}

/// A reply with one German and one English text.
pub(crate) fn bilingual(code: u16, enhanced: &str, de: &str, en: &str) -> Vec<u8> {
    Reject::new(code, enhanced, de, en).to_wire()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_multiline_and_clean() {
        let r = Reject::new(550, "5.7.1", "Nicht erlaubt\r\nBcc: x", "Not allowed");
        let w = String::from_utf8(r.to_wire()).unwrap();
        assert_eq!(w, "550-5.7.1 Nicht erlaubt Bcc: x\r\n550 5.7.1 Not allowed\r\n");
    }

    #[test]
    fn long_text_is_wrapped() {
        let long = "wort ".repeat(300);
        let lines = wrap(&long);
        assert!(lines.len() > 1);
        assert!(lines.iter().all(|l| l.len() <= LINE_MAX));
        let huge = "ä".repeat(1000);
        assert!(wrap(&huge).iter().all(|l| l.len() <= LINE_MAX));
    }
}
