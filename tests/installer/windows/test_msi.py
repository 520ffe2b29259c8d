#!/usr/bin/env python3
"""The Windows installer under wine, in a fresh WINEPREFIX made here (scripts/test-installer-windows).

Installs artifacts/demail-desktop.msi with IT properties, checks files and registry (including
the tray app demail-tray.exe and WebView2Loader.dll as PE files: GUI subsystem, imports resolved
by the installed DLL, and its Start-menu entry; the tray itself cannot run here, wine 8 has no WebView2), starts the
installed headless helper demail-service.exe and talks to it (health, native-messaging discovery and
pairing, a token-protected call), round-trips the gateway password through the Windows
credential store and logs in with it at the real demail-gateway over verified TLS, checks that Group Policy values win and lock, upgrades to a higher version
(settings and user data kept, a new property still applies) and uninstalls (files and registry
gone, users' data left alone). Then a headless-only install (REMOVE=Tray, for terminal servers):
no tray files, autostart demail-service.exe, kept over an upgrade, switched to the tray by a
maintenance install (autostart only with WebView2 registered or WEBVIEW2_RUNTIME=1). Also checks the ADMX/ADML against what the MSI writes and the
helper reads.

usage: test_msi.py BASE.msi UPGRADE.msi UPGRADE_VERSION
"""
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
HERE = os.path.dirname(os.path.abspath(__file__))
ADMX_NS = {"p": "http://schemas.microsoft.com/GroupPolicy/2006/07/PolicyDefinitions"}
HELPER_KEY = r"HKLM\Software\demail\Helper"
POLICY_KEY = r"HKLM\Software\Policies\demail\Helper"
TB_KEY = r"HKLM\Software\Policies\Mozilla\Thunderbird"
NMH_KEY = r"HKLM\Software\Mozilla\NativeMessagingHosts\de.demail.helper"
RUN_KEY = r"HKLM\Software\Microsoft\Windows\CurrentVersion\Run"
ADDON_ID = "demail-addin@open-demail.de"
INSTALL_DIR = r"C:\Program Files\demail"
# The Run entry's command lines, as the MSI writes them.
RUN_TRAY = f'"{INSTALL_DIR}\\demail-tray.exe"'
RUN_SERVICE = f'"{INSTALL_DIR}\\demail-service.exe"'
TRAY_FILES = ["demail-tray.exe", "WebView2Loader.dll"]
# Where Microsoft documents the machine-wide WebView2 runtime (32-bit view on 64-bit Windows).
WEBVIEW2_KEY = r"HKLM\Software\Wow6432Node\Microsoft\EdgeUpdate\Clients\{F3017226-FE2A-4295-8BDF-00C3A9A7E4C5}"
SECRET = "Geheim-Testkennwort-7431"

checks = 0


def ok(cond, what, detail=""):
    global checks
    if not cond:
        print(f"FEHLER / FAIL: {what}\n{detail}", file=sys.stderr)
        sys.exit(1)
    checks += 1
    print(f"  ok: {what}")


