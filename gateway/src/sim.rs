//! Provider simulator (DMDA) for tests and the demo. Not a De-Mail provider.
//!
//! It accepts submissions over TLS with AUTH — the gateway's account at level "hoch":
//! password plus a TOTP code (RFC 6238), accounts without a second factor at "normal" —
//! checks the TR headers with the core, stamps the provider headers (message id,
//! originator, auth level and mechanism of the actual login, message type, version,
//! sender, chosen recipients), signs with `X-de-mail-integrity` and
//! `X-de-mail-signature-certificate` (or only hashes, per configuration), stores the
//! message, and sends receipts (signed the same way, XML with `Hash` and a real XML-DSig
//! `ds:Signature`) and notifications back to the organisation's gateway:
//! Versandbestätigung on acceptance, Eingangsbestätigung on "delivery",
//! Abholbestätigung on command (`retrieve`), `unknown-recipient` notifications for
//! recipients whose local part starts with a configured prefix. `inject` sends a
//! De-Mail "from a citizen" to the gateway.

use crate::config::{Secret, TlsFiles};
use base64::Engine;
use demail_core::cert::{Hash, SigKind};
use demail_core::headers::{self as h, message_type};
use demail_core::integrity::{Algorithm, SigningKey};
use demail_core::options::{self, options_from_headers, validate_private_id, DeMailOption};
use demail_core::{Error, OptionSet};
use demail_smtp::{Accepted, AuthResult, Authenticated, Envelope, Handler, Reject};
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::mime::MimePart;
use mail_builder::MessageBuilder;
use mail_send::smtp::message::{Address, Message};
use mail_send::SmtpClientBuilder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Provider FQDN; receipts come from `Versandbestaetigung@<hostname>` etc.
    pub hostname: String,
    pub listen: String,
    pub tls: TlsFiles,
    /// Require a client certificate from this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
    pub store_dir: PathBuf,
    pub username: String,
    pub secret_env: String,
    /// Environment variable with the gateway account's TOTP secret (base32, RFC 6238:
    /// SHA-1, 6 digits, 30 s). The account logs in with its secret followed by the
    /// current code; the secret alone is refused.
    pub totp_secret_env: String,
    /// Accounts that log in with a password only, at level "normal" (a citizen's account).
    #[serde(default)]
    pub normal_accounts: Vec<NormalAccount>,
    /// How De-Mails and receipts are signed; without it only hashed (`a=sha256`).
    #[serde(default)]
    pub signing: Option<Signing>,
    /// Recipients whose local part starts with one of these do not exist.
    #[serde(default)]
    pub unknown_local_prefixes: Vec<String>,
    /// Recipients whose local part starts with one of these are refused at RCPT (550),
    /// the others of the same message are accepted: a partial refusal.
    #[serde(default)]
    pub refuse_local_prefixes: Vec<String>,
    pub gateway: GatewayPeer,
}

/// An account without a second factor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalAccount {
    pub username: String,
    pub secret_env: String,
}

/// The provider's signature: `a=` and its key and certificate (PEM files).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signing {
    /// `sha256`, `sha384`, `sha512`, optionally with `/rsa`, `/ec-dsa`, `/rsassa-pss`.
    pub algorithm: String,
    pub key: Option<PathBuf>,
    pub cert: Option<PathBuf>,
}

/// The organisation's gateway, where receipts and inbound De-Mail go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayPeer {
    pub host: String,
    pub port: u16,
    pub ca: PathBuf,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// De-Mail domains served by the gateway: messages to them are delivered there.
    pub domains: Vec<String>,
}

impl SimConfig {
    pub fn load(path: &Path) -> Result<SimConfig, Error> {
        let bad = |code, de, en, e: &dyn std::fmt::Display| {
            Error::new(code, de, en).caused_by(format!("{}: {e}", path.display()))
        };
        let src = std::fs::read_to_string(path).map_err(|e| {
            bad("sim.config_unreadable", "Konfiguration nicht lesbar.", "Configuration not readable.", &e)
        })?;
        toml::from_str(&src)
            .map_err(|e| bad("sim.config_invalid", "Konfiguration ungültig.", "Configuration invalid.", &e))
    }
}

/// What the simulator remembers about a submitted De-Mail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    pub id: String,
    pub from: String,
    pub rcpts: Vec<String>,
    pub subject: String,
    pub private_id: Option<String>,
    pub options: OptionSet,
    pub message_id: Option<String>,
    pub integrity: String,
    pub time: u64,
    /// The stamped message's `X-de-mail-*` headers (topmost each), for the receipts' XML.
    #[serde(default)]
    pub metadata: Vec<(String, String)>,
}

fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Text content as exclusive XML canonicalisation writes it (`&`, `<`, `>`; quotes stay),
/// so the XML-DSig digest is over the document exactly as sent.
fn xml_escape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// A one-page PDF with ASCII text: enough to be a valid rendering of the receipt.
pub fn tiny_pdf(lines: &[String]) -> Vec<u8> {
    let esc = |s: &str| -> String {
        s.chars()
            .map(|c| match c {
                'ä' => "ae".into(),
                'ö' => "oe".into(),
                'ü' => "ue".into(),
                'Ä' => "Ae".into(),
                'Ö' => "Oe".into(),
                'Ü' => "Ue".into(),
                'ß' => "ss".into(),
                '(' | ')' | '\\' => format!("\\{c}"),
                c if c.is_ascii() && !c.is_control() => c.to_string(),
                _ => "?".into(),
            })
            .collect()
    };
    let mut content = String::from("BT /F1 11 Tf 60 780 Td 14 TL\n");
    for l in lines {
        content.push_str(&format!("({}) '\n", esc(l)));
    }
    content.push_str("ET\n");
    let objs = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>".to_string(),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
        format!("<< /Length {} >>\nstream\n{content}endstream", content.len()),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objs.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).as_bytes());
    for off in offsets {
        out.extend(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend(format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objs.len() + 1).as_bytes());
    out
}

/// Headers of `raw` as (name, exact field bytes).
fn fields(raw: &[u8]) -> Vec<(String, Vec<u8>)> {
    match mail_parser::MessageParser::default().parse(raw) {
        Some(m) => m
            .headers()
            .iter()
            .map(|h| {
                (
                    h.name.as_str().to_string(),
                    raw.get(h.offset_field as usize..h.offset_end as usize).unwrap_or(b"").to_vec(),
                )
            })
            .collect(),
        None => Vec::new(),
    }
}

/// The TR version the simulated provider implements.
const TR_VERSION: &str = "1.8";

/// How the sender logged in: `X-de-mail-auth-level` and `-auth-mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Login {
    pub level: &'static str,
    pub mechanism: &'static str,
}

/// The gateway's login: secret plus TOTP code.
pub const LOGIN_HIGH: Login = Login { level: "high", mechanism: "password+totp" };
/// An account without a second factor.
pub const LOGIN_NORMAL: Login = Login { level: "normal", mechanism: "password" };

/// `to=<list>; cc=<list>` from the message's To and Cc (the recipients the sender chose).
fn chosen_recipients(raw: &[u8]) -> Option<String> {
    let m = mail_parser::MessageParser::default().parse_headers(raw)?;
    let list = |a: Option<&mail_parser::Address<'_>>| -> String {
        a.map(|a| a.iter().filter_map(|x| x.address()).collect::<Vec<_>>().join(", ")).unwrap_or_default()
    };
    let parts: Vec<String> = [("to", list(m.to())), ("cc", list(m.cc()))]
        .into_iter()
        .filter(|(_, l)| !l.is_empty())
        .map(|(k, l)| format!("{k}={l}"))
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn new_id() -> String {
    crate::spool::new_id()
}

