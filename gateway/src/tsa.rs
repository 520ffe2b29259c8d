//! RFC 3161 time stamps for archive checkpoints: a request to the TSA that IT configures
//! (`[archive] tsa_url`), and the check of a token against the TSA's CA.
//!
//! ASN.1 is the RustCrypto crates' (`x509-tsp`, `cms`, `x509-cert`); signatures and the
//! certificate walk are the core's (`demail_core::cert`), as for the provider's integrity
//! signature. Not checked: the ESSCertID binding of the signer (RFC 5816) and revocation.

use cms::signed_data::{SignedData, SignerIdentifier};
use demail_core::cert::{self, Cert, Hash, SigKind};
use demail_core::Error;
use der::asn1::{Int, ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use std::time::Duration;
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");

/// The largest TSA answer read (tokens are a few KB).
const MAX_REPLY: usize = 256 * 1024;

fn tsa_error(code: &'static str, de: impl Into<String>, en: impl Into<String>) -> Error {
    Error::new(code, de, en)
}

fn unusable(why: impl std::fmt::Display) -> Error {
    tsa_error("tsa.token_invalid", "Der Zeitstempel ist ungültig.", "The time stamp is invalid.")
        .caused_by(why.to_string())
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    /// `genTime`, unix seconds.
    pub time: u64,
    /// Subject of the TSA's signing certificate.
    pub tsa: String,
}

/// The DER request for a SHA-256 digest (`certReq`: the token carries the TSA's certificate).
pub fn request(digest: &[u8; 32], nonce: u64, policy: Option<&str>) -> Result<Vec<u8>, Error> {
    let policy = match policy {
        Some(p) => Some(ObjectIdentifier::new(p).map_err(|e| {
            tsa_error("tsa.policy_invalid", "archive.tsa_policy ist keine OID.", "archive.tsa_policy is no OID.")
                .caused_by(e)
        })?),
        None => None,
    };
    let req = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: imprint(digest)?,
        req_policy: policy,
        nonce: Some(Int::new(&nonce_bytes(nonce)).map_err(unusable)?),
        cert_req: true,
        extensions: None,
    };
    req.to_der().map_err(unusable)
}

/// The nonce as a minimal positive DER INTEGER: no leading zero bytes, but one zero byte
/// when the top bit is set (a non-minimal form is refused by the DER decoder).
fn nonce_bytes(nonce: u64) -> Vec<u8> {
    let b = nonce.to_be_bytes();
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len() - 1);
    let mut v = b[start..].to_vec();
    if v[0] & 0x80 != 0 {
        v.insert(0, 0);
    }
    v
}

fn imprint(digest: &[u8; 32]) -> Result<MessageImprint, Error> {
    Ok(MessageImprint {
        hash_algorithm: x509_cert::spki::AlgorithmIdentifier { oid: SHA256, parameters: Some(der::Any::null()) },
        hashed_message: OctetString::new(digest.to_vec()).map_err(unusable)?,
    })
}

/// The token out of a TSA's answer, once it is granted and carries our nonce.
pub fn token_of(reply: &[u8], nonce: u64) -> Result<Vec<u8>, Error> {
    let resp = TimeStampResp::from_der(reply).map_err(unusable)?;
    // PKIStatus granted (0) or grantedWithMods (1).
    let status = resp.status.status as u8;
    let Some(token) = resp.time_stamp_token.filter(|_| status <= 1) else {
        let text = resp.status.status_string.as_ref().map(|s| format!("{s:?}")).unwrap_or_default();
        return Err(tsa_error(
            "tsa.refused",
            "Der Zeitstempeldienst hat die Anfrage abgelehnt.",
            "The time stamp authority refused the request.",
        )
        .caused_by(format!("status {status} {text}")));
    };
    let der = token.to_der().map_err(unusable)?;
    let tst = tst_info(&der)?.1;
    if tst.nonce.as_ref().map(|n| n.as_bytes()) != Some(Int::new(&nonce_bytes(nonce)).map_err(unusable)?.as_bytes()) {
        return Err(unusable("the reply's nonce is not the request's"));
    }
    Ok(der)
}

