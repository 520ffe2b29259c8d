"""End-to-end harness: real Thunderbird (headless, Marionette), real Dovecot (IMAP + LMTP),
an SMTP sink for the ordinary e-mail path. Standard library only.

Everything runs unprivileged on 127.0.0.1 with free ports, in one temporary directory,
and is stopped by `Harness.close()`.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import os
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADDON_ID = "demail-addin@open-demail.de"
TB_BIN = os.environ.get("THUNDERBIRD_BIN", "/usr/lib/thunderbird/thunderbird")
USER = "peter.meier"
USER_EMAIL = "peter.meier@musterstadt.de"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30, proc: subprocess.Popen | None = None) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"port {port} did not open")


# --------------------------------------------------------------------------- Marionette


class MarionetteError(Exception):
    pass


class Marionette:
    """Minimal Marionette client: length-prefixed JSON over TCP (protocol 3)."""

    def __init__(self, port: int, timeout: float = 60):
        end = time.time() + timeout
        last = None
        while time.time() < end:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError as e:
                last = e
                time.sleep(0.2)
        else:
            raise TimeoutError(f"Marionette on {port}: {last}")
        self.sock.settimeout(120)
        self.buf = b""
        self.msg_id = 0
        hello = self._recv()
        if hello.get("marionetteProtocol") != 3:
            raise MarionetteError(f"unexpected hello {hello}")

    def _recv(self):
        while b":" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("Marionette closed the connection")
            self.buf += chunk
        n, rest = self.buf.split(b":", 1)
        n = int(n)
        while len(rest) < n:
            chunk = self.sock.recv(max(65536, n - len(rest)))
            if not chunk:
                raise ConnectionError("Marionette closed the connection")
            rest += chunk
        self.buf = rest[n:]
        return json.loads(rest[:n])

    def command(self, name: str, params: dict | None = None):
        self.msg_id += 1
        data = json.dumps([0, self.msg_id, name, params or {}]).encode()
        self.sock.sendall(str(len(data)).encode() + b":" + data)
        while True:
            msg = self._recv()
            if msg[0] == 1 and msg[1] == self.msg_id:
                break
        _, _, err, result = msg
        if err:
            raise MarionetteError(f"{name}: {err.get('error')}: {err.get('message')}\n{err.get('stacktrace', '')[:2000]}")
        return result

    def start_session(self):
        self.command("WebDriver:NewSession", {"capabilities": {"alwaysMatch": {"moz:accessibilityChecks": False}}})
        self.command("Marionette:SetContext", {"value": "chrome"})
        self.command("WebDriver:SetTimeouts", {"script": 120000})

    def js(self, script: str, *args):
        """Run privileged JS in the chrome context; a returned Promise is awaited."""
        wrapped = f"return (async (...args) => {{\n{script}\n}})(...arguments);"
        r = self.command("WebDriver:ExecuteScript", {"script": wrapped, "args": list(args), "newSandbox": False})
        return r.get("value") if isinstance(r, dict) else r

    def handle_of(self, js_find_window: str) -> str:
        """Marionette's window handle for the chrome window a JS expression finds."""
        return self.js(
            'const { NavigableManager } = ChromeUtils.importESModule("chrome://remote/content/shared/NavigableManager.sys.mjs");\n'
            f"const win = ({js_find_window});\n"
            "return win ? String(NavigableManager.getIdForBrowsingContext(win.browsingContext)) : null;"
        )

    def screenshot(self, handle: str | None = None) -> bytes:
        if handle:
            self.command("WebDriver:SwitchToWindow", {"handle": handle})
        r = self.command("WebDriver:TakeScreenshot", {"full": False, "hash": False})
        return base64.b64decode(r["value"])

    def close(self):
        try:
            self.command("WebDriver:DeleteSession")
        except Exception:
            pass
        self.sock.close()


# --------------------------------------------------------------------------- SMTP sink


