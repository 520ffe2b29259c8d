//! `demail tray`: the helper service plus a tray icon and a settings window (Tauri v2).
//!
//! The service is the same as `demail serve` (started first, so its errors reach the
//! terminal); the window talks to it only through the commands below, which call the
//! helper library directly (no HTTP, no token). German UI, English second.
//!
//! Tray colours: green connected, grey nothing sent yet, blue De-Mails waiting, orange
//! gateway unreachable, red an error (TLS, login, configuration) or a failed De-Mail.

// The helper's errors carry a core `Reason` (three texts) and a cause; they travel only
// the cold path out, where their size costs nothing and boxing would only add noise.
#![allow(clippy::result_large_err)]

use demail_helper::code;
use demail_helper::config::{self, Config, Paths};
use demail_helper::error::{envelope, log_cause, Error};
use demail_helper::server::{self, ServeOptions};
use demail_helper::state::{AppState, GatewayState};
use demail_helper::store::{now_ms, Decision};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tauri::image::Image;
use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Emitter, Manager, RunEvent, State, WindowEvent};

/// The settings the window shows, in this order.
const FIELDS: [&str; 7] = [
    "gateway.host",
    "gateway.port",
    "gateway.tls",
    "gateway.ca_file",
    "gateway.username",
    "gateway.dialect",
    "gateway.ca_only",
];

struct Ui {
    state: Arc<AppState>,
    paths: Paths,
    /// Test hook: the window reports what it rendered (DOM state) into this file.
    report: Option<PathBuf>,
}

type Reply = Value;

fn ok(v: Value) -> Reply {
    json!({ "ok": true, "result": v })
}

/// The window gets the reason, the log the cause.
fn fail(e: impl Into<Error>) -> Reply {
    let e = e.into();
    log_cause(&e);
    envelope(&e.reason, None)
}

fn err(code: &str, de: impl Into<String>, en: impl Into<String>) -> Reply {
    fail(Error::new(code, de, en))
}

fn value_of(cfg: &Config, key: &str) -> Value {
    let v = serde_json::to_value(cfg).unwrap_or(Value::Null);
    let (section, name) = key.split_once('.').unwrap_or(("", key));
    v[section][name].clone()
}

#[tauri::command]
fn overview(ui: State<'_, Ui>) -> Reply {
    let (gw, error) = ui.state.gateway();
    ok(json!({
        "version": env!("CARGO_PKG_VERSION"), "port": ui.state.port(), "gateway": gw, "gateway_error": error,
        "signin": ui.state.signin(),
    }))
}

/// "De-Mail für mich beantragen": the signed-in person asks the gateway for the right.
#[tauri::command]
async fn access_request(ui: State<'_, Ui>) -> Result<Reply, ()> {
    let (cfg, _) = ui.state.current_config();
    let r = tauri::async_runtime::spawn_blocking(move || demail_helper::admin::request_access(&cfg)).await;
    Ok(match r {
        Ok(Ok(v)) => ok(v),
        Ok(Err(e)) => fail(e),
        Err(e) => fail(Error::new(code::INTERNAL.id, "Interner Fehler.", "Internal error.").caused_by(e)),
    })
}

#[tauri::command]
fn settings_get(ui: State<'_, Ui>) -> Reply {
    let (cfg, _) = ui.state.current_config();
    let fields: Vec<Value> =
        FIELDS.iter().map(|k| json!({ "key": k, "value": value_of(&cfg, k), "locked": cfg.is_locked(k) })).collect();
    // Only whether a password is stored, never the password.
    let password = match demail_helper::secrets::get(&cfg) {
        Ok(Some(_)) => "stored",
        Ok(None) => "not-needed",
        Err(_) => "missing",
    };
    ok(
        json!({ "fields": fields, "password": password, "files": cfg.files, "password_locked": cfg.is_locked("gateway.username") }),
    )
}

#[tauri::command]
fn settings_set(ui: State<'_, Ui>, key: String, value: String) -> Reply {
    if !FIELDS.contains(&key.as_str()) {
        return err(code::REQUEST_INVALID.id, "Unbekanntes Feld.", "Unknown field.");
    }
    match config::set_user_value(&ui.paths, &key, &value) {
        Ok(cfg) => {
            ui.state.replace_config(cfg);
            ok(json!({ "key": key }))
        }
        Err(e) => fail(e),
    }
}

