//! The five TR shipping options, their headers, and `X-de-mail-private-id`.

use crate::headers::{self, PRIVATE_ID, PRIVATE_ID_MAX};
use crate::reason::{quote, Reason};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A shipping option ("Versandoption"). The serialised id is the TR header suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeMailOption {
    ConfirmationOfDispatch,
    ConfirmationOfReceipt,
    ConfirmationOfRetrieve,
    Authoritative,
    Private,
}

impl DeMailOption {
    /// In TR table order.
    pub const ALL: [DeMailOption; 5] = [
        DeMailOption::ConfirmationOfDispatch,
        DeMailOption::ConfirmationOfReceipt,
        DeMailOption::ConfirmationOfRetrieve,
        DeMailOption::Authoritative,
        DeMailOption::Private,
    ];

    /// The order in which the add-ins show the options: Persönlich first, then the
    /// three confirmations in the order a message travels, Absenderbestätigt last.
    pub const UI_ORDER: [DeMailOption; 5] = [
        DeMailOption::Private,
        DeMailOption::ConfirmationOfDispatch,
        DeMailOption::ConfirmationOfReceipt,
        DeMailOption::ConfirmationOfRetrieve,
        DeMailOption::Authoritative,
    ];

    pub fn id(self) -> &'static str {
        match self {
            DeMailOption::ConfirmationOfDispatch => "confirmation-of-dispatch",
            DeMailOption::ConfirmationOfReceipt => "confirmation-of-receipt",
            DeMailOption::ConfirmationOfRetrieve => "confirmation-of-retrieve",
            DeMailOption::Authoritative => "authoritative",
            DeMailOption::Private => "private",
        }
    }

    pub fn from_id(s: &str) -> Option<Self> {
        let s = s.trim();
        DeMailOption::ALL.into_iter().find(|o| o.id().eq_ignore_ascii_case(s))
    }

    /// The header as the TR spells it.
    pub fn header(self) -> &'static str {
        match self {
            DeMailOption::ConfirmationOfDispatch => headers::CONFIRMATION_OF_DISPATCH,
            DeMailOption::ConfirmationOfReceipt => headers::CONFIRMATION_OF_RECEIPT,
            DeMailOption::ConfirmationOfRetrieve => headers::CONFIRMATION_OF_RETRIEVE,
            DeMailOption::Authoritative => headers::AUTHORITATIVE,
            DeMailOption::Private => headers::PRIVATE,
        }
    }

    pub fn label_de(self) -> &'static str {
        match self {
            DeMailOption::ConfirmationOfDispatch => "Versandbestätigung",
            DeMailOption::ConfirmationOfReceipt => "Eingangsbestätigung",
            DeMailOption::ConfirmationOfRetrieve => "Abholbestätigung",
            DeMailOption::Authoritative => "Absenderbestätigt",
            DeMailOption::Private => "Persönlich",
        }
    }

    pub fn label_en(self) -> &'static str {
        match self {
            DeMailOption::ConfirmationOfDispatch => "Confirmation of dispatch",
            DeMailOption::ConfirmationOfReceipt => "Confirmation of receipt",
            DeMailOption::ConfirmationOfRetrieve => "Confirmation of retrieval",
            DeMailOption::Authoritative => "Sender confirmed",
            DeMailOption::Private => "Personal",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// One option as the add-ins list it (the `version` op's `options`): they read ids,
/// headers and labels from here instead of keeping their own copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OptionInfo {
    pub id: &'static str,
    pub header: &'static str,
    /// German label (the UI language).
    pub label: &'static str,
    pub label_en: &'static str,
}

/// The five options in [`DeMailOption::UI_ORDER`].
pub fn option_table() -> [OptionInfo; 5] {
    DeMailOption::UI_ORDER.map(|o| OptionInfo {
        id: o.id(),
        header: o.header(),
        label: o.label_de(),
        label_en: o.label_en(),
    })
}

