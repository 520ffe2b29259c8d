//! The error-code tables in docs/protocol.md §6 and docs/helper.md are exactly the codes
//! in `demail_helper::code`; that module is the only place in the helper and the tray
//! that spells a code, and each of its codes is used somewhere.

use demail_helper::code;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn set<'a>(codes: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    codes.into_iter().map(str::to_string).collect()
}

/// The rows of the one table in `doc` whose header row is `header`.
fn table(doc: &str, header: &str) -> Vec<Vec<String>> {
    let lines: Vec<&str> = doc.lines().collect();
    let starts: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].trim() == header).collect();
    assert_eq!(starts.len(), 1, "exactly one table with the header {header}");
    lines[starts[0] + 2..]
        .iter()
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim().trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

/// The `quoted` words of a table cell.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

fn is_code(s: &str) -> bool {
    let word = |w: &str| {
        w.starts_with(|c: char| c.is_ascii_lowercase()) && w.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    };
    s.split_once('.').is_some_and(|(a, b)| word(a) && word(b))
}

/// Every string literal in `src` made of lower-case letters, `_` and `.` (not one inside
/// an escaped `\"…\"`).
fn word_literals(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = src.as_bytes();
    for (i, _) in src.match_indices('"') {
        if i > 0 && b[i - 1] == b'\\' {
            continue;
        }
        let rest = &src[i + 1..];
        let Some(end) = rest.find(|c: char| !(c.is_ascii_lowercase() || c == '_' || c == '.')) else { continue };
        if end > 0 && rest[end..].starts_with('"') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

/// The literals in `src` that look like codes: `family.name`, or a code without a dot
/// (`internal`).
fn code_literals(src: &str) -> Vec<String> {
    let plain: BTreeSet<String> = constants().into_iter().map(|(_, c)| c).filter(|c| !c.contains('.')).collect();
    word_literals(src).into_iter().filter(|l| is_code(l) || plain.contains(l)).collect()
}

/// The helper's and the tray's sources without their unit tests (which may spell codes
/// to pin them), code.rs apart.
fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("helper/service/src"), &mut files);
    walk(&root().join("helper/tray/src"), &mut files);
    files.sort();
    files
        .into_iter()
        .filter(|p| !p.ends_with("service/src/code.rs"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default().to_string();
            (p, text)
        })
        .collect()
}

/// `(const name, code)` for every code constant in code.rs.
fn constants() -> Vec<(String, String)> {
    read("helper/service/src/code.rs")
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("pub const ")?.split_once(':')?;
            let lit = word_literals(rest);
            (lit.len() == 1).then(|| (name.to_string(), lit[0].clone()))
        })
        .collect()
}

#[test]
fn api_table_is_the_api_codes_with_their_status() {
    let doc = read("docs/protocol.md");
    let mut documented = BTreeSet::new();
    let mut families = BTreeSet::new();
    for row in table(&doc, "| code | HTTP | meaning |") {
        let codes = ticked(&row[0]);
        if codes.iter().any(|c| c.ends_with(".*")) {
            // The core's row: families only.
            for c in codes {
                let family = c.strip_suffix(".*").unwrap_or_else(|| panic!("{c}: list core codes as family.*"));
                families.insert(family.to_string());
            }
            continue;
        }
        for c in codes {
            documented.insert(format!("{c} {}", row[1]));
        }
    }
    let api: BTreeSet<String> = code::API.iter().map(|c| format!("{} {}", c.id, c.status.as_u16())).collect();
    assert_eq!(documented, api, "protocol.md §6 (code HTTP) against code::API");
    assert_eq!(
        families,
        set(code::CORE_FAMILIES.iter().copied()),
        "protocol.md §6 core row against code::CORE_FAMILIES"
    );
}

