//! RFC 5322 address lists, IDN, De-Mail detection and validation.
//!
//! Parsing is mail-parser's; this module adds normalisation (IDN, case) and the
//! De-Mail rules on top.

use crate::reason::{quote, Reason};
use mail_parser::{parsers::MessageStream, Address, HeaderValue};
use serde::{Deserialize, Serialize};

/// Longest address-list input we parse (a header of 500 recipients fits easily).
pub const MAX_LIST_LEN: usize = 256 * 1024;

/// One mailbox from an address list, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    /// Display name, if any (comments folded in by mail-parser).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `local@domain` with the domain in lower-case ASCII (punycode).
    pub address: String,
    /// The group this mailbox was listed in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl Mailbox {
    pub fn local(&self) -> &str {
        self.address.rsplit_once('@').map(|(l, _)| l).unwrap_or("")
    }
    pub fn domain(&self) -> &str {
        self.address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }
    /// The domain in Unicode, for display (computed on demand: the send check never needs it).
    pub fn domain_unicode(&self) -> String {
        domain_to_unicode(self.domain())
    }
}

fn crlf_error(input: &str) -> Reason {
    Reason::new(
        "address.crlf",
        format!("Die Adressangabe enthält einen Zeilenumbruch: „{}“.", quote(input)),
        format!("The address contains a line break: \"{}\".", quote(input)),
    )
}

fn invalid(input: &str) -> Reason {
    Reason::new(
        "address.invalid",
        format!("„{}“ ist keine gültige E-Mail-Adresse.", quote(input)),
        format!("\"{}\" is not a valid e-mail address.", quote(input)),
    )
    .about(input)
}

/// Normalise a domain to lower-case ASCII (punycode); `None` if it is not a valid host name.
pub fn domain_to_ascii(domain: &str) -> Option<String> {
    let d = domain.trim().trim_end_matches('.');
    if d.is_empty() || d.len() > 253 {
        return None;
    }
    // Address literals ([1.2.3.4]) are valid RFC 5322 but never De-Mail; keep them as they are.
    if d.starts_with('[') && d.ends_with(']') {
        return Some(d.to_ascii_lowercase());
    }
    // Fast path: a plain letters-digits-hyphen ASCII name maps to its lower case under
    // UTS 46, so the table-driven IDNA machinery is only needed for Unicode and xn--.
    if let Some(fast) = ldh_lowercase(d) {
        return Some(fast);
    }
    let ascii = crate::idn::to_ascii_strict(d)?;
    if ascii.is_empty() || ascii.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return None;
    }
    Some(ascii)
}

/// `Some(lower case)` for an LDH host name without punycode labels; `None` otherwise.
fn ldh_lowercase(d: &str) -> Option<String> {
    is_ldh(d).then(|| d.to_ascii_lowercase())
}

/// An LDH host name without punycode labels. One pass over the bytes: this runs for
/// every recipient of every send check.
fn is_ldh(d: &str) -> bool {
    let b = d.as_bytes();
    let mut start = 0;
    for i in 0..=b.len() {
        if i < b.len() && b[i] != b'.' {
            if !(b[i].is_ascii_alphanumeric() || b[i] == b'-') {
                return false;
            }
            continue;
        }
        let l = &b[start..i];
        if l.is_empty() || l.len() > 63 || l[0] == b'-' || l[l.len() - 1] == b'-' || (l.len() >= 4 && &l[2..4] == b"--")
        {
            return false;
        }
        start = i + 1;
    }
    true
}

fn has_punycode_label(d: &str) -> bool {
    d.split('.').any(|l| l.len() >= 4 && l.as_bytes()[..4].eq_ignore_ascii_case(b"xn--"))
}

/// The Unicode form of an ASCII domain, for display.
pub fn domain_to_unicode(ascii: &str) -> String {
    if !has_punycode_label(ascii) {
        return ascii.to_string();
    }
    crate::idn::to_unicode(ascii).unwrap_or_else(|| ascii.to_string())
}

