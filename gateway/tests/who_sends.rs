//! Who sends, end to end with the real gateway binary: an MIT Kerberos KDC and slapd on
//! loopback, caseworkers signing in with their ticket (SASL GSSAPI, the helper's own
//! client code) or their directory password, and rights from the directory.

mod common;

use common::*;
use demail_helper::kerberos;
use demail_testkit::kdc::Kdc;
use demail_testkit::ldap::Slapd;
use demail_testkit::{temp_dir, TempDir};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use std::time::Duration;

const REALM: &str = "MUSTERSTADT.TEST";
const PETER: &str = "peter.meier@musterstadt.de";
const ANNA: &str = "anna.schulz@musterstadt.de";
const POSTSTELLE: &str = "poststelle@musterstadt.de";
const CITIZEN: &str = "buerger@buerger.de-mail.de";

/// Everyone in the organisation may send De-Mail as far as the policy goes: here the
/// directory decides.
const POLICY_OPEN: &str = r#"
version = 1
[organisation]
internal_domains = ["musterstadt.de"]
[authorization]
default = "allow"
[mapping]
catch_all = "sammelpostfach@musterstadt.de"
domains = [{ demail = "musterstadt.de-mail.de", email = "musterstadt.de" }]
"#;

struct Realm {
    _dir: TempDir,
    kdc: Kdc,
    keytab: std::path::PathBuf,
}

/// The KDC with Peter and Anna and the gateway's key; its configuration in the
/// environment, which the gateway child process inherits.
fn realm() -> Realm {
    let dir = temp_dir();
    let kdc = Kdc::start(&dir.path().join("kdc"), REALM).unwrap();
    for (u, pw) in [("peter", "Peter-Passwort-1"), ("anna", "Anna-Passwort-1")] {
        kdc.add_user(u, pw).unwrap();
    }
    let keytab = dir.path().join("gateway.keytab");
    kdc.add_service("smtp/localhost", &keytab).unwrap();
    // One test per process (nextest): process-wide Kerberos settings are safe.
    std::env::set_var("KRB5_CONFIG", &kdc.krb5_conf);
    Realm { _dir: dir, kdc, keytab }
}

/// A gateway with Kerberos and directory-password sign-in; `ttl`/`grace` for the cache.
/// Peter and Anna are in the directory with their principals; only Peter holds the
/// De-Mail right. The "poststelle" group may send as poststelle@ (empty at first).
fn gateway(r: &Realm, ttl: u64, grace: u64) -> (Harness, String) {
    gateway_with(r, ttl, grace, "")
}

/// [`gateway`] with more `[identity]` lines (e.g. `limited_options`).
fn gateway_with(r: &Realm, ttl: u64, grace: u64, identity: &str) -> (Harness, String) {
    let keytab = r.keytab.clone();
    let identity = identity.to_string();
    let h = Harness::custom(POLICY_OPEN, move |c| {
        let c = c
            .replacen(
                "[identity]\nldap_password = true\n",
                &format!(
                    "[identity]\nldap_password = true\nkerberos = true\nkeytab = \"{}\"\nrealms = [\"{REALM}\"]\n\
                     shared_senders = [{{ address = \"{POSTSTELLE}\", group = \"{}\" }}]\n{identity}",
                    keytab.display(),
                    Slapd::group_dn("poststelle"),
                ),
                1,
            )
            .replace("cache_ttl_secs = 60", &format!("cache_ttl_secs = {ttl}"))
            .replace("grace_secs = 900", &format!("grace_secs = {grace}"));
        assert!(c.contains("kerberos = true"));
        c
    });
    let peter = h.directory.kerberos_person("peter", PETER, "peter@MUSTERSTADT.TEST", true);
    h.directory.kerberos_person("anna", ANNA, "anna@MUSTERSTADT.TEST", false);
    h.directory.ldap.add_group("poststelle", std::slice::from_ref(&h.directory.bind_dn)).unwrap();
    (h, peter)
}

fn login(r: &Realm, who: &str, pw: &str) {
    let cc = r.kdc.kinit(&format!("{who}@{REALM}"), pw, &r.kdc.dir.join(format!("cc-{who}"))).unwrap();
    std::env::set_var("KRB5CCNAME", cc);
}

