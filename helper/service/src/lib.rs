//! demail-helper: the local De-Mail helper (headless).
//!
//! - [`api`]: the loopback HTTP API for the add-in (`/v1/…`, docs/protocol.md)
//! - [`store`]: durable outbox, journal and pairings (SQLite, synchronous=FULL)
//! - [`relay`]: the worker that submits to the gateway over verified TLS
//! - [`mime`]: submit requests → MIME, with every De-Mail rule from `demail-core`
//! - [`config`]: machine + user TOML with IT locks; [`secrets`]: the OS keyring
//! - [`discovery`]: per-user runtime file and the native-messaging host
//! - [`admin`]: the `demail` CLI's helper commands (pair, outbox, credentials, doctor)
//! - [`receipt`]: whether a reported receipt counts (its signature, and the message it certifies)
//! - [`submission`]: optional local SMTP submission for programs without the add-in
//! - [`error`]: the error shapes (all carry a core `Reason`); [`code`]: every code the helper gives out

// Errors carry a core `Reason` (three texts) and a cause; they travel only the cold path
// out, where their size costs nothing and boxing would only add noise.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod api;
pub mod code;
pub mod config;
pub mod discovery;
pub mod error;
pub mod kerberos;
pub mod mime;
pub mod pairing;
pub mod receipt;
/// Windows: IT settings from HKLM (MSI and Group Policy); the pure part is tested everywhere.
#[cfg(any(windows, test))]
pub mod registry;
pub mod relay;
pub mod secrets;
pub mod server;
pub mod state;
pub mod store;
pub mod submission;
