//! helper → our gateway (`demail-gateway`, real process) → provider stand-in.
//! TLS with test CAs on both hops; the caseworker signs in as themselves with their
//! directory password (slapd) from the keyring (kernel keyutils in a fresh session keyring),
//! or with their Kerberos ticket from an MIT KDC (no password anywhere on the desk).

mod common;

use common::*;
use demail_testkit::directory::{TestDirectory, BIND_PASSWORD, PERSON_PASSWORD};
use demail_testkit::kdc::Kdc;
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
[[authorization.senders]]
address = "anna.schulz@musterstadt.de"
options = ["confirmation-of-dispatch", "private"]
cost_unit = "KST-3211"
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
    kdc: Option<Kdc>,
}

const REALM: &str = "MUSTERSTADT.TEST";
const REQUEST_ADDRESS: &str = "de-mail-zugang@gw.musterstadt.de";

impl Gateway {
    fn start() -> Gateway {
        Gateway::start_realm(false)
    }

    /// With a Kerberos realm: the gateway has its key (`smtp/localhost`); Peter (De-Mail
    /// right) and Anna (none yet) have principals and directory entries.
    fn start_realm(kerberos: bool) -> Gateway {
        let dir = demail_testkit::temp_dir();
        let d = dir.path();
        let kdc = kerberos.then(|| {
            let kdc = Kdc::start(&d.join("kdc"), REALM).unwrap_or_else(|e| panic!("{e}"));
            kdc.add_service("smtp/localhost", &d.join("gateway.keytab")).unwrap();
            for u in ["peter", "anna"] {
                kdc.add_user(u, &format!("{u}-Passwort-1")).unwrap();
            }
            kdc
        });
        let gw_pki = Pki::generate(d, "gw");
        let provider_pki = Pki::generate(d, "provider");
        let dovecot = Dovecot::start(d).expect("dovecot");
        let provider = Sink::start(&provider_pki, true, Some((PROVIDER_USER, PROVIDER_SECRET)), None);
        std::fs::write(d.join("policy.toml"), POLICY).unwrap();
        let directory = TestDirectory::start(&d.join("slapd"), &gw_pki);
        let user = match &kdc {
            Some(_) => {
                directory.kerberos_person("peter", "peter.meier@musterstadt.de", "peter@MUSTERSTADT.TEST", true);
                directory.kerberos_person("anna", "anna.schulz@musterstadt.de", "anna@MUSTERSTADT.TEST", false);
                "peter".to_string()
            }
            None => directory.person_named(&unique("peter"), "peter.meier@musterstadt.de"),
        };
        let identity = match &kdc {
            Some(k) => {
                directory.gateway_toml_kerberos("TEST_GW_DIRECTORY_PASSWORD", &d.join("gateway.keytab"), &k.realm)
            }
            None => directory.gateway_toml("TEST_GW_DIRECTORY_PASSWORD"),
        };
        let gc = GatewayConfig {
            dir: d.to_path_buf(),
            policy: "policy.toml".into(),
            server_pki_cert: gw_pki.server_cert.clone(),
            server_pki_key: gw_pki.server_key.clone(),
            out_port: free_port(),
            in_port: free_port(),
            lmtp_port: dovecot.lmtp_port,
            users: vec![],
            identity,
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
        if let Some(k) = &kdc {
            cmd.envs(k.env());
        }
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
            kdc,
        }
    }

    /// The person logs in at the desk: a ticket in their own credential cache.
    fn kinit(&self, who: &str) -> String {
        let kdc = self.kdc.as_ref().expect("realm");
        let cc = self.dir.path().join(format!("cc-{who}"));
        kdc.kinit(&format!("{who}@{REALM}"), &format!("{who}-Passwort-1"), &cc).unwrap()
    }