class SmtpSink:
    """The ordinary e-mail path: accepts every message and keeps it (RFC 5321 subset)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.messages: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self.ready.set()
        self.loop.run_forever()

    async def _client(self, reader, writer):
        def say(line):
            writer.write(line.encode() + b"\r\n")

        say("220 sink.test ESMTP")
        mail_from, rcpts = None, []
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                cmd = line.decode("latin1").strip()
                up = cmd.upper()
                if up.startswith(("EHLO", "HELO")):
                    say("250-sink.test")
                    say("250-8BITMIME")
                    say("250 SIZE 52428800")
                elif up.startswith("MAIL FROM:"):
                    mail_from, rcpts = cmd[10:].strip(), []
                    say("250 OK")
                elif up.startswith("RCPT TO:"):
                    rcpts.append(cmd[8:].strip())
                    say("250 OK")
                elif up == "DATA":
                    say("354 go ahead")
                    await writer.drain()
                    data = bytearray()
                    while True:
                        ln = await reader.readline()
                        if ln in (b".\r\n", b".\n", b""):
                            break
                        if ln.startswith(b".."):
                            ln = ln[1:]
                        data += ln
                    n = len(self.messages) + 1
                    path = self.dir / f"{n:03d}.eml"
                    path.write_bytes(bytes(data))
                    self.messages.append({"from": mail_from, "rcpt": rcpts, "raw": bytes(data), "path": str(path)})
                    say("250 queued")
                elif up == "QUIT":
                    say("221 bye")
                    await writer.drain()
                    break
                elif up in ("RSET", "NOOP"):
                    say("250 OK")
                else:
                    say("502 not implemented")
                await writer.drain()
        finally:
            writer.close()

    def parsed(self, i: int):
        return email.message_from_bytes(self.messages[i]["raw"], policy=email.policy.default)

    def close(self):
        def stop():
            self.server.close()
            self.loop.stop()

        self.loop.call_soon_threadsafe(stop)
        self.thread.join(5)


# --------------------------------------------------------------------------- Dovecot


class Dovecot:
    """Dovecot 2.3 from a private config: IMAP and LMTP on loopback, maildir, any password."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.imap_port = free_port()
        self.lmtp_port = free_port()
        root = os.geteuid() == 0
        me = pwd.getpwuid(os.geteuid()).pw_name
        mail_user = "nobody" if root else me
        pw = pwd.getpwnam(mail_user)
        for sub in ("run", "state", "mail", "home"):
            (self.dir / sub).mkdir(exist_ok=True)
        if root:
            for sub in ("mail", "home"):
                os.chown(self.dir / sub, pw.pw_uid, pw.pw_gid)
            os.chmod(self.dir, 0o755)
        conf = f"""
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.dir}/dovecot.log
info_log_path = {self.dir}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Ln
default_login_user = {"dovenull" if root else me}
default_internal_user = {"dovecot" if root else me}
first_valid_uid = {pw.pw_uid}
last_valid_uid = {pw.pw_uid}
mail_location = maildir:{self.dir}/mail/%u
mail_plugins =
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid={pw.pw_uid} gid={pw.pw_gid} home={self.dir}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
protocol imap {{
  imap_idle_notify_interval = 1 secs
}}
"""
        self.conf = self.dir / "dovecot.conf"
        self.conf.write_text(conf)
        self.proc = subprocess.Popen(
            ["dovecot", "-F", "-c", str(self.conf)],
            stdout=open(self.dir / "stdout.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        wait_port(self.imap_port, proc=self.proc)
        wait_port(self.lmtp_port, proc=self.proc)

    def deliver(self, raw: bytes, rcpt: str = USER_EMAIL, sender: str = "absender@test") -> None:
        """Deliver one message to the user's INBOX through LMTP."""
        with smtplib.LMTP("127.0.0.1", self.lmtp_port) as l:
            l.sendmail(sender, [rcpt], raw)

    def keywords(self, uid_filter: str = "1:*", mailbox: str = "INBOX") -> dict[int, list[str]]:
        """The IMAP keywords of every message (server view): {uid: [flags]}."""
        import imaplib

        with imaplib.IMAP4("127.0.0.1", self.imap_port) as m:
            m.login(USER, "x")
            m.select(mailbox, readonly=True)
            typ, data = m.uid("FETCH", uid_filter, "(FLAGS)")
            out = {}
            for item in data:
                if not item:
                    continue
                s = item.decode() if isinstance(item, bytes) else item[0].decode()
                import re

                mm = re.search(r"UID (\d+) FLAGS \(([^)]*)\)", s) or re.search(r"FLAGS \(([^)]*)\) UID (\d+)", s)
                if not mm:
                    continue
                if mm.re.pattern.startswith("UID"):
                    out[int(mm.group(1))] = mm.group(2).split()
                else:
                    out[int(mm.group(2))] = mm.group(1).split()
            return out

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# --------------------------------------------------------------------------- Thunderbird


def user_js(marionette_port: int, imap_port: int, smtp_port: int, extra: dict | None = None) -> str:
    prefs = {
        "marionette.port": marionette_port,
        "mail.provider.suppress_dialog_on_startup": True,
        "mail.shell.checkDefaultClient": False,
        "mailnews.start_page.enabled": False,
        "mail.rights.version": 1,
        "mail.spotlight.firstRunDone": True,
        "mail.winsearch.firstRunDone": True,
        "xpinstall.signatures.required": False,
        "extensions.autoDisableScopes": 0,
        "extensions.enabledScopes": 15,
        "app.update.disabledForTesting": True,
        "app.update.auto": False,
        "datareporting.policy.dataSubmissionEnabled": False,
        "toolkit.telemetry.reportingpolicy.firstRun": False,
        "devtools.console.stdout.content": True,
        "browser.dom.window.dump.enabled": True,
        "mail.tabs.drawInTitlebar": False,
        "mail.uidensity": 1,
        # Table view: Thunderbird colours the whole row of a tagged message in the tag's
        # colour (cards view shows only a small tag icon). IT sets this by policy.
        "mail.threadpane.listview": 1,
        "mail.pane_config.dynamic": 1,
        "intl.locale.requested": "de",
        "mail.accountmanager.accounts": "account1,account2",
        "mail.accountmanager.defaultaccount": "account1",
        "mail.accountmanager.localfoldersserver": "server2",
        "mail.account.account1.identities": "id1",
        "mail.account.account1.server": "server1",
        "mail.account.account2.server": "server2",
        "mail.identity.id1.fullName": "Peter Meier",
        "mail.identity.id1.useremail": USER_EMAIL,
        "mail.identity.id1.smtpServer": "smtp1",
        "mail.identity.id1.valid": True,
        "mail.identity.id1.compose_html": False,
        "mail.identity.id1.fcc_folder": f"imap://{USER}@127.0.0.1/Sent",
        "mail.identity.id1.fcc_folder_picker_mode": "0",
        "mail.identity.id1.reply_on_top": 1,
        "mail.server.server1.hostname": "127.0.0.1",
        "mail.server.server1.port": imap_port,
        "mail.server.server1.type": "imap",
        "mail.server.server1.userName": USER,
        "mail.server.server1.name": "Peter Meier (Stadt Musterstadt)",
        "mail.server.server1.socketType": 0,
        "mail.server.server1.authMethod": 3,
        "mail.server.server1.login_at_startup": False,
        "mail.server.server1.check_new_mail": True,
        "mail.server.server1.check_time": 1,
        "mail.server.server1.use_idle": True,
        "mail.server.server1.offline_download": False,
        "mail.server.server2.type": "none",
        "mail.server.server2.hostname": "Local Folders",
        "mail.server.server2.userName": "nobody",
        "mail.server.server2.name": "Lokale Ordner",
        "mail.smtpservers": "smtp1",
        "mail.smtp.defaultserver": "smtp1",
        "mail.smtpserver.smtp1.type": "smtp",
        "mail.smtpserver.smtp1.hostname": "127.0.0.1",
        "mail.smtpserver.smtp1.port": smtp_port,
        "mail.smtpserver.smtp1.authMethod": 1,
        "mail.smtpserver.smtp1.try_ssl": 0,
        "mail.smtpserver.smtp1.description": "Test-SMTP",
        "mailnews.headers.showSender": True,
    }
    if os.environ.get("DEMAIL_TB_IDLE_MS"):
        # MV3 event page suspended after this idle time (default 30 s): proves the
        # add-in wakes for its events.
        prefs["extensions.background.idle.timeout"] = int(os.environ["DEMAIL_TB_IDLE_MS"])
    prefs.update(extra or {})
    lines = []
    for k, v in prefs.items():
        lines.append(f"user_pref({json.dumps(k)}, {json.dumps(v)});")
    return "\n".join(lines) + "\n"


class Thunderbird:
    def __init__(self, directory: Path, xpi: Path, imap_port: int, smtp_port: int, managed: dict | None = None, width: int = 1400, height: int = 900, prefs: dict | None = None, env: dict | None = None, home: Path | None = None):
        self.dir = directory
        self.profile = directory / "profile"
        self.home = home or directory / "home"
        (self.profile / "extensions").mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        shutil.copy(xpi, self.profile / "extensions" / f"{ADDON_ID}.xpi")
        self.marionette_port = free_port()
        (self.profile / "user.js").write_text(user_js(self.marionette_port, imap_port, smtp_port, prefs))
        if managed is not None:
            # IT policy for the add-in through a managed-storage manifest (same data as
            # policies.json 3rdparty.Extensions[id], which needs a system-wide file).
            doc = {"name": ADDON_ID, "description": "De-Mail test policy", "type": "storage", "data": managed}
            for base in (".mozilla", ".thunderbird"):
                d = self.home / base / "managed-storage"
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{ADDON_ID}.json").write_text(json.dumps(doc))
        env_in = env
        env = dict(os.environ)
        env.update({"MOZ_HEADLESS": "1", "HOME": str(self.home), "MOZ_HEADLESS_WIDTH": str(width), "MOZ_HEADLESS_HEIGHT": str(height), "LANG": "de_DE.UTF-8", "TZ": "Europe/Berlin"})
        env.pop("DISPLAY", None)
        env.update(env_in or {})
        self.log_path = directory / "thunderbird.log"
        self.proc = subprocess.Popen(
            [TB_BIN, "--headless", "--marionette", "--remote-allow-system-access", "--no-remote", "--profile", str(self.profile)],
            stdout=open(self.log_path, "wb"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        wait_port(self.marionette_port, timeout=90, proc=self.proc)
        self.m = Marionette(self.marionette_port)
        self.m.start_session()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self):
        try:
            self.m.js("Services.startup.quit(Ci.nsIAppStartup.eForceQuit);")
        except Exception:
            pass
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


# --------------------------------------------------------------------------- helper


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/demail-target"))


def helper_bins() -> tuple[Path, Path] | None:
    """The helper's binaries (`demail`, `demail-native-host`), when built."""
    d = target_dir() / "debug"
    demail, native = d / "demail", d / "demail-native-host"
    return (demail, native) if demail.exists() and native.exists() else None


class Helper:
    """The real local helper (`demail serve`) for one user session: its own HOME and XDG
    dirs (shared with Thunderbird, as on a desktop), a machine file that lets the
    native host pair without asking (IT roll-out), and the native-messaging manifest
    in that HOME so Thunderbird finds `demail-native-host`."""

    def __init__(self, home: Path, policy: dict | str, addon_id: str = ADDON_ID):
        bins = helper_bins()
        if not bins:
            raise FileNotFoundError("demail / demail-native-host not built (cargo build -p demail-cli -p demail-helper)")
        self.demail, self.native = bins
        self.home = home
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "run").mkdir(mode=0o700, exist_ok=True)
        policy_file = self.home / "policy.json"
        policy_file.write_text(policy if isinstance(policy, str) else json.dumps(policy))
        machine = self.home / "machine-helper.toml"
        machine.write_text(
            f'[policy]\nfile = "{policy_file}"\n\n[pairing]\nnative_auto_approve = true\n\n[lock]\nkeys = ["pairing.native_auto_approve"]\n'
        )
        self.env = {
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "XDG_DATA_HOME": str(self.home / "data"),
            "XDG_RUNTIME_DIR": str(self.home / "run"),
            "DEMAIL_HELPER_SYSTEM_CONFIG": str(machine),
            "NO_COLOR": "1",
        }
        manifest = json.loads(self.cli("native-manifest", "--extension-id", addon_id, "--host-path", str(self.native)))
        for base in (".mozilla", ".thunderbird"):
            d = self.home / base / "native-messaging-hosts"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{manifest['name']}.json").write_text(json.dumps(manifest))
        self.proc = None
        self.port = None
        self.start()

    def _env(self):
        env = {k: v for k, v in os.environ.items() if k not in ("DEMAIL_HELPER_CONFIG", "DEMAIL_HELPER_RUNTIME_DIR", "DEMAIL_POLICY", "DBUS_SESSION_BUS_ADDRESS")}
        env.update(self.env)
        return env

    def cli(self, *args) -> str:
        r = subprocess.run([str(self.demail), *args], env=self._env(), capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"demail {' '.join(args)}: {r.returncode}\n{r.stderr}")
        return r.stdout

    def start(self):
        self.log_path = self.home / "helper.log"
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([str(self.demail), "serve", "--port", "0"], env=self._env(), stdout=subprocess.PIPE, stderr=out)
        end = time.time() + 30
        while time.time() < end:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"demail serve exited: {self.log_path.read_text(errors='replace')[-2000:]}")
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "listening":
                self.port = ev["port"]
                threading.Thread(target=self._drain, daemon=True).start()
                return
        raise TimeoutError("demail serve did not start")

    def _drain(self):
        stdout = self.proc.stdout
        try:
            for _ in iter(stdout.readline, b""):
                pass
        except (ValueError, OSError):
            pass  # closed by stop()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    close = stop

    def token(self) -> str:
        return json.loads(self.cli("pair", "provision", "--client", "e2e-test"))["token"]

    def api(self, path: str, token: str, raw: bool = False):
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return body if raw else json.loads(body)


class Harness:
    def __init__(self, xpi: Path, managed: dict | None = None, keep: bool = False, before_thunderbird=None, prefs: dict | None = None, helper_policy: dict | None = None):
        self.tmp = Path(tempfile.mkdtemp(prefix="demail-tb-"))
        if os.geteuid() == 0:
            os.chmod(self.tmp, 0o711)  # Dovecot's mail processes run as nobody
        self.keep = keep
        self.sink = self.dovecot = self.tb = self.helper = None
        try:
            self.sink = SmtpSink(self.tmp / "sink")
            self.dovecot = Dovecot(self.tmp / "dovecot")
            env = None
            if helper_policy is not None:
                self.helper = Helper(self.tmp / "home", helper_policy)
                env = self.helper.env
            if before_thunderbird:
                before_thunderbird(self)
            self.tb = Thunderbird(self.tmp / "tb", xpi, self.dovecot.imap_port, self.sink.port, managed=managed, prefs=prefs, env=env, home=self.tmp / "home")
        except BaseException:
            self.close()
            raise

    @property
    def m(self) -> Marionette:
        return self.tb.m

    def close(self):
        for part in (self.tb, self.helper, self.dovecot, self.sink):
            if part is None:
                continue
            try:
                part.close()
            except Exception:
                pass
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
