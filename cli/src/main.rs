//! `demail`: the admin CLI. JSON on stdout; exit 0 when the command ran (a
//! `blocked` verdict is data), 1 when `policy check` finds the policy invalid,
//! 2 for bad input with a German and English message on stderr.

use clap::{Args, Parser, Subcommand};
use demail_core::api::{self, ApiError, Env};
use demail_core::Policy;
use serde_json::{json, Value};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "demail", version, about = "De-Mail rules for IT: test subjects, send checks, classification and policies")]
struct Cli {
    /// Policy file (TOML or JSON). Default: $DEMAIL_POLICY, then /etc/demail/policy.toml, then built-in rules.
    #[arg(long, global = true, value_name = "FILE")]
    policy: Option<PathBuf>,
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
    ParityDump {
        cases_dir: PathBuf,
        corpus_dir: PathBuf,
    },
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
enum PolicyCmd {
    /// Validate a policy; errors name line and field.
    Check { file: PathBuf },
    /// Print the effective policy (defaults filled in) as JSON.
    Show,
}

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
    let now_millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Env { now_millis, entropy }
}

fn options(list: &[String]) -> Result<Value, Fail> {
    let set = demail_core::OptionSet::parse_ids(list.iter().map(String::as_str)).map_err(|r| Fail::Input(r.into()))?;
    Ok(serde_json::to_value(set).unwrap_or(Value::Null))
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
        Cmd::Policy(PolicyCmd::Check { .. }) | Cmd::ParityDump { .. } => unreachable!("handled above"),
        Cmd::Map { address, direction } => call("map", json!({ "address": address, "direction": direction })),
        Cmd::Call { op, input } => {
            let text = if input == "-" { String::from_utf8_lossy(&read_file("-")?).into_owned() } else { input };
            let v: Value = serde_json::from_str(&text).map_err(|e| {
                input_error("input.json", format!("Die Eingabe ist kein gültiges JSON: {e}"), format!("The input is not valid JSON: {e}"))
            })?;
            call(&op, v)
        }
    }
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
            input_error("input.json", format!("{}: kein gültiges JSON: {e}", f.display()), format!("{}: invalid JSON: {e}", f.display()))
        })?;
        let policy = doc["policy"].as_str();
        // The wasm build reads JSON policies only; hand the Node side the same policy as JSON.
        let policy_json = api::load_policy(policy).ok().and_then(|p| serde_json::to_string(&p).ok());
        policies.insert(f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), json!(policy_json));
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
        let out = api::envelope(
            serde_json::to_value(demail_core::classify::classify_raw(&raw, &policy))
                .map_err(|e| demail_core::Reason::new("internal", e.to_string(), e.to_string()).into()),
        );
        corpus.insert(rel, json!(out));
    }
    let corpus_policy = serde_json::to_string(&policy).ok();
    Ok(json!({ "cases": cases, "policies": policies, "corpus": corpus, "corpus_policy": corpus_policy }))
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
    match run(cli) {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(Fail::Invalid(v)) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            for e in v["errors"].as_array().into_iter().flatten() {
                eprintln!("Fehler [{}]: {}", e["code"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or(""));
                eprintln!("Error [{}]: {}", e["code"].as_str().unwrap_or(""), e["message_en"].as_str().unwrap_or(""));
            }
            ExitCode::from(1)
        }
        Err(Fail::Input(e)) => {
            eprintln!("Fehler [{}]: {}", e.reason.code, e.reason.message);
            eprintln!("Error [{}]: {}", e.reason.code, e.reason.message_en);
            ExitCode::from(2)
        }
    }
}