/// Normalise one addr-spec (`local@domain`): trims, lower-cases and punycodes the domain.
pub fn normalize_addr_spec(spec: &str) -> Result<String, Reason> {
    if spec.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(crlf_error(spec));
    }
    let s = spec.trim().trim_start_matches('<').trim_end_matches('>').trim();
    let Some(at) = s.bytes().rposition(|b| b == b'@') else {
        return Err(invalid(spec));
    };
    let (local, domain) = (&s[..at], &s[at + 1..]);
    let quoted = local.len() >= 2 && local.starts_with('"') && local.ends_with('"');
    let special =
        |c: u8| matches!(c, b' ' | b'@' | b'"' | b'(' | b')' | b',' | b':' | b';' | b'<' | b'>' | b'[' | b']' | b'\\');
    let bad = if local.is_ascii() {
        local.bytes().any(|c| c.is_ascii_control() || !quoted && special(c))
    } else {
        local.chars().any(|c| c.is_control() || !quoted && c.is_ascii() && special(c as u8))
    };
    if local.is_empty() || bad {
        return Err(invalid(spec));
    }
    // `"peter.meier"@x.de` is `peter.meier@x.de` (RFC 5321 §4.1.2): drop needless quotes.
    let is_dot_atom = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && !s.ends_with('.')
            && !s.contains("..")
            && s.chars()
                .all(|c| c == '.' || !c.is_ascii() || c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c))
    };
    let local = match local.get(1..local.len() - 1) {
        Some(inner) if quoted && is_dot_atom(inner) => inner,
        _ => local,
    };
    let mut out = String::with_capacity(local.len() + 1 + domain.len());
    out.push_str(local);
    out.push('@');
    // Plain LDH domains are lower-cased in place: one allocation per address, not two.
    let d = domain.trim().trim_end_matches('.');
    if !d.is_empty() && d.len() <= 253 && is_ldh(d) {
        out.extend(d.bytes().map(|b| b.to_ascii_lowercase() as char));
    } else {
        out.push_str(&domain_to_ascii(domain).ok_or_else(|| invalid(spec))?);
    }
    Ok(out)
}

/// Parse an RFC 5322 address list (display names, quoted local parts, groups,
/// comments, encoded words, IDN). Groups are flattened; empty groups vanish.
pub fn parse_address_list(input: &str) -> Result<Vec<Mailbox>, Reason> {
    if input.contains(['\r', '\n']) {
        return Err(crlf_error(input));
    }
    if input.len() > MAX_LIST_LEN {
        return Err(Reason::new(
            "address.too_long",
            format!("Die Adressliste ist zu lang (mehr als {MAX_LIST_LEN} Bytes)."),
            format!("The address list is too long (more than {MAX_LIST_LEN} bytes)."),
        ));
    }
    if input.trim().is_empty() {
        return Ok(Vec::new());
    }
    // A bare `local@domain` (the common case from address books) needs no RFC 5322
    // machinery; the property test `simple_fast_path_agrees_with_mail_parser` keeps
    // this shortcut honest.
    if let Some((name, spec)) = simple_mailbox(input) {
        return Ok(vec![Mailbox { name: name.map(str::to_string), address: normalize_addr_spec(spec)?, group: None }]);
    }
    parse_rfc5322(input)
}

/// The general path: mail-parser reads the list, we normalise each mailbox.
fn parse_rfc5322(input: &str) -> Result<Vec<Mailbox>, Reason> {
    let mut buf = Vec::with_capacity(input.len() + 2);
    buf.extend_from_slice(input.as_bytes());
    buf.extend_from_slice(b"\r\n");
    let parsed = MessageStream::new(&buf).parse_address();
    let mut out = Vec::new();
    let mut push = |name: Option<&str>, addr: Option<&str>, group: Option<&str>| -> Result<(), Reason> {
        // mail-parser reads a bare quoted local part (`"peter.meier"@x.de`) as a display
        // name followed by `@x.de`; rebuild the addr-spec when the input really says so.
        let rebuilt = match (name, addr) {
            (Some(n), Some(a)) if a.starts_with('@') => {
                let spec = format!("\"{}\"{a}", n.replace('\\', "\\\\").replace('"', "\\\""));
                input.contains(&spec).then_some(spec)
            }
            _ => None,
        };
        let (name, addr) = match &rebuilt {
            Some(spec) => (None, Some(spec.as_str())),
            None => (name, addr),
        };
        let Some(addr) = addr else {
            // A display name without an address ("Peter Müller") is an error the user must see.
            return Err(invalid(name.unwrap_or(input)));
        };
        let address = normalize_addr_spec(addr)?;
        out.push(Mailbox {
            name: name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty()),
            address,
            group: group.map(str::to_string),
        });
        Ok(())
    };
    match parsed {
        HeaderValue::Address(Address::List(list)) => {
            for a in &list {
                push(a.name.as_deref(), a.address.as_deref(), None)?;
            }
        }
        HeaderValue::Address(Address::Group(groups)) => {
            for g in &groups {
                for a in &g.addresses {
                    push(a.name.as_deref(), a.address.as_deref(), g.name.as_deref())?;
                }
            }
        }
        _ => return Err(invalid(input)),
    }
    Ok(out)
}