impl fmt::Display for DeMailOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// A set of options; serialised as a list of ids in TR order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OptionSet(u8);

impl OptionSet {
    pub const EMPTY: OptionSet = OptionSet(0);

    pub fn all() -> Self {
        DeMailOption::ALL.into_iter().collect()
    }
    pub fn contains(self, o: DeMailOption) -> bool {
        self.0 & o.bit() != 0
    }
    pub fn insert(&mut self, o: DeMailOption) {
        self.0 |= o.bit();
    }
    pub fn remove(&mut self, o: DeMailOption) {
        self.0 &= !o.bit();
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }
    pub fn iter(self) -> impl Iterator<Item = DeMailOption> {
        DeMailOption::ALL.into_iter().filter(move |o| self.contains(*o))
    }
    /// Options in `self` that are not in `allowed`.
    pub fn minus(self, allowed: OptionSet) -> OptionSet {
        OptionSet(self.0 & !allowed.0)
    }
    pub fn union(self, other: OptionSet) -> OptionSet {
        OptionSet(self.0 | other.0)
    }
    pub fn ids(self) -> Vec<&'static str> {
        self.iter().map(DeMailOption::id).collect()
    }

    /// Parse a list of option ids (CLI `--options a,b`, JSON arrays).
    pub fn parse_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Result<OptionSet, Reason> {
        let mut set = OptionSet::EMPTY;
        for raw in ids {
            let id = raw.trim();
            if id.is_empty() {
                continue;
            }
            match DeMailOption::from_id(id) {
                Some(o) => set.insert(o),
                None => return Err(unknown_option(id)),
            }
        }
        Ok(set)
    }
}

pub(crate) fn unknown_option(id: &str) -> Reason {
    Reason::new(
        "options.unknown",
        format!(
            "Unbekannte Versandoption „{}“. Erlaubt sind: confirmation-of-dispatch, confirmation-of-receipt, confirmation-of-retrieve, authoritative, private.",
            quote(id)
        ),
        format!(
            "Unknown option \"{}\". Allowed: confirmation-of-dispatch, confirmation-of-receipt, confirmation-of-retrieve, authoritative, private.",
            quote(id)
        ),
    )
    .about(id)
}

impl FromIterator<DeMailOption> for OptionSet {
    fn from_iter<T: IntoIterator<Item = DeMailOption>>(iter: T) -> Self {
        let mut s = OptionSet::EMPTY;
        for o in iter {
            s.insert(o);
        }
        s
    }
}

impl Serialize for OptionSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for OptionSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v: Vec<String> = Vec::deserialize(d)?;
        OptionSet::parse_ids(v.iter().map(String::as_str))
            .map_err(|r| serde::de::Error::custom(crate::reason::encode_reason(&r)))
    }
}

/// The option a sender lacks, phrased for people.
pub(crate) fn option_list_de(opts: OptionSet) -> String {
    opts.iter().map(DeMailOption::label_de).collect::<Vec<_>>().join(", ")
}
pub(crate) fn option_list_en(opts: OptionSet) -> String {
    opts.iter().map(DeMailOption::label_en).collect::<Vec<_>>().join(", ")
}

/// Options read from a header list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HeaderOptions {
    /// Options whose (topmost) header says `yes`.
    pub options: OptionSet,
    /// Options whose (topmost) header says `no` explicitly.
    pub explicit_no: OptionSet,
    /// Invalid values, duplicates and rule violations.
    pub problems: Vec<Reason>,
}