#[tauri::command]
fn password_set(ui: State<'_, Ui>, password: String) -> Reply {
    let (cfg, _) = ui.state.current_config();
    match demail_helper::secrets::set(&cfg, &password) {
        Ok(backend) => {
            // A waiting message may now go out.
            ui.state.replace_config((*cfg).clone());
            ok(json!({ "backend": backend }))
        }
        Err(e) => fail(e),
    }
}

#[tauri::command]
async fn connection_test(ui: State<'_, Ui>) -> Result<Reply, ()> {
    let (cfg, _) = ui.state.current_config();
    let r = tauri::async_runtime::spawn_blocking(move || demail_helper::admin::credentials_test(&cfg)).await;
    Ok(match r {
        Ok(Ok(v)) => {
            // The window's "Angemeldet als …" follows the test, not only the next send.
            ui.state.set_signed_in(serde_json::from_value(v["signed_in"].clone()).ok().flatten());
            ok(v)
        }
        Ok(Err(e)) => {
            if e.code() == code::RELAY_SIGNIN || e.code() == code::RELAY_AUTH {
                ui.state.set_signin_problem(e.reason.clone());
            }
            fail(e)
        }
        Err(e) => fail(Error::new(code::INTERNAL.id, "Interner Fehler.", "Internal error.").caused_by(e)),
    })
}

#[tauri::command]
async fn outbox_list(ui: State<'_, Ui>) -> Result<Reply, ()> {
    let r = ui
        .state
        .with_store(|s| {
            let list = s.list(None, 200)?;
            let mut out = Vec::with_capacity(list.len());
            for e in list {
                let receipts = if e.status == "sent" { s.receipts_for(&e.private_id, &e.id)? } else { Vec::new() };
                out.push((e, receipts));
            }
            Ok((out, s.counts()?))
        })
        .await;
    Ok(match r {
        Ok((list, counts)) => {
            let messages: Vec<Value> = list
                .into_iter()
                .map(|(e, r)| {
                    let mut v = serde_json::to_value(&e).unwrap_or(Value::Null);
                    v["receipts"] = serde_json::to_value(&r).unwrap_or(Value::Null);
                    v
                })
                .collect();
            let counts: serde_json::Map<String, Value> = counts.into_iter().map(|(k, v)| (k, json!(v))).collect();
            ok(json!({ "messages": messages, "counts": counts }))
        }
        Err(e) => fail(e),
    })
}

#[tauri::command]
async fn outbox_action(ui: State<'_, Ui>, id: String, action: String) -> Result<Reply, ()> {
    let retry = action == "retry";
    let r = ui.state.with_store(move |s| if retry { s.retry(&id) } else { s.cancel(&id) }).await;
    ui.state.wake.notify_one();
    Ok(match r {
        Ok(Some((true, e))) => ok(serde_json::to_value(e).unwrap_or(Value::Null)),
        Ok(Some((false, e))) => err(
            code::OUTBOX_STATE.id,
            format!("Im Zustand „{}“ nicht möglich.", e.status),
            format!("Not possible in state \"{}\".", e.status),
        ),
        Ok(None) => err(code::OUTBOX_NOT_FOUND.id, "Nicht im Postausgang.", "Not in the outbox."),
        Err(e) => fail(e),
    })
}

/// Pairings for the window. The codes of open requests are left out on purpose: the user
/// approves by typing the code the add-in shows, so the window must not show it.
#[tauri::command]
async fn pairings_list(ui: State<'_, Ui>) -> Result<Reply, ()> {
    let r = ui.state.with_store(|s| s.pairings()).await;
    let now = now_ms();
    let ttl = demail_helper::pairing::token_ttl(&ui.state.config);
    Ok(match r {
        Ok(list) => {
            let list: Vec<Value> = list
                .into_iter()
                .filter(|p| p.status != "pending" || p.expires_at.is_none_or(|e| e > now))
                .filter(|p| {
                    p.status != "approved" || p.last_used_at.or(p.decided_at).unwrap_or(p.created_at) + ttl > now
                })
                .map(|mut p| {
                    p.code = None;
                    serde_json::to_value(p).unwrap_or(Value::Null)
                })
                .collect();
            ok(json!({ "pairings": list }))
        }
        Err(e) => fail(e),
    })
}