/// `Some(trimmed)` when `input` is one bare addr-spec of printable ASCII without any
/// character that RFC 5322 gives a meaning beyond atext (quotes, comments, brackets,
/// list and group separators, whitespace).
fn simple_addr_spec(input: &str) -> Option<&str> {
    let s = input.trim_matches([' ', '\t']);
    let b = s.as_bytes();
    let at = b.iter().position(|&c| c == b'@')?;
    let plain = |c: u8| {
        c.is_ascii_graphic()
            && !matches!(c, b'"' | b'(' | b')' | b',' | b':' | b';' | b'<' | b'>' | b'[' | b']' | b'\\' | b'@')
    };
    (at > 0 && at + 1 < b.len() && b[at + 1..].iter().all(|&c| plain(c)) && b[..at].iter().all(|&c| plain(c)))
        .then_some(s)
}

/// The shapes address books produce — `a@x.de`, `Name <a@x.de>`, `"Name, Dr." <a@x.de>` —
/// as `(display name, addr-spec)`, when nothing in them needs RFC 5322's finer rules
/// (no comments, escapes, encoded words, groups, lists or folding). Anything else: `None`.
fn simple_mailbox(input: &str) -> Option<(Option<&str>, &str)> {
    if let Some(spec) = simple_addr_spec(input) {
        return Some((None, spec));
    }
    let s = input.trim_matches([' ', '\t']);
    let (phrase, rest) = s.split_once('<')?;
    let spec = simple_addr_spec(rest.strip_suffix('>')?)?;
    if spec.len() + 1 != rest.len() {
        return None; // blanks inside the angle brackets
    }
    let phrase = phrase.trim_end_matches(' ');
    // Byte windows, not `str::contains(&str)`: this runs for every named recipient, and
    // a substring searcher's set-up costs more than these short names.
    let has_pair = |t: &str, pair: &[u8]| t.as_bytes().windows(2).any(|w| w == pair);
    let single_spaced = |t: &str| !t.starts_with(' ') && !t.ends_with(' ') && !has_pair(t, b"  ");
    let name = if let Some(q) = phrase.strip_prefix('"') {
        let inner = q.strip_suffix('"')?;
        (single_spaced(inner) && !inner.contains(['"', '\\']) && !inner.chars().any(char::is_control))
            .then_some(inner)?
    } else {
        let ok = single_spaced(phrase)
            && !has_pair(phrase, b"=?")
            && phrase.chars().all(|c| {
                !c.is_control()
                    && !matches!(c, '"' | '(' | ')' | ',' | ':' | ';' | '<' | '>' | '[' | ']' | '\\' | '@' | '.')
            });
        ok.then_some(phrase)?
    };
    Some(((!name.is_empty()).then_some(name), spec))
}

// ---------------------------------------------------------------------------
// Domain patterns
// ---------------------------------------------------------------------------

/// A domain or `*.suffix` pattern, stored in lower-case ASCII.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainPattern {
    /// Without the `*.`.
    base: String,
    wildcard: bool,
}

impl DomainPattern {
    pub fn parse(s: &str) -> Result<Self, Reason> {
        let t = s.trim();
        let (wildcard, rest) = match t.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, t),
        };
        let base = domain_to_ascii(rest).filter(|d| !d.starts_with('[')).ok_or_else(|| {
            Reason::new(
                "policy.domain_invalid",
                format!("„{}“ ist kein gültiger Domainname oder Muster (z. B. „*.de-mail.de“).", quote(s)),
                format!("\"{}\" is not a valid domain name or pattern (e.g. \"*.de-mail.de\").", quote(s)),
            )
        })?;
        Ok(DomainPattern { base, wildcard })
    }

    /// `*.x.de` matches strict subdomains of `x.de`; a plain domain matches itself only.
    pub fn matches(&self, ascii_domain: &str) -> bool {
        if self.wildcard {
            ascii_domain.len() > self.base.len() + 1
                && ascii_domain.ends_with(&self.base)
                && ascii_domain.as_bytes()[ascii_domain.len() - self.base.len() - 1] == b'.'
        } else {
            ascii_domain == self.base
        }
    }

    pub fn as_string(&self) -> String {
        if self.wildcard {
            format!("*.{}", self.base)
        } else {
            self.base.clone()
        }
    }
}

