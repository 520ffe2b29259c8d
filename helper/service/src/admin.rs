//! The `demail` CLI's helper commands: pairing, outbox, credentials, doctor, config.
//! They work on the same per-user store as the running service (SQLite in WAL mode
//! allows both at once), so they also work while the service is stopped.

use crate::code;
use crate::config::{Config, Paths};
use crate::relay;
use crate::store::Store;
use demail_core::{Error, Reason};
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Duration;

/// A failed admin command: the reason for the person, the cause for the log.
pub type Result<T> = std::result::Result<T, Error>;

fn store(cfg: &Config) -> Result<Store> {
    Ok(Store::open(&cfg.data_dir())?)
}

// ------------------------------------------------------------------ pairing

pub fn pair_list(cfg: &Config) -> Result<Value> {
    let s = store(cfg)?;
    let now = crate::store::now_ms();
    let ttl = crate::pairing::token_ttl(cfg);
    let list: Vec<Value> = s
        .pairings()?
        .into_iter()
        .map(|p| {
            let mut v = serde_json::to_value(&p).unwrap_or(Value::Null);
            if p.status == "pending" && p.expires_at.is_some_and(|e| e <= now) {
                v["status"] = json!("expired");
                v.as_object_mut().map(|o| o.remove("code"));
            }
            if p.status == "approved" {
                // Approved tokens live token_days after their last use.
                let expires = p.last_used_at.or(p.decided_at).unwrap_or(p.created_at) + ttl;
                v["expires_at"] = json!(expires);
                if expires <= now {
                    v["status"] = json!("expired");
                }
            }
            v
        })
        .collect();
    Ok(json!({ "pairings": list }))
}

fn no_request(pairing: &str) -> Error {
    Error::new(
        code::PAIRING_UNKNOWN,
        format!("Keine offene Kopplungsanfrage mit dem Code „{pairing}“ (abgelaufen oder schon entschieden?)."),
        format!("No open pairing request with the code \"{pairing}\" (expired or already decided?)."),
    )
}

pub fn pair_decide(cfg: &Config, code: &str, approve: bool) -> Result<Value> {
    let mut s = store(cfg)?;
    let p = s.decide_by_code(code, approve)?.ok_or_else(|| no_request(code))?;
    Ok(json!({ "pairing": p }))
}

pub fn pair_revoke(cfg: &Config, id: &str) -> Result<Value> {
    let mut s = store(cfg)?;
    let n = s.revoke(id)?;
    if n == 0 {
        return Err(Error::new(
            code::PAIRING_UNKNOWN,
            format!("Keine aktive Kopplung „{id}“."),
            format!("No active pairing \"{id}\"."),
        ));
    }
    Ok(json!({ "revoked": n }))
}

/// IT pre-provisioning: an approved pairing whose token is printed once. Only where IT
/// allowed it in the machine file (`pairing.provision`): otherwise any program running as
/// the user could get a token this way without the user noticing.
pub fn pair_provision(cfg: &Config, client: &str) -> Result<Value> {
    if !cfg.pairing.provision {
        return Err(Error::new(
            code::PAIRING_PROVISION_DISABLED,
            "Kopplungen ohne Rückfrage darf nur die IT freigeben: „provision = true“ im Abschnitt [pairing] der Maschinen-Konfiguration (/etc/demail/helper.toml). Sonst das Add-in mit Code koppeln.",
            "Only IT may allow pairings without a question: \"provision = true\" in the [pairing] section of the machine configuration (/etc/demail/helper.toml). Otherwise pair the add-in with its code.",
        ));
    }
    let client: String = client.chars().filter(|c| !c.is_control()).take(100).collect();
    let mut s = store(cfg)?;
    let (p, token) = crate::pairing::provision(&mut s, &client)?;
    Ok(json!({ "pairing": p, "token": token }))
}

// ------------------------------------------------------------------ outbox

