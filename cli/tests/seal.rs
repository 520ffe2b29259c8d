//! `demail seal verify FILE`: the CLI verifies gateway seals itself (core feature
//! `seal-verify`) and answers like the core does for every fixture in tests/seal/.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

#[test]
fn seal_verify_matches_the_fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/seal");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let eml = e.path();
        if eml.extension().is_none_or(|x| x != "eml") {
            continue;
        }
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(eml.with_extension("json")).unwrap()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_demail"))
            .arg("--policy")
            .arg(dir.join("policy.toml"))
            .args(["seal", "verify"])
            .arg(&eml)
            .env_remove("DEMAIL_POLICY")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {}", eml.display(), String::from_utf8_lossy(&out.stderr));
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        for key in ["sealed", "code", "required"] {
            assert_eq!(got[key], expected[key], "{}: {key} in {got}", eml.display());
        }
        n += 1;
    }
    assert!(n >= 10, "seal fixtures missing");
}

#[test]
fn a_valid_seal_is_reported_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/seal");
    let out = Command::new(env!("CARGO_BIN_EXE_demail"))
        .arg("--policy")
        .arg(dir.join("policy.toml"))
        .args(["seal", "verify"])
        .arg(dir.join("01-valid-de-mail.eml"))
        .output()
        .unwrap();
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Not "seal.unsupported": this build verifies the Ed25519 signature itself.
    assert_eq!(got["code"], "seal.valid", "{got}");
    assert_eq!(got["sealed"], true);
}
