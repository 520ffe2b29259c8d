//! Sealing inbound mail: any `X-Demail-Gateway-Seal` that came with the message is
//! removed (only this gateway may seal), then the core signs the headers and the seal
//! goes on top. The canonical form and the signature are the core's (`demail_core::seal`).

use demail_core::headers::GATEWAY_SEAL as HEADER;
use demail_core::seal;

/// Byte ranges of every seal header field (with folded lines and line end).
fn seal_ranges(raw: &[u8]) -> Vec<std::ops::Range<usize>> {
    field_ranges(raw, HEADER)
}

/// Byte ranges of every header field called `name` (with folded lines and line end).
pub(crate) fn field_ranges(raw: &[u8], name: &str) -> Vec<std::ops::Range<usize>> {
    let Some(m) = mail_parser::MessageParser::default().parse_headers(raw) else {
        return Vec::new();
    };
    m.headers()
        .iter()
        .filter(|h| h.name.as_str().trim().eq_ignore_ascii_case(name))
        .map(|h| h.offset_field as usize..h.offset_end as usize)
        .collect()
}

/// `clean` with the field `name: value` as a line of its own at byte `at` (0, or after
/// leading continuation lines, [`orphan_lines`], so those cannot continue it).
pub(crate) fn put_field(clean: &[u8], at: usize, name: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(clean.len() + name.len() + value.len() + 8);
    out.extend_from_slice(&clean[..at]);
    if at > 0 && !clean[..at].ends_with(b"\n") {
        // Nothing but such lines, without a line end: ours starts a line of its own.
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    out.extend_from_slice(&clean[at..]);
    out
}

/// The message without any seal header (sealing switched off: a foreign seal must not pass).
pub fn strip(raw: Vec<u8>) -> Vec<u8> {
    let ranges = seal_ranges(&raw);
    if ranges.is_empty() {
        return raw;
    }
    remove(&raw, &ranges)
}

/// `raw` without the byte ranges (sorted, as the header parser gives them).
pub(crate) fn remove(raw: &[u8], ranges: &[std::ops::Range<usize>]) -> Vec<u8> {
    let mut clean = Vec::with_capacity(raw.len());
    let mut at = 0;
    for r in ranges {
        clean.extend_from_slice(&raw[at..r.start.max(at)]);
        at = r.end.max(at);
    }
    clean.extend_from_slice(&raw[at.min(raw.len())..]);
    clean
}

/// An inbound message made ready for a mailbox.
#[derive(Debug)]
pub struct Resealed {
    pub message: Vec<u8>,
    /// Foreign seals removed.
    pub removed: usize,
    /// Ours is on it. False only for a message so malformed that no place for our line
    /// reads back as a seal that verifies: it goes out unsealed, i.e. untrusted.
    pub sealed: bool,
}

/// The message without foreign seals, with ours on top: checked by verifying it, because
/// in a malformed header block the lines around ours can change how it is read (fuzz
/// finding: a message starting with a continuation line made that line part of our
/// seal). Then the place after such leading lines is tried.
pub fn reseal(raw: &[u8], kid: &str, key: &[u8; 32]) -> Result<Resealed, demail_core::Error> {
    let ranges = seal_ranges(raw);
    let clean = remove(raw, &ranges);
    let value = seal::sign(&clean, kid, key)?;
    let keys = [seal::public_key(kid, key)];
    let mut places = vec![0, orphan_lines(&clean)];
    places.dedup();
    for at in places {
        let out = put_field(&clean, at, HEADER, &value);
        if seal::verify(&out, &keys, true).sealed {
            return Ok(Resealed { message: out, removed: ranges.len(), sealed: true });
        }
    }
    Ok(Resealed { message: clean, removed: ranges.len(), sealed: false })
}

/// Length of the leading lines that start with a blank (SP or HTAB): they belong to no field.
pub(crate) fn orphan_lines(raw: &[u8]) -> usize {
    let mut at = 0;
    while matches!(raw.get(at), Some(b' ' | b'\t')) {
        match raw[at..].iter().position(|b| *b == b'\n') {
            Some(n) => at += n + 1,
            None => return raw.len(),
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_seals_are_replaced_and_ours_verifies() {
        let key = [3u8; 32];
        let keys = [seal::public_key("gw", &key)];
        let raw = b"X-Demail-Gateway-Seal: v=1; kid=gw; s=Zm9yZ2Vk\r\nFrom: a@b.de-mail.de\r\nX-de-mail-auth-level: high\r\nX-Demail-Gateway-Seal: v=1;\r\n kid=x; s=AAAA\r\nSubject: s\r\n\r\nbody X-Demail-Gateway-Seal: stays\r\n";
        let r = reseal(raw, "gw", &key).unwrap();
        let (out, removed) = (r.message, r.removed);
        assert_eq!(removed, 2);
        let s = String::from_utf8(out.clone()).unwrap();
        assert_eq!(s.matches("X-Demail-Gateway-Seal:").count(), 2, "{s}");
        assert!(s.ends_with("\r\n\r\nbody X-Demail-Gateway-Seal: stays\r\n"));
        assert!(seal::verify(&out, &keys, true).sealed);
    }

    /// Fuzz finding (gateway_prepare): a message starting with a continuation line made
    /// it part of our seal header, and our own seal did not verify.
    #[test]
    fn a_leading_continuation_line_does_not_join_the_seal() {
        let key = [9u8; 32];
        let keys = [seal::public_key("gw", &key)];
        for raw in [
            &b" [A] lf only\nMess\x03\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0kapu\0\0\0Fbody\n"[..],
            b"\t x\r\n y\r\nFrom: a@b.de-mail.de\r\nSubject: s\r\n\r\nT\r\n",
            b"   ",
            b" \0",
            b"   \r\nFrom: a@b.de-mail.de\r\n\r\nT\r\n",
        ] {
            let r = reseal(raw, "gw", &key).unwrap();
            let text = String::from_utf8_lossy(&r.message).to_string();
            if r.sealed {
                assert!(seal::verify(&r.message, &keys, true).sealed, "{text:?}");
            } else {
                // Unsealed only when no place works, and then without any seal line.
                assert!(!text.contains(HEADER), "{text:?}");
            }
        }
        // The common malformed case gets its seal, after the stray lines.
        let r = reseal(b"\t x\r\nFrom: a@b.de-mail.de\r\n\r\nT\r\n", "gw", &key).unwrap();
        assert!(r.sealed && r.message.starts_with(b"\t x\r\nX-Demail-Gateway-Seal: "));
    }
}
