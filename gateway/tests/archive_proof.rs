//! The archive cannot be silently rewritten: the real gateway signs checkpoints of its chain
//! with its key and has them time-stamped by a TSA (OpenSSL's `ts -reply` behind HTTP);
//! `archive verify` catches a rewrite that recomputed every hash and the head, and an
//! export is verified with the command line alone, without the gateway's configuration.

mod common;

use common::*;
use demail_gateway::archive::{self, Checkpoint, Entry};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const FROM: &str = "peter.meier@musterstadt.de";
const TO: &str = "anna@buerger.de-mail.de";

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

fn codes(v: &serde_json::Value) -> Vec<(String, Option<i64>)> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["code"].as_str().unwrap().to_string(), p["seq"].as_i64()))
        .collect()
}

/// `archive verify --export` as an auditor runs it: no gateway configuration anywhere.
fn verify_export(dir: &Path, policy: &Path, tsa_ca: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_demail-gateway"))
        .args(["--config", "/nonexistent/gateway.toml", "archive", "verify", "--export"])
        .arg(dir)
        .arg("--policy")
        .arg(policy)
        .arg("--tsa-ca")
        .arg(tsa_ca)
        .env_remove("DEMAIL_GATEWAY_CONFIG")
        .output()
        .unwrap()
}

/// Whoever can write the database: change entry `seq`'s recipients and recompute every
/// hash after it, so that the chain itself verifies again.
fn rewrite(entries: &mut [Entry], seq: i64) {
    let mut prev: Option<String> = None;
    for e in entries.iter_mut() {
        if e.seq == seq {
            e.recipients = "boese@evil.de-mail.de".into();
        }
        if let Some(p) = prev {
            e.prev_hash = p;
        }
        e.hash = archive::entry_hash(e);
        prev = Some(e.hash.clone());
    }
}

