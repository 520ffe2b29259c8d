//! A gateway cluster for the tests and benchmarks: real PostgreSQL (testkit, TLS from a
//! test CA), gateway nodes as real processes sharing it, each optionally through a proxy
//! the test can partition, and the bookkeeping checks every run must pass.

use super::*;
use demail_smtp::{Accepted, AuthResult, Authenticated, Envelope, Handler, Reject};
use demail_testkit::{postgres, temp_dir, ChildGuard, Postgres, Proxy, TempDir};
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const PG_ENV: &str = "TEST_PG_PASSWORD";

pub struct Node {
    pub name: String,
    pub out_port: u16,
    pub in_port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    pub guard: Option<ChildGuard>,
}

impl Node {
    pub fn pid(&self) -> u32 {
        self.guard.as_ref().map(|g| g.id()).unwrap_or(0)
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.pid().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig} {}", self.name);
    }
    pub fn kill(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.kill();
        }
    }
}

pub struct Cluster {
    /// PKI, directory, Dovecot, provider; its own gateway process is node 0.
    pub h: Harness,
    pub pg: Postgres,
    /// One proxy per node between it and PostgreSQL.
    pub proxies: Vec<Proxy>,
    pub nodes: Vec<Node>,
    pub lease_secs: u64,
    _pgdir: TempDir,
}

impl Cluster {
    /// PostgreSQL and `n` proxies; `started` nodes running (node 0 always).
    pub fn new(n: usize, started: usize, lease_secs: u64) -> Cluster {
        Cluster::build(n, started, lease_secs, true, |c| c)
    }

    /// With `proxied` each node reaches PostgreSQL through its own [`Proxy`], else
    /// directly (benchmarks); `edit` changes the gateway configuration as [`Harness::custom`].
    pub fn build(
        n: usize,
        started: usize,
        lease_secs: u64,
        proxied: bool,
        edit: impl FnOnce(String) -> String,
    ) -> Cluster {
        let pgdir = temp_dir();
        let pg = Postgres::start(pgdir.path()).unwrap_or_else(|e| panic!("postgres: {e}"));
        let proxies: Vec<Proxy> = if proxied { (0..n).map(|_| Proxy::start(pg.port)).collect() } else { Vec::new() };
        // Every node and every command line reads the database password from here.
        std::env::set_var(PG_ENV, postgres::PASSWORD);
        let port0 = proxies.first().map_or(pg.port, |p| p.port);
        let storage = pg.storage_toml("gw1", port0, PG_ENV, lease_secs);
        let mut h = Harness::custom(POLICY, |c| format!("{}{storage}", edit(c)));
        let first = Node {
            name: "gw1".into(),
            out_port: h.out_port,
            in_port: h.in_port,
            config: h.config.clone(),
            log: h.path().join("gateway.log"),
            guard: h.gateway.take(),
        };
        let mut c = Cluster { h, pg, proxies, nodes: vec![first], lease_secs, _pgdir: pgdir };
        for i in 1..n {
            c.add_node(i, i < started);
        }
        c
    }

    fn add_node(&mut self, i: usize, start: bool) {
        let name = format!("gw{}", i + 1);
        let (out_port, in_port) = (demail_testkit::free_port(), demail_testkit::free_port());
        let base = std::fs::read_to_string(&self.h.config).unwrap();
        let base = base.split("\n[storage]").next().unwrap().to_string();
        let text = base
            .replace(&format!("127.0.0.1:{}", self.h.out_port), &format!("127.0.0.1:{out_port}"))
            .replace(&format!("127.0.0.1:{}", self.h.in_port), &format!("127.0.0.1:{in_port}"))
            + &self.pg.storage_toml(
                &name,
                self.proxies.get(i).map_or(self.pg.port, |p| p.port),
                PG_ENV,
                self.lease_secs,
            );
        let config = self.h.path().join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        let log = self.h.path().join(format!("{name}.log"));
        self.nodes.push(Node { name, out_port, in_port, config, log, guard: None });
        if start {
            self.start(i);
        }
    }

    pub fn start(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_demail-gateway"));
        cmd.arg("--config")
            .arg(&n.config)
            .arg("serve")
            .env("TEST_GW_HELPER_PASSWORD", HELPER_PASSWORD)
            .env("TEST_GW_DIRECTORY_PASSWORD", demail_testkit::directory::BIND_PASSWORD)
            .env("TEST_PROVIDER_SECRET", PROVIDER_SECRET)
            .env("TEST_PROVIDER_TOTP", PROVIDER_TOTP);
        let g = demail_testkit::start_gateway(cmd, n.out_port, n.in_port, &n.log).unwrap_or_else(|e| panic!("{e}"));
        n.guard = Some(g);
    }

    /// Submit as the person owning `from` to node `i`.
    pub fn submit(&self, i: usize, from: &str, to: &[&str], raw: &[u8]) -> Result<String, String> {
        let login = self.h.directory.person(from);
        self.h.submit_at(self.nodes[i].out_port, &login, PERSON_PASSWORD, from, to, raw)
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.pg.count(sql)
    }

