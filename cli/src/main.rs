//! `demail`: the admin CLI. JSON on stdout; exit 0 when the command ran (a
//! `blocked` verdict is data), 1 when `policy check` finds the policy invalid (or
//! `doctor` finds an error), 2 for bad input with a German and English message on stderr.
//!
//! The helper commands (`serve`, `pair`, `credentials`, `outbox`, `doctor`, `config`)
//! live in the `demail-helper` crate; this file only parses their arguments.

use clap::{Args, Parser, Subcommand};
use demail_core::api::{self, ApiError, Env};
use demail_core::Policy;
use demail_helper::error::bilingual;
use serde_json::{json, Value};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "demail",
    version,
    about = "De-Mail rules for IT: test subjects, send checks, classification and policies"
)]
struct Cli {
    /// Policy file (TOML or JSON). Default: $DEMAIL_POLICY, then /etc/demail/policy.toml, then built-in rules.
    #[arg(long, global = true, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Helper commands: the per-user helper configuration to use instead of
    /// $DEMAIL_HELPER_CONFIG or ~/.config/demail/helper.toml (the machine file
    /// /etc/demail/helper.toml and its locks always apply).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Subject tags ([P, VB] Betreff).
    #[command(subcommand)]
    Subject(SubjectCmd),
    /// Decide whether a message goes as e-mail, as De-Mail, or is blocked.
    Check(CheckArgs),
    /// Classify a received message (.eml file, or - for stdin).
    Classify { file: String },
    /// The gateway seal of received messages.
    #[command(subcommand)]
    Seal(SealCmd),
    /// Check a received De-Mail or receipt (.eml file, or - for stdin): the provider's
    /// X-de-mail-integrity, the gateway's mark and, for a receipt, whether it confirms the
    /// message as handed over. One JSON object; exit 0 whatever the verdict, 2 for
    /// unreadable input.
    Verify {
        /// A provider CA (PEM file, may hold several certificates), trusted besides the
        /// policy's `[integrity] trusted_providers`. Repeatable.
        #[arg(long, value_name = "CA.pem")]
        trust: Vec<PathBuf>,
        /// The message as handed over to the provider, for comparing a receipt with it.
        #[arg(long, value_name = "FILE")]
        sent: Option<PathBuf>,
        file: String,
    },
    /// The X-de-mail-* header lines for a set of options.
    Headers {
        #[arg(long, value_delimiter = ',', default_value = "")]
        options: Vec<String>,
        #[arg(long)]
        private_id: Option<String>,
        /// Sender address, for the pseudonym rule.
        #[arg(long)]
        sender: Option<String>,
    },
    /// Policy files.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Map an address between e-mail and De-Mail.
    Map {
        address: String,
        /// to-demail (outbound) or to-email (inbound).
        #[arg(long, default_value = "to-demail")]
        direction: String,
    },
    /// Run the local helper in the foreground (loopback API, outbox, relay).
    Serve {
        /// Port on 127.0.0.1; 0 picks a free one (printed as JSON on stdout).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Run the helper with its tray icon and settings window (build with `--features gui`).
    #[cfg(feature = "gui")]
    Tray {
        /// Port on 127.0.0.1; 0 picks a free one.
        #[arg(long)]
        port: Option<u16>,
    },
    /// Pairings between add-ins and this user's helper.
    #[command(subcommand)]
    Pair(PairCmd),
    /// The gateway password in the OS keyring.
    #[command(subcommand)]
    Credentials(CredentialsCmd),
    /// The helper's De-Mail outbox.
    #[command(subcommand)]
    Outbox(OutboxCmd),
    /// Check configuration, policy, keyring, gateway, TLS and pairings; explain each finding.
    Doctor {
        /// Skip the network checks (gateway reachability, TLS, login).
        #[arg(long)]
        offline: bool,
    },
    /// The helper configuration (machine file plus per-user file).
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Print the native-messaging host manifest for the add-in (discovery).
    NativeManifest {
        /// The add-in's id; the host serves no other (default: demail-addin@open-demail.de).
        #[arg(long, default_value = demail_helper::discovery::ADDIN_ID)]
        extension_id: String,
        /// Path of demail-native-host; default: next to this binary.
        #[arg(long)]
        host_path: Option<PathBuf>,
    },
    /// Run a core operation with JSON input (for scripts and parity tests).
    #[command(hide = true)]
    Call {
        op: String,
        /// JSON input, or - for stdin.
        #[arg(default_value = "null")]
        input: String,
    },
    /// Print native results for every case file and corpus message, for the wasm parity test.
    #[command(hide = true)]
    ParityDump { cases_dir: PathBuf, corpus_dir: PathBuf },
}

#[derive(Subcommand)]
enum SealCmd {
    /// Verify the seal of a received message (.eml file, or - for stdin) with the policy's `[seal]` keys.
    Verify { file: String },
}

#[derive(Subcommand)]
enum SubjectCmd {
    /// Read tags and print the stripped subject.
    Parse { subject: String },
    /// Write options as tags.
    Format {
        #[arg(long, value_delimiter = ',', default_value = "")]
        options: Vec<String>,
        subject: String,
    },
}

#[derive(Subcommand)]
enum PairCmd {
    /// All pairings and open requests.
    List,
    /// Approve the request whose code the add-in shows.
    Approve { code: String },
    /// Deny a request.
    Deny { code: String },
    /// Revoke a pairing by id (p_…), or `all`.
    Revoke { id: String },
    /// IT pre-provisioning: create an approved pairing and print its token once (only when
    /// the machine configuration sets `pairing.provision = true`).
    Provision {
        #[arg(long, default_value = "provisioned add-in")]
        client: String,
    },
}

#[derive(Subcommand)]
enum CredentialsCmd {
    /// Store the gateway password (prompted without echo).
    Set {
        /// Read the password from the first line of stdin (for scripts).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Connect to the gateway with TLS and sign in (Kerberos or password); sends nothing.
    Test,
    /// Remove the password from the keyring.
    Delete,
    /// Ask the gateway for the De-Mail right for the signed-in person ("De-Mail für mich beantragen").
    RequestAccess,
}

#[derive(Subcommand)]
enum OutboxCmd {
    /// Messages with their state, newest first.
    List {
        /// queued, sending, sent, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
    },
    /// Send a failed message again.
    Retry { id: String },
    /// Hold back a queued or failed message.
    Cancel { id: String },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// The effective configuration, with the files read and the locked keys.
    Show,
    /// Change a key in the per-user file (refused for keys IT locked).
    Set { key: String, value: String },
    /// Every key.
    Keys,
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Validate a policy; errors name line and field.
    Check { file: PathBuf },
    /// Print the effective policy (defaults filled in) as JSON.
    Show,
    /// Put the effective policy (--policy) into a Thunderbird policies.json, so the add-in
    /// checks by the same rules as helper and gateway; prints the updated file.
    Embed {
        /// The policies.json to update (Linux: /etc/thunderbird/policies/policies.json).
        file: PathBuf,
        /// The add-in's id in `3rdparty.Extensions`.
        #[arg(long, default_value = ADDIN_ID)]
        extension_id: String,
        /// FILE is the add-in's settings object itself, not a whole policies.json (Windows:
        /// installer/windows/addin-settings.json, the value `<id>` under
        /// `…\Mozilla\Thunderbird\3rdparty\Extensions`).
        #[arg(long)]
        settings: bool,
        /// Replace FILE with the result (written next to it, then renamed: never half a file)
        /// instead of printing it.
        #[arg(long)]
        in_place: bool,
    },
}

/// The Thunderbird add-in's id (addin/thunderbird/manifest.json).
const ADDIN_ID: &str = "demail-addin@open-demail.de";

#[derive(Args)]
struct CheckArgs {
    #[arg(long)]
    from: String,
    /// Recipients; an RFC 5322 address list ("Name <a@b>, c@d").
    #[arg(long, default_value = "")]
    to: String,
    #[arg(long, default_value = "")]
    cc: String,
    #[arg(long, default_value = "")]
    bcc: String,
    #[arg(long, value_delimiter = ',', default_value = "")]
    options: Vec<String>,
    /// Message size in bytes.
    #[arg(long)]
    size: Option<u64>,
    /// The message replies to or forwards a received De-Mail.
    #[arg(long)]
    forwarded_demail: bool,
    /// The message is explicitly marked as De-Mail.
    #[arg(long)]
    marked: bool,
    #[arg(long)]
    private_id: Option<String>,
}

enum Fail {
    Input(ApiError),
    Invalid(Value),
    /// `doctor` found errors: the findings go to stdout, exit 1.
    Findings(Value),
}

fn input_error(code: &str, de: String, en: String) -> Fail {
    Fail::Input(demail_core::Reason::new(code, de, en).into())
}

fn read_file(path: &str) -> Result<Vec<u8>, Fail> {
    let mut buf = Vec::new();
    let r = if path == "-" {
        std::io::stdin().read_to_end(&mut buf).map(|_| ())
    } else {
        std::fs::read(path).map(|b| buf = b)
    };
    r.map(|_| buf).map_err(|e| {
        input_error(
            "io.read",
            format!("Datei „{path}“ kann nicht gelesen werden: {e}"),
            format!("Cannot read file \"{path}\": {e}"),
        )
    })
}

/// The certificates of a `--trust` PEM file, checked.
fn trusted_cas(path: &std::path::Path) -> Result<Vec<String>, Fail> {
    let text = String::from_utf8_lossy(&read_file(&path.to_string_lossy())?).into_owned();
    let blocks: Vec<String> = text
        .split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|b| format!("-----BEGIN CERTIFICATE-----{}", b.split("-----END CERTIFICATE-----").next().unwrap_or("")))
        .map(|b| format!("{b}-----END CERTIFICATE-----"))
        .collect();
    let bad = |why: &str, why_en: &str| {
        input_error(
            "verify.trust_invalid",
            format!("--trust {}: {why}", path.display()),
            format!("--trust {}: {why_en}", path.display()),
        )
    };
    if blocks.is_empty() {
        return Err(bad("keine PEM-Zertifikate gefunden.", "no PEM certificates found."));
    }
    for b in &blocks {
        demail_core::cert::Cert::from_text(b).map_err(|r| bad(&r.message, &r.message_en))?;
    }
    Ok(blocks)
}

fn load_policy(cli_path: &Option<PathBuf>) -> Result<Policy, Fail> {
    let path = cli_path
        .clone()
        .or_else(|| std::env::var_os("DEMAIL_POLICY").map(PathBuf::from))
        .or_else(|| Some(PathBuf::from("/etc/demail/policy.toml")).filter(|p| p.exists()));
    let Some(path) = path else { return Ok(Policy::default()) };
    let bytes = read_file(&path.to_string_lossy())?;
    let src = String::from_utf8(bytes).map_err(|_| {
        input_error(
            "policy.encoding",
            format!("Die Richtlinie {} ist nicht UTF-8-kodiert.", path.display()),
            format!("The policy {} is not UTF-8 encoded.", path.display()),
        )
    })?;
    Policy::parse(&src).map_err(|e| Fail::Input(e.with_file(path.display().to_string()).into()))
}

fn env() -> Env {
    let mut entropy = vec![0u8; 16];
    // Without entropy the generated id is still valid, only less unique; never fail for it.
    let _ = getrandom::fill(&mut entropy);
    let now_millis =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    Env { now_millis, entropy }
}

fn options(list: &[String]) -> Result<Value, Fail> {
    let set = demail_core::OptionSet::parse_ids(list.iter().map(String::as_str)).map_err(|r| Fail::Input(r.into()))?;
    Ok(serde_json::to_value(set).unwrap_or(Value::Null))
}

/// `policies.json` with `policies.3rdparty.Extensions[id].policy` set (or, with `settings_object`,
/// the add-in's settings object with `policy` set); other content kept.
fn embed_policy(bytes: &[u8], policy: &Policy, id: &str, settings_object: bool) -> Result<Value, Fail> {
    let invalid = |why: &str, why_en: &str| {
        input_error(
            "policies_json.invalid",
            format!("Die Thunderbird-Richtlinie (policies.json) ist nicht verwendbar: {why}."),
            format!("The Thunderbird policy file (policies.json) cannot be used: {why_en}."),
        )
    };
    let mut doc: Value = serde_json::from_slice(bytes).map_err(|e| {
        let e = e.to_string();
        invalid(&format!("kein gültiges JSON ({e})"), &format!("not valid JSON ({e})"))
    })?;
    let mut node = &mut doc;
    let mut parent = None;
    let path: &[&str] = if settings_object { &[] } else { &["policies", "3rdparty", "Extensions", id] };
    for &key in path {
        let Value::Object(map) = node else {
            return Err(match parent {
                None => invalid("die Datei enthält kein JSON-Objekt", "the file holds no JSON object"),
                Some(p) => invalid(&format!("„{p}“ ist kein JSON-Objekt"), &format!("\"{p}\" is not a JSON object")),
            });
        };
        node = map.entry(key).or_insert_with(|| json!({}));
        parent = Some(key);
    }
    let Value::Object(settings) = node else {
        return Err(invalid(
            &format!("die Einstellungen für „{id}“ sind kein JSON-Objekt"),
            &format!("the settings for \"{id}\" are not a JSON object"),
        ));
    };
    settings.insert("policy".into(), serde_json::to_value(policy).unwrap_or(Value::Null));
    Ok(doc)
}

/// Replace `path` with `doc` atomically, keeping the old file's permissions (Thunderbird,
/// not only root, reads policies.json).
fn replace_file(path: &std::path::Path, doc: &Value) -> Result<(), Fail> {
    let fail = |e: std::io::Error| {
        input_error(
            "file.write",
            format!("{} kann nicht geschrieben werden: {e}", path.display()),
            format!("Cannot write {}: {e}", path.display()),
        )
    };
    let perms = std::fs::metadata(path).map_err(fail)?.permissions();
    let text = format!("{}\n", serde_json::to_string_pretty(doc).unwrap_or_default());
    demail_helper::store::write_atomic_with(path, text.as_bytes(), Some(perms)).map_err(fail)
}

fn run(cli: Cli) -> Result<Value, Fail> {
    let env = env();
    if let Cmd::Policy(PolicyCmd::Check { file }) = &cli.cmd {
        let bytes = read_file(&file.to_string_lossy())?;
        let src = String::from_utf8_lossy(&bytes);
        let name = file.display().to_string();
        let v = match Policy::parse(&src) {
            Ok(p) => json!({ "valid": true, "file": name, "errors": [], "policy": p }),
            Err(e) => json!({ "valid": false, "file": name, "errors": [e.with_file(name.clone())], "policy": null }),
        };
        return if v["valid"] == json!(true) { Ok(v) } else { Err(Fail::Invalid(v)) };
    }
    if let Cmd::ParityDump { cases_dir, corpus_dir } = &cli.cmd {
        return parity_dump(cases_dir, corpus_dir);
    }
    if let Some(r) = helper_command(&cli) {
        return r;
    }
    let policy = load_policy(&cli.policy)?;
    let call = |op: &str, input: Value| api::call(op, &policy, &input, &env).map_err(Fail::Input);
    match cli.cmd {
        Cmd::Subject(SubjectCmd::Parse { subject }) => call("subject.parse", json!(subject)),
        Cmd::Subject(SubjectCmd::Format { options: o, subject }) => {
            call("subject.format", json!({ "subject": subject, "options": options(&o)? }))
        }
        Cmd::Check(a) => {
            let split = |s: &str| if s.trim().is_empty() { vec![] } else { vec![s.to_string()] };
            call(
                "check",
                json!({
                    "from": a.from, "to": split(&a.to), "cc": split(&a.cc), "bcc": split(&a.bcc),
                    "options": options(&a.options)?, "size": a.size, "forwarded_demail": a.forwarded_demail,
                    "marked": a.marked, "private_id": a.private_id,
                }),
            )
        }
        Cmd::Classify { file } => {
            let raw = read_file(&file)?;
            Ok(serde_json::to_value(demail_core::classify::classify_raw(&raw, &policy)).unwrap_or(Value::Null))
        }
        Cmd::Headers { options: o, private_id, sender } => {
            call("headers", json!({ "options": options(&o)?, "private_id": private_id, "sender": sender }))
        }
        Cmd::Policy(PolicyCmd::Show) => Ok(serde_json::to_value(&policy).unwrap_or(Value::Null)),
        Cmd::Policy(PolicyCmd::Embed { file, extension_id, settings, in_place }) => {
            let doc = embed_policy(&read_file(&file.to_string_lossy())?, &policy, &extension_id, settings)?;
            if !in_place {
                return Ok(doc);
            }
            replace_file(&file, &doc)?;
            Ok(json!({ "file": file, "written": true }))
        }
        Cmd::Policy(PolicyCmd::Check { .. }) | Cmd::ParityDump { .. } => unreachable!("handled above"),
        Cmd::Serve { .. }
        | Cmd::Pair(_)
        | Cmd::Credentials(_)
        | Cmd::Outbox(_)
        | Cmd::Doctor { .. }
        | Cmd::Config(_)
        | Cmd::NativeManifest { .. } => unreachable!("handled by helper_command"),
        #[cfg(feature = "gui")]
        Cmd::Tray { .. } => unreachable!("handled in main"),
        Cmd::Seal(SealCmd::Verify { file }) => call("seal.verify", json!(String::from_utf8_lossy(&read_file(&file)?))),
        Cmd::Verify { trust, sent, file } => {
            let mut policy = policy;
            for t in &trust {
                policy.integrity.trusted_providers.extend(trusted_cas(t)?);
            }
            let raw = read_file(&file)?;
            let sent = sent.map(|s| read_file(&s.to_string_lossy())).transpose()?;
            let report = demail_core::proof::report(&raw, sent.as_deref(), &policy, env.now_millis / 1000);
            Ok(serde_json::to_value(report).unwrap_or(Value::Null))
        }
        Cmd::Map { address, direction } => call("map", json!({ "address": address, "direction": direction })),
        Cmd::Call { op, input } => {
            let text = if input == "-" { String::from_utf8_lossy(&read_file("-")?).into_owned() } else { input };
            let v: Value = serde_json::from_str(&text).map_err(|e| {
                input_error(
                    "input.json",
                    format!("Die Eingabe ist kein gültiges JSON: {e}"),
                    format!("The input is not valid JSON: {e}"),
                )
            })?;
            call(&op, v)
        }
    }
}

/// A helper command failed: the admin reads the reason, the helper's log gets the cause.
fn admin_fail(cfg: &demail_helper::config::Config, e: demail_helper::error::Error) -> Fail {
    demail_helper::server::log_cause_to_file(cfg, &e);
    Fail::Input(e.reason.into())
}

fn config_fail(e: Box<demail_helper::config::ConfigIssue>) -> Fail {
    Fail::Input(demail_core::Reason::from(e).into())
}

fn helper_config(cli: &Cli) -> Result<(demail_helper::config::Config, demail_helper::config::Paths), Fail> {
    demail_helper::server::load_config(cli.config.as_deref()).map_err(config_fail)
}

fn read_password(from_stdin: bool) -> Result<String, Fail> {
    let fail = |e: std::io::Error| {
        input_error(
            "io.read",
            format!("Das Kennwort kann nicht gelesen werden: {e}"),
            format!("Cannot read the password: {e}"),
        )
    };
    let pw = if from_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(fail)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        rpassword::prompt_password("Kennwort für das Gateway / gateway password: ").map_err(fail)?
    };
    Ok(pw)
}

