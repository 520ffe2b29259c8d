//! Subject tags: the fallback for clients without the add-in (`[P, VB] Betreff`).
//!
//! Tags may stand at the start (after reply/forward prefixes) or at the end of the
//! subject, among other brackets; case, spaces, hyphens and umlaut spellings are ignored. A bracket is a
//! De-Mail bracket when at least one of its comma-separated tokens is known; then
//! every unknown token is an error, never silently dropped. Other brackets
//! (`[Ticket#123]`) are left alone.

use crate::options::{DeMailOption, OptionSet};
use crate::reason::{quote, Reason};
use serde::{Deserialize, Serialize};

/// The configurable tag words. The first word of each list is used when writing tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct Vocabulary {
    /// Marks a message as De-Mail without choosing an option.
    pub demail: Vec<String>,
    pub private: Vec<String>,
    pub authoritative: Vec<String>,
    pub confirmation_of_dispatch: Vec<String>,
    pub confirmation_of_receipt: Vec<String>,
    pub confirmation_of_retrieve: Vec<String>,
}

fn v(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

impl Default for Vocabulary {
    fn default() -> Self {
        Vocabulary {
            demail: v(&["De-Mail"]),
            private: v(&["P", "Persönlich", "Personal", "Private"]),
            authoritative: v(&["A", "Absenderbestätigt", "Confirmed by sender", "Authoritative"]),
            confirmation_of_dispatch: v(&[
                "VB",
                "Versandbestätigung",
                "Delivery confirmation",
                "Confirmation of dispatch",
            ]),
            confirmation_of_receipt: v(&[
                "EB",
                "Eingangsbestätigung",
                "Receipt confirmation",
                "Confirmation of receipt",
            ]),
            confirmation_of_retrieve: v(&[
                "AB",
                "Abholbestätigung",
                "Collection confirmation",
                "Confirmation of retrieve",
            ]),
        }
    }
}

/// What a tag word stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    DeMail,
    Opt(DeMailOption),
}

/// Order in which tags are written: Persönlich first, as in `[P, VB]`.
const WRITE_ORDER: [DeMailOption; 5] = [
    DeMailOption::Private,
    DeMailOption::Authoritative,
    DeMailOption::ConfirmationOfDispatch,
    DeMailOption::ConfirmationOfReceipt,
    DeMailOption::ConfirmationOfRetrieve,
];

/// Brackets longer than this are prose, not tags.
const MAX_BRACKET: usize = 200;

/// Case, blanks, hyphens, underscores and dots do not matter; umlauts equal their
/// two-letter spellings (`Persoenlich`).
fn normalize(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    for c in word.chars() {
        match c {
            c if c.is_whitespace() || c == '-' || c == '_' || c == '.' => {}
            'ä' | 'Ä' => out.push_str("ae"),
            'ö' | 'Ö' => out.push_str("oe"),
            'ü' | 'Ü' => out.push_str("ue"),
            'ß' | 'ẞ' => out.push_str("ss"),
            c => out.extend(c.to_lowercase()),
        }
    }
    out
}

impl Vocabulary {
    fn entries(&self) -> [(Tag, &Vec<String>); 6] {
        [
            (Tag::DeMail, &self.demail),
            (Tag::Opt(DeMailOption::Private), &self.private),
            (Tag::Opt(DeMailOption::Authoritative), &self.authoritative),
            (Tag::Opt(DeMailOption::ConfirmationOfDispatch), &self.confirmation_of_dispatch),
            (Tag::Opt(DeMailOption::ConfirmationOfReceipt), &self.confirmation_of_receipt),
            (Tag::Opt(DeMailOption::ConfirmationOfRetrieve), &self.confirmation_of_retrieve),
        ]
    }

    fn lookup(&self, token: &str) -> Option<Tag> {
        let n = normalize(token);
        self.entries().into_iter().find(|(_, words)| words.iter().any(|w| normalize(w) == n)).map(|(t, _)| t)
    }

    fn short(&self, o: DeMailOption) -> &str {
        let list = match o {
            DeMailOption::Private => &self.private,
            DeMailOption::Authoritative => &self.authoritative,
            DeMailOption::ConfirmationOfDispatch => &self.confirmation_of_dispatch,
            DeMailOption::ConfirmationOfReceipt => &self.confirmation_of_receipt,
            DeMailOption::ConfirmationOfRetrieve => &self.confirmation_of_retrieve,
        };
        list.first().map(String::as_str).unwrap_or(o.id())
    }