pub fn outbox_list(cfg: &Config, status: Option<&str>) -> Result<Value> {
    let s = store(cfg)?;
    let counts: serde_json::Map<String, Value> = s.counts()?.into_iter().map(|(k, v)| (k, json!(v))).collect();
    Ok(json!({ "messages": s.list(status, 1000)?, "counts": counts }))
}

fn outbox_missing(id: &str) -> Error {
    Error::new(
        code::OUTBOX_NOT_FOUND.id,
        format!("Die Nachricht „{id}“ ist nicht im Postausgang."),
        format!("The message \"{id}\" is not in the outbox."),
    )
}

pub fn outbox_retry(cfg: &Config, id: &str) -> Result<Value> {
    let mut s = store(cfg)?;
    let (changed, e) = s.retry(id)?.ok_or_else(|| outbox_missing(id))?;
    if !changed {
        return Err(Error::new(
            code::OUTBOX_STATE.id,
            format!("Im Zustand „{}“ kann die Nachricht nicht erneut gesendet werden.", e.status),
            format!("The message cannot be retried in state \"{}\".", e.status),
        ));
    }
    Ok(json!({ "message": e }))
}

pub fn outbox_cancel(cfg: &Config, id: &str) -> Result<Value> {
    let mut s = store(cfg)?;
    let (changed, e) = s.cancel(id)?.ok_or_else(|| outbox_missing(id))?;
    if !changed {
        return Err(Error::new(
            code::OUTBOX_STATE.id,
            format!("Im Zustand „{}“ kann die Nachricht nicht mehr zurückgehalten werden.", e.status),
            format!("The message can no longer be cancelled in state \"{}\".", e.status),
        ));
    }
    Ok(json!({ "message": e }))
}

// ------------------------------------------------------------------ credentials

pub fn credentials_set(cfg: &Config, password: &str) -> Result<Value> {
    let backend = crate::secrets::set(cfg, password)?;
    let mut v = json!({ "stored": true, "backend": backend, "account": crate::secrets::account(cfg) });
    if backend == "keyutils" {
        v["note"] = json!("Kernel-Schlüsselbund: nur bis zum Abmelden/Neustart gespeichert. / Kernel keyring: kept only until logout/reboot.");
    }
    Ok(v)
}

pub fn credentials_delete(cfg: &Config) -> Result<Value> {
    Ok(json!({ "deleted": crate::secrets::delete(cfg)? }))
}

/// Connect to the gateway with TLS and sign in, send nothing. Says whom the gateway signed in.
pub fn credentials_test(cfg: &Config) -> Result<Value> {
    let cfg = std::sync::Arc::new(cfg.clone());
    let who = block_on(async {
        let (mut c, who) = relay::connect(&cfg).await?;
        let _ = c.quit().await;
        Ok(who)
    })?;
    let (de, en) = match &who {
        Some(w) => (
            format!("Verbindung und TLS-Prüfung in Ordnung; angemeldet als {} ({}).", w.person, w.method_label),
            format!("Connection and TLS verification fine; signed in as {} ({}).", w.person, w.method_label_en),
        ),
        None => (
            "Verbindung und TLS-Prüfung in Ordnung; keine Anmeldung (kein Kerberos-Ticket, kein Kennwort gespeichert)."
                .to_string(),
            "Connection and TLS verification fine; nobody signed in (no Kerberos ticket, no stored password)."
                .to_string(),
        ),
    };
    Ok(json!({
        "ok": true, "host": cfg.gateway.host, "port": cfg.gateway.port, "tls": cfg.gateway.tls,
        "authenticated": who.is_some(), "signed_in": who, "message": de, "message_en": en,
    }))
}