/// The token's SignedData, its TSTInfo, and the TSTInfo's DER (what `messageDigest` covers).
fn tst_info(token: &[u8]) -> Result<(SignedData, TstInfo, Vec<u8>), Error> {
    let ci = cms::content_info::ContentInfo::from_der(token).map_err(unusable)?;
    if ci.content_type != SIGNED_DATA {
        return Err(unusable("not CMS SignedData"));
    }
    let sd = ci.content.decode_as::<SignedData>().map_err(unusable)?;
    if sd.encap_content_info.econtent_type != TST_INFO {
        return Err(unusable("the signed content is not a TSTInfo"));
    }
    let content = sd.encap_content_info.econtent.as_ref().ok_or_else(|| unusable("no TSTInfo"))?;
    let bytes = content.value().to_vec();
    let tst = TstInfo::from_der(&bytes).map_err(unusable)?;
    Ok((sd, tst, bytes))
}

fn hash_of(oid: &ObjectIdentifier) -> Option<Hash> {
    match *oid {
        SHA256 => Some(Hash::Sha256),
        SHA384 => Some(Hash::Sha384),
        SHA512 => Some(Hash::Sha512),
        _ => None,
    }
}

/// The signature kind of a SignerInfo's algorithm: rsaEncryption and sha*WithRSAEncryption,
/// RSASSA-PSS, ecdsa-with-SHA*.
fn sig_kind(oid: &ObjectIdentifier) -> Option<SigKind> {
    let s = oid.to_string();
    match s.as_str() {
        "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.11" | "1.2.840.113549.1.1.12" | "1.2.840.113549.1.1.13" => {
            Some(SigKind::Rsa)
        }
        "1.2.840.113549.1.1.10" => Some(SigKind::RsassaPss),
        "1.2.840.10045.4.3.2" | "1.2.840.10045.4.3.3" | "1.2.840.10045.4.3.4" => Some(SigKind::EcDsa),
        _ => None,
    }
}

/// Check a token: it stamps `digest`, its signature is the TSA certificate's, and that
/// certificate is for time stamping and chains to one of `anchors`, valid at `genTime`.
pub fn check(token: &[u8], digest: &[u8; 32], anchors: &[Cert]) -> Result<Stamped, Error> {
    let (sd, tst, tst_der) = tst_info(token)?;
    if tst.message_imprint.hash_algorithm.oid != SHA256 || tst.message_imprint.hashed_message.as_bytes() != digest {
        return Err(tsa_error(
            "tsa.other_data",
            "Der Zeitstempel gilt für andere Daten.",
            "The time stamp is for other data.",
        ));
    }
    let time = tst.gen_time.to_unix_duration().as_secs();
    let si = sd.signer_infos.0.iter().next().ok_or_else(|| unusable("no signer"))?;
    let hash = hash_of(&si.digest_alg.oid).ok_or_else(|| unusable("unsupported digest algorithm"))?;
    let kind = sig_kind(&si.signature_algorithm.oid).ok_or_else(|| unusable("unsupported signature algorithm"))?;
    let attrs = si.signed_attrs.as_ref().ok_or_else(|| unusable("no signed attributes"))?;
    let md = attrs
        .iter()
        .find(|a| a.oid == MESSAGE_DIGEST)
        .and_then(|a| a.values.iter().next())
        .and_then(|v| v.decode_as::<OctetString>().ok())
        .ok_or_else(|| unusable("no messageDigest attribute"))?;
    if md.as_bytes() != hash.digest(&tst_der) {
        return Err(unusable("messageDigest does not match the TSTInfo"));
    }
    // The signature covers the attributes as a SET OF (RFC 5652 §5.4).
    let signed = attrs.to_der().map_err(unusable)?;
    let mut certs = Vec::new();
    for c in sd.certificates.iter().flat_map(|s| s.0.iter()) {
        if let cms::cert::CertificateChoices::Certificate(c) = c {
            certs.push(c.to_der().map_err(unusable)?);
        }
    }
    let signer_der = certs
        .iter()
        .find(|der| is_signer(der, &si.sid))
        .ok_or_else(|| unusable("the token does not carry the TSA's certificate"))?;
    let signer = Cert::from_der(signer_der).map_err(|r| unusable(r.message_en))?;
    let ok = signer.message_check(kind, hash, &signed, si.signature.as_bytes()).map(|c| cert::run(&c)).unwrap_or(false);
    if !ok {
        return Err(tsa_error(
            "tsa.bad_signature",
            "Die Signatur des Zeitstempels ist ungültig.",
            "The time stamp's signature is invalid.",
        ));
    }
    if !for_time_stamping(signer_der) {
        return Err(unusable("the signing certificate is not for time stamping (extendedKeyUsage)"));
    }
    chain(&signer, &certs, anchors, time)?;
    Ok(Stamped { time, tsa: signer.subject })
}