#[test]
fn signed_time_stamped_checkpoints_catch_a_rewritten_archive_and_travel_with_the_export() {
    let tsa_dir = demail_testkit::temp_dir();
    let tsa = demail_testkit::Tsa::start(tsa_dir.path(), "tsa");
    let other_tsa = demail_testkit::Tsa::start(tsa_dir.path(), "fremd");
    let (url, ca) = (tsa.url.clone(), tsa.ca.ca.cert.display().to_string());
    let mut h = Harness::build(
        POLICY,
        move |c| format!("{c}\n[archive]\ncheckpoint_secs = 3600\ntsa_url = \"{url}\"\ntsa_ca = \"{ca}\"\n"),
        true,
    );
    h.start_provider();
    for i in 0..4 {
        h.submit(FROM, &[TO], &msg(FROM, TO, &format!("Bescheid {i}"), "")).unwrap();
    }
    h.wait_provider(4, 30);
    // A graceful stop signs what is there and has it time-stamped.
    h.gateway.as_mut().unwrap().terminate(Duration::from_secs(30));
    let log = h.log();
    assert!(log.contains("archive checkpoint signed") && log.contains("archive checkpoint time-stamped"), "{log}");
    assert!(tsa.stamped() >= 1);

    let public = std::fs::read_to_string(h.path().join("seal-public.txt")).unwrap();
    let policy = h.path().join("auditor-policy.toml");
    std::fs::write(&policy, format!("{POLICY}\n[seal]\npublic_keys = [\"{}\"]\n", public.trim())).unwrap();
    let pol = policy.to_str().unwrap();

    let v = h.cli(&["archive", "verify", "--policy", pol]);
    let r = json(&v);
    assert_eq!(v.status.code(), Some(0), "{r}");
    assert_eq!((r["entries"].as_i64(), r["signed_upto"].as_i64(), r["stamped"].as_i64()), (Some(4), Some(4), Some(1)));

    // OpenSSL's own `ts -verify` accepts the token for the signed checkpoint.
    let out = h.path().join("export");
    assert!(h.cli(&["archive", "export", "--out", out.to_str().unwrap()]).status.success());
    let cps: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("checkpoints.json")).unwrap()).unwrap();
    let cp = Checkpoint::from_json(&cps[0]).unwrap();
    let digest: String = cp.stamped_digest().iter().map(|b| format!("{b:02x}")).collect();
    let ok = tsa.openssl_verifies(cp.timestamp.as_ref().unwrap(), &digest);
    assert!(ok.as_ref().is_ok_and(|t| t.contains("Verification: OK")), "{ok:?}");
    let other: String =
        Checkpoint { time: cp.time + 1, ..cp.clone() }.stamped_digest().iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        tsa.openssl_verifies(cp.timestamp.as_ref().unwrap(), &other).is_err(),
        "the token is for that checkpoint only"
    );

    // The export, on a machine without the gateway: the same verdict from the CLI alone.
    let e = verify_export(&out, &policy, &tsa.ca.ca.cert);
    let r = json(&e);
    assert_eq!(e.status.code(), Some(0), "{r}");
    assert_eq!((r["signed_upto"].as_i64(), r["stamped"].as_i64()), (Some(4), Some(1)));
    // A TSA the auditor does not trust, and a policy without the gateway's key.
    let e = verify_export(&out, &policy, &other_tsa.ca.ca.cert);
    assert_eq!(codes(&json(&e)), [("archive.timestamp_invalid".to_string(), Some(4))]);
    let bare = h.path().join("bare-policy.toml");
    std::fs::write(&bare, POLICY).unwrap();
    let r = json(&verify_export(&out, &bare, &tsa.ca.ca.cert));
    assert_eq!(codes(&r), [("archive.checkpoint_unknown_key".to_string(), Some(4))], "{r}");
    // The export rewritten and its head moved: the chain checks pass, the checkpoint does not.
    let mpath = out.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    let mut entries: Vec<Entry> =
        m["entries"].as_array().unwrap().iter().map(|v| serde_json::from_value(v.clone()).unwrap()).collect();
    rewrite(&mut entries, 2);
    for (v, e) in m["entries"].as_array_mut().unwrap().iter_mut().zip(&entries) {
        let file = v["file"].clone();
        *v = serde_json::to_value(e).unwrap();
        v["file"] = file;
    }
    m["head"] = serde_json::json!({"seq": 4, "hash": entries[3].hash});
    std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
    let r = json(&verify_export(&out, &policy, &tsa.ca.ca.cert));
    assert_eq!(codes(&r), [("archive.rewritten".to_string(), Some(2))], "{r}");
    // A checkpoint changed to match the rewrite is no longer the gateway's.
    let mut forged = cps.clone();
    forged[0]["hash"] = serde_json::json!(entries[3].hash);
    std::fs::write(out.join("checkpoints.json"), serde_json::to_vec(&forged).unwrap()).unwrap();
    let r = json(&verify_export(&out, &policy, &tsa.ca.ca.cert));
    assert!(codes(&r).contains(&("archive.checkpoint_forged".into(), Some(4))), "{r}");

    // The live archive, rewritten in the database with its head file: only the checkpoint
    // notices, and it names the first entry that changed.
    let db = h.path().join("archive/archive.sqlite");
    let c = rusqlite::Connection::open(&db).unwrap();
    let mut rows: Vec<Entry> = {
        let mut st = c
            .prepare("SELECT seq, time, direction, private_id, message_id, sender, recipients, sha256, size, link, prev_hash, hash, actor FROM entries ORDER BY seq")
            .unwrap();
        st.query_map([], |r| {
            Ok(Entry {
                seq: r.get(0)?,
                time: r.get(1)?,
                direction: r.get(2)?,
                private_id: r.get(3)?,
                message_id: r.get(4)?,
                sender: r.get(5)?,
                recipients: r.get(6)?,
                sha256: r.get(7)?,
                size: r.get(8)?,
                link: r.get(9)?,
                prev_hash: r.get(10)?,
                hash: r.get(11)?,
                actor: r.get(12)?,
            })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    rewrite(&mut rows, 3);
    c.execute_batch("DROP TRIGGER entries_no_update").unwrap();
    for e in &rows {
        c.execute(
            "UPDATE entries SET recipients = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
            rusqlite::params![e.recipients, e.prev_hash, e.hash, e.seq],
        )
        .unwrap();
    }
    // The append-only triggers stop a plain DELETE of the checkpoints.
    assert!(c.execute("DELETE FROM checkpoints", []).is_err());
    drop(c);
    std::fs::write(h.path().join("archive/archive.sqlite.head"), format!("4 {}\n", rows[3].hash)).unwrap();
    let v = h.cli(&["archive", "verify", "--policy", pol]);
    let r = json(&v);
    assert_eq!(v.status.code(), Some(1));
    assert_eq!(codes(&r), [("archive.rewritten".to_string(), Some(3))], "{r}");
}

#[test]
fn a_tsa_that_cannot_be_reached_leaves_the_checkpoint_signed_and_it_is_stamped_later() {
    let tsa_dir = demail_testkit::temp_dir();
    let tsa = demail_testkit::Tsa::start(tsa_dir.path(), "tsa");
    let ca = tsa.ca.ca.cert.display().to_string();
    let dead = demail_testkit::free_port();
    let cfg_ca = ca.clone();
    let mut h = Harness::build(
        POLICY,
        move |c| {
            format!("{c}\n[archive]\ncheckpoint_secs = 3600\ntsa_url = \"http://127.0.0.1:{dead}/\"\ntsa_ca = \"{cfg_ca}\"\n")
        },
        true,
    );
    h.start_provider();
    h.submit(FROM, &[TO], &msg(FROM, TO, "Bescheid", "")).unwrap();
    h.wait_provider(1, 30);
    h.gateway.as_mut().unwrap().terminate(Duration::from_secs(30));
    let log = h.log();
    assert!(log.contains("archive checkpoint signed") && log.contains("not time-stamped"), "{log}");
    let public = std::fs::read_to_string(h.path().join("seal-public.txt")).unwrap();
    let policy = h.path().join("auditor-policy.toml");
    std::fs::write(&policy, format!("{POLICY}\n[seal]\npublic_keys = [\"{}\"]\n", public.trim())).unwrap();
    let r = json(&h.cli(&["archive", "verify", "--policy", policy.to_str().unwrap()]));
    assert_eq!(codes(&r), [("archive.timestamp_missing".to_string(), Some(1))], "{r}");

    // The TSA is back: the next start stamps the checkpoint that has none.
    let text = std::fs::read_to_string(&h.config).unwrap().replace(&format!("http://127.0.0.1:{dead}/"), &tsa.url);
    std::fs::write(&h.config, text).unwrap();
    h.start_gateway();
    assert!(
        demail_testkit::wait_until(Duration::from_secs(20), || h
            .log()
            .contains("archive checkpoint time-stamped")
            .then_some(()))
        .is_some(),
        "{}",
        h.log()
    );
    let v = h.cli(&["archive", "verify", "--policy", policy.to_str().unwrap()]);
    let r = json(&v);
    assert_eq!(v.status.code(), Some(0), "{r}");
    assert_eq!(r["stamped"], 1);
}