/// Submit over STARTTLS with Kerberos sign-in: (the 235 text, the final reply) or the error.
fn kerberos_submit(h: &Harness, from: &str, raw: &[u8]) -> Result<(String, String), String> {
    kerberos_submit_to(h, from, CITIZEN, raw)
}

fn kerberos_submit_to(h: &Harness, from: &str, to: &str, raw: &[u8]) -> Result<(String, String), String> {
    h.rt.block_on(async {
        let tls = TlsParameters::builder("localhost".into())
            .certificate_store(CertificateStore::None)
            .add_root_certificate(Certificate::from_pem(h.gw_pki.ca_pem.as_bytes()).unwrap())
            .build_rustls()
            .unwrap();
        let hello = ClientId::Domain("arbeitsplatz".into());
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            ("127.0.0.1", h.out_port),
            Some(Duration::from_secs(20)),
            &hello,
            None,
            None,
        )
        .await
        .map_err(|e| format!("{e:?}"))?;
        conn.starttls(tls, &hello).await.map_err(|e| format!("{e:?}"))?;
        let who = kerberos::authenticate(&mut conn, "smtp/localhost").await.map_err(|e| e.to_string())?;
        let env = lettre::address::Envelope::new(Some(from.parse().unwrap()), vec![to.parse().unwrap()]).unwrap();
        let r = conn.send(&env, raw).await.map_err(|e| format!("{e}"))?;
        let _ = conn.quit().await;
        Ok((who, r.message().collect::<Vec<_>>().join(" ")))
    })
}

fn note(from: &str, subject: &str) -> Vec<u8> {
    msg(from, CITIZEN, subject, "")
}

#[test]
fn a_kerberos_caseworker_sends_as_themselves_and_as_a_shared_sender_only_with_its_group() {
    let r = realm();
    let (mut h, peter) = gateway(&r, 1, 60);
    let _sim = h.start_sim();
    login(&r, "peter", "Peter-Passwort-1");
    // As himself: signed in without a password; the gateway names him.
    let (who, _) = kerberos_submit(&h, PETER, &note(PETER, "[P] Eigener Absender")).unwrap();
    assert!(who.contains("Peter Meier"), "{who}");
    assert!(who.contains("kerberos"), "{who}");
    // As Anna: refused for good, in German first, saying which senders he may use.
    let e = kerberos_submit(&h, ANNA, &note(ANNA, "[P] Fremder Absender")).unwrap_err();
    assert!(e.contains("550") && e.contains("identity.sender_not_allowed") && e.contains("darf nicht als"), "{e}");
    // As the mail room's mailbox: only while he is in its group.
    let e = kerberos_submit(&h, POSTSTELLE, &note(POSTSTELLE, "[P] Poststelle ohne Gruppe")).unwrap_err();
    assert!(e.contains("identity.sender_not_allowed"), "{e}");
    h.directory.ldap.add_member(&Slapd::group_dn("poststelle"), &peter).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    kerberos_submit(&h, POSTSTELLE, &note(POSTSTELLE, "[P] Poststelle mit Gruppe")).unwrap();
    h.directory.ldap.remove_member(&Slapd::group_dn("poststelle"), &peter).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert!(kerberos_submit(&h, POSTSTELLE, &note(POSTSTELLE, "[P] Poststelle wieder ohne")).is_err());

    // What left names the person and the method, in the archive and the billing rows.
    let out: Vec<_> = h.archive_entries().into_iter().filter(|e| e["direction"] == "out").collect();
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out.iter().all(|e| e["actor"] == "kerberos:peter@MUSTERSTADT.TEST"), "{out:?}");
    assert_eq!(h.archive_count("SELECT count(*) FROM billing WHERE person = 'kerberos:peter@MUSTERSTADT.TEST'"), 2);
    let stored = demail_testkit::wait_until(Duration::from_secs(30), || {
        let s = h.sim_stored();
        (s.len() >= 2).then_some(s)
    })
    .unwrap_or_else(|| panic!("{}", h.log()));
    assert_eq!(stored.len(), 2);

    // Anna has a valid ticket but no De-Mail right.
    login(&r, "anna", "Anna-Passwort-1");
    let e = kerberos_submit(&h, ANNA, &note(ANNA, "[P] Ohne Recht")).unwrap_err();
    assert!(e.contains("identity.no_demail_right") && e.contains("De-Mail für mich beantragen"), "{e}");
}

