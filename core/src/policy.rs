//! The policy: one TOML format shared by helper, gateway and add-in.
//!
//! Field validation happens inside the `Deserialize` impls, so every error carries
//! the position of the offending value; see `docs/policy.md` for the format.

use crate::address::{normalize_addr_spec, DomainPattern};
use crate::options::OptionSet;
use crate::reason::{decode_reason, encode_reason, quote, Reason};
use crate::subject::Vocabulary;
use crate::submission::{FieldRules, ReplyTo, SenderHeader};
use serde::{Deserialize, Serialize};

/// What to do with mixed De-Mail and e-mail recipients in one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MixedAddressing {
    /// Refuse the whole message (the article's recommendation).
    Reject,
    /// Allow only when every e-mail recipient is internal.
    AllowInternal,
    /// Ask the user to confirm.
    Warn,
    /// Send De-Mail recipients as De-Mail, the rest as e-mail.
    Allow,
}

/// Reaction to a rule: let it pass, ask, or refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Allow,
    Confirm,
    Block,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    Allow,
    Deny,
}

/// A size in bytes; accepts `10485760`, `"10 MiB"`, `"20MB"`, `"512 KiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor, not an untagged enum: that would buffer the value (serde's
        // `Content`), which costs the wasm module ~18 KB.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size in bytes or with a unit, e.g. 10485760 or \"10 MiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Size, E> {
                Ok(Size(n))
            }
            // TOML integers are signed.
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Size, E> {
                u64::try_from(n).map(Size).map_err(|_| bad(&n.to_string()))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Size, E> {
                let t = s.trim();
                let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
                let (num, unit) = t.split_at(split);
                let n: u64 = num.parse().map_err(|_| bad(s))?;
                let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
                    "" | "b" => 1,
                    "kb" => 1000,
                    "kib" | "k" => 1024,
                    "mb" => 1_000_000,
                    "mib" | "m" => 1024 * 1024,
                    "gb" => 1_000_000_000,
                    "gib" | "g" => 1024 * 1024 * 1024,
                    _ => return Err(bad(s)),
                };
                n.checked_mul(mult).map(Size).ok_or_else(|| bad(s))
            }
        }
        fn bad<E: serde::de::Error>(s: &str) -> E {
            E::custom(encode_reason(&Reason::new(
                "policy.size_invalid",
                format!("„{}“ ist keine gültige Größe (z. B. 10485760 oder \"10 MiB\").", quote(s)),
                format!("\"{}\" is not a valid size (e.g. 10485760 or \"10 MiB\").", quote(s)),
            )))
        }
        d.deserialize_any(V)
    }
}

/// A normalised addr-spec; validated on load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct AddrSpec(pub String);

impl<'de> Deserialize<'de> for AddrSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        normalize_addr_spec(&s).map(AddrSpec).map_err(|r| serde::de::Error::custom(encode_reason(&r)))
    }
}

/// `user@domain` or `*@domain` (everyone in a domain) for group membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct MemberPattern(pub String);

impl MemberPattern {
    pub fn matches(&self, addr: &str) -> bool {
        match self.0.strip_prefix("*@") {
            Some(dom) => addr.rsplit_once('@').is_some_and(|(_, d)| d.eq_ignore_ascii_case(dom)),
            None => self.0.eq_ignore_ascii_case(addr),
        }
    }
}

impl<'de> Deserialize<'de> for MemberPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Some(dom) = s.trim().strip_prefix("*@") {
            return crate::address::domain_to_ascii(dom).map(|d| MemberPattern(format!("*@{d}"))).ok_or_else(|| {
                serde::de::Error::custom(encode_reason(&Reason::new(
                    "policy.member_invalid",
                    format!("„{}“ ist weder eine Adresse noch ein Muster „*@domain“.", quote(&s)),
                    format!("\"{}\" is neither an address nor a \"*@domain\" pattern.", quote(&s)),
                )))
            });
        }
        normalize_addr_spec(&s).map(MemberPattern).map_err(|r| serde::de::Error::custom(encode_reason(&r)))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeMailDomains {
    /// Patterns that mark De-Mail domains, `*.de-mail.de` by default.
    pub domain_patterns: Vec<DomainPattern>,
    /// Provider-owned De-Mail domains that do not match a pattern.
    pub extra_domains: Vec<DomainPattern>,
    /// Domains that match a pattern but are not De-Mail.
    pub excluded_domains: Vec<DomainPattern>,
}

