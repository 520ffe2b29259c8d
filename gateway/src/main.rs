//! `demail-gateway`: the organisation's De-Mail gateway (docs/gateway.md).

// Errors carry a code plus German and English text (demail_core::Error, as in the core);
// they are rare, and boxing them everywhere would only add noise.
#![allow(clippy::result_large_err)]

use clap::{Parser, Subcommand};
use demail_core::Error;
use demail_gateway::{app, archive, billing, config, spool};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "demail-gateway", version, about = "De-Mail-Gateway / De-Mail gateway")]
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
    /// The De-Mail right by request (`[access]`): requests, approvals, revocations.
    Access {
        #[command(subcommand)]
        cmd: AccessCmd,
    },
    /// Billing per cost unit.
    Billing {
        #[command(subcommand)]
        cmd: BillingCmd,
    },
    /// Secrets in the OS store: systemd credentials or the keyring (never in plain files).
    Secret {
        #[command(subcommand)]
        cmd: SecretCmd,
        /// Where `set` puts encrypted systemd credentials.
        #[arg(long, global = true, default_value = "/etc/credstore.encrypted")]
        credstore: PathBuf,
        /// Where `set` puts the unit drop-ins that load them.
        #[arg(long, global = true, default_value = "/etc/systemd/system/demail-gateway.service.d")]
        unit_dropins: PathBuf,
    },
}