/// The helper's commands; `None` for every other command.
fn helper_command(cli: &Cli) -> Option<Result<Value, Fail>> {
    use demail_helper::admin;
    let r = match &cli.cmd {
        Cmd::Pair(c) => helper_config(cli).and_then(|(cfg, _)| {
            match c {
                PairCmd::List => admin::pair_list(&cfg),
                PairCmd::Approve { code } => admin::pair_decide(&cfg, code, true),
                PairCmd::Deny { code } => admin::pair_decide(&cfg, code, false),
                PairCmd::Revoke { id } => admin::pair_revoke(&cfg, id),
                PairCmd::Provision { client } => admin::pair_provision(&cfg, client),
            }
            .map_err(|e| admin_fail(&cfg, e))
        }),
        Cmd::Credentials(c) => helper_config(cli).and_then(|(cfg, _)| {
            match c {
                CredentialsCmd::Set { password_stdin } => {
                    admin::credentials_set(&cfg, &read_password(*password_stdin)?)
                }
                CredentialsCmd::Test => admin::credentials_test(&cfg),
                CredentialsCmd::RequestAccess => admin::request_access(&cfg),
                CredentialsCmd::Delete => admin::credentials_delete(&cfg),
            }
            .map_err(|e| admin_fail(&cfg, e))
        }),
        Cmd::Outbox(c) => helper_config(cli).and_then(|(cfg, _)| {
            match c {
                OutboxCmd::List { status } => admin::outbox_list(&cfg, status.as_deref()),
                OutboxCmd::Retry { id } => admin::outbox_retry(&cfg, id),
                OutboxCmd::Cancel { id } => admin::outbox_cancel(&cfg, id),
            }
            .map_err(|e| admin_fail(&cfg, e))
        }),
        Cmd::Doctor { offline } => {
            let paths = demail_helper::config::Paths::resolve(cli.config.as_deref());
            let v = admin::doctor(&paths, !offline);
            if v["ok"] == json!(true) {
                Ok(v)
            } else {
                Err(Fail::Findings(v))
            }
        }
        Cmd::Config(c) => {
            let paths = demail_helper::config::Paths::resolve(cli.config.as_deref());
            match c {
                ConfigCmd::Show => demail_helper::config::Config::load(&paths)
                    .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
                    .map_err(config_fail),
                ConfigCmd::Set { key, value } => demail_helper::config::set_user_value(&paths, key, value)
                    .map(|c| json!({ "file": paths.user, "config": c }))
                    .map_err(config_fail),
                ConfigCmd::Keys => Ok(json!(demail_helper::config::KEYS)),
            }
        }
        Cmd::NativeManifest { extension_id, host_path } => {
            let path = host_path.clone().unwrap_or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|p| p.parent().map(|d| d.join("demail-native-host")))
                    .unwrap_or_else(|| PathBuf::from("/usr/bin/demail-native-host"))
            });
            Ok(demail_helper::discovery::native_manifest(&path, extension_id))
        }
        _ => return None,
    };
    Some(r)
}

