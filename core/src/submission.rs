//! What a submitted message may carry on its way out (add-in → helper → gateway), and
//! the Message-ID every De-Mail gets. Helper and gateway both rewrite a client's header
//! block with these rules, so a header one of them drops never survives the other.
//!
//! Three kinds of rule live here:
//! - fields that never pass ([`dropped_from_submission`]);
//! - `Sender:` and `Reply-To:`, which the policy decides ([`client_field`], keys
//!   `rules.sender_header` and `rules.reply_to`): a client must not name someone else as
//!   the sender, nor send a De-Mail whose replies leave the organisation;
//! - `confirm` verdicts that reach a server, which cannot ask the person:
//!   [`CONFIRMED`] carries what the person confirmed, [`unconfirmed`] says how to confirm.

use crate::address::{parse_address_list, Mailbox};
use crate::headers::{is_demail_header, GATEWAY_SEAL};
use crate::reason::{quote, Reason};
use crate::subject::Vocabulary;
use serde::{Deserialize, Serialize};

/// The field by which a client (helper, add-in) states which `confirm` reasons of the
/// send check the person confirmed: `X-Demail-Confirmed: mixed.confirm, demail.not_marked`.
/// It is for the gateway only and never passes on.
pub const CONFIRMED: &str = "X-Demail-Confirmed";

/// Is this header field of a client's submission left out when the message is passed on?
///
/// - every `X-de-mail-*`: the options and the private-id are written anew from the
///   checked options; the rest only a provider sets, so a client's are forgeries;
/// - the gateway seal: only the gateway seals, and only inbound mail;
/// - [`CONFIRMED`]: a statement to the gateway, not part of the De-Mail;
/// - `Bcc`: blind recipients travel in the envelope only;
/// - `Subject`, when the subject tags were taken out (`subject_rewritten`).
///
/// The gateway also replaces `From` with the mapped De-Mail sender; that is a mapping,
/// not a client field it refuses, so it is not part of this rule. `Sender` and
/// `Reply-To` depend on the policy: [`client_field`].
pub fn dropped_from_submission(name: &str, subject_rewritten: bool) -> bool {
    let n = name.trim();
    is_demail_header(n)
        || n.eq_ignore_ascii_case(GATEWAY_SEAL)
        || n.eq_ignore_ascii_case(CONFIRMED)
        || n.eq_ignore_ascii_case("bcc")
        || (subject_rewritten && n.eq_ignore_ascii_case("subject"))
}

/// `rules.sender_header`: what becomes of a client's `Sender:` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SenderHeader {
    /// Removed: the (mapped) `From` alone says who sends.
    #[default]
    Drop,
    /// Kept when it names one mailbox of the organisation that has a De-Mail address, and
    /// written as that De-Mail address (as `From` is); anything else is refused. The
    /// gateway also requires the account to be bound to it, as for `From`. A `Sender`
    /// equal to `From` says nothing and is removed.
    Rewrite,
}

/// `rules.reply_to`: what becomes of a client's `Reply-To:` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplyTo {
    /// Kept when every address reaches the organisation by De-Mail, written as De-Mail
    /// addresses (an internal e-mail address as its mapped one); an address outside the
    /// organisation, or one without a De-Mail address, refuses the message.
    #[default]
    KeepInternal,
    /// Removed: replies go to the sender's De-Mail address.
    Drop,
    /// Passed unchanged (replies may leave the organisation).
    Keep,
}

/// Where an address named in `Sender:` or `Reply-To:` leads. The caller answers this
/// from the policy's domains and mapping (this module sits above them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// The organisation's, reachable by De-Mail at this (lower-case) De-Mail address:
    /// an own De-Mail address, or an internal e-mail address with a mapping.
    Own(String),
    /// The organisation's e-mail address without a De-Mail address.
    NoDemail,
    /// Outside the organisation.
    Outside,
}

/// One mailbox of a rewritten field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    pub name: Option<String>,
    /// The address the client wrote (for the gateway's account binding).
    pub named: String,
    /// The De-Mail address written instead.
    pub demail: String,
}

