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
