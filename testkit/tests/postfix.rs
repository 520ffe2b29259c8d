//! The shared Postfix starter: STARTTLS offered with the test CA, relay to Dovecot by LMTP.

use demail_testkit::{temp_dir, wait_until, Dovecot, Pki, Postfix};
use std::time::Duration;

#[test]
fn postfix_relays_to_dovecot_by_lmtp_and_empties_its_queue() {
    let dir = temp_dir();
    let pki = Pki::generate(dir.path(), "pf");
    let dovecot = Dovecot::start(dir.path()).expect("dovecot");
    let pf = match Postfix::start_lmtp_relay(dir.path(), &pki, Some(dovecot.lmtp_port), false) {
        Ok(p) => p,
        Err(e) if e.contains("root") => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let out = std::process::Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", pf.port), "--tls", "--timeout", "10"])
        .args(["--from", "a@musterstadt.de", "--to", "peter.meier@musterstadt.de"])
        .args(["--header", "Subject: ueber Postfix"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), pf.log());
    let got = dovecot.wait_for_messages("peter.meier@musterstadt.de", 1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "{}", pf.log());
    assert!(String::from_utf8_lossy(&got[0]).contains("Subject: ueber Postfix"));
    assert!(wait_until(Duration::from_secs(10), || (pf.queued() == 0).then_some(())).is_some());
}