/// Fixed clock and entropy, so generated private-ids are comparable across runs.
fn fixed_env() -> Env {
    Env { now_millis: 1_795_775_532_000, entropy: vec![7; 16] }
}

fn files_with(dir: &std::path::Path, ext: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_with(&p, ext, out);
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
}

fn parity_dump(cases_dir: &std::path::Path, corpus_dir: &std::path::Path) -> Result<Value, Fail> {
    let env = fixed_env();
    let mut cases = serde_json::Map::new();
    let mut policies = serde_json::Map::new();
    let mut files = Vec::new();
    files_with(cases_dir, "json", &mut files);
    files.sort();
    for f in files {
        let text = String::from_utf8_lossy(&read_file(&f.to_string_lossy())?).into_owned();
        let doc: Value = serde_json::from_str(&text).map_err(|e| {
            input_error(
                "input.json",
                format!("{}: kein gültiges JSON: {e}", f.display()),
                format!("{}: invalid JSON: {e}", f.display()),
            )
        })?;
        let policy = doc["policy"].as_str();
        // The wasm build reads JSON policies only; hand the Node side the same policy as JSON.
        let policy_json = api::load_policy(policy).ok().and_then(|p| serde_json::to_string(&p).ok());
        policies
            .insert(f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), json!(policy_json));
        let outs: Vec<Value> = doc["cases"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| json!(api::call_json(c["op"].as_str().unwrap_or(""), policy, &c["input"].to_string(), &env)))
            .collect();
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        cases.insert(name, Value::Array(outs));
    }
    let mut corpus = serde_json::Map::new();
    let policy_src = std::fs::read_to_string(corpus_dir.join("policy.toml")).ok();
    let policy = api::load_policy(policy_src.as_deref()).map_err(Fail::Input)?;
    let mut emls = Vec::new();
    files_with(corpus_dir, "eml", &mut emls);
    emls.sort();
    for f in emls {
        let raw = read_file(&f.to_string_lossy())?;
        let rel = f.strip_prefix(corpus_dir).unwrap_or(&f).to_string_lossy().into_owned();
        let out = api::envelope(Ok(api::Output::Classification(demail_core::classify::classify_raw(&raw, &policy))));
        corpus.insert(rel, json!(out));
    }
    let corpus_policy = serde_json::to_string(&policy).ok();
    // Integrity fixtures: the native verdict and what `integrity.prepare` lists, under
    // their own policy (the wasm side checks with WebCrypto and must reach the same verdict).
    let dir = corpus_dir.join("integrity");
    let policy_src = std::fs::read_to_string(dir.join("policy.toml")).ok();
    let ipolicy = api::load_policy(policy_src.as_deref()).map_err(Fail::Input)?;
    let mut integrity = serde_json::Map::new();
    let mut emls = Vec::new();
    files_with(&dir, "eml", &mut emls);
    emls.sort();
    for f in emls {
        let raw = read_file(&f.to_string_lossy())?;
        let rel = f.strip_prefix(corpus_dir).unwrap_or(&f).to_string_lossy().into_owned();
        let verify =
            api::envelope(api::integrity_verify(&raw, &ipolicy, env.now_millis, None).map(api::Output::Integrity));
        let prepared = api::integrity_prepare(&raw, &ipolicy, env.now_millis);
        let prepare = api::envelope(Ok(api::Output::IntegrityPrepared(prepared)));
        integrity.insert(rel, json!({ "verify": verify, "prepare": prepare }));
    }
    let integrity_policy = serde_json::to_string(&ipolicy).ok();
    Ok(json!({
        "cases": cases, "policies": policies, "corpus": corpus, "corpus_policy": corpus_policy,
        "integrity": integrity, "integrity_policy": integrity_policy,
    }))
}