#[derive(Subcommand)]
enum SecretCmd {
    /// Store a secret where the configuration names it: `provider NAME` (token secret),
    /// `user NAME` (an application account's password), `directory` (the gateway's own
    /// directory account), `storage` (the PostgreSQL role's password), `seal-key` (base64
    /// Ed25519 key).
    /// Prompted without echo on a terminal, else one line from stdin.
    Set {
        #[arg(value_parser = ["provider", "user", "directory", "storage", "seal-key"])]
        kind: String,
        /// The provider's or user's `name` in the configuration.
        name: Option<String>,
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
    /// Every secret the configuration needs, where it lives and whether it is stored
    /// (never the value).
    List,
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
    /// Check the hash chain, every message hash, the signed checkpoints and their time stamps.
    Verify {
        /// Verify an export (`archive export`) instead, without a gateway configuration:
        /// an auditor brings the organisation's policy (`--policy`) and the TSA's CA (`--tsa-ca`).
        #[arg(long)]
        export: Option<PathBuf>,
        /// The policy whose `[seal] public_keys` signed the checkpoints (default: the gateway's).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// CA certificate(s) of the time stamp authority (PEM), besides `archive.tsa_ca`.
        #[arg(long = "tsa-ca")]
        tsa_ca: Vec<PathBuf>,
    },
    /// Write .eml files and manifest.json.
    Export {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum AccessCmd {
    /// Open requests as JSON lines.
    Requests,
    /// Every access record as JSON lines.
    List,
    /// Grant a request: the person may send De-Mail.
    Approve { who: String },
    /// Refuse a request.
    Refuse { who: String },
    /// Take the De-Mail right away again.
    Revoke { who: String },
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

/// The policy's gateway keys (`[seal] public_keys`).
fn policy_keys(path: &std::path::Path) -> Result<Vec<demail_core::seal::SealKey>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::new("policy.unreadable", "Die Richtlinie ist nicht lesbar.", "The policy cannot be read.")
            .caused_by(format!("{}: {e}", path.display()))
    })?;
    let policy = demail_core::Policy::parse(&text)
        .map_err(|e| Error::from(e.reason).caused_by(format!("{}:{}", path.display(), e.line.unwrap_or(0))))?;
    Ok(policy.seal.public_keys)
}

/// What `archive verify` trusts. `checkpoint_secs`: entries older than two rounds (and a
/// minute) must be covered by a signed checkpoint when `require`.
fn trust(
    keys: Vec<demail_core::seal::SealKey>,
    tsa_ca: &[PathBuf],
    require: bool,
    now_ms: i64,
    checkpoint_secs: i64,
) -> Result<archive::Trust, Error> {
    let mut tsa = Vec::new();
    for p in tsa_ca {
        tsa.extend(demail_gateway::tsa::anchors(p)?);
    }
    Ok(archive::Trust { keys, tsa, require, now_ms, grace_ms: (2 * checkpoint_secs + 60) * 1000 })
}

/// `archive verify`'s JSON: exit 0 when intact, 1 with problems, 2 when it cannot run.
fn report(r: Result<archive::Report, Error>) -> ExitCode {
    match r {
        Ok(r) => {
            let valid = r.problems.is_empty();
            println!(
                "{}",
                serde_json::json!({
                    "valid": valid, "entries": r.entries, "checkpoints": r.checkpoints,
                    "signed_upto": r.signed_upto, "stamped": r.stamped, "problems": r.problems,
                })
            );
            if valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => fail(&e),
    }
}

/// `archive verify --export DIR`: an export checked on any machine. Without `--policy`
/// the checkpoints' signatures cannot be checked, which is a finding.
fn verify_export(dir: &std::path::Path, policy: Option<&std::path::Path>, tsa_ca: &[PathBuf]) -> ExitCode {
    let keys = match policy.map(policy_keys).transpose() {
        Ok(k) => k.unwrap_or_default(),
        Err(e) => return fail(&e),
    };
    let (a, exported) = match archive::export::open(dir) {
        Ok(x) => x,
        Err(e) => return fail(&e),
    };
    // Covered at export time: everything but the newest minutes (the default interval).
    match trust(keys, tsa_ca, true, exported, config::ArchiveCfg::default().checkpoint_secs as i64) {
        Ok(t) => report(a.verify_with(&t)),
        Err(e) => fail(&e),
    }
}

/// Exit 2 with the reason in German and English; the cause (paths, library texts) after it.
fn fail(e: &Error) -> ExitCode {
    eprintln!("{}", demail_gateway::error_lines(e));
    ExitCode::from(2)
}

fn spool_error(e: std::io::Error) -> ExitCode {
    fail(&Error::new("spool.access", "Die Warteschlange ist nicht nutzbar.", "The queue cannot be used.").caused_by(e))
}

fn not_queued(id: &str) -> ExitCode {
    fail(&Error::new(
        "queue.not_found",
        format!("{id} ist nicht in der Warteschlange."),
        format!("{id} is not queued."),
    ))
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
    if let Cmd::Archive { cmd: ArchiveCmd::Verify { export: Some(dir), policy, tsa_ca } } = &cli.cmd {
        return verify_export(dir, policy.as_deref(), tsa_ca);
    }
    let (cfg, policy) = match config::Config::load(&path) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            // `config check` reports a verdict (1); a service that cannot start fails (2).
            return ExitCode::from(if matches!(cli.cmd, Cmd::Serve) { 2 } else { 1 });
        }
    };
    match cli.cmd {
        Cmd::Config { cmd: ConfigCmd::Check } => {
            println!("{}: in Ordnung / OK", path.display());
            ExitCode::SUCCESS
        }
        Cmd::Serve => serve(cfg, policy),
        Cmd::Secret { cmd, credstore, unit_dropins } => {
            secret(&cfg, cmd, &demail_gateway::secret::CredStore { dir: credstore, dropin_dir: unit_dropins })
        }
        Cmd::Queue { cmd } => queue(&cfg, cmd),
        Cmd::Access { cmd } => access(&cfg, cmd),
        Cmd::Archive { cmd } => {
            let a = match open_archive(&cfg) {
                Ok(a) => a,
                Err(e) => return fail(&e),
            };
            match cmd {
                ArchiveCmd::Verify { export: _, policy: other, tsa_ca } => {
                    let keys = match other {
                        Some(p) => match policy_keys(&p) {
                            Ok(k) => k,
                            Err(e) => return fail(&e),
                        },
                        None => policy.seal.public_keys.clone(),
                    };
                    let mut cas = tsa_ca;
                    cas.extend(cfg.archive.tsa_ca.clone());
                    let secs = cfg.archive.checkpoint_secs as i64;
                    // Checkpoints are owed where the gateway has a key to make them.
                    let require = cfg.seal.is_some() && secs > 0;
                    let now = demail_gateway::spool::now_millis() as i64;
                    match trust(keys, &cas, require, now, secs) {
                        Ok(t) => report(a.verify_with(&t)),
                        Err(e) => fail(&e),
                    }
                }
                ArchiveCmd::Export { out } => match a.export(&out) {
                    Ok(n) => {
                        println!("{}", serde_json::json!({ "exported": n, "dir": out }));
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&e),
                },
            }
        }
        Cmd::Billing { cmd: BillingCmd::Report { from, to, format } } => {
            let (Some(f), Some(t)) = (billing::parse_date(&from), billing::parse_date(&to)) else {
                return fail(&Error::new(
                    "billing.date_format",
                    "Datum im Format JJJJ-MM-TT erwartet.",
                    "Expected dates as YYYY-MM-DD.",
                ));
            };
            let a = match open_archive(&cfg) {
                Ok(a) => a,
                Err(e) => return fail(&e),
            };
            match a.store().billing_rows(f, t + 86_400) {
                Ok(rows) => {
                    let r = billing::report(&rows);
                    if format == "json" {
                        println!("{}", serde_json::json!({ "from": from, "to": to, "cost_units": r }));
                    } else {
                        print!("{}", billing::to_csv(&r));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

/// The archive `[storage]` names: the SQLite file, or the cluster's PostgreSQL database.
fn open_archive(cfg: &config::Config) -> Result<archive::Archive, Error> {
    match cfg.storage.backend {
        config::Backend::Sqlite => archive::sqlite::open(&cfg.gateway.archive_db),
        config::Backend::Postgres => demail_gateway::pg::open_archive(&cfg.storage),
    }
}

/// `queue …` on the cluster's database.
fn queue_pg(cfg: &config::Config, cmd: QueueCmd) -> ExitCode {
    let (pg, rt) = match demail_gateway::pg::open_queue(&cfg.storage) {
        Ok(x) => x,
        Err(e) => return fail(&e),
    };
    rt.block_on(async {
        match cmd {
            QueueCmd::List => match pg.list().await {
                Ok(l) => {
                    for (m, st) in l {
                        println!("{}", serde_json::json!({ "meta": m, "state": st }));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            },
            QueueCmd::Retry { id, all } => {
                let ids: Vec<String> = match (id, all) {
                    (Some(id), false) => vec![id],
                    (None, true) => match pg.list().await {
                        Ok(l) => l.into_iter().map(|(m, _)| m.id).collect(),
                        Err(e) => return fail(&e),
                    },
                    _ => {
                        return fail(&Error::new(
                            "queue.id_or_all",
                            "Eine Kennung oder --all angeben.",
                            "Give one id or --all.",
                        ))
                    }
                };
                for id in &ids {
                    match pg.retry(id).await {
                        Ok(true) => {}
                        Ok(false) => return not_queued(id),
                        Err(e) => return fail(&e),
                    }
                }
                println!("{}", serde_json::json!({ "retry": ids }));
                ExitCode::SUCCESS
            }
            QueueCmd::Drop { id } => match pg.drop_message(&id).await {
                Ok(true) => {
                    tracing::warn!(id = %id, "dropped by administrator");
                    println!("{}", serde_json::json!({ "dropped": id }));
                    ExitCode::SUCCESS
                }
                Ok(false) => not_queued(&id),
                Err(e) => fail(&e),
            },
        }
    })
}

/// Who runs an administrative command (recorded in the archive as `admin:<name>`).
fn administrator() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "admin".into())
}

fn access(cfg: &config::Config, cmd: AccessCmd) -> ExitCode {
    use demail_gateway::identity::{ACCESS_GRANTED, ACCESS_REFUSED, ACCESS_REQUESTED, ACCESS_REVOKED};
    let a = match open_archive(cfg) {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    let records = match a.access_records() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let (who, to, from): (&str, &str, &[&str]) = match &cmd {
        AccessCmd::Requests | AccessCmd::List => {
            for r in records.iter().filter(|r| matches!(cmd, AccessCmd::List) || r.state == ACCESS_REQUESTED) {
                println!("{}", serde_json::json!(r));
            }
            return ExitCode::SUCCESS;
        }
        AccessCmd::Approve { who } => (who, ACCESS_GRANTED, &[ACCESS_REQUESTED, ACCESS_REVOKED, ACCESS_REFUSED]),
        AccessCmd::Refuse { who } => (who, ACCESS_REFUSED, &[ACCESS_REQUESTED]),
        AccessCmd::Revoke { who } => (who, ACCESS_REVOKED, &[ACCESS_GRANTED]),
    };
    let Some(r) = records.iter().find(|r| r.login.eq_ignore_ascii_case(who) || r.dn.eq_ignore_ascii_case(who)) else {
        return fail(&Error::new(
            "access.unknown",
            format!("Für „{who}“ gibt es keinen Antrag. De-Mail ohne Antrag gibt die Verzeichnisgruppe ([identity] demail_group)."),
            format!("There is no request for \"{who}\". De-Mail without a request comes from the directory group ([identity] demail_group)."),
        ));
    };
    if !from.contains(&r.state.as_str()) {
        return fail(&Error::new(
            "access.state",
            format!("{} ({}) ist „{}“; das lässt sich nicht auf „{to}“ ändern.", r.name, r.login, r.state),
            format!("{} ({}) is \"{}\"; that cannot change to \"{to}\".", r.name, r.login, r.state),
        ));
    }
    let by = administrator();
    let record =
        archive::AccessRecord { state: to.into(), time: spool::now() as i64, by: format!("admin:{by}"), ..r.clone() };
    match a.record_access(&record, &format!("admin:{by}"), &r.login) {
        Ok(e) => {
            println!("{}", serde_json::json!({"access": record, "archive_seq": e.seq}));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn queue(cfg: &config::Config, cmd: QueueCmd) -> ExitCode {
    if cfg.storage.backend == config::Backend::Postgres {
        return queue_pg(cfg, cmd);
    }
    let s = match spool::Spool::open(&cfg.gateway.spool_dir) {
        Ok(s) => s,
        Err(e) => return spool_error(e),
    };
    match cmd {
        QueueCmd::List => match s.list() {
            Ok(l) => {
                for (m, st) in l {
                    println!("{}", serde_json::json!({ "meta": m, "state": st }));
                }
                ExitCode::SUCCESS
            }
            Err(e) => spool_error(e),
        },
        QueueCmd::Retry { id, all } => {
            let ids: Vec<String> = match (id, all) {
                (Some(id), false) => vec![id],
                (None, true) => s.list().map(|l| l.into_iter().map(|(m, _)| m.id).collect()).unwrap_or_default(),
                _ => {
                    return fail(&Error::new(
                        "queue.id_or_all",
                        "Eine Kennung oder --all angeben.",
                        "Give one id or --all.",
                    ))
                }
            };
            for id in &ids {
                if !s.exists(id) {
                    return not_queued(id);
                }
                let st = spool::State { held: false, next_try: 0, ..s.state(id) };
                if let Err(e) = s.set_state(id, &st) {
                    return spool_error(e);
                }
            }
            println!("{}", serde_json::json!({ "retry": ids }));
            ExitCode::SUCCESS
        }
        QueueCmd::Drop { id } => {
            if !s.exists(&id) {
                return not_queued(&id);
            }
            match s.remove(&id) {
                Ok(()) => {
                    tracing::warn!(id = %id, "dropped by administrator");
                    println!("{}", serde_json::json!({ "dropped": id }));
                    ExitCode::SUCCESS
                }
                Err(e) => spool_error(e),
            }
        }
    }
}

/// One secret line from a terminal (no echo, asked twice) or from stdin.
fn read_secret(what: &str) -> Result<String, ExitCode> {
    use std::io::IsTerminal;
    let read_err = |e: std::io::Error| {
        fail(&Error::new("secret.input_unreadable", "Eingabe nicht lesbar.", "cannot read input.").caused_by(e))
    };
    let value = if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password(format!("{what}: ")).map_err(read_err)?;
        let b = rpassword::prompt_password("Wiederholen / repeat: ").map_err(read_err)?;
        if a != b {
            return Err(fail(&Error::new(
                "secret.entries_differ",
                "Die Eingaben stimmen nicht überein; nichts gespeichert.",
                "the entries differ; nothing stored.",
            )));
        }
        a
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(read_err)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if value.is_empty() || value.contains(['\r', '\n', '\0']) {
        return Err(fail(&Error::new(
            "secret.empty_or_multiline",
            "Leeres oder mehrzeiliges Geheimnis; nichts gespeichert.",
            "empty or multi-line secret; nothing stored.",
        )));
    }
    Ok(value)
}

fn secret(cfg: &config::Config, cmd: SecretCmd, store: &demail_gateway::secret::CredStore) -> ExitCode {
    match cmd {
        SecretCmd::List => secret_list(cfg, store),
        SecretCmd::Set { kind, name } if kind != "seal-key" => secret_set(cfg, &kind, name, store),
        SecretCmd::Set { .. } => seal_key(cfg, SealOp::Set, store),
        SecretCmd::Generate { .. } => seal_key(cfg, SealOp::Generate, store),
        SecretCmd::Public { .. } => seal_key(cfg, SealOp::Public, store),
    }
}

enum SealOp {
    Set,
    Generate,
    Public,
}

fn secret_list(cfg: &config::Config, store: &demail_gateway::secret::CredStore) -> ExitCode {
    let mut all: Vec<(String, config::Secret)> = Vec::new();
    for u in &cfg.outbound.users {
        all.push((format!("user {}", u.name), u.password()));
    }
    for p in &cfg.providers {
        all.push((format!("provider {}", p.name), p.secret()));
    }
    if let Some(d) = &cfg.directory {
        all.push(("directory".into(), d.bind_password()));
    }
    if let Some(sc) = &cfg.seal {
        all.push(("seal-key".into(), sc.key()));
    }
    if cfg.storage.backend == config::Backend::Postgres {
        all.push(("storage".into(), cfg.storage.password()));
    }
    let mut missing = 0;
    for (what, s) in all {
        let present = s.present(store);
        missing += usize::from(!present);
        println!("{}", serde_json::json!({"secret": what, "place": s.place(), "stored": present}));
    }
    if missing > 0 {
        return fail(&Error::new(
            "secret.missing",
            format!("{missing} Geheimnis(se) fehlen: demail-gateway secret set …"),
            format!("{missing} secret(s) missing: demail-gateway secret set …"),
        ));
    }
    ExitCode::SUCCESS
}

fn secret_set(
    cfg: &config::Config,
    kind: &str,
    name: Option<String>,
    store: &demail_gateway::secret::CredStore,
) -> ExitCode {
    if kind == "storage" {
        if cfg.storage.backend != config::Backend::Postgres {
            return fail(&Error::new(
                "secret.unknown_owner",
                "Die Konfiguration nennt keine Datenbank ([storage] backend = \"postgres\").",
                "The configuration names no database ([storage] backend = \"postgres\").",
            ));
        }
        return store_secret(cfg.storage.password(), "storage", store);
    }
    if kind == "directory" {
        let Some(d) = &cfg.directory else {
            return fail(&Error::new(
                "secret.unknown_owner",
                "Kein Abschnitt [directory] in der Konfiguration.",
                "No [directory] section in the configuration.",
            ));
        };
        return store_secret(d.bind_password(), "directory", store);
    }
    let Some(name) = name else {
        return fail(&Error::new(
            "secret.name_missing",
            format!("Name fehlt: demail-gateway secret set {kind} NAME"),
            format!("name missing: demail-gateway secret set {kind} NAME"),
        ));
    };
    let target = if kind == "provider" {
        cfg.providers.iter().find(|p| p.name == name).map(|p| p.secret())
    } else {
        cfg.outbound.users.iter().find(|u| u.name == name).map(|u| u.password())
    };
    let Some(target) = target else {
        return fail(&Error::new(
            "secret.unknown_owner",
            format!("Kein {kind} „{name}“ in der Konfiguration."),
            format!("no {kind} \"{name}\" in the configuration."),
        ));
    };
    store_secret(target, &format!("{kind} {name}"), store)
}

fn store_secret(target: config::Secret, what: &str, store: &demail_gateway::secret::CredStore) -> ExitCode {
    let value = match read_secret(&format!("Geheimnis für {what} / secret for {what}")) {
        Ok(v) => v,
        Err(code) => return code,
    };
    match target.store(&value, store) {
        Ok(place) => {
            println!("gespeichert / stored: {place}");
            println!("Danach / then: systemctl restart demail-gateway");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn seal_key(cfg: &config::Config, op: SealOp, store: &demail_gateway::secret::CredStore) -> ExitCode {
    use base64::Engine;
    let Some(sc) = &cfg.seal else {
        return fail(&Error::new(
            "seal.not_configured",
            "Abschnitt [seal] mit kid und key_credential oder key_keyring fehlt in der Konfiguration.",
            "section [seal] with kid and key_credential or key_keyring is missing from the configuration.",
        ));
    };
    let key = match op {
        SealOp::Set => {
            let line = match read_secret("Siegel-Schlüssel (Base64) / seal key (base64)") {
                Ok(v) => v,
                Err(code) => return code,
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(line.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok());
            let Some(key) = bytes else {
                return fail(&Error::new(
                    "seal.key_invalid",
                    "Erwartet: 32 Byte Ed25519-Privatschlüssel in Base64.",
                    "expected: a 32-byte Ed25519 private key in base64.",
                ));
            };
            if let Err(e) = sc.write_key(&key, store) {
                return fail(&e);
            }
            key
        }
        SealOp::Generate => {
            let mut key = [0u8; 32];
            if getrandom::fill(&mut key).is_err() {
                return fail(&Error::new(
                    "seal.no_randomness",
                    "Kein Zufall vom System.",
                    "no randomness from the OS.",
                ));
            }
            if let Err(e) = sc.write_key(&key, store) {
                return fail(&e);
            }
            key
        }
        SealOp::Public => match sc.read_key_admin(store) {
            Ok(k) => k,
            Err(e) => return fail(&e),
        },
    };
    // Only the public half is ever printed: it goes into the policy's [seal] public_keys.
    println!("{}", demail_core::seal::public_key(&sc.kid, &key));
    ExitCode::SUCCESS
}

fn serve(cfg: config::Config, policy: demail_core::Policy) -> ExitCode {
    // The Kerberos library reads the keytab's place from the environment; set it before
    // any thread starts (the runtime's workers, the GSS calls).
    if let Some(kt) = &cfg.identity.keytab {
        std::env::set_var("KRB5_KTNAME", format!("FILE:{}", kt.display()));
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&start_failed(e)),
    };
    rt.block_on(async move {
        let app = match app::App::open(cfg, policy).await {
            Ok(a) => a,
            Err(e) => return fail(&e),
        };
        match app.recover() {
            Ok(0) => {}
            Ok(n) => tracing::warn!(count = n, "recorded spooled messages after an unclean stop"),
            Err(e) => return fail(&e),
        }
        let (out_cfg, in_cfg) = match (app.outbound_smtp(), app.inbound_smtp()) {
            (Ok(o), Ok(i)) => (o, i),
            (Err(e), _) | (_, Err(e)) => return fail(&e),
        };
        let out_l = match tokio::net::TcpListener::bind(&app.cfg.outbound.listen).await {
            Ok(l) => l,
            Err(e) => return fail(&cannot_listen(&app.cfg.outbound.listen, e)),
        };
        let in_l = match tokio::net::TcpListener::bind(&app.cfg.inbound.listen).await {
            Ok(l) => l,
            Err(e) => return fail(&cannot_listen(&app.cfg.inbound.listen, e)),
        };
        for (side, l) in [("outbound", &app.cfg.outbound.limits), ("inbound", &app.cfg.inbound.limits)] {
            tracing::info!(
                listener = side,
                max_connections = l.max_connections,
                per_ip = l.max_connections_per_ip,
                pre_auth_timeout_secs = l.pre_auth_timeout_secs,
                auth_failures_per_ip = l.auth_failures_per_ip,
                auth_failures_per_user = l.auth_failures_per_user,
                auth_lockout_secs = l.auth_lockout_secs,
                auth_lockout_max_secs = l.auth_lockout_max_secs,
                "connection limits"
            );
        }
        tracing::info!(outbound = %app.cfg.outbound.listen, inbound = %app.cfg.inbound.listen, providers = app.cfg.providers.len(), "gateway ready");
        let out = tokio::spawn(demail_smtp::serve(out_l, Arc::new(out_cfg), Arc::new(app::Outbound(app.clone()))));
        let inb = tokio::spawn(demail_smtp::serve(in_l, Arc::new(in_cfg), Arc::new(app::Inbound(app.clone()))));
        let runner = tokio::spawn(app.clone().run_queue());
        tokio::spawn(app.clone().watch_overdue());
        let checkpoints = tokio::spawn(app.clone().run_checkpoints());
        if let Some(addr) = &app.cfg.health.listen {
            let l = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => return fail(&cannot_listen(addr, e)),
            };
            tracing::info!(health = %addr, "health and metrics: /healthz/live, /healthz/ready, /metrics");
            let router = demail_gateway::health::router(app.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(l, router).await {
                    tracing::error!(error = %e, "health listener stopped");
                }
            });
        }
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => return fail(&start_failed(e)),
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            r = out => tracing::error!(result = ?r, "outbound listener stopped"),
            r = inb => tracing::error!(result = ?r, "inbound listener stopped"),
        }
        // Not ready any more: while the balancer notices, sessions are still served.
        app.stop();
        if app.cfg.health.listen.is_some() && app.cfg.health.drain_secs > 0 {
            tracing::info!(secs = app.cfg.health.drain_secs, "stopping: not ready, draining");
            tokio::time::sleep(std::time::Duration::from_secs(app.cfg.health.drain_secs)).await;
        }
        // No new deliveries start now; those in flight finish or are given back.
        app.finish().await;
        runner.abort();
        // The last entries signed before the process ends.
        checkpoints.abort();
        if app.cfg.archive.checkpoint_secs > 0 {
            app.checkpoint().await;
        }
        // Everything acknowledged is in the spool or the database; nothing to flush.
        tracing::info!("gateway stopped");
        ExitCode::SUCCESS
    })
}

fn start_failed(e: std::io::Error) -> Error {
    Error::new("gateway.start_failed", "Das Gateway kann nicht starten.", "The gateway cannot start.").caused_by(e)
}

fn cannot_listen(addr: &str, e: std::io::Error) -> Error {
    Error::new(
        "listener.bind_failed",
        format!("Auf {addr} kann nicht gelauscht werden."),
        format!("cannot listen on {addr}."),
    )
    .caused_by(e)
}
