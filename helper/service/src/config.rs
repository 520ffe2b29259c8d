//! Configuration: a machine-wide TOML file written by IT (`/etc/demail/helper.toml`) and a
//! per-user TOML file. The user file overrides the machine file, except for keys the
//! machine file locks in `[lock] keys = [...]`. Every error names the file, the line and
//! the key.

use crate::code;
use demail_core::policy::Size;
use demail_core::Reason;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// TLS towards the gateway. There is no plaintext mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// SMTP submission with STARTTLS (usually port 587). STARTTLS is required, never optional.
    Starttls,
    /// TLS from the first byte (usually port 465, 1465).
    Implicit,
}

/// How the helper signs the person in at the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// The person's Kerberos ticket if there is one, else their stored directory password,
    /// else no sign-in (the gateway then says what is missing).
    Auto,
    /// Only Kerberos (single sign-on); no ticket means "please sign in again".
    Kerberos,
    /// Only the directory password from the OS keyring.
    Password,
}

impl Gateway {
    /// The sign-in actually used: `auto` with an explicit `username` means the password
    /// (IT named the account, so the desk has no ticket to offer).
    pub fn effective_auth(&self) -> AuthMode {
        match self.auth {
            AuthMode::Auto if !self.username.trim().is_empty() => AuthMode::Password,
            m => m,
        }
    }

    /// The directory login for the password sign-in: `username`, else the login of the
    /// person running the helper (their desk session).
    pub fn login(&self) -> String {
        let u = self.username.trim();
        if !u.is_empty() {
            return u.to_string();
        }
        ["USER", "USERNAME", "LOGNAME"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
            .unwrap_or_default()
    }

    /// The nodes to try: `host:port`, then each `fallback` entry (its port, else `port`).
    pub fn nodes(&self) -> Vec<(String, u16)> {
        let mut v = vec![(self.host.trim().to_string(), self.port)];
        for f in &self.fallback {
            let f = f.trim();
            let (h, p) = match f.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, p.parse().unwrap_or(self.port)),
                _ => (f, self.port),
            };
            if !h.is_empty() {
                v.push((h.to_string(), p));
            }
        }
        v
    }

    /// The envelope recipient of a De-Mail request.
    pub fn request_address(&self) -> String {
        let a = self.request_address.trim();
        if a.is_empty() {
            format!("de-mail-zugang@{}", self.host.trim().to_lowercase())
        } else {
            a.to_string()
        }
    }
}

/// How De-Mail options travel to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    /// `X-de-mail-*` header fields (default).
    Headers,
    /// Subject tags such as `[P, VB] Betreff`, written with the core's formatter.
    SubjectTags,
}

/// Where gateway credentials are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretBackend {
    /// Linux: Secret Service, then kernel keyutils; Windows: Credential Manager.
    Auto,
    SecretService,
    Keyutils,
    Windows,
}

