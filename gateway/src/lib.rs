//! The De-Mail gateway as a library: the `demail-gateway` binary and the provider
//! simulator (`demail-provider-sim`) are thin front ends over these modules.

// Errors carry a code plus German and English text (demail_core::Error, as in the core);
// they are rare, and boxing them everywhere would only add noise.
#![allow(clippy::result_large_err)]

pub mod app;
pub mod archive;
pub mod billing;
pub mod border;
pub mod collect;
pub mod config;
pub mod dsn;
pub mod health;
pub mod identity;
pub mod pg;
pub mod pipeline;
pub mod relay;
pub mod seal;
pub mod secret;
pub mod sim;
pub mod spool;
pub mod tsa;

/// An error as the command-line front ends print it on stderr: the code with the German
/// and the English text, then the cause (paths, library texts) when there is one.
pub fn error_lines(e: &demail_core::Error) -> String {
    let r = &e.reason;
    let mut s = format!("Fehler: [{}] {}\nError: [{}] {}", r.code, r.message, r.code, r.message_en);
    if let Some(cause) = &e.source {
        s.push_str(&format!("\nUrsache / cause: {cause}"));
    }
    s
}
