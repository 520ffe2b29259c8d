//! `demail-provider-sim`: a De-Mail provider (DMDA) stand-in for tests and the demo.

// Errors carry a code plus German and English text (demail_core::Error, as in the core);
// they are rare, and boxing them everywhere would only add noise.
#![allow(clippy::result_large_err)]

use clap::{Parser, Subcommand};
use demail_core::Error;
use demail_gateway::sim::{Sim, SimConfig, SimHandler};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "demail-provider-sim",
    version,
    about = "De-Mail-Anbieter-Simulator / De-Mail provider simulator (tests, demo)"
)]
struct Cli {
    #[arg(long)]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Accept submissions and send receipts to the gateway.
    Serve,
    /// A recipient logs in: send the Abholbestätigung for this private-id.
    Retrieve {
        #[arg(long)]
        private_id: String,
    },
    /// Deliver a De-Mail "from a citizen" to the gateway.
    Inject {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long, default_value = "Anfrage")]
        subject: String,
        #[arg(long, default_value = "Sehr geehrte Damen und Herren,\r\n\r\nmit freundlichen Grüßen")]
        body: String,
        /// Comma-separated option ids (private, authoritative, …).
        #[arg(long, default_value = "")]
        options: String,
        #[arg(long)]
        private_id: Option<String>,
    },
}

fn fail(e: &Error) -> ExitCode {
    eprintln!("{}", demail_gateway::error_lines(e));
    ExitCode::from(2)
}

fn failed(code: &str, de: &str, en: &str, cause: impl std::fmt::Display) -> ExitCode {
    fail(&Error::new(code, de, en).caused_by(cause))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = match SimConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let sim = match Sim::new(cfg) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return failed("sim.start_failed", "Start fehlgeschlagen.", "Cannot start.", e),
    };
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve => {
                let c = &sim.cfg;
                let tls = match demail_smtp::tls::server_config(&c.tls.cert, &c.tls.key, c.client_ca.as_deref()) {
                    Ok(t) => t,
                    Err(e) => return failed("tls.server_config", "TLS nicht nutzbar.", "TLS not usable.", e),
                };
                let smtp = demail_smtp::Config {
                    hostname: c.hostname.clone(),
                    tls: Some(tls),
                    implicit_tls: true,
                    require_tls: true,
                    offer_auth: true,
                    require_auth: true,
                    ..demail_smtp::Config::default()
                };
                let l = match tokio::net::TcpListener::bind(&c.listen).await {
                    Ok(l) => l,
                    Err(e) => {
                        let cause = format!("{}: {e}", c.listen);
                        return failed("listener.bind_failed", "Lauschen fehlgeschlagen.", "Cannot listen.", cause);
                    }
                };
                tracing::info!(listen = %c.listen, "provider simulator ready");
                tokio::select! {
                    r = demail_smtp::serve(l, Arc::new(smtp), Arc::new(SimHandler(sim.clone()))) => { tracing::error!(result = ?r, "listener stopped"); }
                    _ = tokio::signal::ctrl_c() => {}
                }
                ExitCode::SUCCESS
            }
            Cmd::Retrieve { private_id } => match sim.retrieve(&private_id).await {
                Ok(n) => {
                    println!("{}", serde_json::json!({ "sent": n }));
                    if n == 0 { ExitCode::from(1) } else { ExitCode::SUCCESS }
                }
                Err(e) => fail(&e),
            },
            Cmd::Inject { from, to, subject, body, options, private_id } => {
                let opts = match demail_core::OptionSet::parse_ids(options.split(',')) {
                    Ok(o) => o,
                    Err(r) => return fail(&r.into()),
                };
                match sim.inject(&from, &to, &subject, &body, opts, private_id.as_deref()).await {
                    Ok(id) => {
                        println!("{}", serde_json::json!({ "injected": id }));
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&e),
                }
            }
        }
    })
}
