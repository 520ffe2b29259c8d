//! The real `demail-gateway` binary for tests: its configuration file and a starter.

use crate::ports::wait_for_port;
use crate::process::ChildGuard;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A `demail-gateway` configuration for tests, written as the TOML the binary reads.
/// The gateway and helper suites both start the real binary from it ([`start_gateway`]).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub dir: PathBuf,
    /// Policy file name, relative to `dir`.
    pub policy: String,
    pub server_pki_cert: PathBuf,
    pub server_pki_key: PathBuf,
    pub out_port: u16,
    pub in_port: u16,
    pub lmtp_port: u16,
    /// Application accounts: `(name, environment variable with the password, its exact senders)`.
    /// People sign in through `identity` instead.
    pub users: Vec<(String, String, Vec<String>)>,
    /// `[identity]` and `[directory]` (e.g. [`crate::directory::TestDirectory::gateway_toml`]).
    pub identity: String,
    /// Inbound mutual TLS: the provider's client certificates must chain to this CA.
    pub inbound_client_ca: Option<PathBuf>,
    pub provider_port: u16,
    pub provider_ca: PathBuf,
    /// Client certificate and key for mutual TLS towards the provider.
    pub provider_client: Option<(PathBuf, PathBuf)>,
    pub provider_tls_name: Option<String>,
    pub provider_user: String,
    /// Environment variable with the provider secret.
    pub provider_secret_env: String,
    /// Extra TOML appended at the end (e.g. `[seal]`).
    pub extra: String,
}

impl GatewayConfig {
    pub fn to_toml(&self) -> String {
        let d = self.dir.display();
        let users: Vec<String> = self
            .users
            .iter()
            .map(|(n, env, senders)| {
                let s: Vec<String> = senders.iter().map(|a| format!("\"{a}\"")).collect();
                format!("{{ name = \"{n}\", password_env = \"{env}\", senders = [{}] }}", s.join(", "))
            })
            .collect();
        let client_ca =
            self.inbound_client_ca.as_ref().map(|c| format!("client_ca = \"{}\"\n", c.display())).unwrap_or_default();
        let client = self
            .provider_client
            .as_ref()
            .map(|(c, k)| format!("client_cert = \"{}\"\nclient_key = \"{}\"\n", c.display(), k.display()))
            .unwrap_or_default();
        let tls_name = self.provider_tls_name.as_ref().map(|n| format!("tls_name = \"{n}\"\n")).unwrap_or_default();
        format!(
            "[gateway]\nhostname = \"gw.musterstadt.de\"\nspool_dir = \"{d}/spool\"\narchive_db = \"{d}/archive/archive.sqlite\"\n\
             policy = \"{policy}\"\npostmaster = \"postmaster@musterstadt.de\"\n\n\
             [tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n\n\
             [outbound]\nlisten = \"127.0.0.1:{out}\"\ntls = \"starttls\"\nrequire_auth = true\nallowed_clients = [\"127.0.0.0/8\"]\n\
             max_message_size = 12000000\nusers = [{users}]\n\n\
             [inbound]\nlisten = \"127.0.0.1:{inp}\"\ntls = \"implicit\"\n{client_ca}allowed_clients = [\"127.0.0.1\"]\n\
             deliver = {{ protocol = \"lmtp\", host = \"127.0.0.1\", port = {lmtp}, tls = \"none\" }}\n\n\
             [[providers]]\nname = \"test-dmda\"\ndomains = [\"musterstadt.de-mail.de\"]\nhost = \"127.0.0.1\"\nport = {pport}\n\
             tls = \"implicit\"\n{tls_name}ca = \"{pca}\"\n{client}username = \"{puser}\"\nsecret_env = \"{penv}\"\n\n\
             [queue]\nretry_initial_secs = 1\nretry_max_secs = 2\ngive_up_after_secs = 3600\nscan_interval_ms = 100\n{identity}{extra}",
            policy = self.policy,
            cert = self.server_pki_cert.display(),
            key = self.server_pki_key.display(),
            out = self.out_port,
            users = users.join(", "),
            inp = self.in_port,
            lmtp = self.lmtp_port,
            pport = self.provider_port,
            pca = self.provider_ca.display(),
            puser = self.provider_user,
            penv = self.provider_secret_env,
            identity = self.identity,
            extra = self.extra,
        )
    }
}

/// Run `cmd` (a `demail-gateway … serve` command line with the secrets' environment),
/// logging to `log`, and wait until both listeners answer.
pub fn start_gateway(mut cmd: Command, out_port: u16, in_port: u16, log: &Path) -> Result<ChildGuard, String> {
    cmd.env("RUST_LOG", "info");
    let g = ChildGuard::spawn("demail-gateway", cmd, Some(log)).map_err(|e| e.to_string())?;
    if !wait_for_port(out_port, Duration::from_secs(20)) || !wait_for_port(in_port, Duration::from_secs(5)) {
        return Err(format!("gateway did not start: {}", fs::read_to_string(log).unwrap_or_default()));
    }
    Ok(g)
}
