//! The core's modules form a one-way order: a module may use only modules of a layer
//! above its own. An import circle (as once between `policy` and `options`) fails here.

use std::collections::BTreeSet;
use std::path::Path;

/// Top to bottom; modules on one line share a layer and must not use each other.
const LAYERS: &[&[&str]] = &[
    &["reason"],
    &["idn"],
    &["headers"],
    &["options"],
    &["address"],
    &["seal", "subject", "cert"],
    &["submission", "integrity"],
    &["policy"],
    &["check", "classify", "mapping", "rights"],
    &["proof"],
    &["api"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The crate root's re-exports (`crate::Policy`) count as uses of their module.
fn module_of(name: &str) -> &str {
    match name {
        "Reason" => "reason",
        "DeMailOption" | "OptionSet" => "options",
        "Policy" => "policy",
        other => other,
    }
}

/// `crate::<name>` paths in a source file, including `use crate::{a, b}` groups.
/// Comments are skipped: a doc link to a lower layer is no dependency.
fn uses(src: &str) -> BTreeSet<String> {
    let code: String = src.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let src = code.as_str();
    let mut out = BTreeSet::new();
    for (i, _) in src.match_indices("crate::") {
        let rest = &src[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                out.insert(name);
            }
        } else {
            out.insert(rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect());
        }
    }
    out
}

#[test]
fn modules_use_only_layers_above() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut seen = 0;
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let module = path.file_stem().unwrap().to_str().unwrap().to_string();
        if module == "lib" {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            problems.push(format!("{module}.rs is in no layer: add it to LAYERS (and to lib.rs)"));
            continue;
        };
        seen += 1;
        let src = std::fs::read_to_string(&path).unwrap();
        for used in uses(&src) {
            let used = module_of(&used).to_string();
            // Other items of lib.rs (VERSION) belong to no module.
            let Some(layer) = layer_of(&used) else { continue };
            if used != module && layer >= own {
                problems.push(format!("{module} (layer {own}) uses {used} (layer {layer})"));
            }
        }
    }
    assert_eq!(seen, LAYERS.iter().map(|l| l.len()).sum::<usize>(), "a layer names a module without a file");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_grouped_and_plain_paths() {
    let u =
        uses("use crate::{reason::Reason, options};\n/// [`crate::api`]\nlet x = crate::policy::Policy::default();");
    assert_eq!(u.into_iter().collect::<Vec<_>>(), ["options", "policy", "reason"]);
}
