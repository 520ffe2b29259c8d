//! `demail policy embed`: one policy file for helper, gateway and the Thunderbird add-in.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ID: &str = "demail-addin@open-demail.de";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn demail(policy: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_demail"))
        .arg("--policy")
        .arg(policy)
        .args(args)
        .env_remove("DEMAIL_POLICY")
        .output()
        .unwrap()
}

fn json_out(o: &Output) -> Value {
    assert!(o.status.success(), "exit {:?}: {}", o.status.code(), String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// An empty policy file: the built-in rules, whatever /etc/demail holds on this machine.
fn builtin() -> tempfile::NamedTempFile {
    tempfile::NamedTempFile::new().unwrap()
}

#[test]
fn embeds_the_policy_and_keeps_everything_else() {
    let corpus = repo().join("tests/corpus/policy.toml");
    let shipped = repo().join("installer/linux/desktop/files/policies.json");
    let before: Value = serde_json::from_slice(&std::fs::read(&shipped).unwrap()).unwrap();
    let out = json_out(&demail(&corpus, &["policy", "embed", shipped.to_str().unwrap()]));

    let effective = json_out(&demail(&corpus, &["policy", "show"]));
    let settings = &out["policies"]["3rdparty"]["Extensions"][ID];
    assert_eq!(settings["policy"], effective);
    assert_ne!(
        settings["policy"], before["policies"]["3rdparty"]["Extensions"][ID]["policy"],
        "the corpus policy differs from the shipped one"
    );
    // Only the policy changed.
    let mut expected = before.clone();
    expected["policies"]["3rdparty"]["Extensions"][ID]["policy"] = effective.clone();
    assert_eq!(out, expected);

    // What the add-in receives reads back as the same policy.
    let embedded = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(embedded.path(), settings["policy"].to_string()).unwrap();
    assert_eq!(json_out(&demail(embedded.path(), &["policy", "show"])), effective);

    // Windows: the add-in's settings object alone (the MSI's addin-settings.json, the GPO value).
    let win = repo().join("installer/windows/addin-settings.json");
    let before: Value = serde_json::from_slice(&std::fs::read(&win).unwrap()).unwrap();
    let only = json_out(&demail(&corpus, &["policy", "embed", "--settings", win.to_str().unwrap()]));
    let mut expected = before;
    expected["policy"] = effective;
    assert_eq!(only, expected);
}

#[test]
fn creates_the_add_in_entry_in_a_policies_json_without_it() {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), r#"{"policies": {"DisableTelemetry": true}}"#).unwrap();
    let out = json_out(&demail(builtin().path(), &["policy", "embed", f.path().to_str().unwrap()]));
    assert_eq!(out["policies"]["DisableTelemetry"], json!(true));
    assert_eq!(
        out["policies"]["3rdparty"]["Extensions"][ID]["policy"],
        json_out(&demail(builtin().path(), &["policy", "show"]))
    );
}

/// The packages ship the add-in the same rules the helper and gateway use without a
/// policy file (docs/deployment.md says so); this keeps the copies from drifting apart.
#[test]
fn shipped_add_in_settings_carry_the_builtin_rules() {
    let defaults = json_out(&demail(builtin().path(), &["policy", "show"]));
    let linux: Value =
        serde_json::from_slice(&std::fs::read(repo().join("installer/linux/desktop/files/policies.json")).unwrap())
            .unwrap();
    let windows: Value =
        serde_json::from_slice(&std::fs::read(repo().join("installer/windows/addin-settings.json")).unwrap()).unwrap();
    for (name, settings) in [
        ("linux policies.json", &linux["policies"]["3rdparty"]["Extensions"][ID]),
        ("windows addin-settings.json", &windows),
    ] {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), settings["policy"].to_string()).unwrap();
        assert_eq!(json_out(&demail(f.path(), &["policy", "show"])), defaults, "{name}");
    }
}

#[test]
fn unusable_policies_json_is_refused_with_a_code() {
    for (text, what) in [
        ("{\"policies\": ", "truncated JSON"),
        ("not json", "not JSON"),
        (r#"{"policies": []}"#, "policies is an array"),
        (
            r#"{"policies": {"3rdparty": {"Extensions": {"demail-addin@open-demail.de": "x"}}}}"#,
            "settings are a string",
        ),
    ] {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        let o = demail(builtin().path(), &["policy", "embed", f.path().to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{what}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("policies_json.invalid") && err.contains("Thunderbird-Richtlinie"), "{what}: {err}");
        assert!(o.stdout.is_empty(), "{what}: nothing on stdout");
    }
    // A broken policy is reported as such, before the file is touched.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "[rules]\nmixed_addressing = \"sometimes\"\n").unwrap();
    let shipped = repo().join("installer/linux/desktop/files/policies.json");
    let o = demail(bad.path(), &["policy", "embed", shipped.to_str().unwrap()]);
    assert_ne!(o.status.code(), Some(0));
    assert!(o.stdout.is_empty());
}

#[test]
fn in_place_replaces_the_file_and_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.json");
    std::fs::copy(repo().join("installer/linux/desktop/files/policies.json"), &file).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let corpus = repo().join("tests/corpus/policy.toml");
    let printed = json_out(&demail(&corpus, &["policy", "embed", file.to_str().unwrap()]));
    let status = json_out(&demail(&corpus, &["policy", "embed", "--in-place", file.to_str().unwrap()]));
    assert_eq!(status["written"], json!(true));
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(on_disk, printed);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o640);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");

    // A file that cannot be used stays exactly as it was.
    std::fs::write(&file, "{\"policies\": []}").unwrap();
    let o = demail(&corpus, &["policy", "embed", "--in-place", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "{\"policies\": []}");
}
