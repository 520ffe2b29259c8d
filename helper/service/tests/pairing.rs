//! Pairing, hardened (issue 16): the one unauthenticated request that reads a body is
//! small and typed, a flood from one origin does not block another, tokens expire unless
//! used, the native host serves only our add-in, and tokens without the user's approval
//! need IT's machine file. All against the real `demail serve` and `demail-native-host`.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const ADDIN: &str = "demail-addin@open-demail.de";

fn helper(machine: &str) -> Helper {
    Helper::start(&format!("[relay]\nenabled = false\n{machine}"), "")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn db(h: &Helper) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(h.dir.path().join("data/demail/helper.sqlite3")).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

fn pairing_id(h: &Helper, token: &str) -> String {
    h.get("/v1/pairing", Some(token)).json()["result"]["pairing_id"].as_str().unwrap().to_string()
}

/// A 40 MB pairing request (and 40 MB to the other routes without a token) is refused
/// without being read: the helper's peak memory (VmHWM of the real process) stays small.
#[test]
fn a_40_mb_pairing_request_is_refused_while_memory_stays_low() {
    let h = helper("");
    let pid = h.pid();
    std::thread::sleep(Duration::from_millis(300));
    let before = proc_status_kb(pid, "VmHWM:");
    let big = format!("{{\"client\":\"{}\"}}", "a".repeat(40 * 1024 * 1024));
    let json_ct = ("Content-Type", "application/json");

    let mut got = Vec::new();
    let r = h.raw("POST", "/v1/pairing", &[json_ct], big.as_bytes());
    got.push(("pairing", r.status, r.code()));
    // Without Content-Length the body is counted while it streams in.
    let chunked = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    let r = h.raw("POST", "/v1/pairing", &[json_ct, ("Transfer-Encoding", "chunked")], chunked.as_bytes());
    got.push(("pairing, chunked", r.status, r.code()));
    // Every other route that takes a body wants a token first and reads nothing without one.
    for path in ["/v1/messages", "/v1/check", "/v1/journal/receipts"] {
        let r = h.raw("POST", path, &[json_ct], big.as_bytes());
        got.push((path, r.status, r.code()));
    }
    let r = h.raw("GET", "/v1/health", &[json_ct], big.as_bytes());
    got.push(("health", r.status, r.code()));
    let (hwm, rss) = (proc_status_kb(pid, "VmHWM:"), proc_status_kb(pid, "VmRSS:"));
    eprintln!("demail serve: VmHWM {before} kB before, {hwm} kB after 6 × 40 MB without a token; VmRSS {rss} kB");
    assert!(hwm > 0, "no /proc/{pid}/status");
    assert!(hwm < 50 * 1024, "peak RSS {hwm} kB (before: {before} kB)");
    let want = |what, status, code: &str| (what, status, code.to_string());
    assert_eq!(
        got,
        [
            want("pairing", 413, "request.too_large"),
            want("pairing, chunked", 413, "request.too_large"),
            want("/v1/messages", 401, "auth.missing"),
            want("/v1/check", 401, "auth.missing"),
            want("/v1/journal/receipts", 401, "auth.missing"),
            want("health", 200, ""),
        ]
    );
    // Just over the limit is too much, a normal request is fine.
    let r = h.raw("POST", "/v1/pairing", &[json_ct], format!("{{\"client\":\"{}\"}}", "b".repeat(4096)).as_bytes());
    assert_eq!(r.status, 413);
    assert_eq!(h.post("/v1/pairing", None, &json!({ "client": "Thunderbird" })).status, 201);
}

/// Open requests are limited per origin and per add-in id, not for everyone together.
#[test]
fn a_flood_from_one_origin_does_not_block_another() {
    let h = helper("");
    let ask = |origin: Option<&str>, body: &Value| {
        let mut hd = vec![("Content-Type", "application/json")];
        if let Some(o) = origin {
            hd.push(("Origin", o));
        }
        h.raw("POST", "/v1/pairing", &hd, body.to_string().as_bytes())
    };
    let flood: Vec<u16> =
        (0..20).map(|_| ask(Some("moz-extension://flood"), &json!({ "client": "Flut" })).status).collect();
    assert_eq!(flood.iter().filter(|s| **s == 201).count(), 3, "{flood:?}");
    assert!(flood[3..].iter().all(|s| *s == 429), "{flood:?}");
    let r =
        ask(Some("moz-extension://5f0c2a4e"), &json!({ "client": "Thunderbird De-Mail-Add-in", "addon_id": ADDIN }));
    assert_eq!(r.status, 201, "another origin still pairs: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(ask(None, &json!({ "client": "Fachverfahren" })).status, 201, "and a client without origin");
    // One add-in id from many origins counts once.
    for o in ["moz-extension://a", "moz-extension://b"] {
        assert_eq!(ask(Some(o), &json!({ "client": "x", "addon_id": "viel@example.org" })).status, 201);
    }
    assert_eq!(ask(Some("moz-extension://c"), &json!({ "client": "x", "addon_id": "viel@example.org" })).status, 201);
    let r = ask(Some("moz-extension://d"), &json!({ "client": "x", "addon_id": "viel@example.org" }));
    assert_eq!((r.status, r.code().as_str()), (429, "pairing.limit"));
    // The user sees who asked: origin and add-in id.
    let (_, list, _) = h.cli(&["pair", "list"], None);
    let ours = list["pairings"].as_array().unwrap().iter().find(|p| p["addon_id"] == ADDIN).cloned().unwrap();
    assert_eq!(ours["origin"], "moz-extension://5f0c2a4e");
}

/// Expired requests leave the table: they are never compared against a token again.
#[test]
fn expired_requests_are_purged() {
    let h = helper("[pairing]\npending_ttl = 1\n");
    let old = h.post("/v1/pairing", None, &json!({ "client": "alt" })).json()["result"].clone();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(h.get("/v1/pairing", Some(old["token"].as_str().unwrap())).status, 401);
    assert_eq!(h.post("/v1/pairing", None, &json!({ "client": "neu" })).status, 201);
    let rows: i64 = db(&h)
        .query_row("SELECT COUNT(*) FROM pairings WHERE id = ?1", [old["pairing_id"].as_str().unwrap()], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0, "the expired request is still stored");
}

/// A token lives `pairing.token_days` after its last use; each use renews it.
#[test]
fn tokens_expire_unless_used_and_each_use_renews_them() {
    let h = helper("[pairing]\ntoken_days = 1\n");
    let (used, idle) = (h.pair(), h.pair());
    let (used_id, idle_id) = (pairing_id(&h, &used), pairing_id(&h, &idle));
    let hour = 3_600_000;
    let c = db(&h);
    c.execute("UPDATE pairings SET last_used_at = ?2 WHERE id = ?1", rusqlite::params![used_id, now_ms() - 20 * hour])
        .unwrap();
    c.execute("UPDATE pairings SET last_used_at = ?2 WHERE id = ?1", rusqlite::params![idle_id, now_ms() - 25 * hour])
        .unwrap();
    assert_eq!(h.get("/v1/outbox", Some(&used)).status, 200, "used 20 hours ago");
    let renewed: i64 =
        c.query_row("SELECT last_used_at FROM pairings WHERE id = ?1", [&used_id], |r| r.get(0)).unwrap();
    assert!(renewed > now_ms() - 60_000, "the use renewed the token");
    let r = h.get("/v1/outbox", Some(&idle));
    assert_eq!((r.status, r.code().as_str()), (401, "auth.invalid"), "unused for 25 hours");
    let (_, list, _) = h.cli(&["pair", "list"], None);
    let status =
        |id: &str| list["pairings"].as_array().unwrap().iter().find(|p| p["id"] == id).unwrap()["status"].clone();
    assert_eq!((status(&used_id), status(&idle_id)), (json!("approved"), json!("expired")));
    // Also for the local SMTP submission and every other route: the same check.
    let r = h.post("/v1/check", Some(&idle), &json!({ "from": "a@musterstadt.de", "to": ["b@x.de-mail.de"] }));
    assert_eq!(r.status, 401);
}

/// Thunderbird passes the calling add-in's id to the host; any other caller is refused,
/// whatever it asks. With IT's auto-approval our add-in gets a token, and a new native
/// pairing replaces its earlier one.
#[test]
fn the_native_host_serves_only_our_add_in() {
    let h = helper("[pairing]\nnative_auto_approve = true\n");
    let d = h.dir.path();
    let manifest = d.join("native-messaging-hosts/de.demail.helper.json");
    let m = manifest.to_str().unwrap();
    let ask = [json!({ "action": "discover" }), json!({ "action": "pair", "client": "Thunderbird De-Mail-Add-in" })];
    let foreign: [&[&str]; 5] =
        [&[m, "evil@example.org"], &[m, "demail-addin@open-demail.de.evil.org"], &[m, ""], &[m], &[]];
    for args in foreign {
        let a = native_host(d, args, &ask);
        assert_eq!(a.len(), 2, "{args:?}: {a:?}");
        for x in &a {
            assert_eq!(x["error"]["code"], "native.extension", "{args:?}: {x}");
            assert!(x["error"]["message"].as_str().unwrap().contains("nur dem De-Mail-Add-in"), "{x}");
            assert!(x["error"]["message_en"].as_str().unwrap().contains("only the De-Mail add-in"), "{x}");
        }
    }
    let (_, list, _) = h.cli(&["pair", "list"], None);
    assert_eq!(list["pairings"], json!([]), "a refused caller created a pairing");

    let a = native_host(d, &[m, ADDIN], &ask);
    assert_eq!(a[0]["result"]["port"].as_u64(), Some(h.port as u64), "{a:?}");
    let first = a[1]["result"]["token"].as_str().unwrap().to_string();
    assert_eq!(h.get("/v1/outbox", Some(&first)).status, 200);
    let (_, list, _) = h.cli(&["pair", "list"], None);
    assert_eq!(
        (list["pairings"][0]["source"].clone(), list["pairings"][0]["addon_id"].clone()),
        (json!("native"), json!(ADDIN))
    );
    // A second native pairing (the add-in reinstalled, its storage lost) revokes the first.
    let b = native_host(d, &[m, ADDIN], &ask[1..]);
    let second = b[0]["result"]["token"].as_str().unwrap().to_string();
    assert_eq!(h.get("/v1/outbox", Some(&first)).status, 401, "the earlier native token still works");
    assert_eq!(h.get("/v1/outbox", Some(&second)).status, 200);
}

/// Tokens without the user's approval are IT's decision, in the machine file only: a user
/// file (or a program writing it) cannot switch native auto-approval or provisioning on.
#[test]
fn auto_approval_and_provisioning_need_the_machine_file() {
    let h = Helper::start(
        "[relay]\nenabled = false\n",
        "[pairing]\nnative_auto_approve = true\nprovision = true\ntoken_days = 7\n",
    );
    let d = h.dir.path();
    let a = native_host(d, &["/m.json", ADDIN], &[json!({ "action": "pair", "client": "x" })]);
    assert_eq!(a[0]["error"]["code"], "pairing.manual", "{a:?}");
    let (rc, _, err) = h.cli(&["pair", "provision", "--client", "Skript"], None);
    assert_eq!(rc, 2);
    assert!(
        err.contains("Fehler [pairing.provision_disabled]") && err.contains("Error [pairing.provision_disabled]"),
        "{err}"
    );
    let (_, cfg, _) = h.cli(&["config", "show"], None);
    let warned: Vec<&str> = cfg["warnings"].as_array().unwrap().iter().filter_map(|w| w["key"].as_str()).collect();
    assert_eq!(warned, ["pairing.native_auto_approve", "pairing.provision"], "{cfg}");
    assert_eq!(cfg["pairing"]["token_days"], 7, "other pairing keys stay the user's");
    let (rc, _, err) = h.cli(&["config", "set", "pairing.provision", "true"], None);
    assert_eq!(rc, 2);
    assert!(err.contains("config.locked"), "{err}");
    let (_, list, _) = h.cli(&["pair", "list"], None);
    assert_eq!(list["pairings"], json!([]));

    let it = helper("[pairing]\nprovision = true\n");
    let (rc, out, err) = it.cli(&["pair", "provision", "--client", "Fachverfahren KFZ"], None);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(it.get("/v1/outbox", Some(out["token"].as_str().unwrap())).status, 200);
}