#[test]
fn core_families_and_codes_exist_in_the_core() {
    let mut core = String::new();
    for e in std::fs::read_dir(root().join("core/src")).unwrap().flatten() {
        core.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
    }
    let literals = set(word_literals(&core).iter().map(String::as_str));
    for f in code::CORE_FAMILIES {
        assert!(literals.iter().any(|c| c.starts_with(&format!("{f}."))), "the core has no {f}.* code any more");
    }
    assert!(literals.contains(code::CORE_SIZE_EXCEEDED), "the core has no {} any more", code::CORE_SIZE_EXCEEDED);
}

#[test]
fn outbox_native_and_admin_tables_are_their_groups() {
    let protocol = read("docs/protocol.md");
    let helper = read("docs/helper.md");
    let codes = |doc: &str, header: &str| -> BTreeSet<String> {
        table(doc, header).iter().flat_map(|row| ticked(&row[0])).collect()
    };
    assert_eq!(codes(&protocol, "| code | state | meaning |"), set(code::OUTBOX.iter().copied()), "outbox codes");
    assert_eq!(codes(&protocol, "| code | action | meaning |"), set(code::NATIVE.iter().copied()), "native host");
    assert_eq!(codes(&helper, "| code | where | meaning |"), set(code::ADMIN.iter().copied()), "helper.md");
    assert_eq!(codes(&protocol, "| code | check | meaning |"), set(code::RECEIPT.iter().copied()), "receipt checks");
}

#[test]
fn every_code_constant_is_in_a_group_and_in_use() {
    let groups: BTreeSet<String> = code::API
        .iter()
        .map(|c| c.id)
        .chain(code::OUTBOX.iter().copied())
        .chain(code::NATIVE.iter().copied())
        .chain(code::ADMIN.iter().copied())
        .chain(code::RECEIPT.iter().copied())
        .chain([code::CORE_SIZE_EXCEEDED])
        .map(str::to_string)
        .collect();
    let consts = constants();
    assert!(consts.len() > 50, "code.rs not understood: {consts:?}");
    assert_eq!(set(consts.iter().map(|(_, c)| c.as_str())), groups, "code.rs constants against its groups");
    let sources = sources();
    // `code::RELAY_TLS`, not the start of `code::RELAY_TLS_SETUP`.
    let uses = |text: &str, name: &str| {
        let path = format!("code::{name}");
        text.match_indices(&path)
            .any(|(i, _)| !text[i + path.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
    };
    let unused: Vec<&str> = consts
        .iter()
        .filter(|(name, _)| !sources.iter().any(|(_, text)| uses(text, name)))
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(unused.is_empty(), "documented codes no longer given out: {unused:?}");
}

#[test]
fn no_code_is_spelled_outside_code_rs() {
    // Dotted literals that are not codes: configuration keys, action names, file names,
    // request field paths.
    let keys = set(demail_helper::config::KEYS.iter().copied().chain(["lock.keys"]));
    let actions = set(demail_helper::api::ACTIONS.iter().map(|(a, _)| *a));
    let fields = set(["attachments.filename", "attachments.content_type", "attachments.data"]);
    let file = |s: &str| [".toml", ".json", ".lock", ".log"].iter().any(|x| s.ends_with(x));
    let mut found = Vec::new();
    for (path, text) in sources() {
        for lit in code_literals(&text) {
            if !(keys.contains(&lit) || actions.contains(&lit) || fields.contains(&lit) || file(&lit)) {
                found.push(format!("{}: \"{lit}\"", path.strip_prefix(root()).unwrap_or(&path).display()));
            }
        }
    }
    assert!(found.is_empty(), "codes belong in helper/service/src/code.rs (and the docs): {found:#?}");
}

#[test]
fn the_scanner_sees_what_it_should() {
    let found = code_literals(r#"x("relay.auth", "a.b c") y("\"no.code\"") "lock.keys" "internal" "other""#);
    assert_eq!(found, ["relay.auth", "lock.keys", "internal"]);
    assert!(!is_code("helper.sqlite3") && !is_code("a.b.c") && is_code("private_id.too_long"));
}
