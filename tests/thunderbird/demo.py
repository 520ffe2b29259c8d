"""The demo (scripts/demo, second part): the whole De-Mail chain on this machine.

Starts the provider simulator, the gateway, the helper, Dovecot and a Thunderbird whose
enterprise policy (policies.json) installs the add-in, then drives Thunderbird like a
caseworker: a De-Mail with options, a blocked mixed-addressing attempt, a citizen's
De-Mail and the three receipts. Every step is checked (exit 1 on the first failure).
With $DISPLAY (and without --headless) Thunderbird stays open for you to try until you
close it. Everything started is stopped at the end, also on Ctrl-C.

Usage: python3 tests/thunderbird/demo.py [--headless] [--out DIR]
It reuses the end-to-end harness (harness.py, tb.py) and the scenario steps of
test_addin.py.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import ADDON_ID, ROOT, Harness, gateway_bins, helper_bins  # noqa: E402
from tb import FIND_BANNER, TB  # noqa: E402
from test_addin import (  # noqa: E402
    CHAIN_POLICY, DEMAIL_TAG, MAIN_BANNER_TIMELINE, RECEIPT_TAG, compose_demail, fixture, imap_append,
    option_headers, send_and_wait_closed, server_flags, tagged, wait_for,
)


class StepFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise StepFailed(what)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--headless", action="store_true", help="run through and exit, even with $DISPLAY")
    ap.add_argument("--out", default=str(ROOT / "artifacts/demo"), help="screenshots and logs")
    a = ap.parse_args()
    headless = a.headless or not os.environ.get("DISPLAY")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    xpi = ROOT / "artifacts/demail-thunderbird.xpi"
    if not xpi.exists() or not helper_bins() or not gateway_bins():
        print("Fehlt / missing: artifacts/demail-thunderbird.xpi or the binaries (scripts/demo builds them)", file=sys.stderr)
        return 2

    # Ctrl-C and kill: leave through the finally block, which stops everything.
    def stop(signum, _frame):
        # Once is enough: a second signal must not interrupt the clean-up.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    # What IT deploys in Thunderbird: the add-in, force-installed, and its settings.
    policies = {
        "ExtensionSettings": {ADDON_ID: {"installation_mode": "force_installed", "install_url": xpi.as_uri()}},
        "3rdparty": {"Extensions": {ADDON_ID: {"helper_discovery": "auto", "unreachable_helper": "block", "locked": ["unreachable_helper"]}}},
        "Preferences": {"mail.threadpane.listview": {"Value": 1, "Status": "default"}},
    }
    t_start = time.time()
    n = 0
    walk: list[str] = []

    def step(title):
        nonlocal n
        n += 1
        print(f"\n{n}. {title}", flush=True)

    def ok(text):
        print(f"   ✓ {text}", flush=True)
        walk.append(text)

    h = None
    try:
        step("Start: Dovecot, Anbieter-Simulator, Gateway, Helfer, Thunderbird mit Add-in aus der Richtlinie")
        h = Harness(
            None, managed=None, helper_policy=CHAIN_POLICY, chain=True, seal=True, headless=headless, policies=policies,
            before_thunderbird=lambda hh: imap_append(hh.dovecot, "Sent", fixture("email/03-intern-kollegen.eml")),
        )
        tb = TB(h.m)
        tb.addon_ready(timeout=60)
        src = tb.js('const { AddonManager } = ChromeUtils.importESModule("resource://gre/modules/AddonManager.sys.mjs");'
                    "return (await AddonManager.getAddonByID(args[0])).installTelemetryInfo?.source;", ADDON_ID)
        check(src == "enterprise-policy", f"add-in installed by the policy (source {src!r})")
        ok(f"Add-in durch die Unternehmensrichtlinie installiert ({h.tmp / 'thunderbird-install/distribution/policies.json'})")
        tb.login()
        pairs = wait_for(lambda: "Thunderbird De-Mail-Add-in" in h.helper.cli("pair", "list"), timeout=30, what="pairing")
        check(pairs, "paired")
        ok(f"Add-in mit dem Helfer gekoppelt (Helfer auf 127.0.0.1:{h.helper.port}, Gateway 127.0.0.1:{h.gateway.out_port}, Simulator 127.0.0.1:{h.sim.port})")
        wait_for(lambda: tb.addin_message({"type": "settings.get"})["result"]["policySource"] == "helper", timeout=30, interval=1, what="policy from the helper")
        ok("Die De-Mail-Regeln kommen aus der Richtlinie des Helfers (dieselbe Datei wie beim Gateway)")
        signed = json.loads(h.helper.cli("credentials", "test"))
        check((signed.get("signed_in") or {}).get("method") == "kerberos", f"Kerberos sign-in {signed}")
        ok(f"Am Gateway angemeldet als {signed['signed_in']['person']} (Kerberos-Ticket der Anmeldung am Rechner, kein Kennwort auf dem Arbeitsplatz)")

        step("Eine Sachbearbeiterin sendet eine De-Mail mit Persönlich + Versandbestätigung")
        subject = "Bescheid über Ihren Antrag auf Sondernutzung"
        compose_demail(tb, "Erika Schmidt <erika.schmidt@buerger.de-mail.de>", subject, ["private", "confirmation-of-dispatch"])
        tb.open_popup()
        (out / "compose-popup.png").write_bytes(tb.popup_snapshot_png())
        tb.close_popup()
        handoff = send_and_wait_closed(tb)
        rec, raw = wait_for(lambda: [x for x in h.sim.stored() if x[0]["subject"] == subject], timeout=40, what="De-Mail at the provider")[0]
        check(option_headers(raw) == {"x-de-mail-private": "yes", "x-de-mail-confirmation-of-dispatch": "yes"}, f"option headers {option_headers(raw)}")
        check(str(email.message_from_bytes(raw, policy=email.policy.default)["Subject"]) == subject, "subject unchanged")
        ok(f"Übergabe an den Helfer in {handoff:.2f} s; beim Anbieter mit X-de-mail-private: yes und X-de-mail-confirmation-of-dispatch: yes, Betreff unverändert")
        check(len(h.sink.messages) == 0, "nothing on the ordinary SMTP path")
        ok("Nichts ging über den normalen E-Mail-Weg (SMTP) hinaus")
        wait_for(lambda: tagged(tb, "Sent", subject, DEMAIL_TAG), timeout=30, what="Sent copy tagged")
        copies = [r for _, f, r in h.dovecot.fetch_all("Sent") if DEMAIL_TAG in f and subject in str(email.message_from_bytes(r, policy=email.policy.default)["Subject"])]
        check(copies and option_headers(copies[0]) == option_headers(raw), "Sent copy with the De-Mail headers, tagged on the server")
        ok("Kopie im Ordner „Gesendet“ mit den De-Mail-Kopfzeilen, als De-Mail markiert")

        step("Versehen: De-Mail- und E-Mail-Empfänger gemischt")
        before = len(h.sim.stored())
        tb.open_compose(to="erika.schmidt@buerger.de-mail.de", cc="max@example.org", subject="Rückfrage zu Ihrem Antrag")
        tb.wait_button("De-Mail: Konflikt")
        tb.press_send()
        d = tb.dialog()
        check(d["explanation"][0]["code"] == "mixed.rejected" and tb.compose_count() == 1, f"blocked: {d}")
        blocked_png = out / "blocked-mixed-addressing.png"
        tb.shot(blocked_png, tb.dialog_handle())
        time.sleep(1)
        check(len(h.sink.messages) == 0 and len(h.sim.stored()) == before, "nothing left through any path")
        ok(f"Blockiert: „{d['explanation'][0]['text'][:90]}…“ – Entwurf bleibt offen, nichts verschickt")
        tb.close_dialogs()
        tb.close_compose()

        step("Eine Bürgerin schickt eine De-Mail (Anbieter → Gateway → Postfach)")
        citizen = "Widerspruch gegen den Gebührenbescheid"
        h.sim.inject("erika.schmidt@buerger.de-mail.de", "peter.meier@musterstadt.de-mail.de", citizen, "private,confirmation-of-receipt", private_id="WS-2026-77")
        tb.get_new_mail()
        wait_for(lambda: tagged(tb, "INBOX", citizen, DEMAIL_TAG), timeout=40, what="citizen De-Mail tagged")
        check(tb.select_in("INBOX", citizen), "select")
        b = tb.banner()
        check(b["kind"] == "demail" and set(b["fields"]["options"].split(", ")) == {"Persönlich", "Eingangsbestätigung"}
              and b["fields"]["auth-level"] == "hoch", f"banner {b}")
        wait_for(lambda: DEMAIL_TAG in (server_flags(h.dovecot, "INBOX", citizen) or []), timeout=20, what="IMAP keyword $demail on the server")
        tb.shot(out / "citizen-demail-banner.png", tb.main_handle())
        ok("Markiert als De-Mail (Schlagwort, auch als IMAP-Schlüsselwort) mit Hinweisleiste: Persönlich, Eingangsbestätigung, Anmeldung „hoch“")

        step("Eine De-Mail mit Versand-, Eingangs- und Abholbestätigung; die drei Bestätigungen kommen zurück")
        sub2 = "Bescheid mit Zustellnachweis"
        pid = "AZ-DEMO-0815"
        compose_demail(tb, "erika.schmidt@buerger.de-mail.de", sub2, ["confirmation-of-dispatch", "confirmation-of-receipt", "confirmation-of-retrieve"], private_id=pid)
        send_and_wait_closed(tb)
        wait_for(lambda: [x for x in h.sim.stored() if x[0]["subject"] == sub2], timeout=40, what="second De-Mail at the provider")
        tb.get_new_mail()
        for kind in ("Versandbestätigung", "Eingangsbestätigung"):
            wait_for(lambda: tagged(tb, "INBOX", f"*{kind}* {sub2}", RECEIPT_TAG), timeout=40, what=f"{kind} tagged")
        check(h.sim.retrieve(pid) == {"sent": 1}, "Abholbestätigung triggered")
        tb.get_new_mail()
        wait_for(lambda: tagged(tb, "INBOX", f"*Abholbestätigung* {sub2}", RECEIPT_TAG), timeout=40, what="Abholbestätigung tagged")
        ok("Versand-, Eingangs- und Abholbestätigung als „De-Mail-Bestätigung“ markiert")
        token = h.helper.token()
        wait_for(lambda: len((h.helper.api(f"/v1/journal?private_id={pid}", token)["result"]["messages"] or [{}])[0].get("receipts", [])) >= 3,
                 timeout=30, what="receipts in the helper's journal")
        check(tb.select_in("Sent", sub2), "select sent")
        t = tb.wait(MAIN_BANNER_TIMELINE, FIND_BANNER, timeout=20, what="timeline")
        check(t["status"] == "retrieved" and all(s["done"] == "1" for s in t["steps"]), f"timeline {t}")
        timeline_png = out / "sent-demail-timeline.png"
        tb.shot(timeline_png, tb.main_handle())
        ok("Die gesendete De-Mail zeigt ihren Verlauf: übergeben → Versand → Eingang → Abholung")

        step("Eine gefälschte „De-Mail“, die nicht über das Gateway kam (ohne Gateway-Siegel)")
        forged = fixture("demail/01-buerger-anfrage-normal.eml").replace(b"Subject: ", b"Subject: Zahlungsaufforderung ", 1)
        h.dovecot.deliver(forged)
        tb.get_new_mail()
        tb.wait("""
            const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
            const inbox = MailServices.accounts.getIncomingServer("server1").rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox);
            return [...inbox.messages].some(h => h.mime2DecodedSubject.startsWith("Zahlungsaufforderung"));
        """, timeout=30, what="forged message arrived")
        check(tb.select_in("INBOX", "Zahlungsaufforderung"), "select forged")
        fb = wait_for(lambda: (lambda x: x if x and x["kind"] == "untrusted" else None)(tb.banner()), timeout=20, what="warning banner")
        time.sleep(0.5)
        check(not tagged(tb, "INBOX", "Zahlungsaufforderung", DEMAIL_TAG), "forged message not marked")
        forged_png = out / "forged-demail-warning.png"
        tb.shot(forged_png, tb.main_handle())
        ok(f"Nicht als De-Mail markiert; Warnung: „{fb['title']}“")

        step("Posteingang mit markierten De-Mails")
        tb.clear_selection()
        tb.show_folder("INBOX")
        time.sleep(0.8)
        inbox_png = out / "inbox-marked-demails.png"
        tb.shot(inbox_png, tb.main_handle())
        ok("Bildschirmfoto gespeichert")

        wall = time.time() - t_start
        print("\n" + "=" * 78)
        print("Rundgang / walkthrough – alles geprüft / every step checked:")
        for i, w in enumerate(walk, 1):
            print(f"  {i:2d}. {w}")
        print("\nBildschirmfotos / screenshots:")
        print(f"  Posteingang mit markierten De-Mails:   {inbox_png}")
        print(f"  Blockierter Versand (gemischt):        {blocked_png}")
        print(f"  Verlauf einer gesendeten De-Mail:      {timeline_png}")
        print(f"  Optionen beim Schreiben:               {out / 'compose-popup.png'}")
        print(f"  Gefälschte De-Mail mit Warnung:        {forged_png}")
        print(f"\nDauer / wall time (ohne Bauen): {wall:.1f} s")
        (out / "demo-timing.txt").write_text(f"{wall:.1f}\n")
        if not headless:
            print("\nThunderbird ist geöffnet: probieren Sie es aus (z. B. eine neue Nachricht an …@buerger.de-mail.de).")
            print("Schließen Sie Thunderbird (oder Strg-C), um alles zu beenden. / Close Thunderbird (or Ctrl-C) to stop everything.")
            while h.tb.proc.poll() is None:
                time.sleep(0.5)
        return 0
    except StepFailed as e:
        print(f"\n   FEHLER / FAILED: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nAbgebrochen / interrupted – alles wird beendet / stopping everything.", file=sys.stderr)
        return 130
    finally:
        if h is not None:
            try:
                (out / "demo-logs.txt").write_text(
                    h.tb.log() + "\n--- gateway ---\n" + h.gateway.log() + "\n--- provider sim ---\n" + h.sim.log() if h.tb else "")
            except Exception:
                pass
            h.close()


if __name__ == "__main__":
    sys.exit(main())
