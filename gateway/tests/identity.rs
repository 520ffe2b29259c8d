//! Who sends, against the real servers: an MIT Kerberos KDC and OpenLDAP slapd, started
//! for each test on loopback (testkit). The SASL GSSAPI exchange runs between a real
//! Kerberos client context (the caseworker's ticket) and the gateway's acceptor; the
//! directory lookups run over StartTLS/LDAPS with the test CA.

use cross_krb5::{ClientCtx, InitiateFlags, K5Ctx, PendingClientCtx, Step as KStep};
use demail_core::rights::dn_eq;
use demail_gateway::identity::directory::{Directory, DirectoryConfig, Failure, Freshness, Key};
use demail_gateway::identity::kerberos::{GssapiServer, Step};
use demail_testkit::kdc::Kdc;
use demail_testkit::ldap::{Person as LdapPerson, Slapd};
use demail_testkit::{temp_dir, Pki};
use std::time::Duration;

const REALM: &str = "MUSTERSTADT.TEST";

/// The client's side of RFC 4752, as the helper runs it; `authz` is the identity it asks for.
struct Client {
    pending: Option<PendingClientCtx>,
    ctx: Option<ClientCtx>,
    authz: String,
}

impl Client {
    fn start(target: &str, authz: &str) -> (Client, Vec<u8>) {
        let (p, tok) = ClientCtx::new(InitiateFlags::empty(), None, target, None).expect("client context");
        (Client { pending: Some(p), ctx: None, authz: authz.into() }, tok.to_vec())
    }

    fn answer(&mut self, challenge: &[u8]) -> Vec<u8> {
        if let Some(p) = self.pending.take() {
            return match p.step(challenge).expect("client step") {
                KStep::Continue((p, tok)) => {
                    self.pending = Some(p);
                    tok.to_vec()
                }
                KStep::Finished((ctx, tok)) => {
                    self.ctx = Some(ctx);
                    tok.map(|t| t.to_vec()).unwrap_or_default()
                }
            };
        }
        let ctx = self.ctx.as_mut().expect("established");
        let offer = ctx.unwrap(challenge).expect("unwrap the layer offer");
        assert_eq!(offer[0] & 1, 1, "no security layer offered");
        let mut reply = vec![1, 0, 0, 0];
        reply.extend_from_slice(self.authz.as_bytes());
        ctx.wrap(false, &reply).expect("wrap").to_vec()
    }
}

fn run(server: &mut GssapiServer, client: &mut Client, first: Vec<u8>) -> Step {
    let mut response = first;
    for _ in 0..10 {
        match server.step(&response) {
            Step::Challenge(c) => response = client.answer(&c),
            other => return other,
        }
    }
    panic!("exchange did not end");
}

struct Realm {
    _dir: demail_testkit::TempDir,
    kdc: Kdc,
}

/// A realm with two caseworkers and the gateway's service key; env for both sides.
fn realm() -> Realm {
    let dir = temp_dir();
    let kdc = Kdc::start(&dir.path().join("kdc"), REALM).unwrap();
    kdc.add_user("peter", "Peter-Passwort-1").unwrap();
    kdc.add_user("anna", "Anna-Passwort-1").unwrap();
    let keytab = dir.path().join("gateway.keytab");
    kdc.add_service("smtp/localhost", &keytab).unwrap();
    // One test per process (nextest), so process-wide Kerberos settings are safe here.
    std::env::set_var("KRB5_CONFIG", &kdc.krb5_conf);
    std::env::set_var("KRB5_KTNAME", format!("FILE:{}", keytab.display()));
    Realm { _dir: dir, kdc }
}

