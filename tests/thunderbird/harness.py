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
import ssl
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

    def __init__(self, directory: Path, sieve_before: Path | None = None):
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
        sieve_conf = ""
        if sieve_before is not None:
            # Pigeonhole runs this script at LMTP delivery before the user's own, as IT sets
            # up the gateway's keyword script (docs/deployment.md). Compiled here, so the
            # delivering user need not write beside it.
            sdir = self.dir / "sieve"
            sdir.mkdir(exist_ok=True)
            script = sdir / "before.sieve"
            shutil.copy(sieve_before, script)
            subprocess.run(["sievec", str(script)], check=True, capture_output=True)
            for f in (sdir, *sdir.iterdir()):
                os.chmod(f, 0o755 if f.is_dir() else 0o644)
            sieve_conf = f"protocol lmtp {{\n  mail_plugins = $mail_plugins sieve\n}}\nplugin {{\n  sieve_before = {script}\n}}\n"
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
{sieve_conf}"""
        self.conf = self.dir / "dovecot.conf"
        self.conf.write_text(conf)
        self.proc = subprocess.Popen(
            ["dovecot", "-F", "-c", str(self.conf)],
            stdout=open(self.dir / "stdout.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_port(self.imap_port, proc=self.proc)
            wait_port(self.lmtp_port, proc=self.proc)
        except BaseException:
            self.close()
            raise

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

    def fetch_all(self, mailbox: str = "INBOX") -> list[tuple[int, list[str], bytes]]:
        """Every message of a mailbox as the server has it: (uid, flags, raw)."""
        import imaplib
        import re

        out = []
        with imaplib.IMAP4("127.0.0.1", self.imap_port) as m:
            m.login(USER, "x")
            typ, _ = m.select(mailbox, readonly=True)
            if typ != "OK":
                return []
            typ, data = m.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
            for item in data:
                if isinstance(item, tuple):
                    meta = item[0].decode()
                    uid = int(re.search(r"UID (\d+)", meta).group(1))
                    flags = re.search(r"FLAGS \(([^)]*)\)", meta).group(1).split()
                    out.append((uid, flags, item[1]))
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
        if v is None:  # extra={"pref": None}: leave it to Thunderbird (or the enterprise policy)
            continue
        lines.append(f"user_pref({json.dumps(k)}, {json.dumps(v)});")
    return "\n".join(lines) + "\n"


class Thunderbird:
    def __init__(self, directory: Path, xpi: Path | None, imap_port: int, smtp_port: int, managed: dict | None = None, width: int = 1400, height: int = 900, prefs: dict | None = None, env: dict | None = None, home: Path | None = None, headless: bool = True, binary: str | None = None):
        self.dir = directory
        self.profile = directory / "profile"
        self.home = home or directory / "home"
        (self.profile / "extensions").mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        if xpi is not None:  # None: the add-in comes by enterprise policy (policies.json)
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
        env.update({"HOME": str(self.home), "LANG": "de_DE.UTF-8", "TZ": "Europe/Berlin"})
        if headless:
            env.update({"MOZ_HEADLESS": "1", "MOZ_HEADLESS_WIDTH": str(width), "MOZ_HEADLESS_HEIGHT": str(height)})
            env.pop("DISPLAY", None)
        env.update(env_in or {})
        self.log_path = directory / "thunderbird.log"
        self.proc = subprocess.Popen(
            [binary or TB_BIN, *(["--headless"] if headless else []), "--marionette", "--remote-allow-system-access", "--no-remote", "--profile", str(self.profile)],
            stdout=open(self.log_path, "wb"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            wait_port(self.marionette_port, timeout=90, proc=self.proc)
            self.m = Marionette(self.marionette_port)
            self.m.start_session()
        except BaseException:
            # Interrupted or failed while starting: stop what was started.
            self._kill()
            raise

    def _kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

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
            self._kill()


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

    def __init__(self, home: Path, policy: dict | str, addon_id: str = ADDON_ID, gateway: "Gateway | None" = None, auto_approve: bool = True,
                 people: "Directory | None" = None):
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
        # IT's switches (machine file only): native auto-approval as asked, and provisioning,
        # which `token()` below uses for the test's own API calls.
        text = f'[policy]\nfile = "{policy_file}"\n\n[pairing]\nnative_auto_approve = {"true" if auto_approve else "false"}\nprovision = true\n\n'
        self.gateway = gateway
        if gateway is not None:
            # The organisation's gateway: STARTTLS verified against the test CA only; the
            # caseworker signs in with the Kerberos ticket of the desktop login (no user
            # name, no password, nothing in the keyring).
            text += (
                f'[gateway]\nhost = "localhost"\nport = {gateway.out_port}\ntls = "starttls"\n'
                f'ca_file = "{gateway.gw_pki["ca"]}"\nca_only = true\ntimeout = 10\n\n'
                '[relay]\nretry_initial = 1\nretry_max = 2\npoll_interval = 1\n\n'
            )
        machine.write_text(text)
        self.env = {
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "XDG_DATA_HOME": str(self.home / "data"),
            "XDG_RUNTIME_DIR": str(self.home / "run"),
            "DEMAIL_HELPER_SYSTEM_CONFIG": str(machine),
            "NO_COLOR": "1",
        }
        if people is not None:
            self.env.update(people.env())
            self.env["KRB5CCNAME"] = people.ccache
        manifest = json.loads(self.cli("native-manifest", "--extension-id", addon_id, "--host-path", str(self.native)))
        # Where Thunderbird 153 reads per-user manifests (Gecko's XREUserNativeManifests,
        # the same as Firefox's; checked in ThunderbirdAddinTest).
        for base in (".mozilla",):
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
        cmd = [str(self.demail), "serve", "--port", "0"]
        env = self._env()
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=out)
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self):
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


# --------------------------------------------------------------------------- test CA, gateway, provider simulator


def make_pki(d: Path, name: str) -> dict[str, str]:
    """A CA made now (openssl), a server certificate for localhost/127.0.0.1 and a
    client certificate (mutual TLS), as PEM files; keys in PKCS#8."""
    d.mkdir(parents=True, exist_ok=True)
    f = lambda n: str(d / f"{name}-{n}")  # noqa: E731

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    def key(path):
        run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)

    key(f("ca-key.pem"))
    run("req", "-x509", "-new", "-key", f("ca-key.pem"), "-subj", f"/CN=demail test CA {name}", "-days", "2",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-out", f("ca.pem"))
    for leaf, cn, ext in (("server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                          ("client", "demail-test-client", "subjectAltName=DNS:demail-test-client\nextendedKeyUsage=clientAuth")):
        key(f(f"{leaf}-key.pem"))
        run("req", "-new", "-key", f(f"{leaf}-key.pem"), "-subj", f"/CN={cn}", "-out", f(f"{leaf}.csr"))
        Path(f(f"{leaf}.ext")).write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n" + ext + "\n")
        run("x509", "-req", "-in", f(f"{leaf}.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca-key.pem"), "-CAcreateserial",
            "-days", "2", "-extfile", f(f"{leaf}.ext"), "-out", f(f"{leaf}.pem"))
    return {"ca": f("ca.pem"), "server_cert": f("server.pem"), "server_key": f("server-key.pem"),
            "client_cert": f("client.pem"), "client_key": f("client-key.pem")}


def make_provider_signer(d: Path) -> dict[str, str]:
    """A provider's "qualified" CA and signing certificate (openssl, EC P-256, as
    testkit/src/qca.rs makes them): the simulator signs De-Mails and receipts with it
    (`X-de-mail-integrity`), the policy trusts the CA (`[integrity] trusted_providers`)."""
    d.mkdir(parents=True, exist_ok=True)
    f = lambda n: str(d / f"qca-{n}")  # noqa: E731

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    for k in ("ca-key.pem", "sign-key.pem"):
        run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f(k))
    run("req", "-x509", "-new", "-key", f("ca-key.pem"), "-subj", "/C=DE/O=Test-QCA/CN=dmda-sim qualified CA", "-days", "30", "-sha256",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", f("ca.pem"))
    run("req", "-new", "-key", f("sign-key.pem"), "-subj", "/C=DE/O=DMDA Simulator/CN=DMDA Simulator Signatur", "-out", f("sign.csr"))
    Path(f("sign.ext")).write_text("keyUsage=critical,digitalSignature,nonRepudiation\n")
    run("x509", "-req", "-in", f("sign.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca-key.pem"), "-CAcreateserial", "-days", "30", "-sha256",
        "-extfile", f("sign.ext"), "-out", f("sign.pem"))
    return {"ca": f("ca.pem"), "ca_pem": Path(f("ca.pem")).read_text(), "key": f("sign-key.pem"), "cert": f("sign.pem")}


def make_seal_key(d: Path, kid: str = "gw1") -> tuple[str, str]:
    """An Ed25519 key pair for the gateway seal (openssl): (base64 private seed, the
    policy's public key line `kid:base64`)."""
    d.mkdir(parents=True, exist_ok=True)
    k = d / "seal-key.der"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-outform", "DER", "-out", str(k)], check=True, capture_output=True)
    pub = subprocess.run(["openssl", "pkey", "-in", str(k), "-inform", "DER", "-pubout", "-outform", "DER"], check=True, capture_output=True).stdout
    seed = k.read_bytes()[-32:]
    k.unlink()  # the private key lives only in the gateway's keyring
    return base64.b64encode(seed).decode(), f"{kid}:{base64.b64encode(pub[-32:]).decode()}"


def gateway_bins() -> tuple[Path, Path] | None:
    d = target_dir() / "debug"
    gw, sim = d / "demail-gateway", d / "demail-provider-sim"
    return (gw, sim) if gw.exists() and sim.exists() else None


def _spawn(cmd, env, log: Path):
    full = dict(os.environ)
    full.update(env)
    return subprocess.Popen(cmd, env=full, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc, grace: float = 10):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Directory:
    """The organisation's directory for the full chain: an MIT Kerberos KDC and OpenLDAP
    (`demail-test-directory`, the Rust tests' starters), with Peter Meier in the De-Mail
    group and a ticket in his own credential cache, as after his desktop login."""

    REALM = "MUSTERSTADT.TEST"
    PERSON, PERSON_NAME, PERSON_PASSWORD = "peter", "Peter Meier", "Peter-Passwort-1"

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        binary = target_dir() / "debug" / "demail-test-directory"
        if not binary.exists():
            raise FileNotFoundError("demail-test-directory not built (cargo build -p demail-testkit --bin demail-test-directory)")
        spec = {"dir": str(self.dir), "realm": self.REALM, "service": "smtp/localhost",
                "people": [{"uid": self.PERSON, "name": self.PERSON_NAME, "password": self.PERSON_PASSWORD, "mail": [USER_EMAIL]}],
                "groups": [{"cn": "demail-nutzer", "members": [self.PERSON]}]}
        self.proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(self.dir / "directory.log", "ab"), start_new_session=True)
        self.proc.stdin.write((json.dumps(spec) + "\n").encode())
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"demail-test-directory: {(self.dir / 'directory.log').read_text(errors='replace')[-2000:]}")
        self.info = json.loads(line)
        self.ccache = self.info["people"][self.PERSON]["ccache"]

    def env(self) -> dict:
        """Kerberos for every process of the desk and the gateway (no system file touched)."""
        return {"KRB5_CONFIG": self.info["krb5_conf"]}

    def gateway_toml(self, bind_env: str) -> str:
        i = self.info
        return (f'\n[identity]\nkerberos = true\nkeytab = "{i["keytab"]}"\nrealms = ["{self.REALM}"]\n'
                f'ldap_password = true\ndemail_group = "{i["groups"]["demail-nutzer"]}"\n\n'
                f'[directory]\nurl = "{i["ldap_url"]}"\nstarttls = true\nca = "{i["ca"]}"\nbind_dn = "{i["bind_dn"]}"\n'
                f'bind_password_env = "{bind_env}"\nbase_dn = "{i["base_dn"]}"\ncache_ttl_secs = 60\ngrace_secs = 900\n')

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(15)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)


