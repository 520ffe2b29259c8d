//! The gateway password in the OS keyring (keyring 3.x with real backends only):
//! Secret Service or kernel keyutils on Linux, Credential Manager on Windows.
//!
//! Passwords never reach logs, files, error texts or the API. Errors carry the backend's
//! kind of failure, not its text (which could echo attributes).

use crate::code;
use crate::config::{Config, SecretBackend};
use demail_core::Error;
use keyring::Entry;

pub const SERVICE: &str = "de.demail.helper";

/// The advice shown when no keyring backend can be reached.
pub const NO_BACKEND_HELP_DE: &str = "Kein Schlüsselbund erreichbar. Unter Linux braucht der Helfer den Secret Service (GNOME Keyring, KWallet) in der Sitzung oder den Kernel-Schlüsselbund (keyutils, nur bis zum Abmelden/Neustart). Alternative: secrets.backend = \"keyutils\" setzen und das Kennwort nach jeder Anmeldung mit „demail credentials set“ eintragen (z. B. per Anmeldeskript), oder ein Gateway-Konto ohne Kennwort (Zertifikat/IP-Freigabe) verwenden.";
pub const NO_BACKEND_HELP_EN: &str = "No keyring reachable. On Linux the helper needs the Secret Service (GNOME Keyring, KWallet) in the session, or the kernel keyring (keyutils, kept only until logout/reboot). Alternative: set secrets.backend = \"keyutils\" and enter the password after each login with \"demail credentials set\" (e.g. from a login script), or use a gateway account without a password (certificate/IP allow-list).";

fn classify(e: &keyring::Error, backend: &str) -> Error {
    match e {
        keyring::Error::NoEntry => Error::new(
            code::SECRETS_MISSING,
            "Für das Gateway-Konto ist kein Kennwort im Schlüsselbund hinterlegt. Setzen Sie es mit „demail credentials set“.",
            "No password for the gateway account is stored in the keyring. Set it with \"demail credentials set\".",
        ),
        keyring::Error::NoStorageAccess(_) | keyring::Error::PlatformFailure(_) => Error::new(
            code::SECRETS_UNAVAILABLE,
            format!("Der Schlüsselbund ({backend}) ist nicht erreichbar oder gesperrt. {NO_BACKEND_HELP_DE}"),
            format!("The keyring ({backend}) is not reachable or locked. {NO_BACKEND_HELP_EN}"),
        ),
        keyring::Error::BadEncoding(_) => Error::new(
            code::SECRETS_ENCODING,
            "Das gespeicherte Kennwort ist kein UTF-8-Text. Setzen Sie es neu.",
            "The stored password is not UTF-8 text. Set it again.",
        ),
        _ => Error::new(
            code::SECRETS_FAILED,
            "Der Schlüsselbund hat die Anfrage abgelehnt.",
            "The keyring refused the request.",
        ),
    }
}

fn is_unavailable(e: &keyring::Error) -> bool {
    matches!(e, keyring::Error::NoStorageAccess(_) | keyring::Error::PlatformFailure(_))
}

/// The keyring account: `<login>@<host>` of the gateway (the person's directory login;
/// none where the helper signs in only with Kerberos).
pub fn account(cfg: &Config) -> Option<String> {
    if cfg.gateway.auth == crate::config::AuthMode::Kerberos {
        return None;
    }
    let u = cfg.gateway.login();
    (!u.is_empty()).then(|| format!("{u}@{}", cfg.gateway.host.trim()))
}

/// The backends to try, in order.
fn backends(cfg: &Config) -> Vec<&'static str> {
    match cfg.secrets.backend {
        SecretBackend::SecretService => vec!["secret-service"],
        SecretBackend::Keyutils => vec!["keyutils"],
        SecretBackend::Windows => vec!["windows"],
        SecretBackend::Auto if cfg!(windows) => vec!["windows"],
        SecretBackend::Auto if cfg!(target_os = "macos") => vec!["macos"],
        SecretBackend::Auto => vec!["secret-service", "keyutils"],
    }
}

fn entry(backend: &str, user: &str) -> keyring::Result<Entry> {
    match backend {
        #[cfg(target_os = "linux")]
        "secret-service" => Ok(Entry::new_with_credential(Box::new(
            keyring::secret_service::SsCredential::new_with_target(None, SERVICE, user)?,
        ))),
        #[cfg(target_os = "linux")]
        "keyutils" => Ok(Entry::new_with_credential(Box::new(keyring::keyutils::KeyutilsCredential::new_with_target(
            None, SERVICE, user,
        )?))),
        #[cfg(any(windows, target_os = "macos"))]
        "windows" | "macos" => Entry::new(SERVICE, user),
        other => Err(keyring::Error::Invalid("backend".into(), format!("{other} is not available on this platform"))),
    }
}

fn no_backend() -> Error {
    Error::new(code::SECRETS_UNAVAILABLE, NO_BACKEND_HELP_DE, NO_BACKEND_HELP_EN)
}

fn no_account() -> Error {
    Error::new(
        code::SECRETS_NO_ACCOUNT,
        "Für die Anmeldung mit Kennwort fehlt der Anmeldename (gateway.username leer und kein angemeldeter Benutzer), oder gateway.auth = kerberos.",
        "The password sign-in has no login name (gateway.username empty and no logged-in user), or gateway.auth = kerberos.",
    )
}

/// Store the password; returns the backend that took it.
pub fn set(cfg: &Config, password: &str) -> Result<&'static str, Error> {
    let user = account(cfg).ok_or_else(no_account)?;
    if password.is_empty() {
        return Err(Error::new(code::SECRETS_EMPTY, "Das Kennwort ist leer.", "The password is empty."));
    }
    let mut last = None;
    for b in backends(cfg) {
        match entry(b, &user).and_then(|e| e.set_password(password)) {
            Ok(()) => return Ok(b),
            Err(e) if is_unavailable(&e) => last = Some(classify(&e, b)),
            Err(e) => return Err(classify(&e, b)),
        }
    }
    Err(last.unwrap_or_else(no_backend))
}

/// Read the password; `Ok(None)` when no gateway user is configured.
pub fn get(cfg: &Config) -> Result<Option<(String, &'static str)>, Error> {
    let Some(user) = account(cfg) else { return Ok(None) };
    let mut first_err: Option<Error> = None;
    for b in backends(cfg) {
        match entry(b, &user).and_then(|e| e.get_password()) {
            Ok(p) => return Ok(Some((p, b))),
            Err(e) => {
                // Prefer "missing" over "unavailable" when one backend works but is empty.
                let c = classify(&e, b);
                if first_err.as_ref().is_none_or(|f| f.code() == code::SECRETS_UNAVAILABLE) {
                    first_err = Some(c);
                }
            }
        }
    }
    Err(first_err.unwrap_or_else(no_backend))
}

/// Remove the password from every backend that has it.
pub fn delete(cfg: &Config) -> Result<usize, Error> {
    let user = account(cfg).ok_or_else(no_account)?;
    let mut n = 0;
    for b in backends(cfg) {
        match entry(b, &user).and_then(|e| e.delete_credential()) {
            Ok(()) => n += 1,
            Err(keyring::Error::NoEntry) => {}
            Err(e) if is_unavailable(&e) => {}
            Err(e) => return Err(classify(&e, b)),
        }
    }
    Ok(n)
}
