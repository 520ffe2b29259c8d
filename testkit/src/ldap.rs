//! OpenLDAP `slapd` (Debian `slapd`, `ldap-utils`) with a throwaway directory on loopback:
//! LDAP with StartTLS and LDAPS, both with the test CA's server certificate.
//!
//! The schema adds Active Directory's `sAMAccountName`, `userPrincipalName` and
//! `proxyAddresses` (as an auxiliary class under a private OID), so tests can use the
//! attribute names an AD deployment uses. Groups are `groupOfNames` with `member`; a
//! group may be a member of another (nested).

use crate::{free_port, wait_for_port, ChildGuard, Pki};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const SUFFIX: &str = "dc=musterstadt,dc=test";
pub const ADMIN_DN: &str = "cn=admin,dc=musterstadt,dc=test";
pub const ADMIN_PASSWORD: &str = "admin-secret";

const AD_SCHEMA: &str = "\
attributetype ( 1.3.6.1.4.1.99999.7.1.1 NAME 'sAMAccountName' EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.7.1.2 NAME 'userPrincipalName' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.7.1.3 NAME 'proxyAddresses' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
objectclass ( 1.3.6.1.4.1.99999.7.2.1 NAME 'demailAdUser' AUXILIARY MAY ( sAMAccountName $ userPrincipalName $ proxyAddresses ) )
";

pub struct Slapd {
    /// Plain LDAP port (StartTLS offered).
    pub port: u16,
    /// LDAPS port.
    pub tls_port: u16,
    pub dir: PathBuf,
    child: Option<ChildGuard>,
    conf: PathBuf,
}

/// A person in the directory.
pub struct Person<'a> {
    /// `uid`, also `sAMAccountName`.
    pub uid: &'a str,
    pub display_name: &'a str,
    pub password: &'a str,
    /// `userPrincipalName`, e.g. `peter@MUSTERSTADT.TEST`.
    pub principal: &'a str,
    pub mail: &'a [&'a str],
    /// `proxyAddresses` values (`SMTP:` primary, `smtp:` others).
    pub proxy_addresses: &'a [&'a str],
}