fn is_signer(der: &[u8], sid: &SignerIdentifier) -> bool {
    let Ok(c) = x509_cert::Certificate::from_der(der) else { return false };
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(i) => {
            c.tbs_certificate.issuer == i.issuer && c.tbs_certificate.serial_number == i.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(k) => c
            .tbs_certificate
            .get::<x509_cert::ext::pkix::SubjectKeyIdentifier>()
            .ok()
            .flatten()
            .is_some_and(|(_, s)| s.0 == k.0),
    }
}

fn for_time_stamping(der: &[u8]) -> bool {
    let Ok(c) = x509_cert::Certificate::from_der(der) else { return false };
    c.tbs_certificate.extensions.iter().flatten().any(|e| {
        e.extn_id == EKU
            && x509_cert::ext::pkix::ExtendedKeyUsage::from_der(e.extn_value.as_bytes())
                .is_ok_and(|u| u.0.contains(&TIME_STAMPING))
    })
}

/// From the signer up to an anchor through the token's certificates (at most 4 steps),
/// each valid at `time` and signed by the next.
fn chain(signer: &Cert, certs: &[Vec<u8>], anchors: &[Cert], time: u64) -> Result<(), Error> {
    let untrusted = || {
        tsa_error(
            "tsa.untrusted",
            "Der Zeitstempel stammt nicht von einem Zeitstempeldienst, dem die Konfiguration vertraut (archive.tsa_ca).",
            "The time stamp is not from a time stamp authority the configuration trusts (archive.tsa_ca).",
        )
    };
    let pool: Vec<Cert> = certs.iter().filter_map(|d| Cert::from_der(d).ok()).collect();
    let mut at = signer.clone();
    for _ in 0..5 {
        if at.validity_at(time).is_some() {
            return Err(unusable(format!("certificate {} not valid at the stamped time", at.subject)));
        }
        let signed_by = |issuer: &Cert| {
            issuer.is_issuer_of(&at) && at.issued_by_check(issuer).map(|c| cert::run(&c)).unwrap_or(false)
        };
        if let Some(a) = anchors.iter().find(|a| signed_by(a)) {
            return match a.validity_at(time) {
                None => Ok(()),
                Some(_) => Err(unusable("the TSA CA is not valid at the stamped time")),
            };
        }
        if anchors.iter().any(|a| a.der == at.der) {
            return Ok(());
        }
        match pool.iter().find(|p| p.der != at.der && signed_by(p)) {
            Some(next) => at = next.clone(),
            None => break,
        }
    }
    Err(untrusted())
}

/// The TSA IT configured: where to send requests.
#[derive(Clone)]
pub struct Client {
    url: url::Url,
    tls: Option<tokio_rustls::TlsConnector>,
    policy: Option<String>,
    timeout: Duration,
}

impl Client {
    /// `tls_ca`: the PEM CA of an `https` TSA's server certificate (always verified).
    pub fn new(url: &str, tls_ca: Option<&std::path::Path>, policy: Option<String>) -> Result<Client, Error> {
        let bad = |why: String| {
            tsa_error(
                "config.tsa_url",
                "archive.tsa_url ist keine http(s)-Adresse.",
                "archive.tsa_url is no http(s) address.",
            )
            .caused_by(why)
        };
        let url = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if url.host_str().is_none() {
            return Err(bad("no host".into()));
        }
        let tls = match url.scheme() {
            "http" => None,
            "https" => {
                let ca = tls_ca.ok_or_else(|| {
                    tsa_error(
                        "config.tsa_tls_ca",
                        "Für eine https-Adresse braucht archive.tsa_tls_ca die CA des Servers.",
                        "An https address needs the server's CA in archive.tsa_tls_ca.",
                    )
                })?;
                let cfg = demail_smtp::tls::client_config(ca, None).map_err(bad)?;
                Some(tokio_rustls::TlsConnector::from(cfg))
            }
            s => return Err(bad(format!("scheme {s}"))),
        };
        Ok(Client { url, tls, policy, timeout: Duration::from_secs(30) })
    }