    /// Every list non-empty, every word distinct (after normalisation) and free of bracket syntax.
    pub(crate) fn validate(&self) -> Result<(), (Reason, String)> {
        let mut seen: Vec<String> = Vec::new();
        for (tag, words) in self.entries() {
            if words.is_empty() {
                let name = match tag {
                    Tag::DeMail => "demail",
                    Tag::Opt(o) => o.id(),
                };
                return Err((
                    Reason::new(
                        "policy.subject_empty",
                        format!("subject.{name} braucht mindestens ein Wort."),
                        format!("subject.{name} needs at least one word."),
                    ),
                    name.to_string(),
                ));
            }
            for w in words {
                let n = normalize(w);
                if n.is_empty() || w.contains(['[', ']', ',', ';', '\r', '\n']) {
                    return Err((
                        Reason::new(
                            "policy.subject_word_invalid",
                            format!("„{}“ ist als Betreff-Kennzeichen nicht verwendbar.", quote(w)),
                            format!("\"{}\" cannot be used as a subject tag.", quote(w)),
                        ),
                        w.clone(),
                    ));
                }
                if seen.contains(&n) {
                    return Err((
                        Reason::new(
                            "policy.subject_word_duplicate",
                            format!("Das Betreff-Kennzeichen „{}“ ist mehrfach vergeben.", quote(w)),
                            format!("The subject tag \"{}\" is assigned more than once.", quote(w)),
                        ),
                        w.clone(),
                    ));
                }
                seen.push(n);
            }
        }
        Ok(())
    }
}

/// Result of reading a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParsedSubject {
    /// A De-Mail bracket was found.
    pub demail: bool,
    pub options: OptionSet,
    /// The subject without De-Mail tags. Unchanged when there were none, and when a
    /// De-Mail bracket held an unknown tag (nothing is removed that was not understood).
    pub subject: String,
    pub errors: Vec<Reason>,
}

enum Bracket {
    DeMail { options: OptionSet, unknown: Vec<String> },
    Foreign,
}

fn classify_bracket(content: &str, vocab: &Vocabulary) -> Bracket {
    if content.chars().count() > MAX_BRACKET {
        return Bracket::Foreign;
    }
    let mut known = false;
    let mut options = OptionSet::EMPTY;
    let mut unknown = Vec::new();
    for tok in content.split([',', ';']) {
        let t = tok.trim();
        if t.is_empty() {
            continue;
        }
        match vocab.lookup(t) {
            Some(Tag::DeMail) => known = true,
            Some(Tag::Opt(o)) => {
                known = true;
                options.insert(o)
            }
            None => unknown.push(t.to_string()),
        }
    }
    if known {
        Bracket::DeMail { options, unknown }
    } else {
        Bracket::Foreign
    }
}

const PREFIXES: [&str; 9] = ["re", "aw", "wg", "fw", "fwd", "antw", "wtr", "tr", "sv"];

/// Length of a reply/forward prefix (`AW:`, `Re :`, `Fwd:`) at the start of `s`.
fn prefix_len(s: &str) -> Option<usize> {
    let word_end = s.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(s.len());
    let word = &s[..word_end];
    if word.is_empty() || !PREFIXES.iter().any(|p| p.eq_ignore_ascii_case(word)) {
        return None;
    }
    let rest = &s[word_end..];
    let ws = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    rest[ws..].starts_with(':').then_some(word_end + ws + 1)
}

/// Byte range of a `[...]` at the start of `s` with no nested `[`.
fn leading_bracket(s: &str) -> Option<(usize, &str)> {
    let inner = s.strip_prefix('[')?;
    let close = inner.find(']')?;
    let content = &inner[..close];
    (!content.contains('[')).then_some((close + 2, content))
}

/// Byte start of a `[...]` at the end of `s` with no nested `]`.
fn trailing_bracket(s: &str) -> Option<(usize, &str)> {
    let inner = s.strip_suffix(']')?;
    let open = inner.rfind('[')?;
    let content = &inner[open + 1..];
    (!content.contains(']')).then_some((open, content))
}

fn unknown_tag(tok: &str) -> Reason {
    Reason::new(
        "subject.unknown_tag",
        format!(
            "Unbekanntes De-Mail-Kennzeichen „{}“ im Betreff. Bekannt sind z. B. P, VB, EB, AB, A oder De-Mail.",
            quote(tok)
        ),
        format!("Unknown De-Mail tag \"{}\" in the subject. Known are e.g. P, VB, EB, AB, A or De-Mail.", quote(tok)),
    )
    .about(tok)
}