/// "De-Mail für mich beantragen": the signed-in person asks the gateway for the De-Mail
/// right (a message to the request address; the gateway records it in its archive).
pub fn request_access(cfg: &Config) -> Result<Value> {
    let cfg = std::sync::Arc::new(cfg.clone());
    let reply = block_on(async {
        let (mut c, who) = relay::connect(&cfg).await?;
        if who.is_none() {
            let _ = c.quit().await;
            return Err(Error::new(
                code::RELAY_SIGNIN,
                "Für einen Antrag müssen Sie angemeldet sein (Kerberos oder Kennwort im Helfer-Fenster).",
                "To request De-Mail you must be signed in (Kerberos, or the password in the helper window).",
            ));
        }
        let r = relay::send_request(&cfg, &mut c).await;
        let _ = c.quit().await;
        r.map_err(Error::from)
    })?;
    let (state, de, en) = if reply.contains("zugang-erteilt") {
        ("granted", "De-Mail ist für Sie freigeschaltet.", "De-Mail is enabled for you.")
    } else if reply.contains("zugang-besteht") {
        ("exists", "Sie dürfen De-Mail bereits senden.", "You may already send De-Mail.")
    } else {
        (
            "requested",
            "Ihr Antrag ist gestellt. Die IT schaltet De-Mail für Sie frei; Sie müssen nichts weiter tun.",
            "Your request is filed. IT will enable De-Mail for you; there is nothing more to do.",
        )
    };
    Ok(json!({ "ok": true, "state": state, "reply": reply, "message": de, "message_en": en }))
}

fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
        Error::new(code::INTERNAL.id, "Die Laufzeit kann nicht starten.", "The runtime cannot start.").caused_by(e)
    })?;
    rt.block_on(f)
}

// ------------------------------------------------------------------ doctor

#[derive(Debug, Serialize)]
pub struct Finding {
    pub check: &'static str,
    /// `ok`, `warn` or `error`.
    pub status: &'static str,
    pub message: String,
    pub message_en: String,
}

fn finding(check: &'static str, status: &'static str, de: impl Into<String>, en: impl Into<String>) -> Finding {
    Finding { check, status, message: de.into(), message_en: en.into() }
}

/// A finding that states a reason's text (a finding names its check, not a code).
fn reason_finding(check: &'static str, status: &'static str, r: Reason) -> Finding {
    finding(check, status, r.message, r.message_en)
}

/// The newest start-error file (there only if no start succeeded since): its name, time,
/// and the last German and English line.
fn last_start_error() -> Option<(String, String, String, String)> {
    let dir = crate::server::start_error_dir();
    let (file, modified) = crate::server::START_ERROR_FILES
        .into_iter()
        .filter_map(|n| Some((n, std::fs::metadata(dir.join(n)).ok()?.modified().ok()?)))
        .max_by_key(|(_, m)| *m)?;
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    let last = |prefix: &str| text.lines().rev().find(|l| l.starts_with(prefix)).map(str::to_string);
    let (de, en) = (last("Fehler [")?, last("Error [")?);
    let secs = modified.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    Some((file.to_string(), mail_builder::headers::date::Date::new(secs).to_rfc822(), de, en))
}

