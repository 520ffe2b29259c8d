//! The numbers. Ignored in the normal run; `scripts/bench-gateway` runs them in release mode:
//! `cargo test --release -p demail-gateway --test bench -- --ignored --nocapture --test-threads=1`

mod common;

use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn msg(i: usize, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: peter.meier@musterstadt.de\r\nTo: anna@buerger.de-mail.de\r\nSubject: [VB] Nr {i}\r\nMessage-ID: <bench-{i}-{}@musterstadt.de>\r\n\r\n",
        std::process::id()
    )
    .into_bytes();
    let line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\r\n";
    while m.len() < size {
        m.extend_from_slice(line.as_bytes());
    }
    m
}

/// An SMTP session as the helper opens it: with TCP_NODELAY, or Nagle and the server's
/// delayed ACK hold the final ".\r\n" for 40 ms and every server measures the same stall.
async fn session(port: u16) -> lettre::transport::smtp::client::AsyncSmtpConnection {
    use lettre::transport::smtp::client::AsyncSmtpConnection;
    use lettre::transport::smtp::extension::ClientId;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &ClientId::Domain("last".into())).await.unwrap()
}

fn mid(raw: &[u8]) -> String {
    header(raw, "Message-ID").unwrap_or_default()
}

/// No subject tag: the simulator then sends no receipts, so only the relay is measured.
fn plain(i: usize) -> Vec<u8> {
    let mut m = msg(i, 2000);
    let at = m.windows(8).position(|w| w == b"[VB] Nr ").unwrap();
    m.drain(at..at + 5);
    m
}

#[test]
#[ignore]
fn crash_safety_kill_9_during_1000_messages() {
    const N: usize = 1000;
    let mut h = Harness::new();
    // The real provider simulator (a separate process): it deduplicates by sender,
    // Message-ID and recipients, as a provider must for exactly-once.
    let _sim = h.start_sim();
    let acked = AtomicUsize::new(0);
    let pid = h.gateway.as_ref().unwrap().id();
    let failed: Vec<usize> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (h, acked) = (&h, &acked);
                s.spawn(move || {
                    let mut failed = Vec::new();
                    for i in (w..N).step_by(4) {
                        match h.submit("peter.meier@musterstadt.de", &["anna@buerger.de-mail.de"], &plain(i)) {
                            Ok(_) => {
                                acked.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(_) => failed.push(i),
                        }
                    }
                    failed
                })
            })
            .collect();
        // kill -9 in the middle of the run (a dead worker must not make this wait forever).
        while acked.load(Ordering::SeqCst) < N / 3 && !workers.iter().all(|w| w.is_finished()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let acked_before = acked.load(Ordering::SeqCst);
    h.gateway.as_mut().unwrap().kill();
    h.start_gateway();
    // The client retries what was not acknowledged (a lost 250 must not become a duplicate).
    for i in &failed {
        h.submit("peter.meier@musterstadt.de", &["anna@buerger.de-mail.de"], &plain(*i)).unwrap();
    }
    let stored = demail_testkit::wait_until(Duration::from_secs(300), || {
        let s = h.sim_stored();
        (s.len() >= N).then_some(s)
    })
    .unwrap_or_else(|| panic!("provider stored {} of {N}\n{}", h.sim_stored().len(), h.log()));
    // Let stragglers (a duplicate would come now) arrive.
    std::thread::sleep(Duration::from_secs(3));
    let stored = if h.sim_stored().len() > stored.len() { h.sim_stored() } else { stored };
    let mut ids: Vec<String> = stored.iter().map(|r| mid(r)).collect();
    ids.sort();
    let total = ids.len();
    ids.dedup();
    // Transactions the provider answered 250 although it had the message already: what a
    // sink without deduplication (smtp-sink, Postfix) would hold twice.
    let resends_deduped = h.sim_log().matches("duplicate submission").count();
    let interrupted = h.log().matches("previous attempt interrupted during DATA").count();
    println!(
        "CRASH: messages={N} acknowledged_before_kill={acked_before} retried_by_client={} resent_after_restart_interrupted_in_DATA={interrupted}",
        failed.len()
    );
    println!(
        "CRASH: provider-sim stored={total} unique={} duplicates={} | resends deduplicated by the provider={resends_deduped} (a non-deduplicating sink would hold {} unique + {resends_deduped} duplicates)",
        ids.len(),
        total - ids.len(),
        ids.len()
    );
    assert_eq!(ids.len(), N);
    assert_eq!(total, N, "exactly once at the provider");
}

