//! The gateway cluster on PostgreSQL (`[storage] backend = "postgres"`): several real
//! gateway processes on one real PostgreSQL (testkit, TLS from a test CA), each node's
//! database connection through a proxy the test can partition. Nodes are killed (-9),
//! stopped past their lease (SIGSTOP), cut off from the database; afterwards SQL and
//! `archive verify` show what was kept.

mod common;

use common::cluster::*;
use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    demail_testkit::wait_until(Duration::from_secs(10), || {
        (c.count("SELECT count(*) FROM messages") == 0).then_some(())
    })
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

/// Submit `raw` until some live node answers 250, starting at node `first`; the replies
/// that were not 250 are counted in `refused`.
fn submit_anywhere(c: &Cluster, alive: &[AtomicBool], first: usize, raw: &[u8], refused: &AtomicUsize) -> String {
    let n = alive.len();
    let mut node = first % n;
    let end = Instant::now() + Duration::from_secs(180);
    while Instant::now() < end {
        if alive[node].load(Ordering::SeqCst) {
            match c.submit(node, FROM, &[TO], raw) {
                Ok(r) if r.starts_with("250") => return r,
                _ => {
                    refused.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        node = (node + 1) % n;
    }
    panic!("no node accepted {}\n{}", mid(raw), c.logs());
}

/// Submit `raw` through the balancer until it is answered 250; the attempts that were not
/// (a node killed under the session) are counted in `refused`.
fn submit_through(c: &Cluster, lb: u16, raw: &[u8], refused: &AtomicUsize) -> String {
    let login = c.h.directory.person(FROM);
    let end = Instant::now() + Duration::from_secs(180);
    while Instant::now() < end {
        match c.h.submit_at(lb, &login, common::PERSON_PASSWORD, FROM, &[TO], raw) {
            Ok(r) if r.starts_with("250") => return r,
            _ => {
                refused.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    panic!("no node accepted {}\n{}", mid(raw), c.logs());
}

/// Wait until the simulator holds every one of `ids`.
fn wait_delivered(c: &Cluster, ids: &HashSet<String>, secs: u64) {
    let done = demail_testkit::wait_until(Duration::from_secs(secs), || {
        let (_, got) = stored_ids(&c.h);
        ids.is_subset(&got).then_some(())
    });
    if done.is_none() {
        let (_, got) = stored_ids(&c.h);
        let missing: Vec<_> = ids.difference(&got).take(5).collect();
        panic!(
            "{} of {} not at the provider, e.g. {missing:?}\n{}",
            ids.len() - ids.intersection(&got).count(),
            ids.len(),
            c.logs()
        );
    }
    demail_testkit::wait_until(Duration::from_secs(30), || {
        (c.count("SELECT count(*) FROM messages") == 0).then_some(())
    })
    .unwrap_or_else(|| panic!("queue not drained\n{}", c.logs()));
}

/// The run: 1,000 De-Mails through HAProxy (PROXY v2) to three nodes; one node
/// killed (-9) while clients are in DATA with it, another while it holds leases on
/// deliveries. Every Message-ID that got a 250 reaches the provider, each is accepted and
/// billed once, the chain verifies.
#[test]
fn killed_nodes_lose_nothing_and_bill_once() {
    const N: usize = 1000;
    const WORKERS: usize = 6;
    let mut c = Cluster::build(3, 3, 4, true, |cfg| {
        cfg.replace("[outbound]\n", "[outbound]\nproxy_protocol_from = [\"127.0.0.1/32\"]\n")
    });
    let _sim = c.h.start_sim();
    let ports: Vec<u16> = c.nodes.iter().map(|n| n.out_port).collect();
    let lb = demail_testkit::Haproxy::start(c.h.path(), &ports).expect("haproxy");
    let acked = Mutex::new(HashSet::new());
    let refused = AtomicUsize::new(0);
    let (pid2, pid3) = (c.nodes[1].pid(), c.nodes[2].pid());
    let mut held_by_gw3 = 0;
    let t = Instant::now();
    std::thread::scope(|s| {
        let (c, acked, refused, lb) = (&c, &acked, &refused, lb.port);
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                s.spawn(move || {
                    for i in (w..N).step_by(WORKERS) {
                        let m = plain("kill", i);
                        submit_through(c, lb, &m, refused);
                        acked.lock().unwrap().insert(mid(&m));
                    }
                })
            })
            .collect();
        let progress = || acked.lock().unwrap().len();
        // Node 2 dies while sessions are in DATA with it (each worker sends to it in turn).
        while progress() < N / 4 && !workers.iter().all(|w| w.is_finished()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(Command::new("kill").args(["-9", &pid2.to_string()]).status().unwrap().success());
        // Node 3 dies while it holds leases on recipients it is delivering.
        while progress() < N / 2 && !workers.iter().all(|w| w.is_finished()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let leased =
            "SELECT count(*) FROM recipients WHERE lease_owner = 'gw3' AND lease_until > now() AND state = 'queued'";
        demail_testkit::wait_until(Duration::from_secs(60), || (c.count(leased) > 0).then_some(()))
            .expect("gw3 never held a lease");
        assert!(Command::new("kill").args(["-9", &pid3.to_string()]).status().unwrap().success());
        held_by_gw3 = c.count("SELECT count(*) FROM recipients WHERE lease_owner = 'gw3' AND state = 'queued'");
        for w in workers {
            w.join().unwrap();
        }
    });
    c.nodes[1].kill();
    c.nodes[2].kill();
    let accepted_in = t.elapsed().as_secs_f64();
    let acked = acked.into_inner().unwrap();
    assert_eq!(acked.len(), N);
    wait_delivered(&c, &acked, 300);
    std::thread::sleep(Duration::from_secs(2));
    let (stored, unique) = stored_ids(&c.h);
    let resends = c.h.sim_log().matches("duplicate submission").count();
    println!(
        "CLUSTER: {N} De-Mails to 3 nodes in {accepted_in:.1}s; gw2 killed in DATA, gw3 killed holding {held_by_gw3} leased recipients; \
         attempts retried through HAProxy: {}; provider stored {stored}, unique {}; resends the provider deduplicated \
         (a non-deduplicating sink would hold them twice): {resends}",
        refused.load(Ordering::SeqCst),
        unique.len()
    );
    assert_eq!(unique.len(), N, "0 lost");
    assert_eq!(stored, N, "the provider deduplicates by Message-ID");
    // One acceptance per Message-ID, whatever node the client retried at.
    assert_eq!(c.count("SELECT count(*) FROM accepted"), N as i64);
    assert_eq!(c.count("SELECT count(DISTINCT message_id) FROM accepted"), N as i64);
    // Resends come only from deliveries in flight on the killed nodes (at most their concurrency each).
    assert!(resends <= 16, "{resends} resends");
    c.check_books();
    assert_eq!(c.count("SELECT count(*) FROM entries"), 2 * N as i64, "out + delivered per De-Mail");
}

/// A node stopped (SIGSTOP) in the middle of a delivery, past its lease: another node
/// takes the recipients over and delivers; the stopped node, resumed, records nothing.
#[test]
fn a_node_stopped_past_its_lease_is_fenced() {
    let mut c = Cluster::new(2, 1, 3);
    let sink = start_holding_sink(&c.h);
    let m = plain("stop", 1);
    assert!(c.submit(0, FROM, &[TO], &m).unwrap().starts_with("250"));
    demail_testkit::wait_until(Duration::from_secs(20), || (sink.got.lock().unwrap().len() == 1).then_some(()))
        .unwrap_or_else(|| panic!("gw1 did not deliver\n{}", c.logs()));
    // gw1 has sent the whole message and waits for the answer: stop it there.
    c.nodes[0].signal("-STOP");
    let stopped = Instant::now();
    c.start(1);
    demail_testkit::wait_until(Duration::from_secs(30), || (sink.got.lock().unwrap().len() == 2).then_some(()))
        .unwrap_or_else(|| panic!("gw2 did not take over\n{}", c.logs()));
    let takeover = stopped.elapsed().as_secs_f64();
    let delivered = "SELECT count(*) FROM billing WHERE event = 'delivered'";
    demail_testkit::wait_until(Duration::from_secs(20), || (c.count(delivered) == 1).then_some(()))
        .unwrap_or_else(|| panic!("gw2 did not record\n{}", c.logs()));
    // gw1 comes back and gets the provider's late 250.
    sink.release.store(true, Ordering::SeqCst);
    c.nodes[0].signal("-CONT");
    let fenced = demail_testkit::wait_until(Duration::from_secs(20), || {
        let l = c.nodes[0].log();
        (l.contains("lease lost") || l.contains("lease taken over")).then_some(())
    });
    assert!(fenced.is_some(), "gw1 did not notice it lost the lease\n{}", c.logs());
    std::thread::sleep(Duration::from_secs(2));
    // Settling late, gw1 meets gw2's billing row: that is a lost lease, not a database
    // error to retry.
    assert!(!c.nodes[0].log().contains("cannot record the outcome yet"), "gw1 kept retrying\n{}", c.logs());
    println!(
        "FENCE: takeover after SIGSTOP {takeover:.1}s (lease 3 s); provider got {} copies",
        sink.got.lock().unwrap().len()
    );
    assert_eq!(c.count(delivered), 1, "billed once");
    assert_eq!(c.count("SELECT count(*) FROM entries WHERE direction = 'delivered'"), 1, "archived once");
    assert_eq!(
        c.pg.sql("SELECT convert_from(data, 'UTF8')::json->>'node' FROM entries WHERE direction = 'delivered'")
            .unwrap(),
        "gw2"
    );
    c.check_books();
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Load on two nodes while the database goes away three ways: every gateway session
/// terminated (`pg_terminate_backend`), a PostgreSQL restart, and node 1 cut off from the
/// database (partition). While a node cannot commit it answers 451; it recovers by itself;
/// nothing that got a 250 is lost, and the books still add up.
#[test]
fn the_database_going_away_gives_451_and_loses_nothing() {
    let mut c = Cluster::new(2, 2, 4);
    let _sim = c.h.start_sim();
    let alive: Vec<AtomicBool> = (0..2).map(|_| AtomicBool::new(true)).collect();
    let acked = Mutex::new(HashSet::new());
    let refused = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let next = AtomicUsize::new(0);
    let mut during_partition = String::new();
    let mut recovered_after = 0.0;
    std::thread::scope(|s| {
        let (c, alive, acked, refused, stop, next) = (&c, &alive, &acked, &refused, &stop, &next);
        // Should this thread panic, the workers end too (the scope waits for them).
        let _stop = StopOnDrop(stop);
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let m = plain("away", i);
                        submit_anywhere(c, alive, i, &m, refused);
                        acked.lock().unwrap().insert(mid(&m));
                    }
                })
            })
            .collect();
        let wait_more = |n: usize| {
            let goal = acked.lock().unwrap().len() + n;
            demail_testkit::wait_until(Duration::from_secs(120), || {
                (acked.lock().unwrap().len() >= goal).then_some(())
            })
            .unwrap_or_else(|| panic!("load stalled\n{}", c.logs()));
        };
        wait_more(40);
        for _ in 0..3 {
            let n = c.pg.sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE 'demail-gateway%'",
            );
            assert!(n.is_ok(), "{n:?}");
            std::thread::sleep(Duration::from_millis(700));
        }
        wait_more(40);
        // A restart cuts every session and refuses connections for a moment.
        c.pg.sql("CHECKPOINT").unwrap();
        c.pg.restart().unwrap();
        wait_more(40);
        // Node 1 cut off from the database: it answers 451 to what it cannot commit.
        c.proxies[0].partition();
        alive[0].store(false, Ordering::SeqCst);
        let cut = Instant::now();
        during_partition = match c.submit(0, FROM, &[TO], &plain("partition", 0)) {
            Ok(r) => r,
            Err(e) => e,
        };
        wait_more(20);
        std::thread::sleep(Duration::from_secs(3).saturating_sub(cut.elapsed()));
        c.proxies[0].heal();
        let healed = Instant::now();
        demail_testkit::wait_until(Duration::from_secs(60), || {
            c.submit(0, FROM, &[TO], &plain("healed", 0)).ok().filter(|r| r.starts_with("250"))
        })
        .unwrap_or_else(|| panic!("gw1 did not recover\n{}", c.logs()));
        recovered_after = healed.elapsed().as_secs_f64();
        acked.lock().unwrap().insert(mid(&plain("healed", 0)));
        alive[0].store(true, Ordering::SeqCst);
        wait_more(40);
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.join().unwrap();
        }
    });
    println!(
        "OUTAGE: {} De-Mails acknowledged; non-250 replies (retried): {}; during the partition gw1 answered: {during_partition}; \
         gw1 accepted again {recovered_after:.1}s after the partition healed",
        acked.lock().unwrap().len(),
        refused.load(Ordering::SeqCst)
    );
    // lettre spells 451 as TransientNegativeCompletion, MailSystem, One.
    let is_451 = during_partition.contains("TransientNegativeCompletion, category: MailSystem, detail: One");
    assert!(is_451 && during_partition.contains("[storage."), "{during_partition}");
    let acked = acked.into_inner().unwrap();
    wait_delivered(&c, &acked, 240);
    let (_, unique) = stored_ids(&c.h);
    // The partition probe may or may not have committed before its 451 (the commit is
    // not known to the node): then it is delivered too, once.
    assert!(unique.len() == acked.len() || unique.len() == acked.len() + 1);
    c.check_books();
    for n in &mut c.nodes {
        n.kill();
    }
}

