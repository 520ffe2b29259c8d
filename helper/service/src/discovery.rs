//! Discovery: how the add-in finds this user's helper (docs/protocol.md, "Discovery").
//!
//! The helper writes `helper.json` (port, pid, version) into a per-user directory that
//! only the user can read: `$XDG_RUNTIME_DIR/demail/` on Linux (per login session, also
//! on terminal servers), else the data directory. A MailExtension cannot read files, so
//! the add-in asks the native-messaging host `demail-native-host` (started by Thunderbird
//! as the same user, allowed only for the add-in's id by its manifest), which reads the
//! file and answers. Each user thus reaches only their own helper, whatever port it got.

use crate::code;
use crate::config::Config;
use crate::error::envelope;
use crate::store::{self, private_dir, write_atomic};
use demail_core::{Error, Reason};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fs::File;
use std::path::{Path, PathBuf};

pub const RUNTIME_FILE: &str = "helper.json";
pub const LOCK_FILE: &str = "helper.lock";
pub const NATIVE_HOST_NAME: &str = "de.demail.helper";
/// The Thunderbird add-in's id (addin/thunderbird/manifest.json): the only caller the
/// native host serves.
pub const ADDIN_ID: &str = "demail-addin@open-demail.de";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeInfo {
    pub port: u16,
    pub pid: u32,
    pub version: String,
    pub protocol: u32,
    pub url: String,
    /// Local SMTP submission port, when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission_port: Option<u16>,
}

/// The directory for `helper.json`.
pub fn runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DEMAIL_HELPER_RUNTIME_DIR") {
        return PathBuf::from(d);
    }
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|p| p.is_absolute()) {
        Some(d) => d.join("demail"),
        None => crate::config::default_data_dir().join("run"),
    }
}

pub fn runtime_file() -> PathBuf {
    runtime_dir().join(RUNTIME_FILE)
}

/// Write `helper.json` (0600 in a 0700 directory).
pub fn publish(port: u16, submission_port: Option<u16>) -> std::io::Result<PathBuf> {
    let dir = runtime_dir();
    private_dir(&dir)?;
    let info = RuntimeInfo {
        port,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        protocol: crate::api::PROTOCOL,
        url: format!("http://127.0.0.1:{port}"),
        submission_port,
    };
    let path = dir.join(RUNTIME_FILE);
    write_atomic(&path, serde_json::to_string_pretty(&info).unwrap_or_default().as_bytes())?;
    Ok(path)
}

pub fn unpublish(path: &Path) {
    // Only remove our own file (a second helper may have replaced it).
    if read_file(path).is_some_and(|i| i.pid == std::process::id()) {
        let _ = std::fs::remove_file(path);
    }
}

fn read_file(path: &Path) -> Option<RuntimeInfo> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The published helper, if its port still answers.
pub fn read() -> Option<RuntimeInfo> {
    let info = read_file(&runtime_file())?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], info.port));
    std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(500)).ok()?;
    Some(info)
}

/// One helper per user and data directory: an exclusive lock held while it runs.
pub fn lock_instance(data_dir: &Path) -> Result<File, Error> {
    let path = data_dir.join(LOCK_FILE);
    // A directory the helper cannot use holds no outbox either.
    let unusable = |e: std::io::Error| Error::from(store::unusable(data_dir)).caused_by(e);
    private_dir(data_dir).map_err(unusable)?;
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(unusable)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::new(
            code::SERVE_RUNNING,
            format!("Für diesen Benutzer läuft bereits ein De-Mail-Helfer (lock {}).", path.display()),
            format!("A De-Mail helper is already running for this user (lock {}).", path.display()),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(unusable(e)),
    }
}

// ------------------------------------------------------------------ native messaging

