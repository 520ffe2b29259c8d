//! The loopback API against the real `demail serve --port 0` binary.

mod common;

use base64::Engine;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const POLICY: &str = r#"
version = 1
[organisation]
name = "Musterstadt"
internal_domains = ["musterstadt.de"]
[rules]
mixed_addressing = "warn"
max_size = "200 KiB"
[authorization]
default = "allow"
[[authorization.senders]]
address = "praktikant@musterstadt.de"
demail = false
"#;

/// No gateway: messages stay queued, which is what the API tests want to look at.
fn helper() -> Helper {
    Helper::start_with(HelperOpts { machine: "[relay]\nenabled = false\n", policy: Some(POLICY), ..Default::default() })
}

#[test]
fn health_and_version_need_no_token() {
    let h = helper();
    let r = h.get("/v1/health", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"]["status"], "ok");
    assert_eq!(r.header("x-demail-protocol"), Some("2"));
    let r = h.get("/v1/version", None);
    assert_eq!(r.status, 200);
    let actions = r.json()["result"]["actions"].as_array().unwrap().clone();
    assert!(actions.iter().any(|a| a["action"] == "messages.submit" && a["since"] == 1));
    // The discovery file names the same port.
    let disc: Value =
        serde_json::from_slice(&std::fs::read(h.dir.path().join("run/demail/helper.json")).unwrap()).unwrap();
    assert_eq!(disc["port"].as_u64(), Some(h.port as u64));
}

#[test]
fn missing_and_wrong_token_are_401() {
    let h = helper();
    for path in ["/v1/policy", "/v1/outbox", "/v1/journal"] {
        let r = h.get(path, None);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.code(), "auth.missing");
        assert!(r.json()["error"]["message"].as_str().unwrap().contains("gekoppelt"));
        assert!(r.json()["error"]["message_en"].as_str().unwrap().contains("paired"));
        let r = h.get(path, Some("dmh1_0000000000000000000000000000000000000000000000000000000000000000"));
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.code(), "auth.invalid");
    }
    let r = h.post("/v1/check", Some("nonsense"), &json!({}));
    assert_eq!(r.status, 401);
    let r = h.raw("GET", "/v1/outbox", &[("Authorization", "Basic dXNlcjpwdw==")], b"");
    assert_eq!(r.status, 401);
}

