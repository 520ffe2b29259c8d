//! Several providers and provider secrets from the kernel keyring, with the real
//! gateway, provider simulator processes and Dovecot.

mod common;

use common::*;
use demail_testkit::{free_port, wait_until};
use std::process::Command;
use std::time::Duration;

fn msg(from: &str, to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@musterstadt.de>\r\n\r\nText\r\n",
        free_port()
    )
    .into_bytes()
}

fn subjects(stored: &[Vec<u8>]) -> Vec<String> {
    stored.iter().filter_map(|m| header(m, "Subject")).collect()
}

/// `from`'s De-Mail to Anna Bürger, accepted by the gateway.
fn send(h: &Harness, from: &str, subject: &str) {
    let to = "anna@buerger.de-mail.de";
    let r = h.submit(from, &[to], &msg(from, to, subject));
    assert!(r.is_ok(), "{r:?}");
}

/// What the provider simulator stored, once it holds something.
fn wait_sim_stored(h: &Harness) -> Vec<Vec<u8>> {
    wait_until(Duration::from_secs(30), || {
        let s = h.sim_stored();
        (!s.is_empty()).then_some(s)
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", h.queue_entries(), h.log()))
}

#[test]
fn each_sender_domain_goes_to_its_own_provider() {
    // A second organisational unit with its own De-Mail domain at another provider.
    let policy = POLICY
        .replace(
            "domains = [{ demail = \"musterstadt.de-mail.de\", email = \"musterstadt.de\" }]",
            "domains = [{ demail = \"musterstadt.de-mail.de\", email = \"musterstadt.de\" }, { demail = \"jugendamt-musterstadt.de-mail.de\", email = \"jugendamt.musterstadt.de\" }]",
        )
        .replace(
            "[mapping]",
            "[[authorization.senders]]\naddress = \"leitung@jugendamt.musterstadt.de\"\noptions = [\"confirmation-of-dispatch\", \"private\"]\ncost_unit = \"KST-5100\"\n[mapping]",
        );
    assert!(policy.contains("jugendamt-musterstadt.de-mail.de") && policy.contains("KST-5100"));
    let port2 = free_port();
    let mut h = Harness::custom(&policy, |c| {
        // The first provider block, copied for the second domain and port.
        let start = c.find("[[providers]]").unwrap();
        let end = start + c[start..].find("[queue]").unwrap();
        let second = c[start..end]
            .replace("\"test-dmda\"", "\"zweiter-dmda\"")
            .replace("\"musterstadt.de-mail.de\"", "\"jugendamt-musterstadt.de-mail.de\"")
            .replace(
                &format!("port = {}", c[start..end].split("port = ").nth(1).unwrap().lines().next().unwrap()),
                &format!("port = {port2}"),
            );
        assert!(second.contains(&format!("port = {port2}")) && second.contains("zweiter-dmda"));
        format!("{c}\n{second}")
    });
    let _sim1 = h.start_sim();
    let _sim2 = h.start_sim_named("sim2", port2);
    send(&h, "peter.meier@musterstadt.de", "Bescheid Stadt");
    send(&h, "leitung@jugendamt.musterstadt.de", "Bescheid Jugendamt");
    let both = wait_until(Duration::from_secs(30), || {
        let (a, b) = (h.sim_stored(), h.stored_in("sim2-store"));
        (!a.is_empty() && !b.is_empty()).then_some((a, b))
    });
    both.unwrap_or_else(|| {
        panic!(
            "gateway:\n{}\nsim2:\n{}",
            h.log(),
            std::fs::read_to_string(h.path().join("sim2.log")).unwrap_or_default()
        )
    });
    // Both sent: nothing left to route, so the stores are final.
    assert!(wait_until(Duration::from_secs(20), || (h.queue_len() == 0).then_some(())).is_some(), "{}", h.log());
    assert_eq!(subjects(&h.sim_stored()), vec!["Bescheid Stadt".to_string()]);
    let b = h.stored_in("sim2-store");
    assert_eq!(subjects(&b), vec!["Bescheid Jugendamt".to_string()]);
    // The sender De-Mail address is the mapped one of its own domain.
    let from = header(&b[0], "From").unwrap();
    assert!(from.contains("@jugendamt-musterstadt.de-mail.de"), "{from}");
}

/// Service name unique per test run, so parallel runs never share a keyring entry.
fn keyring_gateway(h: &Harness, service: &str, secret: &str) -> demail_testkit::ChildGuard {
    // A fresh session keyring holds the provider secret (added from stdin, never on a
    // command line) in the keyring crate's keyutils layout `keyring-rs:user@service`;
    // it dies with the session, so nothing outlives the gateway.
    let mut c = Command::new("keyctl");
    c.args(["session", "-", "sh", "-c"])
        .arg(r#"printf %s "$SEC" | keyctl padd user "keyring-rs:provider@$SVC" @s >/dev/null && unset SEC && exec "$GW" --config "$CFG" serve"#)
        .env("GW", env!("CARGO_BIN_EXE_demail-gateway"))
        .env("CFG", &h.config)
        .env("SVC", service)
        .env("SEC", secret)
        .env("TEST_GW_HELPER_PASSWORD", HELPER_PASSWORD)
        .env("TEST_GW_DIRECTORY_PASSWORD", demail_testkit::directory::BIND_PASSWORD)
        .env_remove("TEST_PROVIDER_SECRET");
    demail_testkit::start_gateway(c, h.out_port, h.in_port, &h.path().join("gateway.log"))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn provider_secret_from_the_kernel_keyring_and_a_wrong_one_keeps_the_message_queued() {
    let service = format!("demail-gw-test-{}", free_port());
    let mut h = Harness::custom(POLICY, |c| {
        assert!(c.contains("secret_env = \"TEST_PROVIDER_SECRET\""));
        c.replace("secret_env = \"TEST_PROVIDER_SECRET\"", &format!("secret_keyring = \"{service}/provider\""))
    });
    let _sim = h.start_sim();
    // First with a wrong secret: the provider refuses the login, the message stays queued.
    h.gateway.take().unwrap().terminate(Duration::from_secs(3));
    h.gateway = Some(keyring_gateway(&h, &service, "falsches-geheimnis"));
    send(&h, "peter.meier@musterstadt.de", "Bescheid Schlüsselbund");
    let refused = wait_until(Duration::from_secs(30), || {
        h.queue_entries()
            .into_iter()
            .find(|e| e["state"]["last_error"].as_str().is_some_and(|s| s.contains("AUTH 535")))
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", h.queue_entries(), h.log()));
    assert_eq!(refused["meta"]["provider"], "test-dmda", "{refused}");
    assert!(h.sim_stored().is_empty());
    assert!(!h.log().contains("falsches-geheimnis"));
    // The right secret in the keyring: the queued message goes out.
    h.gateway.take().unwrap().terminate(Duration::from_secs(3));
    h.gateway = Some(keyring_gateway(&h, &service, PROVIDER_SECRET));
    let stored = wait_sim_stored(&h);
    assert_eq!(subjects(&stored), vec!["Bescheid Schlüsselbund".to_string()]);
    assert!(
        wait_until(Duration::from_secs(20), || (h.queue_len() == 0).then_some(())).is_some(),
        "{:?}",
        h.queue_entries()
    );
    assert!(!h.log().contains(PROVIDER_SECRET));
}

/// The packaged service's way (installer/linux): `secret set` encrypts each secret with
/// systemd-creds into a credential store and writes the unit drop-in that loads it;
/// systemd decrypts into the unit's `$CREDENTIALS_DIRECTORY` at start. CI has no systemd
/// as PID 1, so that last step is `systemd-creds decrypt`, exactly what systemd runs.
#[test]
fn provider_and_account_secrets_as_systemd_credentials() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    assert!(demail_testkit::have("systemd-creds"), "systemd-creds missing (package systemd)");
    let mut h = Harness::custom(POLICY, |c| c);
    h.gateway.take().unwrap().terminate(Duration::from_secs(3));
    let cfg = std::fs::read_to_string(&h.config).unwrap();
    assert!(
        cfg.contains("secret_env = \"TEST_PROVIDER_SECRET\"")
            && cfg.contains("password_env = \"TEST_GW_HELPER_PASSWORD\"")
    );
    std::fs::write(
        &h.config,
        cfg.replace("secret_env = \"TEST_PROVIDER_SECRET\"", "secret_credential = \"provider-test-dmda\"")
            .replace("password_env = \"TEST_GW_HELPER_PASSWORD\"", "password_credential = \"account-helper\"")
            .replace("bind_password_env = \"TEST_GW_DIRECTORY_PASSWORD\"", "bind_password_credential = \"directory\"")
            + "\n[seal]\nkid = \"gw-cred\"\nkey_credential = \"seal-key\"\n",
    )
    .unwrap();
    let (store, dropins) = (h.path().join("credstore.encrypted"), h.path().join("demail-gateway.service.d"));
    let place = ["--credstore", store.to_str().unwrap(), "--unit-dropins", dropins.to_str().unwrap()];
    let secret_cmd = |args: &[&str], stdin: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_demail-gateway"))
            .arg("--config")
            .arg(&h.config)
            .args(["secret"])
            .args(args)
            .args(place)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    };

    // Nothing stored yet: the list says which, and fails.
    let out = secret_cmd(&["list"], "");
    assert_eq!(out.status.code(), Some(2));
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listed.contains(
            r#""place":"systemd-credential provider-test-dmda","secret":"provider test-dmda","stored":false"#
        ),
        "{listed}"
    );
    // An unknown provider and an empty secret store nothing.
    let out = secret_cmd(&["set", "provider", "gibt-es-nicht"], "x\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Kein provider „gibt-es-nicht“"));
    assert_eq!(secret_cmd(&["set", "provider", "test-dmda"], "\n").status.code(), Some(2));
    assert!(!store.exists());

    let bind = demail_testkit::directory::BIND_PASSWORD;
    for (args, value) in [
        (&["set", "provider", "test-dmda"][..], PROVIDER_SECRET),
        (&["set", "user", HELPER_USER][..], HELPER_PASSWORD),
        (&["set", "directory"][..], bind),
    ] {
        let out = secret_cmd(args, &format!("{value}\n"));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(!String::from_utf8_lossy(&out.stdout).contains(value));
    }
    for (name, value) in
        [("provider-test-dmda", PROVIDER_SECRET), ("account-helper", HELPER_PASSWORD), ("directory", bind)]
    {
        let file = store.join(name);
        let bytes = std::fs::read(&file).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(value), "plaintext in {file:?}");
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let dropin = std::fs::read_to_string(dropins.join(format!("credential-{name}.conf"))).unwrap();
        assert!(
            dropin.contains(&format!("[Service]\nLoadCredentialEncrypted={name}:{}\n", file.display())),
            "{dropin}"
        );
    }
    // The seal key: generated into the store; its public half is read back as root
    // outside the service (systemd-creds decrypt), and only the public half is printed.
    let generated = secret_cmd(&["generate", "seal-key"], "");
    assert!(generated.status.success(), "{generated:?}");
    let public = String::from_utf8_lossy(&generated.stdout).trim().to_string();
    assert!(public.starts_with("gw-cred:"), "{public}");
    let again = secret_cmd(&["public", "seal-key"], "");
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), public, "{again:?}");
    let out = secret_cmd(&["list"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // Started without the credentials (not by systemd): refuses to start and says why.
    let out = Command::new("timeout")
        .args(["30", env!("CARGO_BIN_EXE_demail-gateway"), "--config"])
        .arg(&h.config)
        .arg("serve")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("systemd-Credential account-helper"), "{out:?}");

    // What systemd does at start: decrypt each into a private directory.
    let creds = h.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o700)).unwrap();
    for name in ["provider-test-dmda", "account-helper", "directory", "seal-key"] {
        let st = Command::new("systemd-creds")
            .args(["decrypt", "--name", name])
            .arg(store.join(name))
            .arg(creds.join(name))
            .status()
            .unwrap();
        assert!(st.success());
    }
    let _sim = h.start_sim();
    let mut c = Command::new(env!("CARGO_BIN_EXE_demail-gateway"));
    c.arg("--config").arg(&h.config).arg("serve").env("CREDENTIALS_DIRECTORY", &creds);
    h.gateway = Some(
        demail_testkit::start_gateway(c, h.out_port, h.in_port, &h.path().join("gateway.log"))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    send(&h, "peter.meier@musterstadt.de", "Bescheid Credential");
    let stored = wait_sim_stored(&h);
    assert_eq!(subjects(&stored), vec!["Bescheid Credential".to_string()]);
    assert!(!h.log().contains(PROVIDER_SECRET) && !h.log().contains(HELPER_PASSWORD));
}