/// Allow (with the code the user typed) or deny the open request `id`.
#[tauri::command]
async fn pairing_decide(ui: State<'_, Ui>, id: String, code: String, approve: bool) -> Result<Reply, ()> {
    let r = ui.state.with_store(move |s| s.decide_by_id(&id, &code, approve)).await;
    Ok(match r {
        Ok(Decision::Decided(p)) => {
            tracing::info!(pairing = %p.id, approve, "pairing decided in the tray");
            let mut p = *p;
            p.code = None;
            ok(serde_json::to_value(p).unwrap_or(Value::Null))
        }
        Ok(Decision::WrongCode) => {
            tracing::warn!("pairing: a wrong code was typed in the tray");
            err(
                code::PAIRING_WRONG_CODE,
                "Der Code stimmt nicht. Geben Sie den Code ein, den das Add-in anzeigt.",
                "The code does not match. Type the code the add-in shows.",
            )
        }
        Ok(Decision::Unknown) => err(
            code::PAIRING_UNKNOWN,
            "Diese Anfrage ist nicht mehr offen (abgelaufen oder schon entschieden).",
            "This request is no longer open (expired or decided already).",
        ),
        Err(e) => fail(e),
    })
}

#[tauri::command]
async fn pairing_revoke(ui: State<'_, Ui>, id: String) -> Result<Reply, ()> {
    let r = ui.state.with_store(move |s| s.revoke(&id)).await;
    Ok(match r {
        Ok(n) => ok(json!({ "revoked": n })),
        Err(e) => fail(e),
    })
}

/// Test hook: the window describes what it shows; written as one JSON line per call.
#[tauri::command]
fn ui_report(ui: State<'_, Ui>, report: Value) {
    if let Some(path) = &ui.report {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{report}");
        }
    }
}

// ------------------------------------------------------------------ tray

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Colour {
    Grey,
    Green,
    Blue,
    Orange,
    Red,
}

impl Colour {
    fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Grey => [0x8a, 0x8f, 0x98],
            Colour::Green => [0x2e, 0x9e, 0x4f],
            Colour::Blue => [0x1f, 0x5f, 0xa8],
            Colour::Orange => [0xe0, 0x8a, 0x1e],
            Colour::Red => [0xc6, 0x28, 0x28],
        }
    }

    fn tooltip(self) -> &'static str {
        match self {
            Colour::Grey => "De-Mail-Helfer: bereit / ready",
            Colour::Green => "De-Mail-Helfer: mit dem Gateway verbunden / connected to the gateway",
            Colour::Blue => "De-Mail-Helfer: De-Mails warten im Postausgang / De-Mails waiting in the outbox",
            Colour::Orange => "De-Mail-Helfer: Gateway nicht erreichbar / gateway unreachable",
            Colour::Red => "De-Mail-Helfer: Fehler – bitte Postausgang ansehen / error – please look at the outbox",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Colour::Grey => "grey",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Orange => "orange",
            Colour::Red => "red",
        }
    }
}

/// A 32×32 RGBA disc in the state's colour with a white bar (drawn, no image files).
fn icon(c: Colour) -> Image<'static> {
    const N: usize = 32;
    let [r, g, b] = c.rgb();
    let mut px = vec![0u8; N * N * 4];
    let centre = (N as f32 - 1.0) / 2.0;
    for y in 0..N {
        for x in 0..N {
            let d = ((x as f32 - centre).powi(2) + (y as f32 - centre).powi(2)).sqrt();
            let i = (y * N + x) * 4;
            if d <= 14.5 {
                let bar = (11..=13).contains(&x) && (9..=22).contains(&y);
                let (pr, pg, pb) = if bar { (255, 255, 255) } else { (r, g, b) };
                px[i..i + 4].copy_from_slice(&[pr, pg, pb, 255]);
            }
        }
    }
    Image::new_owned(px, N as u32, N as u32)
}

