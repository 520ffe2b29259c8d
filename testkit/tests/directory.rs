//! The directory starters work with the real Debian servers: a KDC issues tickets for its
//! realm, slapd answers over StartTLS and LDAPS with the test CA, and binds check passwords.

use demail_testkit::kdc::Kdc;
use demail_testkit::ldap::{Person, Slapd};
use demail_testkit::{temp_dir, Pki};
use std::process::Command;

#[test]
fn kdc_issues_tickets_for_users_and_a_service_keytab() {
    let d = temp_dir();
    let kdc = Kdc::start(&d.path().join("kdc"), "MUSTERSTADT.TEST").unwrap();
    let peter = kdc.add_user("peter", "Peter-Passwort-1").unwrap();
    assert_eq!(peter, "peter@MUSTERSTADT.TEST");
    let keytab = d.path().join("gateway.keytab");
    kdc.add_service("smtp/localhost", &keytab).unwrap();
    assert!(keytab.metadata().unwrap().len() > 0);
    let cc = kdc.kinit(&peter, "Peter-Passwort-1", &d.path().join("cc-peter")).unwrap();
    let klist = Command::new("klist").env("KRB5_CONFIG", &kdc.krb5_conf).args(["-c", &cc]).output().unwrap();
    assert!(String::from_utf8_lossy(&klist.stdout).contains("krbtgt/MUSTERSTADT.TEST@MUSTERSTADT.TEST"));
    // A service ticket for the gateway's principal.
    let kvno = Command::new("kvno")
        .env("KRB5_CONFIG", &kdc.krb5_conf)
        .env("KRB5CCNAME", &cc)
        .arg("smtp/localhost@MUSTERSTADT.TEST")
        .output()
        .unwrap();
    assert!(kvno.status.success(), "{}", String::from_utf8_lossy(&kvno.stderr));
    assert!(kdc.kinit(&peter, "falsch", &d.path().join("cc-x")).is_err());
}

#[test]
fn slapd_serves_people_and_nested_groups_over_tls() {
    let d = temp_dir();
    let pki = Pki::generate(d.path(), "ldap");
    let ldap = Slapd::start(&d.path().join("slapd"), &pki).unwrap();
    let peter = ldap
        .add_person(&Person {
            uid: "peter",
            display_name: "Peter Meier",
            password: "Peter-Passwort-1",
            principal: "peter@MUSTERSTADT.TEST",
            mail: &["peter.meier@musterstadt.test"],
            proxy_addresses: &["SMTP:peter.meier@musterstadt.test", "smtp:p.meier@musterstadt.test"],
        })
        .unwrap();
    let inner = ldap.add_group("bauamt", std::slice::from_ref(&peter)).unwrap();
    let outer = ldap.add_group("demail-nutzer", &[inner]).unwrap();
    let search = |url: &str, extra: &[&str]| {
        Command::new("ldapsearch")
            .env("LDAPTLS_CACERT", &pki.ca_cert)
            .args(["-x", "-H", url, "-D", &peter, "-w", "Peter-Passwort-1", "-b", &outer])
            .args(extra)
            .arg("member")
            .output()
            .unwrap()
    };
    for (url, extra) in [(ldap.url(), vec!["-ZZ"]), (ldap.tls_url(), vec![])] {
        let out = search(&url, &extra);
        assert!(out.status.success(), "{url}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("member: cn=bauamt,ou=groups"), "{url}");
    }
    // A wrong password is refused (what the gateway's LDAP bind relies on).
    let bad = Command::new("ldapwhoami")
        .env("LDAPTLS_CACERT", &pki.ca_cert)
        .args(["-x", "-ZZ", "-H", &ldap.url(), "-D", &peter, "-w", "falsch"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