class Wine:
    def __init__(self, prefix):
        self.prefix = prefix
        self.env = dict(os.environ)
        self.env.update(
            WINEPREFIX=prefix,
            WINEARCH="win64",
            WINEDEBUG="-all",
            # No Mono/Gecko download prompts in a fresh prefix; no winemenubuilder, which
            # would copy the MSI's Start-menu entry into this machine's desktop menu.
            WINEDLLOVERRIDES="mscoree,mshtml=;winemenubuilder.exe=d",
        )
        self.env.pop("DISPLAY", None)
        self.env.pop("WAYLAND_DISPLAY", None)

    def run(self, *args, stdin=None, check=False, timeout=180):
        p = subprocess.run(["wine", *args], env=self.env, input=stdin, capture_output=True, timeout=timeout)
        if check and p.returncode != 0:
            ok(False, f"wine {' '.join(args)} exit {p.returncode}", p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace"))
        return p

    def wait(self):
        subprocess.run(["wineserver", "-w"], env=self.env, timeout=300)

    def kill(self):
        subprocess.run(["wineserver", "-k"], env=self.env, timeout=60)

    def path(self, win):
        """C:\\x\\y → path in the prefix."""
        assert win[1:3] == ":\\", win
        return os.path.join(self.prefix, "drive_c", *win[3:].split("\\"))

    def reg(self, key):
        """Values of one key: {name: (type, data)}; None when the key is missing."""
        # wine's reg.exe now and then fails to start under load (CI saw one such miss on a
        # key the install had written): a missing key is asked three times before it counts.
        for _ in range(3):
            p = self.run("reg", "query", key)
            if p.returncode == 0:
                break
            self.wait()
        else:
            print(f"    reg query {key}: exit {p.returncode}: {p.stderr.decode(errors='replace')[-300:]}")
            return None
        out = {}
        for line in p.stdout.decode("utf-8", errors="replace").splitlines():
            m = re.match(r"^    (.*?)    (REG_\w+)    ?(.*)$", line)
            if m:
                out[m.group(1)] = (m.group(2), m.group(3))
        return out

    def demail(self, *args, stdin=None):
        p = self.run(r"C:\Program Files\demail\demail.exe", *args, stdin=stdin)
        try:
            body = json.loads(p.stdout.decode("utf-8"))
        except ValueError:
            body = None
        return p.returncode, body, p.stderr.decode("utf-8", errors="replace")


def msiexec(w, *args):
    log = os.path.join(w.prefix, "msi.log")
    t = time.time()
    p = w.run("msiexec", *args, "/qn", "/l*v", "C:\\msi.log", timeout=600)
    w.wait()
    text = ""
    if os.path.exists(w.path("C:\\msi.log")):
        raw = open(w.path("C:\\msi.log"), "rb").read()
        text = raw.decode("utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8", errors="replace")
        shutil.copy(w.path("C:\\msi.log"), log + f".{int(t)}")
    return p.returncode, text, time.time() - t


def native_host(w, request, caller=None):
    """One request as Thunderbird sends it: the manifest's path and the add-in's id as arguments."""
    data = json.dumps(request).encode()
    p = w.run(r"C:\Program Files\demail\demail-native-host.exe", r"C:\Program Files\demail\de.demail.helper.json", caller or ADDON_ID,
              stdin=struct.pack("<I", len(data)) + data)
    out = p.stdout
    ok(len(out) >= 4, f"native host answers {request.get('action')}", p.stderr.decode(errors="replace"))
    n = struct.unpack("<I", out[:4])[0]
    return json.loads(out[4 : 4 + n])


def http(port, method, path, token=None, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, data=data, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def autostart(w):
    """The Run entry's command line ("" when there is none)."""
    return (w.reg(RUN_KEY) or {}).get("De-Mail-Helfer", ("", ""))[1]


class Helper:
    """demail-service.exe, the headless helper, started as the Run entry starts it without the
    tray. The tray (which runs the same service) needs WebView2, which wine 8 lacks."""

    def __init__(self, w):
        self.w = w
        cmd = RUN_SERVICE
        self.runtime = None
        for d in glob_local(w):
            f = os.path.join(d, "demail", "run", "helper.json")
            if os.path.exists(f):
                os.remove(f)
        self.proc = subprocess.Popen(["wine", cmd.strip('"')], env=w.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 90
        while time.time() < deadline and self.runtime is None:
            for d in glob_local(w):
                f = os.path.join(d, "demail", "run", "helper.json")
                if os.path.exists(f):
                    try:
                        self.runtime = json.load(open(f))
                    except ValueError:
                        pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        ok(self.runtime is not None, r"helper publishes %LOCALAPPDATA%\demail\run\helper.json",
           self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else "timeout")
        self.port = self.runtime["port"]

    def stop(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        # The EXE runs inside wine's preloader: make sure nothing of it is left.
        self.w.run("taskkill", "/f", "/im", "demail-service.exe")
        time.sleep(1)


def pe(path):
    """PE facts from binutils (objdump -p): format, subsystem, {dll: [imported names]}, exports."""
    out = subprocess.run(["x86_64-w64-mingw32-objdump", "-p", path], capture_output=True, text=True, check=True).stdout
    fmt = re.search(r"file format (\S+)", out).group(1)
    subsystem = int(re.search(r"^Subsystem\s+([0-9a-f]+)", out, re.M).group(1), 16)
    imports, cur = {}, None
    for line in out.splitlines():
        m = re.match(r"^\tDLL Name: (\S+)", line)
        if m:
            cur = imports.setdefault(m.group(1).lower(), [])
        elif not line.strip():
            cur = None
        elif cur is not None and (m := re.match(r"^\t[0-9a-f]+\t\s*\d+\s+(\S+)", line)):
            cur.append(m.group(1))
    table = out.split("[Ordinal/Name Pointer] Table", 1)
    exports = re.findall(r"^\t\[\s*\d+\] (\S+)", table[1], re.M) if len(table) == 2 else []
    return fmt, subsystem, imports, exports


def webview2_loader_from_crate():
    """WebView2Loader.dll (x64) of the webview2-com-sys version Cargo.lock resolves."""
    meta = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1", "--filter-platform", "x86_64-pc-windows-gnu"],
                                     cwd=ROOT, capture_output=True, check=True).stdout)
    pk = [p for p in meta["packages"] if p["name"] == "webview2-com-sys"]
    ok(len(pk) == 1, "Cargo.lock resolves exactly one webview2-com-sys", [p["version"] for p in pk])
    return os.path.join(os.path.dirname(pk[0]["manifest_path"]), "x64", "WebView2Loader.dll"), pk[0]["version"]


def check_tray(w):
    """The tray app as installed: PE checks only (it cannot run under wine 8, no WebView2)."""
    inst = w.path(INSTALL_DIR)
    exe, dll = os.path.join(inst, "demail-tray.exe"), os.path.join(inst, "WebView2Loader.dll")
    for f in TRAY_FILES:
        ok(os.path.isfile(os.path.join(inst, f)), f"installed {f} (feature Tray)")
    fmt, subsystem, imports, _ = pe(exe)
    ok(fmt == "pei-x86-64", "demail-tray.exe is a 64-bit Windows program (PE32+ x86-64)", fmt)
    ok(subsystem == 2, "demail-tray.exe is linked for the GUI subsystem (no console window at logon)", subsystem)
    wanted = imports.get("webview2loader.dll", [])
    ok("CreateCoreWebView2EnvironmentWithOptions" in wanted, "demail-tray.exe imports WebView2Loader.dll (CreateCoreWebView2EnvironmentWithOptions)", sorted(imports))
    fmt, _, _, exports = pe(dll)
    ok(fmt == "pei-x86-64", "WebView2Loader.dll next to it is x86-64", fmt)
    ok(set(wanted) <= set(exports), "every function the tray imports from WebView2Loader.dll is exported by the installed DLL", set(wanted) - set(exports))
    src, version = webview2_loader_from_crate()
    ok(open(dll, "rb").read() == open(src, "rb").read(), f"the installed DLL is webview2-com-sys {version}'s x64 WebView2Loader.dll, unchanged")
    # api-ms-win-* are API sets the Windows loader maps to system DLLs, not files.
    present = {n.lower() for n in os.listdir(w.path(r"C:\windows\system32")) + os.listdir(inst)}
    missing = [d for d in imports if d not in present and not d.startswith("api-ms-win-")]
    ok(not missing, "every other DLL demail-tray.exe imports is next to it or in system32", missing)
    check_start_menu(w)


def start_menu_links(w):
    """Every "De-Mail-Helfer.lnk" in a Start menu of the prefix (wine 8 puts a per-machine
    install's entries in the user's Start menu, Windows in ProgramData's)."""
    root = os.path.join(w.prefix, "drive_c")
    return [os.path.join(d, f) for d, _, files in os.walk(root) if "Start Menu" in d for f in files if f == "De-Mail-Helfer.lnk"]


def check_start_menu(w):
    links = start_menu_links(w)
    ok(len(links) == 1, "one Start-menu entry De-Mail-Helfer (feature Tray): started again after Beenden, it opens the running window", links)
    raw = open(links[0], "rb").read()
    target = INSTALL_DIR + "\\demail-tray.exe"
    ok(target.encode("utf-16-le") in raw or target.encode() in raw, f"the Start-menu entry starts {target}", raw[:400])
    host = os.path.join(os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "applications", "wine", "Programs", "De-Mail-Helfer.desktop")
    ok(not os.path.exists(host), "the test leaves this machine's desktop menu alone (winemenubuilder off)", host)


def glob_local(w):
    users = os.path.join(w.prefix, "drive_c", "users")
    return [os.path.join(users, u, "AppData", "Local") for u in os.listdir(users) if os.path.isdir(os.path.join(users, u, "AppData", "Local"))]


# ------------------------------------------------------------------ ADMX / ADML (no wine)


def admx_policies():
    tree = ET.parse(os.path.join(ROOT, "installer/windows/admx/demail.admx"))
    pols = []
    for p in tree.getroot().iterfind(".//p:policy", ADMX_NS):
        key = p.get("key")
        entries = []
        if p.get("valueName"):
            entries.append((p.get("valueName"), "bool", []))
        for el in p.find("p:elements", ADMX_NS) or []:
            tag = el.tag.split("}")[1]
            items = [v.text for v in el.iterfind(".//p:string", ADMX_NS)] if tag == "enum" else []
            entries.append((el.get("valueName"), tag, items))
        pols.append((p.get("name"), key, entries))
    return tree, pols


def check_admx(msi, keys):
    print("ADMX/ADML")
    for f in ["demail.admx", "de-DE/demail.adml", "en-US/demail.adml"]:
        p = subprocess.run(["xmllint", "--noout", os.path.join(ROOT, "installer/windows/admx", f)], capture_output=True, text=True)
        ok(p.returncode == 0, f"{f} is well-formed XML (xmllint)", p.stderr)
    tree, pols = admx_policies()
    admx_text = open(os.path.join(ROOT, "installer/windows/admx/demail.admx"), encoding="utf-8").read()
    strings = set(re.findall(r"\$\(string\.([A-Za-z0-9_]+)\)", admx_text))
    presentations = set(re.findall(r"\$\(presentation\.([A-Za-z0-9_]+)\)", admx_text))
    ids = {}
    for lang in ["de-DE", "en-US"]:
        adml = ET.parse(os.path.join(ROOT, "installer/windows/admx", lang, "demail.adml")).getroot()
        s_ids = {s.get("id") for s in adml.iterfind(".//p:stringTable/p:string", ADMX_NS)}
        p_ids = {s.get("id") for s in adml.iterfind(".//p:presentationTable/p:presentation", ADMX_NS)}
        ok(strings <= s_ids, f"{lang}: every string the ADMX uses exists", sorted(strings - s_ids))
        ok(presentations <= p_ids, f"{lang}: every presentation exists", sorted(presentations - p_ids))
        refs = {r.get("refId") for r in adml.iterfind(".//p:presentation/*", ADMX_NS)}
        element_ids = {el.get("id") for el in tree.getroot().iterfind(".//p:elements/*", ADMX_NS)}
        ok(refs == element_ids, f"{lang}: presentations refer to exactly the ADMX elements", f"{refs ^ element_ids}")
        ids[lang] = (s_ids, p_ids)
    ok(ids["de-DE"] == ids["en-US"], "de-DE and en-US define the same ids")

    helper_values = {}
    for name, key, entries in pols:
        for vn, kind, items in entries:
            if key == r"Software\Policies\demail\Helper":
                helper_values[vn] = (name, kind, items)
    unknown = [v for v in helper_values if v not in keys and v != "lock.keys"]
    ok(not unknown, "every ADMX helper value is a configuration key the helper knows (demail config keys)", unknown)
    tb = [(key, vn) for name, key, entries in pols for vn, _, _ in entries if "Mozilla" in key]
    ok(tb == [(r"Software\Policies\Mozilla\Thunderbird\3rdparty\Extensions", ADDON_ID)], "ADMX add-in settings target the value the MSI writes", tb)

    reg = subprocess.run(["msiinfo", "export", msi, "Registry"], capture_output=True, text=True, check=True).stdout
    msi_values = [row.split("\t")[3] for row in reg.splitlines() if "\tSOFTWARE\\demail\\Helper\t" in row]
    ok(len(msi_values) >= 10, "the MSI writes the helper settings", msi_values)
    missing = [v for v in msi_values if v not in helper_values]
    ok(not missing, "GPO can set and lock every value the MSI writes", missing)
    return helper_values


def sample_values(helper_values):
    """One valid value per ADMX element, as GPO would write it."""
    text = {
        "gateway.host": "gw.gpo.invalid",
        "gateway.ca_file": r"C:\ProgramData\demail\intern-ca.pem",
        "gateway.username": "gpo-konto",
        "policy.file": r"C:\ProgramData\demail\policy.toml",
        "log.level": "debug",
    }
    out = []
    for vn, (name, kind, items) in sorted(helper_values.items()):
        if kind == "text":
            out.append((vn, "REG_SZ", text[vn]))
        elif kind == "decimal":
            out.append((vn, "REG_DWORD", "1465"))
        elif kind == "bool":
            out.append((vn, "REG_DWORD", "1"))
        elif kind == "enum":
            out.append((vn, "REG_SZ", items[-1]))
        elif kind == "multiText":
            out.append((vn, "REG_MULTI_SZ", {"api.allowed_origins": "https://addin.musterstadt.de", "lock.keys": "relay.connections"}[vn]))
    return out


def lookup(cfg, dotted):
    s, k = dotted.split(".")
    return cfg[s][k]


# ------------------------------------------------------------------ real gateway


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def credentials_test_against_gateway(w):
    """`demail credentials test`: the password from the Windows credential store logs in at the
    real demail-gateway (native, on 127.0.0.1) over TLS verified against a CA made here."""
    print("Anmeldung am echten Gateway / login at the real gateway")
    d = tempfile.mkdtemp(prefix="demail-gw-")
    gw = None
    try:
        def sh(*a):
            subprocess.run(a, cwd=d, check=True, capture_output=True)
        sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=De-Mail Test-CA", "-keyout", "ca.key", "-out", "ca.pem")
        sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "gw.key", "-out", "gw.csr")
        open(os.path.join(d, "ext"), "w").write("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        sh("openssl", "x509", "-req", "-in", "gw.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", "ext", "-out", "gw.pem")
        port, inbound, deliver = free_port(), free_port(), free_port()
        open(os.path.join(d, "gw.toml"), "w").write(f"""[gateway]
hostname = "localhost"
spool_dir = "{d}/spool"
archive_db = "{d}/archive.sqlite"
postmaster = "postmaster@musterstadt.de"
policy = "{ROOT}/examples/policy.toml"
[tls]
cert = "{d}/gw.pem"
key = "{d}/gw.key"
[outbound]
listen = "127.0.0.1:{port}"
tls = "implicit"
require_auth = true
users = [ {{ name = "sachbearbeitung", password_env = "DEMAIL_TEST_GW_PW", senders = ["peter.meier@musterstadt.de"] }} ]
[inbound]
listen = "127.0.0.1:{inbound}"
tls = "none"
deliver = {{ protocol = "smtp", host = "127.0.0.1", port = {deliver}, tls = "none" }}
""")
        env = dict(os.environ, DEMAIL_TEST_GW_PW=SECRET)
        gw = subprocess.Popen([os.environ["DEMAIL_TEST_GATEWAY_BIN"], "--config", os.path.join(d, "gw.toml"), "serve"], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "gw.log"), "wb"))
        import socket
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        ca_win = r"C:\ProgramData\demail\test-ca.pem"
        os.makedirs(os.path.dirname(w.path(ca_win)), exist_ok=True)
        shutil.copy(os.path.join(d, "ca.pem"), w.path(ca_win))
        for vn, typ, data in [("gateway.host", "REG_SZ", "localhost"), ("gateway.port", "REG_DWORD", str(port)), ("gateway.tls", "REG_SZ", "implicit"),
                              ("gateway.ca_file", "REG_SZ", ca_win), ("gateway.ca_only", "REG_DWORD", "1")]:
            w.run("reg", "add", POLICY_KEY, "/v", vn, "/t", typ, "/d", data, "/f", check=True)
        rc, body, err = w.demail("credentials", "test")
        ok(rc != 0 and "secrets.missing" in err, "credentials test without a stored password says so", err)
        rc, body, err = w.demail("credentials", "set", "--password-stdin", stdin=b"falsches-kennwort\n")
        rc, body, err = w.demail("credentials", "test")
        ok(rc != 0 and "relay.auth" in err, "a wrong password from the credential store is refused by the gateway (relay.auth)", err)
        rc, body, err = w.demail("credentials", "set", "--password-stdin", stdin=(SECRET + "\n").encode())
        rc, body, err = w.demail("credentials", "test")
        ok(rc == 0 and body["ok"] and body["authenticated"], "credential store → TLS (verified, test CA) → AUTH at the real gateway", f"{body} {err}")
        rc, body, err = w.demail("credentials", "delete")
        ok(rc == 0, "test account removed from the credential store")
        w.run("reg", "delete", POLICY_KEY, "/f", check=True)
        gw.terminate()
        gw.wait(timeout=20)
        log = open(os.path.join(d, "gw.log"), "rb").read().decode(errors="replace")
        ok(SECRET not in log, "the password is not in the gateway's log either")
    finally:
        if gw and gw.poll() is None:
            gw.kill()
            gw.wait()
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------ main


