//! Sealing inbound mail: any `X-Demail-Gateway-Seal` that came with the message is
//! removed (only this gateway may seal), then the core signs the headers and the seal
//! goes on top. The canonical form and the signature are the core's (`demail_core::seal`).

use demail_core::headers::GATEWAY_SEAL as HEADER;
use demail_core::seal;

/// Byte ranges of every seal header field (with folded lines and line end).
fn seal_ranges(raw: &[u8]) -> Vec<std::ops::Range<usize>> {
    let Some(m) = mail_parser::MessageParser::default().parse_headers(raw) else {
        return Vec::new();
    };
    m.headers()
        .iter()
        .filter(|h| h.name.as_str().trim().eq_ignore_ascii_case(HEADER))
        .map(|h| h.offset_field as usize..h.offset_end as usize)
        .collect()
}

/// The message without any seal header (sealing switched off: a foreign seal must not pass).
pub fn strip(raw: Vec<u8>) -> Vec<u8> {
    let ranges = seal_ranges(&raw);
    if ranges.is_empty() {
        return raw;
    }
    remove(&raw, &ranges)
}

fn remove(raw: &[u8], ranges: &[std::ops::Range<usize>]) -> Vec<u8> {
    let mut clean = Vec::with_capacity(raw.len());
    let mut at = 0;
    for r in ranges {
        clean.extend_from_slice(&raw[at..r.start.max(at)]);
        at = r.end.max(at);
    }
    clean.extend_from_slice(&raw[at.min(raw.len())..]);
    clean
}

/// The message without foreign seals, with ours on top. Returns how many were removed.
pub fn reseal(raw: &[u8], kid: &str, key: &[u8; 32]) -> Result<(Vec<u8>, usize), demail_core::Error> {
    let ranges = seal_ranges(raw);
    let clean = remove(raw, &ranges);
    let value = seal::sign(&clean, kid, key)?;
    let mut out = Vec::with_capacity(clean.len() + value.len() + 32);
    out.extend_from_slice(HEADER.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&clean);
    Ok((out, ranges.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_seals_are_replaced_and_ours_verifies() {
        let key = [3u8; 32];
        let keys = [seal::public_key("gw", &key)];
        let raw = b"X-Demail-Gateway-Seal: v=1; kid=gw; s=Zm9yZ2Vk\r\nFrom: a@b.de-mail.de\r\nX-de-mail-auth-level: high\r\nX-Demail-Gateway-Seal: v=1;\r\n kid=x; s=AAAA\r\nSubject: s\r\n\r\nbody X-Demail-Gateway-Seal: stays\r\n";
        let (out, removed) = reseal(raw, "gw", &key).unwrap();
        assert_eq!(removed, 2);
        let s = String::from_utf8(out.clone()).unwrap();
        assert_eq!(s.matches("X-Demail-Gateway-Seal:").count(), 2, "{s}");
        assert!(s.ends_with("\r\n\r\nbody X-Demail-Gateway-Seal: stays\r\n"));
        assert!(seal::verify(&out, &keys, true).sealed);
    }
}
