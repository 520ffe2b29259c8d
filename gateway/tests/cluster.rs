//! The gateway cluster on PostgreSQL (`[storage] backend = "postgres"`): several real
//! gateway processes on one real PostgreSQL (testkit, TLS from a test CA), each node's
//! database connection through a proxy the test can partition. Nodes are killed (-9),
//! stopped past their lease (SIGSTOP), cut off from the database; afterwards SQL and
//! `archive verify` show what was kept.

mod common;

use common::*;
use demail_smtp::{Accepted, AuthResult, Authenticated, Envelope, Handler, Reject};
use demail_testkit::{postgres, temp_dir, ChildGuard, Postgres, Proxy, TempDir};
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
        let pgdir = temp_dir();
        let pg = Postgres::start(pgdir.path()).unwrap_or_else(|e| panic!("postgres: {e}"));
        let proxies: Vec<Proxy> = (0..n).map(|_| Proxy::start(pg.port)).collect();
        // Every node and every command line reads the database password from here.
        std::env::set_var(PG_ENV, postgres::PASSWORD);
        let storage = pg.storage_toml("gw1", proxies[0].port, PG_ENV, lease_secs);
        let mut h = Harness::custom(POLICY, |c| format!("{c}{storage}"));
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
            + &self.pg.storage_toml(&name, self.proxies[i].port, PG_ENV, self.lease_secs);
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
            .env("TEST_PROVIDER_SECRET", PROVIDER_SECRET);
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
            self.count("SELECT count(*) FROM entries e JOIN entries p ON p.seq = e.seq - 1 WHERE e.prev_hash <> p.hash"),
            0,
            "one chain"
        );
        assert_eq!(self.verify(), n);
    }
}

fn mid(raw: &[u8]) -> String {
    header(raw, "Message-ID").unwrap_or_default()
}

/// A De-Mail without options (the simulator sends no receipts for it), unique per `tag`.
fn plain(tag: &str, i: usize) -> Vec<u8> {
    format!(
        "From: peter.meier@musterstadt.de\r\nTo: anna@buerger.de-mail.de\r\nSubject: Nr {i}\r\nMessage-ID: <{tag}-{i}-{}@musterstadt.de>\r\n\r\n{}",
        std::process::id(),
        "0123456789abcdefghijklmnopqrstuvwxyz\r\n".repeat(50)
    )
    .into_bytes()
}

const FROM: &str = "peter.meier@musterstadt.de";
const TO: &str = "anna@buerger.de-mail.de";

/// Message-IDs at the simulator: (stored files, distinct ids).
fn stored_ids(h: &Harness) -> (usize, HashSet<String>) {
    let s = h.sim_stored();
    (s.len(), s.iter().map(|r| mid(r)).collect())
}

#[test]
fn one_node_on_postgres_accepts_delivers_and_keeps_the_books() {
    let mut c = Cluster::new(1, 1, 5);
    let _sim = c.h.start_sim();
    let m = plain("one", 1);
    let r = c.submit(0, FROM, &[TO], &m).unwrap();
    assert!(r.starts_with("250"), "{r}");
    // The same message again (a client that lost the 250): the first queue id, no second copy.
    let again = c.submit(0, FROM, &[TO], &m).unwrap();
    assert_eq!(r, again);
    demail_testkit::wait_until(Duration::from_secs(30), || (c.h.sim_stored().len() == 1).then_some(()))
        .unwrap_or_else(|| panic!("not delivered\n{}", c.logs()));
    demail_testkit::wait_until(Duration::from_secs(10), || (c.count("SELECT count(*) FROM messages") == 0).then_some(()))
        .unwrap_or_else(|| panic!("not settled\n{}", c.logs()));
    assert_eq!(c.count("SELECT count(*) FROM entries WHERE direction = 'out'"), 1);
    assert_eq!(c.count("SELECT count(*) FROM entries WHERE direction = 'delivered'"), 1);
    c.check_books();
    // The command line works on the shared database too.
    assert_eq!(c.h.queue_len(), 0);
    let b = c.h.cli(&["billing", "report", "--from", "2000-01-01", "--to", "2100-01-01", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    assert_eq!(v["cost_units"][0]["messages"], 1, "{v}");
    assert_eq!(c.h.archive_entries().len(), 2);
    c.nodes[0].kill();
}
