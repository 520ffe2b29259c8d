//! The tray app under Xvfb, driven like a user: the window must render the settings
//! (with IT-locked fields shown locked) and the outbox, a pairing request must be
//! approvable only by typing its code (a stray Enter or a wrong code must not allow it),
//! and the tray menu must open the outbox and quit the app. The window reports its DOM state (`DEMAIL_TRAY_REPORT`); screenshots go
//! to `<target>/tmp/tray-screenshots/` as test artifacts.
//!
//! Needs: xvfb, trayer (an XEmbed system tray), xdotool, imagemagick (scripts/setup test).

use demail_testkit::{free_port, have, wait_until, ChildGuard, TempDir};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

struct Display {
    n: u32,
    _xvfb: ChildGuard,
    _trayer: ChildGuard,
}

impl Display {
    fn start(dir: &Path) -> Display {
        for tool in ["Xvfb", "trayer", "xdotool", "import", "convert", "dbus-run-session"] {
            assert!(have(tool), "{tool} missing: run scripts/setup test");
        }
        let n = (90..200)
            .find(|n| {
                !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
            })
            .expect("a free X display");
        let mut cmd = Command::new("Xvfb");
        cmd.args([&format!(":{n}"), "-screen", "0", "1280x800x24", "-nolisten", "tcp"]);
        let xvfb = ChildGuard::spawn("Xvfb", cmd, Some(&dir.join("xvfb.log"))).unwrap();
        assert!(
            wait_until(T, || Path::new(&format!("/tmp/.X11-unix/X{n}")).exists().then_some(())).is_some(),
            "Xvfb did not start"
        );
        let mut cmd = Command::new("trayer");
        cmd.args([
            "--edge",
            "top",
            "--align",
            "right",
            "--widthtype",
            "pixel",
            "--width",
            "120",
            "--height",
            "32",
            "--transparent",
            "false",
        ])
        .env("DISPLAY", format!(":{n}"));
        let trayer = ChildGuard::spawn("trayer", cmd, Some(&dir.join("trayer.log"))).unwrap();
        Display { n, _xvfb: xvfb, _trayer: trayer }
    }

    fn name(&self) -> String {
        format!(":{}", self.n)
    }

    fn xdotool(&self, args: &[&str]) -> String {
        let out = Command::new("xdotool").args(args).env("DISPLAY", self.name()).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Screenshot of the whole screen into the artifacts directory; the path.
    fn screenshot(&self, name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tray-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("{name}.png"));
        let st = Command::new("import").args(["-display", &self.name(), "-window", "root"]).arg(&p).status().unwrap();
        assert!(st.success());
        p
    }

    /// Click the tray icon (right end of trayer's panel) to open the tray menu.
    fn open_tray_menu(&self) {
        // trayer has a small helper window too: take its widest window, the panel.
        let ids = self.xdotool(&["search", "--class", "trayer"]);
        let mut best: Option<(i32, i32, i32, i32)> = None;
        for id in ids.lines() {
            let geo = self.xdotool(&["getwindowgeometry", id]);
            let num = |key: &str| -> Vec<i32> {
                geo.lines()
                    .find_map(|l| l.trim().strip_prefix(key))
                    .map(|v| v.split([',', 'x', ' ']).filter_map(|x| x.trim().parse().ok()).collect())
                    .unwrap_or_default()
            };
            let (pos, size) = (num("Position:"), num("Geometry:"));
            if pos.len() >= 2 && size.len() >= 2 && best.is_none_or(|b| size[0] > b.2) {
                best = Some((pos[0], pos[1], size[0], size[1]));
            }
        }
        let (px, py, w, h) = best.expect("trayer panel");
        let (x, y) = (px + w - 19, py + h / 2);
        self.xdotool(&["mousemove", &x.to_string(), &y.to_string(), "click", "1"]);
        std::thread::sleep(Duration::from_millis(800));
    }
}