/// Two nodes append to the one archive chain at once (acceptances and deliveries): every
/// submission is taken at the first try, the chain has no gap and no fork, `verify`
/// passes, and the keys refuse a forked or rewritten entry even from SQL.
#[test]
fn two_nodes_append_to_one_chain_without_a_fork() {
    let mut c = Cluster::new(2, 2, 5);
    let _sim = c.h.start_sim();
    let ids = Mutex::new(HashSet::new());
    std::thread::scope(|s| {
        for t in 0..8 {
            let (c, ids) = (&c, &ids);
            s.spawn(move || {
                for i in 0..25 {
                    let m = plain(&format!("chain{t}"), i);
                    let r = c.submit(t % 2, FROM, &[TO], &m);
                    assert!(r.as_ref().is_ok_and(|r| r.starts_with("250")), "{r:?}\n{}", c.logs());
                    ids.lock().unwrap().insert(mid(&m));
                    if i % 5 == 0 {
                        // A resend amid the others' appends (to the other node): undone in
                        // its batch without harm to the rest, answered with the first queue id.
                        let again = c.submit((t + 1) % 2, FROM, &[TO], &m);
                        assert_eq!(again.as_ref().ok(), r.as_ref().ok(), "{}", c.logs());
                    }
                }
            });
        }
    });
    let ids = ids.into_inner().unwrap();
    wait_delivered(&c, &ids, 120);
    c.check_books();
    assert_eq!(c.count("SELECT count(*) FROM entries"), 400);
    assert_eq!(
        c.count("SELECT count(DISTINCT convert_from(data, 'UTF8')::json->>'node') FROM entries WHERE direction = 'delivered'"),
        2,
        "both nodes appended"
    );
    // A second entry after seq 1 (a fork), a rewrite, a head moved back: refused.
    let fork = "INSERT INTO entries (seq, time, direction, sender, recipients, sha256, size, prev_hash, hash, data)
                SELECT 100000, time, direction, sender, recipients, sha256, size, prev_hash, 'fork', data FROM entries WHERE seq = 2";
    assert!(c.pg.sql(fork).unwrap_err().contains("entries_prev_hash_key"));
    assert!(c.pg.sql("UPDATE entries SET sender = 'x@evil.de' WHERE seq = 1").unwrap_err().contains("append-only"));
    assert!(c.pg.sql("DELETE FROM entries WHERE seq = 400").unwrap_err().contains("append-only"));
    assert!(c.pg.sql("UPDATE archive_head SET seq = 1").unwrap_err().contains("forward"));
    assert_eq!(c.verify(), 400);

    // Signed checkpoints on the shared database: one per head, whichever signs first.
    #[derive(serde::Deserialize)]
    struct W {
        storage: demail_gateway::config::Storage,
    }
    let storage = toml::from_str::<W>(&c.pg.storage_toml("auditor", c.pg.port, PG_ENV, 5)).unwrap().storage;
    let (a, b) =
        (demail_gateway::pg::open_archive(&storage).unwrap(), demail_gateway::pg::open_archive(&storage).unwrap());
    let key = [5u8; 32];
    let cp = a.checkpoint("gw1", &key).unwrap().unwrap();
    assert_eq!((cp.from, cp.seq), (1, 400));
    assert_eq!(b.checkpoint("gw1", &key).unwrap(), None, "the same head: nothing new to sign");
    let trust = demail_gateway::archive::Trust {
        keys: vec![demail_core::seal::public_key("gw1", &key)],
        require: true,
        now_ms: i64::MAX / 2,
        ..Default::default()
    };
    let r = a.verify_with(&trust).unwrap();
    assert!(r.problems.is_empty() && r.signed_upto == 400, "{:?}", r.problems);
    assert!(c.pg.sql("DELETE FROM checkpoints").unwrap_err().contains("append-only"));
    // Entry 200 rewritten with the chain and the head recomputed: the checkpoint names it.
    let mut entries = a.entries().unwrap();
    let mut sql = String::from(
        "ALTER TABLE entries DISABLE TRIGGER entries_no_change; ALTER TABLE archive_head DISABLE TRIGGER head_forward;",
    );
    let mut prev = None;
    for e in entries.iter_mut() {
        if e.seq == 200 {
            e.recipients = "boese@evil.de-mail.de".into();
        }
        if let Some(p) = prev {
            e.prev_hash = p;
        }
        e.hash = demail_gateway::archive::entry_hash(e);
        prev = Some(e.hash.clone());
        if e.seq >= 200 {
            sql += &format!(
                "UPDATE entries SET recipients = '{}', prev_hash = '{}', hash = '{}' WHERE seq = {};",
                e.recipients, e.prev_hash, e.hash, e.seq
            );
        }
    }
    sql += &format!("UPDATE archive_head SET hash = '{}';", entries[399].hash);
    c.pg.sql(&sql).unwrap();
    let codes: Vec<_> = a.verify_with(&trust).unwrap().problems.iter().map(|p| (p.code, p.seq)).collect();
    assert_eq!(codes, [("archive.rewritten", Some(200))]);
}