class Gateway:
    """The real `demail-gateway`: outbound (STARTTLS + AUTH) for the helper, inbound
    (implicit TLS, the provider's client certificate required) delivering to Dovecot
    by LMTP, the provider simulator as its provider (implicit TLS, mutual TLS, AUTH)."""

    PROVIDER_USER, PROVIDER_SECRET = "musterstadt-gw", "token+pin-e2e"
    # The second factor of the gateway's "hoch" login at the provider (TOTP, base32; a TEST secret).
    PROVIDER_TOTP = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"

    def __init__(self, directory: Path, policy_file: Path, lmtp_port: int, provider_port: int, gw_pki: dict, provider_pki: dict, people: "Directory", seal_key: str | None = None):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.gw_pki, self.provider_pki = gw_pki, provider_pki
        self.out_port, self.in_port = free_port(), free_port()
        d = self.dir
        self.config = d / "gateway.toml"
        self.config.write_text(f"""
[gateway]
hostname = "gw.musterstadt.de"
spool_dir = "{d}/spool"
archive_db = "{d}/archive/archive.sqlite"
policy = "{policy_file}"
postmaster = "postmaster@musterstadt.de"

[tls]
cert = "{gw_pki['server_cert']}"
key = "{gw_pki['server_key']}"

[outbound]
listen = "127.0.0.1:{self.out_port}"
tls = "starttls"
require_auth = true
allowed_clients = ["127.0.0.0/8"]

[inbound]
listen = "127.0.0.1:{self.in_port}"
tls = "implicit"
client_ca = "{provider_pki['ca']}"
allowed_clients = ["127.0.0.1"]
deliver = {{ protocol = "lmtp", host = "127.0.0.1", port = {lmtp_port}, tls = "none" }}

[[providers]]
name = "dmda-sim"
domains = ["musterstadt.de-mail.de"]
host = "127.0.0.1"
port = {provider_port}
tls = "implicit"
tls_name = "localhost"
ca = "{provider_pki['ca']}"
client_cert = "{provider_pki['client_cert']}"
client_key = "{provider_pki['client_key']}"
username = "{self.PROVIDER_USER}"
secret_env = "DEMAIL_E2E_PROVIDER_SECRET"
totp_secret_env = "DEMAIL_E2E_PROVIDER_TOTP"

[queue]
retry_initial_secs = 1
retry_max_secs = 2
scan_interval_ms = 200
""" + people.gateway_toml("DEMAIL_E2E_DIRECTORY_PASSWORD") + ('\n[seal]\nkid = "gw1"\nkey_keyring = "demail-gateway-seal/gw1"\n' if seal_key else ""))
        self.bin = gateway_bins()[0]
        self.env = {"DEMAIL_E2E_DIRECTORY_PASSWORD": people.info["bind_password"], "DEMAIL_E2E_PROVIDER_SECRET": self.PROVIDER_SECRET,
                    "DEMAIL_E2E_PROVIDER_TOTP": self.PROVIDER_TOTP, "RUST_LOG": "info", **people.env()}
        self.log_path = d / "gateway.log"
        cmd = [str(self.bin), "--config", str(self.config), "serve"]
        if seal_key:
            # The seal's private key only in the gateway's own session keyring.
            self.env["DEMAIL_E2E_SEAL_KEY"] = seal_key
            script = (f'printf "%s" "$DEMAIL_E2E_SEAL_KEY" | "{self.bin}" --config "{self.config}" secret set seal-key >&2'
                      f' && unset DEMAIL_E2E_SEAL_KEY && exec "{self.bin}" --config "{self.config}" serve')
            cmd = ["keyctl", "session", "-", "sh", "-c", script]
        self.proc = _spawn(cmd, self.env, self.log_path)
        try:
            wait_port(self.out_port, proc=self.proc)
            wait_port(self.in_port, proc=self.proc)
        except BaseException:
            _stop(self.proc, 2)
            raise

    def cli(self, *args) -> str:
        env = dict(os.environ)
        env.update(self.env)
        r = subprocess.run([str(self.bin), "--config", str(self.config), *args], env=env, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"demail-gateway {' '.join(args)}: {r.returncode}\n{r.stderr}")
        return r.stdout

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def deliver_as_provider(self, mail_from: str, rcpt: str, raw: bytes) -> None:
        """Hand a message to the inbound listener as the provider does (implicit TLS,
        the provider's client certificate): it is checked, sealed and delivered like any."""
        ctx = ssl.create_default_context(cafile=self.gw_pki["ca"])
        ctx.load_cert_chain(self.provider_pki["client_cert"], self.provider_pki["client_key"])
        with smtplib.SMTP_SSL("127.0.0.1", self.in_port, context=ctx, timeout=30) as c:
            c.sendmail(mail_from, [rcpt], raw)

    def close(self):
        _stop(self.proc)