impl Default for DeMailDomains {
    fn default() -> Self {
        DeMailDomains {
            domain_patterns: vec![DomainPattern::parse("*.de-mail.de").expect("valid built-in pattern")],
            extra_domains: Vec::new(),
            excluded_domains: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Organisation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The organisation's own e-mail domains (exact or `*.domain`).
    pub internal_domains: Vec<DomainPattern>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    pub mixed_addressing: MixedAddressing,
    /// De-Mail recipient but neither options nor a De-Mail mark: allow, confirm or block.
    pub require_marking: Action,
    /// A received De-Mail forwarded or answered to e-mail recipients.
    pub forwarded_demail_to_email: Action,
    /// Largest De-Mail the organisation sends.
    pub max_size: Size,
    /// A client's `Sender:` field (core `submission`).
    pub sender_header: SenderHeader,
    /// A client's `Reply-To:` field (core `submission`).
    pub reply_to: ReplyTo,
}

impl Rules {
    /// The keys of [`crate::submission::client_field`].
    pub fn field_rules(&self) -> FieldRules {
        FieldRules { sender_header: self.sender_header, reply_to: self.reply_to }
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            mixed_addressing: MixedAddressing::Reject,
            require_marking: Action::Allow,
            forwarded_demail_to_email: Action::Confirm,
            max_size: Size(10 * 1024 * 1024),
            sender_header: SenderHeader::Drop,
            reply_to: ReplyTo::KeepInternal,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderRule {
    pub address: AddrSpec,
    /// Allowed options; absent means the default options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<OptionSet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_unit: Option<String>,
    /// `false` withdraws De-Mail from one person although a group allows it.
    #[serde(default = "yes")]
    pub demail: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRule {
    pub name: String,
    pub members: Vec<MemberPattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<OptionSet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_unit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Authorization {
    /// Senders not listed anywhere: allowed (with `default_options`) or denied.
    pub default: Access,
    pub default_options: OptionSet,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_cost_unit: Option<String>,
    pub senders: Vec<SenderRule>,
    pub groups: Vec<GroupRule>,
}

impl Default for Authorization {
    fn default() -> Self {
        Authorization {
            default: Access::Allow,
            default_options: OptionSet::all(),
            default_cost_unit: None,
            senders: Vec::new(),
            groups: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainMap {
    /// De-Mail domain, e.g. `stadt.de-mail.de`.
    pub demail: DomainPattern,
    /// E-mail domain, e.g. `stadt.de`.
    pub email: DomainPattern,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressMap {
    pub demail: AddrSpec,
    pub email: AddrSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Mapping {
    /// Sammelpostfach: inbound De-Mail for addresses without a mapping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_all: Option<AddrSpec>,
    pub domains: Vec<DomainMap>,
    pub overrides: Vec<AddressMap>,
}

/// The complete policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub version: u32,
    pub demail: DeMailDomains,
    pub organisation: Organisation,
    pub rules: Rules,
    pub authorization: Authorization,
    pub mapping: Mapping,
    pub subject: Vocabulary,
    /// Gateway seal keys ([`crate::seal`]); left out of the output when unset.
    #[serde(skip_serializing_if = "SealPolicy::is_unset")]
    pub seal: SealPolicy,
    /// Provider CAs for `X-de-mail-integrity` ([`crate::integrity`]); left out when unset.
    #[serde(skip_serializing_if = "IntegrityPolicy::is_unset")]
    pub integrity: IntegrityPolicy,
}

/// `[integrity]`: whose signatures on `X-de-mail-integrity` the organisation accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct IntegrityPolicy {
    /// Provider CA certificates (or provider signing certificates), PEM or base64 DER;
    /// checked when the policy is loaded.
    pub trusted_providers: Vec<String>,
}

// By hand, with the String keys and string lists other inputs already decode: the derived
// field visitor costs the add-in's wasm module ~1 KB. Same behaviour: unknown keys refused.
impl<'de> Deserialize<'de> for IntegrityPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = IntegrityPolicy;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("struct IntegrityPolicy")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<IntegrityPolicy, A::Error> {
                let mut p = IntegrityPolicy::default();
                while let Some(k) = a.next_key::<String>()? {
                    if k != "trusted_providers" {
                        return Err(serde::de::Error::unknown_field(&k, &["trusted_providers"]));
                    }
                    p.trusted_providers = a.next_value()?;
                }
                Ok(p)
            }
        }
        d.deserialize_map(V)
    }
}

impl IntegrityPolicy {
    pub fn is_unset(&self) -> bool {
        self.trusted_providers.is_empty()
    }

    /// The trusted certificates, parsed (the policy was validated on load).
    pub fn anchors(&self) -> Vec<crate::cert::Cert> {
        self.trusted_providers.iter().filter_map(|t| crate::cert::Cert::from_text(t).ok()).collect()
    }
}

/// `[seal]`: public keys of the organisation's gateway(s) and whether a seal is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SealPolicy {
    /// `"<kid>:<base64 Ed25519 public key>"`; several during a key change.
    pub public_keys: Vec<crate::seal::SealKey>,
    /// An unsealed message's `X-de-mail-*` headers are not to be trusted.
    pub required: bool,
}

impl SealPolicy {
    pub fn is_unset(&self) -> bool {
        self.public_keys.is_empty() && !self.required
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            version: 1,
            demail: DeMailDomains::default(),
            organisation: Organisation::default(),
            rules: Rules::default(),
            authorization: Authorization::default(),
            mapping: Mapping::default(),
            subject: Vocabulary::default(),
            seal: SealPolicy::default(),
            integrity: IntegrityPolicy::default(),
        }
    }
}

/// Normalised addresses are already lower case; only allocate when needed.
fn lower(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(s.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// What a sender may do, and who pays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SenderGrant {
    pub allowed: bool,
    pub options: OptionSet,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_unit: Option<String>,
    /// `sender`, `group:<name>` or `default`.
    pub via: String,
}

/// Where a recipient belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientKind {
    Demail,
    Internal,
    External,
}

impl Policy {
    /// Is this (lower-case ASCII) domain a De-Mail domain?
    pub fn is_demail_domain(&self, ascii_domain: &str) -> bool {
        let d = lower(ascii_domain);
        let hit = crate::address::matches_any(&self.demail.domain_patterns, &d)
            || crate::address::matches_any(&self.demail.extra_domains, &d);
        hit && !crate::address::matches_any(&self.demail.excluded_domains, &d)
    }

    pub fn is_internal_domain(&self, ascii_domain: &str) -> bool {
        crate::address::matches_any(&self.organisation.internal_domains, &lower(ascii_domain))
    }

    /// Classify a normalised address.
    pub fn recipient_kind(&self, address: &str) -> RecipientKind {
        let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        if self.is_demail_domain(domain) {
            RecipientKind::Demail
        } else if self.is_internal_domain(domain) {
            RecipientKind::Internal
        } else {
            RecipientKind::External
        }
    }

    /// Authorisation of an e-mail sender: its own entry wins, else the union of its groups, else the default.
    pub fn grant(&self, sender: &str) -> SenderGrant {
        let a = &self.authorization;
        if let Some(s) = a.senders.iter().find(|s| s.address.0.eq_ignore_ascii_case(sender)) {
            return SenderGrant {
                allowed: s.demail,
                options: s.options.unwrap_or(a.default_options),
                cost_unit: s.cost_unit.clone().or_else(|| self.group_cost_unit(sender)),
                via: "sender".into(),
            };
        }
        let groups: Vec<&GroupRule> = a.groups.iter().filter(|g| g.members.iter().any(|m| m.matches(sender))).collect();
        if !groups.is_empty() {
            let options =
                groups.iter().fold(OptionSet::EMPTY, |acc, g| acc.union(g.options.unwrap_or(a.default_options)));
            return SenderGrant {
                allowed: true,
                options,
                cost_unit: self.group_cost_unit(sender),
                via: format!("group:{}", groups[0].name),
            };
        }
        SenderGrant {
            allowed: a.default == Access::Allow,
            options: if a.default == Access::Allow { a.default_options } else { OptionSet::EMPTY },
            cost_unit: a.default_cost_unit.clone(),
            via: "default".into(),
        }
    }

    fn group_cost_unit(&self, sender: &str) -> Option<String> {
        self.authorization
            .groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m.matches(sender)))
            .find_map(|g| g.cost_unit.clone())
            .or_else(|| self.authorization.default_cost_unit.clone())
    }

    /// Parse and validate a TOML policy.
    #[cfg(feature = "toml")]
    pub fn from_toml(src: &str) -> Result<Policy, PolicyError> {
        let p: Policy = toml::from_str(src).map_err(|e| PolicyError::from_toml(src, &e))?;
        p.validate().map_err(|r| PolicyError::semantic(src, r))?;
        Ok(p)
    }

    /// Parse and validate a JSON policy (e.g. Thunderbird's `storage.managed`).
    pub fn from_json(src: &str) -> Result<Policy, PolicyError> {
        let p: Policy = serde_json::from_str(src).map_err(|e| PolicyError::from_json(&e))?;
        p.validate().map_err(|r| PolicyError::semantic(src, r))?;
        Ok(p)
    }

    /// TOML or JSON, told apart by the first non-blank character.
    pub fn parse(src: &str) -> Result<Policy, PolicyError> {
        if src.trim_start().starts_with('{') {
            return Policy::from_json(src);
        }
        #[cfg(feature = "toml")]
        return Policy::from_toml(src);
        #[cfg(not(feature = "toml"))]
        Err(PolicyError::located(
            Reason::new(
                "policy.toml_unsupported",
                "Diese Ausgabe des De-Mail-Moduls liest Richtlinien nur als JSON.",
                "This build of the De-Mail module reads policies as JSON only.",
            ),
            src,
            None,
            None,
        ))
    }

    /// Cross-field rules that a single value cannot check.
    fn validate(&self) -> Result<(), (Reason, &'static str, String)> {
        if self.version != 1 {
            return Err((
                Reason::new(
                    "policy.version",
                    format!("Richtlinien-Version {} wird nicht unterstützt (erwartet: 1).", self.version),
                    format!("Policy version {} is not supported (expected: 1).", self.version),
                ),
                "version",
                self.version.to_string(),
            ));
        }
        if self.demail.domain_patterns.is_empty() && self.demail.extra_domains.is_empty() {
            return Err((
                Reason::new(
                    "policy.no_demail_domains",
                    "Es ist keine De-Mail-Domain konfiguriert; De-Mail-Empfänger würden nicht erkannt.",
                    "No De-Mail domain is configured; De-Mail recipients would not be recognised.",
                ),
                "demail.domain_patterns",
                String::new(),
            ));
        }
        for d in &self.organisation.internal_domains {
            let s = d.as_string();
            let probe = s.trim_start_matches("*.");
            if self.is_demail_domain(probe) || self.is_demail_domain(&format!("x.{probe}")) && s.starts_with("*.") {
                return Err((
                    Reason::new(
                        "policy.internal_is_demail",
                        format!("Die interne Domain „{s}“ ist zugleich eine De-Mail-Domain."),
                        format!("The internal domain \"{s}\" is also a De-Mail domain."),
                    ),
                    "organisation.internal_domains",
                    s,
                ));
            }
        }
        for m in &self.mapping.domains {
            if !self.is_demail_domain(&m.demail.as_string()) {
                return Err((
                    Reason::new(
                        "policy.mapping_not_demail",
                        format!(
                            "„{}“ in mapping.domains ist keine De-Mail-Domain nach [demail].",
                            m.demail.as_string()
                        ),
                        format!(
                            "\"{}\" in mapping.domains is not a De-Mail domain according to [demail].",
                            m.demail.as_string()
                        ),
                    ),
                    "mapping.domains.demail",
                    m.demail.as_string(),
                ));
            }
        }
        for o in &self.mapping.overrides {
            let dom = o.demail.0.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            if !self.is_demail_domain(dom) {
                return Err((
                    Reason::new(
                        "policy.mapping_not_demail",
                        format!("„{}“ in mapping.overrides ist keine De-Mail-Adresse.", o.demail.0),
                        format!("\"{}\" in mapping.overrides is not a De-Mail address.", o.demail.0),
                    ),
                    "mapping.overrides.demail",
                    o.demail.0.clone(),
                ));
            }
        }
        if let Some(c) = &self.mapping.catch_all {
            let dom = c.0.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            if self.is_demail_domain(dom) {
                return Err((
                    Reason::new(
                        "policy.catch_all_demail",
                        "Das Sammelpostfach muss ein internes E-Mail-Postfach sein, keine De-Mail-Adresse.",
                        "The catch-all mailbox must be an internal e-mail mailbox, not a De-Mail address.",
                    ),
                    "mapping.catch_all",
                    c.0.clone(),
                ));
            }
        }
        if self.rules.max_size.0 == 0 {
            return Err((
                Reason::new(
                    "policy.size_invalid",
                    "rules.max_size darf nicht 0 sein.",
                    "rules.max_size must not be 0.",
                ),
                "rules.max_size",
                "0".into(),
            ));
        }
        self.subject.validate().map_err(|(r, v)| (r, "subject", v))?;
        if self.seal.required && self.seal.public_keys.is_empty() {
            return Err((
                Reason::new(
                    "policy.seal_no_keys",
                    "seal.required ist gesetzt, aber seal.public_keys ist leer; kein Siegel könnte gültig sein.",
                    "seal.required is set but seal.public_keys is empty; no seal could be valid.",
                ),
                "seal.public_keys",
                String::new(),
            ));
        }
        for t in &self.integrity.trusted_providers {
            if let Err(r) = crate::cert::Cert::from_text(t) {
                let r = Reason::new("policy.certificate_invalid", r.message, r.message_en);
                let value = t.trim().lines().find(|l| !l.starts_with("-----")).unwrap_or("").to_string();
                return Err((r, "integrity.trusted_providers", value));
            }
        }
        let mut kids: Vec<&str> = Vec::new();
        for k in &self.seal.public_keys {
            if kids.contains(&k.kid.as_str()) {
                return Err((
                    Reason::new(
                        "policy.seal_duplicate_kid",
                        format!("Die Schlüssel-ID „{}“ steht mehrfach in seal.public_keys.", k.kid),
                        format!("The key id \"{}\" appears more than once in seal.public_keys.", k.kid),
                    ),
                    "seal.public_keys",
                    k.kid.clone(),
                ));
            }
            kids.push(&k.kid);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Errors with position
// ---------------------------------------------------------------------------

/// A policy that cannot be used, with where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyError {
    #[serde(flatten)]
    pub reason: Reason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// Dotted key path, e.g. `rules.mixed_addressing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl PolicyError {
    pub fn with_file(mut self, file: impl Into<String>) -> Self {
        let file = file.into();
        self.reason.message = format!("{file}: {}", self.reason.message);
        self.reason.message_en = format!("{file}: {}", self.reason.message_en);
        self.file = Some(file);
        self
    }

    fn located(reason: Reason, src: &str, offset: Option<usize>, field: Option<String>) -> Self {
        let (line, column) = match offset {
            Some(off) => {
                let off = off.min(src.len());
                let before = &src.as_bytes()[..off];
                let line = before.iter().filter(|b| **b == b'\n').count() + 1;
                let col = off - before.iter().rposition(|b| *b == b'\n').map(|p| p + 1).unwrap_or(0) + 1;
                (Some(line), Some(col))
            }
            None => (None, None),
        };
        let mut reason = reason;
        let loc_de = match (&field, line) {
            (Some(f), Some(l)) => format!(" (Zeile {l}, Feld „{f}“)"),
            (None, Some(l)) => format!(" (Zeile {l})"),
            (Some(f), None) => format!(" (Feld „{f}“)"),
            _ => String::new(),
        };
        let loc_en = match (&field, line) {
            (Some(f), Some(l)) => format!(" (line {l}, field \"{f}\")"),
            (None, Some(l)) => format!(" (line {l})"),
            (Some(f), None) => format!(" (field \"{f}\")"),
            _ => String::new(),
        };
        reason.message.push_str(&loc_de);
        reason.message_en.push_str(&loc_en);
        PolicyError { reason, file: None, line, column, field }
    }

    #[cfg(feature = "toml")]
    fn from_toml(src: &str, e: &toml::de::Error) -> Self {
        let msg = e.message().trim().to_string();
        let reason = decode_reason(&msg).unwrap_or_else(|| generic(&msg));
        let off = e.span().map(|s| s.start);
        let field = off.and_then(|o| key_path_at(src, o));
        Self::located(reason, src, off, field)
    }

    fn from_json(e: &serde_json::Error) -> Self {
        let msg = e.to_string();
        let reason = decode_reason(&msg).unwrap_or_else(|| generic(msg.split(" at line ").next().unwrap_or(&msg)));
        let mut pe = Self::located(reason, "", None, None);
        if e.line() > 0 {
            pe.line = Some(e.line());
            pe.column = Some(e.column());
            pe.reason.message.push_str(&format!(" (Zeile {})", e.line()));
            pe.reason.message_en.push_str(&format!(" (line {})", e.line()));
        }
        pe
    }

    fn semantic(src: &str, (reason, field, value): (Reason, &'static str, String)) -> Self {
        // Point at the first line that names the offending value, if the source is TOML.
        let off = if value.is_empty() {
            None
        } else {
            src.find(&value).or_else(|| src.find(field.rsplit('.').next().unwrap_or(field)))
        };
        let off = off.or_else(|| src.find(field.rsplit('.').next().unwrap_or(field)));
        Self::located(reason, src, off, Some(field.to_string()))
    }
}

fn generic(msg: &str) -> Reason {
    let code = if msg.contains("unknown field") {
        "policy.unknown_field"
    } else if msg.contains("unknown variant") || msg.contains("invalid type") || msg.contains("invalid value") {
        "policy.invalid_value"
    } else if msg.contains("duplicate") {
        "policy.duplicate_key"
    } else {
        "policy.syntax"
    };
    let de = match code {
        "policy.unknown_field" => "Unbekannter Schlüssel in der Richtlinie",
        "policy.invalid_value" => "Ungültiger Wert in der Richtlinie",
        "policy.duplicate_key" => "Doppelter Schlüssel in der Richtlinie",
        _ => "Die Richtlinie ist kein gültiges TOML/JSON",
    };
    let msg = crate::reason::quote_max(msg, 400);
    Reason::new(code, format!("{de}: {msg}"), format!("Invalid policy: {msg}"))
}

#[cfg(feature = "toml")]
/// The dotted key path of the value at `offset` in a TOML source: the nearest table
/// header above plus the key on that line. Good enough for pointing a person at it.
fn key_path_at(src: &str, offset: usize) -> Option<String> {
    let offset = offset.min(src.len());
    let upto = src.get(..offset)?;
    let line_start = upto.rfind('\n').map(|p| p + 1).unwrap_or(0);
    let line_end = src[line_start..].find('\n').map(|p| line_start + p).unwrap_or(src.len());
    let line = &src[line_start..line_end];
    let mut table = String::new();
    for l in src[..line_start].lines().rev() {
        let t = l.trim();
        if t.starts_with('[') {
            table = t.trim_start_matches('[').trim_end_matches(']').trim_end_matches(']').trim().to_string();
            break;
        }
    }
    let t = line.trim();
    if t.starts_with('[') {
        return Some(t.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    }
    let key = t.split_once('=').map(|(k, _)| k.trim().trim_matches('"').to_string());
    match (table.is_empty(), key) {
        (_, None) if table.is_empty() => None,
        (_, None) => Some(table),
        (true, Some(k)) => Some(k),
        (false, Some(k)) => Some(format!("{table}.{k}")),
    }
}

#[cfg(all(test, feature = "toml"))]
mod tests {
    use super::*;

    #[test]
    fn default_policy_validates() {
        let p = Policy::from_toml("").unwrap();
        assert_eq!(p, Policy::default());
        assert!(p.is_demail_domain("stadt.de-mail.de"));
    }

    #[test]
    fn errors_name_line_and_field() {
        let src = "version = 1\n\n[rules]\nmixed_addressing = \"sometimes\"\n";
        let e = Policy::from_toml(src).unwrap_err();
        assert_eq!(e.reason.code, "policy.invalid_value");
        assert_eq!(e.line, Some(4));
        assert_eq!(e.field.as_deref(), Some("rules.mixed_addressing"));

        let src = "[demail]\nextra_domains = [\"ok.de\", \"not a domain\"]\n";
        let e = Policy::from_toml(src).unwrap_err();
        assert_eq!(e.reason.code, "policy.domain_invalid");
        assert_eq!(e.line, Some(2));
        assert_eq!(e.field.as_deref(), Some("demail.extra_domains"));

        let e = Policy::from_toml("[rules]\nmax_sise = 3\n").unwrap_err();
        assert_eq!(e.reason.code, "policy.unknown_field");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn sender_and_reply_to_rules() {
        let p = Policy::from_toml("").unwrap();
        assert_eq!((p.rules.sender_header, p.rules.reply_to), (SenderHeader::Drop, ReplyTo::KeepInternal));
        let p = Policy::from_toml("[rules]\nsender_header = \"rewrite\"\nreply_to = \"drop\"\n").unwrap();
        assert_eq!(p.rules.field_rules(), FieldRules { sender_header: SenderHeader::Rewrite, reply_to: ReplyTo::Drop });
        let p = Policy::from_json(r#"{"rules": {"reply_to": "keep"}}"#).unwrap();
        assert_eq!(p.rules.reply_to, ReplyTo::Keep);
        let e = Policy::from_toml("[rules]\nreply_to = \"keep-all\"\n").unwrap_err();
        assert_eq!((e.reason.code.as_str(), e.field.as_deref()), ("policy.invalid_value", Some("rules.reply_to")));
        let e = Policy::from_toml("[rules]\nsender_header = \"keep\"\n").unwrap_err();
        assert_eq!((e.reason.code.as_str(), e.line), ("policy.invalid_value", Some(2)));
    }

    #[test]
    fn sizes() {
        let p = Policy::from_toml("[rules]\nmax_size = \"20 MiB\"\n").unwrap();
        assert_eq!(p.rules.max_size.0, 20 * 1024 * 1024);
        assert!(Policy::from_toml("[rules]\nmax_size = \"zwanzig\"\n").is_err());
    }
}
