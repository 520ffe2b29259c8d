//! Classification of a received message: De-Mail, receipt, notification, malware
//! message or plain e-mail. MIME parsing is mail-parser's; XML is roxmltree's.
//!
//! Best effort by design: missing, duplicated or garbled headers produce warnings,
//! never a failure, because a caseworker must still see the message.

use crate::headers::{self, is_demail_header};
use crate::options::{self, OptionSet};
use crate::policy::Policy;
use crate::reason::{quote, Reason};
use mail_parser::{Address, MessageParser, MimeHeaders};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Demail,
    Receipt,
    Notification,
    Malware,
    Email,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptType {
    Dispatch,
    Receipt,
    Retrieve,
}

impl ReceiptType {
    fn label(self) -> (&'static str, &'static str) {
        match self {
            ReceiptType::Dispatch => ("Versandbestätigung", "Versandbestaetigung"),
            ReceiptType::Receipt => ("Eingangsbestätigung", "Eingangsbestaetigung"),
            ReceiptType::Retrieve => ("Abholbestätigung", "Abholbestaetigung"),
        }
    }
    const ALL: [ReceiptType; 3] = [ReceiptType::Dispatch, ReceiptType::Receipt, ReceiptType::Retrieve];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ReceiptInfo {
    #[serde(rename = "type")]
    pub kind: Option<ReceiptType>,
    /// Message-ID of the confirmed De-Mail, from the XML part or In-Reply-To.
    pub original_message_id: Option<String>,
    /// `X-de-mail-integrity` value of the original, from the XML `Hash` element.
    pub hash: Option<String>,
    pub time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_time: Option<String>,
    /// Subject of the confirmed De-Mail, from the receipt's subject.
    pub original_subject: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classification {
    pub kind: Kind,
    /// The `X-de-mail-message-type` value as understood (`normal`, `confirmation of dispatch`, …).
    pub message_type: Option<String>,
    pub options: OptionSet,
    pub private_id: Option<String>,
    pub receipt: Option<ReceiptInfo>,
    /// `unknown-recipient`, `closed-account`, `invalid-format`, `identification` or `other`.
    pub notification_type: Option<String>,
    /// `normal` or `high`.
    pub auth_level: Option<String>,
    /// De-Mail sender (`X-de-mail-sender`, else From).
    pub sender: Option<String>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub demail_message_id: Option<String>,
    pub warnings: Vec<Reason>,
}

/// Headers as (name, value) pairs in message order; values unfolded.
pub type HeaderList = Vec<(String, String)>;

fn w(code: &str, de: String, en: String) -> Reason {
    Reason::new(code, de, en)
}

/// Unfold a raw header value and trim it.
fn unfold(raw: &str) -> String {
    let mut s = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // CR of a CRLF line end; a bare CR is kept so validation can see it.
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if !matches!(chars.peek(), Some(' ') | Some('\t')) {
                    s.push(' ');
                }
            }
            c => s.push(c),
        }
    }
    s.trim().to_string()
}

/// Classify raw MIME bytes.
pub fn classify_raw(raw: &[u8], policy: &Policy) -> Classification {
    let mut warnings = Vec::new();
    let parser = MessageParser::default();
    let Some(msg) = parser.parse(raw) else {
        let mut c = classify_headers(&Vec::new(), None, policy);
        c.warnings.insert(
            0,
            w(
                "mime.unparseable",
                "Die Nachricht ist kein lesbares Internet-Nachrichtenformat.".into(),
                "The message is not a readable Internet message.".into(),
            ),
        );
        return c;
    };
    if raw.contains(&0) {
        warnings.push(w(
            "mime.nul",
            "Die Nachricht enthält NUL-Bytes.".into(),
            "The message contains NUL bytes.".into(),
        ));
    }
    // RFC 5322 field names are printable ASCII without ':'; binary junk parses as one long "name".
    let valid_name =
        |n: &str| !n.is_empty() && n.len() <= 998 && n.bytes().all(|b| (33..=126).contains(&b) && b != b':');
    if !msg.headers().iter().any(|h| valid_name(h.name.as_str())) {
        warnings.push(w(
            "mime.unparseable",
            "Die Nachricht hat keinen lesbaren Kopfbereich.".into(),
            "The message has no readable header section.".into(),
        ));
    }
    let mut headers: HeaderList = Vec::new();
    for h in msg.headers() {
        let name = h.name.as_str();
        let (s, e) = (h.offset_start as usize, h.offset_end as usize);
        let raw_val = raw.get(s..e.max(s)).unwrap_or(b"");
        let value = match std::str::from_utf8(raw_val) {
            Ok(v) => unfold(v),
            Err(_) => {
                if is_demail_header(name) {
                    warnings.push(
                        w(
                            "header.encoding",
                            format!("Kopfzeile {name} enthält ungültige Zeichen (kein UTF-8)."),
                            format!("Header {name} contains invalid characters (not UTF-8)."),
                        )
                        .about(name),
                    );
                }
                unfold(&String::from_utf8_lossy(raw_val))
            }
        };
        // Decoded form for the headers people read (encoded words in Subject).
        let value = match name.to_ascii_lowercase().as_str() {
            "subject" => msg.subject().map(str::to_string).unwrap_or(value),
            _ => value,
        };
        headers.push((name.to_string(), value));
    }
    // From: use the parsed address so display names do not confuse detection.
    if let Some(Address::List(l)) = msg.from() {
        if let Some(a) = l.first().and_then(|a| a.address.as_deref()) {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case("from"));
            headers.insert(0, ("From".into(), a.to_string()));
        }
    }
    let xml = msg.parts.iter().find_map(|p| {
        let ct = p.content_type()?;
        let sub = ct.subtype().unwrap_or("");
        let is_xml = sub.eq_ignore_ascii_case("xml") || sub.to_ascii_lowercase().ends_with("+xml");
        if !is_xml {
            return None;
        }
        let text = p.text_contents()?;
        text.contains("urn:de-mail").then(|| text.to_string())
    });
    let mut c = classify_headers(&headers, xml.as_deref(), policy);
    if c.message_id.is_none() {
        c.message_id = msg.message_id().map(str::to_string);
    }
    warnings.append(&mut c.warnings);
    c.warnings = warnings;
    c
}

