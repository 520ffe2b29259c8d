//! rustls configurations from PEM files, with the ring provider (no process-wide default).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let list: Result<Vec<_>, _> =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?.collect();
    let list = list.map_err(|e| format!("{}: {e}", path.display()))?;
    if list.is_empty() {
        return Err(format!("{}: no certificate / kein Zertifikat", path.display()));
    }
    Ok(list)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    for c in certs(ca)? {
        store.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    Ok(store)
}

/// Server side. With `client_ca`, clients must present a certificate signed by it
/// (mutual TLS); otherwise no client certificate is asked for.
pub fn server_config(
    cert: &Path,
    key_path: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let b = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let b = match client_ca {
        Some(ca) => {
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                .build()
                .map_err(|e| e.to_string())?;
            b.with_client_cert_verifier(v)
        }
        None => b.with_no_client_auth(),
    };
    let cfg = b.with_single_cert(certs(cert)?, key(key_path)?).map_err(|e| format!("{}: {e}", cert.display()))?;
    Ok(Arc::new(cfg))
}

/// Server side for a listener where some clients (the organisation's mail server, a
/// connector) sign in with a client certificate and the others (people) with AUTH: a
/// certificate is asked for but not required; one that is presented must be among the
/// `pins` (SHA-256 of the DER), else the handshake fails.
pub fn server_config_pinned_clients(
    cert: &Path,
    key_path: &Path,
    pins: Vec<[u8; 32]>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let v = Arc::new(PinnedClients { pins, provider: provider() });
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(v)
        .with_single_cert(certs(cert)?, key(key_path)?)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    Ok(Arc::new(cfg))
}

/// SHA-256 of a certificate (DER), as pinned in configurations.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(der).into()
}

#[derive(Debug)]
struct PinnedClients {
    pins: Vec<[u8; 32]>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::server::danger::ClientCertVerifier for PinnedClients {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        // The certificate is pinned: its issuer and validity are IT's business, its key
        // is proven by the handshake signature below.
        if self.pins.contains(&fingerprint(end_entity.as_ref())) {
            Ok(rustls::server::danger::ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Client side: trusts only the given CA (always verified; there is no switch to
/// turn verification off). Optional client certificate for mutual TLS.
pub fn client_config(ca: &Path, client_cert: Option<(&Path, &Path)>) -> Result<Arc<rustls::ClientConfig>, String> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca)?);
    let cfg = match client_cert {
        Some((c, k)) => b.with_client_auth_cert(certs(c)?, key(k)?).map_err(|e| format!("{}: {e}", c.display()))?,
        None => b.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// A TLS server name from a host name or IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))
}