/// Check configuration, policy, storage, keyring, gateway reachability and TLS, the
/// running service and the pairings. `online = false` skips the network checks.
pub fn doctor(paths: &Paths, online: bool) -> Value {
    let mut f: Vec<Finding> = Vec::new();
    let cfg = match Config::load(paths) {
        Ok(c) => {
            let files: Vec<String> = c.files.iter().map(|p| p.display().to_string()).collect();
            if files.is_empty() {
                f.push(finding(
                    "config",
                    "warn",
                    format!(
                        "Keine Konfigurationsdatei gefunden ({} / {}); es gelten die Voreinstellungen.",
                        paths.machine.display(),
                        paths.user.display()
                    ),
                    format!(
                        "No configuration file found ({} / {}); defaults apply.",
                        paths.machine.display(),
                        paths.user.display()
                    ),
                ));
            } else {
                f.push(finding(
                    "config",
                    "ok",
                    format!("Konfiguration gelesen: {}.", files.join(", ")),
                    format!("Configuration read: {}.", files.join(", ")),
                ));
            }
            for w in &c.warnings {
                f.push(reason_finding("config", "warn", w.reason.clone()));
            }
            c
        }
        Err(e) => {
            f.push(reason_finding("config", "error", e.into()));
            return json!({ "ok": false, "findings": f });
        }
    };

    match crate::state::load_policy(std::path::Path::new(cfg.policy.file.trim())) {
        Ok((_, src)) if src == "built-in" => f.push(finding(
            "policy",
            "warn",
            format!("Keine Richtlinie unter {}; es gelten die eingebauten Regeln (*.de-mail.de, gemischte Adressierung wird abgelehnt).", cfg.policy.file),
            format!("No policy at {}; the built-in rules apply (*.de-mail.de, mixed addressing is rejected).", cfg.policy.file),
        )),
        Ok((_, src)) => f.push(finding("policy", "ok", format!("Richtlinie gültig: {src}."), format!("Policy valid: {src}."))),
        Err(e) => f.push(reason_finding("policy", "error", e.error.reason)),
    }

    match store(&cfg) {
        Ok(s) => {
            let counts = s.counts().unwrap_or_default();
            let get = |k: &str| counts.iter().find(|(s, _)| s == k).map(|(_, n)| *n).unwrap_or(0);
            f.push(finding(
                "storage",
                "ok",
                format!(
                    "Postausgang {}: {} wartend, {} gesendet, {} fehlgeschlagen.",
                    s.path.display(),
                    get("queued") + get("sending"),
                    get("sent"),
                    get("failed")
                ),
                format!(
                    "Outbox {}: {} waiting, {} sent, {} failed.",
                    s.path.display(),
                    get("queued") + get("sending"),
                    get("sent"),
                    get("failed")
                ),
            ));
            if get("failed") > 0 {
                f.push(finding(
                    "outbox",
                    "warn",
                    format!(
                        "{} De-Mail(s) sind fehlgeschlagen; siehe „demail outbox list --status failed“.",
                        get("failed")
                    ),
                    format!("{} De-Mail(s) failed; see \"demail outbox list --status failed\".", get("failed")),
                ));
            }
            let pairings = s.pairings().unwrap_or_default();
            let now = crate::store::now_ms();
            let ttl = crate::pairing::token_ttl(&cfg);
            let approved = pairings
                .iter()
                .filter(|p| {
                    p.status == "approved" && p.last_used_at.or(p.decided_at).unwrap_or(p.created_at) + ttl > now
                })
                .count();
            let pending =
                pairings.iter().filter(|p| p.status == "pending" && p.expires_at.is_none_or(|e| e > now)).count();
            let (st, de, en) = if approved == 0 {
                ("warn", "Noch kein Add-in gekoppelt.".to_string(), "No add-in paired yet.".to_string())
            } else {
                ("ok", format!("{approved} Add-in(s) gekoppelt."), format!("{approved} add-in(s) paired."))
            };
            f.push(finding("pairing", st, de, en));
            if pending > 0 {
                f.push(finding(
                    "pairing",
                    "warn",
                    format!("{pending} Kopplungsanfrage(n) warten auf Bestätigung („demail pair list“, „demail pair approve CODE“)."),
                    format!("{pending} pairing request(s) wait for approval (\"demail pair list\", \"demail pair approve CODE\")."),
                ));
            }
        }
        Err(e) => {
            crate::server::log_cause_to_file(&cfg, &e);
            f.push(reason_finding("storage", "error", e.reason));
        }
    }

    match crate::discovery::read() {
        Some(i) => f.push(finding(
            "service",
            "ok",
            format!("Der Helfer läuft (PID {}, http://127.0.0.1:{}).", i.pid, i.port),
            format!("The helper is running (PID {}, http://127.0.0.1:{}).", i.pid, i.port),
        )),
        None => {
            f.push(finding(
                "service",
                "warn",
                "Der Helfer läuft nicht (keine Discovery-Datei oder Port antwortet nicht). Start: „demail serve“.",
                "The helper is not running (no discovery file, or its port does not answer). Start: \"demail serve\".",
            ));
            // Why the tray or the Windows autostart did not come up (server::record_start_error).
            if let Some((file, when, de, en)) = last_start_error() {
                f.push(finding(
                    "service",
                    "error",
                    format!("Letzter Startfehler ({when}, {file}): {de}"),
                    format!("Last start error ({when}, {file}): {en}"),
                ));
            }
        }
    }

    let mode = cfg.gateway.effective_auth();
    if crate::secrets::account(&cfg).is_some() {
        match crate::secrets::get(&cfg) {
            Ok(Some((_, backend))) => f.push(finding(
                "keyring",
                "ok",
                format!("Kennwort im Schlüsselbund gefunden ({backend})."),
                format!("Password found in the keyring ({backend})."),
            )),
            Ok(None) => {}
            Err(e) if e.code() == code::SECRETS_MISSING && mode == crate::config::AuthMode::Auto => f.push(finding(
                "keyring",
                "ok",
                "Kein Kennwort gespeichert: Anmeldung mit dem Kerberos-Ticket der Windows- bzw. Linux-Anmeldung.",
                "No password stored: sign-in with the Kerberos ticket of the desktop login.",
            )),
            Err(e) => f.push(reason_finding("keyring", "error", e.reason)),
        }
    } else if mode == crate::config::AuthMode::Kerberos {
        f.push(finding(
            "keyring",
            "ok",
            "Anmeldung nur mit Kerberos (gateway.auth = kerberos); kein Kennwort nötig.",
            "Sign-in with Kerberos only (gateway.auth = kerberos); no password needed.",
        ));
    } else {
        f.push(finding(
            "keyring",
            "ok",
            "Kein Kennwort gespeichert (kein Anmeldename bekannt): Anmeldung mit dem Kerberos-Ticket der Anmeldung am Rechner.",
            "No password stored (no login name known): sign-in with the Kerberos ticket of the desktop login.",
        ));
    }

    if cfg.gateway.host.trim().is_empty() {
        f.push(finding(
            "gateway",
            "error",
            "Kein Gateway konfiguriert (gateway.host); De-Mails bleiben im Postausgang.",
            "No gateway configured (gateway.host); De-Mails stay in the outbox.",
        ));
    } else if online {
        let target = format!("{}:{}", cfg.gateway.host.trim(), cfg.gateway.port);
        let reachable = std::net::ToSocketAddrs::to_socket_addrs(&target)
            .ok()
            .and_then(|mut a| a.next())
            .map(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok())
            .unwrap_or(false);
        if !reachable {
            f.push(finding(
                "gateway",
                "error",
                format!("Das Gateway {target} ist nicht erreichbar (Netz, Firewall, Name?)."),
                format!("The gateway {target} is not reachable (network, firewall, name?)."),
            ));
        } else {
            f.push(finding(
                "gateway",
                "ok",
                format!("Gateway {target} ist erreichbar."),
                format!("Gateway {target} is reachable."),
            ));
            match credentials_test(&cfg) {
                Ok(v) => f.push(finding(
                    "tls",
                    "ok",
                    format!(
                        "TLS ({:?}) mit geprüftem Zertifikat funktioniert. {}",
                        cfg.gateway.tls,
                        v["message"].as_str().unwrap_or_default()
                    ),
                    format!(
                        "TLS ({:?}) with a verified certificate works. {}",
                        cfg.gateway.tls,
                        v["message_en"].as_str().unwrap_or_default()
                    ),
                )),
                Err(e) => f.push(reason_finding("tls", "error", e.reason)),
            }
        }
    }
    let ok = !f.iter().any(|x| x.status == "error");
    json!({ "ok": ok, "findings": f })
}
