//! IDN codec (UTS 46): ToASCII with the strict flags, ToUnicode for display.
//!
//! Natively the `idna` crate does it with its Unicode tables. The add-in's wasm (core
//! feature `host-idn`, wasm32 only) leaves those tables (~120 KB) out: the JS host's URL
//! parser maps and encodes (WHATWG = UTS 46 without STD3 rules, hyphen and DNS-length
//! checks), and this module adds the strict checks the URL parser skips. Only the codec
//! moves; what is a De-Mail address is decided by the core either way, and the Node parity
//! tests hold the wasm to the native answers.

#[cfg(all(feature = "host-idn", target_arch = "wasm32"))]
mod select {
    use std::sync::OnceLock;

    static HOST: OnceLock<super::HostToAscii> = OnceLock::new();

    pub fn set_host_to_ascii(f: super::HostToAscii) {
        let _ = HOST.set(f);
    }
    pub fn to_ascii_strict(d: &str) -> Option<String> {
        super::host::to_ascii_strict(d, *HOST.get()?)
    }
    pub fn to_unicode(a: &str) -> Option<String> {
        super::host::to_unicode(a, *HOST.get()?)
    }
}

#[cfg(not(all(feature = "host-idn", target_arch = "wasm32")))]
mod select {
    /// Ignored: this build has the `idna` tables.
    pub fn set_host_to_ascii(_: super::HostToAscii) {}
    pub fn to_ascii_strict(d: &str) -> Option<String> {
        idna::domain_to_ascii_strict(d).ok()
    }
    pub fn to_unicode(a: &str) -> Option<String> {
        let (u, r) = idna::domain_to_unicode(a);
        r.is_ok().then_some(u)
    }
}

/// The host's WHATWG "domain to ASCII" (`new URL("http://" + d + "/").hostname` in JS);
/// `None` when it fails.
pub type HostToAscii = fn(&str) -> Option<String>;

/// Register the host codec (wasm with `host-idn`; a no-op elsewhere). Until it is set,
/// every non-LDH name counts as invalid.
pub use select::set_host_to_ascii;
pub(crate) use select::{to_ascii_strict, to_unicode};

#[cfg(any(test, all(feature = "host-idn", target_arch = "wasm32")))]
mod host {
    use super::HostToAscii;

    /// `idna::domain_to_ascii_strict` from the host's WHATWG ToASCII plus the checks it skips.
    pub fn to_ascii_strict(d: &str, host: HostToAscii) -> Option<String> {
        // STD3 rules: an ASCII character other than letter, digit, '-' and '.' is never valid.
        // Rejecting them here also keeps URL syntax ('%', '/', '@', ':', …) away from the parser.
        if d.bytes().any(|b| b.is_ascii() && !(b.is_ascii_alphanumeric() || b == b'-' || b == b'.')) {
            return None;
        }
        // The extra label keeps a numeric last label from being read as an IPv4 address.
        let a = host(&format!("{d}.x"))?;
        let a = a.strip_suffix(".x")?;
        // VerifyDnsLength, STD3 on what the mapping produced, CheckHyphens on the Unicode labels.
        let ok = !a.is_empty()
            && a.len() <= 253
            && a.split('.').all(|l| {
                if l.is_empty()
                    || l.len() > 63
                    || !l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                {
                    return false;
                }
                let u: Vec<char> = match l.strip_prefix("xn--") {
                    Some(p) => match idna::punycode::decode(p) {
                        Some(u) => u,
                        None => return false,
                    },
                    None => l.chars().collect(),
                };
                !(u.first() == Some(&'-') || u.last() == Some(&'-') || (u.len() >= 4 && u[2] == '-' && u[3] == '-'))
            });
        ok.then(|| a.to_string())
    }

    /// Punycode labels decoded; `None` unless the result encodes back to the same name
    /// (the core only asks about names that passed [`to_ascii_strict`]).
    pub fn to_unicode(a: &str, host: HostToAscii) -> Option<String> {
        let mut out = String::with_capacity(a.len());
        for (i, l) in a.split('.').enumerate() {
            if i > 0 {
                out.push('.');
            }
            match l.get(..4).filter(|p| p.eq_ignore_ascii_case("xn--")) {
                Some(_) => out.push_str(&idna::punycode::decode_to_string(&l[4..].to_ascii_lowercase())?),
                None => out.push_str(&l.to_ascii_lowercase()),
            }
        }
        (to_ascii_strict(&out, host)? == a.to_ascii_lowercase()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::host;

    /// The WHATWG flags, as the JS host's URL parser applies them.
    fn whatwg(d: &str) -> Option<String> {
        idna::domain_to_ascii(d).ok()
    }

    fn check(d: &str) {
        assert_eq!(host::to_ascii_strict(d, whatwg), idna::domain_to_ascii_strict(d).ok(), "{d:?}");
    }

    #[test]
    fn host_path_agrees_with_idna_strict() {
        for d in [
            "münchen.de",
            "MÜNCHEN.DE",
            "xn--mnchen-3ya.de",
            "XN--MNCHEN-3YA.DE",
            "bürger.de-mail.de",
            "straße.de",
            "ＭＵＮＣＨＥＮ.de",
            "a.１２３",
            "１２７.０.０.１",
            "a。b.de",
            "a。",
            "-ü.de",
            "ü-.de",
            "üb--c.de",
            "ab--ü.de",
            "xn---tda.de",
            "xn--tda-.de",
            "xn--.de",
            "xn--a.de",
            "a_ü.de",
            "a＿ü.de",
            "ü%41.de",
            "ü/x.de",
            "ü@x.de",
            "ü:1.de",
            "ü..de",
            "ü.de.",
            "ü‍x.de",
            "\u{5d0}1.de",
            "1\u{5d0}.de",
            "a\u{0301}.de",
            "\u{FFFD}.de",
            "ü\u{0}.de",
            "ü ü.de",
            "ü\t.de",
            "⑴.de",
            "a⒈com",
            "ü.xn--p1ai",
            "ﬀ.de",
            "ǅ.de",
            "İ.de",
        ] {
            check(d);
        }
        check(&format!("{}.de", "ü".repeat(60)));
        check(&format!("{}.de", "ü".repeat(20)));
        check(&format!("{}.ü", ["abcdefghij"; 25].join(".")));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        #[test]
        fn host_path_agrees_on_random_names(d in "[a-zA-Z0-9.\\-_üÜßẞöéς\u{5d0}\u{627}\u{660}\u{200c}\u{200d}\u{301}１．。⒈⑴-]{1,30}") {
            check(&d);
        }
    }

    #[test]
    fn to_unicode_decodes_what_to_ascii_made() {
        for d in ["münchen.de", "bürger.de-mail.de", "straße.de", "x.de"] {
            let a = idna::domain_to_ascii_strict(d).unwrap();
            assert_eq!(host::to_unicode(&a, whatwg), Some(d.to_string()));
        }
        assert_eq!(host::to_unicode("xn--zz.de", whatwg), None);
    }
}
