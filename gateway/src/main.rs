//! `demail-gateway`: the organisation's De-Mail gateway (docs/gateway.md).

use clap::{Parser, Subcommand};
use demail_gateway::archive::Archive;
use demail_gateway::{app, archive, billing, config, spool};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "demail-gateway",
    version,
    about = "De-Mail-Gateway / De-Mail gateway"
)]
struct Cli {
    /// Configuration file; else $DEMAIL_GATEWAY_CONFIG, else /etc/demail/gateway.toml.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway in the foreground.
    Serve,
    /// Check the configuration and the policy it names.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Inspect and steer the outgoing queue.
    Queue {
        #[command(subcommand)]
        cmd: QueueCmd,
    },
    /// The audit-proof archive.
    Archive {
        #[command(subcommand)]
        cmd: ArchiveCmd,
    },
    /// Billing per cost unit.
    Billing {
        #[command(subcommand)]
        cmd: BillingCmd,
    },
    /// Secrets in the OS keyring (never in files).
    Secret {
        #[command(subcommand)]
        cmd: SecretCmd,
    },
}

#[derive(Subcommand)]
enum SecretCmd {
    /// Store a secret read from stdin (seal-key: the base64 Ed25519 private key).
    Set {
        #[arg(value_parser = ["seal-key"])]
        name: String,
    },
    /// Generate a new seal key in the keyring; prints the public key line for the policy.
    Generate {
        #[arg(value_parser = ["seal-key"])]
        name: String,
    },
    /// Print the public key line (`kid:base64`) of the stored seal key.
    Public {
        #[arg(value_parser = ["seal-key"])]
        name: String,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    Check,
}

#[derive(Subcommand)]
enum QueueCmd {
    /// Queued messages as JSON lines.
    List,
    /// Retry now (also releases held messages).
    Retry {
        /// Queue id; `--all` for every message.
        id: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Remove a message from the queue without sending it.
    Drop { id: String },
}

#[derive(Subcommand)]
enum ArchiveCmd {
    /// Check the hash chain and every message hash.
    Verify,
    /// Write .eml files and manifest.json.
    Export {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum BillingCmd {
    /// Counts per cost unit for [from, to] (dates, UTC, both inclusive).
    Report {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
        format: String,
    },
}

fn fail(de: &str, en: &str) -> ExitCode {
    eprintln!("Fehler: {de}\nError: {en}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Always the kernel keyring: in a workspace build the keyring crate also gets the
    // helper's Secret Service feature, which would otherwise become the default store.
    #[cfg(target_os = "linux")]
    keyring::set_default_credential_builder(keyring::keyutils::default_credential_builder());
    let path = cli
        .config
        .or_else(|| std::env::var_os("DEMAIL_GATEWAY_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/demail/gateway.toml"));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let (cfg, policy) = match config::Config::load(&path) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    match cli.cmd {
        Cmd::Config {
            cmd: ConfigCmd::Check,
        } => {
            println!("{}: in Ordnung / OK", path.display());
            ExitCode::SUCCESS
        }
        Cmd::Serve => serve(cfg, policy),
        Cmd::Secret { cmd } => secret(&cfg, cmd),
        Cmd::Queue { cmd } => queue(&cfg, cmd),
        Cmd::Archive { cmd } => {
            let a = match archive::SqliteArchive::open(&cfg.gateway.archive_db) {
                Ok(a) => a,
                Err(e) => return fail(&e, &e),
            };
            match cmd {
                ArchiveCmd::Verify => match a.verify() {
                    Ok(p) if p.is_empty() => {
                        let n = a.entries().map(|e| e.len()).unwrap_or(0);
                        println!(
                            "{}",
                            serde_json::json!({ "valid": true, "entries": n, "problems": [] })
                        );
                        ExitCode::SUCCESS
                    }
                    Ok(p) => {
                        println!("{}", serde_json::json!({ "valid": false, "problems": p }));
                        ExitCode::from(1)
                    }
                    Err(e) => fail(&e, &e),
                },
                ArchiveCmd::Export { out } => match archive::export(&a, &out) {
                    Ok(n) => {
                        println!("{}", serde_json::json!({ "exported": n, "dir": out }));
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&e, &e),
                },
            }
        }
        Cmd::Billing {
            cmd: BillingCmd::Report { from, to, format },
        } => {
            let (Some(f), Some(t)) = (billing::parse_date(&from), billing::parse_date(&to)) else {
                return fail(
                    "Datum im Format JJJJ-MM-TT erwartet.",
                    "Expected dates as YYYY-MM-DD.",
                );
            };
            let a = match archive::SqliteArchive::open(&cfg.gateway.archive_db) {
                Ok(a) => a,
                Err(e) => return fail(&e, &e),
            };
            match a.billing_rows(f, t + 86_400) {
                Ok(rows) => {
                    let r = billing::report(&rows);
                    if format == "json" {
                        println!(
                            "{}",
                            serde_json::json!({ "from": from, "to": to, "cost_units": r })
                        );
                    } else {
                        print!("{}", billing::to_csv(&r));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e, &e),
            }
        }
    }
}

fn queue(cfg: &config::Config, cmd: QueueCmd) -> ExitCode {
    let s = match spool::Spool::open(&cfg.gateway.spool_dir) {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string(), &e.to_string()),
    };
    match cmd {
        QueueCmd::List => match s.list() {
            Ok(l) => {
                for (m, st) in l {
                    println!("{}", serde_json::json!({ "meta": m, "state": st }));
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.to_string(), &e.to_string()),
        },
        QueueCmd::Retry { id, all } => {
            let ids: Vec<String> = match (id, all) {
                (Some(id), false) => vec![id],
                (None, true) => s
                    .list()
                    .map(|l| l.into_iter().map(|(m, _)| m.id).collect())
                    .unwrap_or_default(),
                _ => return fail("Eine Kennung oder --all angeben.", "Give one id or --all."),
            };
            for id in &ids {
                if !s.exists(id) {
                    return fail(
                        &format!("{id} ist nicht in der Warteschlange."),
                        &format!("{id} is not queued."),
                    );
                }
                let st = spool::State {
                    held: false,
                    next_try: 0,
                    ..s.state(id)
                };
                if let Err(e) = s.set_state(id, &st) {
                    return fail(&e.to_string(), &e.to_string());
                }
            }
            println!("{}", serde_json::json!({ "retry": ids }));
            ExitCode::SUCCESS
        }
        QueueCmd::Drop { id } => {
            if !s.exists(&id) {
                return fail(
                    &format!("{id} ist nicht in der Warteschlange."),
                    &format!("{id} is not queued."),
                );
            }
            match s.remove(&id) {
                Ok(()) => {
                    tracing::warn!(id = %id, "dropped by administrator");
                    println!("{}", serde_json::json!({ "dropped": id }));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string(), &e.to_string()),
            }
        }
    }
}

fn secret(cfg: &config::Config, cmd: SecretCmd) -> ExitCode {
    use base64::Engine;
    let Some(sc) = &cfg.seal else {
        return fail(
            "Abschnitt [seal] mit kid und key_keyring fehlt in der Konfiguration.",
            "section [seal] with kid and key_keyring is missing from the configuration.",
        );
    };
    let key = match cmd {
        SecretCmd::Set { .. } => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() {
                return fail("Eingabe nicht lesbar.", "cannot read stdin.");
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(line.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok());
            let Some(key) = bytes else {
                return fail(
                    "Erwartet: 32 Byte Ed25519-Privatschlüssel in Base64 auf stdin.",
                    "expected: a 32-byte Ed25519 private key in base64 on stdin.",
                );
            };
            if let Err(e) = sc.write_key(&key) {
                return fail(&e, &e);
            }
            key
        }
        SecretCmd::Generate { .. } => {
            let mut key = [0u8; 32];
            if getrandom::fill(&mut key).is_err() {
                return fail("Kein Zufall vom System.", "no randomness from the OS.");
            }
            if let Err(e) = sc.write_key(&key) {
                return fail(&e, &e);
            }
            key
        }
        SecretCmd::Public { .. } => match sc.read_key() {
            Ok(k) => k,
            Err(e) => return fail(&e, &e),
        },
    };
    // Only the public half is ever printed: it goes into the policy's [seal] public_keys.
    println!("{}", demail_core::seal::public_key(&sc.kid, &key));
    ExitCode::SUCCESS
}

fn serve(cfg: config::Config, policy: demail_core::Policy) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string(), &e.to_string()),
    };
    rt.block_on(async move {
        let app = match app::App::new(cfg, policy) {
            Ok(a) => a,
            Err(e) => return fail(&e, &e),
        };
        match app.recover() {
            Ok(0) => {}
            Ok(n) => tracing::warn!(count = n, "recorded spooled messages after an unclean stop"),
            Err(e) => return fail(&e, &e),
        }
        let (out_cfg, in_cfg) = match (app.outbound_smtp(), app.inbound_smtp()) {
            (Ok(o), Ok(i)) => (o, i),
            (Err(e), _) | (_, Err(e)) => return fail(&e, &e),
        };
        let out_l = match tokio::net::TcpListener::bind(&app.cfg.outbound.listen).await {
            Ok(l) => l,
            Err(e) => return fail(&format!("{}: {e}", app.cfg.outbound.listen), &format!("{}: {e}", app.cfg.outbound.listen)),
        };
        let in_l = match tokio::net::TcpListener::bind(&app.cfg.inbound.listen).await {
            Ok(l) => l,
            Err(e) => return fail(&format!("{}: {e}", app.cfg.inbound.listen), &format!("{}: {e}", app.cfg.inbound.listen)),
        };
        tracing::info!(outbound = %app.cfg.outbound.listen, inbound = %app.cfg.inbound.listen, providers = app.cfg.providers.len(), "gateway ready");
        let out = tokio::spawn(demail_smtp::serve(out_l, Arc::new(out_cfg), Arc::new(app::Outbound(app.clone()))));
        let inb = tokio::spawn(demail_smtp::serve(in_l, Arc::new(in_cfg), Arc::new(app::Inbound(app.clone()))));
        let runner = tokio::spawn(app.clone().run_queue());
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => return fail(&e.to_string(), &e.to_string()),
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            r = out => tracing::error!(result = ?r, "outbound listener stopped"),
            r = inb => tracing::error!(result = ?r, "inbound listener stopped"),
        }
        runner.abort();
        // Everything acknowledged is in the spool; nothing to flush.
        tracing::info!("gateway stopped");
        ExitCode::SUCCESS
    })
}