#[test]
fn foreign_host_and_origin_are_403() {
    let h = helper();
    let token = h.pair();
    let auth = format!("Bearer {token}");
    let r = h.raw("GET", "/v1/health", &[("Host", "evil.example")], b"");
    assert_eq!(r.status, 403);
    assert_eq!(r.code(), "request.host");
    let r = h.raw("GET", "/v1/outbox", &[("Host", &format!("evil.example:{}", h.port)), ("Authorization", &auth)], b"");
    assert_eq!(r.status, 403);
    // Same IP, other port: still foreign (another user's helper, a rebinding page).
    let r = h.raw("GET", "/v1/health", &[("Host", "127.0.0.1:1")], b"");
    assert_eq!(r.status, 403);
    let r = h.raw("GET", "/v1/health", &[("Host", &format!("localhost:{}", h.port))], b"");
    assert_eq!(r.status, 200);

    let r = h.raw("GET", "/v1/outbox", &[("Origin", "https://evil.example"), ("Authorization", &auth)], b"");
    assert_eq!(r.status, 403);
    assert_eq!(r.code(), "request.origin");
    assert!(r.header("access-control-allow-origin").is_none());
    let r = h.raw(
        "POST",
        "/v1/pairing",
        &[("Origin", "https://evil.example"), ("Content-Type", "application/json")],
        br#"{"client":"x"}"#,
    );
    assert_eq!(r.status, 403, "a web page cannot even ask for pairing");
    let r = h.raw(
        "OPTIONS",
        "/v1/messages",
        &[("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")],
        b"",
    );
    assert_eq!(r.status, 403);
    assert!(r.header("access-control-allow-origin").is_none());
    let r = h.raw("GET", "/v1/outbox", &[("Origin", "null"), ("Authorization", &auth)], b"");
    assert_eq!(r.status, 403);
    // The Thunderbird add-in's origin is fine.
    let r = h.raw(
        "GET",
        "/v1/outbox",
        &[("Origin", "moz-extension://5f0c2a4e-3b1d-4c59-9a51-1d2e3f4a5b6c"), ("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn allowed_origin_gets_cors_only_when_listed() {
    let h = Helper::start_with(HelperOpts {
        machine: "[relay]\nenabled = false\n[api]\nallowed_origins = [\"https://addin.musterstadt.de\"]\n",
        ..Default::default()
    });
    let r = h.raw(
        "OPTIONS",
        "/v1/messages",
        &[("Origin", "https://addin.musterstadt.de"), ("Access-Control-Request-Method", "POST")],
        b"",
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://addin.musterstadt.de"));
    let r = h.raw("GET", "/v1/health", &[("Origin", "https://addin.musterstadt.de.evil.example")], b"");
    assert_eq!(r.status, 403);
}

#[test]
fn pairing_flow_and_revocation_mid_session() {
    let h = helper();
    let r = h.post("/v1/pairing", None, &json!({ "client": "Thunderbird De-Mail-Add-in" }));
    assert_eq!(r.status, 201);
    let v = r.json()["result"].clone();
    let token = v["token"].as_str().unwrap().to_string();
    let code = v["code"].as_str().unwrap().to_string();
    assert!(token.starts_with("dmh1_"));
    assert_eq!(v["status"], "pending");

    // Pending: status readable, everything else refused.
    let r = h.get("/v1/pairing", Some(&token));
    assert_eq!(r.json()["result"]["status"], "pending");
    let r = h.get("/v1/outbox", Some(&token));
    assert_eq!(r.status, 403);
    assert_eq!(r.code(), "auth.pending");

    let (rc, list, _) = h.cli(&["pair", "list"], None);
    assert_eq!(rc, 0);
    assert_eq!(list["pairings"][0]["code"], code.as_str());
    assert_eq!(list["pairings"][0]["client"], "Thunderbird De-Mail-Add-in");
    // The token is stored hashed only: it appears nowhere in the database file.
    let db = std::fs::read(h.dir.path().join("data/demail/helper.sqlite3")).unwrap();
    assert!(!db.windows(token.len()).any(|w| w == token.as_bytes()));

    let (rc, _, err) = h.cli(&["pair", "approve", "WRNG-CODE"], None);
    assert_eq!(rc, 2);
    assert!(err.contains("pairing.unknown"));
    let (rc, out, _) = h.cli(&["pair", "approve", &code.to_lowercase()], None);
    assert_eq!(rc, 0, "{out}");
    let r = h.get("/v1/outbox", Some(&token));
    assert_eq!(r.status, 200);
    assert_eq!(h.get("/v1/pairing", Some(&token)).json()["result"]["status"], "approved");

    // Revoked while the add-in is working: the next request is 401.
    let id = out["pairing"]["id"].as_str().unwrap().to_string();
    let (rc, _, _) = h.cli(&["pair", "revoke", &id], None);
    assert_eq!(rc, 0);
    let r = h.get("/v1/outbox", Some(&token));
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "auth.invalid");
    let r = h.post("/v1/messages", Some(&token), &demail_message("x"));
    assert_eq!(r.status, 401);

    // Denied requests never work.
    let r = h.post("/v1/pairing", None, &json!({ "client": "Unbekannt" }));
    let v = r.json()["result"].clone();
    let (rc, _, _) = h.cli(&["pair", "deny", v["code"].as_str().unwrap()], None);
    assert_eq!(rc, 0);
    assert_eq!(h.get("/v1/outbox", Some(v["token"].as_str().unwrap())).status, 401);
}

#[test]
fn provisioned_token_works_at_once() {
    let h = Helper::start_with(HelperOpts {
        machine: "[relay]\nenabled = false\n[pairing]\nprovision = true\n",
        policy: Some(POLICY),
        ..Default::default()
    });
    let (rc, out, _) = h.cli(&["pair", "provision", "--client", "IT-Rollout"], None);
    assert_eq!(rc, 0);
    let token = out["token"].as_str().unwrap();
    assert_eq!(h.get("/v1/outbox", Some(token)).status, 200);
}

#[test]
fn pending_pairings_are_limited() {
    let h = helper();
    let origin = [("Origin", "moz-extension://0a1b2c3d"), ("Content-Type", "application/json")];
    for _ in 0..3 {
        assert_eq!(h.raw("POST", "/v1/pairing", &origin, br#"{"client":"x"}"#).status, 201);
    }
    let r = h.raw("POST", "/v1/pairing", &origin, br#"{"client":"x"}"#);
    assert_eq!(r.status, 429);
    assert_eq!(r.code(), "pairing.limit");
    let r = h.post("/v1/pairing", None, &json!({ "client": "a\r\nb" }));
    assert_eq!(r.status, 400);
    let r = h.post("/v1/pairing", None, &json!({ "client": "x", "addon_id": "a\u{0}b" }));
    assert_eq!(r.status, 400);
    let r = h.post("/v1/pairing", None, &json!({ "client": "x", "token": "mine" }));
    assert_eq!((r.status, r.code().as_str()), (400, "request.invalid"), "unknown fields are refused");
}

#[test]
fn oversize_body_is_413() {
    let h = Helper::start_with(HelperOpts {
        machine: "[relay]\nenabled = false\n[api]\nmax_body = \"64 KiB\"\n",
        ..Default::default()
    });
    let token = h.pair();
    let mut m = demail_message("groß");
    m["text"] = json!("x".repeat(100 * 1024));
    let r = h.post("/v1/messages", Some(&token), &m);
    assert_eq!(r.status, 413);
    assert_eq!(r.code(), "request.too_large");
    // Without Content-Length (chunked) the body is counted while it is read.
    let body = "y".repeat(80 * 1024);
    let auth = format!("Bearer {token}");
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let r = h.raw(
        "POST",
        "/v1/check",
        &[("Authorization", &auth), ("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")],
        chunked.as_bytes(),
    );
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
}

/// Slowloris: a client that dribbles its request headers (or sends none) is cut off
/// after `api.header_timeout`, while other clients are served in the meantime.
#[test]
fn slow_headers_are_cut_off_and_others_are_served() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;
    let h = Helper::start_with(HelperOpts {
        machine: "[relay]\nenabled = false\n[api]\nheader_timeout = 1\n",
        ..Default::default()
    });
    // Until the server hangs up (EOF or reset); None if it still holds the connection after `limit`.
    let closed_within = |mut s: TcpStream, limit: Duration| -> Option<Duration> {
        let t = Instant::now();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 256];
        while t.elapsed() < limit {
            match s.read(&mut buf) {
                Ok(0) => return Some(t.elapsed()),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return Some(t.elapsed()),
            }
        }
        None
    };
    // One byte every 100 ms: the head (never finished) would take 30 s.
    let slow = TcpStream::connect(("127.0.0.1", h.port)).unwrap();
    let mut w = slow.try_clone().unwrap();
    let head = format!("GET /v1/health HTTP/1.1\r\nHost: {}\r\nX-Slow: {}\r\n", h.host(), "a".repeat(300));
    let dribbler = std::thread::spawn(move || {
        for b in head.bytes() {
            if w.write_all(&[b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let silent = TcpStream::connect(("127.0.0.1", h.port)).unwrap();
    let silent = std::thread::spawn(move || closed_within(silent, Duration::from_secs(20)));
    // Meanwhile the API answers everyone else.
    for _ in 0..5 {
        assert_eq!(h.get("/v1/health", None).status, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    let slow_closed = closed_within(slow, Duration::from_secs(20));
    assert!(slow_closed.is_some(), "a client dribbling its headers keeps the connection for 20 s");
    assert!(silent.join().unwrap().is_some(), "a client sending nothing keeps the connection for 20 s");
    let _ = dribbler.join();
    assert_eq!(h.get("/v1/health", None).status, 200);
}

#[test]
fn malformed_json_is_400_with_code() {
    let h = helper();
    let token = h.pair();
    let auth = format!("Bearer {token}");
    for path in ["/v1/messages", "/v1/check", "/v1/journal/receipts"] {
        let r = h.raw("POST", path, &[("Authorization", &auth), ("Content-Type", "application/json")], b"{\"from\": ");
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.code(), "request.json", "{path}");
        assert!(r.json()["error"]["message"].as_str().unwrap().contains("JSON"));
    }
    let r = h.post("/v1/messages", Some(&token), &json!({ "form": "typo@musterstadt.de" }));
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "request.invalid");
    let r = h.post("/v1/messages", Some(&token), &json!({ "from": 5 }));
    assert_eq!(r.status, 400);
    let mut m = demail_message("x");
    m["options"] = json!(["express"]);
    let r = h.post("/v1/messages", Some(&token), &m);
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "options.unknown");
    let r = h.raw("POST", "/v1/messages", &[("Authorization", &auth), ("Content-Type", "text/plain")], b"hallo");
    assert_eq!(r.status, 415);
    let r = h.post("/v1/check", Some(&token), &json!({ "from": "a@b.de", "unknown": 1 }));
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "input.invalid");
}

#[test]
fn policy_and_check() {
    let h = helper();
    let token = h.pair();
    let r = h.get("/v1/policy", Some(&token));
    assert_eq!(r.status, 200);
    let v = r.json()["result"].clone();
    assert_eq!(v["summary"]["mixed_addressing"], "warn");
    assert_eq!(v["summary"]["max_size"], 200 * 1024);
    assert_eq!(v["summary"]["internal_domains"], json!(["musterstadt.de"]));
    assert_eq!(v["policy"]["organisation"]["name"], "Musterstadt");
    let r = h.get("/v1/policy?sender=praktikant@musterstadt.de", Some(&token));
    assert_eq!(r.json()["result"]["summary"]["authorized"], false);

    let r = h.post(
        "/v1/check",
        Some(&token),
        &json!({ "from": "peter.meier@musterstadt.de", "to": ["anna@buerger.de-mail.de"], "options": ["private"] }),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"]["verdict"], "demail");
    let r = h.post(
        "/v1/check",
        Some(&token),
        &json!({ "from": "peter.meier@musterstadt.de", "to": ["anna@buerger.de-mail.de", "x@example.org"] }),
    );
    assert_eq!(r.json()["result"]["verdict"], "confirm");
    // 100 recipients in one check.
    let to: Vec<String> = (0..100).map(|i| format!("person{i}@buerger.de-mail.de")).collect();
    let r = h.post("/v1/check", Some(&token), &json!({ "from": "peter.meier@musterstadt.de", "to": to }));
    assert_eq!(r.json()["result"]["demail_recipients"].as_array().unwrap().len(), 100);
}

#[test]
fn submit_outbox_retry_cancel() {
    let h = helper();
    let token = h.pair();
    let r = h.post("/v1/messages", Some(&token), &demail_message("Ihr Antrag vom 3. November"));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json()["result"].clone();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["status"], "queued");
    assert!(v["private_id"].as_str().unwrap().starts_with("DM-"));
    assert_eq!(v["private_id_generated"], true);
    assert_eq!(v["options"], json!(["confirmation-of-dispatch", "private"]));

    let raw = h.get(&format!("/v1/outbox/{id}/raw"), Some(&token));
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("content-type"), Some("message/rfc822"));
    let text = String::from_utf8(raw.body.clone()).unwrap();
    assert_eq!(header_of(&text, "X-de-mail-private"), Some("yes"));
    assert_eq!(header_of(&text, "X-de-mail-confirmation-of-dispatch"), Some("yes"));
    assert_eq!(header_of(&text, "X-de-mail-private-id"), v["private_id"].as_str());
    assert_eq!(header_of(&text, "Message-ID"), Some(format!("<{}>", v["message_id"].as_str().unwrap()).as_str()));

    // The same Message-ID again: the stored entry, nothing twice.
    let mut m = demail_message("Zweimal");
    m["message_id"] = json!("<einmal-123@musterstadt.de>");
    let a = h.post("/v1/messages", Some(&token), &m);
    assert_eq!(a.status, 202);
    let b = h.post("/v1/messages", Some(&token), &m);
    assert_eq!(b.status, 200);
    assert_eq!(b.json()["result"]["duplicate"], true);
    assert_eq!(a.json()["result"]["id"], b.json()["result"]["id"]);
    // Another sender with that Message-ID: refused, nothing stored.
    m["from"] = json!("Anna Beispiel <anna.beispiel@musterstadt.de>");
    let c = h.post("/v1/messages", Some(&token), &m);
    assert_eq!((c.status, c.code().as_str()), (409, "submit.message_id_taken"), "{}", String::from_utf8_lossy(&c.body));

    let list = h.get("/v1/outbox", Some(&token)).json()["result"].clone();
    assert_eq!(list["messages"].as_array().unwrap().len(), 2);
    assert_eq!(list["counts"]["queued"], 2);
    let list = h.get("/v1/outbox?status=sent", Some(&token)).json()["result"].clone();
    assert_eq!(list["messages"].as_array().unwrap().len(), 0);
    assert_eq!(h.get("/v1/outbox?status=bogus", Some(&token)).status, 400);

    let r = h.post(&format!("/v1/outbox/{id}/cancel"), Some(&token), &json!({}));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"]["status"], "cancelled");
    let r = h.post(&format!("/v1/outbox/{id}/retry"), Some(&token), &json!({}));
    assert_eq!(r.status, 409);
    assert_eq!(r.code(), "outbox.state");
    let r = h.post("/v1/outbox/m_doesnotexist/retry", Some(&token), &json!({}));
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "outbox.not_found");
    // The CLI sees the same outbox.
    let (rc, out, _) = h.cli(&["outbox", "list", "--status", "cancelled"], None);
    assert_eq!(rc, 0);
    assert_eq!(out["messages"][0]["id"], id.as_str());
    let other = a.json()["result"]["id"].as_str().unwrap().to_string();
    let (rc, out, _) = h.cli(&["outbox", "cancel", &other], None);
    assert_eq!(rc, 0, "{out}");
    let (rc, _, _) = h.cli(&["outbox", "retry", &other], None);
    assert_eq!(rc, 2, "cancelled messages are not retried");
}

#[test]
fn submit_is_checked_by_the_core() {
    let h = helper();
    let token = h.pair();
    // Mixed addressing under "warn": confirm first.
    let mut m = demail_message("Gemischt");
    m["cc"] = json!(["kollege@example.org"]);
    let r = h.post("/v1/messages", Some(&token), &m);
    assert_eq!(r.status, 409);
    assert_eq!(r.code(), "submit.confirm_required");
    assert_eq!(r.json()["error"]["details"]["check"]["verdict"], "confirm");
    m["confirmed"] = json!(true);
    assert_eq!(h.post("/v1/messages", Some(&token), &m).status, 202);
    // Not authorised.
    let mut m = demail_message("Praktikum");
    m["from"] = json!("praktikant@musterstadt.de");
    let r = h.post("/v1/messages", Some(&token), &m);
    assert_eq!(r.status, 422);
    assert_eq!(r.code(), "submit.blocked");
    let reasons = r.json()["error"]["details"]["check"]["reasons"].clone();
    assert!(reasons.as_array().unwrap().iter().any(|x| x["code"] == "sender.not_authorized"));
    // No De-Mail recipient.
    let mut m = demail_message("E-Mail");
    m["to"] = json!(["x@example.org"]);
    let r = h.post("/v1/messages", Some(&token), &m);
    assert_eq!(r.status, 422);
    // Too large for the policy (200 KiB).
    let mut m = demail_message("Anhang");
    m["attachments"] = json!([{ "filename": "scan.pdf", "content_type": "application/pdf",
        "data": base64::engine::general_purpose::STANDARD.encode(vec![7u8; 300 * 1024]) }]);
    let r = h.post("/v1/messages", Some(&token), &m);
    assert_eq!(r.status, 413);
    assert_eq!(r.code(), "submit.too_large");
    // Unknown subject tag: an error, never dropped.
    let m = demail_message("[P, XY] Bescheid");
    let r = h.post("/v1/messages", Some(&token), &m);
    assert_eq!(r.status, 422);
    assert_eq!(r.code(), "subject.unknown_tag");
    // Tags typed into the subject count as options and are removed.
    let mut m = demail_message("[EB] Bescheid");
    m["options"] = json!([]);
    let r = h.post("/v1/messages", Some(&token), &m);
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["result"]["subject"], "Bescheid");
    assert_eq!(r.json()["result"]["options"], json!(["confirmation-of-receipt"]));
}

#[test]
fn raw_mime_submissions() {
    let h = helper();
    let token = h.pair();
    let auth = format!("Bearer {token}");
    let raw = "From: Peter Meier <peter.meier@musterstadt.de>\r\nTo: anna@buerger.de-mail.de\r\nBcc: akte@buerger.de-mail.de\r\nSubject: =?utf-8?q?B=C3=BCrgerantrag?= [P]\r\nMessage-ID: <raw-1@musterstadt.de>\r\nX-de-mail-confirmation-of-receipt: yes\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHallo\r\n";
    let r = h.raw(
        "POST",
        "/v1/messages?private_id=AZ-4711",
        &[("Authorization", &auth), ("Content-Type", "message/rfc822")],
        raw.as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json()["result"].clone();
    assert_eq!(v["message_id"], "raw-1@musterstadt.de");
    assert_eq!(v["private_id"], "AZ-4711");
    assert_eq!(v["subject"], "Bürgerantrag");
    assert_eq!(v["recipients"], json!(["anna@buerger.de-mail.de", "akte@buerger.de-mail.de"]));
    let stored =
        String::from_utf8(h.get(&format!("/v1/outbox/{}/raw", v["id"].as_str().unwrap()), Some(&token)).body).unwrap();
    assert!(header_of(&stored, "Bcc").is_none(), "{stored}");
    assert_eq!(header_of(&stored, "X-de-mail-private"), Some("yes"));
    assert_eq!(header_of(&stored, "X-de-mail-confirmation-of-receipt"), Some("yes"));
    assert_eq!(header_of(&stored, "Subject"), Some("=?utf-8?Q?B=C3=BCrgerantrag?="));

    // The same as base64 in JSON, without Message-ID: one is generated.
    let raw2 = "From: peter.meier@musterstadt.de\nTo: anna@buerger.de-mail.de\nSubject: Zweiter\n\nText\n";
    let r = h.post(
        "/v1/messages",
        Some(&token),
        &json!({ "raw": base64::engine::general_purpose::STANDARD.encode(raw2), "options": ["authoritative"] }),
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let stored = String::from_utf8(
        h.get(&format!("/v1/outbox/{}/raw", r.json()["result"]["id"].as_str().unwrap()), Some(&token)).body,
    )
    .unwrap();
    assert!(header_of(&stored, "Message-ID").is_some());
    assert_eq!(header_of(&stored, "X-de-mail-authoritative"), Some("yes"));
    assert!(!stored.contains("\n\n") || stored.contains("\r\n\r\n"), "CRLF line ends");

    // Mixing raw and fields is refused; invalid option headers are refused.
    let r = h.post("/v1/messages", Some(&token), &json!({ "raw": "eA==", "subject": "x" }));
    assert_eq!(r.status, 400);
    let bad = "From: peter.meier@musterstadt.de\r\nTo: anna@buerger.de-mail.de\r\nX-de-mail-private: Yes\r\n\r\nx\r\n";
    let r =
        h.raw("POST", "/v1/messages", &[("Authorization", &auth), ("Content-Type", "message/rfc822")], bad.as_bytes());
    assert_eq!(r.status, 422);
    assert_eq!(r.code(), "header.invalid_value");
}

/// CR/LF (and other control characters) in every field that could reach a header.
#[test]
fn crlf_injection_in_every_field() {
    let h = helper();
    let token = h.pair();
    let inj = "\r\nX-Injected: yes";
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let base = demail_message("Sauber");
    let with = |k: &str, v: Value| {
        let mut m = base.clone();
        m[k] = v;
        m
    };
    cases.push(("from", with("from", json!(format!("peter.meier@musterstadt.de{inj}")))));
    cases.push(("from-name", with("from", json!(format!("Peter{inj} <peter.meier@musterstadt.de>")))));
    cases.push(("to", with("to", json!([format!("anna@buerger.de-mail.de{inj}")]))));
    cases.push(("cc", with("cc", json!([format!("b@buerger.de-mail.de{inj}")]))));
    cases.push(("bcc", with("bcc", json!([format!("c@buerger.de-mail.de{inj}")]))));
    cases.push(("subject", with("subject", json!(format!("Hallo{inj}")))));
    cases.push(("subject-lf", with("subject", json!("Hallo\nX-Injected: yes"))));
    cases.push(("subject-cr", with("subject", json!("Hallo\rX-Injected: yes"))));
    cases.push(("subject-nul", with("subject", json!("Hallo\u{0}X-Injected: yes"))));
    cases.push(("private_id", with("private_id", json!(format!("AZ-1{inj}")))));
    cases.push(("message_id", with("message_id", json!(format!("<a@b.de>{inj}")))));
    cases.push(("in_reply_to", with("in_reply_to", json!(format!("<a@b.de>{inj}")))));
    cases.push(("references", with("references", json!([format!("<a@b.de>{inj}")]))));
    cases.push((
        "attachment-filename",
        with(
            "attachments",
            json!([{ "filename": format!("a.pdf{inj}"), "content_type": "application/pdf", "data": "eA==" }]),
        ),
    ));
    cases.push((
        "attachment-type",
        with(
            "attachments",
            json!([{ "filename": "a.pdf", "content_type": format!("application/pdf{inj}"), "data": "eA==" }]),
        ),
    ));
    cases.push(("options", with("options", json!([format!("private{inj}")]))));
    for (name, m) in &cases {
        let r = h.post("/v1/messages", Some(&token), m);
        assert!((400..500).contains(&r.status), "{name}: {} {}", r.status, String::from_utf8_lossy(&r.body));
        let e = r.json()["error"].clone();
        assert!(e["message"].as_str().is_some_and(|s| !s.is_empty()), "{name}: German text");
        assert!(e["message_en"].as_str().is_some_and(|s| !s.is_empty()), "{name}: English text");
    }
    // Raw MIME with a bare CR inside a header.
    let auth = format!("Bearer {token}");
    let raw =
        "From: peter.meier@musterstadt.de\r\nTo: anna@buerger.de-mail.de\r\nSubject: a\rX-Injected: yes\r\n\r\nx\r\n";
    let r =
        h.raw("POST", "/v1/messages", &[("Authorization", &auth), ("Content-Type", "message/rfc822")], raw.as_bytes());
    assert_eq!((r.status, r.code().as_str()), (400, "submit.bare_cr"), "{}", String::from_utf8_lossy(&r.body));
    // Line breaks in the body are text, never headers.
    let m = with("text", json!("Zeile 1\r\n\r\nX-Injected: yes\r\n"));
    let r = h.post("/v1/messages", Some(&token), &m);
    assert_eq!(r.status, 202);
    // Nothing stored anywhere carries an injected header.
    let list = h.get("/v1/outbox", Some(&token)).json()["result"]["messages"].clone();
    assert_eq!(list.as_array().unwrap().len(), 1, "only the clean message was stored");
    for e in list.as_array().unwrap() {
        let raw = String::from_utf8(h.get(&format!("/v1/outbox/{}/raw", e["id"].as_str().unwrap()), Some(&token)).body)
            .unwrap();
        assert!(header_of(&raw, "X-Injected").is_none(), "{raw}");
    }
}

#[test]
fn receipts_reach_the_journal() {
    let h = helper();
    let token = h.pair();
    let r = h.post(
        "/v1/journal/receipts",
        Some(&token),
        &json!({ "private_id": "AZ-1", "type": "dispatch", "time": "2026-11-27T10:00:00Z" }),
    );
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["result"]["matched"], false, "no sent De-Mail with this id yet");
    let r = h.post(
        "/v1/journal/receipts",
        Some(&token),
        &json!({ "private_id": "AZ-1", "type": "dispatch", "time": "2026-11-27T10:00:00Z" }),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"]["new"], false);
    let r = h.post("/v1/journal/receipts", Some(&token), &json!({ "private_id": "AZ-1", "type": "lost" }));
    assert_eq!(r.status, 400);
    // A receipt message, classified by the core.
    let receipt = "From: Versandbestaetigung@provider.de-mail.de\r\nTo: peter.meier@musterstadt.de\r\nSubject: *Versandbestätigung* Bescheid\r\nX-de-mail-message-type: confirmation of dispatch\r\nX-de-mail-private-id: AZ-2\r\nMessage-ID: <r1@provider.de-mail.de>\r\n\r\nText\r\n";
    let r = h.post(
        "/v1/journal/receipts",
        Some(&token),
        &json!({ "raw": base64::engine::general_purpose::STANDARD.encode(receipt) }),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["result"]["private_id"], "AZ-2");
    assert_eq!(r.json()["result"]["type"], "dispatch");
    let r = h.post(
        "/v1/journal/receipts",
        Some(&token),
        &json!({ "raw": base64::engine::general_purpose::STANDARD.encode("From: a@b.de\r\nSubject: hi\r\n\r\nx") }),
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.code(), "journal.not_a_receipt");
    let r = h.get("/v1/journal", Some(&token));
    assert_eq!(r.status, 200);
}

#[test]
fn unknown_paths_and_methods() {
    let h = helper();
    let r = h.get("/v2/health", None);
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "request.not_found");
    let r = h.raw("DELETE", "/v1/health", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.code(), "request.method");
}

#[test]
fn config_locks_and_errors() {
    let machine = "[relay]\nenabled = false\n[gateway]\nhost = \"gw.musterstadt.de\"\n[lock]\nkeys = [\"gateway.host\", \"api.port\"]\n";
    let h =
        Helper::start_with(HelperOpts { machine, user: "[gateway]\nhost = \"evil.example\"\n", ..Default::default() });
    let (rc, cfg, _) = h.cli(&["config", "show"], None);
    assert_eq!(rc, 0);
    assert_eq!(cfg["gateway"]["host"], "gw.musterstadt.de");
    assert_eq!(cfg["warnings"][0]["code"], "config.locked");
    let (rc, _, err) = h.cli(&["config", "set", "gateway.host", "other.example"], None);
    assert_eq!(rc, 2);
    assert!(err.contains("config.locked"), "{err}");
    let (rc, out, _) = h.cli(&["config", "set", "gateway.port", "465"], None);
    assert_eq!(rc, 0, "{out}");
    assert_eq!(out["config"]["gateway"]["port"], 465);
    // An invalid user file: the error names file, line and key.
    std::fs::write(h.dir.path().join("config/demail/helper.toml"), "[gateway]\nport = 587\ntls = \"none\"\n").unwrap();
    let (rc, _, err) = h.cli(&["config", "show"], None);
    assert_eq!(rc, 2);
    assert!(err.contains("helper.toml") && err.contains("Zeile 3") && err.contains("gateway.tls"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    // --port cannot override a locked port.
    let (rc, _, err) = h.cli(&["serve", "--port", "1"], None);
    assert_eq!(rc, 2);
    assert!(err.contains("config.invalid_value") || err.contains("config.locked"), "{err}");
}

#[test]
fn a_store_failure_shows_its_code_and_logs_its_cause() {
    let d = demail_testkit::temp_dir();
    std::fs::write(d.path().join("a-file"), "").unwrap();
    let machine = format!(
        "[storage]\ndir = \"{}\"\n[log]\ndir = \"{}\"\n",
        d.path().join("a-file/outbox").display(),
        d.path().join("logs").display()
    );
    std::fs::write(d.path().join("machine.toml"), machine).unwrap();
    let mut cmd = std::process::Command::new(demail_bin());
    cmd.args(["pair", "list"]);
    helper_env(&mut cmd, d.path());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Fehler [store.unavailable]") && stderr.contains("Error [store.unavailable]"), "{stderr}");
    assert!(!stderr.contains("os error"), "the cause is for the log: {stderr}");
    let log: String = std::fs::read_dir(d.path().join("logs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(log.contains("store.unavailable") && log.contains("os error"), "{log}");
}

#[test]
fn second_helper_for_the_same_user_is_refused() {
    let h = helper();
    let (rc, _, err) = h.cli(&["serve", "--port", "0"], None);
    assert_eq!(rc, 2);
    assert!(err.contains("serve.running"), "{err}");
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(h.get("/v1/health", None).status, 200);
}

#[test]
fn native_host_discovers_the_port() {
    let h = helper();
    let d = h.dir.path();
    let manifest = d.join("de.demail.helper.json");
    let answers = native_host(
        d,
        &[manifest.to_str().unwrap(), "demail-addin@open-demail.de"],
        &[json!({ "action": "discover" }), json!({ "action": "pair", "client": "x" })],
    );
    assert_eq!(answers[0]["result"]["port"].as_u64(), Some(h.port as u64));
    assert_eq!(answers[0]["result"]["request_timeout"], 60);
    assert_eq!(answers[1]["error"]["code"], "pairing.manual", "auto-approve is off by default");
}

/// The gateway refuses a bare CR or a NUL anywhere in a message (554 5.6.0); the helper
/// refuses them at submission, in the body too, raw and as base64 in JSON.
#[test]
fn bare_cr_and_nul_anywhere_in_raw_mime_are_refused() {
    let h = helper();
    let token = h.pair();
    let auth = format!("Bearer {token}");
    let head = "From: peter.meier@musterstadt.de\r\nTo: anna@buerger.de-mail.de\r\nSubject: Bescheid\r\n\r\n";
    let cases: [(&str, String, &str); 4] = [
        ("bare CR in the body", format!("{head}Zeile 1\rZeile 2\r\n"), "submit.bare_cr"),
        ("CR at the very end", format!("{head}Text\r"), "submit.bare_cr"),
        ("NUL in the body", format!("{head}Text\u{0}mehr\r\n"), "submit.nul"),
        ("bare CR in a header", "From: peter.meier@musterstadt.de\r\nTo: anna@buerger.de-mail.de\r\nSubject: a\rX-Injected: yes\r\n\r\nx\r\n".to_string(), "submit.bare_cr"),
    ];
    for (what, raw, code) in &cases {
        let r = h.raw(
            "POST",
            "/v1/messages",
            &[("Authorization", &auth), ("Content-Type", "message/rfc822")],
            raw.as_bytes(),
        );
        assert_eq!((r.status, r.code()), (400, code.to_string()), "{what}: {}", String::from_utf8_lossy(&r.body));
        let e = r.json()["error"].clone();
        if *code == "submit.bare_cr" {
            assert_eq!(e["message"], "Die Nachricht enthält ein CR ohne LF (bare CR).", "{what}: the gateway's words");
        } else {
            assert_eq!(e["message"], "Die Nachricht enthält NUL-Bytes.", "{what}: the gateway's words");
        }
        let r = h.post(
            "/v1/messages",
            Some(&token),
            &json!({ "raw": base64::engine::general_purpose::STANDARD.encode(raw.as_bytes()) }),
        );
        assert_eq!((r.status, r.code()), (400, code.to_string()), "{what} (JSON)");
    }
    // A Date that makes mail-parser (and so the gateway) read body lines as header fields.
    let smuggle = format!("{}Date: 1 Jan 2026 08:00 +0100+Z\r\n\r\nX-de-mail-authoritative: yes\r\nBcc: geheim@buerger.de-mail.de\r\n\r\nText\r\n", &head[..head.len() - 2]);
    let r = h.raw(
        "POST",
        "/v1/messages",
        &[("Authorization", &auth), ("Content-Type", "message/rfc822")],
        smuggle.as_bytes(),
    );
    assert_eq!((r.status, r.code()), (400, "submit.mime_invalid".to_string()), "{}", String::from_utf8_lossy(&r.body));
    // Bare LF is still fine: it becomes CRLF.
    let r = h.raw(
        "POST",
        "/v1/messages",
        &[("Authorization", &auth), ("Content-Type", "message/rfc822")],
        format!("{head}Zeile 1\nZeile 2\n").as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(h.get("/v1/outbox", Some(&token)).json()["result"]["messages"].as_array().unwrap().len(), 1);
}
