//! PostgreSQL from Debian's packages for the gateway cluster tests: `initdb` into a temp
//! directory and `pg_ctl` on a free loopback port, with TLS from a test CA, stopped on drop.
//!
//! As root (CI) the server runs as the `postgres` system user that the `postgresql` package
//! creates (`runuser`), since PostgreSQL refuses to run as root; otherwise as the caller.

use crate::ca::Pki;
use crate::ports::{free_port, wait_for_port};
use crate::process::{have, whoami};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The database and role the gateway uses, and the role's password.
pub const DATABASE: &str = "demail";
pub const USER: &str = "demail";
pub const PASSWORD: &str = "Datenbank-Passwort-1";

pub struct Postgres {
    pub port: u16,
    /// CA of the server certificate (for `[storage] ca`).
    pub ca: PathBuf,
    pub dir: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    bin: PathBuf,
    run_as: Option<&'static str>,
    log: PathBuf,
    running: AtomicBool,
}

/// The newest installed server's programs (`/usr/lib/postgresql/<version>/bin`).
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p): &(u32, PathBuf)| p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

fn out(o: std::io::Result<Output>, what: &str) -> Result<String, String> {
    let o = o.map_err(|e| format!("{what}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{what}: {}\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).to_string())
}

impl Postgres {
    /// A new cluster under `dir/postgres` with TLS from a CA generated there, the role
    /// [`USER`] (password [`PASSWORD`]) owning the database [`DATABASE`]. Only TLS
    /// connections with a password are accepted over TCP.
    pub fn start(dir: &Path) -> Result<Postgres, String> {
        let bin = bin_dir().ok_or("PostgreSQL fehlt / missing: run scripts/setup test (postgresql)")?;
        if !have("runuser") && whoami().1 == 0 {
            return Err("runuser missing".into());
        }
        let dir = dir.join("postgres");
        let (data, sock) = (dir.join("data"), dir.join("sock"));
        fs::create_dir_all(&sock).map_err(|e| e.to_string())?;
        let pki = Pki::generate(&dir, "pg");
        let run_as = (whoami().1 == 0).then_some("postgres");
        if let Some(user) = run_as {
            use std::os::unix::fs::PermissionsExt;
            // The server user must reach its directory through the test's temp dirs.
            let mut p = dir.clone();
            while let Some(parent) = p.parent() {
                if parent == Path::new("/") || parent == std::env::temp_dir() {
                    break;
                }
                let _ = fs::set_permissions(parent, fs::Permissions::from_mode(0o755));
                p = parent.to_path_buf();
            }
            out(Command::new("chown").args(["-R", user]).arg(&dir).output(), "chown")?;
        }
        let port = free_port();
        let pg = Postgres {
            port,
            ca: pki.ca_cert.clone(),
            data,
            sock,
            bin,
            run_as,
            log: dir.join("postgres.log"),
            dir,
            running: AtomicBool::new(false),
        };
        pg.server(&["initdb", "-D"], &[&pg.data], &["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"])?;
        for (from, to) in [(&pki.server_cert, "server.pem"), (&pki.server_key, "server-key.pem")] {
            fs::copy(from, pg.data.join(to)).map_err(|e| e.to_string())?;
        }
        fs::write(
            pg.data.join("postgresql.auto.conf"),
            format!(
                "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nssl = on\n\
                 ssl_cert_file = 'server.pem'\nssl_key_file = 'server-key.pem'\nmax_connections = 200\n\
                 shared_buffers = 128MB\nfsync = on\nsynchronous_commit = on\nlog_min_messages = warning\n",
                pg.sock.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        fs::write(
            pg.data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 0.0.0.0/0 reject\n",
        )
        .map_err(|e| e.to_string())?;
        if let Some(user) = run_as {
            out(Command::new("chown").args(["-R", user]).arg(&pg.data).output(), "chown")?;
        }
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(pg.data.join("server-key.pem"), fs::Permissions::from_mode(0o600));
        }
        pg.ctl("start")?;
        pg.sql(&format!("CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'"))?;
        pg.sql(&format!("CREATE DATABASE {DATABASE} OWNER {USER}"))?;
        Ok(pg)
    }

    /// Run a server program as the server's user.
    fn server(&self, prog: &[&str], paths: &[&Path], args: &[&str]) -> Result<String, String> {
        let exe = self.bin.join(prog[0]);
        let mut cmd = match self.run_as {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(&prog[1..]).args(paths).args(args).current_dir("/");
        out(cmd.output(), prog[0])
    }

    fn ctl(&self, action: &str) -> Result<(), String> {
        let log = self.log.clone();
        let l = log.to_str().unwrap_or_default();
        let res = match action {
            "start" => self.server(&["pg_ctl", "-D"], &[&self.data], &["-l", l, "-w", "-t", "60", "start"]),
            "restart" => {
                self.server(&["pg_ctl", "-D"], &[&self.data], &["-l", l, "-w", "-t", "60", "-m", "fast", "restart"])
            }
            _ => self.server(&["pg_ctl", "-D"], &[&self.data], &["-w", "-t", "60", "-m", "fast", "stop"]),
        };
        if let Some(user) = self.run_as {
            // The log is opened by pg_ctl as the server user; keep it readable for the test.
            let _ = Command::new("chown").args([user]).arg(&self.log).status();
        }
        res.map_err(|e| format!("{e}\n{}", fs::read_to_string(&self.log).unwrap_or_default()))?;
        self.running.store(action != "stop", Ordering::SeqCst);
        if action != "stop" && !wait_for_port(self.port, Duration::from_secs(30)) {
            return Err("postgres did not listen".into());
        }
        Ok(())
    }

    /// Stop and start again (`pg_ctl restart -m fast`): every session is cut.
    pub fn restart(&self) -> Result<(), String> {
        self.ctl("restart")
    }

    pub fn stop(&self) -> Result<(), String> {
        self.ctl("stop")
    }

    pub fn start_again(&self) -> Result<(), String> {
        self.ctl("start")
    }

    /// Run SQL as the superuser over the local socket (in [`DATABASE`] once it exists);
    /// unaligned, tuples only: one line per row, `|` between columns.
    pub fn sql(&self, query: &str) -> Result<String, String> {
        let db = if query.starts_with("CREATE DATABASE") || query.starts_with("CREATE ROLE") {
            "postgres"
        } else {
            DATABASE
        };
        let o = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-h"])
            .arg(&self.sock)
            .args(["-p", &self.port.to_string(), "-d", db, "-c", query])
            .output();
        out(o, "psql").map(|s| s.trim_end().to_string())
    }

    /// One number from [`Postgres::sql`].
    pub fn count(&self, query: &str) -> i64 {
        let s = self.sql(query).unwrap_or_else(|e| panic!("{query}: {e}"));
        s.trim().parse().unwrap_or_else(|_| panic!("{query}: not a number: {s}"))
    }

    /// The `[storage]` section for a gateway node (`password_env` names the variable
    /// holding [`PASSWORD`]; `port` lets it go through a proxy).
    pub fn storage_toml(&self, node: &str, port: u16, password_env: &str, lease_secs: u64) -> String {
        format!(
            "\n[storage]\nbackend = \"postgres\"\nhost = \"127.0.0.1\"\nport = {port}\ndatabase = \"{DATABASE}\"\n\
             user = \"{USER}\"\npassword_env = \"{password_env}\"\nca = \"{}\"\nnode = \"{node}\"\nlease_secs = {lease_secs}\n\
             timeout_secs = 5\n",
            self.ca.display()
        )
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running.load(Ordering::SeqCst) {
            let _ = self.server(&["pg_ctl", "-D"], &[&self.data], &["-w", "-t", "30", "-m", "immediate", "stop"]);
        }
    }
}
