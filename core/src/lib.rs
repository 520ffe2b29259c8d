//! De-Mail rules as pure functions.
//!
//! No I/O, no clock and no randomness: callers pass time and entropy in, so the same
//! code runs in the helper, the gateway, the admin CLI and (as wasm) in the add-in.
//! [`api`] is the JSON boundary all of them share.

// Errors are rare and carry a code plus German and English text by design; boxing
// them everywhere would only add noise.
#![allow(clippy::result_large_err)]

// Modules in layers; each uses only those above it (checked by tests/layers.rs):
// reason → idn → headers → options → address → subject, seal, cert → submission, integrity →
// policy → mapping, check, classify, rights → proof → api.
pub mod reason;

pub mod idn;

pub mod headers;

pub mod options;

pub mod address;

pub mod cert;
pub mod seal;
pub mod subject;

pub mod integrity;
pub mod submission;

pub mod policy;

pub mod check;
pub mod classify;
pub mod mapping;
pub mod rights;

pub mod proof;

pub mod api;

pub use options::{DeMailOption, OptionSet};
pub use policy::Policy;
pub use reason::{Error, Reason};

/// Version of the rules and of the JSON shapes produced by [`api`].
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