/// The answer on stdout. A closed pipe (`demail … | head`) is not an error worth a
/// panic: the reader has what it wanted.
fn print_json(v: &Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::to_string_pretty(v).unwrap_or_default()).and_then(|()| out.flush());
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    #[cfg(feature = "gui")]
    if let Cmd::Tray { port } = &cli.cmd {
        let opts = demail_helper::server::ServeOptions { port: *port, config: cli.config.clone() };
        return match demail_tray::run(opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprint!("{}", bilingual(&e.reason));
                ExitCode::from(2)
            }
        };
    }
    if let Cmd::Serve { port } = &cli.cmd {
        let opts = demail_helper::server::ServeOptions { port: *port, config: cli.config.clone() };
        return match demail_helper::server::serve(opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprint!("{}", bilingual(&e.reason));
                ExitCode::from(2)
            }
        };
    }
    match run(cli) {
        Ok(v) => {
            print_json(&v);
            ExitCode::SUCCESS
        }
        Err(Fail::Invalid(v)) => {
            print_json(&v);
            for e in v["errors"].as_array().into_iter().flatten() {
                eprintln!("Fehler [{}]: {}", e["code"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or(""));
                eprintln!("Error [{}]: {}", e["code"].as_str().unwrap_or(""), e["message_en"].as_str().unwrap_or(""));
            }
            ExitCode::from(1)
        }
        Err(Fail::Findings(v)) => {
            print_json(&v);
            for f in v["findings"].as_array().into_iter().flatten().filter(|f| f["status"] == "error") {
                eprintln!("Fehler [{}]: {}", f["check"].as_str().unwrap_or(""), f["message"].as_str().unwrap_or(""));
                eprintln!("Error [{}]: {}", f["check"].as_str().unwrap_or(""), f["message_en"].as_str().unwrap_or(""));
            }
            ExitCode::from(1)
        }
        Err(Fail::Input(e)) => {
            eprint!("{}", bilingual(&e.reason));
            ExitCode::from(2)
        }
    }
}