/// A paid option IT limits to a group (here the Abholbestätigung to the legal office):
/// refused with its reason until the person is in that group, within the TTL.
#[test]
fn a_paid_option_limited_to_a_group_needs_its_membership() {
    let r = realm();
    let limited = format!(
        "limited_options = [{{ option = \"confirmation-of-retrieve\", groups = [\"{}\"] }}]\n",
        Slapd::group_dn("rechtsamt")
    );
    let (mut h, peter) = gateway_with(&r, 1, 60, &limited);
    h.directory.ldap.add_group("rechtsamt", std::slice::from_ref(&h.directory.bind_dn)).unwrap();
    h.start_provider();
    login(&r, "peter", "Peter-Passwort-1");
    let e = kerberos_submit(&h, PETER, &note(PETER, "[AB] Mit Abholbestätigung")).unwrap_err();
    assert!(e.contains("550") && e.contains("identity.option_not_allowed") && e.contains("Abholbestätigung"), "{e}");
    // Other options stay his.
    kerberos_submit(&h, PETER, &note(PETER, "[P] Ohne Abholbestätigung")).unwrap();
    h.directory.ldap.add_member(&Slapd::group_dn("rechtsamt"), &peter).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    kerberos_submit(&h, PETER, &note(PETER, "[AB] Im Rechtsamt")).unwrap();
    assert_eq!(h.wait_provider(2, 20).len(), 2);
}

#[test]
fn a_removal_from_the_demail_group_counts_within_the_ttl() {
    let r = realm();
    let (mut h, peter) = gateway(&r, 2, 60);
    h.start_provider();
    login(&r, "peter", "Peter-Passwort-1");
    kerberos_submit(&h, PETER, &note(PETER, "[P] Vorher")).unwrap();
    h.directory.ldap.remove_member(&h.directory.group_dn, &peter).unwrap();
    let removed = std::time::Instant::now();
    // Refused at the latest once the TTL is over, without a restart; until then the
    // cached right stands.
    let mut accepted = 1;
    let refused = demail_testkit::wait_until(Duration::from_secs(10), || {
        match kerberos_submit(&h, PETER, &note(PETER, "[P] Während")) {
            Ok(_) => {
                accepted += 1;
                None
            }
            Err(e) => Some(e),
        }
    });
    let refused = refused.expect("still accepted after the removal");
    assert!(refused.contains("identity.no_demail_right"), "{refused}");
    assert!(removed.elapsed() <= Duration::from_millis(2500), "took {:?}", removed.elapsed());
    h.directory.ldap.add_member(&h.directory.group_dn, &peter).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    kerberos_submit(&h, PETER, &note(PETER, "[P] Nachher")).unwrap();
    assert_eq!(h.wait_provider(accepted + 1, 20).len(), accepted + 1);
}

#[test]
fn a_directory_password_signs_in_and_a_wrong_one_is_refused() {
    let r = realm();
    let (mut h, _) = gateway(&r, 60, 60);
    h.start_provider();
    // The directory password of the person (LDAP bind): the login is their uid.
    let e = h.submit_with("peter", "falsch", PETER, &[CITIZEN], &note(PETER, "[P] Falsch")).unwrap_err();
    assert!(e.contains("5.7.8") && e.contains("Anmeldedaten ungültig"), "{e}");
    h.submit_with("peter", PERSON_PASSWORD, PETER, &[CITIZEN], &note(PETER, "[P] Richtig"))
        .unwrap_or_else(|e| panic!("{e}\n{}", h.log()));
    let got = h.wait_provider(1, 20);
    assert_eq!(got.len(), 1);
    let out: Vec<_> = h.archive_entries().into_iter().filter(|e| e["direction"] == "out").collect();
    assert_eq!(out[0]["actor"], "ldap:peter");
}

