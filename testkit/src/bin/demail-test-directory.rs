//! A throwaway Kerberos realm and LDAP directory for test harnesses in other languages
//! (the Thunderbird end-to-end tests and the demo are Python): the same starters the
//! Rust tests use ([`demail_testkit::kdc`], [`demail_testkit::ldap`]), driven by a JSON
//! spec on stdin. Prints one JSON line with everything a gateway and a helper need, then
//! runs until stdin closes (the harness's end), and stops both servers.
//!
//! Spec: `{"dir": "/tmp/x", "realm": "MUSTERSTADT.TEST", "service": "smtp/localhost",
//!   "tls": {"ca": …, "cert": …, "key": …} (optional; else a test CA is made),
//!   "people": [{"uid": "peter", "name": "Peter Meier", "password": "…", "mail": ["…"]}],
//!   "groups": [{"cn": "demail-nutzer", "members": ["peter", "group:bauamt"]}]}`
//! (groups are created in order; a member `group:x` is an earlier group).

use demail_testkit::kdc::Kdc;
use demail_testkit::ldap::{Person, Slapd};
use demail_testkit::Pki;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

fn fail(what: &str) -> ! {
    eprintln!("demail-test-directory: {what}");
    std::process::exit(2)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_else(|| fail(&format!("spec: \"{k}\" missing")))
}

fn main() {
    let mut line = String::new();
    // The spec is the first line; the rest of stdin is only watched for its end.
    let mut byte = [0u8; 1];
    let mut stdin = std::io::stdin();
    while stdin.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0] as char);
    }
    let spec: Value = serde_json::from_str(&line).unwrap_or_else(|e| fail(&format!("spec is not JSON: {e}")));
    let dir = PathBuf::from(s(&spec, "dir"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail(&e.to_string()));
    let realm = s(&spec, "realm");
    let service = spec.get("service").and_then(Value::as_str).unwrap_or("smtp/localhost");

    let pki = match spec.get("tls") {
        Some(t) => Pki {
            ca_cert: PathBuf::from(s(t, "ca")),
            ca_pem: std::fs::read_to_string(s(t, "ca")).unwrap_or_else(|e| fail(&e.to_string())),
            server_cert: PathBuf::from(s(t, "cert")),
            server_key: PathBuf::from(s(t, "key")),
            client_cert: PathBuf::new(),
            client_key: PathBuf::new(),
        },
        None => Pki::generate(&dir, "directory"),
    };
    let kdc = Kdc::start(&dir.join("kdc"), realm).unwrap_or_else(|e| fail(&e));
    let keytab = dir.join("gateway.keytab");
    let service_principal = kdc.add_service(service, &keytab).unwrap_or_else(|e| fail(&e));
    let ldap = Slapd::start(&dir.join("slapd"), &pki).unwrap_or_else(|e| fail(&e));
    let bind_password = "Dienst-Passwort-1";
    let bind_dn = ldap
        .add_person(&Person {
            uid: "svc-demail",
            display_name: "De-Mail-Gateway",
            password: bind_password,
            principal: &format!("svc-demail@{realm}"),
            mail: &[],
            proxy_addresses: &[],
        })
        .unwrap_or_else(|e| fail(&e));

    let mut people = BTreeMap::new();
    let mut dns: BTreeMap<String, String> = BTreeMap::new();
    for p in spec.get("people").and_then(Value::as_array).cloned().unwrap_or_default() {
        let uid = s(&p, "uid");
        let password = s(&p, "password");
        let principal = kdc.add_user(uid, password).unwrap_or_else(|e| fail(&e));
        let mail: Vec<String> = p
            .get("mail")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        let mail_refs: Vec<&str> = mail.iter().map(String::as_str).collect();
        let dn = ldap
            .add_person(&Person {
                uid,
                display_name: s(&p, "name"),
                password,
                principal: &principal,
                mail: &mail_refs,
                proxy_addresses: &[],
            })
            .unwrap_or_else(|e| fail(&e));
        let ccache = dir.join(format!("ccache-{uid}"));
        let cc = kdc.kinit(&principal, password, &ccache).unwrap_or_else(|e| fail(&e));
        dns.insert(uid.to_string(), dn.clone());
        people.insert(uid.to_string(), json!({"dn": dn, "principal": principal, "ccache": cc}));
    }
    let mut groups = BTreeMap::new();
    for g in spec.get("groups").and_then(Value::as_array).cloned().unwrap_or_default() {
        let cn = s(&g, "cn");
        let members: Vec<String> = g
            .get("members")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|m| match m.strip_prefix("group:") {
                        Some(gcn) => groups.get(gcn).cloned().unwrap_or_else(|| fail(&format!("unknown group {gcn}"))),
                        None => dns.get(m).cloned().unwrap_or_else(|| fail(&format!("unknown person {m}"))),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let dn = ldap.add_group(cn, &members).unwrap_or_else(|e| fail(&e));
        groups.insert(cn.to_string(), dn);
    }
    let out = json!({
        "krb5_conf": kdc.krb5_conf,
        "keytab": keytab,
        "service_principal": service_principal,
        "kdc_port": kdc.port,
        "ldap_url": ldap.url(),
        "ldaps_url": ldap.tls_url(),
        "ca": pki.ca_cert,
        "bind_dn": bind_dn,
        "bind_password": bind_password,
        "base_dn": demail_testkit::ldap::SUFFIX,
        "people": people,
        "groups": groups,
    });
    println!("{out}");
    // Until the harness closes stdin (or exits).
    let mut sink = Vec::new();
    let _ = stdin.read_to_end(&mut sink);
    drop(ldap);
    drop(kdc);
}
