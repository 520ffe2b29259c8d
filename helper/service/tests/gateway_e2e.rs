//! helper → our gateway (`demail-gateway`, real process) → provider stand-in.
//! TLS with test CAs on both hops; the caseworker signs in as themselves with their
//! directory password (slapd) from the keyring (kernel keyutils in a fresh session keyring).

mod common;

use common::*;
use demail_testkit::directory::{TestDirectory, BIND_PASSWORD, PERSON_PASSWORD};
use demail_testkit::{free_port, start_gateway, ChildGuard, Dovecot, GatewayConfig, Pki, TempDir};
use serde_json::json;
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

/// The caseworker's directory password (the helper keeps it in the keyring).
const HELPER_PASSWORD: &str = PERSON_PASSWORD;
const PROVIDER_USER: &str = "musterstadt-gw";
const PROVIDER_SECRET: &str = "token+pin-456";

const POLICY: &str = r#"
version = 1
[organisation]
name = "Stadt Musterstadt"
internal_domains = ["musterstadt.de"]
[rules]
mixed_addressing = "reject"
[authorization]
default = "deny"
[[authorization.senders]]
address = "peter.meier@musterstadt.de"
options = ["confirmation-of-dispatch", "confirmation-of-receipt", "private"]
cost_unit = "KST-3210"
[mapping]
catch_all = "sammelpostfach@musterstadt.de"
domains = [{ demail = "musterstadt.de-mail.de", email = "musterstadt.de" }]
"#;

struct Gateway {
    dir: TempDir,
    gw_pki: Pki,
    out_port: u16,
    /// The caseworker's login (Peter Meier's); unique, as the password lands in a kernel keyring.
    user: String,
    _directory: TestDirectory,
    provider: Sink,
    _dovecot: Dovecot,
    _gateway: ChildGuard,
}