#[test]
fn on_postgres_a_refused_de_mail_reaches_the_sammelpostfach_and_old_ones_are_counted() {
    let metric_line = |port: u16, name: &str| {
        let (_, body) = common::http_get(port, "/metrics");
        body.lines().find(|l| l.starts_with(&format!("{name} "))).map(str::to_string)
    };
    let mut c =
        Cluster::build(1, 1, 5, true, |cfg| cfg.replace("[queue]\n", "[health]\nlisten = \"127.0.0.1:0\"\n[queue]\n"));
    let pf = common::refusing_mail_server(&c.h);
    c.nodes[0].kill();
    let health = demail_testkit::free_port();
    let cfg =
        std::fs::read_to_string(&c.nodes[0].config).unwrap().replace("127.0.0.1:0", &format!("127.0.0.1:{health}"));
    std::fs::write(&c.nodes[0].config, cfg).unwrap();
    common::through(&c.nodes[0].config, c.h.dovecot.lmtp_port, &pf, "collect_after_secs = 8");
    c.start(0);
    let raw = b"From: buerger@web.de-mail.de\r\nTo: unbekannt@musterstadt.de-mail.de, voll@musterstadt.de-mail.de\r\nSubject: Antrag\r\nX-de-mail-message-type: normal\r\n\r\nText\r\n";
    let rcpts = ["unbekannt@musterstadt.de-mail.de", "voll@musterstadt.de-mail.de"];
    assert_eq!(c.h.inject("buerger@web.de-mail.de", &rcpts, raw).as_deref(), Ok("250"), "{}", c.logs());
    // Refused for good: to the Sammelpostfach, queued in the settling transaction.
    let sammel = c.h.dovecot.wait_for_messages("sammelpostfach@musterstadt.de", 1, Duration::from_secs(30));
    assert_eq!(sammel.len(), 1, "{}\n{}", c.logs(), pf.log());
    assert_eq!(common::header(&sammel[0], "X-Original-To").as_deref(), Some("unbekannt@musterstadt.de"));
    // The full mailbox keeps its recipient queued (retrying): past warn_after_secs it is
    // counted and warned about once.
    let metrics = || {
        let (_, body) = common::http_get(health, "/metrics");
        body.lines().find(|l| l.starts_with("demail_overdue_messages ")).map(str::to_string)
    };
    let counted = demail_testkit::wait_until(Duration::from_secs(20), || {
        (metrics().as_deref() == Some("demail_overdue_messages 1")).then_some(())
    });
    assert!(counted.is_some(), "{:?}\n{}", metrics(), c.logs());
    assert_eq!(c.count("SELECT count(*) FROM recipients WHERE state = 'queued' AND rcpt = 'voll@musterstadt.de'"), 1);
    assert_eq!(c.logs().matches("message still queued after queue.warn_after_secs").count(), 1, "{}", c.logs());
    // Past collect_after_secs the full mailbox's De-Mail goes to the Sammelpostfach too:
    // the queue empties and the metric falls back to 0.
    let sammel = c.h.dovecot.wait_for_messages("sammelpostfach@musterstadt.de", 2, Duration::from_secs(30));
    assert_eq!(sammel.len(), 2, "{}", c.logs());
    let fell = demail_testkit::wait_until(Duration::from_secs(20), || {
        (metrics().as_deref() == Some("demail_overdue_messages 0")).then_some(())
    });
    assert!(fell.is_some(), "{:?}\n{}", metrics(), c.logs());
    assert_eq!(c.count("SELECT count(*) FROM messages"), 0);
    assert!(metric_line(health, "demail_collected_total").is_some_and(|l| l.ends_with(" 2")));
    // Ready means: can write to the PostgreSQL primary. Cut off from it, the node says so.
    assert_eq!(common::http_get(health, "/healthz/ready"), (200, "ready\n".to_string()));
    c.proxies[0].partition();
    let down = demail_testkit::wait_until(Duration::from_secs(30), || {
        let (status, body) = common::http_get(health, "/healthz/ready");
        (status == 503).then_some(body)
    });
    assert!(down.as_deref().is_some_and(|b| b.starts_with("not ready: [storage.")), "{down:?}");
    assert_eq!(common::http_get(health, "/healthz/live").0, 200, "alive all the same");
    c.proxies[0].heal();
    let up = demail_testkit::wait_until(Duration::from_secs(30), || {
        (common::http_get(health, "/healthz/ready").0 == 200).then_some(())
    });
    assert!(up.is_some(), "ready again once the database is back\n{}", c.logs());
    c.nodes[0].kill();
}

