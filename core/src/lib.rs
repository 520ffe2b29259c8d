//! De-Mail rules as pure functions.
//!
//! No I/O, no clock and no randomness: callers pass time and entropy in, so the same
//! code runs in the helper, the gateway, the admin CLI and (as wasm) in the add-in.
//! [`api`] is the JSON boundary all of them share.

// Errors are rare and carry a code plus German and English text by design; boxing
// them everywhere would only add noise.
#![allow(clippy::result_large_err)]

pub mod address;
pub mod api;
pub mod check;
pub mod classify;
pub mod idn;
pub mod mapping;
pub mod message;
pub mod options;
pub mod policy;
pub mod seal;
pub mod subject;

pub use message::Reason;
pub use options::{DeMailOption, OptionSet};
pub use policy::Policy;

/// Version of the rules and of the JSON shapes produced by [`api`].
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