class ProviderSim:
    """The real `demail-provider-sim`: takes the gateway's submissions (implicit TLS,
    the gateway's client certificate, AUTH), stores them, and sends receipts and
    injected citizen De-Mails to the gateway's inbound listener."""

    def __init__(self, directory: Path, port: int, gateway: Gateway, signer: dict | None = None):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.store = self.dir / "store"
        p, g = gateway.provider_pki, gateway.gw_pki
        signing = (f'[signing]\nalgorithm = "sha256/ec-dsa"\nkey = "{signer["key"]}"\ncert = "{signer["cert"]}"\n' if signer else "")
        self.config = self.dir / "sim.toml"
        self.config.write_text(f"""
hostname = "dmda-sim.de-mail.de"
listen = "127.0.0.1:{port}"
tls = {{ cert = "{p['server_cert']}", key = "{p['server_key']}" }}
client_ca = "{p['ca']}"
store_dir = "{self.store}"
username = "{Gateway.PROVIDER_USER}"
secret_env = "DEMAIL_E2E_PROVIDER_SECRET"
totp_secret_env = "DEMAIL_E2E_PROVIDER_TOTP"
unknown_local_prefixes = ["unbekannt"]
{signing}[gateway]
host = "127.0.0.1"
port = {gateway.in_port}
ca = "{g['ca']}"
client_cert = "{p['client_cert']}"
client_key = "{p['client_key']}"
domains = ["musterstadt.de-mail.de"]
""")
        self.bin = gateway_bins()[1]
        self.env = {"DEMAIL_E2E_PROVIDER_SECRET": Gateway.PROVIDER_SECRET,
                    "DEMAIL_E2E_PROVIDER_TOTP": Gateway.PROVIDER_TOTP, "RUST_LOG": "info"}
        self.log_path = self.dir / "sim.log"
        self.proc = _spawn([str(self.bin), "--config", str(self.config), "serve"], self.env, self.log_path)
        try:
            wait_port(port, proc=self.proc)
        except BaseException:
            _stop(self.proc, 2)
            raise

    def cli(self, *args) -> dict:
        env = dict(os.environ)
        env.update(self.env)
        r = subprocess.run([str(self.bin), "--config", str(self.config), *args], env=env, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"demail-provider-sim {' '.join(args)}: {r.returncode}\n{r.stdout}{r.stderr}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def inject(self, sender: str, to: str, subject: str, options: str = "", private_id: str | None = None) -> dict:
        args = ["inject", "--from", sender, "--to", to, "--subject", subject, "--options", options]
        if private_id:
            args += ["--private-id", private_id]
        return self.cli(*args)

    def retrieve(self, private_id: str) -> dict:
        return self.cli("retrieve", "--private-id", private_id)

    def stored(self) -> list[tuple[dict, bytes]]:
        """What the provider received from the gateway: (its record, the exact message)."""
        out = []
        if self.store.exists():
            for j in sorted(self.store.glob("*.json")):
                eml = j.with_suffix(".eml")
                if eml.exists():
                    out.append((json.loads(j.read_text()), eml.read_bytes()))
        return out

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self):
        _stop(self.proc)