pub struct Sim {
    pub cfg: SimConfig,
    secret: String,
    totp: totp_rs::TOTP,
    normal: Vec<(String, String)>,
    algorithm: Algorithm,
    /// Key and certificate (DER) when the algorithm signs.
    signer: Option<Signer>,
    /// Idempotency keys being stored right now.
    storing: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// A submission's idempotency key: sender, Message-ID and recipient set. A gateway that
/// resends after a crash sends the same three, so the message is stored once.
pub fn idempotency_key(from: &str, message_id: &str, rcpts: &[String]) -> String {
    let mut r: Vec<String> = rcpts.iter().map(|x| x.to_ascii_lowercase()).collect();
    r.sort();
    let mut h = Sha256::new();
    h.update(from.to_ascii_lowercase().as_bytes());
    h.update([0]);
    h.update(message_id.as_bytes());
    for x in r {
        h.update([0]);
        h.update(x.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A signing key and its certificate (DER).
type Signer = (SigningKey, Vec<u8>);

fn load_signing(s: Option<&Signing>) -> Result<(Algorithm, Option<Signer>), Error> {
    let bad = |what: &str, e: String| {
        Error::new(
            "sim.signing_invalid",
            format!("Signaturkonfiguration [signing] unbrauchbar: {what}."),
            format!("Signing configuration [signing] unusable: {what}."),
        )
        .caused_by(e)
    };
    let Some(s) = s else {
        return Ok((Algorithm { hash: Hash::Sha256, sig: None }, None));
    };
    let algorithm = Algorithm::parse(&s.algorithm).ok_or_else(|| bad("algorithm", s.algorithm.clone()))?;
    if algorithm.sig.is_none() {
        return Ok((algorithm, None));
    }
    let (Some(key), Some(cert)) = (&s.key, &s.cert) else {
        return Err(bad("key und cert fehlen / key and cert missing", s.algorithm.clone()));
    };
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| bad("Datei / file", format!("{}: {e}", p.display())));
    let key = SigningKey::from_pem(&read(key)?).map_err(|r| bad("key", r.message_en))?;
    let cert = demail_core::cert::Cert::from_text(&read(cert)?).map_err(|r| bad("cert", r.message_en))?;
    Ok((algorithm, Some((key, cert.der))))
}

impl Sim {
    /// The integrity header lines for a message as it will be sent (see [`demail_core::integrity::sign`]).
    fn sign(&self, raw: &[u8]) -> Result<demail_core::integrity::Signed, demail_core::Reason> {
        demail_core::integrity::sign(raw, self.algorithm, self.signer.as_ref().map(|(k, c)| (k, c.as_slice())))
    }

    /// Put the integrity lines on top; the value for receipts' `Hash`.
    fn signed(&self, raw: Vec<u8>) -> Result<(Vec<u8>, String), demail_core::Reason> {
        let s = self.sign(&raw)?;
        let mut out = s.header.into_bytes();
        out.extend(raw);
        Ok((out, s.value))
    }

    /// Prepend the provider headers to a submitted message, then sign it.
    fn stamp(
        &self,
        raw: &[u8],
        msg_id: &str,
        sender: &str,
        login: Login,
    ) -> Result<(Vec<u8>, String), demail_core::Reason> {
        let host = &self.cfg.hostname;
        let mut head = Vec::new();
        let mut add = |name: &str, value: String| head.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        add(h::DEMAIL_MESSAGE_ID, format!("<{msg_id}@{host}>"));
        add(h::ORIGINATOR_PROVIDER, host.to_string());
        add(h::AUTH_LEVEL, login.level.to_string());
        add(h::AUTH_MECHANISM, login.mechanism.to_string());
        add(h::MESSAGE_TYPE, message_type::NORMAL.to_string());
        add(h::VERSION, TR_VERSION.to_string());
        add(h::SENDER, sender.to_string());
        if let Some(c) = chosen_recipients(raw) {
            add(h::CHOSEN_RECIPIENT, c);
        }
        head.extend_from_slice(raw);
        self.signed(head)
    }

    /// The XML-DSig `ds:Signature` (enveloped, exclusive C14N, SHA-256) for a receipt XML
    /// whose root content is `inner` (written in canonical form), or none without a key.
    fn xml_signature(&self, root_open: &str, inner: &str, root_close: &str) -> String {
        let Some((key, cert)) = &self.signer else { return String::new() };
        const DS: &str = "http://www.w3.org/2000/09/xmldsig#";
        const C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
        let b64 = base64::engine::general_purpose::STANDARD;
        // What the enveloped-signature transform leaves: the document without ds:Signature.
        let digest = b64.encode(Hash::Sha256.digest(format!("{root_open}{inner}  \n{root_close}").as_bytes()));
        let (kind, method) = match key {
            SigningKey::Rsa(_) => (SigKind::Rsa, "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"),
            _ => (SigKind::EcDsa, "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"),
        };
        let signed_info = |ns: &str| {
            format!(
                "<ds:SignedInfo{ns}><ds:CanonicalizationMethod Algorithm=\"{C14N}\"></ds:CanonicalizationMethod>\
                 <ds:SignatureMethod Algorithm=\"{method}\"></ds:SignatureMethod><ds:Reference URI=\"\"><ds:Transforms>\
                 <ds:Transform Algorithm=\"{DS}enveloped-signature\"></ds:Transform><ds:Transform Algorithm=\"{C14N}\"></ds:Transform>\
                 </ds:Transforms><ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"></ds:DigestMethod>\
                 <ds:DigestValue>{digest}</ds:DigestValue></ds:Reference></ds:SignedInfo>"
            )
        };
        // SignedInfo is signed as exclusive C14N renders it: with the ds namespace on it.
        let canonical = signed_info(&format!(" xmlns:ds=\"{DS}\""));
        let Ok(mut sig) = key.sign(kind, Hash::Sha256, canonical.as_bytes()) else { return String::new() };
        if kind == SigKind::EcDsa {
            // XML-DSig wants r‖s, not DER.
            let n = if matches!(key, SigningKey::P256(_)) { 32 } else { 48 };
            sig = demail_core::cert::ecdsa_raw(&sig, n).unwrap_or_default();
        }
        format!(
            "<ds:Signature xmlns:ds=\"{DS}\">{}<ds:SignatureValue>{}</ds:SignatureValue><ds:KeyInfo><ds:X509Data>\
             <ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>",
            signed_info(""),
            b64.encode(sig),
            b64.encode(cert)
        )
    }

    pub fn new(cfg: SimConfig) -> Result<Arc<Sim>, Error> {
        let env = |var: &str| Secret { secret_env: Some(var.to_string()), ..Default::default() }.read();
        let secret = env(&cfg.secret_env)?;
        let totp = crate::relay::totp(&env(&cfg.totp_secret_env)?)?;
        let normal = cfg
            .normal_accounts
            .iter()
            .map(|a| Ok((a.username.clone(), env(&a.secret_env)?)))
            .collect::<Result<_, Error>>()?;
        let (algorithm, signer) = load_signing(cfg.signing.as_ref())?;
        std::fs::create_dir_all(cfg.store_dir.join("idempotency")).map_err(|e| {
            Error::new("sim.store", "Ablage (store_dir) nicht anlegbar.", "store_dir cannot be created.")
                .caused_by(format!("{}: {e}", cfg.store_dir.display()))
        })?;
        Ok(Arc::new(Sim { cfg, secret, totp, normal, algorithm, signer, storing: Default::default() }))
    }

    fn unknown(&self, rcpt: &str) -> bool {
        let local = rcpt.split('@').next().unwrap_or("");
        self.cfg.unknown_local_prefixes.iter().any(|p| local.to_ascii_lowercase().starts_with(&p.to_ascii_lowercase()))
    }

    fn refused(&self, rcpt: &str) -> bool {
        let local = rcpt.split('@').next().unwrap_or("").to_ascii_lowercase();
        self.cfg.refuse_local_prefixes.iter().any(|p| local.starts_with(&p.to_ascii_lowercase()))
    }

    fn key_path(&self, key: &str) -> PathBuf {
        self.cfg.store_dir.join("idempotency").join(key)
    }

    /// The id under which a submission with this key was stored, if any.
    pub fn seen(&self, key: &str) -> Option<String> {
        std::fs::read_to_string(self.key_path(key)).ok()
    }

    fn remember(&self, key: &str, id: &str) -> std::io::Result<()> {
        use std::io::Write;
        let p = self.key_path(key);
        let mut f = std::fs::File::create(&p)?;
        f.write_all(id.as_bytes())?;
        f.sync_all()?;
        std::fs::File::open(p.parent().unwrap_or(&self.cfg.store_dir))?.sync_all()
    }

    fn is_org(&self, rcpt: &str) -> bool {
        let dom = rcpt.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        self.cfg.gateway.domains.iter().any(|d| d.eq_ignore_ascii_case(dom))
    }

    fn store(&self, s: &Stored, raw: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        for (ext, data) in [("eml", raw.to_vec()), ("json", serde_json::to_vec(s).map_err(std::io::Error::other)?)] {
            // Renamed into place: whoever lists the store never reads half a message.
            let p = self.cfg.store_dir.join(format!("{}.{ext}", s.id));
            let tmp = self.cfg.store_dir.join(format!("{}.{ext}.tmp", s.id));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &p)?;
        }
        std::fs::File::open(&self.cfg.store_dir)?.sync_all()
    }

    pub fn stored(&self) -> Vec<Stored> {
        let mut v: Vec<Stored> = std::fs::read_dir(&self.cfg.store_dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .filter_map(|e| std::fs::read(e.path()).ok())
                    .filter_map(|b| serde_json::from_slice(&b).ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Send a message to the gateway's inbound listener (implicit TLS, client certificate).
    pub async fn to_gateway(&self, from: &str, rcpts: &[String], raw: &[u8]) -> Result<(), Error> {
        let g = &self.cfg.gateway;
        let client = match (&g.client_cert, &g.client_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        let failed = |e: String| {
            Error::new("sim.to_gateway", "Zustellung an das Gateway fehlgeschlagen.", "Delivery to the gateway failed.")
                .caused_by(e)
        };
        let tls = demail_smtp::tls::client_config(&g.ca, client).map_err(failed)?;
        let b =
            SmtpClientBuilder::new_with_tls_connector(g.host.clone(), g.port, tokio_rustls::TlsConnector::from(tls))
                .implicit_tls(true)
                .helo_host(self.cfg.hostname.clone())
                .timeout(Duration::from_secs(60));
        let mut c = b.connect().await.map_err(|e| failed(e.to_string()))?;
        let body = raw.strip_suffix(b"\r\n").unwrap_or(raw);
        let msg = Message {
            mail_from: Address { email: Cow::Borrowed(from), parameters: Default::default() },
            rcpt_to: rcpts
                .iter()
                .map(|r| Address { email: Cow::Borrowed(r.as_str()), parameters: Default::default() })
                .collect(),
            body: Cow::Borrowed(body),
        };
        c.send(msg).await.map_err(|e| failed(e.to_string()))?;
        let _ = c.quit().await;
        Ok(())
    }

    /// A receipt as reference §2 describes it.
    pub fn receipt(&self, kind: DeMailOption, orig: &Stored, rcpt: &str) -> (String, Vec<u8>) {
        let (label, local, mtype, text_de) = match kind {
            DeMailOption::ConfirmationOfReceipt => (
                "Eingangsbestätigung",
                "Eingangsbestaetigung",
                message_type::CONFIRMATION_OF_RECEIPT,
                "Ihre De-Mail ist im Postfach des Empfängers eingegangen.",
            ),
            DeMailOption::ConfirmationOfRetrieve => (
                "Abholbestätigung",
                "Abholbestaetigung",
                message_type::CONFIRMATION_OF_RETRIEVE,
                "Der Empfänger hat sich angemeldet; Ihre De-Mail gilt als abgeholt.",
            ),
            _ => (
                "Versandbestätigung",
                "Versandbestaetigung",
                message_type::CONFIRMATION_OF_DISPATCH,
                "Ihre De-Mail wurde versandt.",
            ),
        };
        let from = format!("{local}@{}", self.cfg.hostname);
        let now = crate::spool::now();
        let mut meta = String::new();
        let mut md = |n: &str, v: &str| {
            meta.push_str(&format!(
                "    <Metadate>\n      <Name>{}</Name>\n      <Value>{}</Value>\n      <OriginalHeader>{}: {}</OriginalHeader>\n    </Metadate>\n",
                xml_escape(n),
                xml_escape(v),
                xml_escape(n),
                xml_escape(v)
            ))
        };
        md("From", &orig.from);
        md("To", rcpt);
        if let Some(m) = &orig.message_id {
            md("Message-ID", &format!("<{m}>"));
        }
        // The original's De-Mail headers as stamped (the private-id among them).
        for (n, v) in &orig.metadata {
            md(n, v);
        }
        if orig.metadata.is_empty() {
            if let Some(p) = &orig.private_id {
                md(h::PRIVATE_ID, p);
            }
        }
        let delivery = if kind == DeMailOption::ConfirmationOfRetrieve {
            format!("  <DeliveryTime>{}</DeliveryTime>\n", rfc3339(orig.time))
        } else {
            String::new()
        };
        // Written in canonical form (exclusive C14N) so the XML-DSig digest is over these bytes.
        let (open, close) = ("<Acknowledge-Message xmlns=\"urn:de-mail\">", "</Acknowledge-Message>");
        let inner = format!(
            "\n  <Sender>{}</Sender>\n  <Metadata>\n{meta}  </Metadata>\n  <Subject>{}</Subject>\n  <Text>{}</Text>\n  <Hash>{}</Hash>\n  <Time>{}</Time>\n{delivery}",
            xml_escape(&orig.from),
            xml_escape(&orig.subject),
            xml_escape(text_de),
            xml_escape(&orig.integrity),
            rfc3339(now)
        );
        let signature = self.xml_signature(open, &inner, close);
        let xml = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{open}{inner}  {signature}\n{close}\n");
        let pdf = tiny_pdf(&[
            label.to_string(),
            format!("Betreff: {}", orig.subject),
            format!("Empfaenger: {rcpt}"),
            rfc3339(now),
            "(Simulator - Test-Signatur, keine qualifizierte)".into(),
        ]);
        let mut b = MessageBuilder::new()
            .from(from.as_str())
            .to(orig.from.as_str())
            .subject(format!("*{label}* {}", orig.subject))
            .header("Auto-Submitted", Raw::new("auto-generated"))
            .header(h::MESSAGE_TYPE, Raw::new(mtype))
            .header(h::VERSION, Raw::new(TR_VERSION))
            .header(h::ORIGINATOR_PROVIDER, Raw::new(self.cfg.hostname.clone()))
            .header(h::DEMAIL_MESSAGE_ID, Raw::new(format!("<{}@{}>", new_id(), self.cfg.hostname)));
        if kind != DeMailOption::ConfirmationOfDispatch {
            b = b.cc(rcpt);
        }
        if let Some(p) = &orig.private_id {
            b = b.header(h::PRIVATE_ID, Text::new(p.clone()));
        }
        // Only Persönlich is copied onto receipts; an Abholbestätigung always carries it.
        if orig.options.contains(DeMailOption::Private) || kind == DeMailOption::ConfirmationOfRetrieve {
            b = b.header(h::PRIVATE, Raw::new("yes"));
        }
        if let Some(m) = &orig.message_id {
            b = b.in_reply_to(m.as_str());
        }
        let body = MimePart::new(
            "multipart/mixed",
            vec![
                MimePart::new("text/plain", format!("{text_de}\r\n")),
                MimePart::new("application/xml", xml).attachment("Bestaetigung.xml"),
                MimePart::new("application/pdf", pdf).attachment("Bestaetigung.pdf"),
            ],
        );
        let raw = b.body(body).write_to_vec().unwrap_or_default();
        // Signed like a De-Mail: the whole multipart (XML and PDF) is covered by bh=.
        let raw = self.signed(raw).map(|(r, _)| r).unwrap_or_else(|r| {
            warn!(code = %r.code, "receipt not signed");
            Vec::new()
        });
        (from, raw)
    }

    /// A notification (unknown recipient and the like).
    pub fn notification(&self, ntype: &str, orig: &Stored, rcpt: &str) -> (String, Vec<u8>) {
        let from = format!("Meldung@{}", self.cfg.hostname);
        let subject = format!("Meldung: Empfänger unbekannt – {}", orig.subject);
        let text = format!("Die De-Mail-Adresse {rcpt} existiert nicht. Ihre Nachricht wurde nicht zugestellt. / The De-Mail address {rcpt} does not exist. Your message was not delivered.");
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Notification-Message xmlns=\"urn:de-mail\">\n  <Subject>{}</Subject>\n  <Text>{}</Text>\n  <Time>{}</Time>\n  <Sender>{}</Sender>\n</Notification-Message>\n",
            xml_escape(&subject),
            xml_escape(&text),
            rfc3339(crate::spool::now()),
            xml_escape(&orig.from)
        );
        let mut b = MessageBuilder::new()
            .from(from.as_str())
            .to(orig.from.as_str())
            .subject(subject)
            .header("Auto-Submitted", Raw::new("auto-generated"))
            .header(h::MESSAGE_TYPE, Raw::new(message_type::NOTIFICATION))
            .header(h::NOTIFICATION_TYPE, Raw::new(ntype.to_string()))
            .header(h::VERSION, Raw::new(TR_VERSION));
        if let Some(p) = &orig.private_id {
            b = b.header(h::PRIVATE_ID, Text::new(p.clone()));
        }
        let body = MimePart::new(
            "multipart/mixed",
            vec![MimePart::new("text/plain", format!("{text}\r\n")), MimePart::new("application/xml", xml)],
        );
        let raw = b.body(body).write_to_vec().unwrap_or_default();
        let raw = self.signed(raw).map(|(r, _)| r).unwrap_or_else(|r| {
            warn!(code = %r.code, "notification not signed");
            Vec::new()
        });
        (from, raw)
    }

    /// After acceptance: Versandbestätigung, "delivery", Eingangsbestätigung, notifications.
    async fn follow_up(self: Arc<Self>, s: Stored, raw: Vec<u8>) {
        let send = |from: String, to: Vec<String>, msg: Vec<u8>, what: &'static str| {
            let me = self.clone();
            async move {
                if let Err(e) = me.to_gateway(&from, &to, &msg).await {
                    warn!(what, error = %e, "cannot send to the gateway");
                }
            }
        };
        for rcpt in &s.rcpts {
            if self.unknown(rcpt) {
                let (from, m) = self.notification("unknown-recipient", &s, rcpt);
                send(from, vec![s.from.clone()], m, "notification").await;
                continue;
            }
            if s.options.contains(DeMailOption::ConfirmationOfDispatch) {
                let (from, m) = self.receipt(DeMailOption::ConfirmationOfDispatch, &s, rcpt);
                send(from, vec![s.from.clone()], m, "Versandbestätigung").await;
            }
            if self.is_org(rcpt) {
                send(s.from.clone(), vec![rcpt.clone()], raw.clone(), "delivery").await;
            }
            if s.options.contains(DeMailOption::ConfirmationOfReceipt) {
                let (from, m) = self.receipt(DeMailOption::ConfirmationOfReceipt, &s, rcpt);
                send(from, vec![s.from.clone()], m, "Eingangsbestätigung").await;
            }
        }
    }

    /// A simulated recipient logs in: Abholbestätigung for every stored De-Mail with this private-id.
    pub async fn retrieve(&self, private_id: &str) -> Result<usize, Error> {
        let mut n = 0;
        for s in self.stored().into_iter().filter(|s| s.private_id.as_deref() == Some(private_id)) {
            if !s.options.contains(DeMailOption::ConfirmationOfRetrieve) {
                continue;
            }
            for rcpt in s.rcpts.iter().filter(|r| !self.unknown(r)) {
                let (from, m) = self.receipt(DeMailOption::ConfirmationOfRetrieve, &s, rcpt);
                self.to_gateway(&from, std::slice::from_ref(&s.from), &m).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// A De-Mail "from a citizen" to the organisation.
    pub async fn inject(
        &self,
        from: &str,
        to: &str,
        subject: &str,
        body: &str,
        opts: OptionSet,
        private_id: Option<&str>,
    ) -> Result<String, Error> {
        let mut b = MessageBuilder::new().from(from).to(to).subject(subject).text_body(body.to_string());
        for (n, v) in options::option_headers(opts, private_id) {
            b = b.header(n, Text::new(v));
        }
        let raw = b.write_to_vec().map_err(|e| {
            Error::new("sim.build", "Nachricht nicht erzeugbar.", "Cannot build the message.").caused_by(e)
        })?;
        let id = new_id();
        // The simulated citizen logged in at level "hoch".
        let (stamped, _) = self.stamp(&raw, &id, from, LOGIN_HIGH).map_err(Error::from)?;
        self.to_gateway(from, &[to.to_string()], &stamped).await?;
        Ok(id)
    }
}

fn refuse(r: &demail_core::Reason) -> Reject {
    Reject::new(554, "5.6.0", format!("[{}] {}", r.code, r.message), format!("[{}] {}", r.code, r.message_en))
}

pub struct SimHandler(pub Arc<Sim>);

impl Handler for SimHandler {
    /// The gateway's account: secret followed by the current TOTP code ("hoch"); the
    /// secret alone is refused. Normal accounts: their password ("normal").
    async fn authenticate(&self, user: &str, password: &str) -> AuthResult {
        let sim = &self.0;
        let ok = |login: Login| {
            AuthResult::Accepted(Authenticated {
                user: user.to_string(),
                method: login.mechanism.into(),
                display: None,
            })
        };
        if user == sim.cfg.username {
            let code = password.strip_prefix(sim.secret.as_str()).filter(|c| c.len() == 6);
            if code.is_some_and(|c| sim.totp.check_current(c).unwrap_or(false)) {
                return ok(LOGIN_HIGH);
            }
            if password == sim.secret {
                warn!(user, "login without the second factor refused");
            }
            return AuthResult::Refused;
        }
        if sim.normal.iter().any(|(u, p)| u == user && p == password) {
            return ok(LOGIN_NORMAL);
        }
        AuthResult::Refused
    }

    fn rcpt_to(&self, _env: &Envelope, rcpt: &str) -> Result<(), Reject> {
        if self.0.refused(rcpt) {
            return Err(Reject::new(
                550,
                "5.1.1",
                format!("Das Postfach {rcpt} nimmt keine De-Mail an."),
                format!("The mailbox {rcpt} does not accept De-Mail."),
            ));
        }
        Ok(())
    }

    async fn deliver(&self, env: &Envelope, raw: Vec<u8>) -> Result<Accepted, Reject> {
        let sim = &self.0;
        let Some(msg) = mail_parser::MessageParser::default().parse(&raw) else {
            return Err(Reject::new(554, "5.6.0", "Keine lesbare Nachricht.", "Not a readable message."));
        };
        let heads: Vec<(String, String)> = fields(&raw)
            .into_iter()
            .map(|(n, b)| {
                let v = String::from_utf8_lossy(&b).to_string();
                let v = v.split_once(':').map(|(_, v)| v).unwrap_or("").replace("\r\n", "").trim().to_string();
                (n, v)
            })
            .collect();
        let ho = options_from_headers(heads.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        if let Some(p) = ho.problems.iter().find(|p| p.code == "header.invalid_value") {
            return Err(refuse(p));
        }
        // Persönlich and Absenderbestätigt need level "hoch" (PVD-FU §3.3); Absenderbestätigt
        // must be signed.
        let login =
            if env.session.auth_method.as_deref() == Some(LOGIN_HIGH.mechanism) { LOGIN_HIGH } else { LOGIN_NORMAL };
        let needs_high = [DeMailOption::Private, DeMailOption::Authoritative, DeMailOption::ConfirmationOfRetrieve];
        if login == LOGIN_NORMAL && needs_high.iter().any(|o| ho.options.contains(*o)) {
            return Err(refuse(&demail_core::Reason::new(
                "sim.auth_level_too_low",
                "Persönlich und Absenderbestätigt verlangen eine Anmeldung mit Authentisierungsniveau hoch.",
                "Personal and sender-confirmed need a login at authentication level high.",
            )));
        }
        if ho.options.contains(DeMailOption::Authoritative) && sim.signer.is_none() {
            return Err(refuse(&demail_core::Reason::new(
                "sim.signature_required",
                "Absenderbestätigte De-Mails müssen signiert werden; der Simulator hat keinen Signaturschlüssel.",
                "Sender-confirmed De-Mails must be signed; the simulator has no signing key.",
            )));
        }
        let private_id = heads.iter().find(|(n, _)| n.eq_ignore_ascii_case(h::PRIVATE_ID)).map(|(_, v)| v.clone());
        if let Some(p) = &private_id {
            validate_private_id(p).map_err(|r| refuse(&r))?;
        }
        // Idempotency: the same sender, Message-ID and recipients again is a resend
        // (the gateway crashed before it saw our 250): answer 250, store nothing new.
        let key = msg.message_id().map(|m| idempotency_key(&env.mail_from, m, &env.rcpt_to));
        if let Some(k) = &key {
            if let Some(earlier) = sim.seen(k) {
                info!(id = %earlier, "duplicate submission (same sender, Message-ID and recipients); stored once");
                return Ok(Accepted { id: earlier });
            }
            if !sim.storing.lock().unwrap_or_else(|p| p.into_inner()).insert(k.clone()) {
                return Err(Reject::temporary(
                    "Dieselbe Nachricht wird gerade gespeichert.",
                    "The same message is being stored right now.",
                ));
            }
        }
        let s = Stored {
            id: new_id(),
            from: env.mail_from.clone(),
            rcpts: env.rcpt_to.clone(),
            subject: msg.subject().unwrap_or("").to_string(),
            private_id,
            options: ho.options,
            message_id: msg.message_id().map(str::to_string),
            integrity: String::new(),
            time: crate::spool::now(),
            metadata: Vec::new(),
        };
        let res = self.store_new(s, &raw, key.as_deref(), login);
        if let Some(k) = &key {
            sim.storing.lock().unwrap_or_else(|p| p.into_inner()).remove(k);
        }
        res
    }
}

impl SimHandler {
    fn store_new(&self, mut s: Stored, raw: &[u8], key: Option<&str>, login: Login) -> Result<Accepted, Reject> {
        let sim = &self.0;
        let id = s.id.clone();
        let (stamped, integ) = sim.stamp(raw, &id, &s.from, login).map_err(|r| refuse(&r))?;
        s.integrity = integ;
        for (n, v) in demail_core::seal::header_fields(&stamped) {
            let skip = n.eq_ignore_ascii_case(h::INTEGRITY) || n.eq_ignore_ascii_case(h::SIGNATURE_CERTIFICATE);
            if h::is_demail_header(&n) && !skip && !s.metadata.iter().any(|(m, _)| m.eq_ignore_ascii_case(&n)) {
                s.metadata.push((n, v));
            }
        }
        sim.store(&s, &stamped).and_then(|()| key.map_or(Ok(()), |k| sim.remember(k, &id))).map_err(|e| {
            warn!(error = %e, "cannot store");
            Reject::temporary("Speicherfehler beim Anbieter.", "Provider storage failure.")
        })?;
        info!(id = %id, rcpts = s.rcpts.len(), options = ?s.options.ids(), "accepted");
        tokio::spawn(sim.clone().follow_up(s, stamped));
        Ok(Accepted { id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdf_and_time_and_recipients() {
        let pdf = tiny_pdf(&["Versandbestätigung (x)".into()]);
        assert!(pdf.starts_with(b"%PDF-1.4") && pdf.ends_with(b"%%EOF\n"));
        let text = String::from_utf8_lossy(&pdf);
        let xref: usize = text.rsplit("startxref\n").next().unwrap().lines().next().unwrap().parse().unwrap();
        assert!(text[xref..].starts_with("xref"));
        assert_eq!(rfc3339(1_795_775_532), "2026-11-27T10:32:12Z");
        let c = chosen_recipients(b"From: a@b.de\r\nTo: X <x@y.de-mail.de>, z@y.de-mail.de\r\nCc: c@d.de\r\n\r\nbody");
        assert_eq!(c.as_deref(), Some("to=x@y.de-mail.de, z@y.de-mail.de; cc=c@d.de"));
    }
}
