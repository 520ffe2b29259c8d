//! Who may send which De-Mail, decided from what the organisation's directory says about
//! the person the gateway authenticated: the De-Mail right (a directory group, or an
//! approved request), the From addresses (the person's own, plus function mailboxes
//! granted to a group), and the paid options limited to groups.
//!
//! The gateway fetches the facts (LDAP); the decision is here, without I/O.

use crate::address::normalize_addr_spec;
use crate::options::{DeMailOption, OptionSet};
use crate::reason::{quote, Reason};

/// What the directory says about one person.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Person {
    /// The directory entry's distinguished name: who it is, whatever the sign-in.
    pub dn: String,
    /// The name the person signed in with (login or Kerberos principal).
    pub login: String,
    pub display_name: String,
    /// The person's own mail addresses, normalised, primary first.
    pub addresses: Vec<String>,
    /// Every group the person is in, directly or nested (distinguished names).
    pub groups: Vec<String>,
}

/// A function mailbox (e.g. `poststelle@…`) that members of a group may send as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedSender {
    pub address: String,
    pub group: String,
}

/// A paid option that only members of some groups may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionGroups {
    pub option: DeMailOption,
    pub groups: Vec<String>,
}

/// IT's rules: which group holds the De-Mail right, shared senders, limited options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules {
    /// Members (direct or nested) may send De-Mail. `None`: the right comes only from
    /// approved requests or self-service.
    pub demail_group: Option<String>,
    pub shared_senders: Vec<SharedSender>,
    pub limited_options: Vec<OptionGroups>,
}

/// Distinguished names compare without case and without blanks around `,` and `=`.
pub fn dn_eq(a: &str, b: &str) -> bool {
    fn norm(dn: &str) -> String {
        let mut out = String::with_capacity(dn.len());
        for part in dn.split(',') {
            if !out.is_empty() {
                out.push(',');
            }
            match part.split_once('=') {
                Some((k, v)) => {
                    out.push_str(&k.trim().to_lowercase());
                    out.push('=');
                    out.push_str(&v.trim().to_lowercase());
                }
                None => out.push_str(&part.trim().to_lowercase()),
            }
        }
        out
    }
    norm(a) == norm(b)
}

impl Person {
    pub fn in_group(&self, dn: &str) -> bool {
        self.groups.iter().any(|g| dn_eq(g, dn))
    }
}

