//! What a caseworker or an auditor asks of a received message: is it the provider's
//! unaltered message ([`crate::integrity`]), did it come through our gateway
//! ([`crate::seal`]), and, for a receipt, does it confirm exactly what we handed over?
//! The admin CLI's `demail verify` prints a [`Report`].

use crate::classify::{classify_raw, Kind, ReceiptType};
use crate::integrity::{parse_value, Verdict};
use crate::policy::Policy;
use crate::reason::{quote, Reason};
use mail_parser::{MessageParser, MimeHeaders};
use serde::Serialize;

/// The gateway's mark, in the report's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MarkStatus {
    Valid,
    Invalid,
    Absent,
    UnknownKey,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewaySignature {
    pub reasons: Vec<Reason>,
    pub status: MarkStatus,
}

/// The gateway's current mark is the seal (keys in the policy's `[seal]`).
pub fn gateway_signature(raw: &[u8], policy: &Policy) -> GatewaySignature {
    let v = crate::seal::verify(raw, &policy.seal.public_keys, policy.seal.required);
    let status = match v.reason.code.as_str() {
        "seal.valid" => MarkStatus::Valid,
        "seal.missing" => MarkStatus::Absent,
        "seal.unknown_key" => MarkStatus::UnknownKey,
        _ => MarkStatus::Invalid,
    };
    GatewaySignature { reasons: vec![v.reason], status }
}

/// A receipt, held against the message as it was handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceiptCheck {
    /// `true`: the receipt confirms exactly the message given as sent; `null` when none was given.
    pub matches_sent: Option<bool>,
    pub reasons: Vec<Reason>,
    #[serde(rename = "type")]
    pub kind: Option<ReceiptType>,
}

/// The `urn:de-mail` receipt XML: `Hash` and the `Metadata` name/value pairs.
struct ReceiptXml {
    hash: Option<String>,
    metadata: Vec<(String, String)>,
}

fn receipt_xml(raw: &[u8]) -> Option<ReceiptXml> {
    let msg = MessageParser::default().parse(raw)?;
    let text = msg.parts.iter().find_map(|p| {
        let sub = p.content_type()?.subtype()?.to_ascii_lowercase();
        let t = p.text_contents()?;
        ((sub == "xml" || sub.ends_with("+xml")) && t.contains("urn:de-mail")).then(|| t.to_string())
    })?;
    let opts = roxmltree::ParsingOptions { allow_dtd: false, nodes_limit: 100_000, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(&text, opts).ok()?;
    let root = doc.root_element();
    let child_text = |n: roxmltree::Node<'_, '_>, name: &str| {
        n.children()
            .find(|c| c.is_element() && c.tag_name().name() == name)
            .and_then(|c| c.text())
            .map(|t| t.trim().to_string())
    };
    let metadata = root
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == "Metadate")
        .filter_map(|m| Some((child_text(m, "Name")?, child_text(m, "Value").unwrap_or_default())))
        .collect();
    Some(ReceiptXml { hash: child_text(root, "Hash").filter(|h| !h.is_empty()), metadata })
}

fn rr(code: &str, de: String, en: String) -> Reason {
    Reason::new(code, de, en)
}

