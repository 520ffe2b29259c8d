//! Address mapping between the organisation's e-mail and De-Mail addresses.
//!
//! Per-address overrides (function mailboxes) win over domain rules; inbound
//! addresses without any mapping go to the catch-all mailbox (Sammelpostfach).

use crate::policy::Policy;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MappedVia {
    Override,
    Domain,
    CatchAll,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mapped {
    pub address: String,
    pub via: MappedVia,
}

fn split(addr: &str) -> (&str, &str) {
    addr.rsplit_once('@').unwrap_or((addr, ""))
}

impl Policy {
    /// Outbound: the De-Mail address a sender's e-mail address sends as.
    /// De-Mail addresses are lower case, so the local part is lowered.
    pub fn email_to_demail(&self, email: &str) -> Option<Mapped> {
        if let Some(o) = self.mapping.overrides.iter().find(|o| o.email.0.eq_ignore_ascii_case(email)) {
            return Some(Mapped { address: o.demail.0.clone(), via: MappedVia::Override });
        }
        let (local, domain) = split(email);
        self.mapping.domains.iter().find(|m| m.email.as_string().eq_ignore_ascii_case(domain)).map(|m| Mapped {
            address: format!("{}@{}", local.to_lowercase(), m.demail.as_string()),
            via: MappedVia::Domain,
        })
    }

    /// Inbound: the internal mailbox for a De-Mail recipient; the catch-all when
    /// nothing maps. `None` only when no catch-all is configured either.
    pub fn demail_to_email(&self, demail: &str) -> Option<Mapped> {
        if let Some(o) = self.mapping.overrides.iter().find(|o| o.demail.0.eq_ignore_ascii_case(demail)) {
            return Some(Mapped { address: o.email.0.clone(), via: MappedVia::Override });
        }
        let (local, domain) = split(demail);
        if let Some(m) = self.mapping.domains.iter().find(|m| m.demail.as_string().eq_ignore_ascii_case(domain)) {
            return Some(Mapped { address: format!("{local}@{}", m.email.as_string()), via: MappedVia::Domain });
        }
        self.mapping.catch_all.as_ref().map(|c| Mapped { address: c.0.clone(), via: MappedVia::CatchAll })
    }
}

#[cfg(all(test, feature = "toml"))]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::from_toml(
            r#"
[mapping]
catch_all = "sammelpostfach@stadt.de"
domains = [{ demail = "stadt.de-mail.de", email = "stadt.de" }]
overrides = [{ demail = "poststelle@stadt.de-mail.de", email = "buergerbuero@stadt.de" }]
"#,
        )
        .unwrap()
    }

    #[test]
    fn both_directions() {
        let p = policy();
        assert_eq!(p.email_to_demail("Peter@stadt.de").unwrap().address, "peter@stadt.de-mail.de");
        assert_eq!(p.demail_to_email("peter@stadt.de-mail.de").unwrap().address, "peter@stadt.de");
        let o = p.email_to_demail("buergerbuero@stadt.de").unwrap();
        assert_eq!((o.address.as_str(), o.via), ("poststelle@stadt.de-mail.de", MappedVia::Override));
        let c = p.demail_to_email("x@andere.de-mail.de").unwrap();
        assert_eq!((c.address.as_str(), c.via), ("sammelpostfach@stadt.de", MappedVia::CatchAll));
        assert!(p.email_to_demail("x@extern.de").is_none());
    }
}
