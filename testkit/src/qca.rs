//! A test "qualified" CA and provider signing certificates for `X-de-mail-integrity`, made
//! with `openssl` at test time (RSA and EC keys: rcgen's ring backend cannot make RSA keys),
//! so the signatures the tests check come from keys no code of ours generated.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kinds of key the TR's algorithms use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa2048,
    P256,
    P384,
}

impl KeyType {
    fn genpkey_args(self) -> &'static [&'static str] {
        match self {
            KeyType::Rsa2048 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            KeyType::P256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            KeyType::P384 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        }
    }
}

/// Run openssl; panics with its output on failure (test code).
pub fn openssl(args: &[&str], dir: &Path) -> Vec<u8> {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A key pair and its certificate, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
    /// The public key as PEM (for `openssl dgst -verify`).
    pub public_key: PathBuf,
    pub key_type: KeyType,
}

impl Issued {
    /// The certificate as DER.
    pub fn der(&self) -> Vec<u8> {
        openssl(&["x509", "-in", self.cert.to_str().expect("utf-8 path"), "-outform", "DER"], Path::new("."))
    }
}

/// A CA standing in for a provider's qualified CA.
#[derive(Debug, Clone)]
pub struct QualifiedCa {
    pub dir: PathBuf,
    pub name: String,
    pub ca: Issued,
}

fn new_key(dir: &Path, file: &str, key: KeyType) -> (PathBuf, String, PathBuf) {
    let mut args = vec!["genpkey"];
    args.extend_from_slice(key.genpkey_args());
    args.extend_from_slice(&["-out", file]);
    openssl(&args, dir);
    let public = format!("{file}.pub");
    openssl(&["pkey", "-in", file, "-pubout", "-out", &public], dir);
    let path = dir.join(file);
    let pem = fs::read_to_string(&path).expect("read key");
    (path, pem, dir.join(public))
}

impl QualifiedCa {
    /// A self-signed CA (`CN=<name>`) valid for ten years from now, files `<name>-ca*.pem` in `dir`.
    pub fn generate(dir: &Path, name: &str, key: KeyType) -> QualifiedCa {
        let (key_path, key_pem, public) = new_key(dir, &format!("{name}-ca-key.pem"), key);
        let cert = format!("{name}-ca.pem");
        openssl(
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                key_path.to_str().expect("utf-8 path"),
                "-subj",
                &format!("/C=DE/O=Test-QCA {name}/CN={name} qualified CA"),
                "-days",
                "3650",
                "-sha256",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                &cert,
            ],
            dir,
        );
        let cert_pem = fs::read_to_string(dir.join(&cert)).expect("read ca");
        QualifiedCa {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            ca: Issued { cert: dir.join(cert), key: key_path, cert_pem, key_pem, public_key: public, key_type: key },
        }
    }

    /// A CA [`QualifiedCa::generate`] made earlier in `dir`.
    pub fn existing(dir: &Path, name: &str) -> QualifiedCa {
        let cert = dir.join(format!("{name}-ca.pem"));
        let key = dir.join(format!("{name}-ca-key.pem"));
        let key_pem = fs::read_to_string(&key).expect("read ca key");
        let text = String::from_utf8_lossy(&openssl(
            &["pkey", "-in", key.to_str().expect("utf-8 path"), "-noout", "-text"],
            dir,
        ))
        .into_owned();
        let key_type = if text.contains("prime256v1") {
            KeyType::P256
        } else if text.contains("secp384r1") {
            KeyType::P384
        } else {
            KeyType::Rsa2048
        };
        QualifiedCa {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            ca: Issued {
                cert_pem: fs::read_to_string(&cert).expect("read ca"),
                cert,
                key_pem,
                public_key: dir.join(format!("{name}-ca-key.pem.pub")),
                key,
                key_type,
            },
        }
    }

    /// A provider signing certificate `CN=<cn>` from this CA, valid `days` from now.
    pub fn issue(&self, cn: &str, key: KeyType, days: u32) -> Issued {
        self.issue_with(cn, key, days, "keyUsage=critical,digitalSignature,nonRepudiation\n")
    }

    /// As [`QualifiedCa::issue`] with the given extension lines (`openssl x509 -extfile`).
    pub fn issue_with(&self, cn: &str, key: KeyType, days: u32, extensions: &str) -> Issued {
        let stem = format!("{}-{}", self.name, cn.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
        let (key_path, key_pem, public) = new_key(&self.dir, &format!("{stem}-key.pem"), key);
        let csr = format!("{stem}.csr");
        let ext = format!("{stem}.ext");
        let cert = format!("{stem}.pem");
        openssl(
            &[
                "req",
                "-new",
                "-key",
                key_path.to_str().expect("utf-8 path"),
                "-subj",
                &format!("/C=DE/O=DMDA Simulator/CN={cn}"),
                "-out",
                &csr,
            ],
            &self.dir,
        );
        fs::write(self.dir.join(&ext), extensions).expect("write ext");
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                self.ca.cert.to_str().expect("utf-8 path"),
                "-CAkey",
                self.ca.key.to_str().expect("utf-8 path"),
                "-CAcreateserial",
                "-days",
                &days.to_string(),
                "-sha256",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
            &self.dir,
        );
        let cert_pem = fs::read_to_string(self.dir.join(&cert)).expect("read cert");
        Issued { cert: self.dir.join(cert), key: key_path, cert_pem, key_pem, public_key: public, key_type: key }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_and_leaf_verify_with_openssl() {
        let d = crate::temp_dir();
        let ca = QualifiedCa::generate(d.path(), "t", KeyType::P256);
        let leaf = ca.issue("dmda signer", KeyType::Rsa2048, 30);
        assert!(leaf.key_pem.contains("BEGIN PRIVATE KEY"));
        let out = openssl(&["verify", "-CAfile", ca.ca.cert.to_str().unwrap(), leaf.cert.to_str().unwrap()], d.path());
        assert!(String::from_utf8_lossy(&out).contains("OK"));
        assert_eq!(leaf.der()[0], 0x30);
    }
}