/// `None` unless the message is a receipt. With `sent`: its XML `Hash` (the original's
/// integrity value) must name the body hash of `sent`, and its `Metadata` must repeat
/// every `X-de-mail-*` header and the `Message-ID` that `sent` carries, value for value.
pub fn receipt(raw: &[u8], sent: Option<&[u8]>, policy: &Policy) -> Option<ReceiptCheck> {
    let c = classify_raw(raw, policy);
    if c.kind != Kind::Receipt {
        return None;
    }
    let kind = c.receipt.as_ref().and_then(|r| r.kind);
    let Some(sent) = sent else {
        return Some(ReceiptCheck { matches_sent: None, reasons: Vec::new(), kind });
    };
    let mismatch = |reasons: Vec<Reason>| Some(ReceiptCheck { matches_sent: Some(false), reasons, kind });
    let Some(xml) = receipt_xml(raw) else {
        return mismatch(vec![rr(
            "receipt.no_xml",
            "Die Bestätigung hat keinen lesbaren urn:de-mail-XML-Teil; sie lässt sich keiner Nachricht zuordnen."
                .into(),
            "The receipt has no readable urn:de-mail XML part; it cannot be tied to a message.".into(),
        )]);
    };
    let Some(hash) = &xml.hash else {
        return mismatch(vec![rr(
            "receipt.no_hash",
            "Die Bestätigung nennt keine Prüfsumme (Hash) der bestätigten Nachricht.".into(),
            "The receipt names no checksum (Hash) of the confirmed message.".into(),
        )]);
    };
    let value = match parse_value(hash) {
        Ok(v) => v,
        Err(e) => {
            return mismatch(vec![rr(
                "receipt.hash_invalid",
                format!("Die Prüfsumme (Hash) der Bestätigung ist kein lesbarer Integritätswert: {}", e.message),
                format!("The receipt's checksum (Hash) is no readable integrity value: {}", e.message_en),
            )])
        }
    };
    let mut reasons = Vec::new();
    if crate::integrity::message_body_hash(sent, value.algorithm.hash) != value.body_hash {
        reasons.push(rr(
            "receipt.body_mismatch",
            "Die Bestätigung gilt einer Nachricht mit anderem Inhalt als der versandten (bh= der Prüfsumme).".into(),
            "The receipt confirms a message whose content differs from the one sent (bh= of the checksum).".into(),
        ));
    }
    let mut seen: Vec<String> = Vec::new();
    for (name, v) in crate::seal::header_fields(sent) {
        let lower = name.trim().to_ascii_lowercase();
        if !(crate::headers::is_demail_header(&lower) || lower == "message-id") || seen.contains(&lower) {
            continue;
        }
        seen.push(lower);
        let name = name.trim().to_string();
        match xml.metadata.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            None => reasons.push(
                rr(
                    "receipt.metadata_missing",
                    format!("Die Bestätigung nennt die Kopfzeile {name} der versandten Nachricht nicht."),
                    format!("The receipt does not name the sent message's header {name}."),
                )
                .about(name),
            ),
            Some((_, got)) if got.trim() != v.trim() => reasons.push(
                rr(
                    "receipt.metadata_mismatch",
                    format!("{name}: versandt „{}“, bestätigt „{}“.", quote(&v), quote(got)),
                    format!("{name}: sent \"{}\", confirmed \"{}\".", quote(&v), quote(got)),
                )
                .about(name),
            ),
            Some(_) => {}
        }
    }
    if reasons.is_empty() {
        return Some(ReceiptCheck {
            matches_sent: Some(true),
            reasons: vec![rr(
                "receipt.matches_sent",
                "Die Bestätigung gilt genau der versandten Nachricht (Inhalt und De-Mail-Kopfzeilen).".into(),
                "The receipt confirms exactly the message sent (content and De-Mail headers).".into(),
            )],
            kind,
        });
    }
    mismatch(reasons)
}

/// The whole answer of `demail verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub integrity: Verdict,
    pub gateway_signature: GatewaySignature,
    pub receipt: Option<ReceiptCheck>,
}

/// Integrity with the policy's `[integrity]` CAs at `now` (seconds), the gateway mark and,
/// for receipts, the comparison with `sent`.
#[cfg(feature = "integrity-verify")]
pub fn report(raw: &[u8], sent: Option<&[u8]>, policy: &Policy, now: u64) -> Report {
    Report {
        integrity: crate::integrity::verify(raw, &policy.integrity.anchors(), now),
        gateway_signature: gateway_signature(raw, policy),
        receipt: receipt(raw, sent, policy),
    }
}
