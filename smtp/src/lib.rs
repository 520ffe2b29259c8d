//! A small async SMTP/LMTP server framework: smtp-proto parses the protocol, tokio
//! carries it, rustls encrypts it (STARTTLS or implicit TLS).
//!
//! The application implements [`Handler`]; the server answers 250 only after
//! [`Handler::deliver`] returned `Ok`, so an implementer that fsyncs before returning
//! never loses an accepted message. Refusals carry a German and an English text.
//!
//! Protocol hygiene handled here: EHLO/HELO (LHLO for LMTP), SIZE with 552 for
//! oversize data (read to the end and discarded), AUTH PLAIN/LOGIN only over TLS,
//! client allow-list, connections per client address, a short idle limit before AUTH or
//! MAIL, AUTH failures counted per address and user name with lock-out (shared by a
//! listener's connections), per-read and per-session timeouts, pipelining, no pipelined
//! bytes after STARTTLS, bare LF/CR and NUL refused, VRFY/EXPN refused. The end of
//! DATA is exactly `<CRLF>.<CRLF>` ([`data`]); a DATA stream with a bare CR or LF is
//! refused and the connection closed, so nothing after it is read as a command.
//!
//! ```no_run
//! use demail_smtp::{serve, Accepted, Config, Envelope, Handler, Reject};
//! use std::sync::Arc;
//! struct Sink;
//! impl Handler for Sink {
//!     async fn deliver(&self, _env: &Envelope, msg: Vec<u8>) -> Result<Accepted, Reject> {
//!         // store and fsync `msg` here
//!         Ok(Accepted { id: format!("{}", msg.len()) })
//!     }
//! }
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:2525").await?;
//! serve(listener, Arc::new(Config::default()), Arc::new(Sink)).await
//! # }
//! ```

pub mod data;
mod limits;
mod proxy;
mod reply;
mod server;
pub mod tls;

pub use ipnet::IpNet;
pub use limits::{AuthLimits, AuthThrottle};
pub use reply::{Accepted, Reject};
pub use server::{
    serve, serve_connection, AuthResult, Authenticated, Config, Envelope, Handler, SaslExchange, SaslStep, SessionInfo,
};
/// SASL mechanism bits for [`Handler::sasl_mechanisms`].
pub use smtp_proto::AUTH_GSSAPI;
