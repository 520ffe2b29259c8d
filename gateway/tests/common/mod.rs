//! Harness: the real gateway binary as a child process, a test CA, Dovecot LMTP as
//! the internal mail server, and a TLS+AUTH SMTP sink standing in for the provider.
#![allow(dead_code)]

pub mod cluster;

use demail_smtp::{Accepted, AuthResult, Authenticated, Envelope, Handler, Reject};
use demail_testkit::directory::{TestDirectory, BIND_PASSWORD};
use demail_testkit::{free_port, temp_dir, wait_for_port, wait_until, ChildGuard, Dovecot, Pki, TempDir};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, CertificateStore, Identity, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An application account (a Fachverfahren) bound to exact senders; people sign in as
/// themselves through the test directory ([`Harness::submit`]).
pub const HELPER_USER: &str = "fachverfahren";
pub const HELPER_PASSWORD: &str = "helper-pw-123";
/// The senders of [`HELPER_USER`], used by the raw-session tests (plaintext on loopback).
pub const APP_SENDERS: [&str; 2] = ["peter.meier@musterstadt.de", "buergermeister@musterstadt.de"];
pub use demail_testkit::directory::PERSON_PASSWORD;
pub const PROVIDER_USER: &str = "musterstadt-gw";
pub const PROVIDER_SECRET: &str = "token+pin-456";
/// The gateway account's second factor at the provider (TOTP, base32); a TEST secret.
/// A citizen's account at the provider simulator: password only, level "normal".
pub const CITIZEN_SECRET: &str = "buerger-pw-789";
pub const PROVIDER_TOTP: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

/// The current TOTP code for [`PROVIDER_TOTP`].
pub fn totp_code() -> String {
    demail_gateway::relay::totp(PROVIDER_TOTP).unwrap().generate_current().unwrap()
}

pub const POLICY: &str = r#"
version = 1
[organisation]
name = "Stadt Musterstadt"
internal_domains = ["musterstadt.de", "*.musterstadt.de"]
[rules]
mixed_addressing = "reject"
max_size = "10 MiB"
[authorization]
default = "deny"
default_options = ["confirmation-of-dispatch", "private"]
[[authorization.groups]]
name = "Bürgerbüro"
members = ["*@buergerbuero.musterstadt.de"]
options = ["confirmation-of-dispatch", "confirmation-of-receipt", "private"]
cost_unit = "KST-3210"
[[authorization.senders]]
address = "peter.meier@musterstadt.de"
options = ["confirmation-of-dispatch", "private"]
cost_unit = "KST-3210"
[[authorization.senders]]
address = "recht@musterstadt.de"
options = ["confirmation-of-dispatch", "confirmation-of-receipt", "confirmation-of-retrieve", "authoritative", "private"]
cost_unit = "KST-3000"
[mapping]
catch_all = "sammelpostfach@musterstadt.de"
domains = [{ demail = "musterstadt.de-mail.de", email = "musterstadt.de" }]
overrides = [{ demail = "poststelle@musterstadt.de-mail.de", email = "buergerbuero@musterstadt.de" }]
"#;

/// What the provider sink received.
#[derive(Default)]
pub struct Received {
    pub msgs: Mutex<Vec<(Envelope, Vec<u8>)>>,
}

struct ProviderSink(Arc<Received>);

impl Handler for ProviderSink {
    async fn authenticate(&self, user: &str, password: &str) -> AuthResult {
        // With or without the TOTP code the gateway appends when it has a second factor.
        let rest = password.strip_prefix(PROVIDER_SECRET);
        if user == PROVIDER_USER
            && rest.is_some_and(|r| r.is_empty() || (r.len() == 6 && r.bytes().all(|b| b.is_ascii_digit())))
        {
            AuthResult::Accepted(Authenticated { user: user.into(), method: "password".into(), display: None })
        } else {
            AuthResult::Refused
        }
    }
    fn rcpt_to(&self, _env: &Envelope, rcpt: &str) -> Result<(), Reject> {
        if rcpt.starts_with("unbekannt@") {
            return Err(Reject::new(550, "5.1.1", "Empfänger unbekannt.", "Recipient unknown."));
        }
        Ok(())
    }
    async fn deliver(&self, env: &Envelope, msg: Vec<u8>) -> Result<Accepted, Reject> {
        let mut g = self.0.msgs.lock().unwrap();
        g.push((env.clone(), msg));
        Ok(Accepted { id: format!("P{}", g.len()) })
    }
}

