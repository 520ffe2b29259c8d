"""Thunderbird from the host reads the *installed* policies.json: a fresh profile, no
add-in copied, no user action. Run as `unshare -m --propagation private python3
tb_policy.py LAYER WORKDIR SHOTS` (a private mount namespace of its own): the files
demail-desktop installed (copied from the chroot, LAYER) are overlaid on /etc and /usr,
so Thunderbird, the helper and the native host find them at their installed paths.
Prints one JSON object with what it saw.

Reuses the add-in's Marionette harness (tests/thunderbird/harness.py, tb.py) unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "thunderbird"))

from harness import ADDON_ID, TB_BIN, Dovecot, Marionette, SmtpSink, free_port, user_js, wait_port  # noqa: E402
from tb import TB  # noqa: E402


def overlay(layer: Path) -> list[str]:
    """Read-only overlays: the package's files on top of the host's directories."""
    done = []
    for target in ("/etc", "/usr/bin", "/usr/lib", "/usr/share"):
        upper = layer / target.lstrip("/")
        if upper.is_dir():
            subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={upper}:{target}", target], check=True)
            done.append(target)
    return done


class InstalledHelper:
    """`/usr/bin/demail serve` as one desktop user: machine file /etc/demail/helper.toml
    as installed, nothing set by the test."""

    def __init__(self, home: Path):
        self.home = home
        (home / "run").mkdir(parents=True, mode=0o700, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DEMAIL_") and k not in ("DBUS_SESSION_BUS_ADDRESS", "XDG_CONFIG_HOME", "XDG_DATA_HOME")}
        self.env.update({"HOME": str(home), "XDG_RUNTIME_DIR": str(home / "run"), "LANG": "de_DE.UTF-8"})
        self.log = open(home / "helper.log", "ab")
        self.proc = subprocess.Popen(["/usr/bin/demail", "serve", "--port", "0"], env=self.env, stdout=subprocess.PIPE, stderr=self.log)
        end = time.time() + 30
        while time.time() < end:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError("demail serve exited")
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "listening":
                self.port = ev["port"]
                return
        raise TimeoutError("demail serve did not start")

    def cli(self, *args) -> str:
        return subprocess.run(["/usr/bin/demail", *args], env=self.env, capture_output=True, text=True, timeout=60, check=True).stdout

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def start_thunderbird(work: Path, env: dict, imap_port: int, smtp_port: int):
    profile = work / "profile"
    profile.mkdir(parents=True, exist_ok=True)
    mport = free_port()
    # The harness's test prefs minus the signature switch: whatever the add-in needs
    # must come from the installed policy, not from the test.
    prefs = [l for l in user_js(mport, imap_port, smtp_port).splitlines() if "xpinstall.signatures" not in l]
    (profile / "user.js").write_text("\n".join(prefs) + "\n")
    tenv = dict(env, MOZ_HEADLESS="1", MOZ_HEADLESS_WIDTH="1400", MOZ_HEADLESS_HEIGHT="900", TZ="Europe/Berlin")
    tenv.pop("DISPLAY", None)
    proc = subprocess.Popen([TB_BIN, "--headless", "--marionette", "--remote-allow-system-access", "--no-remote", "--profile", str(profile)],
                            stdout=open(work / "thunderbird.log", "wb"), stderr=subprocess.STDOUT, env=tenv, start_new_session=True)
    wait_port(mport, timeout=90, proc=proc)
    m = Marionette(mport)
    m.start_session()
    return proc, m, profile


def stop_thunderbird(proc, m):
    try:
        m.js("Services.startup.quit(Ci.nsIAppStartup.eForceQuit);")
    except Exception:
        pass
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)


def main():
    layer, logs, shots = (Path(a) for a in sys.argv[1:4])
    logs.mkdir(parents=True, exist_ok=True)
    # Under /tmp, traversable: Dovecot's mail processes run as nobody.
    work = Path(tempfile.mkdtemp(prefix="demail-deb-tb-"))
    os.chmod(work, 0o711)
    shots.mkdir(parents=True, exist_ok=True)
    res: dict = {"overlaid": overlay(layer), "figures": {}}
    sink = dovecot = helper = proc = m = None
    try:
        sink = SmtpSink(work / "sink")
        dovecot = Dovecot(work / "dovecot")
        helper = InstalledHelper(work / "home")
        t0 = time.time()
        proc, m, profile = start_thunderbird(work / "tb", helper.env, dovecot.imap_port, sink.port)
        tb = TB(m)
        host = tb.addon_ready(timeout=60)
        res["figures"]["Thunderbird start → add-in active from policy (s)"] = round(time.time() - t0, 1)
        info = m.js(
            'const { AddonManager } = ChromeUtils.importESModule("resource://gre/modules/AddonManager.sys.mjs");\n'
            "const a = await AddonManager.getAddonByID(args[0]);\n"
            "return { active: a.isActive, version: a.version, canUninstall: !!(a.permissions & AddonManager.PERM_CAN_UNINSTALL),"
            " canDisable: !!(a.permissions & AddonManager.PERM_CAN_DISABLE), policies: Services.policies.status };",
            ADDON_ID,
        )
        res.update(active=info["active"], can_uninstall=info["canUninstall"], can_disable=info["canDisable"], policies_status=info["policies"])
        # Not copied by the test: Thunderbird installed it into the fresh profile itself.
        res["installed_into_profile"] = (profile / "extensions" / f"{ADDON_ID}.xpi").exists()
        tb.open_options(host)
        res["managed"] = tb.options("return browser.storage.managed.get();")
        res["unreachable_helper_disabled"] = tb.options("return document.getElementById('unreachable_helper').disabled;")
        res["locked_note"] = tb.options("return document.getElementById('unreachable_helper-locked')?.textContent || '';")
        tb.shot(shots / "installer-thunderbird-options.png", tb.main_handle())
        res["screenshot"] = str(shots / "installer-thunderbird-options.png")
        # The add-in paired itself through the installed native host (IT pre-provisioning).
        end = time.time() + 30
        pairs = []
        while time.time() < end:
            pairs = json.loads(helper.cli("pair", "list")).get("pairings", [])
            if pairs:
                break
            time.sleep(0.5)
        res["pairings"] = pairs
        res["paired"] = any(p.get("status") == "approved" for p in pairs)
    except Exception as e:  # reported to the calling test, which fails on it
        res["error"] = f"{type(e).__name__}: {e}"
        res.setdefault("active", False)
    finally:
        if proc:
            stop_thunderbird(proc, m)
        for part in (helper, dovecot, sink):
            if part:
                try:
                    part.close()
                except Exception:
                    pass
        for f in ("tb/thunderbird.log", "home/helper.log"):
            if (work / f).exists():
                shutil.copy(work / f, logs / Path(f).name)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
