//! Where the gateway's secrets live. The configuration only ever names a place:
//!
//! - `*_credential = "name"`: a systemd credential. The secret is encrypted with the
//!   host key (and the TPM2 when present) by `systemd-creds` into
//!   `/etc/credstore.encrypted/`, and systemd decrypts it at service start into the
//!   unit's private, unswappable `$CREDENTIALS_DIRECTORY`. This is the OS store for
//!   system services and survives reboots (a kernel keyring does not).
//! - `*_keyring = "service/user"`: the kernel keyring (keyutils), for runs outside systemd.
//! - `*_env = "VAR"`: an environment variable, for tests and demos only.
//!
//! Errors name the place, never the value.

use demail_core::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where a secret lives: exactly one of the three is set (checked by `Config::validate`).
#[derive(Debug, Clone, Default)]
pub struct Secret {
    pub secret_env: Option<String>,
    /// Keyring entry `service/user` (Linux kernel keyring).
    pub secret_keyring: Option<String>,
    /// systemd credential name.
    pub credential: Option<String>,
}

/// Where `secret set` stores systemd credentials: the encrypted files and the unit
/// drop-ins that make systemd load them.
#[derive(Debug, Clone)]
pub struct CredStore {
    pub dir: PathBuf,
    pub dropin_dir: PathBuf,
}

/// A systemd credential name: also a file name, so no path separators.
pub fn valid_credential_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && !n.starts_with('.')
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `e` with the configuration entry it concerns before both texts, e.g. `outbound.users helper`.
pub fn concerning(what: &str, mut e: Error) -> Error {
    e.reason.message = format!("{what}: {}", e.reason.message);
    e.reason.message_en = format!("{what}: {}", e.reason.message_en);
    e
}

fn systemd_creds_missing(e: std::io::Error) -> Error {
    Error::new(
        "secret.systemd_creds_missing",
        "systemd-creds ist nicht ausführbar (Paket systemd).",
        "systemd-creds cannot be run (package systemd).",
    )
    .caused_by(e)
}

fn not_writable(path: &Path, e: std::io::Error) -> Error {
    Error::new(
        "secret.store_not_writable",
        "Die Ablage für Geheimnisse lässt sich nicht schreiben.",
        "The secret store cannot be written.",
    )
    .caused_by(format!("{}: {e}", path.display()))
}

fn keyring_failed(entry: &str, e: keyring::Error) -> Error {
    Error::new(
        "secret.keyring",
        format!("Schlüsselbund-Eintrag {entry}: Zugriff fehlgeschlagen."),
        format!("keyring entry {entry}: access failed."),
    )
    .caused_by(e)
}

impl Secret {
    /// How many places are configured (must be 1).
    pub fn sources(&self) -> usize {
        [self.secret_env.is_some(), self.secret_keyring.is_some(), self.credential.is_some()]
            .iter()
            .filter(|x| **x)
            .count()
    }

    /// The place in words, for messages.
    pub fn place(&self) -> String {
        match (&self.credential, &self.secret_keyring, &self.secret_env) {
            (Some(c), _, _) => format!("systemd-credential {c}"),
            (_, Some(k), _) => format!("keyring {k}"),
            (_, _, Some(v)) => format!("env {v}"),
            _ => "-".into(),
        }
    }

    /// Read the secret.
    pub fn read(&self) -> Result<String, Error> {
        if let Some(name) = &self.credential {
            let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
                return Err(Error::new(
                    "secret.credential_not_loaded",
                    format!(
                        "systemd-Credential {name}: der Dienst wurde ohne Credentials gestartet \
                         (LoadCredentialEncrypted=, siehe demail-gateway secret set)."
                    ),
                    format!(
                        "systemd credential {name}: the service was started without credentials \
                         (LoadCredentialEncrypted=, see demail-gateway secret set)."
                    ),
                ));
            };
            let path = Path::new(&dir).join(name);
            return std::fs::read_to_string(&path).map(|s| s.trim_end_matches(['\r', '\n']).to_string()).map_err(|e| {
                Error::new(
                    "secret.credential_unreadable",
                    format!("systemd-Credential {name} ist nicht lesbar."),
                    format!("systemd credential {name} is not readable."),
                )
                .caused_by(e)
            });
        }
        if let Some(var) = &self.secret_env {
            return std::env::var(var).map_err(|_| {
                Error::new(
                    "secret.env_missing",
                    format!("Umgebungsvariable {var} fehlt."),
                    format!("environment variable {var} is not set."),
                )
            });
        }
        if let Some(entry) = &self.secret_keyring {
            return keyring_entry(entry)?.get_password().map_err(|e| keyring_failed(entry, e));
        }
        Err(not_configured())
    }

    /// Store `value` where the configuration says it lives. Returns what was written
    /// (paths, never the value).
    pub fn store(&self, value: &str, store: &CredStore) -> Result<String, Error> {
        if let Some(name) = &self.credential {
            return store_credential(name, value, store);
        }
        if let Some(entry) = &self.secret_keyring {
            keyring_entry(entry)?.set_password(value).map_err(|e| keyring_failed(entry, e))?;
            return Ok(format!("keyring {entry}"));
        }
        if let Some(var) = &self.secret_env {
            return Err(Error::new(
                "secret.env_not_storable",
                format!(
                    "{var} ist eine Umgebungsvariable (nur für Tests); für den Betrieb secret_credential verwenden."
                ),
                format!("{var} is an environment variable (tests only); use secret_credential in production."),
            ));
        }
        Err(not_configured())
    }

    /// Read as the administrator: a systemd credential outside its service is decrypted
    /// from the store with `systemd-creds` (root); everything else as [`Secret::read`].
    pub fn read_admin(&self, store: &CredStore) -> Result<String, Error> {
        let Some(name) = &self.credential else {
            return self.read();
        };
        if std::env::var_os("CREDENTIALS_DIRECTORY").is_some() {
            return self.read();
        }
        let out = Command::new("systemd-creds")
            .args(["decrypt", "--name", name])
            .arg(store.dir.join(name))
            .arg("-")
            .stdin(Stdio::null())
            .output()
            .map_err(systemd_creds_missing)?;
        if !out.status.success() {
            return Err(Error::new(
                "secret.decrypt_failed",
                format!("systemd-Credential {name} lässt sich nicht entschlüsseln."),
                format!("systemd credential {name} cannot be decrypted."),
            )
            .caused_by(String::from_utf8_lossy(&out.stderr).trim()));
        }
        String::from_utf8(out.stdout).map(|s| s.trim_end_matches(['\r', '\n']).to_string()).map_err(|_| {
            Error::new(
                "secret.not_utf8",
                format!("systemd-Credential {name}: kein UTF-8."),
                format!("systemd credential {name}: not UTF-8."),
            )
        })
    }

    /// Is the secret stored (without reading it where that needs the service)?
    pub fn present(&self, store: &CredStore) -> bool {
        match (&self.credential, &self.secret_keyring, &self.secret_env) {
            (Some(c), _, _) => match std::env::var_os("CREDENTIALS_DIRECTORY") {
                Some(d) => Path::new(&d).join(c).is_file(),
                None => store.dir.join(c).is_file(),
            },
            _ => self.read().is_ok(),
        }
    }
}

