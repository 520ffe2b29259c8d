//! The De-Mail gateway as a library: the `demail-gateway` binary and the provider
//! simulator (`demail-provider-sim`) are thin front ends over these modules.

pub mod app;
pub mod archive;
pub mod billing;
pub mod config;
pub mod dsn;
pub mod pipeline;
pub mod relay;
pub mod seal;
pub mod secret;
pub mod sim;
pub mod spool;
