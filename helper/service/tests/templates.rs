//! What IT installs on the desks holds no shared account: the packaged machine file
//! names no gateway user, so every person signs in as themselves (Kerberos, else their own
//! login), and the Windows installer writes no user name unless IT gives one.

use demail_helper::config::{AuthMode, Config, Paths};
use std::path::Path;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn the_packaged_helper_configuration_signs_in_each_person() {
    let machine = root().join("installer/linux/desktop/files/helper.toml");
    let dir = demail_testkit::temp_dir();
    let c = Config::load(&Paths { machine: machine.clone(), user: dir.path().join("none.toml") })
        .unwrap_or_else(|e| panic!("{}: {e:?}", machine.display()));
    assert_eq!(c.gateway.username, "", "no account in the template");
    assert_eq!(c.gateway.effective_auth(), AuthMode::Auto);
    // Even uncommented, the template's gateway section has no user name to share.
    let text = std::fs::read_to_string(&machine).unwrap();
    let active = text.lines().map(|l| l.trim_start_matches('#').trim()).any(|l| l.starts_with("username"));
    assert!(!active, "the template suggests no gateway user name");
}

#[test]
fn the_windows_installer_sets_no_user_name_by_default() {
    let wxs = std::fs::read_to_string(root().join("installer/windows/demail-desktop.wxs")).unwrap();
    // A property left out writes an empty value, which the helper reads as "not set".
    assert!(!wxs.contains("<Property Id=\"GATEWAY_USERNAME\" Value="), "no default user name in the MSI");
    let readme = std::fs::read_to_string(root().join("installer/windows/README.md")).unwrap();
    assert!(!readme.contains("GATEWAY_USERNAME=demail"), "the roll-out example shares no account");
}
