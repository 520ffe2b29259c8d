//! The send check: e-mail, De-Mail, blocked, or confirm, with reasons.
//!
//! The add-in runs it before Send, the helper before accepting, the gateway before
//! relaying; all three get the same answer because all three call this.

use crate::address::{parse_address_list, Mailbox};
use crate::options::{apply_rules, option_list_de, option_list_en, validate_private_id, OptionSet};
use crate::policy::{Action, MixedAddressing, Policy, RecipientKind};
use crate::reason::{quote, Reason, Severity};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckInput {
    /// The sender's e-mail address (may carry a display name).
    pub from: String,
    /// Address lists; each entry may hold one address or a whole list.
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    /// Chosen shipping options.
    pub options: OptionSet,
    /// The user marked the message as De-Mail explicitly (compose toggle, `[De-Mail]` tag).
    pub marked: bool,
    /// Message size in bytes, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The message replies to or forwards a received De-Mail.
    pub forwarded_demail: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Email,
    Demail,
    Blocked,
    Confirm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    To,
    Cc,
    Bcc,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipient {
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub field: Field,
    pub kind: RecipientKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub verdict: Verdict,
    pub reasons: Vec<Reason>,
    pub demail_recipients: Vec<String>,
    /// Internal and external e-mail recipients.
    pub email_recipients: Vec<String>,
    pub internal_recipients: Vec<String>,
    pub external_recipients: Vec<String>,
    pub recipients: Vec<Recipient>,
    /// Options after the TR rules (Abholbestätigung adds Persönlich).
    pub options: OptionSet,
    /// The De-Mail address the sender sends as, when the mapping knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_demail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_unit: Option<String>,
}

fn size_de(n: u64) -> String {
    format!("{:.1} MB", n as f64 / 1_048_576.0).replace('.', ",")
}
fn size_en(n: u64) -> String {
    format!("{:.1} MB", n as f64 / 1_048_576.0)
}

fn list(v: &[String]) -> String {
    const SHOW: usize = 5;
    let mut s = v.iter().take(SHOW).map(|a| quote(a)).collect::<Vec<_>>().join(", ");
    if v.len() > SHOW {
        s.push_str(&format!(" … (+{})", v.len() - SHOW));
    }
    s
}

fn block(code: &str, de: String, en: String) -> Reason {
    Reason::new(code, de, en).with_severity(Severity::Block)
}
fn confirm(code: &str, de: String, en: String) -> Reason {
    Reason::new(code, de, en).with_severity(Severity::Confirm)
}
fn info(code: &str, de: String, en: String) -> Reason {
    Reason::new(code, de, en).with_severity(Severity::Info)
}

fn by_action(action: Action, code: &str, de: String, en: String) -> Option<Reason> {
    match action {
        Action::Allow => None,
        Action::Confirm => Some(confirm(code, de, en)),
        Action::Block => Some(block(code, de, en)),
    }
}

/// Decide how a message may go out.
///
/// The steps, in order: read the sender, classify the recipients, then the rules for
/// the De-Mail intent, mixed addressing, marking and size, the sender's rights, the
/// options and the reference, the forward guard, and last the verdict.
pub fn check(input: &CheckInput, policy: &Policy) -> CheckResult {
    let mut reasons: Vec<Reason> = Vec::new();
    let sender = read_sender(&input.from, &mut reasons);
    let recipients = classify_recipients(input, policy, &mut reasons);
    let groups = Groups::of(&recipients);

    let sender_addr = sender.as_ref().map(|m| m.address.clone()).unwrap_or_default();
    let sender_demail = sender_demail_address(sender.as_ref(), &sender_addr, policy);
    let grant = policy.grant(&sender_addr);
    let mut options = input.options;
    let wants_demail = !input.options.is_empty() || input.marked;

    if groups.demail.is_empty() && wants_demail {
        reasons.push(intent_without_demail_recipient(input.options));
    }
    if !groups.demail.is_empty() {
        demail_address_rules(&groups.demail, &mut reasons);
        reasons.extend(mixed_addressing(&groups, policy.rules.mixed_addressing));
        if !wants_demail {
            reasons.extend(not_marked(&groups.demail, policy.rules.require_marking));
        }
        reasons.extend(size_limit(input.size, policy.rules.max_size.0));
        if sender.is_some() {
            sender_rights(input.options, &sender_addr, sender_demail.as_deref(), &grant, policy, &mut reasons);
        }
        let (normalized, problems) = apply_rules(options, OptionSet::EMPTY, sender_demail.as_deref());
        options = normalized;
        reasons.extend(problems.into_iter().map(|r| r.with_severity(Severity::Block)));
        reasons.extend(private_id_problem(input.private_id.as_deref()));
    }
    if input.forwarded_demail && !groups.email.is_empty() {
        reasons.extend(forward_guard(&groups.email, policy.rules.forwarded_demail_to_email));
    }

    let verdict = verdict(&reasons, !groups.demail.is_empty());
    if verdict == Verdict::Demail {
        reasons.insert(0, summary(options, &groups.demail));
    }
    let Groups { demail, email, internal, external } = groups;
    CheckResult {
        verdict,
        reasons,
        demail_recipients: demail,
        email_recipients: email,
        internal_recipients: internal,
        external_recipients: external,
        recipients,
        options,
        sender_demail,
        cost_unit: if grant.allowed { grant.cost_unit } else { None },
    }
}

/// The sender must be exactly one valid address.
fn read_sender(from: &str, reasons: &mut Vec<Reason>) -> Option<Mailbox> {
    match parse_address_list(from) {
        Ok(mut v) if v.len() == 1 => v.pop(),
        Ok(_) => {
            reasons.push(block(
                "sender.invalid",
                format!("Der Absender „{}“ ist keine einzelne gültige Adresse.", quote(from)),
                format!("The sender \"{}\" is not a single valid address.", quote(from)),
            ));
            None
        }
        Err(r) => {
            reasons.push(block("sender.invalid", r.message, r.message_en).about(from));
            None
        }
    }
}

/// Every recipient once (the first field wins), with its kind. Unparseable lists block.
fn classify_recipients(input: &CheckInput, policy: &Policy, reasons: &mut Vec<Reason>) -> Vec<Recipient> {
    let mut parsed: Vec<(Field, Mailbox)> = Vec::with_capacity(input.to.len() + input.cc.len() + input.bcc.len());
    for (field, entries) in [(Field::To, &input.to), (Field::Cc, &input.cc), (Field::Bcc, &input.bcc)] {
        for entry in entries {
            match parse_address_list(entry) {
                Ok(list) => parsed.extend(list.into_iter().map(|m| (field, m))),
                Err(mut r) => {
                    r.severity = Some(Severity::Block);
                    reasons.push(r);
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::with_capacity(parsed.len());
    let keep: Vec<bool> = parsed
        .iter()
        .map(|(_, m)| {
            // Borrow the key when it is already lower case (the usual case): no allocation.
            let key = if m.address.bytes().any(|b| b.is_ascii_uppercase()) {
                std::borrow::Cow::Owned(m.address.to_ascii_lowercase())
            } else {
                std::borrow::Cow::Borrowed(m.address.as_str())
            };
            seen.insert(key)
        })
        .collect();
    drop(seen);
    let mut recipients: Vec<Recipient> = Vec::with_capacity(parsed.len());
    for ((field, m), keep) in parsed.into_iter().zip(keep) {
        if !keep {
            continue;
        }
        let kind = policy.recipient_kind(&m.address);
        // De-Mail addresses are lower case by definition (ACM-FU §2.1).
        let address = if kind == RecipientKind::Demail && m.address.chars().any(char::is_uppercase) {
            m.address.to_lowercase()
        } else {
            m.address
        };
        recipients.push(Recipient { address, name: m.name, field, kind });
    }
    recipients
}

/// The recipients' addresses by kind; `email` holds internal and external alike.
struct Groups {
    demail: Vec<String>,
    email: Vec<String>,
    internal: Vec<String>,
    external: Vec<String>,
}

impl Groups {
    fn of(recipients: &[Recipient]) -> Groups {
        let of = |k: RecipientKind| -> Vec<String> {
            recipients.iter().filter(|r| r.kind == k).map(|r| r.address.clone()).collect()
        };
        Groups {
            demail: of(RecipientKind::Demail),
            email: recipients.iter().filter(|r| r.kind != RecipientKind::Demail).map(|r| r.address.clone()).collect(),
            internal: of(RecipientKind::Internal),
            external: of(RecipientKind::External),
        }
    }
}

/// The sender's own De-Mail address, or the one the mapping gives its e-mail address.
fn sender_demail_address(sender: Option<&Mailbox>, sender_addr: &str, policy: &Policy) -> Option<String> {
    if policy.is_demail_domain(sender.map(|m| m.domain()).unwrap_or("")) {
        Some(sender_addr.to_lowercase())
    } else {
        policy.email_to_demail(sender_addr).map(|m| m.address)
    }
}

/// Options or a De-Mail mark, but nobody to send a De-Mail to.
fn intent_without_demail_recipient(chosen: OptionSet) -> Reason {
    if !chosen.is_empty() {
        block(
            "options.no_demail_recipient",
            format!(
                "Sie haben De-Mail-Optionen gewählt ({}), aber kein Empfänger hat eine De-Mail-Adresse. Entfernen Sie die Optionen oder tragen Sie eine De-Mail-Adresse ein.",
                option_list_de(chosen)
            ),
            format!(
                "You chose De-Mail options ({}), but no recipient has a De-Mail address. Remove the options or add a De-Mail address.",
                option_list_en(chosen)
            ),
        )
    } else {
        block(
            "demail.no_demail_recipient",
            "Die Nachricht ist als De-Mail gekennzeichnet, aber kein Empfänger hat eine De-Mail-Adresse.".into(),
            "The message is marked as De-Mail, but no recipient has a De-Mail address.".into(),
        )
    }
}

/// TR address rules (ACM-FU §2.1); the case rule cannot fail here, addresses are lowered.
fn demail_address_rules(demail: &[String], reasons: &mut Vec<Reason>) {
    for a in demail {
        reasons
            .extend(crate::address::demail_address_problems(a).into_iter().map(|r| r.with_severity(Severity::Block)));
    }
}

/// De-Mail and e-mail recipients in one message, as the policy says.
fn mixed_addressing(g: &Groups, rule: MixedAddressing) -> Option<Reason> {
    if g.email.is_empty() {
        return None;
    }
    let (demail, email, internal, external) = (&g.demail, &g.email, &g.internal, &g.external);
    match rule {
        MixedAddressing::Reject => Some(block(
            "mixed.rejected",
            format!(
                "Diese Nachricht hat De-Mail-Empfänger ({}) und E-Mail-Empfänger ({}) zugleich. Eine De-Mail darf nicht zusammen mit einer normalen E-Mail verschickt werden. Entfernen Sie entweder die E-Mail-Empfänger oder die De-Mail-Empfänger und senden Sie getrennt.",
                list(demail),
                list(email)
            ),
            format!(
                "This message has De-Mail recipients ({}) and e-mail recipients ({}) at once. A De-Mail must not travel together with an ordinary e-mail. Remove either the e-mail recipients or the De-Mail recipients and send separately.",
                list(demail),
                list(email)
            ),
        )),
        MixedAddressing::AllowInternal if !external.is_empty() => Some(block(
            "mixed.external",
            format!(
                "De-Mail-Empfänger dürfen nur zusammen mit internen E-Mail-Empfängern adressiert werden. Diese Empfänger sind extern: {}. Entfernen Sie sie oder senden Sie getrennt.",
                list(external)
            ),
            format!(
                "De-Mail recipients may only be combined with internal e-mail recipients. These recipients are external: {}. Remove them or send separately.",
                list(external)
            ),
        )),
        MixedAddressing::AllowInternal => Some(info(
            "mixed.internal_allowed",
            format!("Die internen Empfänger ({}) erhalten eine Kopie als normale E-Mail.", list(internal)),
            format!("The internal recipients ({}) receive a copy as ordinary e-mail.", list(internal)),
        )),
        MixedAddressing::Warn => Some(confirm(
            "mixed.confirm",
            format!(
                "Diese Nachricht hat De-Mail- und E-Mail-Empfänger. Die E-Mail-Empfänger ({}) erhalten sie als normale, ungesicherte E-Mail. Wirklich so senden?",
                list(email)
            ),
            format!(
                "This message has De-Mail and e-mail recipients. The e-mail recipients ({}) receive it as ordinary, unsecured e-mail. Send anyway?",
                list(email)
            ),
        )),
        MixedAddressing::Allow => Some(info(
            "mixed.allowed",
            format!("Die E-Mail-Empfänger ({}) erhalten die Nachricht als normale E-Mail.", list(email)),
            format!("The e-mail recipients ({}) receive the message as ordinary e-mail.", list(email)),
        )),
    }
}

/// A De-Mail recipient, but the message was neither marked nor given options.
fn not_marked(demail: &[String], rule: Action) -> Option<Reason> {
    by_action(
        rule,
        "demail.not_marked",
        format!(
            "{} ist eine De-Mail-Adresse, aber die Nachricht ist nicht als De-Mail gekennzeichnet. Bitte bestätigen Sie, dass sie als De-Mail verschickt werden soll.",
            list(demail)
        ),
        format!(
            "{} is a De-Mail address, but the message is not marked as De-Mail. Please confirm that it should be sent as De-Mail.",
            list(demail)
        ),
    )
}

fn size_limit(size: Option<u64>, max: u64) -> Option<Reason> {
    let size = size.filter(|s| *s > max)?;
    Some(block(
        "size.exceeded",
        format!(
            "Die Nachricht ist {} groß; eine De-Mail darf höchstens {} groß sein. Verkleinern oder teilen Sie die Anhänge.",
            size_de(size),
            size_de(max)
        ),
        format!(
            "The message is {} large; a De-Mail may be at most {}. Reduce or split the attachments.",
            size_en(size),
            size_en(max)
        ),
    ))
}

/// May this sender send De-Mail, with these options, and from a De-Mail address?
fn sender_rights(
    chosen: OptionSet,
    sender_addr: &str,
    sender_demail: Option<&str>,
    grant: &crate::policy::SenderGrant,
    policy: &Policy,
    reasons: &mut Vec<Reason>,
) {
    if !grant.allowed {
        reasons.push(block(
            "sender.not_authorized",
            format!(
                "Der Absender {} ist nicht für den De-Mail-Versand freigeschaltet. Wenden Sie sich an Ihre IT oder die Poststelle.",
                quote(sender_addr)
            ),
            format!(
                "The sender {} is not authorised to send De-Mail. Contact your IT department or the mail room.",
                quote(sender_addr)
            ),
        ));
    } else {
        let denied = chosen.minus(grant.options);
        if !denied.is_empty() {
            reasons.push(
                block(
                    "sender.option_not_authorized",
                    format!(
                        "Sie dürfen diese kostenpflichtige Option nicht verwenden: {}. Entfernen Sie sie oder wenden Sie sich an Ihre IT.",
                        option_list_de(denied)
                    ),
                    format!(
                        "You are not authorised to use this chargeable option: {}. Remove it or contact your IT department.",
                        option_list_en(denied)
                    ),
                )
                .about(denied.ids().join(",")),
            );
        }
    }
    let has_mapping = !policy.mapping.domains.is_empty() || !policy.mapping.overrides.is_empty();
    if has_mapping && sender_demail.is_none() {
        reasons.push(block(
            "sender.no_demail_address",
            format!("Für den Absender {} ist keine De-Mail-Adresse eingerichtet.", quote(sender_addr)),
            format!("No De-Mail address is set up for the sender {}.", quote(sender_addr)),
        ));
    }
}

/// A blank reference means "none"; the helper or gateway generates one.
fn private_id_problem(private_id: Option<&str>) -> Option<Reason> {
    let id = private_id.filter(|s| !s.trim().is_empty())?;
    validate_private_id(id).err().map(|r| r.with_severity(Severity::Block))
}

/// A received De-Mail answered or forwarded to e-mail recipients.
fn forward_guard(email: &[String], rule: Action) -> Option<Reason> {
    by_action(
        rule,
        "forward.demail_to_email",
        format!(
            "Sie leiten eine empfangene De-Mail an E-Mail-Empfänger weiter ({}). Deren Inhalt verlässt damit den gesicherten De-Mail-Weg.",
            list(email)
        ),
        format!(
            "You are forwarding a received De-Mail to e-mail recipients ({}). Its content leaves the secured De-Mail channel.",
            list(email)
        ),
    )
}

/// Block beats confirm beats De-Mail beats e-mail.
fn verdict(reasons: &[Reason], has_demail: bool) -> Verdict {
    if reasons.iter().any(|r| r.severity == Some(Severity::Block)) {
        Verdict::Blocked
    } else if reasons.iter().any(|r| r.severity == Some(Severity::Confirm)) {
        Verdict::Confirm
    } else if has_demail {
        Verdict::Demail
    } else {
        Verdict::Email
    }
}

/// "Diese Nachricht geht als De-Mail … an …": the first line the caseworker reads.
fn summary(options: OptionSet, demail: &[String]) -> Reason {
    let opts_de = if options.is_empty() { String::new() } else { format!(" mit {}", option_list_de(options)) };
    let opts_en = if options.is_empty() { String::new() } else { format!(" with {}", option_list_en(options)) };
    info(
        "demail.summary",
        format!("Diese Nachricht geht als De-Mail{opts_de} an {}.", list(demail)),
        format!("This message goes as De-Mail{opts_en} to {}.", list(demail)),
    )
}

/// One option the user cannot change, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OptionState {
    pub option: crate::options::DeMailOption,
    pub reason: Reason,
}

/// What the compose popup may offer a sender: which options are allowed, which are
/// forced on by others, and which are unavailable, each with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OptionStates {
    /// The chosen options after the TR rules.
    pub options: OptionSet,
    /// Options this sender may choose.
    pub allowed: OptionSet,
    /// Ticked and not changeable (Persönlich while Abholbestätigung is chosen).
    pub locked: Vec<OptionState>,
    /// Not available to this sender.
    pub disabled: Vec<OptionState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_demail: Option<String>,
}

/// Option states for the compose popup, from the same rules the send check applies.
pub fn option_states(from: &str, chosen: OptionSet, policy: &Policy) -> OptionStates {
    use crate::options::DeMailOption;
    let sender = parse_address_list(from).ok().and_then(|mut v| if v.len() == 1 { v.pop() } else { None });
    let addr = sender.as_ref().map(|m| m.address.clone()).unwrap_or_default();
    let sender_demail = if sender.as_ref().is_some_and(|m| policy.is_demail_domain(m.domain())) {
        Some(addr.to_lowercase())
    } else {
        policy.email_to_demail(&addr).map(|m| m.address)
    };
    let grant = policy.grant(&addr);
    let mut allowed = if grant.allowed { grant.options } else { OptionSet::EMPTY };
    let mut disabled = Vec::new();
    for o in DeMailOption::ALL {
        let reason = if !grant.allowed {
            Some(Reason::new(
                "sender.not_authorized",
                format!("Der Absender {} ist nicht für den De-Mail-Versand freigeschaltet.", quote(&addr)),
                format!("The sender {} is not authorised to send De-Mail.", quote(&addr)),
            ))
        } else if !grant.options.contains(o) {
            Some(Reason::new(
                "sender.option_not_authorized",
                format!("„{}“ ist für Sie nicht freigeschaltet. Wenden Sie sich an Ihre IT.", o.label_de()),
                format!("\"{}\" is not enabled for you. Contact your IT department.", o.label_en()),
            ))
        } else if o == DeMailOption::Authoritative && sender_demail.as_deref().is_some_and(crate::options::is_pseudonym)
        {
            allowed.remove(o);
            Some(Reason::new(
                "options.authoritative_pseudonym",
                "„Absenderbestätigt“ ist für Pseudonym-Adressen (pn_…) nicht erlaubt.",
                "\"Sender confirmed\" is not allowed for pseudonym addresses (pn_…).",
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            disabled.push(OptionState { option: o, reason });
        }
    }
    let (options, _) = apply_rules(chosen, OptionSet::EMPTY, sender_demail.as_deref());
    let mut locked = Vec::new();
    if options.contains(DeMailOption::ConfirmationOfRetrieve) {
        locked.push(OptionState {
            option: DeMailOption::Private,
            reason: Reason::new(
                "options.private_implied",
                "Eine Abholbestätigung gibt es nur für persönliche De-Mails; „Persönlich“ ist daher gesetzt.",
                "A confirmation of retrieval exists only for personal De-Mails, so \"Personal\" is set.",
            ),
        });
    }
    OptionStates { options, allowed, locked, disabled, sender_demail }
}

/// Cheap pre-selection from what a message list shows (author, subject): could this
/// be a De-Mail, a receipt or a notification? Only candidates need the full message.
pub fn is_candidate(author: &str, policy: &Policy) -> bool {
    parse_address_list(author)
        .ok()
        .and_then(|v| v.into_iter().next())
        .is_some_and(|m| policy.is_demail_domain(m.domain()))
}