#[test]
#[ignore]
fn a_25_mb_message_peak_rss() {
    let policy = POLICY.replace("max_size = \"10 MiB\"", "max_size = \"30 MiB\"");
    let mut h = Harness::custom(&policy, |c| c.replace("max_message_size = 12000000", "max_message_size = 40000000"));
    h.start_provider();
    let pid = h.gateway.as_ref().unwrap().id();
    let rss = |field: &str| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let before = rss("VmRSS:");
    let m = msg(1, 25 * 1024 * 1024);
    let t = Instant::now();
    h.submit("peter.meier@musterstadt.de", &["anna@buerger.de-mail.de"], &m).unwrap();
    let got = h.wait_provider(1, 120);
    let secs = t.elapsed().as_secs_f64();
    assert!(got[0].1.len() >= m.len());
    let peak_kib = rss("VmHWM:");
    let ratio = (peak_kib * 1024) as f64 / m.len() as f64;
    println!("RSS: message={} bytes idle_rss={before} KiB peak_rss={peak_kib} KiB ratio={ratio:.2} (goal < 4) end_to_end={secs:.2}s", m.len());
    assert!(ratio < 4.0);
}

fn count_from(h: &Harness, start: usize) -> usize {
    h.provider_msgs().len() - start
}

/// Ten SMTP sessions in parallel, each sending its share of `n` messages; with `login`
/// each session first signs in (once per session, as a helper's connection does).
static NEXT: AtomicUsize = AtomicUsize::new(1_000_000);

