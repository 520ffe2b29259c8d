//! Windows: IT settings from the registry, read after `%ProgramData%\demail\helper.toml`
//! (installer/windows/README.md):
//!
//! - `HKLM\SOFTWARE\demail\Helper`: written by the MSI from its public properties; acts
//!   like the machine file (users may override unless `lock.keys` names the key).
//! - `HKLM\SOFTWARE\Policies\demail\Helper`: Group Policy (ADMX); every value set there
//!   wins and is locked.
//!
//! Value names are the configuration keys (`gateway.host`) plus `lock.keys`; an empty
//! value counts as not set. The values
//! are turned into TOML and go through the same parser as the files, so types, ranges
//! and error messages are the same. The conversion is plain code, unit-tested on Linux.

use serde_json::Value;

/// Written by the MSI (public properties).
pub const MSI_KEY: &str = r"SOFTWARE\demail\Helper";
/// Written by Group Policy (ADMX `demail.admx`); everything here is locked.
pub const POLICY_KEY: &str = r"SOFTWARE\Policies\demail\Helper";

/// One registry value, as far as the configuration cares.
#[derive(Debug, Clone, PartialEq)]
pub enum RegData {
    Str(String),
    Dword(u32),
    Qword(u64),
    Multi(Vec<String>),
}

/// A registry layer: its place (for messages), TOML text, and the keys it set.
#[derive(Debug, Clone)]
pub struct Layer {
    pub place: String,
    pub toml: String,
    pub keys: Vec<String>,
    /// Group Policy: every key set here is locked.
    pub lock_all: bool,
}

/// Registry values → TOML, each value typed after the key's default (bool, number, text,
/// list). Unknown names are passed on as text so the parser reports them with their name.
pub fn to_layer(place: &str, values: &[(String, RegData)], lock_all: bool) -> Layer {
    let defaults = serde_json::to_value(crate::config::Config::default()).unwrap_or(Value::Null);
    let mut doc = toml_edit::DocumentMut::new();
    let mut keys = Vec::new();
    let mut sorted: Vec<&(String, RegData)> = values.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, data) in sorted {
        let name = name.trim();
        // The unnamed default value and names without a section are not settings.
        let Some((section, key)) = name.split_once('.') else { continue };
        // Empty means not set: the MSI writes every property, set or not.
        if text(data).split(',').all(|p| p.trim().is_empty()) {
            continue;
        }
        let kind = if name == "lock.keys" { &Value::Array(Vec::new()) } else { &defaults[section][key] };
        let v = convert(kind, data);
        let table = doc
            .entry(section)
            .or_insert(toml_edit::Item::Table(toml_edit::Table::new()))
            .as_table_mut()
            .expect("sections are tables");
        table[key] = toml_edit::Item::Value(v);
        if name != "lock.keys" {
            keys.push(name.to_string());
        }
    }
    Layer { place: place.to_string(), toml: doc.to_string(), keys, lock_all }
}

fn text(d: &RegData) -> String {
    match d {
        RegData::Str(s) => s.trim().to_string(),
        RegData::Dword(n) => n.to_string(),
        RegData::Qword(n) => n.to_string(),
        RegData::Multi(v) => v.join(","),
    }
}

fn convert(kind: &Value, d: &RegData) -> toml_edit::Value {
    match kind {
        Value::Bool(_) => match d {
            RegData::Dword(n) => (*n != 0).into(),
            RegData::Qword(n) => (*n != 0).into(),
            _ => match text(d).to_ascii_lowercase().as_str() {
                "1" | "true" | "ja" | "yes" => true.into(),
                "0" | "false" | "nein" | "no" => false.into(),
                // Left as text: the parser answers with config.invalid_value for this key.
                other => other.into(),
            },
        },
        Value::Number(_) => match d {
            RegData::Dword(n) => i64::from(*n).into(),
            RegData::Qword(n) => i64::try_from(*n).unwrap_or(i64::MAX).into(),
            // "64 MiB" stays text (sizes accept it); other text becomes a clear type error.
            _ => text(d).parse::<i64>().map(toml_edit::Value::from).unwrap_or_else(|_| text(d).into()),
        },
        Value::Array(_) => {
            let items: Vec<String> = match d {
                RegData::Multi(v) => v.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
                other => text(other)
                    .split([',', ';', '\n'])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            };
            toml_edit::Value::Array(items.iter().collect())
        }
        _ => text(d).into(),
    }
}

