//! Numbers for issue 4 (ignored by default; run with the release build):
//!
//! ```text
//! cargo test --release -p demail-helper --test bench -- --ignored --nocapture --test-threads 1
//! ```

mod common;

use base64::Engine;
use common::*;
use demail_testkit::{Pki, Postfix};
use serde_json::json;
use std::time::{Duration, Instant};

fn proc_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn pid(h: &Helper) -> u32 {
    h.listening["pid"].as_u64().unwrap() as u32
}

#[test]
#[ignore]
fn startup_and_idle_rss() {
    // Start to ready: spawn `demail serve` on a fixed port and poll until /v1/health answers.
    let h = Helper::start("[relay]\nenabled = false\n", "");
    let d = h.dir.path().to_path_buf();
    drop(h);
    let mut best = Duration::MAX;
    for _ in 0..10 {
        let port = demail_testkit::free_port();
        let t = Instant::now();
        let mut cmd = std::process::Command::new(demail_bin());
        cmd.args(["serve", "--port", &port.to_string()]);
        helper_env(&mut cmd, &d);
        let mut child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && http(port, "GET", "/v1/health", &[], b"").status == 200
            {
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
            assert!(t.elapsed() < Duration::from_secs(10));
        }
        best = best.min(t.elapsed());
        let _ = child.kill();
        let _ = child.wait();
    }
    let h = Helper::start("", "");
    std::thread::sleep(Duration::from_secs(2));
    let rss = proc_kb(pid(&h), "VmRSS:");
    println!(
        "BENCH start_to_ready_ms={:.1} (best of 10: spawn until the first /v1/health answer)",
        best.as_secs_f64() * 1000.0
    );
    println!("BENCH idle_rss_kb={rss}");
}