    /// A helper on a desk where `ccache` holds (or will hold) the person's ticket; no user
    /// name, no password, no keyring entry: `gateway.auth` is the default `auto`.
    fn kerberos_helper(&self, ccache: &str, user_cfg: &str) -> Helper {
        let kdc = self.kdc.as_ref().expect("realm");
        let cfg = gateway_config(self.out_port, &self.gw_pki.ca_cert, "starttls", "")
            .replace("timeout = 10\n", &format!("timeout = 10\nrequest_address = \"{REQUEST_ADDRESS}\"\n"));
        let conf = kdc.krb5_conf.display().to_string();
        let env = [("KRB5_CONFIG", conf.as_str()), ("KRB5CCNAME", ccache)];
        Helper::start_with(HelperOpts {
            machine: &cfg,
            user: user_cfg,
            policy: Some(POLICY),
            env: &env,
            ..Default::default()
        })
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(gateway_bin())
            .arg("--config")
            .arg(self.dir.path().join("gateway.toml"))
            .args(args)
            .env("TEST_GW_DIRECTORY_PASSWORD", BIND_PASSWORD)
            .output()
            .unwrap()
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

/// Kerberos single sign-on from the desk: Peter sends as himself with his ticket (no
/// password anywhere), the gateway names him, and a sender that is not his is refused for
/// good with the gateway's reason. Without a ticket the message waits with "Bitte melden
/// Sie sich neu an" and goes out once he has one again.
#[test]
fn kerberos_caseworker_sends_as_himself_and_waits_for_a_new_ticket() {
    let gw = Gateway::start_realm(true);
    let cc = gw.kinit("peter");
    let mut h = gw.kerberos_helper(&cc, "");
    let (rc, who, err) = h.cli(&["credentials", "test"], None);
    assert_eq!(rc, 0, "{who} {err}\n{}", gw.log());
    assert_eq!(who["signed_in"]["method"], "kerberos", "{who}");
    assert_eq!(who["signed_in"]["person"], "Peter Meier", "{who}");
    assert!(who["message"].as_str().unwrap().contains("angemeldet als Peter Meier (Kerberos)"), "{who}");

    let token = h.pair();
    let r = h.post("/v1/messages", Some(&token), &demail_message("Bescheid mit Kerberos"));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    let v = h.wait_message(&token, &id, Duration::from_secs(30), |v| v["status"] == "sent");
    assert_eq!(v["status"], "sent", "{v}\nhelper: {}\ngateway: {}", h.log_text(), gw.log());
    // The archive names the person and how they signed in.
    let out = gw.dir.path().join("export");
    assert!(gw.cli(&["archive", "export", "--out", out.to_str().unwrap()]).status.success());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let actors: Vec<&str> =
        manifest["entries"].as_array().unwrap().iter().filter_map(|e| e["actor"].as_str()).collect();
    assert_eq!(actors, vec!["kerberos:peter@MUSTERSTADT.TEST"], "{manifest}");

    // As someone else: a permanent refusal the add-in shows, never a silent loss.
    let mut m = demail_message("Im Namen von Anna");
    m["from"] = json!("Anna Schulz <anna.schulz@musterstadt.de>");
    let id = h.post("/v1/messages", Some(&token), &m).json()["result"]["id"].as_str().unwrap().to_string();
    let v = h.wait_message(&token, &id, Duration::from_secs(30), |v| v["status"] == "failed");
    assert_eq!(v["status"], "failed", "{v}\n{}", gw.log());
    assert_eq!(v["error"]["code"], "relay.rejected", "{v}");
    assert!(v["gateway_reply"].as_str().unwrap().contains("550"), "{v}");
    assert_eq!(gw.provider.wait_received(1, Duration::from_secs(20)).len(), 1);

    // Logged off: no ticket. The next session has nobody to sign in.
    std::fs::remove_file(cc.trim_start_matches("FILE:")).unwrap();
    h.restart();
    let (rc, none, err) = h.cli(&["credentials", "test"], None);
    assert!(rc == 0 && none["authenticated"] == false && none["signed_in"].is_null(), "{none} {err}");
    let token = h.pair();
    let id = h.post("/v1/messages", Some(&token), &demail_message("Nach dem Abmelden")).json()["result"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = h.wait_message(&token, &id, Duration::from_secs(30), |v| v["error"]["code"] == "relay.signin_required");
    assert_eq!(v["status"], "queued", "kept in the outbox: {v} {err}");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("Bitte melden Sie sich neu an"), "{v}");
    // Logged on again: the waiting message goes out by itself.
    gw.kinit("peter");
    let v = h.wait_message(&token, &id, Duration::from_secs(30), |v| v["status"] == "sent");
    assert_eq!(v["status"], "sent", "{v}\n{}", h.log_text());
    assert_eq!(gw.provider.wait_received(2, Duration::from_secs(20)).len(), 2);
    // Nothing on the desk holds a password: no user name in the configuration, no keyring entry.
    let (_, cfg, _) = h.cli(&["config", "show"], None);
    assert_eq!(cfg["gateway"]["username"], "", "{cfg}");
    assert_eq!(cfg["gateway"]["auth"], "auto", "{cfg}");
}

/// "De-Mail für mich beantragen" from the helper: Anna (no right yet) signs in with her
/// ticket, files the request, IT approves it at the gateway, and her De-Mail goes out.
#[test]
fn a_caseworker_requests_demail_from_the_helper_and_it_approves() {
    let gw = Gateway::start_realm(true);
    let cc = gw.kinit("anna");
    let h = gw.kerberos_helper(&cc, "");
    let (rc, out, err) = h.cli(&["credentials", "request-access"], None);
    assert_eq!(rc, 0, "{out} {err}\n{}", gw.log());
    assert_eq!(out["state"], "requested", "{out}");
    assert!(out["message"].as_str().unwrap().contains("Antrag ist gestellt"), "{out}");
    let listed = gw.cli(&["access", "requests"]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains("\"login\":\"anna\"") && listed.contains("requested"), "{listed}");

    let token = h.pair();
    let mut m = demail_message("Von Anna, vor der Freischaltung");
    m["from"] = json!("Anna Schulz <anna.schulz@musterstadt.de>");
    let refused = h.post("/v1/messages", Some(&token), &m).json()["result"]["id"].as_str().unwrap().to_string();
    let v = h.wait_message(&token, &refused, Duration::from_secs(30), |v| v["status"] == "failed");
    assert!(v["gateway_reply"].as_str().unwrap_or("").contains("identity.no_demail_right"), "{v}");

    assert!(gw.cli(&["access", "approve", "anna"]).status.success());
    m["subject"] = json!("Von Anna, freigeschaltet");
    let id = h.post("/v1/messages", Some(&token), &m).json()["result"]["id"].as_str().unwrap().to_string();
    let v = h.wait_message(&token, &id, Duration::from_secs(30), |v| v["status"] == "sent");
    assert_eq!(v["status"], "sent", "{v}\n{}", gw.log());
    // Asked again, the gateway says there is nothing to request.
    let (_, again, _) = h.cli(&["credentials", "request-access"], None);
    assert_eq!(again["state"], "exists", "{again}");
}

/// A wrong directory password: the gateway answers 535, the outbox shows why and keeps the
/// De-Mail; once the person stores the right one it goes out without being sent again.
#[test]
fn a_wrong_password_is_shown_and_the_message_waits_for_the_right_one() {
    let gw = Gateway::start();
    let go = gw.dir.path().join("right-password-now");
    let cfg = gateway_login_config(gw.out_port, &gw.gw_pki.ca_cert, &gw.user, "keyutils");
    // The same session keyring: first a wrong password, the right one when the test says so.
    let script = format!(
        "printf 'falsches-Kennwort\\n' | {{demail}} credentials set --password-stdin >&2 && \
         (while [ ! -f '{go}' ]; do sleep 0.2; done; printf '{HELPER_PASSWORD}\\n' | {{demail}} credentials set --password-stdin >&2) & \
         exec {{demail}} serve --port 0",
        go = go.display()
    );
    let h = Helper::start_with(HelperOpts {
        machine: &cfg,
        policy: Some(POLICY),
        keyutils: Some(Keyutils { user: &gw.user, script: &script }),
        ..Default::default()
    });
    let token = h.pair();
    let id = h.post("/v1/messages", Some(&token), &demail_message("Mit falschem Kennwort")).json()["result"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = h.wait_message(&token, &id, Duration::from_secs(30), |v| v["error"]["code"] == "relay.auth");
    assert_eq!(v["status"], "queued", "kept: {v}\n{}", gw.log());
    assert!(v["error"]["message"].as_str().unwrap().contains("Kennwort"), "{v}");
    assert!(gw.provider.received().is_empty());
    std::fs::write(&go, "").unwrap();
    let v = h.wait_message(&token, &id, Duration::from_secs(30), |v| v["status"] == "sent");
    assert_eq!(v["status"], "sent", "{v}\n{}", h.log_text());
    assert_eq!(gw.provider.wait_received(1, Duration::from_secs(20)).len(), 1);
}

/// Failover: the first gateway node does not answer (stopped), so the helper sends through
/// the next one in `gateway.fallback`; every De-Mail reaches the provider exactly once.
#[test]
fn the_helper_fails_over_to_the_next_gateway_node() {
    let gw = Gateway::start();
    let down = free_port();
    let cfg = gateway_login_config(gw.out_port, &gw.gw_pki.ca_cert, &gw.user, "keyutils").replace(
        &format!("port = {}\n", gw.out_port),
        &format!("port = {down}\nfallback = [\"localhost:{}\"]\n", gw.out_port),
    );
    assert!(cfg.contains("fallback"), "{cfg}");
    let script = format!("printf '{HELPER_PASSWORD}\\n' | {{demail}} credentials set --password-stdin >&2 && exec {{demail}} serve --port 0");
    let h = Helper::start_with(HelperOpts {
        machine: &cfg,
        policy: Some(POLICY),
        keyutils: Some(Keyutils { user: &gw.user, script: &script }),
        ..Default::default()
    });
    let token = h.pair();
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = h.post("/v1/messages", Some(&token), &demail_message(&format!("Über den zweiten Knoten {i}")));
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        ids.push(r.json()["result"]["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let v = h.wait_message(&token, id, Duration::from_secs(30), |v| v["status"] == "sent");
        assert_eq!(v["status"], "sent", "{v}\nhelper: {}\ngateway: {}", h.log_text(), gw.log());
    }
    let got = gw.provider.wait_received(3, Duration::from_secs(30));
    let mut mids: Vec<String> = got
        .iter()
        .map(|m| header_of(&String::from_utf8_lossy(&m.message), "Message-ID").unwrap().to_string())
        .collect();
    mids.sort();
    mids.dedup();
    assert_eq!((got.len(), mids.len()), (3, 3), "each De-Mail once");
    assert!(h.log_text().contains("gateway node not reachable; trying the next"), "{}", h.log_text());
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

/// The helper's copy against what the gateway relayed: the body byte for byte but for one
/// more empty line at the end (lettre writes CRLF before the final dot; the body hash drops
/// trailing empty lines), and every `X-de-mail-*` header and the Message-ID the helper
/// wrote, value for value (the gateway maps `From`, may add option headers from subject
/// tags, but changes none of these).
fn assert_gateway_kept_what_receipts_certify(ours: &[u8], relayed: &[u8]) {
    let body = |m: &[u8]| {
        let at = m.windows(4).position(|w| w == b"\r\n\r\n").expect("header end") + 4;
        m[at..].to_vec()
    };
    let mut extended = body(ours);
    extended.extend_from_slice(b"\r\n");
    assert_eq!(extended, body(relayed), "the body, and one empty line more");
    let bh = |m: &[u8]| demail_core::integrity::message_body_hash(m, demail_core::cert::Hash::Sha256);
    assert_eq!(bh(ours), bh(relayed), "the same body hash");
    let relayed_fields = demail_core::seal::header_fields(relayed);
    for (n, v) in demail_core::seal::header_fields(ours) {
        let l = n.to_ascii_lowercase();
        if l.starts_with("x-de-mail-") || l == "message-id" {
            let got = relayed_fields.iter().find(|(m, _)| m.eq_ignore_ascii_case(&n)).map(|(_, v)| v.trim());
            assert_eq!(got, Some(v.trim()), "{n} relayed unchanged");
        }
    }
}

/// Sends one De-Mail through the real gateway; returns the helper's copy, the relayed
/// bytes and the private-id.
fn send_through(gw: &Gateway, h: &Helper, token: &str, subject: &str) -> (Vec<u8>, Vec<u8>, String) {
    let (_, ours, relayed, pid) = send_message_through(gw, h, token, &demail_message(subject));
    (ours, relayed, pid)
}

/// As [`send_through`] for a given request; also returns the outbox id.
fn send_message_through(
    gw: &Gateway,
    h: &Helper,
    token: &str,
    msg: &serde_json::Value,
) -> (String, Vec<u8>, Vec<u8>, String) {
    let before = gw.provider.received().len();
    let r = h.post("/v1/messages", Some(token), msg);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    let private_id = r.json()["result"]["private_id"].as_str().unwrap().to_string();
    let v = h.wait_message(token, &id, Duration::from_secs(30), |v| v["status"] == "sent");
    assert_eq!(v["status"], "sent", "{v}\nhelper: {}\ngateway: {}", h.log_text(), gw.log());
    let relayed = gw.provider.wait_received(before + 1, Duration::from_secs(30))[before].message.clone();
    let ours = h.get(&format!("/v1/outbox/{id}/raw"), Some(token)).body;
    (id, ours, relayed, private_id)
}

/// Issue 15: a receipt counts only when its own signature is valid (a provider the policy
/// trusts) and it certifies what the helper handed over (XML `Hash` bh= and `Metadata`).
/// Unsigned, forged, untrusted, altered or fields-only receipts are listed with their
/// warning and never move `receipt_status`; a forged copy cannot replace a counted one.
#[test]
fn receipts_count_only_when_signed_and_certifying_what_was_handed_over() {
    use base64::Engine;
    use common::provider::{receipt_xml, Provider};
    let gw = Gateway::start();
    let provider = Provider::new(gw.dir.path(), "dmda");
    let h = gw.helper(Some(&provider.policy(POLICY)), "");
    let token = h.pair();
    let (ours, relayed, pid) = send_through(&gw, &h, &token, "Bescheid mit Nachweis");
    assert_ne!(ours, relayed, "the gateway mapped From");
    assert_gateway_kept_what_receipts_certify(&ours, &relayed);

    let (stamped, hash) = provider.stamp(&relayed);
    let xml = receipt_xml(&stamped, &hash);
    let report = |raw: &[u8]| {
        let r = h.post(
            "/v1/journal/receipts",
            Some(&token),
            &json!({ "raw": base64::engine::general_purpose::STANDARD.encode(raw) }),
        );
        assert!(r.status == 201 || r.status == 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["result"].clone()
    };
    let outcome = |r: &serde_json::Value| {
        (r["check"].as_str().unwrap().to_string(), r["counts"].as_bool().unwrap(), r["reasons"][0]["code"].clone())
    };
    let journal =
        || h.get(&format!("/v1/journal?private_id={pid}"), Some(&token)).json()["result"]["messages"][0].clone();

    // Unsigned: no proof of who wrote it.
    let r = report(&provider.receipt("receipt", &pid, "unsigned", &xml, false));
    assert_eq!(outcome(&r), ("unsigned".into(), false, json!("integrity.missing")), "{r}");
    // Forged: signed, then its text changed.
    let forged = String::from_utf8(provider.receipt("receipt", &pid, "forged", &xml, true))
        .unwrap()
        .replace("wurde versandt", "wurde zugestellt");
    let r = report(forged.as_bytes());
    assert_eq!((r["check"].as_str(), r["counts"].as_bool()), (Some("invalid-signature"), Some(false)), "{r}");
    // Correct in every byte, but signed by a provider CA the policy does not trust.
    let stranger = Provider::new(gw.dir.path(), "fremd");
    let r = report(&stranger.receipt("receipt", &pid, "stranger", &xml, true));
    assert_eq!((r["check"].as_str(), r["counts"].as_bool()), (Some("untrusted"), Some(false)), "{r}");
    // Validly signed, but for other content: the provider's Hash over an altered body.
    let altered = String::from_utf8(relayed.clone()).unwrap().replace("anbei der Bescheid", "anbei die Mahnung");
    let (stamped2, hash2) = provider.stamp(altered.as_bytes());
    let r = report(&provider.receipt("receipt", &pid, "other-body", &receipt_xml(&stamped2, &hash2), true));
    assert_eq!(outcome(&r), ("mismatch".into(), false, json!("receipt.body_mismatch")), "{r}");
    // Validly signed, but its Metadata names another Message-ID.
    let mid = demail_core::seal::header_fields(&ours).into_iter().find(|(n, _)| n.eq_ignore_ascii_case("Message-ID"));
    let mid = mid.unwrap().1.trim().to_string();
    let other_meta = xml.replace(&mid.replace('<', "&lt;").replace('>', "&gt;"), "&lt;andere@musterstadt.de&gt;");
    assert_ne!(other_meta, xml);
    let r = report(&provider.receipt("retrieve", &pid, "other-meta", &other_meta, true));
    assert_eq!(outcome(&r), ("mismatch".into(), false, json!("receipt.metadata_mismatch")), "{r}");
    assert_eq!(r["reasons"][0]["subject"], "Message-ID", "{r}");
    // Fields only: nobody checked a signature.
    let r = h.post("/v1/journal/receipts", Some(&token), &json!({ "private_id": pid, "type": "retrieve" })).json();
    assert_eq!(outcome(&r["result"]), ("unchecked".into(), false, json!("journal.receipt_unchecked")), "{r}");
    // A valid receipt for a De-Mail this helper never sent.
    let r = report(&provider.receipt("dispatch", "AZ-NIE-GESENDET", "unknown", &xml, true));
    assert_eq!(outcome(&r), ("unknown-sent".into(), false, json!("journal.sent_unknown")), "{r}");

    let j = journal();
    assert_eq!(j["receipt_status"], "sent", "nothing above counts: {j}");
    assert_eq!(j["receipts"].as_array().unwrap().len(), 6, "each is listed with its warning: {j}");
    assert!(j["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["counts"] == false && r["reasons"][0]["message"].is_string()));

    // The real one counts.
    let r = report(&provider.receipt("dispatch", &pid, "real", &xml, true));
    assert_eq!(outcome(&r), ("matches".into(), true, json!("receipt.matches_sent")), "{r}");
    assert_eq!(journal()["receipt_status"], "dispatched");
    // A forged copy with the real one's Message-ID does not take its place.
    let copy = String::from_utf8(provider.receipt("dispatch", &pid, "real", &xml, true))
        .unwrap()
        .replace("wurde versandt", "wurde nie versandt");
    let r = report(copy.as_bytes());
    assert_eq!((r["check"].as_str(), r["new"].as_bool()), (Some("invalid-signature"), Some(false)), "{r}");
    let j = journal();
    let real: Vec<_> =
        j["receipts"].as_array().unwrap().iter().filter(|r| r["type"] == "dispatch" && r["counts"] == true).collect();
    assert_eq!(real.len(), 1, "{j}");
    assert_eq!(j["receipt_status"], "dispatched", "{j}");
    // A matching Eingangsbestätigung moves it on.
    let (s3, h3) = provider.stamp(&relayed);
    let r = report(&provider.receipt("receipt", &pid, "eingang", &receipt_xml(&s3, &h3), true));
    assert_eq!(r["check"], "matches", "{r}");
    assert_eq!(journal()["receipt_status"], "received");
}

/// In the subject-tags dialect the helper's copy carries tags, not option headers; the
/// gateway turns them into headers. What the helper wrote (body, private-id, Message-ID)
/// still matches, so its receipts count.
#[test]
fn receipts_match_in_the_subject_tags_dialect() {
    use base64::Engine;
    use common::provider::{receipt_xml, Provider};
    let gw = Gateway::start();
    let provider = Provider::new(gw.dir.path(), "dmda");
    let h = gw.helper(Some(&provider.policy(POLICY)), "[gateway]\ndialect = \"subject-tags\"\n");
    let token = h.pair();
    let (ours, relayed, pid) = send_through(&gw, &h, &token, "Ihr Antrag");
    assert_gateway_kept_what_receipts_certify(&ours, &relayed);
    let (stamped, hash) = provider.stamp(&relayed);
    let raw = provider.receipt("dispatch", &pid, "tags", &receipt_xml(&stamped, &hash), true);
    let r = h.post(
        "/v1/journal/receipts",
        Some(&token),
        &json!({ "raw": base64::engine::general_purpose::STANDARD.encode(raw) }),
    );
    assert_eq!(r.json()["result"]["check"], "matches", "{}", String::from_utf8_lossy(&r.body));
    let j = h.get(&format!("/v1/journal?private_id={pid}"), Some(&token)).json()["result"]["messages"][0].clone();
    assert_eq!(j["receipt_status"], "dispatched", "{j}");
}

/// One private-id (a file number) for two De-Mails: each receipt is checked against both
/// copies and counts for the De-Mail it certifies, and only there.
#[test]
fn a_private_id_used_twice_each_receipt_counts_for_its_own_de_mail() {
    use base64::Engine;
    use common::provider::{receipt_xml, Provider};
    let gw = Gateway::start();
    let provider = Provider::new(gw.dir.path(), "dmda");
    let h = gw.helper(Some(&provider.policy(POLICY)), "");
    let token = h.pair();
    let mut first = demail_message("Erster Bescheid");
    first["private_id"] = json!("AZ-2026-77");
    let mut second = demail_message("Zweiter Bescheid");
    second["private_id"] = json!("AZ-2026-77");
    second["text"] = json!("Sehr geehrte Frau Bürger,\r\n\r\nanbei der zweite Bescheid.\r\n");
    let (id1, _, relayed1, pid) = send_message_through(&gw, &h, &token, &first);
    let (id2, _, relayed2, _) = send_message_through(&gw, &h, &token, &second);
    let report = |relayed: &[u8], rid: &str| {
        let (stamped, hash) = provider.stamp(relayed);
        let raw = provider.receipt("dispatch", &pid, rid, &receipt_xml(&stamped, &hash), true);
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        h.post("/v1/journal/receipts", Some(&token), &json!({ "raw": b64 })).json()["result"].clone()
    };
    let status = |id: &str| {
        let j = h.get(&format!("/v1/journal?private_id={pid}"), Some(&token)).json()["result"]["messages"].clone();
        let e = j.as_array().unwrap().iter().find(|e| e["id"] == id).cloned().unwrap();
        (e["receipt_status"].as_str().unwrap().to_string(), e["receipts"].as_array().unwrap().len())
    };
    // The older De-Mail's receipt: not the newest copy, still the one it certifies.
    assert_eq!(report(&relayed1, "r1")["check"], "matches");
    assert_eq!(status(&id1), ("dispatched".to_string(), 1));
    assert_eq!(status(&id2), ("sent".to_string(), 0), "not shown with the other De-Mail");
    assert_eq!(report(&relayed2, "r2")["check"], "matches");
    assert_eq!(status(&id2), ("dispatched".to_string(), 1));
    assert_eq!(status(&id1), ("dispatched".to_string(), 1));
}