fn load(h: &Harness, port: u16, n: usize, size: usize, login: Option<(&str, &str)>) {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    const SESSIONS: usize = 10;
    let login = login.map(|(u, p)| Credentials::new(u.into(), p.into()));
    h.rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..SESSIONS {
            let login = login.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = session(port).await;
                if let Some(l) = &login {
                    c.auth(&[Mechanism::Plain], l).await.unwrap();
                }
                for _ in (w..n).step_by(SESSIONS) {
                    let env = lettre::address::Envelope::new(
                        Some("peter.meier@musterstadt.de".parse().unwrap()),
                        vec!["anna@buerger.de-mail.de".parse().unwrap()],
                    )
                    .unwrap();
                    // Unique across rounds: the gateway takes a repeated Message-ID as a resend.
                    c.send(&env, &msg(NEXT.fetch_add(1, Ordering::Relaxed), size)).await.unwrap();
                }
                let _ = c.quit().await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
#[ignore]
fn relay_throughput_against_postfix() {
    const N: usize = 1000;
    const SIZE: usize = 10 * 1024;
    // The outbound listener on loopback without TLS (the only place the gateway allows
    // that), so the client does the same work towards both; the gateway still signs the
    // person in against the directory (LDAP bind per session) and checks their rights
    // from the directory (cached) for every De-Mail, as in production.
    let mut h = Harness::custom(POLICY, |c| {
        c.replace("tls = \"starttls\"\nrequire_auth = true", "tls = \"none\"\nrequire_auth = true")
    });
    h.start_provider();
    let login = h.directory.person("peter.meier@musterstadt.de");
    let run = |h: &Harness, port: u16, what: &str, auth: Option<(&str, &str)>| -> f64 {
        let start = h.provider_msgs().len();
        let t = Instant::now();
        load(h, port, N, SIZE, auth);
        let accepted = t.elapsed().as_secs_f64();
        demail_testkit::wait_until(Duration::from_secs(600), || (count_from(h, start) >= N).then_some(()))
            .unwrap_or_else(|| panic!("{what}: only {} of {N}", count_from(h, start)));
        let total = t.elapsed().as_secs_f64();
        println!(
            "THROUGHPUT {what}: {N} x {SIZE} B accepted in {accepted:.2}s, relayed in {total:.2}s = {:.0} msg/s",
            N as f64 / total
        );
        total
    };
    // Postfix with its durable queue, relaying to the same TLS+AUTH+mTLS provider sink.
    let p = &h.provider_pki;
    let main_cf = format!(
        "relayhost = [localhost]:{}\nsmtp_host_lookup = native\nsmtp_tls_wrappermode = yes\nsmtp_tls_security_level = secure\nsmtp_tls_secure_cert_match = nexthop\n\
         smtp_tls_CAfile = {}\nsmtp_tls_cert_file = {}\nsmtp_tls_key_file = {}\nsmtp_sasl_auth_enable = yes\n\
         smtp_sasl_password_maps = static:{PROVIDER_USER}:{PROVIDER_SECRET}\nsmtp_sasl_security_options = noanonymous\nsmtp_sasl_tls_security_options = noanonymous\n\
         default_destination_concurrency_limit = 8\n",
        h.provider_port,
        p.ca_cert.display(),
        p.client_cert.display(),
        p.client_key.display()
    );
    let pf = demail_testkit::Postfix::start(h.path(), &main_cf).expect("postfix");
    // Disk and CPU on a shared machine drift: alternate who goes first, take the median.
    let mut ratios = Vec::new();
    for round in 0..3 {
        let person = Some((login.as_str(), PERSON_PASSWORD));
        let (gw, px) = if round % 2 == 0 {
            let g = run(&h, h.out_port, "gateway", person);
            (g, run(&h, pf.port, "postfix", None))
        } else {
            let x = run(&h, pf.port, "postfix", None);
            (run(&h, h.out_port, "gateway", person), x)
        };
        println!("THROUGHPUT round={round} ratio gateway/postfix = {:.2}", px / gw);
        ratios.push(px / gw);
    }
    ratios.sort_by(|a, b| a.total_cmp(b));
    println!(
        "THROUGHPUT median ratio gateway/postfix = {:.2} (rounds {:.2}-{:.2}; goal >= 1.0)",
        ratios[1], ratios[0], ratios[2]
    );
    drop(pf);
}

/// What signing the person in adds to an SMTP session: connect, EHLO, STARTTLS, EHLO, AUTH,
/// QUIT, 200 times each, with an application account (a password compared in memory, the
/// baseline), the person's directory password (an LDAP bind) and Kerberos (GSSAPI with the
/// keytab and a directory lookup, cached after the first).
#[test]
#[ignore]
fn sign_in_latency_kerberos_and_ldap() {
    use demail_testkit::kdc::Kdc;
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters};
    use lettre::transport::smtp::extension::ClientId;
    const N: usize = 200;
    let kdir = demail_testkit::temp_dir();
    let kdc = Kdc::start(&kdir.path().join("kdc"), "MUSTERSTADT.TEST").unwrap();
    kdc.add_user("peter", "Peter-Passwort-1").unwrap();
    let keytab = kdir.path().join("gateway.keytab");
    kdc.add_service("smtp/localhost", &keytab).unwrap();
    std::env::set_var("KRB5_CONFIG", &kdc.krb5_conf);
    let cc = kdc.kinit("peter@MUSTERSTADT.TEST", "Peter-Passwort-1", &kdir.path().join("cc")).unwrap();
    std::env::set_var("KRB5CCNAME", cc);
    let kt = keytab.clone();
    let h = Harness::custom(POLICY, move |c| {
        c.replacen(
            "[identity]\nldap_password = true\n",
            &format!("[identity]\nldap_password = true\nkerberos = true\nkeytab = \"{}\"\n", kt.display()),
            1,
        )
    });
    h.directory.kerberos_person("peter", "peter.meier@musterstadt.de", "peter@MUSTERSTADT.TEST", true);
    let tls = || {
        TlsParameters::builder("localhost".into())
            .certificate_store(CertificateStore::None)
            .add_root_certificate(Certificate::from_pem(h.gw_pki.ca_pem.as_bytes()).unwrap())
            .build_rustls()
            .unwrap()
    };
    let session = |how: &str| -> f64 {
        h.rt.block_on(async {
            let hello = ClientId::Domain("bench".into());
            let t = Instant::now();
            let mut c =
                AsyncSmtpConnection::connect_tokio1(("127.0.0.1", h.out_port), None, &hello, None, None).await.unwrap();
            c.starttls(tls(), &hello).await.unwrap();
            match how {
                "kerberos" => {
                    demail_helper::kerberos::authenticate(&mut c, "smtp/localhost").await.unwrap();
                }
                "ldap" => {
                    c.auth(&[Mechanism::Plain], &Credentials::new("peter".into(), PERSON_PASSWORD.into()))
                        .await
                        .unwrap();
                }
                _ => {
                    c.auth(&[Mechanism::Plain], &Credentials::new(HELPER_USER.into(), HELPER_PASSWORD.into()))
                        .await
                        .unwrap();
                }
            }
            let _ = c.quit().await;
            t.elapsed().as_secs_f64() * 1000.0
        })
    };
    let stats = |how: &str| -> (f64, f64) {
        session(how); // warm: first directory lookup, TLS session caches
        let mut v: Vec<f64> = (0..N).map(|_| session(how)).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        (v[N / 2], v[N * 99 / 100])
    };
    let (base50, base99) = stats("account");
    for how in ["ldap", "kerberos"] {
        let (m, p99) = stats(how);
        println!(
            "SIGNIN {how}: session median {m:.2} ms p99 {p99:.2} ms; added over an in-memory password: median {:.2} ms p99 {:.2} ms",
            m - base50,
            p99 - base99
        );
    }
    println!("SIGNIN account (baseline): session median {base50:.2} ms p99 {base99:.2} ms");
}

/// The outbound listener on loopback without TLS (as in the Postfix comparison).
fn plaintext(c: String) -> String {
    c.replace("tls = \"starttls\"\nrequire_auth = true", "tls = \"none\"\nrequire_auth = true")
}

/// [`load`] spread over several nodes: the sessions go round-robin to `ports`.
fn load_nodes(h: &Harness, ports: &[u16], n: usize, size: usize, login: (&str, &str)) {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    const SESSIONS: usize = 12;
    let login = Credentials::new(login.0.into(), login.1.into());
    let ports = ports.to_vec();
    h.rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..SESSIONS {
            let (login, port) = (login.clone(), ports[w % ports.len()]);
            tasks.push(tokio::spawn(async move {
                let mut c = session(port).await;
                c.auth(&[Mechanism::Plain], &login).await.unwrap();
                for _ in (w..n).step_by(SESSIONS) {
                    let env = lettre::address::Envelope::new(
                        Some("peter.meier@musterstadt.de".parse().unwrap()),
                        vec!["anna@buerger.de-mail.de".parse().unwrap()],
                    )
                    .unwrap();
                    c.send(&env, &msg(NEXT.fetch_add(1, Ordering::Relaxed), size)).await.unwrap();
                }
                let _ = c.quit().await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// Seconds until the in-test provider holds `n` more messages after submitting them.
fn relay_secs(h: &Harness, ports: &[u16], n: usize, what: &str, login: Option<(&str, &str)>) -> f64 {
    const SIZE: usize = 10 * 1024;
    let start = h.provider_msgs().len();
    let t = Instant::now();
    match login {
        Some(l) => load_nodes(h, ports, n, SIZE, l),
        None => load(h, ports[0], n, SIZE, None),
    }
    let accepted = t.elapsed().as_secs_f64();
    demail_testkit::wait_until(Duration::from_secs(600), || (count_from(h, start) >= n).then_some(()))
        .unwrap_or_else(|| panic!("{what}: only {} of {n}", count_from(h, start)));
    let total = t.elapsed().as_secs_f64();
    println!(
        "CLUSTER-THROUGHPUT {what}: {n} x {SIZE} B accepted in {accepted:.2}s, relayed in {total:.2}s = {:.0} msg/s",
        n as f64 / total
    );
    total
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// One node on PostgreSQL against one on SQLite, the same load (10 KB De-Mails, people
/// signed in against the directory, the in-test provider): goal ratio ≥ 0.7.
#[test]
#[ignore]
fn postgres_node_against_sqlite_node() {
    use common::cluster::Cluster;
    const N: usize = 1000;
    let mut sqlite = Harness::custom(POLICY, plaintext);
    sqlite.start_provider();
    let mut c = Cluster::build(1, 1, 15, false, plaintext);
    c.h.start_provider();
    let (l1, l2) =
        (sqlite.directory.person("peter.meier@musterstadt.de"), c.h.directory.person("peter.meier@musterstadt.de"));
    let mut ratios = Vec::new();
    for round in 0..3 {
        let s = || relay_secs(&sqlite, &[sqlite.out_port], N, "sqlite", Some((&l1, PERSON_PASSWORD)));
        let p = || relay_secs(&c.h, &[c.nodes[0].out_port], N, "postgres", Some((&l2, PERSON_PASSWORD)));
        let (s, p) = if round % 2 == 0 {
            (s(), p())
        } else {
            let p = p();
            (s(), p)
        };
        println!("CLUSTER-THROUGHPUT round={round} ratio postgres/sqlite = {:.2}", s / p);
        ratios.push(s / p);
    }
    let (m, lo, hi) = median(ratios);
    println!("CLUSTER-THROUGHPUT median ratio one node postgres/sqlite = {m:.2} (rounds {lo:.2}-{hi:.2}; goal >= 0.7)");
    c.check_books();
}

/// Three nodes on PostgreSQL (the load spread over them) against Postfix, as in
/// [`relay_throughput_against_postfix`]: goal ratio ≥ 1.0.
#[test]
#[ignore]
fn three_postgres_nodes_against_postfix() {
    use common::cluster::Cluster;
    const N: usize = 1000;
    let mut c = Cluster::build(3, 3, 15, false, plaintext);
    c.h.start_provider();
    let login = c.h.directory.person("peter.meier@musterstadt.de");
    let p = &c.h.provider_pki;
    let main_cf = format!(
        "relayhost = [localhost]:{}\nsmtp_host_lookup = native\nsmtp_tls_wrappermode = yes\nsmtp_tls_security_level = secure\nsmtp_tls_secure_cert_match = nexthop\n\
         smtp_tls_CAfile = {}\nsmtp_tls_cert_file = {}\nsmtp_tls_key_file = {}\nsmtp_sasl_auth_enable = yes\n\
         smtp_sasl_password_maps = static:{PROVIDER_USER}:{PROVIDER_SECRET}\nsmtp_sasl_security_options = noanonymous\nsmtp_sasl_tls_security_options = noanonymous\n\
         default_destination_concurrency_limit = 8\n",
        c.h.provider_port,
        p.ca_cert.display(),
        p.client_cert.display(),
        p.client_key.display()
    );
    let pf = demail_testkit::Postfix::start(c.h.path(), &main_cf).expect("postfix");
    let ports: Vec<u16> = c.nodes.iter().map(|n| n.out_port).collect();
    let mut ratios = Vec::new();
    for round in 0..3 {
        let g = || relay_secs(&c.h, &ports, N, "3 nodes", Some((&login, PERSON_PASSWORD)));
        let x = || relay_secs(&c.h, &[pf.port], N, "postfix", None);
        let (g, x) = if round % 2 == 0 {
            (g(), x())
        } else {
            let x = x();
            (g(), x)
        };
        println!("CLUSTER-THROUGHPUT round={round} ratio 3 nodes/postfix = {:.2}", x / g);
        ratios.push(x / g);
    }
    let (m, lo, hi) = median(ratios);
    println!(
        "CLUSTER-THROUGHPUT median ratio three postgres nodes/postfix = {m:.2} (rounds {lo:.2}-{hi:.2}; goal >= 1.0)"
    );
    drop(pf);
    c.check_books();
}

/// From a node's death (kill -9 while it waits for the provider's answer to DATA) to the
/// first delivery of that message by the other node, with the default lease (15 s): goal ≤ 30 s.
#[test]
#[ignore]
fn takeover_after_a_node_dies() {
    use common::cluster::*;
    let mut c = Cluster::build(2, 1, 15, false, |c| c);
    let sink = start_holding_sink(&c.h);
    let mut secs = Vec::new();
    for round in 0..3 {
        if round > 0 {
            // The survivor becomes the victim: restart the dead one as the survivor.
            c.nodes.swap(0, 1);
            sink.got.lock().unwrap().clear();
            sink.release.store(false, Ordering::SeqCst);
        }
        let m = plain(&format!("takeover{round}"), round);
        assert!(c.submit(0, FROM, &[TO], &m).unwrap().starts_with("250"));
        demail_testkit::wait_until(Duration::from_secs(30), || (sink.got.lock().unwrap().len() == 1).then_some(()))
            .expect("first node did not deliver");
        c.start(1);
        c.nodes[0].kill();
        let died = Instant::now();
        demail_testkit::wait_until(Duration::from_secs(60), || (sink.got.lock().unwrap().len() == 2).then_some(()))
            .unwrap_or_else(|| panic!("no takeover\n{}", c.logs()));
        let s = died.elapsed().as_secs_f64();
        println!("TAKEOVER round={round}: {s:.1}s from kill -9 to the other node's delivery (lease 15 s)");
        secs.push(s);
        sink.release.store(true, Ordering::SeqCst);
    }
    let (m, lo, hi) = median(secs);
    println!("TAKEOVER median {m:.1}s (rounds {lo:.1}-{hi:.1}s; goal <= 30 s)");
}

/// Appends per second to the PostgreSQL archive chain (4 writers, one entry per
/// transaction, 1 KB each) with an empty archive and with 1,000,000 entries: goal ≥ 0.9.
#[test]
#[ignore]
fn archive_append_at_a_million_entries() {
    use demail_gateway::archive::NewEntry;
    use demail_gateway::config::{Backend, Storage};
    use demail_testkit::postgres;
    let dir = demail_testkit::temp_dir();
    let pg = demail_testkit::Postgres::start(dir.path()).unwrap();
    std::env::set_var("BENCH_PG_PASSWORD", postgres::PASSWORD);
    let storage = Storage {
        backend: Backend::Postgres,
        host: Some("127.0.0.1".into()),
        port: Some(pg.port),
        database: Some(postgres::DATABASE.into()),
        user: Some(postgres::USER.into()),
        password_env: Some("BENCH_PG_PASSWORD".into()),
        ca: Some(pg.ca.clone()),
        ..Storage::default()
    };
    let archive = demail_gateway::pg::open_archive(&storage).unwrap();
    let data = vec![b'x'; 1024];
    let rate = |what: &str| -> f64 {
        let n = AtomicUsize::new(0);
        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    while t.elapsed() < Duration::from_secs(15) {
                        archive
                            .append(&NewEntry {
                                direction: "out",
                                private_id: Some("DM-bench"),
                                message_id: Some("<bench@x>"),
                                sender: "a@x.de-mail.de",
                                recipients: &["b@y.de-mail.de".into()],
                                data: &data,
                                actor: None,
                            })
                            .unwrap();
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        let r = n.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
        println!("ARCHIVE {what}: {r:.0} appends/s");
        r
    };
    let empty = rate("empty archive");
    // Fill to 1,000,000 entries in SQL (linked, not hash-valid: appending reads only the head).
    let (seq, hash) = {
        let h = pg.sql("SELECT seq, hash FROM archive_head").unwrap();
        let (s, h) = h.split_once('|').unwrap();
        (s.parse::<i64>().unwrap(), h.to_string())
    };
    let t = Instant::now();
    pg.sql(&format!(
        "INSERT INTO entries (seq, time, direction, private_id, message_id, sender, recipients, sha256, size, prev_hash, hash, data)
         SELECT s, 0, 'out', 'DM-fill', '<fill@x>', 'a@x.de-mail.de', 'b@y.de-mail.de', encode(sha256(s::text::bytea), 'hex'), 1024,
                CASE WHEN s = {first} THEN '{hash}' ELSE encode(sha256(('h' || (s - 1))::bytea), 'hex') END,
                encode(sha256(('h' || s)::bytea), 'hex'), decode(repeat('78', 1024), 'hex')
           FROM generate_series({first}, 1000000) s",
        first = seq + 1
    ))
    .unwrap();
    pg.sql("UPDATE archive_head SET seq = 1000000, hash = (SELECT hash FROM entries WHERE seq = 1000000)").unwrap();
    pg.sql("VACUUM ANALYZE entries").unwrap();
    println!("ARCHIVE filled to 1,000,000 entries in {:.0}s", t.elapsed().as_secs_f64());
    let full = rate("1,000,000 entries");
    println!("ARCHIVE ratio appends at 1,000,000 entries / empty = {:.2} (goal >= 0.9)", full / empty);
}

/// `archive verify` over 1,000,000 entries (1 KB each, SQLite, one signed checkpoint over
/// all of them): entries per second; goal ≥ 100,000/s. Beside it, the same entries only
/// read (the floor any verify has to pay).
#[test]
#[ignore]
fn archive_verify_at_a_million_entries() {
    use demail_gateway::archive::{self, NewEntry, Trust};
    const N: i64 = 1_000_000;
    let dir = demail_testkit::temp_dir();
    let path = dir.path().join("archive.sqlite");
    drop(archive::sqlite::open(&path).unwrap());
    let data = vec![b'x'; 1024];
    let t = Instant::now();
    let mut prev: Option<(i64, String)> = None;
    {
        let mut c = rusqlite::Connection::open(&path).unwrap();
        let tx = c.transaction().unwrap();
        {
            let mut st = tx
                .prepare(
                    "INSERT INTO entries (seq, time, direction, private_id, message_id, sender, recipients, sha256, size, link, prev_hash, hash, actor, data)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )
                .unwrap();
            for i in 0..N {
                let mut d = data.clone();
                d[..8].copy_from_slice(&i.to_be_bytes());
                let rcpt = ["b@y.de-mail.de".to_string()];
                let ne = NewEntry {
                    direction: "out",
                    private_id: Some("DM-bench"),
                    message_id: Some("<bench@x>"),
                    sender: "a@x.de-mail.de",
                    recipients: &rcpt,
                    data: &d,
                    actor: Some("kerberos:peter@MUSTERSTADT.DE"),
                };
                let e = archive::next_entry(prev.take(), None, &ne, 1_700_000_000_000 + i, archive::sha256_hex(&d));
                st.execute(rusqlite::params![
                    e.seq,
                    e.time,
                    e.direction,
                    e.private_id,
                    e.message_id,
                    e.sender,
                    e.recipients,
                    e.sha256,
                    e.size,
                    e.link,
                    e.prev_hash,
                    e.hash,
                    e.actor,
                    d
                ])
                .unwrap();
                prev = Some((e.seq, e.hash));
            }
        }
        tx.commit().unwrap();
    }
    let (seq, hash) = prev.unwrap();
    std::fs::write(dir.path().join("archive.sqlite.head"), format!("{seq} {hash}\n")).unwrap();
    println!("ARCHIVE filled {N} entries in {:.1}s", t.elapsed().as_secs_f64());
    let a = archive::sqlite::open(&path).unwrap();
    let key = [3u8; 32];
    let t = Instant::now();
    let cp = a.checkpoint("bench", &key).unwrap().unwrap();
    assert_eq!(cp.seq, N);
    println!("ARCHIVE checkpoint over {N} entries: {:.2}s", t.elapsed().as_secs_f64());
    let trust = Trust {
        keys: vec![demail_core::seal::public_key("bench", &key)],
        require: true,
        now_ms: i64::MAX / 2,
        ..Trust::default()
    };
    let t = Instant::now();
    let mut read = 0usize;
    let mut after = 0;
    loop {
        let page = a.store().entries_with_data(after, 256).unwrap();
        let Some((last, _)) = page.last() else { break };
        after = last.seq;
        read += page.iter().map(|(_, d)| d.len()).sum::<usize>();
    }
    let floor = N as f64 / t.elapsed().as_secs_f64();
    assert_eq!(read, 1024 * N as usize);
    let t = Instant::now();
    let r = a.verify_with(&trust).unwrap();
    let rate = N as f64 / t.elapsed().as_secs_f64();
    assert!(r.problems.is_empty() && r.signed_upto == N, "{:?}", r.problems);
    println!(
        "ARCHIVE VERIFY {N} entries: {rate:.0} entries/s (goal >= 100000); reading them alone {floor:.0}/s, ratio {:.2}",
        rate / floor
    );
}