fn colour(gw: GatewayState, queued: i64, failed: i64) -> Colour {
    if failed > 0 || gw == GatewayState::Error {
        Colour::Red
    } else if gw == GatewayState::Unreachable {
        Colour::Orange
    } else if queued > 0 {
        Colour::Blue
    } else if gw == GatewayState::Connected {
        Colour::Green
    } else {
        Colour::Grey
    }
}

fn show(app: &AppHandle, tab: &str) {
    if let Some(w) = app.get_webview_window("main") {
        let _ = w.show();
        let _ = w.unminimize();
        let _ = w.set_focus();
    }
    let _ = app.emit("show-tab", tab);
}

fn build_tray(app: &AppHandle) -> tauri::Result<TrayIcon> {
    let settings = MenuItem::with_id(app, "settings", "Einstellungen / Settings", true, None::<&str>)?;
    let outbox = MenuItem::with_id(app, "outbox", "Postausgang / Outbox", true, None::<&str>)?;
    let pairing = MenuItem::with_id(app, "pairing", "Kopplungsanfragen / Pairing requests", true, None::<&str>)?;
    let sep = PredefinedMenuItem::separator(app)?;
    let quit = MenuItem::with_id(app, "quit", "Beenden / Quit", true, None::<&str>)?;
    let menu = Menu::with_items(app, &[&settings, &outbox, &pairing, &sep, &quit])?;
    TrayIconBuilder::with_id("demail")
        .icon(icon(Colour::Grey))
        .tooltip(Colour::Grey.tooltip())
        .menu(&menu)
        .on_menu_event(|app, e| match e.id.as_ref() {
            "quit" => app.exit(0),
            tab => show(app, tab),
        })
        .build(app)
}

/// A desktop notification (`notify-send`, libnotify) when available; the log otherwise.
fn notify(title: &str, body: &str) {
    let sent = std::process::Command::new("notify-send")
        .args(["--app-name=De-Mail-Helfer", "--urgency=critical", title, body])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    tracing::warn!(notified = sent, "{title}: {body}");
}