    pub fn logs(&self) -> String {
        self.nodes.iter().map(|n| format!("==== {}\n{}", n.name, n.log())).collect()
    }

    /// `archive verify` through node 0's configuration: valid, with this many entries.
    pub fn verify(&self) -> i64 {
        let o = self.h.cli(&["archive", "verify"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|_| panic!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)));
        assert_eq!(v["valid"], true, "{v}");
        v["entries"].as_i64().unwrap()
    }

    /// The bookkeeping every run must leave: each accepted message billed once per
    /// recipient and event, settled ones once delivered, the chain gap-free and valid.
    pub fn check_books(&self) {
        assert_eq!(
            self.count(
                "SELECT count(*) FROM (SELECT queue_id, recipient, event FROM billing GROUP BY 1, 2, 3 HAVING count(*) > 1) d"
            ),
            0
        );
        assert_eq!(
            self.count(
                "SELECT count(*) FROM accepted a WHERE (SELECT count(*) FROM billing b
                  WHERE b.queue_id = a.queue_id AND b.event = 'accepted') <> 1"
            ),
            0,
            "one acceptance row per recipient (one recipient each here)"
        );
        assert_eq!(self.count("SELECT count(*) FROM messages"), 0, "queue drained");
        assert_eq!(
            self.count(
                "SELECT count(*) FROM accepted a WHERE (SELECT count(*) FROM billing b
                  WHERE b.queue_id = a.queue_id AND b.event = 'delivered') <> 1"
            ),
            0,
            "every accepted De-Mail billed as delivered exactly once"
        );
        let n = self.count("SELECT count(*) FROM entries");
        assert_eq!(self.count("SELECT coalesce(max(seq), 0) FROM entries"), n, "no gap");
        assert_eq!(
            self.count(
                "SELECT count(*) FROM entries e JOIN entries p ON p.seq = e.seq - 1 WHERE e.prev_hash <> p.hash"
            ),
            0,
            "one chain"
        );
        assert_eq!(self.verify(), n);
    }
}

pub fn mid(raw: &[u8]) -> String {
    header(raw, "Message-ID").unwrap_or_default()
}

/// A De-Mail without options (the simulator sends no receipts for it), unique per `tag`.
pub fn plain(tag: &str, i: usize) -> Vec<u8> {
    format!(
        "From: peter.meier@musterstadt.de\r\nTo: anna@buerger.de-mail.de\r\nSubject: Nr {i}\r\nMessage-ID: <{tag}-{i}-{}@musterstadt.de>\r\n\r\n{}",
        std::process::id(),
        "0123456789abcdefghijklmnopqrstuvwxyz\r\n".repeat(50)
    )
    .into_bytes()
}

pub const FROM: &str = "peter.meier@musterstadt.de";
pub const TO: &str = "anna@buerger.de-mail.de";

/// Message-IDs at the simulator: (stored files, distinct ids).
pub fn stored_ids(h: &Harness) -> (usize, HashSet<String>) {
    let s = h.sim_stored();
    (s.len(), s.iter().map(|r| mid(r)).collect())
}

/// A provider that holds its answer to the first DATA until released (the node that sent
/// it is stopped meanwhile) and answers everything else at once.
#[derive(Default)]
pub struct HoldingSink {
    pub got: Mutex<Vec<String>>,
    pub release: AtomicBool,
}

struct HoldingHandler(Arc<HoldingSink>);

impl Handler for HoldingHandler {
    async fn authenticate(&self, user: &str, password: &str) -> AuthResult {
        // The gateway's login at level "hoch": secret followed by the current TOTP code.
        let second = password.strip_prefix(PROVIDER_SECRET);
        let totp = demail_gateway::relay::totp(PROVIDER_TOTP).unwrap();
        if user == PROVIDER_USER && second.is_some_and(|c| totp.check_current(c).unwrap_or(false)) {
            AuthResult::Accepted(Authenticated { user: user.into(), method: "password".into(), display: None })
        } else {
            AuthResult::Refused
        }
    }
    async fn deliver(&self, _env: &Envelope, msg: Vec<u8>) -> Result<Accepted, Reject> {
        let first = {
            let mut g = self.0.got.lock().unwrap();
            g.push(mid(&msg));
            g.len() == 1
        };
        while first && !self.0.release.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Accepted { id: "P1".into() })
    }
}

pub fn start_holding_sink(h: &Harness) -> Arc<HoldingSink> {
    let pki = &h.provider_pki;
    let cfg = demail_smtp::Config {
        tls: Some(demail_smtp::tls::server_config(&pki.server_cert, &pki.server_key, Some(&pki.ca_cert)).unwrap()),
        implicit_tls: true,
        require_tls: true,
        offer_auth: true,
        require_auth: true,
        command_timeout: Duration::from_secs(120),
        ..demail_smtp::Config::default()
    };
    let sink = Arc::new(HoldingSink::default());
    let (port, s) = (h.provider_port, sink.clone());
    h.rt.spawn(async move {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let _ = demail_smtp::serve(l, Arc::new(cfg), Arc::new(HoldingHandler(s))).await;
    });
    assert!(demail_testkit::wait_for_port(port, Duration::from_secs(5)));
    sink
}
