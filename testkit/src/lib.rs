//! Test helpers shared by the gateway and helper test suites (dev-dependency only).
//!
//! - [`ca`]: [`Pki`], a CA, a server certificate for `localhost`/`127.0.0.1` and a client
//!   certificate, generated at test time and written as PEM files.
//! - [`ports`]: [`free_port`], [`wait_for_port`] on loopback.
//! - [`process`]: [`ChildGuard`] (a child killed when the guard drops), [`have`], [`wait_until`].
//! - [`dovecot`]: [`Dovecot`], an unprivileged Dovecot (IMAP + LMTP, maildir, static passdb).
//! - [`postfix`]: [`SmtpSink`] (Postfix's `smtp-sink`, dumping every message to a directory) and
//!   [`Postfix`], a private instance (root only) with extra `main.cf` lines, e.g. as a relay
//!   in front of the system under test.
//! - [`gateway`]: [`GatewayConfig`] and [`start_gateway`] for the real `demail-gateway` binary.
//! - [`directory`]: slapd with the gateway's account, a De-Mail group, people added on first use.
//! - [`kdc`]: an MIT Kerberos KDC with a throwaway realm; [`ldap`]: OpenLDAP `slapd` with TLS.
//! - [`postgres`]: PostgreSQL (`initdb`, `pg_ctl`) with TLS on a free loopback port, for the
//!   gateway cluster; [`proxy`]: a TCP proxy the test can partition.
//! - [`qca`]: [`QualifiedCa`], a stand-in for a provider's qualified CA, and provider signing
//!   certificates (RSA, P-256, P-384), made with `openssl`, for `X-de-mail-integrity`.
//! - [`tsa`]: [`Tsa`], a time stamp authority (RFC 3161): `openssl ts -reply` over HTTP.
//!
//! The Debian packages come from `scripts/setup test` (dovecot-imapd, dovecot-lmtpd, postfix, swaks, postgresql).

pub mod ca;
pub mod directory;
pub mod dovecot;
pub mod gateway;
pub mod haproxy;
pub mod kdc;
pub mod ldap;
pub mod ports;
pub mod postfix;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod qca;
pub mod tsa;

pub use ca::Pki;
pub use dovecot::Dovecot;
pub use gateway::{start_gateway, GatewayConfig};
pub use haproxy::Haproxy;
pub use ports::{free_port, wait_for_port};
pub use postfix::{Postfix, SmtpSink};
pub use postgres::Postgres;
pub use process::{have, wait_until, ChildGuard};
pub use proxy::Proxy;
pub use qca::{Issued, KeyType, QualifiedCa};
pub use tempfile::TempDir;
pub use tsa::Tsa;

/// A fresh temporary directory, removed on drop.
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new().prefix("demail-test-").tempdir().expect("create temp dir")
}
