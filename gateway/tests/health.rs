//! Health and metrics over HTTP (`[health]`): live, ready (the spool and archive take
//! writes; not while stopping), and Prometheus metrics that follow what the gateway does.

mod common;

use common::*;
use std::time::Duration;

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

#[test]
fn live_ready_metrics_and_not_ready_while_stopping() {
    let port = demail_testkit::free_port();
    let mut h = Harness::custom(POLICY, |c| format!("{c}\n[health]\nlisten = \"127.0.0.1:{port}\"\ndrain_secs = 3\n"));
    h.start_provider();
    assert_eq!(http_get(port, "/healthz/live"), (200, "ok\n".into()));
    assert_eq!(http_get(port, "/healthz/ready").0, 200);

    let raw = msg("peter.meier@musterstadt.de", "anna@buerger.de-mail.de", "[P] Gezählt", "");
    h.submit("peter.meier@musterstadt.de", &["anna@buerger.de-mail.de"], &raw).unwrap();
    assert_eq!(h.wait_provider(1, 20).len(), 1);
    let body = demail_testkit::wait_until(Duration::from_secs(10), || {
        let (_, b) = http_get(port, "/metrics");
        (metric(&b, "demail_deliveries_total{kind=\"provider\"}") == Some(1.0)).then_some(b)
    })
    .unwrap_or_else(|| http_get(port, "/metrics").1);
    assert_eq!(metric(&body, "demail_deliveries_total{kind=\"provider\"}"), Some(1.0), "{body}");
    assert_eq!(metric(&body, "demail_queue_depth{state=\"queued\"}"), Some(0.0), "{body}");
    assert_eq!(metric(&body, "demail_oldest_undelivered_seconds"), Some(0.0), "{body}");
    assert!(metric(&body, "demail_archive_append_seconds_count").unwrap_or(0.0) >= 1.0, "{body}");

    // The provider refuses for now: the De-Mail waits, and the metrics say so.
    h.stop_provider();
    let raw = msg("peter.meier@musterstadt.de", "anna@buerger.de-mail.de", "[P] Wartet", "");
    h.submit("peter.meier@musterstadt.de", &["anna@buerger.de-mail.de"], &raw).unwrap();
    let body = demail_testkit::wait_until(Duration::from_secs(20), || {
        let (_, b) = http_get(port, "/metrics");
        (metric(&b, "demail_delivery_failures_total{kind=\"temporary\"}").unwrap_or(0.0) >= 1.0).then_some(b)
    })
    .unwrap_or_else(|| panic!("no temporary failure counted: {}\n{}", http_get(port, "/metrics").1, h.log()));
    assert_eq!(metric(&body, "demail_queue_depth{state=\"queued\"}"), Some(1.0), "{body}");

    // The spool cannot take a message: not ready, with the reason.
    let tmp = h.path().join("spool/tmp");
    std::fs::rename(&tmp, h.path().join("spool/tmp.away")).unwrap();
    std::fs::write(&tmp, b"not a directory").unwrap();
    let (status, why) = http_get(port, "/healthz/ready");
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("spool.write"), "{why}");
    std::fs::remove_file(&tmp).unwrap();
    std::fs::rename(h.path().join("spool/tmp.away"), &tmp).unwrap();
    assert_eq!(http_get(port, "/healthz/ready").0, 200);

    // SIGTERM: not ready at once, still live while draining, then gone.
    let pid = h.gateway.as_ref().unwrap().id();
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let stopping = demail_testkit::wait_until(Duration::from_secs(2), || {
        let (s, b) = http_get(port, "/healthz/ready");
        (s == 503).then_some(b)
    });
    assert_eq!(stopping.as_deref(), Some("stopping\n"));
    assert_eq!(http_get(port, "/healthz/live").0, 200);
    let gone = demail_testkit::wait_until(Duration::from_secs(10), || h.gateway.as_mut().unwrap().try_wait());
    assert!(gone.is_some_and(|s| s.success()), "{}", h.log());
}
