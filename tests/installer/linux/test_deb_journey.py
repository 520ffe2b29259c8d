"""Journey "IT deploys via installer" (Linux): the built .deb packages go into a fresh
Debian bookworm root made by debootstrap, with apt resolving their dependencies.

Run by scripts/test-installer-linux inside a private mount namespace (everything
mounted here disappears with the process and never reaches the host). Steps run in
order and share one chroot:

  install → files, units, policy → systemd-analyze verify → helper from the installed
  files answers /v1/health, native host finds it and pairs (IT pre-provisioning) →
  gateway runs as its own user → Thunderbird reads the installed policies.json →
  upgrade keeps edited conffiles, scripts idempotent → remove stops the helper →
  purge removes what it should and nothing else (users' data stays).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import tomllib
import unittest
import urllib.request
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
ARTIFACTS = Path(os.environ.get("DEMAIL_DEB_DIR", ROOT / "artifacts"))
CACHE = Path(os.environ.get("DEMAIL_CHROOT_CACHE", "/root/.cache/demail-chroot"))
SHOTS = Path(os.environ.get("DEMAIL_SCREENSHOTS", ROOT / "artifacts/screenshots"))
ADDON_ID = "demail-addin@open-demail.de"
NATIVE_NAME = "de.demail.helper"
USER, UID = "peter", 1000
FIGURES: dict[str, object] = {}


def debs() -> dict[str, Path]:
    out = {}
    for name in ("demail-desktop", "demail-gateway", "demail-provider-sim"):
        found = sorted(ARTIFACTS.glob(f"{name}_*.deb"))
        if found:
            out[name] = found[-1]
    return out


def bash_chroot(fn: str, *args: str) -> str:
    """Call a function of chroot.sh (debootstrap cache, fresh copy, mounts)."""
    r = subprocess.run(["bash", "-c", f'source "{HERE}/chroot.sh"; {fn} "$@"', "chroot.sh", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{fn}: {r.stderr[-3000:]}")
    return r.stdout.strip()


class DebJourney(unittest.TestCase):
    C: Path
    procs: list[subprocess.Popen] = []

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root (debootstrap, chroot, mounts)")
        cls.debs = debs()
        if set(cls.debs) != {"demail-desktop", "demail-gateway", "demail-provider-sim"}:
            raise unittest.SkipTest(f"packages missing in {ARTIFACTS}: run scripts/build-deb")
        bash_chroot("base_tarball")  # built once and cached; not part of the timing
        (CACHE / "runs").mkdir(parents=True, exist_ok=True)
        cls.work = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE / "runs"))
        cls.C = cls.work / "root"
        cls.t_fresh = time.time()
        bash_chroot("chroot_fresh", str(cls.C))
        bash_chroot("chroot_mount", str(cls.C))

    @classmethod
    def tearDownClass(cls):
        for p in cls.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if hasattr(cls, "C"):
            bash_chroot("chroot_umount", str(cls.C))
            if not os.environ.get("DEMAIL_KEEP"):
                shutil.rmtree(cls.work, ignore_errors=True)
        if FIGURES:
            print("\nZahlen / figures:", json.dumps(FIGURES, indent=1, ensure_ascii=False), file=sys.stderr)

    # ------------------------------------------------------------------ helpers

    def ch(self, cmd: str, check: bool = True, user: str | None = None, timeout: float = 600, input: bytes | None = None) -> subprocess.CompletedProcess:
        """Run a shell command inside the chroot (as root, or as `user` with a login-like env)."""
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
        argv = ["chroot", str(self.C)]
        if user:
            argv += ["runuser", "-u", user, "--", "env", "-i", f"HOME=/home/{user}", f"XDG_RUNTIME_DIR=/run/user/{UID}", "PATH=/usr/bin:/bin", "LANG=C.UTF-8"]
        argv += ["/bin/sh", "-c", cmd]
        r = subprocess.run(argv, env=env, capture_output=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            self.fail(f"chroot: {cmd}\nexit {r.returncode}\n{r.stdout.decode(errors='replace')[-3000:]}\n{r.stderr.decode(errors='replace')[-3000:]}")
        return r

    def p(self, path: str) -> Path:
        return self.C / path.lstrip("/")

    def apt(self, args: str) -> str:
        r = self.ch(f"apt-get -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold {args} 2>&1")
        return r.stdout.decode(errors="replace")

    def start_helper(self) -> tuple[subprocess.Popen, int]:
        argv = ["chroot", str(self.C), "runuser", "-u", USER, "--", "env", "-i", f"HOME=/home/{USER}", f"XDG_RUNTIME_DIR=/run/user/{UID}",
                "PATH=/usr/bin:/bin", "LANG=C.UTF-8", "/usr/bin/demail", "serve", "--port", "0"]
        with open(self.work / "helper.log", "ab") as log:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log)
        self.procs.append(proc)
        end = time.time() + 30
        while time.time() < end:
            line = proc.stdout.readline()
            if not line:
                if proc.poll() is not None:
                    self.fail(f"demail serve exited {proc.returncode}: {(self.work / 'helper.log').read_text(errors='replace')[-2000:]}")
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "listening":
                return proc, int(ev["port"])
        self.fail("demail serve did not report listening")

    def native(self, request: dict, caller: str = ADDON_ID) -> dict:
        """One request to the installed native-messaging host, as Thunderbird sends it
        (arguments: the manifest's path and the calling add-in's id)."""
        body = json.dumps(request).encode()
        manifest_path = f"/usr/lib/mozilla/native-messaging-hosts/{NATIVE_NAME}.json"
        manifest = json.loads(self.p(manifest_path).read_text())
        r = self.ch(f"{manifest['path']} {manifest_path} '{caller}'", user=USER, input=struct.pack("=I", len(body)) + body)
        (n,) = struct.unpack("=I", r.stdout[:4])
        return json.loads(r.stdout[4 : 4 + n])

    # ------------------------------------------------------------------ steps

    def test_01_install_resolves_dependencies(self):
        dest = self.p("/tmp/debs")
        dest.mkdir(parents=True, exist_ok=True)
        for d in self.debs.values():
            shutil.copy(d, dest)
        out = self.apt("install " + " ".join(f"/tmp/debs/{d.name}" for d in self.debs.values()))
        type(self).install_log = out
        for pkg in ("demail-desktop", "demail-gateway", "demail-provider-sim", "libwebkit2gtk-4.1-0", "libayatana-appindicator3-1", "adduser"):
            st = self.ch(f"dpkg-query -W -f='${{Status}}' {pkg}").stdout.decode()
            self.assertEqual(st, "install ok installed", pkg)
        # The packages' own notes reach the administrator.
        self.assertIn("demail doctor", out)
        self.assertIn("demail-gateway --config /etc/demail/gateway.toml config check", out)
        FIGURES["install (apt, s)"] = round(time.time() - self.t_fresh, 1)

    def test_02_files_and_policy_in_place(self):
        for path, mode in [
            ("/usr/bin/demail", 0o755), ("/usr/bin/demail-tray", 0o755), ("/usr/bin/demail-native-host", 0o755),
            ("/usr/bin/demail-gateway", 0o755), ("/usr/bin/demail-provider-sim", 0o755),
            ("/etc/demail/helper.toml", 0o644), ("/etc/thunderbird/policies/policies.json", 0o644),
            ("/etc/xdg/autostart/demail-tray.desktop", 0o644), ("/usr/share/applications/demail-tray.desktop", 0o644),
            ("/usr/lib/systemd/user/demail-helper.service", 0o644),
            ("/usr/lib/systemd/system/demail-gateway.service", 0o644), ("/usr/share/demail/demail-thunderbird.xpi", 0o644),
            (f"/usr/lib/mozilla/native-messaging-hosts/{NATIVE_NAME}.json", 0o644),
        ]:
            st = self.p(path).stat()
            self.assertEqual(st.st_mode & 0o7777, mode, path)
            self.assertEqual(st.st_uid, 0, path)
        conffiles = self.ch("dpkg-query -W -f='${Conffiles}' demail-desktop demail-gateway").stdout.decode()
        for c in ("/etc/demail/helper.toml", "/etc/thunderbird/policies/policies.json", "/etc/xdg/autostart/demail-tray.desktop", "/etc/demail/gateway.toml"):
            self.assertIn(c + " ", conffiles)
        # Native host manifest: our host binary, only for the add-in's id.
        man = json.loads(self.p(f"/usr/lib/mozilla/native-messaging-hosts/{NATIVE_NAME}.json").read_text())
        self.assertEqual(man["name"], NATIVE_NAME)
        self.assertEqual(man["path"], "/usr/bin/demail-native-host")
        self.assertEqual(man["allowed_extensions"], [ADDON_ID])
        # Only where Thunderbird reads it machine-wide (Gecko's one directory, Firefox's too).
        listed = [f for f in self.ch("dpkg -L demail-desktop").stdout.decode().split("\n") if f.endswith(".json") and "native-messaging" in f]
        self.assertEqual(listed, [f"/usr/lib/mozilla/native-messaging-hosts/{NATIVE_NAME}.json"])
        # Pairing without the user's confirmation is off until IT turns it on.
        conf = tomllib.loads(self.p("/etc/demail/helper.toml").read_text())
        self.assertEqual((conf["pairing"]["native_auto_approve"], conf["pairing"]["provision"]), (False, False))
        # Policy: force-installs the packaged .xpi (whose id matches) and passes IT's settings.
        pol = json.loads(self.p("/etc/thunderbird/policies/policies.json").read_text())["policies"]
        ext = pol["ExtensionSettings"][ADDON_ID]
        self.assertEqual(ext["installation_mode"], "force_installed")
        self.assertTrue(ext["install_url"].startswith("file:///"))
        xpi = self.p(ext["install_url"][len("file://"):])
        with zipfile.ZipFile(xpi) as z:
            mf = json.loads(z.read("manifest.json"))
            self.assertIn("wasm/demail_wasm_bg.wasm", z.namelist())
        ids = [mf.get(k, {}).get("gecko", {}).get("id") for k in ("browser_specific_settings", "applications")]
        self.assertIn(ADDON_ID, ids)
        managed = pol["3rdparty"]["Extensions"][ADDON_ID]
        schema = json.loads(zipfile.ZipFile(xpi).read("managed_schema.json"))
        self.assertLessEqual(set(managed), set(schema["properties"]), "only keys the add-in's schema knows")
        self.assertEqual(managed["policy"]["rules"]["mixed_addressing"], "reject")
        self.assertIn("helper_discovery", managed["locked"])
        # Gateway: dedicated system user without login, private state, readable config.
        pw = self.ch("getent passwd demail-gateway").stdout.decode().strip().split(":")
        self.assertLess(int(pw[2]), 1000)
        self.assertIn(pw[6], ("/usr/sbin/nologin", "/bin/false"))
        st = self.p("/var/lib/demail-gateway").stat()
        self.assertEqual((st.st_uid, st.st_mode & 0o777), (int(pw[2]), 0o750))
        st = self.p("/etc/demail/gateway.toml").stat()
        self.assertEqual((st.st_gid, st.st_mode & 0o777), (int(pw[3]), 0o640))
        # No secret in any file of the package: they are stored later, encrypted.
        self.assertFalse(self.p("/etc/demail/gateway.env").exists())
        self.assertFalse(self.p("/etc/credstore.encrypted").exists())

    def test_03_units_verify(self):
        r = self.ch("systemd-analyze verify /usr/lib/systemd/system/demail-gateway.service 2>&1", check=False)
        self.assertEqual(r.returncode, 0, r.stdout.decode())
        self.assertNotIn("demail", r.stdout.decode(), "no finding about our unit")
        # A user manager needs a runtime directory, as in a login session.
        r = self.ch("mkdir -p -m 0700 /run/user/0 && XDG_RUNTIME_DIR=/run/user/0 systemd-analyze verify --user /usr/lib/systemd/user/demail-helper.service 2>&1", check=False)
        self.assertEqual(r.returncode, 0, r.stdout.decode())
        self.assertNotIn("demail", r.stdout.decode())
        # The check can fail: the same unit pointing at a missing binary is refused.
        bad = self.p("/tmp/demail-broken.service")
        bad.write_text(self.p("/usr/lib/systemd/system/demail-gateway.service").read_text().replace("ExecStart=/usr/bin/demail-gateway", "ExecStart=/usr/bin/demail-gateway-missing"))
        r = self.ch("systemd-analyze verify /tmp/demail-broken.service 2>&1", check=False)
        self.assertNotEqual(r.returncode, 0, r.stdout.decode())
        # Enabling writes the expected symlinks (what systemctl --global enable does).
        self.ch("systemctl --global enable demail-helper.service && systemctl enable demail-gateway.service")
        self.assertTrue(self.p("/etc/systemd/user/default.target.wants/demail-helper.service").is_symlink())
        self.assertTrue(self.p("/etc/systemd/system/multi-user.target.wants/demail-gateway.service").is_symlink())
        self.ch("systemctl --global disable demail-helper.service")
        desk = self.p("/etc/xdg/autostart/demail-tray.desktop").read_text()
        self.assertIn("Exec=/usr/bin/demail-tray", desk)
        # The same entry in the applications menu: after "Beenden" the user starts it again
        # there (a second start opens the running app's window).
        menu = self.p("/usr/share/applications/demail-tray.desktop").read_text()
        self.assertIn("Exec=/usr/bin/demail-tray", menu)
        self.assertIn("Name=De-Mail-Helfer", menu)
        self.assertNotIn("NoDisplay=true", menu)

    def test_04_helper_starts_from_installed_files(self):
        self.ch(f"useradd -m -u {UID} -s /bin/bash {USER}")
        run = self.p(f"/run/user/{UID}")
        run.mkdir(mode=0o700)
        os.chown(run, UID, UID)
        proc, port = self.start_helper()
        type(self).helper = proc
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/health")
        with urllib.request.urlopen(req, timeout=10) as r:
            health = json.loads(r.read())
        FIGURES["fresh chroot → helper answers /v1/health (s)"] = round(time.time() - self.t_fresh, 1)
        self.assertTrue(health.get("ok"), health)
        # Discovery as the add-in does it: Thunderbird starts the host named in the
        # installed manifest; it finds this user's helper.
        ans = self.native({"action": "discover"})
        self.assertTrue(ans["ok"], ans)
        self.assertEqual(ans["result"]["port"], port)
        # Another caller than our add-in (e.g. a Firefox extension: same manifest folder) is refused.
        ans = self.native({"action": "discover"}, caller="evil@example.org")
        self.assertEqual(ans["error"]["code"], "native.extension", ans)
        # As installed, pairing needs the user's confirmation (the code): no token here.
        ans = self.native({"action": "pair", "client": "Thunderbird De-Mail-Add-in"})
        self.assertEqual(ans["error"]["code"], "pairing.manual", ans)
        # The user cannot switch auto-approval on: machine file only.
        r = self.ch("demail config set pairing.native_auto_approve true", user=USER, check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("config.locked", r.stderr.decode())
        # IT turns it on in /etc/demail/helper.toml (docs/deployment.md §6): now it pairs
        # without a prompt (also for the Thunderbird steps below, which use these files).
        conf = self.p("/etc/demail/helper.toml")
        text = conf.read_text()
        self.assertIn("native_auto_approve = false", text)
        conf.write_text(text.replace("native_auto_approve = false", "native_auto_approve = true"))
        ans = self.native({"action": "pair", "client": "Thunderbird De-Mail-Add-in"})
        self.assertTrue(ans["ok"], ans)
        token = ans["result"]["token"]
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/outbox", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            self.assertTrue(json.loads(r.read())["ok"])
        # Users cannot unlock what IT locked.
        r = self.ch("demail config set policy.file /tmp/p.toml", user=USER, check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("config.locked", r.stderr.decode())
        # doctor explains the state from the installed files (gateway not yet set: exit 1).
        r = self.ch("demail doctor --offline", user=USER, check=False)
        self.assertIn(r.returncode, (0, 1), r.stderr.decode())
        doc = json.loads(r.stdout)
        self.assertIn("/etc/demail/helper.toml", json.dumps(doc))
        self.assertTrue(self.p(f"/home/{USER}/.local/share/demail/helper.sqlite3").exists())

    def test_05_gateway_runs_as_its_user(self):
        # IT's edit of the template: a test CA made now, loopback ports; secrets stored as
        # encrypted systemd credentials with the product's command.
        tls = self.p("/etc/demail/tls")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=demail-gw.test",
                        "-addext", "subjectAltName=DNS:demail-gw.test,IP:127.0.0.1", "-keyout", str(tls / "gateway-key.pem"),
                        "-out", str(tls / "gateway-cert.pem")], check=True, capture_output=True)
        for n in ("provider-ca.pem", "internal-ca.pem", "directory-ca.pem"):
            shutil.copy(tls / "gateway-cert.pem", tls / n)
        self.ch("chgrp demail-gateway /etc/demail/tls/gateway-key.pem && chmod 0640 /etc/demail/tls/gateway-key.pem")
        out_port, in_port = free_port(), free_port()
        # The organisation's policy (here the packaged example), as IT places it.
        shutil.copy(self.p("/usr/share/doc/demail-desktop/examples/policy.toml"), self.p("/etc/demail/policy.toml"))
        conf = self.p("/etc/demail/gateway.toml")
        # The packaged template: people sign in through the directory; no shared account.
        template = conf.read_text()
        self.assertIn("[identity]", template)
        self.assertNotIn("users = [", template)
        self.assertNotIn("secret set user", template)
        text = template.replace('listen = "0.0.0.0:587"', f'listen = "127.0.0.1:{out_port}"').replace('listen = "0.0.0.0:1465"', f'listen = "127.0.0.1:{in_port}"')
        conf.write_text(text + "# IT-Änderung (Test)\n")
        r = self.ch("demail-gateway secret list", check=False)
        self.assertEqual(r.returncode, 2, r.stdout.decode())
        self.assertIn('"stored":false', r.stdout.decode())
        for args, value in (("directory", "geheim-1"), ("provider dmda", "token-1")):
            r = self.ch(f"demail-gateway secret set {args}", input=f"{value}\n".encode())
            self.assertNotIn(value, r.stdout.decode() + r.stderr.decode())
        self.ch("demail-gateway secret list")
        creds = {"demail-gateway.directory": "geheim-1", "demail-gateway.provider-dmda": "token-1"}
        for name, value in creds.items():
            f = self.p(f"/etc/credstore.encrypted/{name}")
            self.assertEqual((f.stat().st_uid, f.stat().st_mode & 0o777), (0, 0o600))
            self.assertNotIn(value.encode(), f.read_bytes())
            dropin = self.p(f"/etc/systemd/system/demail-gateway.service.d/credential-{name}.conf").read_text()
            self.assertIn(f"LoadCredentialEncrypted={name}:/etc/credstore.encrypted/{name}", dropin)
        # systemd accepts the unit with the drop-ins.
        r = self.ch("systemd-analyze verify /usr/lib/systemd/system/demail-gateway.service 2>&1", check=False)
        self.assertEqual(r.returncode, 0, r.stdout.decode())
        r = self.ch("runuser -u demail-gateway -- demail-gateway --config /etc/demail/gateway.toml config check 2>&1", check=False)
        self.assertEqual(r.returncode, 0, r.stdout.decode())
        # What the unit runs: ExecStart as User=, with the credentials systemd decrypts at
        # start into a directory only the service user reads (no systemd as PID 1 here).
        unit = self.p("/usr/lib/systemd/system/demail-gateway.service").read_text()
        exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1)
        self.assertIn("User=demail-gateway", unit)
        self.assertNotIn("EnvironmentFile", unit)
        cred_dir = "/run/credentials/demail-gateway.service"
        self.ch(f"install -d -m 0700 -o demail-gateway {cred_dir}")
        for name in creds:
            self.ch(f"systemd-creds decrypt --name {name} /etc/credstore.encrypted/{name} {cred_dir}/{name} && chown demail-gateway {cred_dir}/{name} && chmod 0400 {cred_dir}/{name}")
        proc = subprocess.Popen(["chroot", str(self.C), "/bin/sh", "-c", f"exec runuser -u demail-gateway -- env CREDENTIALS_DIRECTORY={cred_dir} {exec_start}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        wait_port(out_port, proc)
        import socket
        with socket.create_connection(("127.0.0.1", out_port), timeout=10) as s:
            self.assertTrue(s.recv(200).startswith(b"220"))
        owner = self.ch(f"stat -c %U /proc/{self._child_pid(proc.pid, 'demail-gateway')}").stdout.decode().strip()
        self.assertEqual(owner, "demail-gateway")
        proc.terminate()
        proc.wait(20)
        self.ch(f"rm -r {cred_dir}")
        self.assertTrue(any(self.p("/var/lib/demail-gateway").iterdir()), "spool/archive created in the state dir")

    def _child_pid(self, pid: int, name: str) -> int:
        for _ in range(50):
            for d in Path("/proc").iterdir():
                if d.name.isdigit():
                    try:
                        if (d / "comm").read_text().strip() == name and os.path.realpath(d / "root") == str(self.C):
                            return int(d.name)
                    except OSError:
                        pass
            time.sleep(0.1)
        self.fail(f"no {name} process")

    def test_06_thunderbird_reads_installed_policy(self):
        """Host Thunderbird, fresh profile, the package's files at their installed paths
        (overlaid in this private mount namespace): the add-in is there and active with
        IT's managed settings, locked fields disabled, paired through the native host."""
        layer = self.layer()
        # Its own mount namespace: the overlays vanish when it exits.
        r = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, str(HERE / "tb_policy.py"), str(layer), str(self.work / "tb"), str(SHOTS)],
                           capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        res = json.loads(r.stdout.strip().splitlines()[-1])
        if res.get("error"):
            log = (self.work / "tb/thunderbird.log")
            self.fail(f"{res['error']}\n{log.read_text(errors='replace')[-3000:] if log.exists() else ''}")
        FIGURES.update(res.get("figures", {}))
        self.assertTrue(res["active"], res)
        self.assertTrue(res["installed_into_profile"], "Thunderbird installed it into the fresh profile itself")
        self.assertFalse(res["can_uninstall"], "force-installed: the user cannot remove it")
        self.assertEqual(res["managed"], json.loads(self.p("/etc/thunderbird/policies/policies.json").read_text())["policies"]["3rdparty"]["Extensions"][ADDON_ID])
        self.assertTrue(res["unreachable_helper_disabled"], res)
        self.assertTrue(res["paired"], res)

    def layer(self) -> Path:
        """Every file the packages installed, copied out of the chroot with its path."""
        layer = self.work / "layer"
        if not layer.exists():
            for pkg in ("demail-desktop", "demail-gateway", "demail-provider-sim"):
                for f in self.ch(f"dpkg -L {pkg}").stdout.decode().split("\n"):
                    src = self.p(f)
                    if f and src.is_file() and not src.is_symlink():
                        dst = layer / f.lstrip("/")
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(src, dst)
        return layer

    def test_06b_journeys_against_installed_components(self):
        """Caseworker ticks options → headers at the provider simulator; a citizen's
        De-Mail → coloured tag and banner; all with the installed programs and policy."""
        if os.environ.get("DEMAIL_INSTALLER_JOURNEYS") == "0":
            self.skipTest("DEMAIL_INSTALLER_JOURNEYS=0")
        r = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, str(HERE / "tb_journeys.py"), str(self.layer()), str(SHOTS)],
                           capture_output=True, text=True, timeout=600)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        res = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertTrue(res.get("ok"), json.dumps(res, indent=1, ensure_ascii=False)[-6000:])
        FIGURES["journeys (installed): checks"] = res["checks"]
        FIGURES["journeys (installed): screenshots"] = res["screenshots"]

    def test_07_upgrade_keeps_configuration(self):
        # Version -2 of every package, its helper.toml template changed too, so dpkg must
        # choose: the administrator's edited file stays, the new one lands beside it.
        new = self.work / "v2"
        new.mkdir()
        for name, deb in self.debs.items():
            tree = new / name
            subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
            ctl = tree / "DEBIAN/control"
            ctl.write_text(re.sub(r"^Version: (.*)-(\d+)$", lambda m: f"Version: {m.group(1)}-{int(m.group(2)) + 1}", ctl.read_text(), flags=re.M))
            if name == "demail-desktop":
                h = tree / "etc/demail/helper.toml"
                h.write_text(h.read_text() + "# neue Vorlage / new template\n")
                md5 = subprocess.run(["md5sum", "etc/demail/helper.toml"], cwd=tree, capture_output=True, text=True, check=True).stdout
                sums = tree / "DEBIAN/md5sums"
                if sums.exists():
                    sums.write_text("".join(l if not l.endswith(" etc/demail/helper.toml\n") else md5 for l in sums.read_text().splitlines(True)))
            subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "-b", str(tree), str(new / f"{name}_v2.deb")], check=True, capture_output=True)
        helper_toml = self.p("/etc/demail/helper.toml")
        helper_toml.write_text(helper_toml.read_text().replace('#host = "demail-gw.musterstadt.de"', '#host = "gw.it-edit.test"'))
        kept = ("/etc/demail/helper.toml", "/etc/demail/gateway.toml", "/etc/credstore.encrypted/demail-gateway.provider-dmda",
                "/etc/systemd/system/demail-gateway.service.d/credential-demail-gateway.provider-dmda.conf")
        before = {p: self.p(p).read_bytes() for p in kept}
        shutil.copytree(new, self.p("/tmp/v2"))
        self.apt("install " + " ".join(f"/tmp/v2/{n}_v2.deb" for n in self.debs))
        for p, text in before.items():
            self.assertEqual(self.p(p).read_bytes(), text, f"{p} kept on upgrade")
        self.assertTrue(self.p("/etc/demail/helper.toml.dpkg-dist").exists())
        v = self.ch("dpkg-query -W -f='${Version}' demail-desktop").stdout.decode()
        self.assertTrue(v.endswith("-2"), v)
        # Idempotent maintainer scripts: configuring again changes nothing and succeeds.
        state = "getent passwd demail-gateway; stat -c '%U %G %a' /var/lib/demail-gateway /etc/demail/gateway.toml /etc/credstore.encrypted/*; md5sum /etc/credstore.encrypted/*"
        snap = self.ch(state).stdout
        for pkg in ("demail-desktop", "demail-gateway"):
            self.ch(f"/var/lib/dpkg/info/{pkg}.postinst configure {v} 2>/dev/null")
        self.assertEqual(self.ch(state).stdout, snap)
        self.assertEqual(self.ch("grep -c '^demail-gateway:' /etc/passwd").stdout.strip(), b"1")

    def test_08_remove_stops_helper(self):
        proc = self.helper
        self.assertIsNone(proc.poll(), "helper still running before remove")
        out = self.apt("remove demail-desktop")
        self.assertIn("beendet / helper stopped", out)
        proc.wait(15)
        self.assertFalse(self.p("/usr/bin/demail").exists())
        self.assertTrue(self.p("/etc/demail/helper.toml").exists(), "remove keeps the configuration")
        self.assertIn("bleiben erhalten", out)

    def test_09_purge_removes_config_keeps_user_data(self):
        ignore = re.compile(r"^/(proc|dev|run|sys|tmp|var/cache|var/lib/dpkg|var/lib/apt|var/log|var/lib/systemd|var/lib/demail-gateway|home)(/|$)|^/etc/(passwd|group|shadow|gshadow|subuid|subgid)-?$|^/etc/ld\.so\.cache$|^/etc/systemd/|^/usr/share/mime/|^/usr/share/icons/.*\.cache$|^/usr/lib/x86_64-linux-gnu/gdk-pixbuf|^/usr/lib/x86_64-linux-gnu/gio/modules/giomodule\.cache|^/usr/share/glib-2\.0/schemas/gschemas\.compiled$|^/var/lib/(ucf|dbus)/|^/etc/ssl/certs/|^/var/lib/ucf")
        ours = set()
        for pkg in ("demail-desktop", "demail-gateway", "demail-provider-sim"):
            r = self.ch(f"dpkg-query -L {pkg} 2>/dev/null", check=False)
            ours |= set(r.stdout.decode().split("\n"))
        # What "demail-gateway secret set" stored belongs to the package's purge too.
        ours |= {"/etc/demail/helper.toml.dpkg-dist"} | {f"/etc/credstore.encrypted/demail-gateway.{n}" for n in ("directory", "provider-dmda")}
        admin_keys = {f"/etc/demail/tls/{n}" for n in ("gateway-cert.pem", "gateway-key.pem", "provider-ca.pem", "internal-ca.pem", "directory-ca.pem")} | {"/etc/demail/policy.toml"}
        before = self.tree(ignore)
        out = self.apt("purge demail-desktop demail-gateway demail-provider-sim")
        after = self.tree(ignore)
        gone = before - after
        self.assertLessEqual(gone, ours, f"purge removed files that are not ours: {sorted(gone - ours)[:20]}")
        for p in ("/etc/demail/helper.toml", "/etc/demail/gateway.toml", "/etc/credstore.encrypted", "/etc/systemd/system/demail-gateway.service.d", "/etc/thunderbird/policies",
                  "/etc/xdg/autostart/demail-tray.desktop", "/usr/share/demail", "/etc/systemd/system/multi-user.target.wants/demail-gateway.service"):
            self.assertFalse(self.p(p).exists() or self.p(p).is_symlink(), f"{p} removed on purge")
        # Certificates, keys and the policy IT put there are not the package's: kept, and said so.
        self.assertEqual({"/etc/demail/" + str(q.relative_to(self.p("/etc/demail"))) for q in self.p("/etc/demail").rglob("*") if q.is_file()}, admin_keys)
        self.assertIn("/etc/demail/tls", out)
        leftovers = {p for p in after & ours if not self.p(p).is_dir()}
        self.assertEqual(leftovers, set(), "nothing of ours left outside users' data")
        # Users' data and the gateway's archive stay, and the administrator is told so.
        self.assertTrue(self.p(f"/home/{USER}/.local/share/demail/helper.sqlite3").exists())
        self.assertTrue(self.p("/var/lib/demail-gateway").is_dir())
        self.assertIn("~/.local/share/demail/", out)
        self.assertIn("Archiv und Warteschlange bleiben erhalten", out)
        self.assertIn("demail-gateway", self.ch("getent passwd demail-gateway").stdout.decode())

    def tree(self, ignore: re.Pattern) -> set[str]:
        out = set()
        for base, dirs, files in os.walk(self.C):
            rel = "/" + os.path.relpath(base, self.C).lstrip(".")
            rel = "/" if rel == "/" else rel.rstrip("/")
            for n in files + [d for d in dirs if os.path.islink(os.path.join(base, d))]:
                p = (rel.rstrip("/") + "/" + n)
                if not ignore.search(p):
                    out.add(p)
        return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    import socket

    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"port {port}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    unittest.main(verbosity=2)
