//! What IT installs holds no shared account: the packaged gateway template and the
//! example configuration pass the who-sends rules the gateway applies at start, and
//! people sign in through the directory.

use demail_gateway::config::Config;
use std::path::Path;

#[test]
fn shipped_gateway_configurations_have_no_shared_account() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for f in ["installer/linux/gateway/files/gateway.toml", "examples/gateway.toml"] {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        let c: Config = toml::from_str(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
        c.check_identity().unwrap_or_else(|r| panic!("{f}: {r}"));
        assert!(c.outbound.users.iter().all(|u| !u.shared()), "{f}");
        assert!(c.outbound.require_auth, "{f}");
        assert!(c.identity.kerberos && c.identity.ldap_password && c.directory.is_some(), "{f}: people sign in");
    }
    // The check itself: an account for everyone in the template is refused.
    let text = std::fs::read_to_string(root.join("installer/linux/gateway/files/gateway.toml")).unwrap();
    let shared = text.replace(
        "allowed_clients = [\"10.0.0.0/8\", \"127.0.0.1\"]",
        "allowed_clients = [\"10.0.0.0/8\", \"127.0.0.1\"]\nusers = [{ name = \"helper\", password_credential = \"x\" }]",
    );
    assert_ne!(shared, text);
    let c: Config = toml::from_str(&shared).unwrap();
    assert_eq!(c.check_identity().unwrap_err().code, "identity.shared_account");
}