/// What becomes of one client header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Passed byte for byte.
    Keep,
    Drop,
    /// Written anew with these mailboxes.
    Rewrite(Vec<Rewritten>),
    /// The whole message is refused.
    Refuse(Reason),
}

/// The policy's two keys for [`client_field`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FieldRules {
    pub sender_header: SenderHeader,
    pub reply_to: ReplyTo,
}

/// The fate of one client header field: [`dropped_from_submission`], then the policy's
/// rules for `Sender` and `Reply-To`. `value` is the field's unfolded value, `from` the
/// sender's address as the header `From` names it, `reach` the caller's answer to where
/// an address leads.
pub fn client_field(
    name: &str,
    value: &str,
    subject_rewritten: bool,
    rules: FieldRules,
    from: &str,
    reach: &dyn Fn(&str) -> Reach,
) -> Fate {
    if dropped_from_submission(name, subject_rewritten) {
        return Fate::Drop;
    }
    let n = name.trim();
    if n.eq_ignore_ascii_case("sender") {
        sender_field(value, rules.sender_header, from, reach)
    } else if n.eq_ignore_ascii_case("reply-to") {
        reply_to_field(value, rules.reply_to, reach)
    } else {
        Fate::Keep
    }
}

fn sender_field(value: &str, rule: SenderHeader, from: &str, reach: &dyn Fn(&str) -> Reach) -> Fate {
    if rule == SenderHeader::Drop {
        return Fate::Drop;
    }
    let list = match parse_address_list(value) {
        Ok(l) => l,
        Err(r) => return Fate::Refuse(sender_invalid(value).about(r.code)),
    };
    let m = match list.as_slice() {
        [] => return Fate::Drop,
        [m] => m,
        _ => return Fate::Refuse(sender_invalid(value)),
    };
    if m.address.eq_ignore_ascii_case(from) {
        return Fate::Drop;
    }
    match reach(&m.address) {
        Reach::Own(demail) => Fate::Rewrite(vec![rewritten(m, demail)]),
        Reach::NoDemail => Fate::Refuse(
            Reason::new(
                "sender_field.no_demail_address",
                format!(
                    "Die Kopfzeile „Sender“ nennt {}; dafür ist keine De-Mail-Adresse eingerichtet. Entfernen Sie „Sender“ oder wenden Sie sich an Ihre IT.",
                    quote(&m.address)
                ),
                format!(
                    "The \"Sender\" field names {}, which has no De-Mail address. Remove \"Sender\" or contact your IT department.",
                    quote(&m.address)
                ),
            )
            .about(&m.address),
        ),
        Reach::Outside => Fate::Refuse(
            Reason::new(
                "sender_field.outside",
                format!(
                    "Die Kopfzeile „Sender“ nennt {} außerhalb der Organisation. Als Sender einer De-Mail darf nur ein Postfach der Organisation stehen; entfernen Sie „Sender“.",
                    quote(&m.address)
                ),
                format!(
                    "The \"Sender\" field names {} outside the organisation. Only a mailbox of the organisation may be the sender of a De-Mail; remove \"Sender\".",
                    quote(&m.address)
                ),
            )
            .about(&m.address),
        ),
    }
}

fn sender_invalid(value: &str) -> Reason {
    Reason::new(
        "sender_field.invalid",
        format!("Die Kopfzeile „Sender“ („{}“) nennt nicht genau eine gültige Adresse.", quote(value)),
        format!("The \"Sender\" field (\"{}\") does not name exactly one valid address.", quote(value)),
    )
}