    /// A token for `digest`, checked against `anchors` before it is returned.
    pub async fn stamp(&self, digest: &[u8; 32], anchors: &[Cert]) -> Result<Vec<u8>, Error> {
        let mut n = [0u8; 8];
        getrandom::fill(&mut n).map_err(unusable)?;
        let nonce = u64::from_be_bytes(n) >> 1;
        let req = request(digest, nonce, self.policy.as_deref())?;
        let reply = tokio::time::timeout(self.timeout, self.post(req))
            .await
            .map_err(|_| unreachable_tsa("timeout".into()))??;
        let token = token_of(&reply, nonce)?;
        check(&token, digest, anchors)?;
        Ok(token)
    }

    async fn post(&self, body: Vec<u8>) -> Result<Vec<u8>, Error> {
        let host = self.url.host_str().unwrap_or_default().to_string();
        let port = self.url.port_or_known_default().unwrap_or(80);
        let tcp =
            tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| unreachable_tsa(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.exchange(tcp, body).await,
            Some(c) => {
                let name =
                    rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| unreachable_tsa(e.to_string()))?;
                let tls = c.connect(name, tcp).await.map_err(|e| unreachable_tsa(e.to_string()))?;
                self.exchange(tls, body).await
            }
        }
    }

    async fn exchange<T>(&self, io: T, body: Vec<u8>) -> Result<Vec<u8>, Error>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        use http_body_util::BodyExt;
        let e = |x: &dyn std::fmt::Display| unreachable_tsa(x.to_string());
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await.map_err(|x| e(&x))?;
        tokio::spawn(conn);
        let mut path = self.url.path().to_string();
        if let Some(q) = self.url.query() {
            path = format!("{path}?{q}");
        }
        let host = match self.url.port() {
            Some(p) => format!("{}:{p}", self.url.host_str().unwrap_or_default()),
            None => self.url.host_str().unwrap_or_default().to_string(),
        };
        let req = hyper::Request::post(path)
            .header("host", host)
            .header("content-type", "application/timestamp-query")
            .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
            .map_err(|x| e(&x))?;
        let resp = send.send_request(req).await.map_err(|x| e(&x))?;
        if !resp.status().is_success() {
            return Err(unreachable_tsa(format!("HTTP {}", resp.status())));
        }
        let body = http_body_util::Limited::new(resp.into_body(), MAX_REPLY).collect().await.map_err(|x| e(&x))?;
        Ok(body.to_bytes().to_vec())
    }
}

fn unreachable_tsa(why: String) -> Error {
    tsa_error(
        "tsa.unreachable",
        "Der Zeitstempeldienst (archive.tsa_url) ist nicht erreichbar.",
        "The time stamp authority (archive.tsa_url) cannot be reached.",
    )
    .caused_by(why)
}

/// The TSA CA certificates of a PEM file (`archive.tsa_ca`, `--tsa-ca`).
pub fn anchors(path: &std::path::Path) -> Result<Vec<Cert>, Error> {
    let bad = |why: String| {
        tsa_error(
            "config.tsa_ca",
            "Die CA-Datei des Zeitstempeldienstes ist nicht lesbar.",
            "The time stamp authority's CA file cannot be read.",
        )
        .caused_by(format!("{}: {why}", path.display()))
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let certs = cert_pems(&text).into_iter().map(|d| Cert::from_der(&d)).collect::<Result<Vec<_>, _>>();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        Ok(_) => Err(bad("no certificate".into())),
        Err(r) => Err(bad(r.message_en)),
    }
}

fn cert_pems(text: &str) -> Vec<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(text.as_bytes())
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nonce_makes_a_request_and_is_found_again() {
        for nonce in [0u64, 1, 0x7f, 0x80, 0xff, 0x0100, 0x00ff_ffff, 0x0080_0000_0000_0000, u64::MAX >> 1, u64::MAX] {
            let der = request(&[7; 32], nonce, None).unwrap_or_else(|e| panic!("{nonce:#x}: {e:?}"));
            let back = TimeStampReq::from_der(&der).unwrap();
            assert_eq!(back.nonce.unwrap().as_bytes(), Int::new(&nonce_bytes(nonce)).unwrap().as_bytes(), "{nonce:#x}");
        }
    }
}