pub struct Harness {
    pub dir: TempDir,
    pub gw_pki: Pki,
    pub provider_pki: Pki,
    pub dovecot: Dovecot,
    /// slapd: the people who sign in and the De-Mail group.
    pub directory: TestDirectory,
    pub out_port: u16,
    pub in_port: u16,
    pub provider_port: u16,
    pub config: PathBuf,
    pub gateway: Option<ChildGuard>,
    pub provider: Arc<Received>,
    pub rt: tokio::runtime::Runtime,
    sink_task: Option<tokio::task::JoinHandle<()>>,
    /// Run the gateway in a fresh kernel session keyring (`keyctl session`) with a
    /// seal key generated there first; its public line lands in `seal-public.txt`.
    pub sealed: bool,
    /// Further environment of the gateway process (e.g. a test-only fault hook).
    pub env: Vec<(String, String)>,
    /// The simulator's signing certificate and key, once it was started signing.
    pub signer: Option<demail_testkit::Issued>,
}

impl Harness {
    /// Everything set up; the gateway is started, the provider sink is not.
    pub fn new() -> Harness {
        Harness::with_policy(POLICY)
    }

    pub fn with_policy(policy: &str) -> Harness {
        Harness::custom(policy, |c| c)
    }

    /// A policy and an edit applied to the generated gateway configuration text.
    pub fn custom(policy: &str, edit: impl FnOnce(String) -> String) -> Harness {
        Harness::build(policy, edit, false)
    }

    /// With `[seal]` configured; the key is generated in the gateway's session keyring.
    pub fn with_seal() -> Harness {
        Harness::build(POLICY, |c| c, true)
    }

    pub fn build(policy: &str, edit: impl FnOnce(String) -> String, sealed: bool) -> Harness {
        Harness::build_with(policy, edit, sealed, None)
    }

    /// As [`Harness::build`]; `sieve`: a Sieve script Dovecot runs before delivery.
    pub fn build_with(policy: &str, edit: impl FnOnce(String) -> String, sealed: bool, sieve: Option<&str>) -> Harness {
        // Every process started here (also by the tests' own commands) finds the second factor.
        std::env::set_var("TEST_PROVIDER_TOTP", PROVIDER_TOTP);
        let dir = temp_dir();
        let gw_pki = Pki::generate(dir.path(), "gw");
        let provider_pki = Pki::generate(dir.path(), "provider");
        let dovecot = Dovecot::start_with_sieve(dir.path(), sieve).expect("dovecot");
        // People sign in with their directory password; slapd uses the gateway's test CA.
        let directory = TestDirectory::start(&dir.path().join("slapd"), &gw_pki);
        let (out_port, in_port, provider_port) = (free_port(), free_port(), free_port());
        std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
        let config = dir.path().join("gateway.toml");
        let seal_cfg = if sealed {
            format!("\n[seal]\nkid = \"gw-test\"\nkey_keyring = \"demail-gw-test-{out_port}/seal-key\"\n")
        } else {
            String::new()
        };
        let gc = demail_testkit::GatewayConfig {
            dir: dir.path().to_path_buf(),
            policy: "policy.toml".into(),
            server_pki_cert: gw_pki.server_cert.clone(),
            server_pki_key: gw_pki.server_key.clone(),
            out_port,
            in_port,
            lmtp_port: dovecot.lmtp_port,
            users: vec![(
                HELPER_USER.into(),
                "TEST_GW_HELPER_PASSWORD".into(),
                APP_SENDERS.iter().map(|s| s.to_string()).collect(),
            )],
            identity: directory.gateway_toml("TEST_GW_DIRECTORY_PASSWORD"),
            inbound_client_ca: Some(provider_pki.ca_cert.clone()),
            provider_port,
            provider_ca: provider_pki.ca_cert.clone(),
            provider_client: Some((provider_pki.client_cert.clone(), provider_pki.client_key.clone())),
            provider_tls_name: None,
            provider_user: PROVIDER_USER.into(),
            provider_secret_env: "TEST_PROVIDER_SECRET".into(),
            extra: seal_cfg,
        };
        // The provider login at level "hoch": secret plus TOTP code.
        let toml = gc.to_toml().replacen(
            "secret_env = \"TEST_PROVIDER_SECRET\"\n",
            "secret_env = \"TEST_PROVIDER_SECRET\"\ntotp_secret_env = \"TEST_PROVIDER_TOTP\"\n",
            1,
        );
        std::fs::write(&config, edit(toml)).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let mut h = Harness {
            dir,
            gw_pki,
            provider_pki,
            dovecot,
            directory,
            out_port,
            in_port,
            provider_port,
            config,
            gateway: None,
            provider: Arc::new(Received::default()),
            rt,
            sink_task: None,
            sealed,
            env: Vec::new(),
            signer: None,
        };
        h.start_gateway();
        h
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_demail-gateway"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("TEST_GW_HELPER_PASSWORD", HELPER_PASSWORD)
            .env("TEST_GW_DIRECTORY_PASSWORD", BIND_PASSWORD)
            .env("TEST_PROVIDER_SECRET", PROVIDER_SECRET)
            .env("TEST_PROVIDER_TOTP", PROVIDER_TOTP)
            .env("TEST_CITIZEN_SECRET", CITIZEN_SECRET)
            .output()
            .unwrap()
    }