impl Gateway {
    fn start() -> Gateway {
        let dir = demail_testkit::temp_dir();
        let d = dir.path();
        let gw_pki = Pki::generate(d, "gw");
        let provider_pki = Pki::generate(d, "provider");
        let dovecot = Dovecot::start(d).expect("dovecot");
        let provider = Sink::start(&provider_pki, true, Some((PROVIDER_USER, PROVIDER_SECRET)), None);
        std::fs::write(d.join("policy.toml"), POLICY).unwrap();
        let directory = TestDirectory::start(&d.join("slapd"), &gw_pki);
        let user = directory.person_named(&unique("peter"), "peter.meier@musterstadt.de");
        let gc = GatewayConfig {
            dir: d.to_path_buf(),
            policy: "policy.toml".into(),
            server_pki_cert: gw_pki.server_cert.clone(),
            server_pki_key: gw_pki.server_key.clone(),
            out_port: free_port(),
            in_port: free_port(),
            lmtp_port: dovecot.lmtp_port,
            users: vec![],
            identity: directory.gateway_toml("TEST_GW_DIRECTORY_PASSWORD"),
            inbound_client_ca: None,
            provider_port: provider.port,
            provider_ca: provider_pki.ca_cert.clone(),
            provider_client: None,
            provider_tls_name: Some("localhost".into()),
            provider_user: PROVIDER_USER.into(),
            provider_secret_env: "TEST_PROVIDER_SECRET".into(),
            extra: String::new(),
        };
        let config = d.join("gateway.toml");
        std::fs::write(&config, gc.to_toml()).unwrap();
        let mut cmd = Command::new(gateway_bin());
        cmd.arg("--config")
            .arg(&config)
            .arg("serve")
            .env("TEST_GW_DIRECTORY_PASSWORD", BIND_PASSWORD)
            .env("TEST_PROVIDER_SECRET", PROVIDER_SECRET);
        let g = start_gateway(cmd, gc.out_port, gc.in_port, &d.join("gateway.log")).unwrap_or_else(|e| panic!("{e}"));
        Gateway {
            dir,
            gw_pki,
            out_port: gc.out_port,
            user,
            _directory: directory,
            provider,
            _dovecot: dovecot,
            _gateway: g,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// A helper for this gateway; the password goes into a fresh session keyring first.
    fn helper(&self, policy: Option<&str>, user_cfg: &str) -> Helper {
        let cfg = gateway_login_config(self.out_port, &self.gw_pki.ca_cert, &self.user, "keyutils");
        let script = format!("printf '{HELPER_PASSWORD}\\n' | {{demail}} credentials set --password-stdin >&2 && exec {{demail}} serve --port 0");
        Helper::start_with(HelperOpts {
            machine: &cfg,
            user: user_cfg,
            policy,
            keyutils: Some(Keyutils { user: &self.user, script: &script }),
            ..Default::default()
        })
    }
}

#[test]
fn helper_to_gateway_to_provider() {
    let gw = Gateway::start();
    let h = gw.helper(Some(POLICY), "");
    let token = h.pair();
    let r = h.post("/v1/messages", Some(&token), &demail_message("Bescheid über Ihren Antrag"));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    let private_id = r.json()["result"]["private_id"].as_str().unwrap().to_string();
    let v = h.wait_message(&token, &id, Duration::from_secs(30), |v| v["status"] == "sent");
    assert_eq!(v["status"], "sent", "{v}\nhelper: {}\ngateway: {}", h.log_text(), gw.log());
    assert!(v["gateway_reply"].as_str().unwrap().contains("250"), "{v}");

    let got = gw.provider.wait_received(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "gateway: {}", gw.log());
    let text = String::from_utf8_lossy(&got[0].message).into_owned();
    // The gateway mapped the sender to its De-Mail address and kept the helper's headers.
    assert!(header_of(&text, "From").unwrap().contains("peter.meier@musterstadt.de-mail.de"), "{text}");
    assert_eq!(header_of(&text, "X-de-mail-private"), Some("yes"));
    assert_eq!(header_of(&text, "X-de-mail-confirmation-of-dispatch"), Some("yes"));
    assert_eq!(header_of(&text, "X-de-mail-private-id"), Some(private_id.as_str()));
    assert_eq!(got[0].rcpt_to, vec!["anna@buerger.de-mail.de"]);
}

#[test]
fn subject_tags_dialect_through_the_gateway() {
    let gw = Gateway::start();
    let h = gw.helper(Some(POLICY), "[gateway]\ndialect = \"subject-tags\"\n");
    let token = h.pair();
    let r = h.post("/v1/messages", Some(&token), &demail_message("Ihr Antrag"));
    assert_eq!(r.status, 202);
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        h.wait_message(&token, &id, Duration::from_secs(30), |v| v["status"] == "sent")["status"],
        "sent",
        "{}",
        gw.log()
    );
    let got = gw.provider.wait_received(1, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&got[0].message).into_owned();
    // The gateway turned the helper's tags back into headers and removed them.
    assert_eq!(header_of(&text, "Subject"), Some("Ihr Antrag"), "{text}");
    assert_eq!(header_of(&text, "X-de-mail-private"), Some("yes"));
    assert_eq!(header_of(&text, "X-de-mail-confirmation-of-dispatch"), Some("yes"));
}

#[test]
fn gateway_refusal_is_shown_with_its_reason() {
    let gw = Gateway::start();
    // The helper's own policy is the permissive default; the gateway's denies this sender.
    let h = gw.helper(None, "");
    let token = h.pair();
    let mut m = demail_message("Nicht freigeschaltet");
    m["from"] = json!("praktikant@musterstadt.de");
    let r = h.post("/v1/messages", Some(&token), &m);
    assert_eq!(r.status, 202);
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    let v = h.wait_message(&token, &id, Duration::from_secs(30), |v| v["status"] == "failed");
    assert_eq!(v["status"], "failed", "{v}\n{}", gw.log());
    assert_eq!(v["error"]["code"], "relay.rejected");
    let reply = v["gateway_reply"].as_str().unwrap();
    assert!(reply.contains("sender.not_authorized"), "the gateway's code reaches the user: {reply}");
    assert!(gw.provider.received().is_empty());
}

/// `kill -9` of the helper while 300 De-Mails go through the gateway: the provider gets
/// every Message-ID exactly once (the helper retries the one in flight with the same
/// Message-ID, and the gateway recognises it).
#[test]
fn kill9_exactly_once_at_the_provider() {
    let gw = Gateway::start();
    let mut h = gw.helper(Some(POLICY), "[relay]\nenabled = false\n");
    let token = h.pair();
    let n = 300;
    for i in 0..n {
        let mut m = demail_message(&format!("Serienbrief {i}"));
        m["message_id"] = json!(format!("<serie-{i}@musterstadt.de>"));
        assert_eq!(h.post("/v1/messages", Some(&token), &m).status, 202);
    }
    // Now let the relay run, and crash it in the middle.
    std::fs::write(h.dir.path().join("config/demail/helper.toml"), "[log]\nlevel = \"info\"\n").unwrap();
    h.restart();
    gw.provider.wait_received(60, Duration::from_secs(60));
    h.kill9();
    h.restart();
    let done = demail_testkit::wait_until(Duration::from_secs(180), || {
        let c = h.get("/v1/outbox?limit=1", Some(&token)).json()["result"]["counts"].clone();
        (c["sent"] == n).then_some(())
    });
    assert!(done.is_some(), "{}", h.get("/v1/outbox?limit=1", Some(&token)).json());
    let got = gw.provider.wait_received(n, Duration::from_secs(60));
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in &got {
        let text = String::from_utf8_lossy(&m.message).into_owned();
        *seen.entry(header_of(&text, "Message-ID").unwrap_or("").to_string()).or_default() += 1;
    }
    for i in 0..n {
        let k = format!("<serie-{i}@musterstadt.de>");
        assert_eq!(seen.get(&k).copied(), Some(1), "{k}: {:?}", seen.get(&k));
    }
    assert_eq!(got.len(), n);
}
