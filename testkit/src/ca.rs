//! A test PKI made at test time (rcgen): CA, server and client certificates as PEM files.

use std::fs;
use std::path::{Path, PathBuf};

/// PEM files of a test PKI. Paths are absolute.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    /// CA certificate as PEM text.
    pub ca_pem: String,
    /// Server certificate for `localhost` and `127.0.0.1`.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Client certificate (for mutual TLS), CN `demail-test-client`.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    /// Generate a CA and certificates into `dir` (file names prefixed with `name`).
    pub fn generate(dir: &Path, name: &str) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.distinguished_name.push(DnType::CommonName, format!("demail test CA {name}"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |sans: Vec<String>, cn: &str, eku: ExtendedKeyUsagePurpose| {
            let mut p = CertificateParams::new(sans).expect("leaf params");
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![eku];
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
            let key = KeyPair::generate().expect("leaf key");
            let cert = p.signed_by(&key, &issuer).expect("sign leaf");
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key_pem) =
            leaf(vec!["localhost".into(), "127.0.0.1".into()], "localhost", ExtendedKeyUsagePurpose::ServerAuth);
        let (client_pem, client_key_pem) =
            leaf(vec!["demail-test-client".into()], "demail-test-client", ExtendedKeyUsagePurpose::ClientAuth);

        let write = |file: &str, text: &str| {
            let p = dir.join(format!("{name}-{file}"));
            fs::write(&p, text).expect("write pem");
            p
        };
        let ca_pem = ca_cert.pem();
        Pki {
            ca_cert: write("ca.pem", &ca_pem),
            ca_pem,
            server_cert: write("server.pem", &server_pem),
            server_key: write("server-key.pem", &server_key_pem),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client-key.pem", &client_key_pem),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pki_files_exist() {
        let d = crate::temp_dir();
        let p = Pki::generate(d.path(), "t");
        assert!(p.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        for f in [&p.ca_cert, &p.server_cert, &p.server_key, &p.client_cert, &p.client_key] {
            assert!(f.is_file());
        }
    }
}