fn not_configured() -> Error {
    Error::new(
        "secret.not_configured",
        "Kein Ort für das Geheimnis konfiguriert (secret_credential, secret_keyring oder secret_env).",
        "No place configured for the secret (secret_credential, secret_keyring or secret_env).",
    )
}

fn keyring_entry(entry: &str) -> Result<keyring::Entry, Error> {
    let (service, user) = entry.split_once('/').ok_or_else(|| {
        Error::new(
            "secret.keyring_entry_invalid",
            format!("Schlüsselbund-Eintrag „{entry}“: erwartet service/user."),
            format!("keyring entry \"{entry}\": expected service/user."),
        )
    })?;
    keyring::Entry::new(service, user).map_err(|e| keyring_failed(entry, e))
}

/// Encrypt with `systemd-creds` (the plaintext only travels through a pipe) into the
/// credential store, and add a unit drop-in that loads it. Both are written atomically.
fn store_credential(name: &str, value: &str, store: &CredStore) -> Result<String, Error> {
    if !valid_credential_name(name) {
        return Err(Error::new(
            "secret.credential_name_invalid",
            format!("Credential-Name „{name}“ ungültig."),
            format!("invalid credential name \"{name}\"."),
        ));
    }
    let mkdir = |d: &Path, mode: u32| -> Result<(), Error> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(mode).create(d).map_err(|e| not_writable(d, e))
    };
    mkdir(&store.dir, 0o700)?;
    mkdir(&store.dropin_dir, 0o755)?;
    // systemd needs an absolute path in the drop-in.
    let dir = std::path::absolute(&store.dir).map_err(|e| not_writable(&store.dir, e))?;
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut child = Command::new("systemd-creds")
        .args(["encrypt", "--name", name, "-"])
        .arg(&tmp)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(systemd_creds_missing)?;
    let encrypt_failed = |cause: String| {
        Error::new(
            "secret.encrypt_failed",
            format!("systemd-Credential {name} lässt sich nicht verschlüsseln."),
            format!("systemd credential {name} cannot be encrypted."),
        )
        .caused_by(cause)
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(value.as_bytes()).map_err(|e| encrypt_failed(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| encrypt_failed(e.to_string()))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(encrypt_failed(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    set_mode(&tmp, 0o600)?;
    std::fs::rename(&tmp, &target).map_err(|e| not_writable(&target, e))?;

    // LoadCredentialEncrypted= with a bare name searches /etc/credstore.encrypted; an
    // explicit path also works for a store elsewhere.
    let dropin = store.dropin_dir.join(format!("credential-{name}.conf"));
    let text = format!(
        "# Von „demail-gateway secret set“ geschrieben / written by \"demail-gateway secret set\".\n\
         [Service]\nLoadCredentialEncrypted={name}:{}\n",
        target.display()
    );
    let dtmp = store.dropin_dir.join(format!(".credential-{name}.conf.tmp"));
    std::fs::write(&dtmp, text).map_err(|e| not_writable(&dtmp, e))?;
    set_mode(&dtmp, 0o644)?;
    std::fs::rename(&dtmp, &dropin).map_err(|e| not_writable(&dropin, e))?;
    if Path::new("/run/systemd/system").is_dir() {
        let _ = Command::new("systemctl").arg("daemon-reload").status();
    }
    Ok(format!("{} + {}", target.display(), dropin.display()))
}

fn set_mode(p: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(|e| not_writable(p, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_their_source_not_their_value() {
        let s = Secret { secret_env: Some("DEMAIL_TEST_UNSET_VAR".into()), ..Default::default() };
        assert!(s.read().unwrap_err().to_string().contains("DEMAIL_TEST_UNSET_VAR"));
    }

    #[test]
    fn credential_names_are_file_names() {
        assert!(valid_credential_name("provider-dmda"));
        assert!(valid_credential_name("demail-gateway.helper"));
        for bad in ["", "../x", "a/b", ".hidden", "a b", &"x".repeat(65)] {
            assert!(!valid_credential_name(bad), "{bad}");
        }
    }
}