/// Read the option headers: names case-insensitive, topmost occurrence wins,
/// values exactly `yes` or `no` (surrounding whitespace is folding, not value).
pub fn options_from_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> HeaderOptions {
    let mut out = HeaderOptions::default();
    let mut seen = OptionSet::EMPTY;
    let mut reported = OptionSet::EMPTY;
    for (name, value) in headers {
        let Some(opt) = DeMailOption::ALL.into_iter().find(|o| o.header().eq_ignore_ascii_case(name.trim())) else {
            continue;
        };
        if seen.contains(opt) {
            if reported.contains(opt) {
                continue;
            }
            reported.insert(opt);
            out.problems.push(
                Reason::new(
                    "header.duplicate",
                    format!("Kopfzeile {} kommt mehrfach vor; die oberste gilt.", opt.header()),
                    format!("Header {} occurs more than once; the topmost counts.", opt.header()),
                )
                .about(opt.header()),
            );
            continue;
        }
        seen.insert(opt);
        match value.trim_matches(|c: char| c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            "yes" => out.options.insert(opt),
            "no" => out.explicit_no.insert(opt),
            other => out.problems.push(
                Reason::new(
                    "header.invalid_value",
                    format!(
                        "Kopfzeile {} hat den ungültigen Wert „{}“; erlaubt sind genau „yes“ oder „no“.",
                        opt.header(),
                        quote(other)
                    ),
                    format!(
                        "Header {} has the invalid value \"{}\"; only exactly \"yes\" or \"no\" is allowed.",
                        opt.header(),
                        quote(other)
                    ),
                )
                .about(opt.header()),
            ),
        }
    }
    out
}

/// True for a pseudonym De-Mail address (`pn_…`).
pub fn is_pseudonym(addr: &str) -> bool {
    addr.len() >= 3 && addr.as_bytes()[..3].eq_ignore_ascii_case(b"pn_")
}

/// Apply the TR option rules for a sender.
///
/// Abholbestätigung implies Persönlich: it is added, unless Persönlich was set to
/// `no` explicitly, which is a contradiction. Absenderbestätigt is refused for
/// pseudonym senders.
pub fn apply_rules(
    mut options: OptionSet,
    explicit_no: OptionSet,
    demail_sender: Option<&str>,
) -> (OptionSet, Vec<Reason>) {
    let mut problems = Vec::new();
    if options.contains(DeMailOption::ConfirmationOfRetrieve) {
        if explicit_no.contains(DeMailOption::Private) {
            problems.push(Reason::new(
                "options.retrieve_requires_private",
                "Eine Abholbestätigung ist nur mit der Option „Persönlich“ möglich, aber X-de-mail-private ist „no“.",
                "A confirmation of retrieval requires the option \"Personal\", but X-de-mail-private is \"no\".",
            ));
        } else {
            options.insert(DeMailOption::Private);
        }
    }
    if options.contains(DeMailOption::Authoritative) {
        if let Some(sender) = demail_sender {
            if is_pseudonym(sender) {
                problems.push(
                    Reason::new(
                        "options.authoritative_pseudonym",
                        format!(
                            "„Absenderbestätigt“ ist für Pseudonym-Adressen (pn_…) nicht erlaubt: {}.",
                            quote(sender)
                        ),
                        format!(
                            "\"Sender confirmed\" is not allowed for pseudonym addresses (pn_…): {}.",
                            quote(sender)
                        ),
                    )
                    .about(sender),
                );
            }
        }
    }
    (options, problems)
}

/// Check a private-id: at most 1024 characters, no control characters (they would
/// break the header or inject new ones).
pub fn validate_private_id(id: &str) -> Result<(), Reason> {
    if id.trim().is_empty() {
        return Err(Reason::new(
            "private_id.empty",
            "Die Nachrichten-Kennung ist leer.",
            "The message reference (private-id) is empty.",
        ));
    }
    if id.chars().any(|c| c == '\r' || c == '\n') {
        return Err(Reason::new(
            "private_id.crlf",
            "Die Nachrichten-Kennung enthält einen Zeilenumbruch; das ist nicht erlaubt.",
            "The message reference (private-id) contains a line break, which is not allowed.",
        ));
    }
    if id.chars().any(|c| c.is_control() && c != '\t') {
        return Err(Reason::new(
            "private_id.control",
            "Die Nachrichten-Kennung enthält Steuerzeichen.",
            "The message reference (private-id) contains control characters.",
        ));
    }
    let n = id.chars().count();
    if n > PRIVATE_ID_MAX {
        return Err(Reason::new(
            "private_id.too_long",
            format!("Die Nachrichten-Kennung ist {n} Zeichen lang; erlaubt sind höchstens {PRIVATE_ID_MAX}."),
            format!("The message reference (private-id) is {n} characters long; at most {PRIVATE_ID_MAX} are allowed."),
        ));
    }
    Ok(())
}

