//! Ingress behind a load balancer: real HAProxy in TCP mode speaks PROXY protocol v2 to the
//! gateway, which takes the client address from the header only when the connection comes
//! from a configured balancer, so `allowed_clients` and the logs see the real client.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The first reply line on a connection from `source` to `port` (after `send`, if any);
/// empty when the server closed without a word.
fn greeting_from(h: &Harness, source: &str, port: u16, send: &[u8]) -> String {
    h.rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let mut c = s.connect(([127, 0, 0, 1], port).into()).await.unwrap();
        c.write_all(send).await.unwrap();
        let mut buf = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await.map_or(0, |r| r.unwrap_or(0));
        String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_string()
    })
}

fn forged_header(claimed: &str) -> Vec<u8> {
    let src: std::net::SocketAddr = format!("{claimed}:40000").parse().unwrap();
    let dst: std::net::SocketAddr = "127.0.0.1:25".parse().unwrap();
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (src, dst),
    )
    .build()
    .unwrap()
}

#[test]
fn behind_haproxy_the_gateway_sees_the_real_client() {
    // The balancer connects from 127.0.0.1; clients come from 127.0.0.1 and 127.0.0.2 (allowed)
    // and 127.0.0.3 (not allowed).
    let mut h = Harness::custom(POLICY, |c| {
        c.replace(
            "allowed_clients = [\"127.0.0.0/8\"]\n",
            "allowed_clients = [\"127.0.0.1/32\", \"127.0.0.2/32\"]\nproxy_protocol_from = [\"127.0.0.1/32\"]\n",
        )
    });
    h.start_provider();
    let lb = demail_testkit::Haproxy::start(h.path(), &[h.out_port]).expect("haproxy");
    // Through the balancer: the header's address decides, not the balancer's.
    let ok = demail_testkit::wait_until(Duration::from_secs(15), || {
        let g = greeting_from(&h, "127.0.0.2", lb.port, b"");
        g.starts_with("220").then_some(g)
    });
    assert!(ok.is_some(), "127.0.0.2 through HAProxy: {}", h.log());
    let refused = greeting_from(&h, "127.0.0.3", lb.port, b"");
    assert!(refused.starts_with("554-5.7.1"), "127.0.0.3 through HAProxy, which itself is allowed: {refused:?}");
    // One log line naming both (the log may colour field names).
    let logged = |a: &str, b: &str| {
        demail_testkit::wait_until(Duration::from_secs(5), || {
            h.log().lines().any(|l| l.contains(a) && l.contains(b)).then_some(())
        })
    };
    assert!(logged("client not on allow-list", "127.0.0.3:").is_some(), "{}", h.log());
    // A De-Mail through the balancer, signed in as the person.
    let login = h.directory.person("peter.meier@musterstadt.de");
    let m = msg("peter.meier@musterstadt.de", "anna@buerger.de-mail.de", "[VB] Bescheid", "");
    let r =
        h.submit_at(lb.port, &login, PERSON_PASSWORD, "peter.meier@musterstadt.de", &["anna@buerger.de-mail.de"], &m);
    assert!(r.as_deref().is_ok_and(|r| r.starts_with("250")), "{r:?}\n{}", h.log());
    assert_eq!(h.wait_provider(1, 20).len(), 1);
    // Straight from the balancer's address without a header: no session at all.
    let n = h.log().matches("without a valid PROXY v2 header").count();
    assert_eq!(greeting_from(&h, "127.0.0.1", h.out_port, b"EHLO client.example.org\r\n"), "", "{}", h.log());
    assert!(
        demail_testkit::wait_until(Duration::from_secs(5), || {
            (h.log().matches("without a valid PROXY v2 header").count() > n).then_some(())
        })
        .is_some(),
        "{}",
        h.log()
    );
    // A header from anyone else is not believed: 127.0.0.3 claiming to be 127.0.0.2.
    let forged = greeting_from(&h, "127.0.0.3", h.out_port, &forged_header("127.0.0.2"));
    assert!(forged.starts_with("554-5.7.1"), "{forged:?}");
    // Straight from an allowed client that is no balancer: a normal session.
    assert!(greeting_from(&h, "127.0.0.2", h.out_port, b"").starts_with("220"));
}