/// Read De-Mail tags from a subject and strip them.
pub fn parse(subject: &str, vocab: &Vocabulary) -> ParsedSubject {
    let mut errors = Vec::new();
    let cleaned;
    let subject = if subject.contains(['\r', '\n']) {
        errors.push(Reason::new(
            "subject.crlf",
            "Der Betreff enthält Zeilenumbrüche; sie wurden durch Leerzeichen ersetzt.",
            "The subject contains line breaks; they were replaced by spaces.",
        ));
        cleaned = subject.replace("\r\n", " ").replace(['\r', '\n'], " ");
        cleaned.as_str()
    } else {
        subject
    };

    let mut demail = false;
    let mut options = OptionSet::EMPTY;
    let mut stripped_any = false;
    let mut blocked_strip = false;
    // Byte ranges of `subject` to cut out: stripped brackets plus the blanks that
    // separated them. Everything else is kept exactly as written, so that
    // `parse(format(s))` gives back what `parse(s)` gave.
    let mut cut: Vec<(usize, usize)> = Vec::new();
    let blanks = |s: &str| s.len() - s.trim_start().len();

    // Leading run: prefixes, De-Mail brackets and foreign brackets in any order.
    let mut pos = 0;
    loop {
        let start = pos + blanks(&subject[pos..]);
        let t = &subject[start..];
        if let Some(n) = prefix_len(t) {
            pos = start + n;
        } else if let Some((n, content)) = leading_bracket(t) {
            if let Bracket::DeMail { options: o, unknown } = classify_bracket(content, vocab) {
                demail = true;
                options = options.union(o);
                if unknown.is_empty() {
                    stripped_any = true;
                    let end = start + n;
                    cut.push((start, end + blanks(&subject[end..])));
                } else {
                    blocked_strip = true;
                    errors.extend(unknown.iter().map(|u| unknown_tag(u)));
                }
            }
            pos = start + n;
        } else {
            break;
        }
    }

    // Trailing run: De-Mail and foreign brackets, as at the start.
    let mut end = subject.len();
    loop {
        let t = subject[pos..end].trim_end();
        let Some((open, content)) = trailing_bracket(t) else {
            break;
        };
        let Bracket::DeMail { options: o, unknown } = classify_bracket(content, vocab) else {
            end = pos + open;
            continue;
        };
        demail = true;
        options = options.union(o);
        let open = pos + open;
        if unknown.is_empty() {
            stripped_any = true;
            cut.push((pos + subject[pos..open].trim_end().len(), pos + t.len()));
        } else {
            blocked_strip = true;
            errors.extend(unknown.iter().map(|u| unknown_tag(u)));
        }
        end = open;
    }

    let out = if !stripped_any || blocked_strip {
        subject.to_string()
    } else {
        cut.sort_unstable();
        let mut out = String::with_capacity(subject.len());
        let mut at = 0;
        for (from, to) in cut {
            if from > at {
                out.push_str(&subject[at..from]);
            }
            at = at.max(to);
        }
        out.push_str(&subject[at..]);
        out.trim().to_string()
    };
    ParsedSubject { demail, options, subject: out, errors }
}

/// Write options as a leading tag: `[P, VB] Betreff`; no options gives `[De-Mail] Betreff`.
/// Existing De-Mail tags are replaced, so formatting twice changes nothing.
pub fn format(subject: &str, options: OptionSet, vocab: &Vocabulary) -> Result<String, Reason> {
    if subject.contains(['\r', '\n']) {
        return Err(Reason::new(
            "subject.crlf",
            "Der Betreff enthält Zeilenumbrüche; das ist nicht erlaubt.",
            "The subject contains line breaks, which is not allowed.",
        ));
    }
    let parsed = parse(subject, vocab);
    if let Some(e) = parsed.errors.into_iter().next() {
        return Err(e);
    }
    let words: Vec<&str> = if options.is_empty() {
        vec![vocab.demail.first().map(String::as_str).unwrap_or("De-Mail")]
    } else {
        WRITE_ORDER.into_iter().filter(|o| options.contains(*o)).map(|o| vocab.short(o)).collect()
    };
    let tag = format!("[{}]", words.join(", "));
    let rest = parsed.subject.trim();
    Ok(if rest.is_empty() { tag } else { format!("{tag} {rest}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ParsedSubject {
        parse(s, &Vocabulary::default())
    }

    #[test]
    fn basic_forms() {
        let r = p("[P] Frage zur KFZ-Zulassung");
        assert!(r.demail);
        assert_eq!(r.options.ids(), ["private"]);
        assert_eq!(r.subject, "Frage zur KFZ-Zulassung");

        let r = p("AW: [p , vb]Antrag");
        assert_eq!(r.options.ids(), ["confirmation-of-dispatch", "private"]);
        assert_eq!(r.subject, "AW: Antrag");

        let r = p("Antrag [Personal, Delivery confirmation]");
        assert_eq!(r.subject, "Antrag");
        assert_eq!(r.options.len(), 2);

        let r = p("[Ticket#123] Drucker defekt");
        assert!(!r.demail);
        assert_eq!(r.subject, "[Ticket#123] Drucker defekt");
    }

    #[test]
    fn unknown_tag_is_an_error_and_nothing_is_stripped() {
        let r = p("[P, XY] Betreff");
        assert!(r.demail);
        assert_eq!(r.errors[0].code, "subject.unknown_tag");
        assert_eq!(r.subject, "[P, XY] Betreff");
    }

    #[test]
    fn format_roundtrip() {
        let v = Vocabulary::default();
        let o: OptionSet = [DeMailOption::Private, DeMailOption::ConfirmationOfDispatch].into_iter().collect();
        let s = format("Betreff", o, &v).unwrap();
        assert_eq!(s, "[P, VB] Betreff");
        assert_eq!(format(&s, o, &v).unwrap(), s);
        assert_eq!(format("Betreff", OptionSet::EMPTY, &v).unwrap(), "[De-Mail] Betreff");
    }
}