    pub fn start_gateway(&mut self) {
        let gw = env!("CARGO_BIN_EXE_demail-gateway");
        let mut cmd = if self.sealed {
            // The private key exists only in this session keyring, never in a file.
            let mut c = Command::new("keyctl");
            c.args(["session", "-", "sh", "-c"])
                .arg(r#""$GW" --config "$CFG" secret generate seal-key > "$PUB" && exec "$GW" --config "$CFG" serve"#)
                .env("GW", gw)
                .env("CFG", &self.config)
                .env("PUB", self.dir.path().join("seal-public.txt"));
            c
        } else {
            let mut c = Command::new(gw);
            c.arg("--config").arg(&self.config).arg("serve");
            c
        };
        cmd.env("TEST_GW_HELPER_PASSWORD", HELPER_PASSWORD)
            .env("TEST_GW_DIRECTORY_PASSWORD", BIND_PASSWORD)
            .env("TEST_PROVIDER_SECRET", PROVIDER_SECRET)
            .env("TEST_PROVIDER_TOTP", PROVIDER_TOTP)
            .env("TEST_CITIZEN_SECRET", CITIZEN_SECRET);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let g = demail_testkit::start_gateway(cmd, self.out_port, self.in_port, &self.dir.path().join("gateway.log"))
            .unwrap_or_else(|e| panic!("{e}"));
        self.gateway = Some(g);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// The provider: implicit TLS, mutual TLS, AUTH, on its fixed port.
    pub fn start_provider(&mut self) {
        let pki = &self.provider_pki;
        let cfg = demail_smtp::Config {
            tls: Some(demail_smtp::tls::server_config(&pki.server_cert, &pki.server_key, Some(&pki.ca_cert)).unwrap()),
            implicit_tls: true,
            require_tls: true,
            offer_auth: true,
            require_auth: true,
            max_message_size: 64 * 1024 * 1024,
            ..demail_smtp::Config::default()
        };
        let port = self.provider_port;
        let recv = self.provider.clone();
        let task = self.rt.spawn(async move {
            let l = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
            let _ = demail_smtp::serve(l, Arc::new(cfg), Arc::new(ProviderSink(recv))).await;
        });
        self.sink_task = Some(task);
        assert!(wait_for_port(port, Duration::from_secs(5)));
    }

    /// The provider goes away (its port closes); the gateway's next attempts fail for now.
    #[allow(dead_code)]
    pub fn stop_provider(&mut self) {
        if let Some(t) = self.sink_task.take() {
            t.abort();
        }
    }

    /// The provider simulator binary instead of the in-test sink, signing with RSA
    /// (`sha256/rsa`) under a test qualified CA (`qca/`).
    pub fn start_sim(&mut self) -> ChildGuard {
        self.start_sim_signing("sha256/rsa", demail_testkit::KeyType::Rsa2048)
    }

    /// The test qualified CA the simulator's signing certificates come from.
    pub fn qca(&self) -> demail_testkit::QualifiedCa {
        let dir = self.dir.path().join("qca");
        if !dir.join("qca-ca.pem").exists() {
            std::fs::create_dir_all(&dir).unwrap();
            return demail_testkit::QualifiedCa::generate(&dir, "qca", demail_testkit::KeyType::P256);
        }
        demail_testkit::QualifiedCa::existing(&dir, "qca")
    }

    /// The simulator with `algorithm` (`sha256`, `sha384/ec-dsa`, …) and a signing key of `key` type.
    pub fn start_sim_signing(&mut self, algorithm: &str, key: demail_testkit::KeyType) -> ChildGuard {
        let signing = if algorithm.contains('/') {
            let signer = self.qca().issue("DMDA Simulator Signatur", key, 365);
            let s = format!(
                "[signing]\nalgorithm = \"{algorithm}\"\nkey = \"{}\"\ncert = \"{}\"\n",
                signer.key.display(),
                signer.cert.display()
            );
            self.signer = Some(signer);
            s
        } else {
            format!("[signing]\nalgorithm = \"{algorithm}\"\n")
        };
        let d = self.dir.path();
        let cfg = d.join("sim.toml");
        let p = &self.provider_pki;
        std::fs::write(
            &cfg,
            format!(
                r#"
hostname = "dmda-sim.de-mail.de"
listen = "127.0.0.1:{port}"
tls = {{ cert = "{cert}", key = "{key}" }}
client_ca = "{ca}"
store_dir = "{store}"
username = "{PROVIDER_USER}"
secret_env = "TEST_PROVIDER_SECRET"
totp_secret_env = "TEST_PROVIDER_TOTP"
normal_accounts = [{{ username = "buerger", secret_env = "TEST_CITIZEN_SECRET" }}]
unknown_local_prefixes = ["unbekannt"]
refuse_local_prefixes = ["abgelehnt"]
{signing}[gateway]
host = "127.0.0.1"
port = {inp}
ca = "{gwca}"
client_cert = "{cc}"
client_key = "{ck}"
domains = ["musterstadt.de-mail.de"]
"#,
                port = self.provider_port,
                cert = p.server_cert.display(),
                key = p.server_key.display(),
                ca = p.ca_cert.display(),
                store = d.join("sim-store").display(),
                inp = self.in_port,
                gwca = self.gw_pki.ca_cert.display(),
                cc = p.client_cert.display(),
                ck = p.client_key.display(),
            ),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_demail-provider-sim"));
        cmd.arg("--config")
            .arg(&cfg)
            .arg("serve")
            .env("TEST_PROVIDER_SECRET", PROVIDER_SECRET)
            .env("TEST_PROVIDER_TOTP", PROVIDER_TOTP)
            .env("TEST_CITIZEN_SECRET", CITIZEN_SECRET);
        let g = ChildGuard::spawn("provider-sim", cmd, Some(&d.join("sim.log"))).unwrap();
        assert!(wait_for_port(self.provider_port, Duration::from_secs(20)), "sim did not start");
        g
    }

    /// A further simulator process (`name.toml`, `name-store`, `name.log`) on its own
    /// port, with the same PKI and credentials, for gateways with several providers.
    pub fn start_sim_named(&self, name: &str, port: u16) -> ChildGuard {
        let d = self.dir.path();
        let text = std::fs::read_to_string(d.join("sim.toml"))
            .expect("start_sim first: its config is the template")
            .replace(&format!("127.0.0.1:{}", self.provider_port), &format!("127.0.0.1:{port}"))
            .replace(
                &d.join("sim-store").display().to_string(),
                &d.join(format!("{name}-store")).display().to_string(),
            );
        let cfg = d.join(format!("{name}.toml"));
        std::fs::write(&cfg, text).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_demail-provider-sim"));
        cmd.arg("--config")
            .arg(&cfg)
            .arg("serve")
            .env("TEST_PROVIDER_SECRET", PROVIDER_SECRET)
            .env("TEST_PROVIDER_TOTP", PROVIDER_TOTP)
            .env("TEST_CITIZEN_SECRET", CITIZEN_SECRET);
        let g = ChildGuard::spawn(name, cmd, Some(&d.join(format!("{name}.log")))).unwrap();
        assert!(wait_for_port(port, Duration::from_secs(20)), "{name} did not start");
        g
    }

    /// Messages a simulator stored under `store` (`*.eml`).
    pub fn stored_in(&self, store: &str) -> Vec<Vec<u8>> {
        let mut v: Vec<_> = std::fs::read_dir(self.dir.path().join(store))
            .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "eml")).collect())
            .unwrap_or_default();
        v.sort();
        v.iter().filter_map(|p| std::fs::read(p).ok()).collect()
    }