def install_with_policies(directory: Path, policies: dict) -> Path:
    """A Thunderbird installation that reads `policies` as its enterprise policy
    (`<install dir>/distribution/policies.json`, the route IT uses on Windows and for a
    local install): the files of /usr/lib/thunderbird linked, the launcher copied (the
    installation directory is where the binary lies), no system file touched."""
    src = Path(TB_BIN).resolve().parent
    directory.mkdir(parents=True, exist_ok=True)
    for e in src.iterdir():
        if e.name in ("thunderbird", "thunderbird-bin", "distribution"):
            continue
        (directory / e.name).symlink_to(e)
    binary = directory / "thunderbird"
    shutil.copy(Path(TB_BIN).resolve(), binary)
    (directory / "distribution").mkdir()
    (directory / "distribution" / "policies.json").write_text(json.dumps({"policies": policies}, indent=1))
    return binary


class Harness:
    def __init__(self, xpi: Path | None, managed: dict | None = None, keep: bool = False, before_thunderbird=None, prefs: dict | None = None, helper_policy: dict | None = None, chain: bool = False, auto_approve: bool = True, headless: bool = True, policies: dict | None = None, seal: bool = False, sieve_before: Path | None = None):
        self.tmp = Path(tempfile.mkdtemp(prefix="demail-tb-"))
        if os.geteuid() == 0:
            os.chmod(self.tmp, 0o711)  # Dovecot's mail processes run as nobody
        self.keep = keep
        self.sink = self.dovecot = self.tb = self.helper = self.gateway = self.sim = self.directory = None
        try:
            self.sink = SmtpSink(self.tmp / "sink")
            self.dovecot = Dovecot(self.tmp / "dovecot", sieve_before=sieve_before)
            env = None
            if chain:
                # Full chain: helper → gateway → provider simulator → gateway → Dovecot.
                if not gateway_bins():
                    raise FileNotFoundError("demail-gateway / demail-provider-sim not built (cargo build -p demail-gateway)")
                pki = self.tmp / "pki"
                seal_key = None
                if seal:
                    # The gateway seals inbound mail; the policy (helper, add-in) requires it.
                    seal_key, public = make_seal_key(pki)
                    helper_policy = {**helper_policy, "seal": {"required": True, "public_keys": [public]}}
                # The provider signs (X-de-mail-integrity) with a CA the policy trusts, so
                # the helper can check receipts (issue 15).
                signer = make_provider_signer(pki)
                helper_policy = {**helper_policy, "integrity": {"trusted_providers": [signer["ca_pem"]]}}
                self.policy = helper_policy
                policy_file = self.tmp / "policy.json"
                policy_file.write_text(json.dumps(helper_policy))
                sim_port = free_port()
                self.directory = Directory(self.tmp / "directory")
                self.gateway = Gateway(self.tmp / "gateway", policy_file, self.dovecot.lmtp_port, sim_port, make_pki(pki, "gw"), make_pki(pki, "provider"),
                                       people=self.directory, seal_key=seal_key)
                self.sim = ProviderSim(self.tmp / "sim", sim_port, self.gateway, signer=signer)
            if helper_policy is not None:
                self.helper = Helper(self.tmp / "home", helper_policy, gateway=self.gateway, auto_approve=auto_approve, people=self.directory)
                env = self.helper.env
            if before_thunderbird:
                before_thunderbird(self)
            binary = None
            if policies is not None:
                # The add-in and IT's settings come by enterprise policy, as on a desk.
                binary = str(install_with_policies(self.tmp / "thunderbird-install", policies))
                xpi = None
            self.tb = Thunderbird(self.tmp / "tb", xpi, self.dovecot.imap_port, self.sink.port, managed=managed, prefs=prefs, env=env, home=self.tmp / "home", headless=headless, binary=binary)
        except BaseException:
            self.close()
            raise

    @property
    def m(self) -> Marionette:
        return self.tb.m

    def close(self):
        for part in (self.tb, self.helper, self.sim, self.gateway, self.directory, self.dovecot, self.sink):
            if part is None:
                continue
            try:
                part.close()
            except Exception:
                pass
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