/// Read both layers from HKLM (64-bit view), MSI first. Missing keys are empty layers.
#[cfg(windows)]
pub fn layers() -> Vec<Layer> {
    let mut out = Vec::new();
    for (key, lock_all) in [(MSI_KEY, false), (POLICY_KEY, true)] {
        let values = read_values(key);
        if !values.is_empty() {
            out.push(to_layer(&format!(r"HKLM\{key}"), &values, lock_all));
        }
    }
    out
}

#[cfg(windows)]
fn read_values(path: &str) -> Vec<(String, RegData)> {
    use winreg::enums::{RegType, HKEY_LOCAL_MACHINE, KEY_READ, KEY_WOW64_64KEY};
    use winreg::types::FromRegValue;
    let Ok(key) = winreg::RegKey::predef(HKEY_LOCAL_MACHINE).open_subkey_with_flags(path, KEY_READ | KEY_WOW64_64KEY)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, v) in key.enum_values().flatten() {
        let data = match v.vtype {
            RegType::REG_SZ | RegType::REG_EXPAND_SZ => String::from_reg_value(&v).ok().map(RegData::Str),
            RegType::REG_DWORD => u32::from_reg_value(&v).ok().map(RegData::Dword),
            RegType::REG_QWORD => u64::from_reg_value(&v).ok().map(RegData::Qword),
            RegType::REG_MULTI_SZ => Vec::<String>::from_reg_value(&v).ok().map(RegData::Multi),
            _ => None,
        };
        if let Some(d) = data {
            out.push((name, d));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed_after_the_defaults() {
        let vals = vec![
            ("gateway.host".to_string(), RegData::Str(" gw.stadt.de ".into())),
            ("gateway.port".to_string(), RegData::Dword(465)),
            ("gateway.ca_only".to_string(), RegData::Str("1".into())),
            ("pairing.native_auto_approve".to_string(), RegData::Dword(1)),
            ("relay.retry_max".to_string(), RegData::Str("900".into())),
            ("api.max_body".to_string(), RegData::Str("10 MiB".into())),
            ("api.allowed_origins".to_string(), RegData::Str("https://a.stadt.de; https://b.stadt.de".into())),
            ("lock.keys".to_string(), RegData::Multi(vec!["gateway".into(), "".into(), "policy.file".into()])),
            (String::new(), RegData::Str("ignored default value".into())),
            ("gateway.tls".to_string(), RegData::Str("  ".into())),
            ("gateway.username".to_string(), RegData::Multi(vec![String::new()])),
        ];
        let l = to_layer(r"HKLM\x", &vals, false);
        let t: toml::Table = toml::from_str(&l.toml).unwrap();
        assert_eq!(t["gateway"]["host"].as_str(), Some("gw.stadt.de"));
        assert_eq!(t["gateway"]["port"].as_integer(), Some(465));
        assert_eq!(t["gateway"]["ca_only"].as_bool(), Some(true));
        assert_eq!(t["pairing"]["native_auto_approve"].as_bool(), Some(true));
        assert_eq!(t["relay"]["retry_max"].as_integer(), Some(900));
        assert_eq!(t["api"]["max_body"].as_str(), Some("10 MiB"));
        assert_eq!(t["api"]["allowed_origins"].as_array().unwrap().len(), 2);
        assert_eq!(t["lock"]["keys"].as_array().unwrap().len(), 2);
        assert!(!l.keys.contains(&"lock.keys".to_string()));
        assert_eq!(l.keys.len(), 7);
    }

    #[test]
    fn bad_text_stays_text_for_the_parser_to_refuse() {
        let l = to_layer(
            r"HKLM\x",
            &[
                ("gateway.port".into(), RegData::Str("viele".into())),
                ("relay.enabled".into(), RegData::Str("vielleicht".into())),
            ],
            true,
        );
        let t: toml::Table = toml::from_str(&l.toml).unwrap();
        assert_eq!(t["gateway"]["port"].as_str(), Some("viele"));
        assert_eq!(t["relay"]["enabled"].as_str(), Some("vielleicht"));
    }
}