/// Who started the native host: Thunderbird passes the manifest's path and the calling
/// add-in's id as arguments (argv[1], argv[2]). Only our add-in is served; the manifest's
/// `allowed_extensions` says the same, but the manifest directory and registry key are
/// shared with Firefox (docs/protocol.md §2), so the host checks again.
pub fn native_caller(args: &[std::ffi::OsString]) -> Result<String, Reason> {
    match args.get(2).and_then(|a| a.to_str()) {
        Some(id) if id == ADDIN_ID => Ok(id.to_string()),
        other => {
            let who = other.map(|s| s.chars().filter(|c| !c.is_control()).take(100).collect::<String>());
            let who = who.unwrap_or_else(|| "—".into());
            Err(Reason::new(
                code::NATIVE_EXTENSION,
                format!("Der De-Mail-Helfer antwortet nur dem De-Mail-Add-in ({ADDIN_ID}), nicht „{who}“."),
                format!("The De-Mail helper answers only the De-Mail add-in ({ADDIN_ID}), not \"{who}\"."),
            ))
        }
    }
}

/// Answer one native-messaging request from the add-in `caller` (see [`native_caller`]).
///
/// - `{"action":"discover"}` → `{port, url, version, protocol, request_timeout}` or `helper.not_running`.
/// - `{"action":"pair","client":"…"}` → a token, only when IT set
///   `pairing.native_auto_approve = true` in the machine file; otherwise `pairing.manual`.
///   The new pairing replaces the add-in's earlier native ones.
pub fn native_handle(req: &Value, cfg: &Config, caller: &str) -> Value {
    let err = |code: &str, de: &str, en: &str| envelope(&Reason::new(code, de, en), None);
    match req.get("action").and_then(Value::as_str) {
        Some("discover") => match read() {
            Some(i) => json!({ "ok": true, "result": { "running": true, "port": i.port, "url": i.url, "version": i.version, "protocol": i.protocol, "request_timeout": cfg.api.request_timeout.max(1) } }),
            None => err(
                code::HELPER_NOT_RUNNING,
                "Der De-Mail-Helfer läuft nicht. Er startet bei der Anmeldung; sonst „demail serve“ starten oder die IT fragen.",
                "The De-Mail helper is not running. It starts at login; otherwise start \"demail serve\" or ask IT.",
            ),
        },
        Some("pair") => {
            if !cfg.pairing.native_auto_approve {
                return err(
                    code::PAIRING_MANUAL,
                    "Die automatische Kopplung ist nicht freigegeben; bitte über POST /v1/pairing koppeln und den Code bestätigen.",
                    "Automatic pairing is not enabled; pair via POST /v1/pairing and approve the code.",
                );
            }
            let client = req.get("client").and_then(Value::as_str).unwrap_or("add-in").chars().filter(|c| !c.is_control()).take(100).collect::<String>();
            let store = crate::store::Store::open(&cfg.data_dir());
            match store.and_then(|mut s| crate::pairing::provision_native(&mut s, &client, caller)) {
                Ok((p, token)) => json!({ "ok": true, "result": { "pairing_id": p.id, "token": token, "status": p.status } }),
                Err(e) => {
                    crate::server::log_cause_to_file(cfg, &e.0);
                    envelope(&e.0.reason, None)
                }
            }
        }
        _ => err(code::REQUEST_INVALID.id, "Unbekannte Aktion.", "Unknown action."),
    }
}

/// Read one length-prefixed message (native byte order, as WebExtensions send it).
pub fn native_read(r: &mut impl std::io::Read) -> std::io::Result<Option<Value>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = u32::from_ne_bytes(len) as usize;
    if n > 64 * 1024 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "message too large"));
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf)?;
    Ok(Some(serde_json::from_slice(&buf).unwrap_or(Value::Null)))
}

pub fn native_write(w: &mut impl std::io::Write, v: &Value) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    w.write_all(&(bytes.len() as u32).to_ne_bytes())?;
    w.write_all(&bytes)?;
    w.flush()
}

/// The manifest Thunderbird needs (`~/.mozilla/native-messaging-hosts/<name>.json`,
/// `/usr/lib/mozilla/native-messaging-hosts/` machine-wide, or the registry on Windows).
pub fn native_manifest(host_path: &Path, extension_id: &str) -> Value {
    json!({
        "name": NATIVE_HOST_NAME,
        "description": "De-Mail-Helfer: Port und Kopplung für das Add-in / De-Mail helper: port and pairing for the add-in",
        "path": host_path,
        "type": "stdio",
        "allowed_extensions": [extension_id],
    })
}