struct View<'a> {
    headers: &'a HeaderList,
}

impl<'a> View<'a> {
    /// Topmost value of a header, any case.
    fn get(&self, name: &str) -> Option<&'a str> {
        self.headers.iter().find(|(n, _)| n.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Classify from headers (e.g. what a mail client exposes) plus the receipt XML part if known.
pub fn classify_headers(headers: &HeaderList, xml: Option<&str>, policy: &Policy) -> Classification {
    let v = View { headers };
    let mut warnings: Vec<Reason> = Vec::new();

    // Duplicated De-Mail headers: the topmost counts; say so once per name.
    let mut seen: Vec<String> = Vec::new();
    let mut reported: Vec<String> = Vec::new();
    for (n, _) in headers.iter().filter(|(n, _)| is_demail_header(n.trim())) {
        let l = n.trim().to_ascii_lowercase();
        if seen.contains(&l) {
            if !reported.contains(&l) && !options::DeMailOption::ALL.iter().any(|o| o.header().eq_ignore_ascii_case(&l))
            {
                warnings.push(
                    w(
                        "header.duplicate",
                        format!("Kopfzeile {n} kommt mehrfach vor; die oberste gilt."),
                        format!("Header {n} occurs more than once; the topmost counts."),
                    )
                    .about(n.trim()),
                );
                reported.push(l);
            }
        } else {
            seen.push(l);
        }
    }
    let has_demail_headers = !seen.is_empty();

    let ho = options::options_from_headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    warnings.extend(ho.problems);

    let subject = v.get("subject").map(str::to_string);
    let from = v.get("from").map(extract_addr);
    let sender = v.get(headers::SENDER).map(extract_addr).or_else(|| from.clone());
    let from_domain = from.as_deref().and_then(|f| f.rsplit_once('@')).map(|(_, d)| d.to_ascii_lowercase());
    let from_local = from.as_deref().and_then(|f| f.rsplit_once('@')).map(|(l, _)| l.to_string());
    let demail_evidence = has_demail_headers || from_domain.as_deref().is_some_and(|d| policy.is_demail_domain(d));

    let private_id = v.get(headers::PRIVATE_ID).map(str::to_string);
    if let Some(id) = &private_id {
        if let Err(r) = options::validate_private_id(id) {
            warnings.push(r);
        }
    }

    let auth_level = match v.get(headers::AUTH_LEVEL) {
        None => None,
        Some(a) if a == "normal" || a == "high" => Some(a.to_string()),
        Some(a) => {
            warnings.push(
                w(
                    "header.invalid_value",
                    format!("X-de-mail-auth-level hat den ungültigen Wert „{}“ (erlaubt: normal, high).", quote(a)),
                    format!("X-de-mail-auth-level has the invalid value \"{}\" (allowed: normal, high).", quote(a)),
                )
                .about(headers::AUTH_LEVEL),
            );
            None
        }
    };

    // Kind from the message type, else from sender and subject, but only with De-Mail evidence:
    // "Versandbestätigung: Ihre Bestellung" from a web shop is not a De-Mail receipt.
    let mt_raw = v.get(headers::MESSAGE_TYPE);
    let mt_norm = mt_raw.map(|m| m.split_whitespace().collect::<Vec<_>>().join(" ").to_ascii_lowercase());
    let mut kind: Option<Kind> = None;
    let mut rtype: Option<ReceiptType> = None;
    let mut message_type: Option<String> = None;
    let mut notification_type: Option<String> = None;
    if let Some(mt) = &mt_norm {
        let exact = mt_raw.map(str::trim) == Some(mt.as_str());
        let known = match mt.as_str() {
            "normal" => Some((Kind::Demail, None)),
            "confirmation of dispatch" => Some((Kind::Receipt, Some(ReceiptType::Dispatch))),
            "confirmation of receipt" => Some((Kind::Receipt, Some(ReceiptType::Receipt))),
            "confirmation of retrieve" => Some((Kind::Receipt, Some(ReceiptType::Retrieve))),
            "malware-acknowledge" | "malware-notification" => Some((Kind::Malware, None)),
            "notification" => Some((Kind::Notification, None)),
            "identification" => {
                notification_type = Some("identification".into());
                Some((Kind::Notification, None))
            }
            _ => None,
        };
        match known {
            Some((k, r)) => {
                kind = Some(k);
                rtype = r;
                message_type = Some(mt.clone());
                if !exact {
                    warnings.push(
                        w(
                            "header.value_case",
                            format!(
                                "X-de-mail-message-type „{}“ weicht in Schreibweise ab; verstanden als „{mt}“.",
                                quote(mt_raw.unwrap_or(""))
                            ),
                            format!(
                                "X-de-mail-message-type \"{}\" differs in spelling; read as \"{mt}\".",
                                quote(mt_raw.unwrap_or(""))
                            ),
                        )
                        .about(headers::MESSAGE_TYPE),
                    );
                }
            }
            None => warnings.push(
                w(
                    "header.invalid_value",
                    format!("Unbekannter X-de-mail-message-type „{}“.", quote(mt_raw.unwrap_or(""))),
                    format!("Unknown X-de-mail-message-type \"{}\".", quote(mt_raw.unwrap_or(""))),
                )
                .about(headers::MESSAGE_TYPE),
            ),
        }
    }

    let subj_receipt = subject.as_deref().and_then(receipt_subject);
    let sender_receipt =
        from_local.as_deref().and_then(|l| ReceiptType::ALL.into_iter().find(|t| t.label().1.eq_ignore_ascii_case(l)));
    if kind.is_none() && demail_evidence {
        if let Some(t) = rtype.or(sender_receipt).or(subj_receipt.map(|s| s.0)) {
            kind = Some(Kind::Receipt);
            rtype = Some(t);
            message_type = Some(
                match t {
                    ReceiptType::Dispatch => "confirmation of dispatch",
                    ReceiptType::Receipt => "confirmation of receipt",
                    ReceiptType::Retrieve => "confirmation of retrieve",
                }
                .into(),
            );
        } else if from_local.as_deref().is_some_and(|l| l.eq_ignore_ascii_case("schadsoftware-warnung")) {
            kind = Some(Kind::Malware);
        } else if from_local.as_deref().is_some_and(|l| l.eq_ignore_ascii_case("meldung")) {
            kind = Some(Kind::Notification);
        } else if has_demail_headers {
            kind = Some(Kind::Demail);
        }
        if kind.is_some() && mt_raw.is_none() {
            warnings.push(w(
                "header.missing",
                "X-de-mail-message-type fehlt; die Art wurde aus Absender, Betreff und Kopfzeilen erschlossen.".into(),
                "X-de-mail-message-type is missing; the kind was inferred from sender, subject and headers.".into(),
            ));
        }
    }
    let kind = kind.unwrap_or(Kind::Email);

    if kind == Kind::Notification && notification_type.is_none() {
        notification_type = Some(match v.get(headers::NOTIFICATION_TYPE).map(str::trim) {
            Some(t @ ("unknown-recipient" | "closed-account" | "invalid-format" | "other")) => t.to_string(),
            Some(t) => {
                warnings.push(
                    w(
                        "header.invalid_value",
                        format!("Unbekannter X-de-mail-notification-type „{}“; behandelt als „other“.", quote(t)),
                        format!("Unknown X-de-mail-notification-type \"{}\"; treated as \"other\".", quote(t)),
                    )
                    .about(headers::NOTIFICATION_TYPE),
                );
                "other".into()
            }
            None => "other".into(),
        });
    }

    let receipt = (kind == Kind::Receipt).then(|| {
        let mut r =
            ReceiptInfo { kind: rtype, original_subject: subj_receipt.map(|s| s.1.to_string()), ..Default::default() };
        if let Some(x) = xml {
            read_receipt_xml(x, &mut r, &mut warnings);
        }
        if r.original_message_id.is_none() {
            r.original_message_id = v.get("in-reply-to").map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        }
        if private_id.is_none() {
            warnings.push(w(
                "receipt.no_private_id",
                "Die Bestätigung trägt keine X-de-mail-private-id; sie kann nur über die Message-ID zugeordnet werden."
                    .into(),
                "The receipt carries no X-de-mail-private-id; it can only be matched by Message-ID.".into(),
            ));
        }
        r
    });

    // Only Persönlich is copied onto receipts; other option headers there mean nothing.
    let options = match kind {
        Kind::Demail => ho.options,
        Kind::Receipt => ho.options.iter().filter(|o| *o == options::DeMailOption::Private).collect(),
        _ => OptionSet::EMPTY,
    };

    Classification {
        kind,
        message_type,
        options,
        private_id: if kind == Kind::Email { None } else { private_id },
        receipt,
        notification_type,
        auth_level,
        sender: if kind == Kind::Email { None } else { sender },
        subject,
        message_id: v.get("message-id").map(|s| s.trim().to_string()),
        demail_message_id: v.get(headers::DEMAIL_MESSAGE_ID).map(str::to_string),
        warnings,
    }
}

/// `a@b` out of `Name <a@b>`.
fn extract_addr(s: &str) -> String {
    match (s.rfind('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b => s[a + 1..b].trim().to_string(),
        _ => s.trim().to_string(),
    }
}

/// `*Versandbestätigung* Betreff` or `Versandbestätigung: Betreff` (umlauts optional).
pub fn receipt_subject(subject: &str) -> Option<(ReceiptType, &str)> {
    let s = subject.trim_start();
    for t in ReceiptType::ALL {
        let (uml, plain) = t.label();
        for label in [uml, plain] {
            if let Some(rest) = s.strip_prefix('*').and_then(|r| strip_ci(r, label)).and_then(|r| r.strip_prefix('*')) {
                return Some((t, rest.trim()));
            }
            if let Some(rest) = strip_ci(s, label).and_then(|r| r.trim_start().strip_prefix(':')) {
                return Some((t, rest.trim()));
            }
        }
    }
    None
}

fn strip_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let n = prefix.len();
    (s.len() >= n && s.is_char_boundary(n) && s[..n].to_lowercase() == prefix.to_lowercase()).then(|| &s[n..])
}

/// Fill receipt details from the `urn:de-mail` `Acknowledge-Message` XML.
fn read_receipt_xml(xml: &str, r: &mut ReceiptInfo, warnings: &mut Vec<Reason>) {
    let opts = roxmltree::ParsingOptions { allow_dtd: false, nodes_limit: 100_000, ..Default::default() };
    let doc = match roxmltree::Document::parse_with_options(xml, opts) {
        Ok(d) => d,
        Err(e) => {
            warnings.push(w(
                "receipt.xml_invalid",
                format!("Der XML-Teil der Bestätigung ist fehlerhaft: {}", quote(&e.to_string())),
                format!("The receipt's XML part is malformed: {}", quote(&e.to_string())),
            ));
            return;
        }
    };
    let root = doc.root_element();
    if root.tag_name().name() != "Acknowledge-Message" {
        warnings.push(w(
            "receipt.xml_root",
            format!(
                "Unerwartetes XML-Wurzelelement „{}“ (erwartet: Acknowledge-Message).",
                quote(root.tag_name().name())
            ),
            format!(
                "Unexpected XML root element \"{}\" (expected: Acknowledge-Message).",
                quote(root.tag_name().name())
            ),
        ));
    }
    let text = |name: &str| -> Option<String> {
        root.children()
            .find(|n| n.is_element() && n.tag_name().name() == name)
            .and_then(|n| n.text())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    };
    r.hash = text("Hash");
    r.time = text("Time");
    r.delivery_time = text("DeliveryTime");
    for md in root.descendants().filter(|n| n.is_element() && n.tag_name().name() == "Metadate") {
        let child = |name: &str| {
            md.children().find(|n| n.is_element() && n.tag_name().name() == name).and_then(|n| n.text()).map(str::trim)
        };
        if child("Name").is_some_and(|n| n.eq_ignore_ascii_case("Message-ID")) {
            r.original_message_id = child("Value").map(str::to_string);
        }
    }
    if r.original_subject.is_none() {
        r.original_subject = text("Subject");
    }
}
