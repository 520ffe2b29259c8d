//! The organisation's directory as the gateway and helper suites need it: slapd with
//! the gateway's service account and a De-Mail group, and people added on first use, so
//! that every test signs in as the person whose address it sends from (LDAP password
//! sign-in), never with a shared account.

use crate::ldap::{Person, Slapd, SUFFIX};
use crate::Pki;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Every test person's directory password.
pub const PERSON_PASSWORD: &str = "Person-Passwort-1";
/// The gateway's own directory account's password (in the environment variable the
/// gateway configuration names).
pub const BIND_PASSWORD: &str = "Dienst-Passwort-1";

pub struct TestDirectory {
    pub ldap: Slapd,
    pub ca: PathBuf,
    pub bind_dn: String,
    /// Members hold the De-Mail right.
    pub group_dn: String,
    people: Mutex<HashSet<String>>,
}

impl TestDirectory {
    /// slapd with TLS from `pki` (the gateway trusts `pki.ca_cert` for it).
    pub fn start(dir: &Path, pki: &Pki) -> TestDirectory {
        let ldap = Slapd::start(dir, pki).unwrap_or_else(|e| panic!("slapd: {e}"));
        let bind_dn = ldap
            .add_person(&Person {
                uid: "svc-demail",
                display_name: "De-Mail-Gateway",
                password: BIND_PASSWORD,
                principal: "svc-demail@MUSTERSTADT.TEST",
                mail: &[],
                proxy_addresses: &[],
            })
            .unwrap_or_else(|e| panic!("{e}"));
        // groupOfNames needs a member: the service account (it has no mail address).
        let group_dn =
            ldap.add_group("demail-nutzer", std::slice::from_ref(&bind_dn)).unwrap_or_else(|e| panic!("{e}"));
        TestDirectory { ldap, ca: pki.ca_cert.clone(), bind_dn, group_dn, people: Mutex::new(HashSet::new()) }
    }

    /// The person who owns `address`, created on first use (login = the address, in the
    /// De-Mail group unless `demail` is false). Returns the login.
    pub fn person(&self, address: &str) -> String {
        self.person_with(address, true)
    }

    pub fn person_with(&self, address: &str, demail: bool) -> String {
        self.add(&address.trim().to_lowercase(), address, None, demail)
    }

    /// A person with their own login (e.g. unique per test) who owns `address`.
    pub fn person_named(&self, login: &str, address: &str) -> String {
        self.add(login, address, None, true)
    }

    /// A person the KDC knows as `principal` (`peter@REALM`); returns the directory DN.
    pub fn kerberos_person(&self, login: &str, address: &str, principal: &str, demail: bool) -> String {
        self.add(login, address, Some(principal), demail);
        crate::ldap::Slapd::person_dn(login)
    }

    fn add(&self, login: &str, address: &str, principal: Option<&str>, demail: bool) -> String {
        let login = login.to_string();
        let address = address.trim().to_lowercase();
        let mut people = self.people.lock().unwrap();
        if people.insert(login.clone()) {
            // "peter.meier@…" → "Peter Meier"
            let name = address
                .split('@')
                .next()
                .unwrap_or(&address)
                .split('.')
                .map(|w| w.chars().take(1).flat_map(char::to_uppercase).chain(w.chars().skip(1)).collect::<String>())
                .collect::<Vec<_>>()
                .join(" ");
            let dn = self
                .ldap
                .add_person(&Person {
                    uid: &login,
                    display_name: &name,
                    password: PERSON_PASSWORD,
                    principal: &principal
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("{}@MUSTERSTADT.TEST", login.replace('@', "."))),
                    mail: &[&address],
                    proxy_addresses: &[],
                })
                .unwrap_or_else(|e| panic!("{e}"));
            if demail {
                self.ldap.add_member(&self.group_dn, &dn).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        login
    }

    /// `[identity]` with Kerberos as well (keytab, realm) for [`TestDirectory::gateway_toml`].
    pub fn gateway_toml_kerberos(&self, bind_env: &str, keytab: &Path, realm: &str) -> String {
        self.gateway_toml(bind_env).replacen(
            "[identity]\n",
            &format!("[identity]\nkerberos = true\nkeytab = \"{}\"\nrealms = [\"{realm}\"]\n", keytab.display()),
            1,
        )
    }

    /// `[identity]` (directory password sign-in, the De-Mail group) and `[directory]`
    /// for the gateway's configuration; the bind password is read from `bind_env`.
    pub fn gateway_toml(&self, bind_env: &str) -> String {
        format!(
            "\n[identity]\nldap_password = true\ndemail_group = \"{group}\"\n\n\
             [directory]\nurl = \"{url}\"\nstarttls = true\nca = \"{ca}\"\nbind_dn = \"{bind}\"\n\
             bind_password_env = \"{bind_env}\"\nbase_dn = \"{SUFFIX}\"\ncache_ttl_secs = 60\ngrace_secs = 900\n",
            group = self.group_dn,
            url = self.ldap.url(),
            ca = self.ca.display(),
            bind = self.bind_dn,
        )
    }
}