#[test]
fn kerberos_ticket_authenticates_the_person() {
    let r = realm();
    let cc = r.kdc.kinit("peter@MUSTERSTADT.TEST", "Peter-Passwort-1", &r.kdc.dir.join("cc-peter")).unwrap();
    std::env::set_var("KRB5CCNAME", &cc);
    let mut server = GssapiServer::new(Some(format!("smtp/localhost@{REALM}")), vec![REALM.into()]);
    let (mut client, first) = Client::start(&format!("smtp/localhost@{REALM}"), "");
    match run(&mut server, &mut client, first) {
        Step::Done(p) => assert_eq!(p, "peter@MUSTERSTADT.TEST"),
        other => panic!("{other:?}"),
    }
    // Asking to act as someone else is refused.
    let mut server = GssapiServer::new(None, vec![]);
    let (mut client, first) = Client::start(&format!("smtp/localhost@{REALM}"), "anna@MUSTERSTADT.TEST");
    match run(&mut server, &mut client, first) {
        Step::Failed(r) => assert_eq!(r.code, "identity.kerberos_failed"),
        other => panic!("{other:?}"),
    }
    // A realm the gateway does not accept.
    let mut server = GssapiServer::new(None, vec!["ANDERE.TEST".into()]);
    let (mut client, first) = Client::start(&format!("smtp/localhost@{REALM}"), "");
    assert!(matches!(run(&mut server, &mut client, first), Step::Failed(_)));
}

#[test]
fn garbage_tokens_fail_without_panic() {
    let _r = realm();
    for junk in [&b"\x60\x82"[..], b"not a token", &[0u8; 300][..]] {
        let mut server = GssapiServer::new(None, vec![]);
        assert!(matches!(server.step(junk), Step::Failed(_)), "{junk:?}");
        // After a failure the exchange is over.
        assert!(matches!(server.step(b"x"), Step::Failed(_)));
    }
    // An empty first response asks for the token.
    let mut server = GssapiServer::new(None, vec![]);
    assert!(matches!(server.step(b""), Step::Challenge(c) if c.is_empty()));
}

struct Dir {
    _tmp: demail_testkit::TempDir,
    ldap: Slapd,
    pki: Pki,
    peter: String,
    demail_group: String,
    inner: String,
    svc: String,
}

/// People and nested groups: peter is in "bauamt", which is in "demail-nutzer".
fn directory() -> Dir {
    let tmp = temp_dir();
    let pki = Pki::generate(tmp.path(), "ldap");
    let ldap = Slapd::start(&tmp.path().join("slapd"), &pki).unwrap();
    let svc = ldap
        .add_person(&LdapPerson {
            uid: "svc-demail",
            display_name: "De-Mail Gateway",
            password: "Dienst-Passwort-1",
            principal: "svc-demail@MUSTERSTADT.TEST",
            mail: &[],
            proxy_addresses: &[],
        })
        .unwrap();
    let peter = ldap
        .add_person(&LdapPerson {
            uid: "peter",
            display_name: "Peter Meier",
            password: "Peter-Passwort-1",
            principal: "peter@MUSTERSTADT.TEST",
            mail: &["peter.meier@musterstadt.test"],
            proxy_addresses: &["SMTP:peter.meier@musterstadt.test", "smtp:p.meier@musterstadt.test"],
        })
        .unwrap();
    let anna = ldap
        .add_person(&LdapPerson {
            uid: "anna",
            display_name: "Anna Schulz",
            password: "Anna-Passwort-1",
            principal: "anna@MUSTERSTADT.TEST",
            mail: &["anna.schulz@musterstadt.test"],
            proxy_addresses: &[],
        })
        .unwrap();
    // groupOfNames needs a member, so peter is not the only one (he is removed in a test).
    let inner = ldap.add_group("bauamt", &[peter.clone(), anna]).unwrap();
    let demail_group = ldap.add_group("demail-nutzer", std::slice::from_ref(&inner)).unwrap();
    Dir { _tmp: tmp, ldap, pki, peter, demail_group, inner, svc }
}