fn reply_to_field(value: &str, rule: ReplyTo, reach: &dyn Fn(&str) -> Reach) -> Fate {
    match rule {
        ReplyTo::Drop => return Fate::Drop,
        ReplyTo::Keep => return Fate::Keep,
        ReplyTo::KeepInternal => {}
    }
    let list = match parse_address_list(value) {
        Ok(l) => l,
        Err(r) => {
            return Fate::Refuse(
                Reason::new(
                    "reply_to.invalid",
                    format!("Die Antwortadresse (Reply-To) „{}“ ist keine gültige Adressliste.", quote(value)),
                    format!("The reply address (Reply-To) \"{}\" is not a valid address list.", quote(value)),
                )
                .about(r.code),
            )
        }
    };
    if list.is_empty() {
        return Fate::Drop;
    }
    let (mut out, mut outside, mut no_demail) = (Vec::new(), Vec::new(), Vec::new());
    for m in &list {
        match reach(&m.address) {
            Reach::Own(demail) => out.push(rewritten(m, demail)),
            Reach::NoDemail => no_demail.push(m.address.clone()),
            Reach::Outside => outside.push(m.address.clone()),
        }
    }
    if !outside.is_empty() {
        let l = quoted_list(&outside);
        return Fate::Refuse(
            Reason::new(
                "reply_to.outside",
                format!(
                    "Die Antwortadresse (Reply-To) zeigt aus der Organisation hinaus: {l}. Antworten auf diese De-Mail gingen dorthin statt an Sie. Entfernen Sie die Antwortadresse oder nennen Sie ein Postfach der Organisation."
                ),
                format!(
                    "The reply address (Reply-To) points outside the organisation: {l}. Replies to this De-Mail would go there instead of to you. Remove the reply address or name a mailbox of the organisation."
                ),
            )
            .about(outside.join(",")),
        );
    }
    if !no_demail.is_empty() {
        let l = quoted_list(&no_demail);
        return Fate::Refuse(
            Reason::new(
                "reply_to.no_demail_address",
                format!(
                    "Die Antwortadresse (Reply-To) hat keine De-Mail-Adresse: {l}. Antworten per De-Mail erreichen sie nicht. Entfernen Sie sie oder nennen Sie ein Postfach mit De-Mail-Adresse."
                ),
                format!(
                    "The reply address (Reply-To) has no De-Mail address: {l}. Replies by De-Mail cannot reach it. Remove it or name a mailbox with a De-Mail address."
                ),
            )
            .about(no_demail.join(",")),
        );
    }
    Fate::Rewrite(out)
}

fn rewritten(m: &Mailbox, demail: String) -> Rewritten {
    Rewritten { name: m.name.clone(), named: m.address.clone(), demail }
}

fn quoted_list(v: &[String]) -> String {
    v.iter().take(5).map(|a| format!("„{}“", quote(a))).collect::<Vec<_>>().join(", ")
}

/// The reason codes a client's [`CONFIRMED`] field names (separated by commas or blanks).
pub fn confirmed_codes(value: &str) -> Vec<String> {
    value.split([',', ' ', '\t']).map(str::trim).filter(|c| !c.is_empty()).map(str::to_ascii_lowercase).collect()
}

/// A `confirm` reason of the send check that reached a server unconfirmed, as the
/// refusal a person reads: what was to be confirmed, and how to send it confirmed. The
/// server cannot ask; the subject tag (`[De-Mail]`, from `vocabulary`) or the add-in can.
pub fn unconfirmed(reason: &Reason, vocabulary: &Vocabulary) -> Reason {
    let tag = vocabulary.demail.first().map(String::as_str).unwrap_or("De-Mail");
    let (how_de, how_en) = match reason.code.as_str() {
        "demail.not_marked" => (
            format!(
                "Zum Bestätigen schreiben Sie [{tag}] (oder eine Versandoption wie [P]) an den Anfang des Betreffs und senden erneut, oder senden Sie mit dem De-Mail-Add-in."
            ),
            format!(
                "To confirm, put [{tag}] (or a shipping option such as [P]) at the start of the subject and send again, or send with the De-Mail add-in."
            ),
        ),
        "mixed.confirm" => (
            "Senden Sie an die De-Mail-Empfänger und an die E-Mail-Empfänger getrennt, oder senden Sie mit dem De-Mail-Add-in, das vor dem Senden nachfragt.".to_string(),
            "Send to the De-Mail recipients and to the e-mail recipients separately, or send with the De-Mail add-in, which asks before sending.".to_string(),
        ),
        _ => (
            "Senden Sie mit dem De-Mail-Add-in, das vor dem Senden nachfragt.".to_string(),
            "Send with the De-Mail add-in, which asks before sending.".to_string(),
        ),
    };
    Reason::new(
        "confirm.missing",
        format!(
            "Nicht gesendet: Diese Nachricht braucht Ihre Bestätigung, und das Gateway kann nicht nachfragen. [{}] {} {how_de}",
            reason.code, reason.message
        ),
        format!(
            "Not sent: this message needs your confirmation, and the gateway cannot ask. [{}] {} {how_en}",
            reason.code, reason.message_en
        ),
    )
    .about(&reason.code)
}

