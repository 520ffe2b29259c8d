//! `demail-provider-sim`: a De-Mail provider (DMDA) stand-in for tests and the demo.

use clap::{Parser, Subcommand};
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

fn fail(msg: &str) -> ExitCode {
    eprintln!("Fehler / error: {msg}");
    ExitCode::from(2)
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
        Err(e) => return fail(&e.to_string()),
    };
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve => {
                let c = &sim.cfg;
                let tls = match demail_smtp::tls::server_config(&c.tls.cert, &c.tls.key, c.client_ca.as_deref()) {
                    Ok(t) => t,
                    Err(e) => return fail(&e),
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
                    Err(e) => return fail(&format!("{}: {e}", c.listen)),
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
                    Err(r) => return fail(&format!("{} / {}", r.message, r.message_en)),
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