/// Standard deviation of the screenshot's pixels: a blank screen is 0.
fn image_stddev(p: &Path) -> f64 {
    let out = Command::new("convert").arg(p).args(["-format", "%[fx:standard_deviation]", "info:"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0.0)
}

struct Tray {
    dir: TempDir,
    child: ChildGuard,
    port: u16,
    pid: u32,
}

impl Tray {
    fn start(display: &Display, dir: TempDir, machine: &str) -> Tray {
        let d = dir.path();
        std::fs::write(d.join("machine.toml"), machine).unwrap();
        // A desktop session has a D-Bus session bus; the tray icon's menu needs it.
        let mut cmd = Command::new("dbus-run-session");
        cmd.args(["--", env!("CARGO_BIN_EXE_demail-tray"), "--port", "0"]);
        Tray::session_env(&mut cmd, display, d);
        let child = ChildGuard::spawn("demail-tray", cmd, Some(&d.join("tray.log"))).unwrap();
        let listening = wait_until(T, || {
            std::fs::read_to_string(d.join("tray.log"))
                .ok()?
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["event"] == "listening")
        })
        .unwrap_or_else(|| {
            panic!("tray did not start: {}", std::fs::read_to_string(d.join("tray.log")).unwrap_or_default())
        });
        let port = listening["port"].as_u64().unwrap() as u16;
        let pid = listening["pid"].as_u64().unwrap() as u32;
        Tray { dir, child, port, pid }
    }

    /// The user's directories and the machine configuration, all inside `d`.
    fn user_env(cmd: &mut Command, d: &Path) {
        cmd.env("HOME", d)
            .env("XDG_CONFIG_HOME", d.join("config"))
            .env("XDG_DATA_HOME", d.join("data"))
            .env("XDG_RUNTIME_DIR", d.join("run"))
            .env("DEMAIL_HELPER_SYSTEM_CONFIG", d.join("machine.toml"))
            .env_remove("DEMAIL_HELPER_CONFIG");
    }

    /// What a desktop session gives the app; the second start gets the same.
    fn session_env(cmd: &mut Command, display: &Display, d: &Path) {
        Tray::user_env(cmd, d);
        cmd.env("DISPLAY", display.name())
            .env("DEMAIL_TRAY_SHOW", "1")
            .env("DEMAIL_TRAY_REPORT", d.join("report.jsonl"))
            .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
            .env("NO_AT_BRIDGE", "1")
            .env("GTK_A11Y", "none")
            .env_remove("DBUS_SESSION_BUS_ADDRESS");
    }

    /// The user starts the app again (menu entry) while it runs.
    fn start_again(&self, display: &Display) -> std::process::Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_demail-tray"));
        cmd.args(["--port", "0"]);
        Tray::session_env(&mut cmd, display, self.dir.path());
        cmd.output().unwrap()
    }

    fn reports(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("report.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The newest report that satisfies `pred`.
    fn wait_report(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(T, || self.reports().into_iter().rev().find(|r| pred(r))).unwrap_or_else(|| {
            panic!("window never showed {what}; last: {:?}\nlog: {}", self.reports().last(), self.log())
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tray.log")).unwrap_or_default()
    }

    fn http(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Value {
        self.http_with(method, path, token, body, &[])
    }

    fn http_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Value {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let extra: String = headers.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{auth}{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let json = out.split("\r\n\r\n").nth(1).unwrap_or("");
        serde_json::from_str(json).unwrap_or(Value::Null)
    }
}

impl Drop for Tray {
    fn drop(&mut self) {
        // Stop the app; dbus-run-session then ends its bus by itself (a SIGKILL would orphan it).
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
        if wait_until(Duration::from_secs(15), || self.child.try_wait()).is_none() {
            let _ = Command::new("kill").arg("-9").arg(self.pid.to_string()).status();
            let _ = wait_until(Duration::from_secs(3), || self.child.try_wait());
        }
        self.child.kill();
    }
}

#[test]
fn tray_window_pairing_and_menu() {
    let dir = demail_testkit::temp_dir();
    let display = Display::start(dir.path());
    let tray_dir = demail_testkit::temp_dir();
    // Nothing listens on the gateway port: De-Mails wait, the tray turns orange.
    let machine = format!(
        "[gateway]\nhost = \"localhost\"\nport = {}\n[relay]\nretry_initial = 1\nretry_max = 2\npoll_interval = 1\n[lock]\nkeys = [\"gateway.host\"]\n",
        free_port()
    );
    let mut tray = Tray::start(&display, tray_dir, &machine);

    // 1. The settings render; the IT-locked host is shown and cannot be edited.
    let r = tray.wait_report("the settings", |r| {
        r["tab"] == "settings" && r["fields"].as_array().is_some_and(|f| !f.is_empty())
    });
    let host = r["fields"].as_array().unwrap().iter().find(|f| f["key"] == "gateway.host").unwrap().clone();
    assert_eq!(host["value"], "localhost");
    assert_eq!(host["locked"], true);
    assert_eq!(host["disabled"], true);
    let port = r["fields"].as_array().unwrap().iter().find(|f| f["key"] == "gateway.port").unwrap().clone();
    assert_eq!(port["disabled"], false);
    let text = r["text"].as_str().unwrap();
    assert!(text.contains("Gateway (Host-Name)") && text.contains("Verbindung testen"), "{text}");
    assert!(text.contains("von der IT festgelegt"), "locked fields are marked: {text}");
    // Who the gateway signed in: nobody yet (no session so far), and the request button.
    assert!(r["signin"].as_str().unwrap_or("").starts_with("Noch nicht angemeldet"), "{}", r["signin"]);
    assert!(text.contains("De-Mail für mich beantragen"), "{text}");
    let shot = display.screenshot("1-settings");
    assert!(image_stddev(&shot) > 0.05, "the screen is not blank");

    // 2. A pairing request pops up in the window with its origin and add-in id, but not its
    // code. A stray Enter does not allow it, a wrong code does not; the code the add-in shows,
    // typed in, does.
    let origin = "moz-extension://5f0c2a4e-3b1d-4c59-9a51-1d2e3f4a5b6c";
    let p = tray.http_with(
        "POST",
        "/v1/pairing",
        None,
        Some(&json!({ "client": "Thunderbird De-Mail-Add-in", "addon_id": "demail-addin@open-demail.de" })),
        &[("Origin", origin)],
    );
    let code = p["result"]["code"].as_str().unwrap().to_string();
    let token = p["result"]["token"].as_str().unwrap().to_string();
    let r = tray.wait_report("the pairing request", |r| {
        r["tab"] == "pairing"
            && r["focused"] == "code"
            && r["pairings"].as_array().is_some_and(|p| p.iter().any(|x| x["status"] == "pending"))
    });
    let text = r["text"].as_str().unwrap();
    assert!(text.contains("Thunderbird De-Mail-Add-in"), "{text}");
    assert!(text.contains(origin) && text.contains("demail-addin@open-demail.de"), "origin and add-in id: {text}");
    assert!(!text.contains(&code), "the window must not show the code: {text}");
    let req = r["pairings"].as_array().unwrap().iter().find(|x| x["status"] == "pending").unwrap().clone();
    assert_eq!(req["allow_disabled"], true, "no code typed yet: {req}");
    display.screenshot("2-pairing-request");
    let win = display.xdotool(&["search", "--name", "De-Mail-Helfer"]);
    let win = win.lines().next().expect("window").to_string();
    display.xdotool(&["windowfocus", "--sync", &win]);
    // A key meant for another window, right after the window popped up.
    display.xdotool(&["key", "Return"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(tray.http("GET", "/v1/pairing", Some(&token), None)["result"]["status"], "pending", "Enter allowed it");
    // A wrong code (after the delay): refused, still pending.
    let wrong: String = code
        .chars()
        .map(|c| {
            if c == '-' {
                c
            } else if c == 'A' {
                'B'
            } else {
                'A'
            }
        })
        .collect();
    display.xdotool(&["type", "--delay", "50", &wrong]);
    display.xdotool(&["key", "Return"]);
    tray.wait_report("the wrong code refused", |r| r["message"].as_str().is_some_and(|m| m.contains("stimmt nicht")));
    assert_eq!(
        tray.http("GET", "/v1/pairing", Some(&token), None)["result"]["status"],
        "pending",
        "a wrong code allowed it"
    );
    display.screenshot("2a-pairing-wrong-code");
    // The right code.
    display.xdotool(&["key", "ctrl+a", "BackSpace"]);
    display.xdotool(&["type", "--delay", "50", &code.to_lowercase()]);
    display.xdotool(&["key", "Return"]);
    tray.wait_report("the approved pairing", |r| {
        r["pairings"].as_array().is_some_and(|p| p.iter().any(|x| x["status"] == "approved"))
    });
    assert_eq!(tray.http("GET", "/v1/pairing", Some(&token), None)["result"]["status"], "approved");

    // 2b. Started again from the menu: the running app opens its window (the outbox) and the
    // second process ends without an error and without a second helper.
    assert!(!tray.reports().iter().any(|r| r["tab"] == "outbox"));
    let again = tray.start_again(&display);
    assert!(again.status.success(), "second start: {again:?}");
    tray.wait_report("the outbox after a second start", |r| r["tab"] == "outbox");
    assert!(!tray.dir.path().join("data/demail/show-window.request").exists(), "request taken");
    let found: Value =
        serde_json::from_slice(&std::fs::read(tray.dir.path().join("run/demail/helper.json")).unwrap()).unwrap();
    assert_eq!(found["pid"], tray.pid, "the discovery file still names the first app");
    assert_eq!(tray.http("GET", "/v1/health", None, None)["result"]["status"], "ok");

    // 3. A De-Mail waits (gateway down): the tray turns orange.
    let m = json!({ "from": "peter.meier@musterstadt.de", "to": ["anna@buerger.de-mail.de"], "subject": "Bescheid", "text": "x", "options": ["private"] });
    let sub = tray.http("POST", "/v1/messages", Some(&token), Some(&m));
    assert_eq!(sub["result"]["status"], "queued", "{sub}");
    tray.wait_report("the orange tray", |r| r["tray"] == "orange");

    // 4. Tray menu → "Postausgang": the outbox shows the waiting De-Mail and why.
    display.open_tray_menu();
    display.screenshot("3-tray-menu");
    display.xdotool(&["key", "Down", "Down", "Return"]);
    let r = tray
        .wait_report("the outbox", |r| r["tab"] == "outbox" && r["outbox"].as_array().is_some_and(|o| !o.is_empty()));
    let row = &r["outbox"][0];
    assert_eq!(row["subject"], "Bescheid");
    assert_eq!(row["status"], "queued");
    assert_eq!(row["error"], "relay.unreachable");
    assert!(r["text"].as_str().unwrap().contains("nicht erreichbar"), "{}", r["text"]);
    assert!(image_stddev(&display.screenshot("4-outbox")) > 0.05);

    // 5. Tray menu → "Beenden": the app stops and withdraws its discovery file.
    display.open_tray_menu();
    display.xdotool(&["key", "Up", "Return"]);
    let gone = wait_until(T, || tray.child.try_wait());
    assert!(gone.is_some(), "the app did not quit: {}", tray.log());
    assert!(gone.unwrap().success(), "clean exit: {}", tray.log());
    assert!(!tray.dir.path().join("run/demail/helper.json").exists());
}

#[test]
fn a_start_beside_a_headless_helper_says_why_in_the_log() {
    // A headless helper (`demail serve`) holds the user's lock and has no window to open.
    let d = demail_testkit::temp_dir();
    let data = d.path().join("data/demail");
    std::fs::create_dir_all(&data).unwrap();
    let lock =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(data.join("helper.lock")).unwrap();
    lock.lock().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_demail-tray"));
    cmd.args(["--port", "0"]).env_remove("DISPLAY");
    Tray::user_env(&mut cmd, d.path());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[serve.running]") && stderr.contains("läuft bereits"), "{stderr}");
    // No terminal on the desktop: the same text is in the user's log directory.
    let logged = std::fs::read_to_string(data.join("logs/tray-start-error.log")).unwrap();
    assert_eq!(logged, stderr);
    assert!(!data.join("show-window.request").exists(), "the unanswered request is withdrawn");
}
