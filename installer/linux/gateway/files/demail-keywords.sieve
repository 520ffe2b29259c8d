# De-Mail keywords for Dovecot with Pigeonhole (sieve_before, docs/deployment.md): every IMAP
# client sees them, and Thunderbird shows them as coloured tags even without the add-in
# (the add-in uses the same keys).
#
# Only what the gateway checked counts: its Authentication-Results field (authserv-id is
# [gateway] hostname in /etc/demail/gateway.toml) must be on the message. Replace
# gw.musterstadt.de below with that name. The organisation's internet mail server must remove
# that field and every X-de-mail-* header from mail that did not come through the gateway.
require ["imap4flags"];

if header :matches "Authentication-Results" "gw.musterstadt.de;*demail-integrity=*" {
  if header :is "X-de-mail-message-type" "normal" {
    addflag "$demail";
  } elsif header :matches "X-de-mail-message-type" "confirmation of *" {
    addflag "$demail-receipt";
  } elsif header :contains "X-de-mail-message-type" ["notification", "malware", "identification"] {
    addflag "$demail-notification";
  }
  # Not signed by a provider the organisation trusts, or altered, or a receipt that does not
  # confirm the De-Mail the gateway sent: a warning beside the kind.
  if anyof (not header :matches "Authentication-Results"
                ["gw.musterstadt.de;*demail-integrity=pass*", "gw.musterstadt.de;*demail-integrity=neutral*"],
            header :matches "Authentication-Results" "gw.musterstadt.de;*demail-receipt=fail*") {
    addflag "$demail-warning";
  }
}
