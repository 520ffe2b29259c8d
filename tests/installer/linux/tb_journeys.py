"""Journeys "caseworker ticks options" and "users see colour-marked De-Mails" against
the *installed* components: the binaries, policies.json, add-in and native-host
manifest of the packages (copied from the chroot, LAYER, and overlaid on /etc and /usr
in a private mount namespace), not the build tree.

Run: `unshare -m --propagation private python3 tb_journeys.py LAYER SHOTS`; prints one
JSON object (error set on the first failed check).

Chain (the add-in's harness, tests/thunderbird/harness.py, pointed at /usr/bin):
Thunderbird (add-in from the installed policy) → /usr/bin/demail serve (found through
/usr/bin/demail-native-host) → /usr/bin/demail-gateway → /usr/bin/demail-provider-sim
→ gateway → Dovecot → Thunderbird. Only the test CA, ports and the gateway config are
made here (what IT writes into the templates).
"""

from __future__ import annotations

import email
import email.policy
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "thunderbird"))

import harness  # noqa: E402
from tb import TB, count_colour, hex_rgb  # noqa: E402
from tb_policy import overlay  # noqa: E402
from test_addin import CHAIN_POLICY, DEMAIL_TAG, compose_demail, option_headers, send_and_wait_closed, tagged, wait_for  # noqa: E402

INSTALLED = {"demail": Path("/usr/bin/demail"), "native": Path("/usr/bin/demail-native-host"),
             "gateway": Path("/usr/bin/demail-gateway"), "sim": Path("/usr/bin/demail-provider-sim")}


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


def main():
    layer, shots = Path(sys.argv[1]), Path(sys.argv[2])
    shots.mkdir(parents=True, exist_ok=True)
    res: dict = {"overlaid": overlay(layer), "checks": [], "screenshots": {}}
    for p in INSTALLED.values():
        check(p.exists(), f"{p} not installed")
    # The harness starts whatever these return: the installed programs.
    harness.helper_bins = lambda: (INSTALLED["demail"], INSTALLED["native"])
    harness.gateway_bins = lambda: (INSTALLED["gateway"], INSTALLED["sim"])
    h = None
    try:
        t0 = time.time()
        # xpi None: nothing copied into the profile; Thunderbird takes the add-in and IT's
        # settings from /etc/thunderbird/policies/policies.json (the package's file).
        h = harness.Harness(None, helper_policy=CHAIN_POLICY, chain=True)
        tb = TB(h.m)
        tb.addon_ready(timeout=60)
        src = tb.js('const { AddonManager } = ChromeUtils.importESModule("resource://gre/modules/AddonManager.sys.mjs");'
                    "return (await AddonManager.getAddonByID(args[0])).installTelemetryInfo?.source;", harness.ADDON_ID)
        check(src == "enterprise-policy", f"add-in installed by the policy (source {src!r})")
        for name, proc in (("helper", h.helper.proc), ("gateway", h.gateway.proc), ("sim", h.sim.proc)):
            exe = Path(f"/proc/{proc.pid}/exe").resolve()
            res["checks"].append(f"{name} runs {exe}")
        tb.login()
        wait_for(lambda: "approved" in h.helper.cli("pair", "list"), timeout=30, what="pairing through the installed native host")
        res["checks"].append("paired through /usr/bin/demail-native-host")
        res["start_s"] = round(time.time() - t0, 1)

        # Journey: a caseworker ticks options → the headers arrive at the provider.
        subject = "Bescheid über Ihren Antrag (Installation)"
        compose_demail(tb, "Erika Schmidt <erika.schmidt@buerger.de-mail.de>", subject, ["private", "confirmation-of-dispatch"])
        tb.open_popup()
        (shots / "installed-compose-options.png").write_bytes(tb.popup_snapshot_png())
        res["screenshots"]["options"] = str(shots / "installed-compose-options.png")
        tb.close_popup()
        send_and_wait_closed(tb)
        rec, raw = wait_for(lambda: [x for x in h.sim.stored() if x[0].get("subject") == subject], timeout=60, what="De-Mail at the provider")[0]
        hdrs = option_headers(raw)
        check(hdrs == {"x-de-mail-private": "yes", "x-de-mail-confirmation-of-dispatch": "yes"}, f"option headers at the provider: {hdrs}")
        check(str(email.message_from_bytes(raw, policy=email.policy.default)["Subject"]) == subject, "subject unchanged")
        check(len(h.sink.messages) == 0, "nothing on the ordinary SMTP path")
        res["checks"].append(f"options → provider headers {sorted(hdrs)}")

        # Journey: a citizen's De-Mail arrives → coloured tag, banner.
        citizen = "Widerspruch (Installation)"
        h.sim.inject("erika.schmidt@buerger.de-mail.de", "peter.meier@musterstadt.de-mail.de", citizen, "private,confirmation-of-receipt")
        tb.get_new_mail()
        wait_for(lambda: tagged(tb, "INBOX", citizen, DEMAIL_TAG), timeout=60, what="citizen De-Mail tagged")
        check(tb.select_in("INBOX", citizen), "select the De-Mail")
        b = tb.banner()
        check(b["kind"] == "demail" and set(b["fields"]["options"].split(", ")) == {"Persönlich", "Eingangsbestätigung"}, f"banner {b}")
        tb.shot(shots / "installed-demail-banner.png", tb.main_handle())
        res["screenshots"]["banner"] = str(shots / "installed-demail-banner.png")
        res["checks"].append("incoming De-Mail tagged, banner Persönlich + Eingangsbestätigung")
        tb.clear_selection()
        tb.show_folder("INBOX")
        time.sleep(0.8)
        png = tb.shot(shots / "installed-inbox-marked.png", tb.main_handle())
        res["screenshots"]["inbox"] = str(shots / "installed-inbox-marked.png")
        colour = hex_rgb(tb.tag_colour(DEMAIL_TAG))
        n, area = count_colour(png, tb.thread_row_rect(citizen), colour, tolerance=60)
        check(n > 80, f"De-Mail row coloured: {n} of {area} pixels in {colour}")
        res["checks"].append(f"row in the De-Mail colour ({n} px)")
        res["ok"] = True
    except Exception as e:  # reported to the calling test, which fails on it
        res["error"] = f"{type(e).__name__}: {e}"
        if h is not None:
            try:
                res["logs"] = {"thunderbird": h.tb.log()[-2000:] if h.tb else "", "gateway": h.gateway.log()[-1500:] if h.gateway else "",
                               "sim": h.sim.log()[-1000:] if h.sim else ""}
            except Exception:
                pass
    finally:
        if h is not None:
            h.close()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