/// Mail addresses from directory attribute values: plain addresses (`mail`) and
/// Exchange's `proxyAddresses` form (`SMTP:primary@…`, `smtp:alias@…`); other address
/// types (`X500:`, `SIP:` …) are not mail addresses. Normalised, primary first, no repeats.
pub fn addresses_from_directory<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut primary = Vec::new();
    let mut rest = Vec::new();
    for v in values {
        let v = v.trim();
        let (addr, is_primary) = match v.split_once(':') {
            Some(("SMTP", a)) => (a, true),
            Some((kind, a)) if kind.eq_ignore_ascii_case("smtp") => (a, false),
            Some((kind, _)) if !kind.contains('@') => continue,
            _ => (v, false),
        };
        // Mail systems of an organisation treat the local part without case, as we do.
        if let Ok(a) = normalize_addr_spec(addr).map(|a| a.to_lowercase()) {
            if is_primary {
                primary.push(a);
            } else {
                rest.push(a);
            }
        }
    }
    let mut out: Vec<String> = Vec::new();
    for a in primary.into_iter().chain(rest) {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// Does the person hold the De-Mail right? `granted` is an approved request or
/// self-service, recorded by the gateway.
pub fn has_demail_right(person: &Person, rules: &Rules, granted: bool) -> bool {
    granted || rules.demail_group.as_deref().is_some_and(|g| person.in_group(g))
}

/// The From addresses the person may send De-Mail as, in lower case.
pub fn allowed_senders(person: &Person, rules: &Rules) -> Vec<String> {
    let mut out: Vec<String> = person.addresses.iter().map(|a| a.to_lowercase()).collect();
    for s in &rules.shared_senders {
        let a = s.address.to_lowercase();
        if person.in_group(&s.group) && !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// The options the directory lets the person use (before the policy's own limits).
pub fn allowed_options(person: &Person, rules: &Rules) -> OptionSet {
    let mut set = OptionSet::all();
    for l in &rules.limited_options {
        if !l.groups.iter().any(|g| person.in_group(g)) {
            set.remove(l.option);
        }
    }
    set
}

/// May this person send a De-Mail as `from` with `options`? The first reason against it.
pub fn may_send(person: &Person, rules: &Rules, granted: bool, from: &str, options: OptionSet) -> Result<(), Reason> {
    let who = if person.display_name.is_empty() { &person.login } else { &person.display_name };
    if !has_demail_right(person, rules, granted) {
        return Err(Reason::new(
            "identity.no_demail_right",
            format!(
                "{} ist nicht für den De-Mail-Versand freigeschaltet. Beantragen Sie die Freischaltung im De-Mail-Helfer („De-Mail für mich beantragen“) oder bei Ihrer IT.",
                quote(who)
            ),
            format!(
                "{} is not enabled for sending De-Mail. Request it in the De-Mail helper (\"Request De-Mail for me\") or from your IT department.",
                quote(who)
            ),
        )
        .about(&person.login));
    }
    let from = from.trim().to_ascii_lowercase();
    let senders = allowed_senders(person, rules);
    if !senders.contains(&from) {
        let list = senders.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ");
        return Err(Reason::new(
            "identity.sender_not_allowed",
            format!(
                "{} darf nicht als {} senden. Erlaubt: {}. Wählen Sie einen dieser Absender oder wenden Sie sich an Ihre IT.",
                quote(who),
                quote(&from),
                if list.is_empty() { "keine Adresse".into() } else { list.clone() }
            ),
            format!(
                "{} may not send as {}. Allowed: {}. Choose one of these senders or contact your IT department.",
                quote(who),
                quote(&from),
                if list.is_empty() { "no address".into() } else { list }
            ),
        )
        .about(from));
    }
    let denied = options.minus(allowed_options(person, rules));
    if !denied.is_empty() {
        return Err(Reason::new(
            "identity.option_not_allowed",
            format!(
                "{} darf diese kostenpflichtige Option nicht verwenden: {}. Wenden Sie sich an Ihre IT.",
                quote(who),
                crate::options::option_list_de(denied)
            ),
            format!(
                "{} may not use this chargeable option: {}. Contact your IT department.",
                quote(who),
                crate::options::option_list_en(denied)
            ),
        )
        .about(denied.ids().join(",")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMAIL: &str = "cn=demail-nutzer,ou=groups,dc=musterstadt,dc=test";
    const POST: &str = "cn=poststelle,ou=groups,dc=musterstadt,dc=test";
    const RECHT: &str = "cn=rechtsamt,ou=groups,dc=musterstadt,dc=test";

    fn rules() -> Rules {
        Rules {
            demail_group: Some(DEMAIL.into()),
            shared_senders: vec![SharedSender { address: "poststelle@musterstadt.test".into(), group: POST.into() }],
            limited_options: vec![OptionGroups {
                option: DeMailOption::ConfirmationOfRetrieve,
                groups: vec![RECHT.into()],
            }],
        }
    }

    fn peter(groups: &[&str]) -> Person {
        Person {
            dn: "uid=peter,ou=people,dc=musterstadt,dc=test".into(),
            login: "peter".into(),
            display_name: "Peter Meier".into(),
            addresses: vec!["peter.meier@musterstadt.test".into()],
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn own_address_with_the_right() {
        let p = peter(&["CN=Demail-Nutzer, OU=Groups, DC=Musterstadt, DC=Test"]);
        assert!(may_send(&p, &rules(), false, "Peter.Meier@musterstadt.test", OptionSet::EMPTY).is_ok());
    }

    #[test]
    fn refusals_name_the_reason() {
        let code = |p: &Person, granted, from, opts| may_send(p, &rules(), granted, from, opts).unwrap_err().code;
        assert_eq!(
            code(&peter(&[]), false, "peter.meier@musterstadt.test", OptionSet::EMPTY),
            "identity.no_demail_right"
        );
        // An approved request stands in for the group.
        assert!(may_send(&peter(&[]), &rules(), true, "peter.meier@musterstadt.test", OptionSet::EMPTY).is_ok());
        let p = peter(&[DEMAIL]);
        assert_eq!(code(&p, false, "anna@musterstadt.test", OptionSet::EMPTY), "identity.sender_not_allowed");
        assert_eq!(code(&p, false, "poststelle@musterstadt.test", OptionSet::EMPTY), "identity.sender_not_allowed");
        let retrieve: OptionSet = [DeMailOption::ConfirmationOfRetrieve].into_iter().collect();
        assert_eq!(code(&p, false, "peter.meier@musterstadt.test", retrieve), "identity.option_not_allowed");
        let e = may_send(&p, &rules(), false, "anna@musterstadt.test", OptionSet::EMPTY).unwrap_err();
        assert!(
            e.message.contains("Peter Meier") && e.message.contains("peter.meier@musterstadt.test"),
            "{}",
            e.message
        );
    }

    #[test]
    fn function_mailbox_and_limited_option_through_groups() {
        let p = peter(&[DEMAIL, POST, RECHT]);
        assert!(may_send(&p, &rules(), false, "poststelle@musterstadt.test", OptionSet::EMPTY).is_ok());
        let retrieve: OptionSet = [DeMailOption::ConfirmationOfRetrieve].into_iter().collect();
        assert!(may_send(&p, &rules(), false, "peter.meier@musterstadt.test", retrieve).is_ok());
    }

    #[test]
    fn proxy_addresses_primary_first_other_types_ignored() {
        let a = addresses_from_directory([
            "smtp:p.meier@musterstadt.test",
            "X500:/o=ExchangeLabs/cn=Recipients",
            "SIP:peter@musterstadt.test",
            "SMTP:Peter.Meier@Musterstadt.test",
            "peter.meier@musterstadt.test",
            "kein-adresse",
        ]);
        assert_eq!(a, ["peter.meier@musterstadt.test", "p.meier@musterstadt.test"]);
    }

    #[test]
    fn dn_comparison() {
        assert!(dn_eq("CN=A, OU=B,DC=c", "cn=a,ou=b, dc=C"));
        assert!(!dn_eq("cn=a,ou=b", "cn=a,ou=c"));
    }
}