    /// Queue entries (`queue list`) as JSON.
    pub fn queue_entries(&self) -> Vec<serde_json::Value> {
        let out = self.cli(&["queue", "list"]);
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    pub fn sim_cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_demail-provider-sim"))
            .arg("--config")
            .arg(self.dir.path().join("sim.toml"))
            .args(args)
            .env("TEST_PROVIDER_SECRET", PROVIDER_SECRET)
            .env("TEST_PROVIDER_TOTP", PROVIDER_TOTP)
            .env("TEST_CITIZEN_SECRET", CITIZEN_SECRET)
            .output()
            .unwrap()
    }

    pub fn sim_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sim.log")).unwrap_or_default()
    }

    /// Archive entries as exported (manifest.json).
    pub fn archive_entries(&self) -> Vec<serde_json::Value> {
        let out = self.dir.path().join(format!("export-{}", free_port()));
        let o = self.cli(&["archive", "export", "--out", out.to_str().unwrap()]);
        assert!(o.status.success());
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        m["entries"].as_array().unwrap().clone()
    }

    pub fn provider_msgs(&self) -> Vec<(Envelope, Vec<u8>)> {
        self.provider.msgs.lock().unwrap().clone()
    }

    pub fn wait_provider(&self, n: usize, secs: u64) -> Vec<(Envelope, Vec<u8>)> {
        wait_until(Duration::from_secs(secs), || {
            let m = self.provider_msgs();
            (m.len() >= n).then_some(m)
        })
        .unwrap_or_else(|| panic!("provider got {} of {n}; log:\n{}", self.provider_msgs().len(), self.log()))
    }

    fn tls_params(&self, ca_pem: &str, client: Option<(&Path, &Path)>) -> TlsParameters {
        let mut b = TlsParameters::builder("localhost".into())
            .certificate_store(CertificateStore::None)
            .add_root_certificate(Certificate::from_pem(ca_pem.as_bytes()).unwrap());
        if let Some((c, k)) = client {
            b = b.identify_with(identity(c, k));
        }
        b.build_rustls().unwrap()
    }

    /// Submit like a helper: STARTTLS (verified against the gateway CA) and AUTH as the
    /// person who owns `from` (created in the test directory, with the De-Mail right).
    pub fn submit(&self, from: &str, to: &[&str], raw: &[u8]) -> Result<String, String> {
        let login = self.directory.person(from);
        self.submit_with(&login, PERSON_PASSWORD, from, to, raw)
    }

    /// [`Harness::submit`] with an application account (its password is [`HELPER_PASSWORD`]).
    pub fn submit_as(&self, user: &str, from: &str, to: &[&str], raw: &[u8]) -> Result<String, String> {
        self.submit_with(user, HELPER_PASSWORD, from, to, raw)
    }

    pub fn submit_with(
        &self,
        user: &str,
        password: &str,
        from: &str,
        to: &[&str],
        raw: &[u8],
    ) -> Result<String, String> {
        self.submit_at(self.out_port, user, password, from, to, raw)
    }

    /// [`Harness::submit_with`] to the outbound listener on `port` (another gateway node).
    pub fn submit_at(
        &self,
        port: u16,
        user: &str,
        password: &str,
        from: &str,
        to: &[&str],
        raw: &[u8],
    ) -> Result<String, String> {
        let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(port)
            .tls(Tls::Required(self.tls_params(&self.gw_pki.ca_pem, None)))
            .credentials(Credentials::new(user.into(), password.into()))
            .authentication(vec![Mechanism::Plain])
            .timeout(Some(Duration::from_secs(30)))
            .build();
        let env = lettre::address::Envelope::new(
            Some(from.parse().unwrap()),
            to.iter().map(|t| t.parse().unwrap()).collect(),
        )
        .unwrap();
        self.rt
            .block_on(t.send_raw(&env, raw))
            .map(|r| format!("{} {}", r.code(), r.message().collect::<Vec<_>>().join(" ")))
            .map_err(|e| format!("{e:?}"))
    }

    /// Submit straight to the provider (simulator) like the gateway does: implicit TLS,
    /// client certificate, AUTH with secret and TOTP code. Returns the reply text (it
    /// names the stored id).
    pub fn submit_to_provider(&self, from: &str, to: &[&str], raw: &[u8]) -> Result<String, String> {
        self.submit_to_provider_as(PROVIDER_USER, &format!("{PROVIDER_SECRET}{}", totp_code()), from, to, raw)
    }

    /// [`Harness::submit_to_provider`] with other credentials.
    pub fn submit_to_provider_as(
        &self,
        user: &str,
        password: &str,
        from: &str,
        to: &[&str],
        raw: &[u8],
    ) -> Result<String, String> {
        let pki = &self.provider_pki;
        let ca = std::fs::read_to_string(&pki.ca_cert).unwrap();
        let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(self.provider_port)
            .tls(Tls::Wrapper(self.tls_params(&ca, Some((&pki.client_cert, &pki.client_key)))))
            .credentials(Credentials::new(user.into(), password.into()))
            .authentication(vec![Mechanism::Plain])
            .timeout(Some(Duration::from_secs(30)))
            .build();
        let env = lettre::address::Envelope::new(
            Some(from.parse().unwrap()),
            to.iter().map(|t| t.parse().unwrap()).collect(),
        )
        .unwrap();
        self.rt
            .block_on(t.send_raw(&env, raw))
            .map(|r| r.message().collect::<Vec<_>>().join(" "))
            .map_err(|e| format!("{e:?}"))
    }

    /// Messages the simulator stored (`store_dir/*.eml`).
    pub fn sim_stored(&self) -> Vec<Vec<u8>> {
        self.stored_in("sim-store")
    }

    /// Deliver like the provider: implicit TLS with its client certificate.
    pub fn inject(&self, from: &str, to: &[&str], raw: &[u8]) -> Result<String, String> {
        let pki = &self.provider_pki;
        let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(self.in_port)
            .tls(Tls::Wrapper(self.tls_params(&self.gw_pki.ca_pem, Some((&pki.client_cert, &pki.client_key)))))
            .timeout(Some(Duration::from_secs(30)))
            .build();
        let env = lettre::address::Envelope::new(
            Some(from.parse().unwrap()),
            to.iter().map(|t| t.parse().unwrap()).collect(),
        )
        .unwrap();
        self.rt.block_on(t.send_raw(&env, raw)).map(|r| r.code().to_string()).map_err(|e| format!("{e:?}"))
    }

    pub fn queue_len(&self) -> usize {
        let out = self.cli(&["queue", "list"]);
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count()
    }

    /// Files in the spool's queue directory (messages and their state).
    pub fn spool_files(&self) -> Vec<String> {
        std::fs::read_dir(self.path().join("spool/queue"))
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
            .unwrap_or_default()
    }

    /// One number from the archive database (a second connection, as an auditor's).
    pub fn archive_count(&self, sql: &str) -> i64 {
        let c = rusqlite::Connection::open(self.path().join("archive/archive.sqlite")).unwrap();
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

/// The outbound listener without TLS (loopback only, which is the only place the
/// gateway allows that) and a short command timeout, so raw bytes can be thrown at the
/// real binary. Raw sessions sign in with [`auth_plain`] as the application account.
pub fn plain_harness(policy: &str) -> Harness {
    Harness::custom(policy, |c| {
        c.replace(
            "tls = \"starttls\"\nrequire_auth = true",
            "tls = \"none\"\nrequire_auth = true\ncommand_timeout_secs = 2",
        )
    })
}

/// `AUTH PLAIN` for [`HELPER_USER`], as a raw command line.
pub fn auth_plain() -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(format!("\0{HELPER_USER}\0{HELPER_PASSWORD}"));
    format!("AUTH PLAIN {b}\r\n")
}