impl Serialize for DomainPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_string())
    }
}

impl<'de> Deserialize<'de> for DomainPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DomainPattern::parse(&s).map_err(|r| serde::de::Error::custom(crate::reason::encode_reason(&r)))
    }
}

/// True when any pattern matches.
pub fn matches_any(patterns: &[DomainPattern], ascii_domain: &str) -> bool {
    patterns.iter().any(|p| p.matches(ascii_domain))
}

// ---------------------------------------------------------------------------
// De-Mail address rules (ACM-FU §2.1)
// ---------------------------------------------------------------------------

/// What validation found out about a De-Mail address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeMailAddressInfo {
    pub address: String,
    pub pseudonym: bool,
    pub problems: Vec<Reason>,
}

/// Validate a De-Mail address by the TR rules: lower case, local part ≤ 64,
/// domain ≤ 189, whole ≤ 253 characters; `pn_` marks a pseudonym.
pub fn validate_demail_address(addr: &str) -> DeMailAddressInfo {
    let local = addr.rsplit_once('@').map_or(addr, |(l, _)| l);
    DeMailAddressInfo {
        address: addr.to_string(),
        pseudonym: crate::options::is_pseudonym(local),
        problems: demail_address_problems(addr),
    }
}

/// The TR rule violations of a De-Mail address (the send check needs only these).
pub fn demail_address_problems(addr: &str) -> Vec<Reason> {
    let mut problems = Vec::new();
    let (local, domain) = addr.rsplit_once('@').unwrap_or((addr, ""));
    let mk = |code: &str, de: String, en: String| Reason::new(code, de, en).about(addr);
    if addr.chars().any(|c| c.is_uppercase()) {
        problems.push(mk(
            "demail_address.case",
            format!("De-Mail-Adressen werden klein geschrieben: {}.", quote(addr)),
            format!("De-Mail addresses are lower case: {}.", quote(addr)),
        ));
    }
    let (l, d, w) = (local.chars().count(), domain.chars().count(), addr.chars().count());
    if l == 0 || l > 64 {
        problems.push(mk(
            "demail_address.local_length",
            format!("Der lokale Teil einer De-Mail-Adresse muss 1 bis 64 Zeichen haben ({l}): {}.", quote(addr)),
            format!("The local part of a De-Mail address must have 1 to 64 characters ({l}): {}.", quote(addr)),
        ));
    }
    if d == 0 || d > 189 {
        problems.push(mk(
            "demail_address.domain_length",
            format!("Die Domain einer De-Mail-Adresse darf höchstens 189 Zeichen haben ({d}): {}.", quote(addr)),
            format!("The domain of a De-Mail address may have at most 189 characters ({d}): {}.", quote(addr)),
        ));
    }
    if w > 253 {
        problems.push(mk(
            "demail_address.length",
            format!("Eine De-Mail-Adresse darf höchstens 253 Zeichen haben ({w})."),
            format!("A De-Mail address may have at most 253 characters ({w})."),
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_groups_and_idn() {
        let l = parse_address_list(
            r#""Müller, Peter" <Peter@Beispiel.DE-Mail.de>, Amt: a@xn--mnchen-3ya.de, b@münchen.de;, (Kommentar) c@x.de"#,
        )
        .unwrap();
        let addrs: Vec<_> = l.iter().map(|m| m.address.as_str()).collect();
        assert_eq!(addrs, ["Peter@beispiel.de-mail.de", "a@xn--mnchen-3ya.de", "b@xn--mnchen-3ya.de", "c@x.de"]);
        assert_eq!(l[0].name.as_deref(), Some("Müller, Peter"));
        assert_eq!(l[1].group.as_deref(), Some("Amt"));
        assert_eq!(l[2].domain_unicode(), "münchen.de");
    }

    #[test]
    fn rejects_crlf_and_garbage() {
        assert_eq!(parse_address_list("a@b.de\r\nBcc: x@y.de").unwrap_err().code, "address.crlf");
        assert_eq!(parse_address_list("Peter Müller").unwrap_err().code, "address.invalid");
    }

    #[test]
    fn ascii_fast_path_agrees_with_idna() {
        for d in [
            "Stadt.DE-Mail.de",
            "a-b.c1.de",
            "x.de",
            "UPPER.EXAMPLE.ORG",
            "-bad.de",
            "bad-.de",
            "a..b",
            "a_b.de",
            "xn--mnchen-3ya.de",
            "ab--cd.de",
        ] {
            let idna =
                idna::domain_to_ascii_strict(d).ok().filter(|a| !a.split('.').any(|l| l.is_empty() || l.len() > 63));
            assert_eq!(domain_to_ascii(d), idna, "{d}");
        }
    }

    proptest::proptest! {
        // The shortcut for bare addr-specs must give exactly what mail-parser gives.
        #[test]
        fn simple_fast_path_agrees_with_mail_parser(
            local in "[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,20}",
            domain in "[A-Za-z0-9.-]{1,20}|xn--[a-z0-9-]{1,10}\\.de|[a-z]{1,8}\\.[Dd][Ee]-[Mm][Aa][Ii][Ll]\\.de",
            pad in "[ \t]{0,2}",
        ) {
            let input = format!("{pad}{local}@{domain}{pad}");
            proptest::prop_assert!(simple_addr_spec(&input).is_some());
            proptest::prop_assert_eq!(parse_address_list(&input), parse_rfc5322(&input), "{}", input);
        }
    }

    proptest::proptest! {
        #[test]
        fn named_fast_path_agrees_with_mail_parser(
            name in "[A-Za-zÄÖÜäöüß0-9 .,'-]{0,16}",
            quoted in proptest::bool::ANY,
            local in "[a-z0-9._-]{1,12}",
            domain in "[a-z0-9-]{1,10}\\.(de|DE|de-mail\\.de)",
            pad in " {0,2}",
        ) {
            let input = if quoted { format!("{pad}\"{name}\"{pad}<{local}@{domain}>{pad}") } else { format!("{pad}{name}{pad}<{local}@{domain}>") };
            let fast = simple_mailbox(&input).map(|(n, spec)| -> Result<_, Reason> {
                Ok(vec![Mailbox { name: n.map(str::to_string), address: normalize_addr_spec(spec)?, group: None }])
            });
            if let Some(fast) = fast {
                proptest::prop_assert_eq!(fast, parse_rfc5322(&input), "{}", input);
            }
        }
    }

    #[test]
    fn fast_path_takes_the_address_book_shapes() {
        let l = parse_address_list("\"Extern, Nr. 2\" <Extern2@Example.ORG>").unwrap();
        assert_eq!((l[0].name.as_deref(), l[0].address.as_str()), (Some("Extern, Nr. 2"), "Extern2@example.org"));
        assert!(simple_mailbox("Bürger 1 <b1@buerger.de-mail.de>").is_some());
        assert!(simple_mailbox("<b1@buerger.de-mail.de>").is_some());
    }

    #[test]
    fn fast_path_leaves_rfc5322_syntax_to_mail_parser() {
        for s in [
            "Peter (Amt) <p@x.de>",
            "=?utf-8?q?M=C3=BCller?= <m@x.de>",
            "\"a\\\"b\" <p@x.de>",
            "Peter  Meier <p@x.de>",
            "A <p@x.de>, B <q@x.de>",
            "\"a b\"@x.de",
            "a@x.de, b@x.de",
            "a@x.de (Kommentar)",
            "G: a@x.de;",
            "a@[1.2.3.4]",
            "p@x.de>",
        ] {
            assert!(simple_addr_spec(s).is_none(), "{s}");
        }
    }

    #[test]
    fn patterns() {
        let p = DomainPattern::parse("*.De-Mail.de").unwrap();
        assert!(p.matches("stadt.de-mail.de"));
        assert!(!p.matches("de-mail.de"));
        assert!(!p.matches("evilde-mail.de"));
        assert!(DomainPattern::parse("not a domain").is_err());
    }
}