#[test]
fn directory_down_cached_rights_then_try_later_then_delivered() {
    let r = realm();
    let (mut h, _) = gateway(&r, 1, 3);
    h.start_provider();
    login(&r, "peter", "Peter-Passwort-1");
    kerberos_submit(&h, PETER, &note(PETER, "[P] Vor dem Ausfall")).unwrap();
    h.directory.ldap.stop();
    std::thread::sleep(Duration::from_millis(1100));
    // Within the grace time: the cached rights hold.
    kerberos_submit(&h, PETER, &note(PETER, "[P] Im Ausfall, Karenz")).unwrap();
    std::thread::sleep(Duration::from_millis(3100));
    // After it: a temporary refusal (the helper keeps the message and tries again).
    let e = kerberos_submit(&h, PETER, &note(PETER, "[P] Nach der Karenz")).unwrap_err();
    assert!(e.contains("451") || e.contains("454"), "{e}");
    assert!(e.contains("directory.unavailable"), "{e}");
    assert!(h.log().contains("directory unreachable"), "{}", h.log());
    h.directory.ldap.restart().unwrap();
    kerberos_submit(&h, PETER, &note(PETER, "[P] Nach der Karenz")).unwrap();
    let got = h.wait_provider(3, 20);
    assert_eq!(got.len(), 3);
}

/// The article's request process where IT keeps no directory group for De-Mail: the
/// caseworker asks through the helper, IT approves or revokes with the CLI; every step is
/// an archive entry, and the chain still verifies.
#[test]
fn request_approve_revoke_each_step_in_the_archive() {
    let r = realm();
    let (mut h, _) = gateway(&r, 60, 60);
    h.start_provider();
    login(&r, "anna", "Anna-Passwort-1");
    let request_to = "de-mail-zugang@gw.musterstadt.de";
    let refused = |h: &Harness| {
        let e = kerberos_submit(h, ANNA, &note(ANNA, "[P] Von Anna")).unwrap_err();
        assert!(e.contains("identity.no_demail_right"), "{e}");
    };
    refused(&h);
    let (_, reply) =
        kerberos_submit_to(&h, ANNA, request_to, b"Subject: De-Mail fuer mich\r\n\r\nBitte freischalten.\r\n").unwrap();
    assert!(reply.contains("zugang-beantragt"), "{reply}");
    let open = h.cli(&["access", "requests"]);
    let listed = String::from_utf8_lossy(&open.stdout);
    assert!(listed.contains("\"login\":\"anna\"") && listed.contains("requested"), "{listed}");
    // A request alone gives no right.
    refused(&h);
    let ok = h.cli(&["access", "approve", "anna"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    kerberos_submit(&h, ANNA, &note(ANNA, "[P] Von Anna, freigeschaltet")).unwrap();
    assert!(h.cli(&["access", "revoke", "anna"]).status.success());
    refused(&h);
    // Revoking twice, or approving someone without a request, is refused with a code.
    let again = h.cli(&["access", "revoke", "anna"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("access.state"));
    assert!(String::from_utf8_lossy(&h.cli(&["access", "approve", "niemand"]).stderr).contains("access.unknown"));

    let access: Vec<_> = h.archive_entries().into_iter().filter(|e| e["direction"] == "access").collect();
    let actors: Vec<&str> = access.iter().map(|e| e["actor"].as_str().unwrap()).collect();
    assert_eq!(actors.len(), 3, "{access:?}");
    assert_eq!(actors[0], "kerberos:anna@MUSTERSTADT.TEST");
    assert!(actors[1].starts_with("admin:") && actors[2].starts_with("admin:"), "{actors:?}");
    let verify = h.cli(&["archive", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    assert_eq!(h.wait_provider(1, 20).len(), 1);
}

#[test]
fn self_service_grants_on_request() {
    let r = realm();
    let (h, _) = gateway(&r, 60, 60);
    let mut h = {
        let mut cfg = std::fs::read_to_string(&h.config).unwrap();
        cfg.push_str("\n[access]\nself_service = true\n");
        std::fs::write(&h.config, cfg).unwrap();
        let mut h = h;
        h.gateway.take().unwrap().terminate(Duration::from_secs(3));
        h.start_gateway();
        h
    };
    h.start_provider();
    login(&r, "anna", "Anna-Passwort-1");
    let (_, reply) =
        kerberos_submit_to(&h, ANNA, "de-mail-zugang@gw.musterstadt.de", b"Subject: x\r\n\r\nx\r\n").unwrap();
    assert!(reply.contains("zugang-erteilt"), "{reply}");
    kerberos_submit(&h, ANNA, &note(ANNA, "[P] Selbst freigeschaltet")).unwrap();
    assert_eq!(h.wait_provider(1, 20).len(), 1);
}