/// Write `script` from one thread while another reads every reply (a server that hangs
/// up mid-burst must not make us lose the replies it sent before).
/// The script is sent after an `EHLO` and [`auth_plain`]: the gateway takes nothing
/// from a client that did not sign in.
pub fn raw_session(port: u16, script: &[u8], read_for: Duration) -> String {
    use std::io::{Read, Write};
    let mut signed_in = format!("EHLO raw\r\n{}", auth_plain()).into_bytes();
    signed_in.extend_from_slice(script);
    let script = signed_in;
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(read_for)).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&script);
    });
    let mut r = s;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let _ = writer.join();
    String::from_utf8_lossy(&out).to_string()
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(t) = self.sink_task.take() {
            t.abort();
        }
        if let Some(mut g) = self.gateway.take() {
            g.terminate(Duration::from_secs(3));
        }
        if self.sealed {
            // The keyring crate also links the key into the user's persistent keyring; take it out.
            let _ = Command::new("keyctl")
                .args(["session", "-", "sh", "-c"])
                .arg(r#"p=$(keyctl get_persistent @s) && k=$(keyctl search "$p" user "keyring-rs:seal-key@demail-gw-test-$PORT") && keyctl unlink "$k" "$p""#)
                .env("PORT", self.out_port.to_string())
                .output();
        }
    }
}