/// Make a private-id such as `DM-20261127-103212-9F3A0C1B7E22D4A5`.
///
/// The caller supplies the clock and at least 8 bytes of entropy; the core does no I/O.
pub fn generate_private_id(unix_millis: u64, entropy: &[u8]) -> String {
    let secs = unix_millis / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let mut hex = String::with_capacity(16);
    for b in entropy.iter().take(8) {
        hex.push_str(&format!("{b:02X}"));
    }
    format!("DM-{y:04}{m:02}{d:02}-{:02}{:02}{:02}-{hex}", rem / 3600, (rem % 3600) / 60, rem % 60)
}

// Howard Hinnant's days→civil algorithm; avoids a date crate for one formatting need.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The header lines for a set of options and a private-id, in TR order.
pub fn option_headers(options: OptionSet, private_id: Option<&str>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = options.iter().map(|o| (o.header().to_string(), "yes".to_string())).collect();
    if let Some(id) = private_id {
        out.push((PRIVATE_ID.to_string(), id.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topmost_wins_and_case_insensitive_names() {
        let h = options_from_headers([
            ("x-DE-mail-private", " yes"),
            ("X-de-mail-private", "no"),
            ("X-de-mail-confirmation-of-dispatch", "Yes"),
        ]);
        assert!(h.options.contains(DeMailOption::Private));
        assert!(!h.options.contains(DeMailOption::ConfirmationOfDispatch));
        let codes: Vec<_> = h.problems.iter().map(|p| p.code.as_str()).collect();
        assert_eq!(codes, ["header.duplicate", "header.invalid_value"]);
    }

    #[test]
    fn retrieve_implies_private() {
        let (o, p) = apply_rules([DeMailOption::ConfirmationOfRetrieve].into_iter().collect(), OptionSet::EMPTY, None);
        assert!(o.contains(DeMailOption::Private));
        assert!(p.is_empty());
        let (_, p) = apply_rules(
            [DeMailOption::ConfirmationOfRetrieve].into_iter().collect(),
            [DeMailOption::Private].into_iter().collect(),
            None,
        );
        assert_eq!(p[0].code, "options.retrieve_requires_private");
    }

    #[test]
    fn authoritative_refused_for_pseudonym() {
        let (_, p) = apply_rules(
            [DeMailOption::Authoritative].into_iter().collect(),
            OptionSet::EMPTY,
            Some("pn_hans@x.de-mail.de"),
        );
        assert_eq!(p[0].code, "options.authoritative_pseudonym");
    }

    #[test]
    fn private_id_limits() {
        assert!(validate_private_id(&"x".repeat(1024)).is_ok());
        assert_eq!(validate_private_id(&"x".repeat(1025)).unwrap_err().code, "private_id.too_long");
        assert_eq!(validate_private_id("a\r\nBcc: x").unwrap_err().code, "private_id.crlf");
        // 1024 multi-byte characters are still 1024 characters.
        assert!(validate_private_id(&"ä".repeat(1024)).is_ok());
    }

    #[test]
    fn generated_id_is_dated_and_distinct() {
        let a = generate_private_id(1_795_775_532_000, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let b = generate_private_id(1_795_775_532_000, &[1, 2, 3, 4, 5, 6, 7, 9]);
        assert_eq!(a, "DM-20261127-103212-0102030405060708");
        assert_ne!(a, b);
        assert!(validate_private_id(&a).is_ok());
    }
}