/// A declared config value: key name, type, default. Generates the effective section
/// (`$Sec`), the per-file section with optional values (`$File`) and the merge.
macro_rules! sections {
    ($( $sec:ident : $Sec:ident / $File:ident { $( $(#[doc = $doc:expr])* $key:ident : $ty:ty = $def:expr ),* $(,)? } )*) => {
        $(
            #[derive(Debug, Clone, PartialEq, Serialize)]
            pub struct $Sec { $( $(#[doc = $doc])* pub $key: $ty, )* }

            impl Default for $Sec {
                fn default() -> Self { $Sec { $( $key: $def, )* } }
            }

            #[derive(Debug, Clone, Default, Deserialize)]
            #[serde(deny_unknown_fields)]
            struct $File { $( #[serde(default)] $key: Option<$ty>, )* }

            impl $File {
                fn apply(&self, into: &mut $Sec, src: &Source, locked: &[String], warnings: &mut Vec<ConfigIssue>) {
                    $(
                        if let Some(v) = &self.$key {
                            let path = concat!(stringify!($sec), ".", stringify!($key));
                            if src.user && (MACHINE_ONLY.contains(&path) || locked.iter().any(|l| l == path || l == stringify!($sec))) {
                                warnings.push(ConfigIssue::locked(src, path));
                            } else {
                                into.$key = v.clone();
                            }
                        }
                    )*
                }
            }
        )*

        /// The effective configuration.
        #[derive(Debug, Clone, PartialEq, Serialize, Default)]
        pub struct Config {
            $( pub $sec: $Sec, )*
            /// Keys the machine file locks (`section.key` or a whole `section`).
            pub locked: Vec<String>,
            /// The files that were read, machine file first.
            pub files: Vec<PathBuf>,
            /// Problems that did not stop loading (locked keys set by the user).
            #[serde(skip_serializing_if = "Vec::is_empty")]
            pub warnings: Vec<ConfigIssue>,
        }

        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileConfig {
            $( #[serde(default)] $sec: $File, )*
            #[serde(default)]
            lock: LockFile,
        }

        impl FileConfig {
            fn apply(&self, cfg: &mut Config, src: &Source) {
                let locked = cfg.locked.clone();
                $( self.$sec.apply(&mut cfg.$sec, src, &locked, &mut cfg.warnings); )*
            }
        }

        /// Every settable key, `section.key`.
        pub const KEYS: &[&str] = &[ $( $( concat!(stringify!($sec), ".", stringify!($key)), )* )* ];
    };
}

sections! {
    api: Api / ApiFile {
        /// Port on 127.0.0.1; 0 picks a free port (published through the discovery file).
        port: u16 = 0,
        /// Largest request body accepted.
        max_body: Size = Size(64 * 1024 * 1024),
        /// Seconds a request may take.
        request_timeout: u64 = 60,
        /// Seconds a client may take to send a request's headers; slower connections are closed.
        header_timeout: u64 = 30,
        /// Accept `Origin: moz-extension://…` (Thunderbird add-ins).
        allow_moz_extension: bool = true,
        /// Further exact origins, e.g. the Outlook add-in's `https://addin.stadt.de`.
        allowed_origins: Vec<String> = Vec::new(),
    }
    gateway: Gateway / GatewayFile {
        /// Host name of the De-Mail gateway; also the name its certificate must carry.
        host: String = String::new(),
        port: u16 = 587,
        /// Further gateway nodes (`host` or `host:port`), tried in order when the one
        /// before does not answer.
        fallback: Vec<String> = Vec::new(),
        tls: TlsMode = TlsMode::Starttls,
        /// PEM file with the internal CA that issued the gateway's certificate.
        ca_file: String = String::new(),
        /// Trust only `ca_file`, not the system's certificate store.
        ca_only: bool = false,
        /// How the person signs in: `auto` (Kerberos ticket, else a stored password; with
        /// `username` set: the password), `kerberos` or `password`.
        auth: AuthMode = AuthMode::Auto,
        /// Directory login for the password sign-in; empty: the login of the person at
        /// this desk. The password lives only in the OS keyring.
        username: String = String::new(),
        /// The gateway's Kerberos service name (principal `<service>/<host>`).
        kerberos_service: String = String::from("smtp"),
        /// Where "De-Mail für mich beantragen" goes; empty: `de-mail-zugang@<host>`.
        request_address: String = String::new(),
        dialect: Dialect = Dialect::Headers,
        /// Seconds for connecting and for each SMTP command.
        timeout: u64 = 60,
        /// EHLO name; empty: the machine's host name.
        hello_name: String = String::new(),
    }
    relay: Relay / RelayFile {
        /// First retry after a transient failure, in seconds; doubles up to `retry_max`.
        retry_initial: u64 = 30,
        retry_max: u64 = 1800,
        /// After this many seconds without success a message is marked failed.
        give_up_after: u64 = 48 * 3600,
        /// Seconds between looks at the outbox when nothing wakes the worker.
        poll_interval: u64 = 30,
        /// Start the relay worker (off only for diagnostics).
        enabled: bool = true,
        /// Parallel sessions to the gateway (1 to 16).
        connections: u32 = 2,
    }
    policy: PolicyCfg / PolicyFile {
        /// The IT policy (docs/policy.md); empty or missing: built-in rules.
        file: String = String::from(DEFAULT_POLICY),
        /// Seconds a loaded policy is used before the file is looked at again.
        cache_ttl: u64 = 60,
    }
    submission: Submission / SubmissionFile {
        /// Local SMTP submission for mail programs without the add-in (loopback only).
        enabled: bool = false,
        /// Port on 127.0.0.1; 0 picks a free one (published in helper.json).
        port: u16 = 0,
    }
    storage: Storage / StorageFile {
        /// Outbox, journal and pairings; empty: the per-user data directory.
        dir: String = String::new(),
    }
    secrets: Secrets / SecretsFile {
        backend: SecretBackend = SecretBackend::Auto,
    }
    pairing: Pairing / PairingFile {
        /// Open pairing requests from one origin (and for one add-in id) at once.
        pending_per_origin: u32 = 3,
        /// Open pairing requests in all (a ceiling for the table, not a queue per client).
        pending_max: u32 = 50,
        /// Seconds a pairing request waits for approval.
        pending_ttl: u64 = 600,
        /// Days a pairing's token stays valid after its last use (each use renews it).
        token_days: u32 = 90,
        /// The native-messaging host may pair the add-in without asking (IT pre-provisioning).
        /// Machine file only.
        native_auto_approve: bool = false,
        /// `demail pair provision` may hand out approved tokens (logon scripts, programs
        /// using the local SMTP submission). Machine file only.
        provision: bool = false,
    }
    log: Log / LogFile {
        /// tracing filter, e.g. `info` or `demail_helper=debug`.
        level: String = String::from("info"),
        /// Log directory; empty: `<storage>/logs`.
        dir: String = String::new(),
        /// Daily files kept.
        max_files: u32 = 14,
    }
}

/// Keys only IT sets (machine file, on Windows also HKLM): they hand out tokens without
/// the user's approval, so neither the user nor a program running as the user may turn
/// them on. Set in a user file they are ignored like a locked key.
pub const MACHINE_ONLY: &[&str] = &["pairing.native_auto_approve", "pairing.provision"];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LockFile {
    #[serde(default)]
    keys: Vec<String>,
}

#[cfg(not(windows))]
const DEFAULT_POLICY: &str = "/etc/demail/policy.toml";
#[cfg(windows)]
const DEFAULT_POLICY: &str = "C:\\ProgramData\\demail\\policy.toml";

struct Source<'a> {
    path: &'a Path,
    text: &'a str,
    user: bool,
}

/// A configuration problem with its place (also in the texts, so the reason alone says it all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigIssue {
    #[serde(flatten)]
    pub reason: Reason,
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl From<Box<ConfigIssue>> for Reason {
    fn from(i: Box<ConfigIssue>) -> Self {
        i.reason
    }
}

impl From<Box<ConfigIssue>> for demail_core::Error {
    fn from(i: Box<ConfigIssue>) -> Self {
        i.reason.into()
    }
}

impl ConfigIssue {
    fn at(code: &str, file: &Path, line: Option<usize>, key: Option<String>, de: &str, en: &str) -> Box<Self> {
        let f = file.display().to_string();
        let (loc_de, loc_en) = match (line, &key) {
            (Some(l), Some(k)) => (format!("{f}, Zeile {l}, Schlüssel „{k}“"), format!("{f}, line {l}, key \"{k}\"")),
            (Some(l), None) => (format!("{f}, Zeile {l}"), format!("{f}, line {l}")),
            (None, Some(k)) => (format!("{f}, Schlüssel „{k}“"), format!("{f}, key \"{k}\"")),
            (None, None) => (f.clone(), f.clone()),
        };
        Box::new(ConfigIssue {
            reason: Reason::new(code, format!("{loc_de}: {de}"), format!("{loc_en}: {en}")),
            file: f,
            line,
            key,
        })
    }

    fn locked(src: &Source, key: &str) -> Self {
        let line = key_line(src.text, key);
        *Self::at(
            code::CONFIG_LOCKED,
            src.path,
            line,
            Some(key.into()),
            "Dieser Wert ist von der IT festgelegt und wird hier ignoriert.",
            "This value is locked by IT and is ignored here.",
        )
    }
}

/// Where the files live. Tests and installers override them through the environment.
#[derive(Debug, Clone)]
pub struct Paths {
    pub machine: PathBuf,
    pub user: PathBuf,
}

impl Paths {
    /// `DEMAIL_HELPER_SYSTEM_CONFIG` (else the platform default) and `--config`
    /// (else `DEMAIL_HELPER_CONFIG`, else the per-user default).
    pub fn resolve(user_override: Option<&Path>) -> Paths {
        let machine =
            std::env::var_os("DEMAIL_HELPER_SYSTEM_CONFIG").map(PathBuf::from).unwrap_or_else(default_machine_config);
        let user = user_override
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("DEMAIL_HELPER_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| config_home().join("demail").join("helper.toml"));
        Paths { machine, user }
    }
}

fn default_machine_config() -> PathBuf {
    if cfg!(windows) {
        PathBuf::from(std::env::var_os("ProgramData").unwrap_or_else(|| "C:\\ProgramData".into()))
            .join("demail")
            .join("helper.toml")
    } else {
        PathBuf::from("/etc/demail/helper.toml")
    }
}

fn home() -> PathBuf {
    std::env::var_os(if cfg!(windows) { "USERPROFILE" } else { "HOME" })
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `$XDG_CONFIG_HOME` or `~/.config`; `%APPDATA%` on Windows.
pub fn config_home() -> PathBuf {
    if cfg!(windows) {
        return std::env::var_os("APPDATA").map(PathBuf::from).unwrap_or_else(home);
    }
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home().join(".config"))
}

/// `$XDG_DATA_HOME/demail` or `~/.local/share/demail`; `%LOCALAPPDATA%\demail` on Windows.
pub fn default_data_dir() -> PathBuf {
    if cfg!(windows) {
        return std::env::var_os("LOCALAPPDATA").map(PathBuf::from).unwrap_or_else(home).join("demail");
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home().join(".local").join("share"))
        .join("demail")
}

impl Config {
    /// Read the machine file, then the user file. Missing files are fine; unreadable or
    /// invalid ones are errors.
    pub fn load(paths: &Paths) -> Result<Config, Box<ConfigIssue>> {
        let mut cfg = Config::default();
        if let Some(text) = read_optional(&paths.machine)? {
            let src = Source { path: &paths.machine, text: &text, user: false };
            let f = parse_file(&src)?;
            for k in &f.lock.keys {
                if !KEYS.contains(&k.as_str()) && !KEYS.iter().any(|x| x.split('.').next() == Some(k.as_str())) {
                    return Err(ConfigIssue::at(
                        code::CONFIG_UNKNOWN_KEY,
                        &paths.machine,
                        key_line(&text, "lock.keys"),
                        Some(k.clone()),
                        "Unbekannter Schlüssel in lock.keys.",
                        "Unknown key in lock.keys.",
                    ));
                }
            }
            cfg.locked = f.lock.keys.clone();
            f.apply(&mut cfg, &src);
            cfg.files.push(paths.machine.clone());
        }
        // Windows: the MSI's values and Group Policy from HKLM (registry.rs).
        #[cfg(windows)]
        for layer in crate::registry::layers() {
            apply_registry(&mut cfg, &layer)?;
        }
        if let Some(text) = read_optional(&paths.user)? {
            let src = Source { path: &paths.user, text: &text, user: true };
            let f = parse_file(&src)?;
            if !f.lock.keys.is_empty() {
                return Err(ConfigIssue::at(
                    code::CONFIG_LOCK_IN_USER_FILE,
                    &paths.user,
                    key_line(&text, "lock.keys"),
                    Some("lock.keys".into()),
                    "Sperren darf nur die IT in der Maschinen-Konfiguration setzen.",
                    "Only IT may set locks, in the machine configuration.",
                ));
            }
            f.apply(&mut cfg, &src);
            cfg.files.push(paths.user.clone());
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), Box<ConfigIssue>> {
        let file = self.files.last().cloned().unwrap_or_default();
        let bad = |key: &str, de: &str, en: &str| {
            ConfigIssue::at(code::CONFIG_INVALID_VALUE, &file, None, Some(key.into()), de, en)
        };
        if self.gateway.port == 0 {
            return Err(bad("gateway.port", "Der Port darf nicht 0 sein.", "The port must not be 0."));
        }
        if self.gateway.host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
            return Err(bad("gateway.host", "Ungültiger Host-Name.", "Invalid host name."));
        }
        if self.gateway.username.chars().any(|c| c.is_control()) {
            return Err(bad(
                "gateway.username",
                "Der Benutzername enthält Steuerzeichen.",
                "The user name contains control characters.",
            ));
        }
        for f in &self.gateway.fallback {
            let f = f.trim();
            let bad_port = f.rsplit_once(':').is_some_and(|(_, p)| !matches!(p.parse::<u16>(), Ok(n) if n > 0));
            if f.is_empty() || f.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') || bad_port {
                return Err(bad(
                    "gateway.fallback",
                    "Ungültiger Gateway-Knoten (erwartet „host“ oder „host:port“).",
                    "Invalid gateway node (expected \"host\" or \"host:port\").",
                ));
            }
        }
        if self.gateway.kerberos_service.trim().is_empty()
            || self
                .gateway
                .kerberos_service
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '@')
        {
            return Err(bad(
                "gateway.kerberos_service",
                "Ungültiger Kerberos-Dienstname (z. B. „smtp“).",
                "Invalid Kerberos service name (e.g. \"smtp\").",
            ));
        }
        if !self.gateway.request_address.trim().is_empty()
            && self.gateway.request_address.trim().parse::<lettre::Address>().is_err()
        {
            return Err(bad(
                "gateway.request_address",
                "Die Antragsadresse ist keine gültige E-Mail-Adresse.",
                "The request address is not a valid e-mail address.",
            ));
        }
        if self.relay.retry_initial == 0 || self.relay.retry_max < self.relay.retry_initial {
            return Err(bad(
                "relay.retry_max",
                "retry_initial muss größer als 0 und retry_max mindestens so groß sein.",
                "retry_initial must be greater than 0 and retry_max at least as large.",
            ));
        }
        for o in &self.api.allowed_origins {
            if !(o.starts_with("https://") || o.starts_with("http://localhost") || o.starts_with("moz-extension://"))
                || o.ends_with('/')
                || o.contains('*')
            {
                return Err(bad(
                    "api.allowed_origins",
                    "Ursprünge müssen exakt angegeben werden, z. B. „https://addin.stadt.de“ (ohne / am Ende, ohne *).",
                    "Origins must be exact, e.g. \"https://addin.stadt.de\" (no trailing /, no *).",
                ));
            }
        }
        if !(1..=3650).contains(&self.pairing.token_days) {
            return Err(bad(
                "pairing.token_days",
                "Die Gültigkeit muss zwischen 1 und 3650 Tagen liegen.",
                "The lifetime must be between 1 and 3650 days.",
            ));
        }
        if self.pairing.pending_per_origin == 0 || self.pairing.pending_max < self.pairing.pending_per_origin {
            return Err(bad(
                "pairing.pending_max",
                "pending_per_origin muss größer als 0 und pending_max mindestens so groß sein.",
                "pending_per_origin must be greater than 0 and pending_max at least as large.",
            ));
        }
        if self.api.max_body.0 < 1024 {
            return Err(bad(
                "api.max_body",
                "api.max_body ist zu klein (mindestens 1 KiB).",
                "api.max_body is too small (at least 1 KiB).",
            ));
        }
        Ok(())
    }

    /// The outbox/journal/pairing directory.
    pub fn data_dir(&self) -> PathBuf {
        if self.storage.dir.trim().is_empty() {
            default_data_dir()
        } else {
            PathBuf::from(&self.storage.dir)
        }
    }

    pub fn log_dir(&self) -> PathBuf {
        if self.log.dir.trim().is_empty() {
            self.data_dir().join("logs")
        } else {
            PathBuf::from(&self.log.dir)
        }
    }

    pub fn is_locked(&self, key: &str) -> bool {
        if MACHINE_ONLY.contains(&key) {
            return true;
        }
        let section = key.split('.').next().unwrap_or(key);
        self.locked.iter().any(|l| l == key || l == section)
    }
}

/// One registry layer on top of the machine file: parsed like a file; Group Policy
/// locks every key it sets. Line numbers of the generated text mean nothing and are dropped.
#[cfg(any(windows, test))]
fn apply_registry(cfg: &mut Config, layer: &crate::registry::Layer) -> Result<(), Box<ConfigIssue>> {
    let place = Path::new(&layer.place);
    let src = Source { path: place, text: &layer.toml, user: false };
    let f = parse_file(&src).map_err(|mut e| {
        if let Some(l) = e.line.take() {
            let strip = |m: &str| m.replacen(&format!(", Zeile {l}"), "", 1).replacen(&format!(", line {l}"), "", 1);
            e.reason.message = strip(&e.reason.message);
            e.reason.message_en = strip(&e.reason.message_en);
        }
        e
    })?;
    for k in &f.lock.keys {
        if !KEYS.contains(&k.as_str()) && !KEYS.iter().any(|x| x.split('.').next() == Some(k.as_str())) {
            return Err(ConfigIssue::at(
                code::CONFIG_UNKNOWN_KEY,
                place,
                None,
                Some(k.clone()),
                "Unbekannter Schlüssel in lock.keys.",
                "Unknown key in lock.keys.",
            ));
        }
    }
    cfg.locked.extend(f.lock.keys.iter().cloned());
    f.apply(cfg, &src);
    if layer.lock_all {
        cfg.locked.extend(layer.keys.iter().cloned());
    }
    cfg.locked.dedup();
    cfg.files.push(place.to_path_buf());
    Ok(())
}

fn read_optional(path: &Path) -> Result<Option<String>, Box<ConfigIssue>> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| {
            ConfigIssue::at(
                code::CONFIG_ENCODING,
                path,
                None,
                None,
                "Die Datei ist nicht UTF-8-kodiert.",
                "The file is not UTF-8 encoded.",
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfigIssue::at(
            code::CONFIG_READ,
            path,
            None,
            None,
            &format!("Die Datei kann nicht gelesen werden ({e})."),
            &format!("The file cannot be read ({e})."),
        )),
    }
}

fn parse_file(src: &Source) -> Result<FileConfig, Box<ConfigIssue>> {
    toml::from_str::<FileConfig>(src.text).map_err(|e| {
        let off = e.span().map(|s| s.start);
        let line = off.map(|o| line_of(src.text, o));
        let key = off.and_then(|o| key_path_at(src.text, o));
        let msg = e.message().trim().to_string();
        // Size errors from the core carry their own reason.
        if let Some(r) = demail_core::reason::decode_reason(&msg) {
            return ConfigIssue::at(&r.code, src.path, line, key, &r.message, &r.message_en);
        }
        let (code, de) = if msg.contains("unknown field") {
            (code::CONFIG_UNKNOWN_KEY, "Unbekannter Schlüssel")
        } else if msg.contains("unknown variant") || msg.contains("invalid type") || msg.contains("invalid value") {
            (code::CONFIG_INVALID_VALUE, "Ungültiger Wert")
        } else if msg.contains("duplicate") {
            (code::CONFIG_DUPLICATE_KEY, "Doppelter Schlüssel")
        } else {
            (code::CONFIG_SYNTAX, "Kein gültiges TOML")
        };
        ConfigIssue::at(code, src.path, line, key, &format!("{de}: {msg}"), &msg)
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    let off = offset.min(text.len());
    text.as_bytes()[..off].iter().filter(|b| **b == b'\n').count() + 1
}

/// Dotted key of the value at `offset`: nearest `[table]` above plus the key on that line.
fn key_path_at(src: &str, offset: usize) -> Option<String> {
    let offset = offset.min(src.len());
    let line_start = src.get(..offset)?.rfind('\n').map(|p| p + 1).unwrap_or(0);
    let line_end = src[line_start..].find('\n').map(|p| line_start + p).unwrap_or(src.len());
    let line = src[line_start..line_end].trim();
    if line.starts_with('[') {
        return Some(line.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    }
    let table = src[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        .unwrap_or_default();
    let key = line.split_once('=').map(|(k, _)| k.trim().trim_matches('"').to_string());
    match (table.is_empty(), key) {
        (true, None) => None,
        (false, None) => Some(table),
        (true, Some(k)) => Some(k),
        (false, Some(k)) => Some(format!("{table}.{k}")),
    }
}

/// Line of `section.key` in a TOML text (first match), for messages.
fn key_line(text: &str, dotted: &str) -> Option<usize> {
    let (section, key) = dotted.split_once('.')?;
    let mut in_section = false;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            in_section = t.trim_matches(|c| c == '[' || c == ']').trim() == section;
            continue;
        }
        let k = t.split_once('=').map(|(k, _)| k.trim());
        if in_section && k == Some(key) || k == Some(dotted) {
            return Some(i + 1);
        }
    }
    None
}

/// Change one key in the user file (the CLI's `config set`). Locked keys are refused;
/// the result is loaded once more so an invalid value never lands on disk.
pub fn set_user_value(paths: &Paths, key: &str, value: &str) -> Result<Config, Box<ConfigIssue>> {
    let current = Config::load(paths)?;
    let (section, name) = key.split_once('.').unwrap_or(("", key));
    if !KEYS.contains(&key) {
        return Err(ConfigIssue::at(
            code::CONFIG_UNKNOWN_KEY,
            &paths.user,
            None,
            Some(key.into()),
            &format!("Unbekannter Schlüssel. Bekannt sind: {}.", KEYS.join(", ")),
            &format!("Unknown key. Known keys: {}.", KEYS.join(", ")),
        ));
    }
    if current.is_locked(key) {
        return Err(ConfigIssue::at(
            code::CONFIG_LOCKED,
            &paths.machine,
            key_line(&std::fs::read_to_string(&paths.machine).unwrap_or_default(), "lock.keys"),
            Some(key.into()),
            "Dieser Wert ist von der IT festgelegt und kann nicht geändert werden.",
            "This value is locked by IT and cannot be changed.",
        ));
    }
    let text = read_optional(&paths.user)?.unwrap_or_default();
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        let line = e.span().map(|s| line_of(&text, s.start));
        ConfigIssue::at(code::CONFIG_SYNTAX, &paths.user, line, None, "Kein gültiges TOML.", "Not valid TOML.")
    })?;
    // A value that is not TOML syntax is taken as a string (`config set gateway.host gw.stadt.de`).
    let v: toml_edit::Value = value.parse().unwrap_or_else(|_| toml_edit::Value::from(value));
    let table =
        doc.entry(section).or_insert(toml_edit::Item::Table(toml_edit::Table::new())).as_table_mut().ok_or_else(
            || {
                ConfigIssue::at(
                    code::CONFIG_SYNTAX,
                    &paths.user,
                    None,
                    Some(section.into()),
                    "Ist keine Tabelle.",
                    "Is not a table.",
                )
            },
        )?;
    table[name] = toml_edit::Item::Value(v);
    let new_text = doc.to_string();
    let src = Source { path: &paths.user, text: &new_text, user: true };
    parse_file(&src)?;
    if let Some(dir) = paths.user.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_issue(&paths.user, e))?;
    }
    crate::store::write_atomic(&paths.user, new_text.as_bytes()).map_err(|e| io_issue(&paths.user, e))?;
    Config::load(paths)
}

fn io_issue(path: &Path, e: std::io::Error) -> Box<ConfigIssue> {
    ConfigIssue::at(
        code::CONFIG_WRITE,
        path,
        None,
        None,
        &format!("Die Datei kann nicht geschrieben werden ({e})."),
        &format!("The file cannot be written ({e})."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tmp() -> PathBuf {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).unwrap();
        let d = std::env::temp_dir()
            .join(format!("demail-cfg-{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn user_overrides_machine_except_locked() {
        let d = tmp();
        let machine = write(
            &d,
            "m.toml",
            "[gateway]\nhost = \"gw.stadt.de\"\nport = 465\ntls = \"implicit\"\n\n[lock]\nkeys = [\"gateway.host\"]\n",
        );
        let user = write(&d, "u.toml", "[gateway]\nhost = \"evil.example\"\nport = 587\n");
        let c = Config::load(&Paths { machine, user }).unwrap();
        assert_eq!(c.gateway.host, "gw.stadt.de");
        assert_eq!(c.gateway.port, 587);
        assert_eq!(c.gateway.tls, TlsMode::Implicit);
        assert_eq!(c.warnings[0].reason.code, "config.locked");
        assert_eq!(c.warnings[0].line, Some(2));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn errors_name_file_line_key() {
        let d = tmp();
        let machine = write(&d, "m.toml", "[gateway]\nhost = \"gw\"\ntls = \"plain\"\n");
        let e = Config::load(&Paths { machine: machine.clone(), user: d.join("none.toml") }).unwrap_err();
        assert_eq!(e.reason.code, "config.invalid_value");
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("gateway.tls"));
        assert!(e.reason.message.contains("m.toml"), "{}", e.reason.message);

        let machine = write(&d, "m.toml", "[relay]\nretry_inital = 3\n");
        let e = Config::load(&Paths { machine, user: d.join("none.toml") }).unwrap_err();
        assert_eq!(e.reason.code, "config.unknown_key");
        assert_eq!(e.line, Some(2));

        let machine = write(&d, "m.toml", "[api]\nmax_body = \"viel\"\n");
        let e = Config::load(&Paths { machine, user: d.join("none.toml") }).unwrap_err();
        assert_eq!(e.reason.code, "policy.size_invalid");
        assert_eq!(e.key.as_deref(), Some("api.max_body"));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn gateway_nodes_and_the_sign_in_mode() {
        let d = tmp();
        let machine = write(
            &d,
            "m.toml",
            "[gateway]\nhost = \"gw1.stadt.de\"\nport = 587\nfallback = [\"gw2.stadt.de\", \"gw3.stadt.de:1465\"]\n",
        );
        let c = Config::load(&Paths { machine, user: d.join("none.toml") }).unwrap();
        assert_eq!(
            c.gateway.nodes(),
            vec![("gw1.stadt.de".into(), 587), ("gw2.stadt.de".into(), 587), ("gw3.stadt.de".into(), 1465)]
        );
        assert_eq!(c.gateway.effective_auth(), AuthMode::Auto);
        assert_eq!(c.gateway.request_address(), "de-mail-zugang@gw1.stadt.de");
        for bad in ["\"gw2:0\"", "\"gw 2\"", "\"\"", "\"gw2:x\""] {
            let machine = write(&d, "m.toml", &format!("[gateway]\nhost = \"gw1\"\nfallback = [{bad}]\n"));
            let e = Config::load(&Paths { machine, user: d.join("none.toml") }).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("gateway.fallback"), "{bad}");
        }
        // A user name set by IT means the password sign-in.
        let machine = write(&d, "m.toml", "[gateway]\nhost = \"gw1\"\nusername = \"peter\"\n");
        let c = Config::load(&Paths { machine, user: d.join("none.toml") }).unwrap();
        assert_eq!((c.gateway.effective_auth(), c.gateway.login()), (AuthMode::Password, "peter".to_string()));
        let _ = std::fs::remove_dir_all(d);
    }

    /// Windows layers (tested here on their pure part): MSI values act like the machine
    /// file, Group Policy wins and locks; the user file cannot override a locked key.
    #[test]
    fn registry_layers_merge_and_lock() {
        use crate::registry::{to_layer, RegData};
        let d = tmp();
        let machine = write(&d, "m.toml", "[gateway]\nhost = \"file.stadt.de\"\nport = 465\n");
        let user = write(
            &d,
            "u.toml",
            "[gateway]\nhost = \"user.example\"\nport = 2525\nusername = \"me\"\n[relay]\nconnections = 4\n",
        );
        let mut cfg = Config::default();
        let msi = to_layer(
            r"HKLM\SOFTWARE\demail\Helper",
            &[
                ("gateway.host".into(), RegData::Str("msi.stadt.de".into())),
                ("relay.connections".into(), RegData::Dword(3)),
                ("lock.keys".into(), RegData::Str("relay.connections".into())),
            ],
            false,
        );
        let gpo = to_layer(
            r"HKLM\SOFTWARE\Policies\demail\Helper",
            &[("gateway.port".into(), RegData::Dword(1465)), ("gateway.tls".into(), RegData::Str("implicit".into()))],
            true,
        );
        // Same order as Config::load on Windows: file, MSI, policy, then the user file.
        let text = std::fs::read_to_string(&machine).unwrap();
        let src = Source { path: &machine, text: &text, user: false };
        parse_file(&src).unwrap().apply(&mut cfg, &src);
        apply_registry(&mut cfg, &msi).unwrap();
        apply_registry(&mut cfg, &gpo).unwrap();
        let text = std::fs::read_to_string(&user).unwrap();
        let src = Source { path: &user, text: &text, user: true };
        parse_file(&src).unwrap().apply(&mut cfg, &src);
        assert_eq!(cfg.gateway.host, "user.example");
        assert_eq!(cfg.gateway.port, 1465);
        assert_eq!(cfg.gateway.tls, TlsMode::Implicit);
        assert_eq!(cfg.gateway.username, "me");
        assert_eq!(cfg.relay.connections, 3);
        assert!(cfg.is_locked("gateway.port") && cfg.is_locked("relay.connections") && !cfg.is_locked("gateway.host"));
        assert_eq!(cfg.warnings.len(), 2, "{:?}", cfg.warnings);

        let bad = to_layer(
            r"HKLM\SOFTWARE\Policies\demail\Helper",
            &[("gateway.tls".into(), RegData::Str("none".into()))],
            true,
        );
        let e = apply_registry(&mut Config::default(), &bad).unwrap_err();
        assert_eq!(e.reason.code, "config.invalid_value");
        assert_eq!(e.key.as_deref(), Some("gateway.tls"));
        assert!(
            e.reason.message.starts_with(r"HKLM\SOFTWARE\Policies\demail\Helper, Schlüssel"),
            "{}",
            e.reason.message
        );
        let unknown = to_layer("HKLM", &[("gateway.hots".into(), RegData::Str("x".into()))], true);
        assert_eq!(apply_registry(&mut Config::default(), &unknown).unwrap_err().reason.code, "config.unknown_key");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn set_refuses_locked_and_keeps_comments() {
        let d = tmp();
        let machine = write(&d, "m.toml", "[lock]\nkeys = [\"gateway\"]\n");
        let user = write(&d, "u.toml", "# mine\n[log]\nlevel = \"debug\"\n");
        let paths = Paths { machine, user: user.clone() };
        let e = set_user_value(&paths, "gateway.host", "x.example").unwrap_err();
        assert_eq!(e.reason.code, "config.locked");
        let c = set_user_value(&paths, "relay.poll_interval", "5").unwrap();
        assert_eq!(c.relay.poll_interval, 5);
        assert!(std::fs::read_to_string(&user).unwrap().starts_with("# mine"));
        let e = set_user_value(&paths, "relay.poll_interval", "\"oft\"").unwrap_err();
        assert_eq!(e.reason.code, "config.invalid_value");
        let _ = std::fs::remove_dir_all(d);
    }
}