/// lettre's rustls backend takes the certificate as DER despite the name `from_pem`.
pub fn identity(cert: &Path, key: &Path) -> Identity {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_file(cert).unwrap();
    Identity::from_pem(der.as_ref(), &std::fs::read(key).unwrap()).unwrap()
}

/// A small test message with a unique Message-ID; `extra` is further header lines.
pub fn msg(from: &str, to: &str, subject: &str, extra: &str) -> Vec<u8> {
    format!(
        "From: Peter Meier <{from}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@test>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0100\r\n{extra}\r\nGuten Tag,\r\n.hier eine Zeile mit Punkt.\r\n",
        demail_testkit::free_port()
    )
    .into_bytes()
}

/// The value of a header (first occurrence, unfolded) in raw bytes, via mail-parser.
pub fn header(raw: &[u8], name: &str) -> Option<String> {
    let m = mail_parser::MessageParser::default().parse(raw)?;
    m.headers().iter().find(|h| h.name.as_str().eq_ignore_ascii_case(name)).map(|h| {
        String::from_utf8_lossy(&raw[h.offset_start as usize..h.offset_end as usize])
            .replace("\r\n", "")
            .trim()
            .to_string()
    })
}

/// The organisation's mail server as Postfix in front of Dovecot: it refuses one mailbox
/// for good (550) and finds another full (452), as an Exchange or Postfix would.
pub fn refusing_mail_server(h: &Harness) -> demail_testkit::Postfix {
    let lmtp = h.dovecot.lmtp_port;
    let main_cf = format!(
        "default_transport = lmtp:inet:127.0.0.1:{lmtp}\nrelay_transport = lmtp:inet:127.0.0.1:{lmtp}\n\
         smtpd_recipient_restrictions = check_recipient_access inline:{{ {{ unbekannt@musterstadt.de = 550 5.1.1 Unbekannter Empfaenger }}, \
         {{ voll@musterstadt.de = 452 4.2.2 Postfach voll }}, {{ sammelvoll@musterstadt.de = 550 5.2.1 Postfach gesperrt }} }}, permit_mynetworks, reject\n"
    );
    demail_testkit::Postfix::start(h.path(), &main_cf).expect("postfix")
}

/// Deliver inbound mail through `pf` instead of straight to Dovecot, then restart.
pub fn deliver_through(h: &mut Harness, pf: &demail_testkit::Postfix, extra: &str) {
    h.gateway = None;
    through(&h.config, h.dovecot.lmtp_port, pf, extra);
    h.start_gateway();
}

/// Edit a gateway configuration so that inbound mail goes through `pf`, with `extra`
/// under `[inbound]` and queued messages warned about after 2 s.
pub fn through(config: &Path, lmtp: u16, pf: &demail_testkit::Postfix, extra: &str) {
    let cfg = std::fs::read_to_string(config).unwrap();
    let cfg = cfg
        .replace(
            &format!("deliver = {{ protocol = \"lmtp\", host = \"127.0.0.1\", port = {lmtp}, tls = \"none\" }}"),
            &format!(
                "deliver = {{ protocol = \"smtp\", host = \"127.0.0.1\", port = {}, tls = \"none\" }}\n{extra}",
                pf.port
            ),
        )
        .replace("[queue]\n", "[queue]\nwarn_after_secs = 2\n");
    std::fs::write(config, cfg).unwrap();
}

/// A plain HTTP/1.0 GET: (status, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}
