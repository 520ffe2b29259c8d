//! An MIT Kerberos KDC (Debian `krb5-kdc`, `krb5-admin-server`, `krb5-user`) with a
//! throwaway realm in a temp directory, on a loopback port, TCP only.
//!
//! Processes that should use the realm get [`Kdc::env`] (`KRB5_CONFIG`); nothing of the
//! machine's own Kerberos configuration is read or changed.

use crate::{free_port, wait_for_port, ChildGuard};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Kdc {
    pub realm: String,
    pub port: u16,
    pub dir: PathBuf,
    /// Client configuration naming this KDC (`KRB5_CONFIG`).
    pub krb5_conf: PathBuf,
    kdc_conf: PathBuf,
    _child: ChildGuard,
}

impl Kdc {
    /// Create the realm's database and start `krb5kdc` in the foreground.
    pub fn start(dir: &Path, realm: &str) -> Result<Kdc, String> {
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let port = free_port();
        let krb5_conf = dir.join("krb5.conf");
        let kdc_conf = dir.join("kdc.conf");
        fs::write(
            &krb5_conf,
            format!(
                "[libdefaults]\n default_realm = {realm}\n dns_lookup_kdc = false\n dns_lookup_realm = false\n \
                 rdns = false\n dns_canonicalize_hostname = false\n udp_preference_limit = 1\n \
                 default_ccache_name = FILE:{d}/ccache-default\n\
                 [realms]\n {realm} = {{\n  kdc = 127.0.0.1:{port}\n  admin_server = 127.0.0.1\n }}\n\
                 [domain_realm]\n localhost = {realm}\n 127.0.0.1 = {realm}\n",
                d = dir.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        fs::write(
            &kdc_conf,
            format!(
                "[kdcdefaults]\n kdc_listen = \"\"\n kdc_tcp_listen = 127.0.0.1:{port}\n\
                 [realms]\n {realm} = {{\n  database_name = {d}/principal\n  key_stash_file = {d}/stash\n  \
                 acl_file = {d}/kadm5.acl\n  max_life = 10h\n  max_renewable_life = 1d\n  \
                 supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n }}\n\
                 [logging]\n kdc = FILE:{d}/kdc.log\n",
                d = dir.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        fs::write(dir.join("kadm5.acl"), "").map_err(|e| e.to_string())?;
        let kdc = |program: &str| {
            let mut c = Command::new(program);
            c.env("KRB5_CONFIG", &krb5_conf).env("KRB5_KDC_PROFILE", &kdc_conf);
            c
        };
        let out = kdc("kdb5_util")
            .args(["create", "-s", "-r", realm, "-P", "master-key-for-tests"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("kdb5_util: {e}"))?;
        if !out.status.success() {
            return Err(format!("kdb5_util create: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let mut cmd = kdc("krb5kdc");
        cmd.args(["-n", "-r", realm]);
        let child = ChildGuard::spawn("krb5kdc", cmd, Some(&dir.join("krb5kdc.out"))).map_err(|e| e.to_string())?;
        if !wait_for_port(port, Duration::from_secs(10)) {
            let log = fs::read_to_string(dir.join("kdc.log")).unwrap_or_default();
            return Err(format!("krb5kdc did not listen on {port}: {log}"));
        }
        Ok(Kdc { realm: realm.into(), port, dir: dir.into(), krb5_conf, kdc_conf, _child: child })
    }

    /// Environment for every process that uses the realm.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("KRB5_CONFIG".into(), self.krb5_conf.display().to_string())]
    }

    fn kadmin(&self, query: &str) -> Result<(), String> {
        let out = Command::new("kadmin.local")
            .env("KRB5_CONFIG", &self.krb5_conf)
            .env("KRB5_KDC_PROFILE", &self.kdc_conf)
            .args(["-r", &self.realm, "-q", query])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("kadmin.local: {e}"))?;
        let err = String::from_utf8_lossy(&out.stderr);
        // kadmin.local exits 0 even when the query failed; it says so on stderr.
        if !out.status.success() || err.lines().any(|l| l.contains("while ") || l.contains("error")) {
            return Err(format!("kadmin.local -q {query:?}: {err}"));
        }
        Ok(())
    }

    /// A person with a password, e.g. `peter` → `peter@REALM`.
    pub fn add_user(&self, name: &str, password: &str) -> Result<String, String> {
        self.kadmin(&format!("addprinc -pw {password} {name}"))?;
        Ok(format!("{name}@{}", self.realm))
    }

    /// A service principal (e.g. `smtp/localhost`) with a random key, written to `keytab`.
    pub fn add_service(&self, name: &str, keytab: &Path) -> Result<String, String> {
        self.kadmin(&format!("addprinc -randkey {name}"))?;
        self.kadmin(&format!("ktadd -k {} {name}", keytab.display()))?;
        Ok(format!("{name}@{}", self.realm))
    }

    pub fn delete(&self, name: &str) -> Result<(), String> {
        self.kadmin(&format!("delprinc -force {name}"))
    }

    /// `kinit` into a file credential cache; returns its `KRB5CCNAME` value.
    pub fn kinit(&self, principal: &str, password: &str, ccache: &Path) -> Result<String, String> {
        self.kinit_for(principal, password, ccache, None)
    }

    /// `kinit` with a lifetime (e.g. `"2s"`), for a ticket that expires during a test.
    pub fn kinit_for(
        &self,
        principal: &str,
        password: &str,
        ccache: &Path,
        lifetime: Option<&str>,
    ) -> Result<String, String> {
        let name = format!("FILE:{}", ccache.display());
        let mut cmd = Command::new("kinit");
        cmd.env("KRB5_CONFIG", &self.krb5_conf);
        if let Some(l) = lifetime {
            cmd.args(["-l", l]);
        }
        let mut child = cmd
            .args(["-c", &name, principal])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("kinit: {e}"))?;
        child.stdin.take().expect("stdin").write_all(format!("{password}\n").as_bytes()).map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("kinit {principal}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(name)
    }
}