/// A Message-ID (without angle brackets) for a De-Mail that came without one:
/// `<millis in hex>.<entropy in hex>@<domain of the sender>`.
///
/// It is the key by which a resend after a crash is recognised (by the provider, and by
/// the gateway for a client's retry), so every De-Mail gets one before it is queued.
/// The caller supplies clock and entropy; the core does no I/O.
pub fn new_message_id(now_millis: u64, entropy: &[u8], sender: &str) -> String {
    let domain = sender.rsplit_once('@').map(|(_, d)| d).filter(|d| !d.is_empty()).unwrap_or("demail.invalid");
    let hex: String = entropy.iter().map(|b| format!("{b:02x}")).collect();
    format!("{now_millis:x}.{hex}@{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_fields_that_never_pass() {
        for n in [
            "X-de-mail-private",
            "x-de-mail-message-type",
            "X-DE-MAIL-AUTH-LEVEL",
            "X-de-mail-private-id",
            "X-Demail-Gateway-Seal",
            "bcc",
            " Bcc ",
        ] {
            assert!(dropped_from_submission(n, false), "{n}");
        }
        for n in ["From", "To", "Cc", "Subject", "Message-ID", "X-Other", "X-de-mail"] {
            assert!(!dropped_from_submission(n, false), "{n}");
        }
        assert!(dropped_from_submission("subject", true));
        assert!(dropped_from_submission("x-demail-confirmed", false));
    }

    /// The organisation: `*@stadt.de` maps to `stadt.de-mail.de`, `alt@stadt.de` has no
    /// De-Mail address, everything else is outside.
    fn reach(addr: &str) -> Reach {
        match addr.rsplit_once('@') {
            _ if addr == "alt@stadt.de" => Reach::NoDemail,
            Some((l, "stadt.de")) => Reach::Own(format!("{l}@stadt.de-mail.de")),
            Some((_, "stadt.de-mail.de")) => Reach::Own(addr.to_string()),
            _ => Reach::Outside,
        }
    }

    fn fate(name: &str, value: &str, rules: FieldRules) -> Fate {
        client_field(name, value, false, rules, "peter@stadt.de", &reach)
    }

    fn rewrite(named: &str, demail: &str, name: Option<&str>) -> Rewritten {
        Rewritten { name: name.map(str::to_string), named: named.into(), demail: demail.into() }
    }

    fn refused(f: Fate) -> String {
        match f {
            Fate::Refuse(r) => {
                assert!(!r.message.is_empty() && !r.message_en.is_empty());
                r.code
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn sender_is_dropped_by_default_and_rewritten_only_to_the_organisation() {
        let d = FieldRules::default();
        assert_eq!(d, FieldRules { sender_header: SenderHeader::Drop, reply_to: ReplyTo::KeepInternal });
        // The safe default: nobody is named as Sender, whoever the client wrote.
        for v in ["buergermeister@stadt.de", "boss@extern.de", "kaputt <<"] {
            assert_eq!(fate("Sender", v, d), Fate::Drop, "{v}");
            assert_eq!(fate(" sender ", v, d), Fate::Drop, "{v}");
        }
        let rw = FieldRules { sender_header: SenderHeader::Rewrite, ..d };
        assert_eq!(
            fate("Sender", "Sekretariat <sek@stadt.de>", rw),
            Fate::Rewrite(vec![rewrite("sek@stadt.de", "sek@stadt.de-mail.de", Some("Sekretariat"))])
        );
        assert_eq!(fate("Sender", "Peter@Stadt.de", rw), Fate::Drop, "the same as From says nothing");
        assert_eq!(refused(fate("Sender", "boss@extern.de", rw)), "sender_field.outside");
        assert_eq!(refused(fate("Sender", "alt@stadt.de", rw)), "sender_field.no_demail_address");
        assert_eq!(refused(fate("Sender", "a@stadt.de, b@stadt.de", rw)), "sender_field.invalid");
        assert_eq!(refused(fate("Sender", "Peter Müller", rw)), "sender_field.invalid");
    }

    #[test]
    fn reply_to_stays_inside_the_organisation_by_default() {
        let d = FieldRules::default();
        assert_eq!(
            fate("Reply-To", "Team <team@stadt.de>, post@stadt.de-mail.de", d),
            Fate::Rewrite(vec![
                rewrite("team@stadt.de", "team@stadt.de-mail.de", Some("Team")),
                rewrite("post@stadt.de-mail.de", "post@stadt.de-mail.de", None),
            ])
        );
        assert_eq!(refused(fate("reply-to", "team@stadt.de, privat@gmail.com", d)), "reply_to.outside");
        assert_eq!(refused(fate("Reply-To", "anna@buerger.de-mail.de", d)), "reply_to.outside");
        assert_eq!(refused(fate("Reply-To", "alt@stadt.de", d)), "reply_to.no_demail_address");
        assert_eq!(refused(fate("Reply-To", "<<kaputt", d)), "reply_to.invalid");
        assert_eq!(fate("Reply-To", "  ", d), Fate::Drop);
        let drop = FieldRules { reply_to: ReplyTo::Drop, ..d };
        assert_eq!(fate("Reply-To", "team@stadt.de", drop), Fate::Drop);
        let keep = FieldRules { reply_to: ReplyTo::Keep, ..d };
        assert_eq!(fate("Reply-To", "privat@gmail.com", keep), Fate::Keep);
        // Other fields pass; the fixed drop rule still applies first.
        assert_eq!(fate("To", "privat@gmail.com", d), Fate::Keep);
        assert_eq!(fate("Bcc", "x@stadt.de", keep), Fate::Drop);
    }

    #[test]
    fn unconfirmed_reasons_say_how_to_confirm() {
        let v = Vocabulary::default();
        let mixed = Reason::new("mixed.confirm", "Wirklich so senden?", "Send anyway?");
        let r = unconfirmed(&mixed, &v);
        assert_eq!((r.code.as_str(), r.subject.as_deref()), ("confirm.missing", Some("mixed.confirm")));
        assert!(r.message.contains("[mixed.confirm] Wirklich so senden?") && r.message.contains("getrennt"), "{r:?}");
        assert!(r.message_en.contains("separately"), "{r:?}");
        let r = unconfirmed(&Reason::new("demail.not_marked", "x", "x"), &v);
        assert!(r.message.contains("[De-Mail]") && r.message_en.contains("[De-Mail]"), "{r:?}");
        assert_eq!(
            confirmed_codes(" Mixed.Confirm,demail.not_marked  x "),
            ["mixed.confirm", "demail.not_marked", "x"]
        );
        assert!(confirmed_codes("").is_empty());
    }

    #[test]
    fn message_ids() {
        let e = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(
            new_message_id(1_795_775_532_000, &e, "peter@stadt.de-mail.de"),
            "1a21c900be0.0102030405060708@stadt.de-mail.de"
        );
        assert_eq!(new_message_id(0, &[0xff], ""), "0.ff@demail.invalid");
    }
}