/// Every second: tray colour and tooltip, notifications for De-Mails that failed for
/// good, the window for new pairing requests or a second start.
async fn watch(app: AppHandle, state: Arc<AppState>, report: Option<PathBuf>, show_request: PathBuf) {
    let mut last: Option<Colour> = None;
    let mut known_failed: Option<HashSet<String>> = None;
    let mut known_pending: HashSet<String> = HashSet::new();
    let mut first = true;
    loop {
        if state.is_shutting_down() {
            break;
        }
        // Removed means it was there: a second start wants the window (the outbox first).
        if std::fs::remove_file(&show_request).is_ok() {
            show(&app, "outbox");
        }
        let now = now_ms();
        let snapshot = state
            .with_store(move |s| {
                let counts = s.counts()?;
                let failed = s.list(Some("failed"), 100)?;
                let pending: Vec<String> = s
                    .pairings()?
                    .into_iter()
                    .filter(|p| p.status == "pending" && p.expires_at.is_none_or(|e| e > now))
                    .map(|p| p.id)
                    .collect();
                Ok((counts, failed, pending))
            })
            .await;
        if let Ok((counts, failed, pending)) = snapshot {
            let n = |k: &str| counts.iter().find(|(s, _)| s == k).map(|(_, n)| *n).unwrap_or(0);
            let (gw, _) = state.gateway();
            let c = colour(gw, n("queued") + n("sending"), n("failed"));
            if last != Some(c) {
                if let Some(tray) = app.tray_by_id("demail") {
                    let _ = tray.set_icon(Some(icon(c)));
                    let _ = tray.set_tooltip(Some(c.tooltip()));
                }
                if let Some(p) = &report {
                    use std::io::Write;
                    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(p) {
                        let _ = writeln!(f, "{}", json!({ "tray": c.name() }));
                    }
                }
                last = Some(c);
                let _ = app.emit("status", c.name());
            }
            let ids: HashSet<String> = failed.iter().map(|e| e.id.clone()).collect();
            if let Some(known) = &known_failed {
                for e in failed.iter().filter(|e| !known.contains(&e.id)) {
                    let reason = e.error.as_ref().map(|x| x.message.clone()).unwrap_or_default();
                    notify(&format!("De-Mail nicht zugestellt: {}", e.subject), &reason);
                    let _ = app.emit("outbox-changed", &e.id);
                }
            }
            known_failed = Some(ids);
            for id in &pending {
                if !known_pending.contains(id) && !first {
                    show(&app, "pairing");
                }
            }
            if pending.iter().any(|id| !known_pending.contains(id)) {
                let _ = app.emit("pairing-request", pending.len());
            }
            known_pending = pending.into_iter().collect();
            first = false;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A second start of the tray (menu entry, Start menu) asks the running one to open its
/// window with this file in the user's private data directory.
const SHOW_REQUEST: &str = "show-window.request";

/// Another helper holds this user's lock: ask it to open its window. Only a tray reads the
/// request; if none does within a few seconds (a headless `demail serve`), the start error
/// stands and the request is withdrawn.
fn show_running(request: &std::path::Path, err: Error) -> Result<(), Error> {
    if std::fs::write(request, b"").is_err() {
        return Err(err);
    }
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        if !request.exists() {
            tracing::info!("a helper is already running; it shows its window");
            return Ok(());
        }
    }
    let _ = std::fs::remove_file(request);
    Err(err)
}

/// Run the tray app with the helper inside. Returns when the user quits.
pub fn run(opts: ServeOptions) -> Result<(), Error> {
    let cfg = server::effective_config(&opts)?;
    let (_, paths) = server::load_config(opts.config.as_deref())?;
    let _log = server::init_logging(&cfg);
    let show_request = cfg.data_dir().join(SHOW_REQUEST);
    let running = match tauri::async_runtime::block_on(server::start(cfg)) {
        Ok(r) => r,
        Err(e) if e.code() == code::SERVE_RUNNING => return show_running(&show_request, e),
        Err(e) => {
            log_cause(&e);
            return Err(e);
        }
    };
    // A request left from before (a crash) is not the user's click now.
    let _ = std::fs::remove_file(&show_request);
    running.announce();
    let state = running.state.clone();
    let served = Arc::new(Mutex::new(Some(tauri::async_runtime::spawn(running.serve(std::future::pending())))));
    let report = std::env::var_os("DEMAIL_TRAY_REPORT").map(PathBuf::from);
    let show_at_start = std::env::var_os("DEMAIL_TRAY_SHOW").is_some();

    let ui = Ui { state: state.clone(), paths, report: report.clone() };
    let app = tauri::Builder::default()
        .manage(ui)
        .invoke_handler(tauri::generate_handler![
            access_request,
            overview,
            settings_get,
            settings_set,
            password_set,
            connection_test,
            outbox_list,
            outbox_action,
            pairings_list,
            pairing_decide,
            pairing_revoke,
            ui_report
        ])
        .setup(move |app| {
            build_tray(app.handle())?;
            tauri::async_runtime::spawn(watch(
                app.handle().clone(),
                state.clone(),
                report.clone(),
                show_request.clone(),
            ));
            if show_at_start {
                show(app.handle(), "settings");
            }
            Ok(())
        })
        .on_window_event(|w, e| {
            // Closing the window only hides it; the helper keeps running in the tray.
            if let WindowEvent::CloseRequested { api, .. } = e {
                api.prevent_close();
                let _ = w.hide();
            }
        })
        .build(tauri::generate_context!())
        .map_err(|e| {
            Error::new(
                code::TRAY_START,
                format!("Die Oberfläche kann nicht starten (Anzeige, WebKitGTK?): {e}"),
                format!("The user interface cannot start (display, WebKitGTK?): {e}"),
            )
        })?;
    app.run(move |handle, event| {
        if let RunEvent::Exit = event {
            // Stop the service properly: relay finishes the message on the wire, discovery file removed.
            if let Some(ui) = handle.try_state::<Ui>() {
                ui.state.shutdown();
            }
            let task = served.lock().ok().and_then(|mut g| g.take());
            if let Some(t) = task {
                let _ =
                    tauri::async_runtime::block_on(
                        async move { tokio::time::timeout(Duration::from_secs(12), t).await },
                    );
            }
        }
    });
    Ok(())
}