def main():
    base_msi, upgrade_msi, upgrade_version = sys.argv[1:4]
    xpi = os.path.join(ROOT, "artifacts/demail-thunderbird.xpi")
    prefix = tempfile.mkdtemp(prefix="demail-wine-")
    w = Wine(prefix)
    helper = None
    try:
        print(f"WINEPREFIX {prefix}")
        t = time.time()
        p = subprocess.run(["wineboot", "--init"], env=w.env, capture_output=True, timeout=600)
        w.wait()
        ok(p.returncode == 0, f"fresh wine prefix ({time.time() - t:.0f} s)", p.stderr.decode(errors="replace")[-2000:])
        # Wine 8 lacks bcryptprimitives.dll (ProcessPrng), which Rust's std imports; real
        # Windows has it. A test-only stand-in goes into this prefix, never into the MSI.
        shutil.copy(os.environ["DEMAIL_TEST_BCRYPTPRIMITIVES"], w.path(r"C:\windows\system32\bcryptprimitives.dll"))

        # Only the runtime's registration, so the MSI's choice of autostart can be tested; the
        # runtime itself is not there (nothing here starts the tray).
        w.run("reg", "add", WEBVIEW2_KEY, "/v", "pv", "/t", "REG_SZ", "/d", "131.0.2903.70", "/f", check=True)

        print("Installation mit IT-Eigenschaften / install with IT properties")
        rc, log, secs = msiexec(
            w, "/i", base_msi, "GATEWAY_HOST=gw.musterstadt.invalid", "GATEWAY_PORT=2465", "GATEWAY_TLS=implicit",
            "GATEWAY_USERNAME=sachbearbeitung", "GATEWAY_CA_ONLY=1", "LOCKED_KEYS=gateway.host,policy.file,pairing.native_auto_approve",
        )
        ok(rc == 0, f"msiexec /i /qn exits 0 ({secs:.0f} s)", log[-3000:])
        inst = w.path(r"C:\Program Files\demail")
        for f in ["demail.exe", "demail-service.exe", "demail-native-host.exe", "de.demail.helper.json", "demail-thunderbird.xpi"]:
            ok(os.path.isfile(os.path.join(inst, f)), f"installed {f}")
        ok(open(os.path.join(inst, "demail-thunderbird.xpi"), "rb").read() == open(xpi, "rb").read(), "installed .xpi is the built add-in")
        manifest = json.load(open(os.path.join(inst, "de.demail.helper.json")))
        ok(manifest["name"] == "de.demail.helper" and manifest["allowed_extensions"] == [ADDON_ID] and manifest["type"] == "stdio",
           "native-messaging manifest names the host and allows only the add-in", manifest)
        ok(os.path.isfile(os.path.join(inst, manifest["path"])), "manifest path (relative to the manifest) is the installed host")
        check_tray(w)
        ok(autostart(w) == RUN_TRAY, "with WebView2 registered, autostart (Run entry De-Mail-Helfer) starts the tray app, not a second helper", autostart(w))

        nmh = w.reg(NMH_KEY)
        ok(nmh is not None and nmh.get("(Default)", ("", ""))[1] == r"C:\Program Files\demail\de.demail.helper.json",
           r"HKLM\Software\Mozilla\NativeMessagingHosts\de.demail.helper → manifest", nmh)
        ext = w.reg(TB_KEY + r"\ExtensionSettings" + "\\" + ADDON_ID) or {}
        ok(ext.get("installation_mode", ("", ""))[1] == "force_installed", "Thunderbird policy force-installs the add-in", ext)
        url = ext.get("install_url", ("", ""))[1]
        ok(url == "file:///C:/Program%20Files/demail/demail-thunderbird.xpi", "install_url is the installed .xpi as a file URL", url)
        third = (w.reg(TB_KEY + r"\3rdparty\Extensions") or {}).get(ADDON_ID, ("", ""))
        expected = json.load(open(os.path.join(ROOT, "installer/windows/addin-settings.json")))
        try:
            got = json.loads(third[1])
        except ValueError:
            got = None
        ok(third[0] == "REG_SZ" and got == expected, "3rdparty add-in settings are the JSON of addin-settings.json (MSI escaping intact)", third)
        prefs = (w.reg(TB_KEY) or {}).get("Preferences", ("", ""))
        expected = json.load(open(os.path.join(ROOT, "installer/linux/desktop/files/policies.json"), encoding="utf-8"))["policies"]["Preferences"]
        try:
            got = json.loads(prefs[1])
        except ValueError:
            got = None
        ok(prefs[0] == "REG_SZ" and got == expected, "Preferences policy (De-Mail tag names and colours) is the Linux policies.json's (MSI escaping intact)", prefs)
        values = w.reg(HELPER_KEY) or {}
        want = {"gateway.host": "gw.musterstadt.invalid", "gateway.port": "2465", "gateway.tls": "implicit", "gateway.username": "sachbearbeitung",
                "gateway.ca_only": "1", "pairing.native_auto_approve": "0", "lock.keys": "gateway.host,policy.file,pairing.native_auto_approve"}
        ok(all(values.get(k, ("", ""))[1] == v for k, v in want.items()), r"IT properties land in HKLM\Software\demail\Helper", values)

        print("Der Helfer liest die Einstellungen / the helper reads the settings")
        rc, keys, err = w.demail("config", "keys")
        ok(rc == 0 and "gateway.host" in keys, "demail.exe runs (console CLI)", err)
        rc, cfg, err = w.demail("config", "show")
        ok(rc == 0, "demail config show", err)
        ok(cfg["gateway"]["host"] == "gw.musterstadt.invalid" and cfg["gateway"]["port"] == 2465 and cfg["gateway"]["tls"] == "implicit"
           and cfg["gateway"]["ca_only"] is True and cfg["pairing"]["native_auto_approve"] is False and cfg["gateway"]["tls"] == "implicit",
           "effective configuration has the MSI values with their types", json.dumps(cfg)[:2000])
        ok(r"HKLM\SOFTWARE\demail\Helper" in cfg["files"] and "gateway.host" in cfg["locked"], "MSI layer is reported and its locks apply", cfg["files"])
        rc, body, err = w.demail("config", "set", "gateway.host", "anderes.invalid")
        ok(rc != 0 and "config.locked" in (json.dumps(body) + err), "a user cannot change a key IT locked", err)
        rc, body, err = w.demail("config", "set", "gateway.port", "587")
        ok(rc == 0, "a user may change an unlocked key (per-user file)", err)
        rc, cfg, err = w.demail("config", "show")
        ok(cfg["gateway"]["port"] == 587, "the user's value overrides the unlocked MSI value")

        print("Gruppenrichtlinie (ADMX) / Group Policy")
        helper_values = check_admx(base_msi, keys)
        samples = sample_values(helper_values)
        for vn, typ, data in samples:
            w.run("reg", "add", POLICY_KEY, "/v", vn, "/t", typ, "/d", data, "/f", check=True)
        rc, cfg, err = w.demail("config", "show")
        ok(rc == 0, "the helper accepts a value for every ADMX policy", err)
        for vn, typ, data in samples:
            if vn == "lock.keys":
                ok("relay.connections" in cfg["locked"], "GPO lock.keys locks further keys", cfg["locked"])
                continue
            got = lookup(cfg, vn)
            kind = helper_values[vn][1]
            want_v = True if kind == "bool" else int(data) if kind == "decimal" else [data] if kind == "multiText" else data
            ok(got == want_v and vn in cfg["locked"], f"GPO {vn} = {want_v!r} wins and is locked", f"{got!r} {cfg['locked']}")
        rc, body, err = w.demail("config", "set", "gateway.port", "25")
        ok(rc != 0 and "config.locked" in (json.dumps(body) + err), "a GPO value cannot be overridden by the user")
        w.run("reg", "add", POLICY_KEY, "/v", "gateway.tls", "/t", "REG_SZ", "/d", "klartext", "/f", check=True)
        rc, body, err = w.demail("config", "show")
        ok(rc != 0 and "config.invalid_value" in (json.dumps(body) + err) and "Policies" in err and "gateway.tls" in err,
           "a bad GPO value is refused with code, place and key (German and English)", err)
        w.run("reg", "delete", POLICY_KEY, "/f", check=True)
        rc, cfg, err = w.demail("config", "show")
        ok(rc == 0 and cfg["gateway"]["host"] == "gw.musterstadt.invalid" and cfg["gateway"]["port"] == 587, "without GPO the MSI and user values apply again")

        print("Der installierte Helfer läuft / the installed helper runs")
        helper = Helper(w)
        st, h = http(helper.port, "GET", "/v1/health")
        ok(st == 200 and h["ok"] and h["result"]["status"] == "ok", f"GET /v1/health on 127.0.0.1:{helper.port}", h)
        d = native_host(w, {"action": "discover"})
        ok(d.get("ok") and d["result"]["port"] == helper.port, "native host (as Thunderbird starts it) discovers the helper's port", d)
        d = native_host(w, {"action": "discover"}, caller="evil@example.org")
        ok(d.get("error", {}).get("code") == "native.extension", "the native host refuses another caller than the add-in", d)
        pr = native_host(w, {"action": "pair", "client": "Thunderbird (Test)"})
        ok(pr.get("error", {}).get("code") == "pairing.manual", "as installed, pairing needs the user's confirmation (NATIVE_AUTO_APPROVE default 0)", pr)
        # IT turns auto-approval on (HKLM, as NATIVE_AUTO_APPROVE=1 would).
        w.run("reg", "add", HELPER_KEY, "/v", "pairing.native_auto_approve", "/t", "REG_SZ", "/d", "1", "/f", check=True)
        pr = native_host(w, {"action": "pair", "client": "Thunderbird (Test)"})
        ok(pr.get("ok") and pr["result"]["token"].startswith("dmh1_"), "with IT's switch the native host pairs without asking", pr)
        token = pr["result"]["token"]
        st, c = http(helper.port, "POST", "/v1/check", token, {"from": "peter.meier@musterstadt.de", "to": ["anna@buerger.de-mail.de", "x@example.org"]})
        ok(st == 200 and c["result"]["verdict"] in ("blocked", "confirm"), "the token works for a protected call (mixed addressing caught)", c)
        st, c = http(helper.port, "POST", "/v1/check", "dmh1_falsch", {"from": "a@b.de", "to": ["c@d.de"]})
        ok(st == 401, "a wrong token gets 401", c)

        print("Schlüsselbund / keyring (Windows credential store under wine)")
        rc, doc, err = w.demail("doctor", "--offline")
        kr = [f for f in doc["findings"] if f["check"] == "keyring"]
        ok(kr and kr[0]["status"] == "error" and "demail credentials set" in kr[0]["message"], "doctor: no password stored yet", kr)
        rc, body, err = w.demail("credentials", "set", "--password-stdin", stdin=(SECRET + "\n").encode())
        ok(rc == 0 and body["stored"] and body["backend"] == "windows" and body["account"] == "sachbearbeitung@gw.musterstadt.invalid",
           "credentials set stores in the Windows credential store", f"{body} {err}")
        rc, doc, err = w.demail("doctor", "--offline")
        kr = [f for f in doc["findings"] if f["check"] == "keyring"]
        ok(kr and kr[0]["status"] == "ok" and "windows" in kr[0]["message"], "doctor reads the password back (another process)", kr)
        creds = w.run("reg", "query", r"HKCU\Software\Wine\Credential Manager", "/s").stdout.decode("utf-8", errors="replace")
        ok("de.demail.helper" in creds, "the credential is in wine's credential store", creds[:1000])
        for f in glob_local(w):
            for base, _, names in os.walk(os.path.join(f, "demail")):
                for n in names:
                    ok(SECRET.encode() not in open(os.path.join(base, n), "rb").read(), f"password not in {n}")
        rc, body, err = w.demail("credentials", "delete")
        ok(rc == 0 and body["deleted"] == 1, "credentials delete", err)
        rc, doc, err = w.demail("doctor", "--offline")
        kr = [f for f in doc["findings"] if f["check"] == "keyring"]
        ok(kr[0]["status"] == "error", "after delete the password is gone", kr)
        rc, body, err = w.demail("credentials", "set", "--password-stdin", stdin=(SECRET + "\n").encode())
        ok(rc == 0, "password stored again before the upgrade")
        credentials_test_against_gateway(w)
        helper.stop()
        helper = None

        print(f"Aktualisierung auf {upgrade_version} / upgrade")
        rc, log, secs = msiexec(w, "/i", upgrade_msi, "GATEWAY_PORT=1465")
        ok(rc == 0, f"upgrade to {upgrade_version} exits 0 ({secs:.0f} s)", log[-3000:])
        products = [l for l in w.run("uninstaller", "--list").stdout.decode("utf-8", errors="replace").splitlines() if "De-Mail" in l]
        ok(len(products) == 1, "exactly one product registered after the upgrade (MajorUpgrade removed the old one)", products)
        code = products[0].split("|")[0]
        disp = (w.reg(r"HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall" + "\\" + code) or {}).get("DisplayVersion", ("", ""))[1]
        ok(disp == upgrade_version, f"registered version is {upgrade_version}", disp)
        values = w.reg(HELPER_KEY) or {}
        ok(values.get("gateway.host", ("", ""))[1] == "gw.musterstadt.invalid" and values.get("gateway.tls", ("", ""))[1] == "implicit"
           and values.get("lock.keys", ("", ""))[1] == want["lock.keys"] and values.get("gateway.username", ("", ""))[1] == "sachbearbeitung",
           "upgrade without those properties keeps IT's settings", values)
        ok(values.get("gateway.port", ("", ""))[1] == "1465", "a property given at upgrade still applies", values)
        rc, cfg, err = w.demail("config", "show")
        ok(rc == 0 and cfg["gateway"]["port"] == 587 and cfg["gateway"]["host"] == "gw.musterstadt.invalid", "the user's own file survives the upgrade", cfg["gateway"])
        rc, doc, err = w.demail("doctor", "--offline")
        kr = [f for f in doc["findings"] if f["check"] == "keyring"]
        ok(kr[0]["status"] == "ok", "the stored password survives the upgrade", kr)
        helper = Helper(w)
        st, h = http(helper.port, "GET", "/v1/health")
        ok(st == 200 and h["result"]["status"] == "ok", "the upgraded helper answers health")
        st, c = http(helper.port, "POST", "/v1/check", token, {"from": "peter.meier@musterstadt.de", "to": ["anna@buerger.de-mail.de"]})
        ok(st == 200, "the pairing made before the upgrade still works", c)
        helper.stop()
        helper = None
        ok(all(os.path.isfile(os.path.join(inst, f)) for f in TRAY_FILES) and autostart(w) == RUN_TRAY,
           "after the upgrade the tray is installed and still the autostart", autostart(w))

        rc, log, secs = msiexec(w, "/i", base_msi)
        products = [l for l in w.run("uninstaller", "--list").stdout.decode("utf-8", errors="replace").splitlines() if "De-Mail" in l]
        disp = (w.reg(r"HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall" + "\\" + code) or {}).get("DisplayVersion", ("", ""))[1]
        ok(rc != 0 and len(products) == 1 and disp == upgrade_version, "installing the older MSI over the newer one is refused (downgrade)", f"rc={rc} {products} {disp}")

        print("Deinstallation / uninstall")
        rc, log, secs = msiexec(w, "/x", upgrade_msi)
        ok(rc == 0, f"msiexec /x exits 0 ({secs:.0f} s)", log[-3000:])
        left = os.listdir(inst) if os.path.isdir(inst) else []
        ok(not left, r"C:\Program Files\demail is gone", left)
        ok(not start_menu_links(w), "the Start-menu entry is gone", start_menu_links(w))
        for key in [HELPER_KEY, NMH_KEY, TB_KEY + r"\ExtensionSettings" + "\\" + ADDON_ID]:
            v = w.reg(key)
            ok(not v, f"{key} is gone", v)
        ok(ADDON_ID not in (w.reg(TB_KEY + r"\3rdparty\Extensions") or {}), "3rdparty add-in settings are gone")
        ok("De-Mail-Helfer" not in (w.reg(RUN_KEY) or {}), "autostart entry is gone")
        data = [os.path.join(d, "demail") for d in glob_local(w) if os.path.isdir(os.path.join(d, "demail"))]
        ok(data and os.path.exists(os.path.join(data[0], "helper.sqlite3")), r"users' outbox in %LOCALAPPDATA%\demail is left alone", data)

        print("Nur Hintergrunddienst (REMOVE=Tray) / headless only, e.g. terminal servers")
        rc, log, secs = msiexec(w, "/i", base_msi, "ADDLOCAL=ALL", "REMOVE=Tray", "GATEWAY_HOST=gw.musterstadt.invalid")
        ok(rc == 0, f"msiexec /i ADDLOCAL=ALL REMOVE=Tray exits 0 ({secs:.0f} s)", log[-3000:])
        ok(os.path.isfile(os.path.join(inst, "demail-service.exe")) and not any(os.path.exists(os.path.join(inst, f)) for f in TRAY_FILES),
           "headless install has the service but neither demail-tray.exe nor WebView2Loader.dll", os.listdir(inst))
        ok(not start_menu_links(w), "headless install: no Start-menu entry (nothing to open)", start_menu_links(w))
        ok(autostart(w) == RUN_SERVICE, "headless install: autostart starts demail-service.exe", autostart(w))
        # Windows carries feature states over a major upgrade (Upgrade row with MigrateFeatures);
        # wine 8's MigrateFeatureStates is a no-op, so here the upgrade repeats the selection.
        upgrade = subprocess.run(["msiinfo", "export", upgrade_msi, "Upgrade"], capture_output=True, text=True, check=True).stdout
        rows = [r.split("\t") for r in upgrade.splitlines()[3:]]
        ok(any(len(r) == 7 and r[6] == "WIX_UPGRADE_DETECTED" and int(r[4]) & 1 for r in rows), "the upgrade row migrates feature states (msidbUpgradeAttributesMigrateFeatures)", upgrade)
        rc, log, secs = msiexec(w, "/i", upgrade_msi, "ADDLOCAL=ALL", "REMOVE=Tray")
        ok(rc == 0, f"upgrade of the headless install with the same selection exits 0 ({secs:.0f} s)", log[-3000:])
        ok(not any(os.path.exists(os.path.join(inst, f)) for f in TRAY_FILES) and autostart(w) == RUN_SERVICE,
           "after the upgrade it is still headless with demail-service.exe as autostart", f"{os.listdir(inst)} {autostart(w)}")
        w.run("reg", "delete", WEBVIEW2_KEY, "/f", check=True)
        rc, log, secs = msiexec(w, "/i", upgrade_msi, "ADDLOCAL=Tray", "REINSTALL=Autostart")
        ok(rc == 0, f"maintenance install ADDLOCAL=Tray REINSTALL=Autostart exits 0 ({secs:.0f} s)", log[-3000:])
        check_tray(w)
        ok(autostart(w) == RUN_SERVICE, "tray added but no WebView2 runtime registered: autostart stays demail-service.exe", autostart(w))
        rc, log, secs = msiexec(w, "/i", upgrade_msi, "REINSTALL=Autostart", "WEBVIEW2_RUNTIME=1")
        ok(rc == 0 and autostart(w) == RUN_TRAY, "WEBVIEW2_RUNTIME=1 (runtime per user) switches the autostart to demail-tray.exe", f"rc={rc} {autostart(w)}")
        rc, log, secs = msiexec(w, "/x", upgrade_msi)
        left = os.listdir(inst) if os.path.isdir(inst) else []
        ok(rc == 0 and not left and "De-Mail-Helfer" not in (w.reg(RUN_KEY) or {}), "uninstall removes the tray, the DLL and the autostart entry", f"rc={rc} {left}")
        print(f"\n{checks} Prüfungen bestanden / {checks} checks passed")
    finally:
        if helper:
            try:
                helper.stop()
            except Exception:
                pass
        w.kill()
        if os.environ.get("DEMAIL_KEEP_WINEPREFIX"):
            print(f"WINEPREFIX kept: {prefix}")
        else:
            shutil.rmtree(prefix, ignore_errors=True)


if __name__ == "__main__":
    main()