/// SIGTERM: the node starts nothing new, lets what runs finish for `stop_grace_secs`, then
/// gives its leases back, so another node takes over at once instead of after `lease_secs`.
#[test]
fn a_node_stopped_with_sigterm_gives_its_leases_back() {
    const LEASE: u64 = 30;
    let mut c = Cluster::build(2, 1, LEASE, true, |cfg| cfg.replace("[queue]\n", "[queue]\nstop_grace_secs = 2\n"));
    let _sim = c.h.start_sim();
    // gw1 reaches the provider through a cable the test pulls: its delivery hangs.
    let cable = demail_testkit::Proxy::start(c.h.provider_port);
    c.nodes[0].kill();
    let direct = format!("host = \"127.0.0.1\"\nport = {}\n", c.h.provider_port);
    let cfg = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    assert!(cfg.contains(&direct));
    std::fs::write(&c.nodes[0].config, cfg.replace(&direct, &format!("host = \"127.0.0.1\"\nport = {}\n", cable.port)))
        .unwrap();
    c.start(0);
    cable.partition();
    let r = c.submit(0, FROM, &[TO], &plain("term", 1)).unwrap();
    assert!(r.starts_with("250"), "{r}");
    let leased = "SELECT count(*) FROM recipients WHERE lease_owner = 'gw1' AND lease_until > now()";
    demail_testkit::wait_until(Duration::from_secs(20), || (c.count(leased) == 1).then_some(()))
        .unwrap_or_else(|| panic!("gw1 never took the lease\n{}", c.logs()));
    c.start(1);
    let t = Instant::now();
    c.nodes[0].guard.as_mut().unwrap().terminate(Duration::from_secs(20));
    demail_testkit::wait_until(Duration::from_secs(LEASE), || (c.h.sim_stored().len() == 1).then_some(()))
        .unwrap_or_else(|| panic!("not delivered by gw2\n{}", c.logs()));
    let took = t.elapsed().as_secs_f64();
    println!("SIGTERM: gw2 delivered {took:.1}s after gw1 was told to stop (lease {LEASE}s, grace 2s)");
    assert!(took < (LEASE / 2) as f64, "{took:.1}s: the lease was not given back\n{}", c.logs());
    assert!(c.nodes[0].log().contains("stopping: leases released"), "{}", c.nodes[0].log());
    demail_testkit::wait_until(Duration::from_secs(10), || {
        (c.count("SELECT count(*) FROM messages") == 0).then_some(())
    })
    .unwrap_or_else(|| panic!("not settled\n{}", c.logs()));
    let by_gw2 = "SELECT count(*) FROM entries WHERE direction = 'delivered' AND convert_from(data, 'UTF8') LIKE '%\"node\":\"gw2\"%'";
    assert_eq!(c.count(by_gw2), 1, "{}", c.logs());
    c.nodes[1].kill();
}