fn config(d: &Dir, url: String, starttls: bool, ttl: u64, grace: u64) -> DirectoryConfig {
    let toml = format!(
        "url = {url:?}\nstarttls = {starttls}\nca = {ca:?}\nbind_dn = {bind:?}\nbase_dn = \"dc=musterstadt,dc=test\"\n\
         cache_ttl_secs = {ttl}\ngrace_secs = {grace}\ntimeout_secs = 2\n",
        ca = d.pki.ca_cert.display().to_string(),
        bind = d.svc,
    );
    toml::from_str(&toml).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn directory_gives_addresses_and_nested_groups_over_tls() {
    let d = directory();
    rt().block_on(async {
        for (url, starttls) in [(d.ldap.url(), true), (d.ldap.tls_url(), false)] {
            let dir = Directory::new(config(&d, url.clone(), starttls, 60, 60), "Dienst-Passwort-1".into()).unwrap();
            let (p, fresh) = dir.person(&Key::Principal("peter@MUSTERSTADT.TEST".into())).await.unwrap();
            assert_eq!(fresh, Freshness::Fresh, "{url}");
            assert_eq!(p.display_name, "Peter Meier");
            assert_eq!(p.addresses, ["peter.meier@musterstadt.test", "p.meier@musterstadt.test"]);
            assert!(p.in_group(&d.demail_group), "nested membership through bauamt: {:?}", p.groups);
            assert!(p.groups.iter().any(|g| dn_eq(g, &d.inner)));
            let (_, again) = dir.person(&Key::Principal("peter@MUSTERSTADT.TEST".into())).await.unwrap();
            assert_eq!(again, Freshness::Cached);
            assert!(matches!(dir.person(&Key::Login("niemand".into())).await, Err(Failure::Refused(_))));
        }
        // Plain LDAP without StartTLS is refused by configuration.
        assert!(Directory::new(config(&d, d.ldap.url(), false, 60, 60), "x".into()).is_err());
    });
}

#[test]
fn passwords_are_checked_by_a_bind_as_the_person() {
    let d = directory();
    rt().block_on(async {
        let dir = Directory::new(config(&d, d.ldap.url(), true, 60, 60), "Dienst-Passwort-1".into()).unwrap();
        let p = dir.check_password("peter", "Peter-Passwort-1").await.unwrap();
        assert_eq!(p.display_name, "Peter Meier");
        for (login, pw) in [("peter", "falsch"), ("peter", ""), ("niemand", "Peter-Passwort-1"), ("", "x")] {
            match dir.check_password(login, pw).await {
                Err(Failure::Refused(e)) => assert_eq!(e.code(), "identity.wrong_password", "{login}/{pw}"),
                other => panic!("{login}/{pw}: {other:?}"),
            }
        }
        // A filter metacharacter in the login cannot widen the search.
        assert!(dir.check_password("*", "Peter-Passwort-1").await.is_err());
        assert!(dir.check_password("pet*", "Peter-Passwort-1").await.is_err());
    });
}

#[test]
fn a_removal_counts_after_the_ttl_and_the_grace_time_bounds_an_outage() {
    let mut d = directory();
    rt().block_on(async {
        let dir = Directory::new(config(&d, d.ldap.url(), true, 1, 2), "Dienst-Passwort-1".into()).unwrap();
        let key = Key::Principal("peter@MUSTERSTADT.TEST".into());
        assert!(dir.person(&key).await.unwrap().0.in_group(&d.demail_group));
        d.ldap.remove_member(&d.inner, &d.peter).unwrap();
        // Within the TTL the cached answer stands; after it the removal counts.
        assert!(dir.person(&key).await.unwrap().0.in_group(&d.demail_group));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (p, fresh) = dir.person(&key).await.unwrap();
        assert_eq!(fresh, Freshness::Fresh);
        assert!(!p.in_group(&d.demail_group));
        d.ldap.add_member(&d.inner, &d.peter).unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(dir.person(&key).await.unwrap().0.in_group(&d.demail_group));

        // Directory down: the cached facts hold within the grace time, then it is "unavailable".
        d.ldap.stop();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (p, fresh) = dir.person(&key).await.unwrap();
        assert_eq!(fresh, Freshness::Stale);
        assert!(p.in_group(&d.demail_group));
        tokio::time::sleep(Duration::from_millis(2100)).await;
        match dir.person(&key).await {
            Err(Failure::Unavailable(e)) => assert_eq!(e.code(), "directory.unavailable"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(dir.check_password("peter", "Peter-Passwort-1").await, Err(Failure::Unavailable(_))));
        d.ldap.restart().unwrap();
        assert_eq!(dir.person(&key).await.unwrap().1, Freshness::Fresh);
    });
}