#[test]
#[ignore]
fn check_with_100_recipients_latency() {
    let h = Helper::start("[relay]\nenabled = false\n", "");
    let token = h.pair();
    let to: Vec<String> = (0..100).map(|i| format!("Person {i} <person{i}@buerger.de-mail.de>")).collect();
    let body = json!({ "from": "peter.meier@musterstadt.de", "to": to, "options": ["private"] });
    for _ in 0..50 {
        h.post("/v1/check", Some(&token), &body);
    }
    let mut lat: Vec<f64> = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        let r = h.post("/v1/check", Some(&token), &body);
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.status, 200);
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("BENCH check100 new-connection p50_ms={:.3} p99_ms={:.3} max_ms={:.3}", lat[500], lat[990], lat[999]);

    // As an add-in's fetch does it: one kept-alive connection.
    let mut conn = KeepAlive::open(h.port, &token);
    let payload = body.to_string();
    let mut lat: Vec<f64> = Vec::new();
    for i in 0..1050 {
        let t = Instant::now();
        let (status, _) = conn.post("/v1/check", &payload);
        assert_eq!(status, 200);
        if i >= 50 {
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("BENCH check100 keep-alive p50_ms={:.3} p99_ms={:.3} max_ms={:.3}", lat[500], lat[990], lat[999]);
}

#[test]
#[ignore]
fn large_message_peak_rss() {
    let tmp = demail_testkit::temp_dir();
    let pki = Pki::generate(tmp.path(), "gw");
    let sink = Sink::start(&pki, false, None, None);
    let policy = "version = 1\n[rules]\nmax_size = \"30 MiB\"\n";
    let h = Helper::start_with(HelperOpts {
        machine: &gateway_config(sink.port, &pki.ca_cert, "starttls", ""),
        policy: Some(policy),
        ..Default::default()
    });
    let token = h.pair();
    std::thread::sleep(Duration::from_millis(500));
    let before = proc_kb(pid(&h), "VmHWM:");
    let size = 25_000_000;
    let attachment = base64::engine::general_purpose::STANDARD.encode(vec![0x5au8; size * 3 / 4 - 4096]);
    let mut raw = String::from("From: peter.meier@musterstadt.de\r\nTo: anna@buerger.de-mail.de\r\nSubject: [P] Akte\r\nMIME-Version: 1.0\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    for chunk in attachment.as_bytes().chunks(76) {
        raw.push_str(std::str::from_utf8(chunk).unwrap());
        raw.push_str("\r\n");
    }
    let auth = format!("Bearer {token}");
    let r =
        h.raw("POST", "/v1/messages", &[("Authorization", &auth), ("Content-Type", "message/rfc822")], raw.as_bytes());
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["result"]["id"].as_str().unwrap().to_string();
    let v = h.wait_message(&token, &id, Duration::from_secs(120), |v| v["status"] == "sent");
    assert_eq!(v["status"], "sent");
    let peak = proc_kb(pid(&h), "VmHWM:");
    let mb = raw.len() as f64 / 1_048_576.0;
    println!(
        "BENCH large_message size_mb={mb:.1} peak_rss_mb={:.1} idle_before_mb={:.1} ratio={:.2}",
        peak as f64 / 1024.0,
        before as f64 / 1024.0,
        peak as f64 / 1024.0 / mb
    );
    assert_eq!(sink.received().len(), 1);
}

/// Relay against relay: the helper (accept with fsync, relay over verified STARTTLS)
/// against a Postfix relay doing the same job (smtp-source → Postfix queue, fsynced →
/// verified TLS to the relayhost), both forwarding the same 10 KB messages into one
/// durable Postfix sink that queues and then discards. A round ends when the sink has
/// taken and drained every message. Both senders use one connection for all messages
/// (smtp-source one session, the helper's client keep-alive, as an add-in's fetch).
/// Disk and CPU on a shared machine drift, so the runs alternate and the median ratio
/// is the figure.
#[test]
#[ignore]
fn relay_throughput_vs_postfix() {
    let (rounds, n) = (3, 300);
    let tmp = demail_testkit::temp_dir();
    let pki = Pki::generate(tmp.path(), "pf");
    let sink_dir = tmp.path().join("sink");
    let relay_dir = tmp.path().join("relay");
    std::fs::create_dir_all(&sink_dir).unwrap();
    std::fs::create_dir_all(&relay_dir).unwrap();
    let sink = Postfix::start_lmtp_relay(&sink_dir, &pki, None, false).expect("postfix sink");
    // The peer relay verifies the sink's certificate against the test CA, as the helper does.
    let relay = Postfix::start(
        &relay_dir,
        &format!(
            "relayhost = [localhost]:{}\nsmtpd_relay_restrictions = permit_mynetworks, reject\n\
             smtp_host_lookup = native\nsmtp_dns_support_level = disabled\n\
             smtp_tls_security_level = secure\nsmtp_tls_secure_cert_match = nexthop\nsmtp_tls_CAfile = {}\nsmtp_tls_loglevel = 1\n",
            sink.port,
            pki.ca_cert.display()
        ),
    )
    .expect("postfix relay");
    let h = Helper::start(&gateway_config(sink.port, &pki.ca_cert, "starttls", ""), "[log]\nlevel = \"warn\"\n");
    let token = h.pair();
    let text = "x".repeat(10 * 1024 - 600);
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let t = Instant::now();
        let st = std::process::Command::new("smtp-source")
            .args([
                "-c",
                "-l",
                "10240",
                "-m",
                &n.to_string(),
                "-s",
                "1",
                "-f",
                "peter.meier@musterstadt.de",
                "-t",
                "anna@buerger.de-mail.de",
            ])
            .arg(format!("127.0.0.1:{}", relay.port))
            .output()
            .expect("smtp-source");
        assert!(st.status.success());
        let drained = demail_testkit::wait_until(Duration::from_secs(300), || {
            (relay.queued() == 0 && sink.queued() == 0).then_some(())
        });
        assert!(drained.is_some(), "postfix relay did not drain: {}", relay.log());
        let postfix_s = t.elapsed().as_secs_f64();

        let sent_before =
            h.get("/v1/outbox?limit=1", Some(&token)).json()["result"]["counts"]["sent"].as_u64().unwrap_or(0);
        let mut conn = KeepAlive::open(h.port, &token);
        let t = Instant::now();
        for i in 0..n {
            let mut m = demail_message(&format!("Bescheid {round}-{i}"));
            m["text"] = json!(text);
            let (status, _) = conn.post("/v1/messages", &m.to_string());
            assert_eq!(status, 202);
        }
        let accepted_s = t.elapsed().as_secs_f64();
        let target = sent_before + n as u64;
        let done = demail_testkit::wait_until(Duration::from_secs(300), || {
            (h.get("/v1/outbox?limit=1", Some(&token)).json()["result"]["counts"]["sent"].as_u64() == Some(target))
                .then_some(())
        });
        assert!(done.is_some());
        let queued = demail_testkit::wait_until(Duration::from_secs(120), || (sink.queued() == 0).then_some(()));
        assert!(queued.is_some());
        let helper_s = t.elapsed().as_secs_f64();
        println!(
            "BENCH relay round={round} n={n} postfix_msgs_per_s={:.0} helper_msgs_per_s={:.0} (accept {:.0}/s) ratio={:.2}",
            n as f64 / postfix_s,
            n as f64 / helper_s,
            n as f64 / accepted_s,
            postfix_s / helper_s
        );
        ratios.push(postfix_s / helper_s);
    }
    // The peer really relayed every message, over verified TLS.
    let log = relay.log();
    assert_eq!(log.matches("status=sent").count(), rounds * n, "{log}");
    assert!(log.contains("Verified TLS connection established"), "{log}");
    ratios.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("BENCH relay median_ratio={:.2} (goal >= 1.0)", ratios[ratios.len() / 2]);
}

/// One kept-alive HTTP/1.1 connection to the helper.
struct KeepAlive {
    port: u16,
    token: String,
    w: std::net::TcpStream,
    r: std::io::BufReader<std::net::TcpStream>,
}

impl KeepAlive {
    fn open(port: u16, token: &str) -> KeepAlive {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        KeepAlive { port, token: token.into(), w: s.try_clone().unwrap(), r: std::io::BufReader::new(s) }
    }

    /// Status and body.
    fn post(&mut self, path: &str, payload: &str) -> (u16, Vec<u8>) {
        use std::io::{BufRead, Read, Write};
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
            self.port,
            self.token,
            payload.len()
        );
        self.w.write_all(req.as_bytes()).unwrap();
        let (mut len, mut status) = (0usize, 0u16);
        loop {
            let mut line = String::new();
            self.r.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(code) = line.strip_prefix("HTTP/1.1 ") {
                status = code.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut b = vec![0u8; len];
        self.r.read_exact(&mut b).unwrap();
        (status, b)
    }
}
