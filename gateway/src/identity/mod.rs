//! Who sends: each person is authenticated by the organisation's directory, never by a
//! secret shared between desks. Kerberos single sign-on (SASL GSSAPI) or a password
//! checked by an LDAP bind; the person's De-Mail rights come from the directory
//! ([`demail_core::rights`] decides, [`directory`] fetches).

pub mod directory;
pub mod kerberos;