impl Slapd {
    /// Write the configuration and the base entries, then start `slapd` in the foreground.
    pub fn start(dir: &Path, pki: &Pki) -> Result<Slapd, String> {
        fs::create_dir_all(dir.join("db")).map_err(|e| e.to_string())?;
        fs::write(dir.join("ad.schema"), AD_SCHEMA).map_err(|e| e.to_string())?;
        let conf = dir.join("slapd.conf");
        fs::write(
            &conf,
            format!(
                "include /etc/ldap/schema/core.schema\n\
                 include /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/inetorgperson.schema\n\
                 include {d}/ad.schema\n\
                 modulepath /usr/lib/ldap\n\
                 moduleload back_mdb\n\
                 pidfile {d}/slapd.pid\n\
                 TLSCACertificateFile {ca}\n\
                 TLSCertificateFile {cert}\n\
                 TLSCertificateKeyFile {key}\n\
                 database mdb\n\
                 maxsize 67108864\n\
                 suffix \"{SUFFIX}\"\n\
                 rootdn \"{ADMIN_DN}\"\n\
                 rootpw {ADMIN_PASSWORD}\n\
                 directory {d}/db\n\
                 index objectClass eq\n\
                 index uid,member,sAMAccountName,userPrincipalName eq\n\
                 access to attrs=userPassword by anonymous auth by self write by * none\n\
                 access to * by users read by * none\n",
                d = dir.display(),
                ca = pki.ca_cert.display(),
                cert = pki.server_cert.display(),
                key = pki.server_key.display(),
            ),
        )
        .map_err(|e| e.to_string())?;
        let base = format!(
            "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Musterstadt\ndc: musterstadt\n\n\
             dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n"
        );
        let mut add = Command::new("slapadd")
            .args(["-f", &conf.display().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("slapadd: {e}"))?;
        add.stdin.take().expect("stdin").write_all(base.as_bytes()).map_err(|e| e.to_string())?;
        let out = add.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("slapadd: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let mut s = Slapd { port: free_port(), tls_port: free_port(), dir: dir.into(), child: None, conf };
        s.run()?;
        Ok(s)
    }

    fn run(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("slapd");
        cmd.args([
            "-d",
            "0",
            "-f",
            &self.conf.display().to_string(),
            "-h",
            &format!("ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/", self.port, self.tls_port),
        ]);
        self.child =
            Some(ChildGuard::spawn("slapd", cmd, Some(&self.dir.join("slapd.log"))).map_err(|e| e.to_string())?);
        if !wait_for_port(self.port, Duration::from_secs(10)) || !wait_for_port(self.tls_port, Duration::from_secs(5)) {
            let log = fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default();
            return Err(format!("slapd did not listen: {log}"));
        }
        Ok(())
    }

    /// Stop the server (the directory is "down"); [`Slapd::restart`] brings it back.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.terminate(Duration::from_secs(5));
        }
    }

    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.run()
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn tls_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port)
    }

    /// `ldapmodify -a` (or plain modify) as the admin over the plain port.
    pub fn modify(&self, ldif: &str) -> Result<(), String> {
        let mut child = Command::new("ldapmodify")
            .args(["-a", "-x", "-H", &self.url(), "-D", ADMIN_DN, "-w", ADMIN_PASSWORD])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("ldapmodify: {e}"))?;
        child.stdin.take().expect("stdin").write_all(ldif.as_bytes()).map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("ldapmodify: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(())
    }

    pub fn person_dn(uid: &str) -> String {
        format!("uid={uid},ou=people,{SUFFIX}")
    }

    pub fn group_dn(cn: &str) -> String {
        format!("cn={cn},ou=groups,{SUFFIX}")
    }

    pub fn add_person(&self, p: &Person) -> Result<String, String> {
        let dn = Self::person_dn(p.uid);
        let mut ldif = format!(
            "dn: {dn}\nobjectClass: inetOrgPerson\nobjectClass: demailAdUser\nuid: {uid}\nsAMAccountName: {uid}\n\
             cn: {name}\nsn: {sn}\ndisplayName: {name}\nuserPassword: {pw}\nuserPrincipalName: {upn}\n",
            uid = p.uid,
            name = p.display_name,
            sn = p.display_name.rsplit(' ').next().unwrap_or(p.display_name),
            pw = p.password,
            upn = p.principal,
        );
        for m in p.mail {
            ldif.push_str(&format!("mail: {m}\n"));
        }
        for a in p.proxy_addresses {
            ldif.push_str(&format!("proxyAddresses: {a}\n"));
        }
        self.modify(&ldif)?;
        Ok(dn)
    }

    /// A group with members given as DNs (people or other groups).
    pub fn add_group(&self, cn: &str, members: &[String]) -> Result<String, String> {
        let dn = Self::group_dn(cn);
        let mut ldif = format!("dn: {dn}\nobjectClass: groupOfNames\ncn: {cn}\n");
        // groupOfNames needs at least one member; an empty group names itself.
        if members.is_empty() {
            ldif.push_str(&format!("member: {dn}\n"));
        }
        for m in members {
            ldif.push_str(&format!("member: {m}\n"));
        }
        self.modify(&ldif)?;
        Ok(dn)
    }

    pub fn add_member(&self, group_dn: &str, member_dn: &str) -> Result<(), String> {
        self.modify(&format!("dn: {group_dn}\nchangetype: modify\nadd: member\nmember: {member_dn}\n"))
    }

    pub fn remove_member(&self, group_dn: &str, member_dn: &str) -> Result<(), String> {
        self.modify(&format!("dn: {group_dn}\nchangetype: modify\ndelete: member\nmember: {member_dn}\n"))
    }
}
