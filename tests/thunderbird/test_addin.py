"""End-to-end: the De-Mail add-in in real headless Thunderbird 153 with real Dovecot.

Run: scripts/test-thunderbird (builds the .xpi first), or
     DEMAIL_XPI=artifacts/demail-thunderbird.xpi python3 -m unittest -v tests/thunderbird/test_addin.py

FullChainTest runs the whole chain as real processes (helper, gateway, provider
simulator, Dovecot); FirstSyncBenchmark is opt-in (DEMAIL_BENCH=1). The demo
(demo.py, scripts/demo) reuses this module's steps.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import ADDON_ID, ROOT, USER, Directory, Dovecot, Harness, free_port, helper_bins  # noqa: E402
from tb import COMPOSE, FIND_BANNER, IN_BROWSER, MAIN, TB, count_colour, hex_rgb  # noqa: E402

XPI = Path(os.environ.get("DEMAIL_XPI", ROOT / "artifacts/demail-thunderbird.xpi"))
SHOTS = Path(os.environ.get("DEMAIL_SCREENSHOTS", ROOT / "artifacts/screenshots"))
CORPUS = ROOT / "tests/corpus"
DEMAIL_TAG, RECEIPT_TAG, NOTIFICATION_TAG = "$demail", "$demail-receipt", "$demail-notification"

POLICY = {
    "version": 1,
    "demail": {"domain_patterns": ["*.de-mail.de"]},
    "organisation": {"name": "Stadt Musterstadt", "internal_domains": ["musterstadt.de", "*.musterstadt.de"]},
    "rules": {"mixed_addressing": "reject", "forwarded_demail_to_email": "confirm", "max_size": "10 MiB"},
    # The test provider CA of the integrity corpus (tests/corpus/integrity/policy.toml).
    "integrity": {"trusted_providers": re.findall(r'"([A-Za-z0-9+/=]{200,})"', (ROOT / "tests/corpus/integrity/policy.toml").read_text())},
}

TIMINGS: dict[str, float] = {}
INBOX_JS = (
    'const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");\n'
    'const inbox = MailServices.accounts.getIncomingServer("server1").rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox);\n'
)


def fixture(rel: str) -> bytes:
    return (CORPUS / rel).read_bytes()


def imap_append(dovecot: Dovecot, mailbox: str, raw: bytes) -> None:
    with imaplib.IMAP4("127.0.0.1", dovecot.imap_port) as m:
        m.login(USER, "x")
        m.create(mailbox)
        m.subscribe(mailbox)
        m.append(mailbox, None, None, raw)


def tearDownModule():
    if TIMINGS:
        t = {k: round(v, 3) if isinstance(v, float) else v for k, v in TIMINGS.items()}
        SHOTS.parent.mkdir(parents=True, exist_ok=True)
        (SHOTS.parent / "thunderbird-e2e-timings.json").write_text(json.dumps(t, indent=1, ensure_ascii=False) + "\n")
        print("\nTimings (s, unless named otherwise):", json.dumps(t, indent=1, ensure_ascii=False), file=sys.stderr)


class ThunderbirdAddinTest(unittest.TestCase):
    """One Thunderbird for all scenarios (start-up costs seconds); they run in order."""

    @classmethod
    def setUpClass(cls):
        if not XPI.exists():
            raise unittest.SkipTest(f"{XPI} missing: run scripts/build-xpi")
        SHOTS.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        closed_port = free_port()  # nothing listens here: the helper is "not reachable"
        managed = {
            "policy": POLICY,
            "helper_discovery": "url",
            "helper_url": f"http://127.0.0.1:{closed_port}",
            "unreachable_helper": "block",
        }

        def before_thunderbird(h: Harness):
            # An existing folder with an old De-Mail: classified by the first sync.
            imap_append(h.dovecot, "Archiv", fixture("demail/03-bescheid-alle-optionen-anhang.eml"))

        cls.h = Harness(XPI, managed=managed, keep=bool(os.environ.get("DEMAIL_KEEP")), before_thunderbird=before_thunderbird)
        try:
            cls.tb = TB(cls.h.m)
            cls.host = cls.tb.addon_ready()
        except BaseException:
            cls.h.close()
            raise
        TIMINGS["start (dovecot + thunderbird + add-in)"] = time.time() - t0

    @classmethod
    def tearDownClass(cls):
        h = getattr(cls, "h", None)
        if h:
            log = h.tb.log()
            (SHOTS.parent / "thunderbird-e2e.log").write_text(log)
            h.close()

    def setUp(self):
        self.t0 = time.time()

    def tearDown(self):
        TIMINGS[self._testMethodName] = time.time() - self.t0
        # Leave no compose window or dialog behind for the next scenario.
        try:
            self.tb.close_dialogs()
            if self.tb.compose_count():
                self.tb.close_compose()
        except Exception:
            pass

    # ------------------------------------------------------------------ receiving

    def test_01_incoming_demail_receipt_notification_tagged(self):
        """De-Mail, receipt and notification arrive by LMTP; the add-in tags them (IMAP keyword + database)."""
        h, tb = self.h, self.tb
        h.dovecot.deliver(fixture("demail/02-versand-eingang-private-id-qp.eml"))
        h.dovecot.deliver(fixture("email/03-intern-kollegen.eml"))
        tb.login()
        tb.wait_messages(2)
        # More mail while Thunderbird is connected (IMAP IDLE / new-mail check).
        h.dovecot.deliver(fixture("receipt/01-versand-stern.eml"))
        h.dovecot.deliver(fixture("notification/01-unbekannter-empfaenger.eml"))
        tb.get_new_mail()
        tb.wait_messages(4)
        want = {
            "Ihr Antrag auf Sondernutzungserlaubnis": [DEMAIL_TAG],
            "*Versandbestätigung*": [RECEIPT_TAG],
            "Meldung: Empfänger unbekannt": [NOTIFICATION_TAG],
        }
        msgs = tb.wait(
            """
            const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
            const inbox = MailServices.accounts.getIncomingServer("server1").rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox);
            const list = [...inbox.messages].map(h => ({ subject: h.mime2DecodedSubject, keywords: h.getStringProperty("keywords").split(" ").filter(Boolean) }));
            const tagged = list.filter(m => m.keywords.some(k => k.startsWith("$demail"))).length;
            return tagged >= 3 ? list : null;
            """,
            timeout=30,
            what="three tagged messages",
        )
        by_subject = {m["subject"]: m["keywords"] for m in msgs}
        for part, keywords in want.items():
            got = [kw for s, kw in by_subject.items() if s.startswith(part)]
            self.assertEqual(len(got), 1, f"{part}: {by_subject}")
            self.assertEqual(got[0], keywords, part)
        plain = [kw for s, kw in by_subject.items() if not any(s.startswith(p) for p in want)]
        self.assertTrue(plain and all(not kw for kw in plain), f"plain e-mail must stay untagged: {by_subject}")
        # The keywords reached the IMAP server (they survive across clients).
        kws = {}
        for _ in range(50):
            kws = h.dovecot.keywords()
            if sum(1 for f in kws.values() if any(x.startswith("$demail") for x in f)) >= 3:
                break
            time.sleep(0.2)
        flat = sorted(x for f in kws.values() for x in f if x.startswith("$demail"))
        self.assertEqual(flat, sorted([DEMAIL_TAG, RECEIPT_TAG, NOTIFICATION_TAG]), kws)
        # The tags exist with their colours and German names.
        tags = {t["key"]: t for t in tb.tags()}
        self.assertEqual(tags[DEMAIL_TAG]["tag"], "De-Mail")
        self.assertEqual(tags[RECEIPT_TAG]["tag"], "De-Mail-Bestätigung")
        self.assertEqual(tags[NOTIFICATION_TAG]["tag"], "De-Mail-Meldung")
        self.assertEqual(tags[DEMAIL_TAG]["color"].upper(), "#C2185B")

    def test_02_banner_shows_options_auth_level_private_id(self):
        tb = self.tb
        self.assertTrue(tb.select_message("Ihr Antrag auf Sondernutzungserlaubnis"))
        b = tb.banner()
        self.assertEqual(b["kind"], "demail")
        self.assertEqual(b["title"], "De-Mail")
        self.assertEqual(b["fields"]["options"], "Versandbestätigung, Eingangsbestätigung")
        self.assertEqual(b["fields"]["auth-level"], "hoch")
        self.assertEqual(b["fields"]["private-id"], "DM-20261127-110540-9F3A0C1B7E22D4A5")
        tb.shot(SHOTS / "message-banner-demail.png", tb.main_handle())

    def test_03_receipt_banner_names_the_confirmed_demail(self):
        tb = self.tb
        self.assertTrue(tb.select_message("*Versandbestätigung*"))
        b = wait_for(lambda: (lambda x: x if x and x["kind"] == "receipt" else None)(tb.banner()), timeout=30, what="receipt banner")
        self.assertEqual(b["title"], "De-Mail-Bestätigung")
        self.assertEqual(b["fields"]["receipt-type"], "Versandbestätigung")
        self.assertEqual(b["fields"]["confirms"], "Ihr Antrag auf Sondernutzungserlaubnis, Az. 66.2-2026/0412")
        self.assertIn("Ursprüngliche De-Mail öffnen", b["fields"]["open-original"])

    def test_03a_banner_says_whether_the_providers_signature_holds(self):
        """The add-in checks X-de-mail-integrity itself (core + WebCrypto): a signed De-Mail says so
        with its signer; one whose subject was changed after signing gets a warning in words."""
        h, tb = self.h, self.tb
        h.dovecot.deliver(fixture("integrity/01-rsa-sha256.eml"))
        h.dovecot.deliver(fixture("integrity/10-subject-altered.eml"))
        tb.get_new_mail()
        for subject, state, text in [
            ("Widerspruch gegen den Bescheid", "valid", "✔ Signatur des De-Mail-Anbieters geprüft: gültig"),
            ("Zustimmung gegen den Bescheid", "warning", "⚠ Achtung: Die Signatur des De-Mail-Anbieters ist nicht gültig"),
        ]:
            wait_for(lambda: tb.select_message(subject), timeout=30, what=subject)
            # Until the pane shows this message, the banner is the previous one's: wait for the
            # expected words (each case's differ from the message shown before it).
            b = wait_for(lambda: (lambda x: x if x and text in x["fields"].get("integrity", "") else None)(tb.banner()), timeout=30, what=f"integrity line: {subject}")
            if state == "valid":
                self.assertIn("Signiert von: CN=DMDA Signatur", b["fields"]["integrity"])
            else:
                self.assertNotIn("geprüft", b["fields"]["integrity"])
            tb.shot(SHOTS / f"message-banner-integrity-{state}.png", tb.main_handle())

    def test_04_first_sync_tags_existing_folder(self):
        """A De-Mail already in a folder before the add-in ran is tagged on first sync."""
        tb = self.tb
        tb.js("""
            const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
            const win = Services.wm.getMostRecentWindow("mail:3pane");
            const root = MailServices.accounts.getIncomingServer("server1").rootFolder;
            root.server.performExpand(win.msgWindow);
        """)
        tb.wait("""
            const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
            const f = MailServices.accounts.getIncomingServer("server1").rootFolder.getChildNamed("Archiv");
            if (!f) return false;
            const win = Services.wm.getMostRecentWindow("mail:3pane");
            f.updateFolder(win.msgWindow);
            return true;
        """, what="folder Archiv")
        msgs = tb.wait("""
            const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
            const f = MailServices.accounts.getIncomingServer("server1").rootFolder.getChildNamed("Archiv");
            const l = [...f.messages].map(h => h.getStringProperty("keywords"));
            return l.length && l.every(k => k.includes("$demail")) ? l : null;
        """, timeout=30, what="first-sync tag in Archiv")
        self.assertEqual(msgs, ["$demail"])
        self.assertIn(DEMAIL_TAG, self.h.dovecot.keywords(mailbox="Archiv").get(1, []))

    def test_05_inbox_screenshot_and_row_colour(self):
        """The De-Mail row is coloured in the tag colour (table view), checked on the pixels."""
        tb, m = self.tb, self.h.m
        tb.clear_selection()
        tb.js("""
            const win = Services.wm.getMostRecentWindow("mail:3pane");
            const about3Pane = win.gTabmail.currentAbout3Pane;
            const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
            about3Pane.displayFolder(MailServices.accounts.getIncomingServer("server1").rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox));
        """)
        time.sleep(0.5)
        png = tb.shot(SHOTS / "inbox-marked-demails.png", tb.main_handle())
        colour = hex_rgb(tb.tag_colour(DEMAIL_TAG))
        row = tb.thread_row_rect("Ihr Antrag auf Sondernutzungserlaubnis")
        n, area = count_colour(png, row, colour, tolerance=60)
        self.assertGreater(n, 80, f"De-Mail row {row}: {n} of {area} pixels in {colour}")
        plain = tb.thread_row_rect("[P] Frage zur KFZ-Zulassung")
        if plain:
            n2, _ = count_colour(png, plain, colour, tolerance=60)
            self.assertLess(n2, 10, "a plain e-mail row must not carry the De-Mail colour")

    # ------------------------------------------------------------------ compose

    def test_06_mixed_addressing_blocked_window_stays_with_explanation(self):
        tb, h = self.tb, self.h
        sent_before = len(h.sink.messages)
        tb.open_compose(to="erika.schmidt@buerger.de-mail.de", cc="max@example.org", subject="Bescheid zu Ihrem Antrag")
        tb.wait_button("De-Mail: Konflikt")
        t0 = time.time()
        tb.press_send()
        d = tb.dialog()
        TIMINGS["blocked send → dialog visible"] = time.time() - t0
        self.assertEqual(d["kind"], "blocked")
        self.assertEqual(d["heading"], "Die Nachricht wurde nicht gesendet")
        self.assertEqual(d["explanation"][0]["code"], "mixed.rejected")
        self.assertIn("Eine De-Mail darf nicht zusammen mit einer normalen E-Mail verschickt werden", d["explanation"][0]["text"])
        self.assertEqual([f["label"] for f in d["fixes"]], ["E-Mail-Empfänger entfernen", "De-Mail-Empfänger entfernen"])
        # The compose window is still open with everything intact; nothing was sent.
        self.assertEqual(tb.compose_count(), 1)
        f = tb.compose_fields()
        self.assertEqual((f["to"], f["cc"], f["subject"]), ("erika.schmidt@buerger.de-mail.de", "max@example.org", "Bescheid zu Ihrem Antrag"))
        time.sleep(1)
        self.assertEqual(len(h.sink.messages), sent_before, "nothing may reach the SMTP server")
        tb.shot(SHOTS / "blocked-send-dialog.png", tb.dialog_handle())
        # One click: remove the e-mail recipients → the compose window is a clean De-Mail.
        tb.dialog_click('[data-fix="remove-email"]')
        tb.wait("""
            const cw = [...Services.wm.getEnumerator("msgcompose")].filter(w => !w.closed).pop();
            const f = Cc["@mozilla.org/messengercompose/composefields;1"].createInstance(Ci.nsIMsgCompFields);
            cw.Recipients2CompFields(f);
            return f.cc === "" && f.to === "erika.schmidt@buerger.de-mail.de";
        """, what="e-mail recipient removed")
        tb.wait_button("De-Mail")
        tb.shot(SHOTS / "compose-after-fix.png", tb.compose_handle())

    def test_07_compose_popup_options_and_rules(self):
        """The popup: options with the TR rules from the core, groups, explanation, screenshot."""
        tb, h = self.tb, self.h
        tb.open_compose(to="Erika Schmidt <erika.schmidt@buerger.de-mail.de>", cc="kollege@musterstadt.de", subject="Bescheid")
        tb.open_popup()
        s = tb.popup_state()
        self.assertEqual(s["mode"], "conflict")
        self.assertEqual([o["label"] for o in s["options"]], ["Persönlich", "Versandbestätigung", "Eingangsbestätigung", "Abholbestätigung", "Absenderbestätigt"])
        self.assertEqual(s["groups"]["demail"], ["Erika Schmidt <erika.schmidt@buerger.de-mail.de>"])
        self.assertEqual(s["groups"]["internal"], ["kollege@musterstadt.de"])
        tb.close_popup()
        # Remove the internal recipient through the compose window's own fields.
        tb.js("""
            const cw = [...Services.wm.getEnumerator("msgcompose")].filter(w => !w.closed).pop();
            cw.addressRowClearPills(cw.document.getElementById("addressRowCc"));
        """)
        tb.wait_button("De-Mail", timeout=10)
        tb.open_popup()
        # Tick Abholbestätigung: the core adds Persönlich and the popup locks it.
        tb.popup("document.getElementById('opt-confirmation-of-retrieve').click(); return true;")
        s = tb.wait("""
            const cw = [...Services.wm.getEnumerator("msgcompose")].filter(w => !w.closed).pop();
            const b = [...cw.document.querySelectorAll("panel browser, .webextension-popup-browser")].find(b => b.currentURI?.spec.includes("/popup/compose.html"));
            return b.browsingContext.currentWindowGlobal.getActor("MarionetteCommands").executeScript(
              "const p = document.getElementById('opt-private'); return p.checked && p.disabled ? true : null;", [], { sandboxName: null, newSandbox: false });
        """, what="Persönlich ticked and locked")
        tb.popup("document.getElementById('private-id').value = 'AZ 66.2-2026/0412'; document.getElementById('private-id').dispatchEvent(new Event('input')); return true;")
        time.sleep(0.8)
        s = tb.popup_state()
        self.assertEqual(s["mode"], "demail")
        priv = next(o for o in s["options"] if o["id"] == "private")
        self.assertTrue(priv["checked"] and priv["disabled"])
        self.assertEqual(priv["why"], "Eine Abholbestätigung gibt es nur für persönliche De-Mails; „Persönlich“ ist daher gesetzt.")
        self.assertEqual(s["explanation"][0]["text"], "Diese Nachricht geht als De-Mail mit Abholbestätigung, Persönlich an erika.schmidt@buerger.de-mail.de.")
        (SHOTS / "compose-popup.png").write_bytes(tb.popup_snapshot_png())
        tb.close_popup()
        # The marker never ends up in the message: subject and recipients are untouched.
        self.assertEqual(tb.compose_fields()["subject"], "Bescheid")

    def test_08_options_with_only_email_recipients_blocked(self):
        tb, h = self.tb, self.h
        sent_before = len(h.sink.messages)
        tb.open_compose(to="max@example.org", subject="Rückfrage")
        tb.wait_button("Keine De-Mail")
        tb.open_popup()
        tb.popup("document.getElementById('opt-private').click(); return true;")
        time.sleep(0.8)
        tb.close_popup()
        tb.wait_button("De-Mail: Konflikt")
        tb.press_send()
        d = tb.dialog()
        self.assertEqual(d["explanation"][0]["code"], "options.no_demail_recipient")
        self.assertIn("kein Empfänger hat eine De-Mail-Adresse", d["explanation"][0]["text"])
        self.assertEqual(tb.compose_count(), 1)
        time.sleep(1)
        self.assertEqual(len(h.sink.messages), sent_before)

    def test_09_plain_email_passes_untouched(self):
        tb, h = self.tb, self.h
        sent_before = len(h.sink.messages)
        tb.open_compose(to="max@example.org", cc="kollege@musterstadt.de", subject="Termin am Donnerstag")
        tb.wait_button("Keine De-Mail")
        t0 = time.time()
        tb.press_send()
        for _ in range(150):
            if len(h.sink.messages) > sent_before:
                break
            time.sleep(0.1)
        TIMINGS["plain e-mail send → SMTP sink"] = time.time() - t0
        self.assertEqual(len(h.sink.messages), sent_before + 1)
        msg = h.sink.parsed(sent_before)
        self.assertEqual(msg["Subject"], "Termin am Donnerstag")
        self.assertEqual([k for k in msg.keys() if k.lower().startswith("x-de-mail")], [])
        self.assertEqual(sorted(h.sink.messages[sent_before]["rcpt"]), ["<kollege@musterstadt.de>", "<max@example.org>"])
        tb.wait('return [...Services.wm.getEnumerator("msgcompose")].filter(w => !w.closed).length === 0;', what="compose closed after send")
        # The add-in's own measurement of onBeforeSend.
        self.assertEqual(self._dialogs_open(), 0)

    def test_10_demail_helper_unreachable_block_then_subject_tags(self):
        """Allowed De-Mail, helper not reachable: policy block keeps the draft; switched to
        subject-tags on the options page, it goes through SMTP as `[P, VB] Betreff`."""
        tb, h = self.tb, self.h
        sent_before = len(h.sink.messages)
        tb.open_compose(to="erika.schmidt@buerger.de-mail.de", subject="Ihr Bescheid")
        tb.wait_button("De-Mail")
        tb.open_popup()
        tb.popup("document.getElementById('opt-private').click(); return true;")
        time.sleep(0.6)
        tb.popup("document.getElementById('opt-confirmation-of-dispatch').click(); return true;")
        time.sleep(0.8)
        tb.close_popup()
        tb.press_send()
        d = tb.dialog()
        self.assertEqual(d["kind"], "helper")
        self.assertIn("De-Mail-Helfer", d["explanation"][0]["text"])
        self.assertEqual(tb.compose_count(), 1)
        time.sleep(1)
        self.assertEqual(len(h.sink.messages), sent_before, "a De-Mail never leaves through the ordinary path when blocked")
        tb.close_dialogs()
        # The user (IT did not lock it) switches to the subject-tag fallback.
        tb.open_options(self.host)
        locked = tb.options("return document.getElementById('unreachable_helper').disabled")
        self.assertFalse(locked)
        tb.options("const s = document.getElementById('unreachable_helper'); s.value = 'subject-tags'; s.dispatchEvent(new Event('change')); return true;")
        tb.wait("""
            const win = Services.wm.getMostRecentWindow("mail:3pane");
            const t = win.gTabmail.tabInfo.find(t => t.browser?.currentURI?.spec.includes("/options/options.html"));
            return t.browser.browsingContext.currentWindowGlobal.getActor("MarionetteCommands").executeScript(
              "return document.getElementById('saved').textContent || null", [], { sandboxName: null, newSandbox: false });
        """, what="settings saved")
        tb.shot(SHOTS / "options-page.png", tb.main_handle())
        tb.close_options()
        tb.press_send()
        for _ in range(150):
            if len(h.sink.messages) > sent_before:
                break
            time.sleep(0.1)
        self.assertEqual(len(h.sink.messages), sent_before + 1)
        msg = h.sink.parsed(sent_before)
        self.assertEqual(msg["Subject"], "[P, VB] Ihr Bescheid")
        self.assertEqual(h.sink.messages[sent_before]["rcpt"], ["<erika.schmidt@buerger.de-mail.de>"])

    def test_11_reply_to_personal_demail_starts_in_demail_mode(self):
        """Replying to a De-Mail starts in De-Mail mode with Persönlich carried over."""
        tb, h = self.tb, self.h
        h.dovecot.deliver(fixture("demail/04-persoenlich-abholung-base64.eml"))
        tb.get_new_mail()
        tb.wait(INBOX_JS + "return [...inbox.messages].some(h => h.mime2DecodedSubject.startsWith('Persönliche Mitteilung') && h.getStringProperty('keywords').includes('$demail'));", what="personal De-Mail tagged")
        tb.open_reply_or_forward("Persönliche Mitteilung", "Reply")
        tb.wait_button("De-Mail")
        tb.open_popup()
        s = tb.popup_state()
        priv = next(o for o in s["options"] if o["id"] == "private")
        self.assertTrue(priv["checked"], s)
        self.assertEqual(s["mode"], "demail")
        self.assertEqual(s["groups"]["demail"], ["Stadt Musterstadt Sozialamt <sozialamt@musterstadt.de-mail.de>"])
        tb.close_popup()

    def test_12_forwarded_demail_to_external_needs_confirmation(self):
        """A received De-Mail forwarded to an e-mail address: the policy says confirm."""
        tb, h = self.tb, self.h
        sent_before = len(h.sink.messages)
        tb.open_reply_or_forward("Ihr Antrag auf Sondernutzungserlaubnis", "ForwardInline", to=["max@example.org"])
        tb.wait_button("De-Mail: Konflikt")
        tb.press_send()
        d = tb.dialog()
        self.assertEqual(d["kind"], "confirm")
        self.assertEqual(d["explanation"][0]["code"], "forward.demail_to_email")
        self.assertIn("verlässt damit den gesicherten De-Mail-Weg", d["explanation"][0]["text"])
        tb.dialog_click("#btn-cancel")
        time.sleep(1)
        self.assertEqual(tb.compose_count(), 1)
        self.assertEqual(len(h.sink.messages), sent_before)
        tb.press_send()
        tb.dialog()
        tb.dialog_click("#btn-send")
        for _ in range(100):
            if len(h.sink.messages) > sent_before:
                break
            time.sleep(0.1)
        self.assertEqual(len(h.sink.messages), sent_before + 1, "confirmed: sent as ordinary e-mail")
        self.assertEqual(h.sink.messages[sent_before]["rcpt"], ["<max@example.org>"])

    def test_13_before_send_latency_inside_thunderbird(self):
        """The add-in's own measurement of onBeforeSend for a 20-recipient e-mail."""
        tb, h = self.tb, self.h
        to = ", ".join(f"person{i}@example.org" for i in range(20))
        sent_before = len(h.sink.messages)
        for _ in range(3):
            tb.open_compose(to=to, subject="Rundschreiben")
            tb.press_send()
            tb.wait('return [...Services.wm.getEnumerator("msgcompose")].filter(w => !w.closed).length === 0;', timeout=20, what="sent")
        self.assertEqual(len(h.sink.messages), sent_before + 3)
        tb.open_options(self.host)
        metrics = tb.options("return (window.wrappedJSObject || window).browser.runtime.sendMessage({ type: 'ping' }).then(r => JSON.stringify(r.result.beforeSend))")
        tb.close_options()
        runs = [x for x in json.loads(metrics) if x["action"] == "send"][-3:]
        self.assertEqual(len(runs), 3, metrics)
        worst = max(x["ms"] for x in runs)
        TIMINGS["onBeforeSend 20 recipients (ms, worst of 3, in Thunderbird)"] = worst
        self.assertLess(worst, 20, runs)

    def _dialogs_open(self):
        return self.tb.js('return [...Services.wm.getEnumerator(null)].filter(w => !w.closed && w.document.documentURI.includes("extensionPopup")).length;')


class EventPageSuspensionTest(unittest.TestCase):
    """Manifest V3: the background is an event page that Thunderbird suspends when idle
    (here after 1.5 s). It must wake for new mail; while a compose window is open, the
    add-in's recipient polling (API calls reset the idle timer) keeps the button live."""

    @classmethod
    def setUpClass(cls):
        if not XPI.exists():
            raise unittest.SkipTest(f"{XPI} missing: run scripts/build-xpi")
        cls.h = Harness(XPI, managed={"policy": POLICY}, prefs={"extensions.background.idle.timeout": 1500})
        try:
            cls.tb = TB(cls.h.m)
            cls.tb.addon_ready()
        except BaseException:
            cls.h.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.h.close()

    def state(self):
        return self.tb.js("return WebExtensionPolicy.getByID(args[0]).extension.backgroundState;", "demail-addin@open-demail.de")

    def wait_stopped(self):
        return self.tb.wait("return WebExtensionPolicy.getByID(args[0]).extension.backgroundState === 'stopped';", "demail-addin@open-demail.de", timeout=20, what="background suspended")

    def test_wakes_for_new_mail_stays_live_while_composing(self):
        tb, h = self.tb, self.h
        tb.login()
        self.wait_stopped()
        h.dovecot.deliver(fixture("demail/01-buerger-anfrage-normal.eml"))
        tb.get_new_mail()
        tb.wait(INBOX_JS + "return [...inbox.messages].some(h => h.getStringProperty('keywords').includes('$demail'));", timeout=30, what="tag after wake-up")
        self.wait_stopped()
        # A new compose window wakes the page (tabs.onCreated) ...
        tb.open_compose(to="erika.schmidt@buerger.de-mail.de", subject="Test")
        tb.wait_button("De-Mail")
        # ... and well past the idle timeout, a recipient change still flips the button.
        time.sleep(4)
        self.assertEqual(self.state(), "running")
        tb.js('const cw = [...Services.wm.getEnumerator("msgcompose")].filter(w => !w.closed).pop();'
              'cw.addressRowAddRecipientsArray(cw.document.getElementById("addressRowTo"), ["max@example.org"]);')
        tb.wait_button("De-Mail: Konflikt")
        sent_before = len(h.sink.messages)
        tb.press_send()
        d = tb.dialog()
        self.assertEqual(d["explanation"][0]["code"], "mixed.rejected")
        time.sleep(0.5)
        self.assertEqual(len(h.sink.messages), sent_before)
        self.assertEqual(tb.compose_count(), 1)

class HelperHandOffTest(unittest.TestCase):
    """An allowed De-Mail goes to the real helper (`demail serve`), found through the real
    native-messaging host and paired without a question (IT's native auto-approval).
    No gateway is configured here: the helper keeps the message queued, which is what
    "accepted" means (docs/protocol.md §7). The ordinary SMTP sink must stay empty."""

    @classmethod
    def setUpClass(cls):
        if not XPI.exists():
            raise unittest.SkipTest(f"{XPI} missing: run scripts/build-xpi")
        if not helper_bins():
            raise unittest.SkipTest("helper binaries missing: cargo build -p demail-cli -p demail-helper")

        def before(h: Harness):
            imap_append(h.dovecot, "Sent", fixture("email/03-intern-kollegen.eml"))

        cls.h = Harness(XPI, managed={"policy": POLICY}, helper_policy=POLICY, before_thunderbird=before)
        try:
            cls.tb = TB(cls.h.m)
            cls.host = cls.tb.addon_ready()
            cls.tb.login()
            cls.token = cls.h.helper.token()
        except BaseException:
            cls.h.close()
            raise

    @classmethod
    def tearDownClass(cls):
        (SHOTS.parent / "thunderbird-helper-e2e.log").write_text(cls.h.tb.log())
        cls.h.close()

    def tearDown(self):
        try:
            self.tb.close_dialogs()
            if self.tb.compose_count():
                self.tb.close_compose()
        except Exception:
            pass

    def outbox(self):
        return self.h.helper.api("/v1/outbox?limit=100", self.token)["result"]["messages"]

    def compose_demail(self, subject, private_id=None, options=("private", "confirmation-of-dispatch")):
        tb = self.tb
        tb.open_compose(to="Erika Schmidt <erika.schmidt@buerger.de-mail.de>", subject=subject)
        tb.wait_button("De-Mail")
        tb.open_popup()
        for o in options:
            tb.popup(f"document.getElementById('opt-{o}').click(); return true;")
            time.sleep(0.5)
        if private_id:
            tb.popup(f"const i = document.getElementById('private-id'); i.value = {json.dumps(private_id)}; i.dispatchEvent(new Event('input')); return true;")
            time.sleep(0.8)
        tb.close_popup()

    def test_1_demail_handed_to_helper_sent_copy_filed(self):
        tb, h = self.tb, self.h
        # The add-in paired itself through the native host (IT allowed it).
        pairs = h.helper.cli("pair", "list")
        self.assertIn("Thunderbird De-Mail-Add-in", pairs)
        sent_before = len(h.sink.messages)
        self.compose_demail("Bescheid über Ihren Antrag", private_id="AZ-E2E-0001")
        t0 = time.time()
        tb.press_send()
        tb.wait('return [...Services.wm.getEnumerator("msgcompose")].filter(w => !w.closed).length === 0;', timeout=20, interval=0.02, what="compose closed after hand-off")
        TIMINGS["De-Mail hand-off → compose closed (s)"] = time.time() - t0
        out = self.outbox()
        self.assertEqual(len(out), 1, out)
        m = out[0]
        self.assertEqual(m["subject"], "Bescheid über Ihren Antrag")
        self.assertEqual(m["private_id"], "AZ-E2E-0001")
        self.assertEqual(sorted(m["options"]), ["confirmation-of-dispatch", "private"])
        self.assertEqual(m["recipients"], ["erika.schmidt@buerger.de-mail.de"])
        raw = h.helper.api(f"/v1/outbox/{m['id']}/raw", self.token, raw=True)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(msg["X-de-mail-private"], "yes")
        self.assertEqual(msg["X-de-mail-confirmation-of-dispatch"], "yes")
        self.assertEqual(msg["X-de-mail-private-id"], "AZ-E2E-0001")
        self.assertEqual(msg["Subject"], "Bescheid über Ihren Antrag")
        time.sleep(0.5)
        self.assertEqual(len(h.sink.messages), sent_before, "a De-Mail must never reach the ordinary SMTP server")
        # The Sent folder holds the helper's copy, with its headers, tagged De-Mail.
        for _ in range(100):
            kws = h.dovecot.keywords(mailbox="Sent")
            if any("$demail" in f for f in kws.values()):
                break
            time.sleep(0.1)
        self.assertTrue(any("$demail" in f for f in kws.values()), kws)

    def test_2_helper_stopped_policy_block_then_nothing_lost(self):
        tb, h = self.tb, self.h
        before = len(self.outbox())
        h.helper.stop()
        try:
            self.compose_demail("Zweiter Bescheid", options=("private",))
            tb.press_send()
            d = tb.dialog()
            self.assertEqual(d["kind"], "helper")
            self.assertIn("nicht erreichbar", d["explanation"][0]["text"])
            self.assertEqual(tb.compose_count(), 1, "the draft stays open")
            tb.close_dialogs()
        finally:
            h.helper.start()
        # Helper back (new port; found again through the native host): send again.
        tb.press_send()
        tb.wait('return [...Services.wm.getEnumerator("msgcompose")].filter(w => !w.closed).length === 0;', timeout=20, what="compose closed")
        out = self.outbox()
        self.assertEqual(len(out), before + 1)
        self.assertEqual(out[0]["subject"], "Zweiter Bescheid")
        self.assertEqual(len(h.sink.messages), 0)

    def test_3_handoff_with_1mb_attachment(self):
        tb, h = self.tb, self.h
        self.compose_demail("Bescheid mit Anlage", options=("confirmation-of-dispatch",))
        blob = h.tmp / "anlage.pdf"
        blob.write_bytes(b"%PDF-1.4\n" + os.urandom(1024 * 1024))
        tb.attach_file(blob)
        time.sleep(0.5)
        t0 = time.time()
        tb.press_send()
        tb.wait('return [...Services.wm.getEnumerator("msgcompose")].filter(w => !w.closed).length === 0;', timeout=30, interval=0.02, what="compose closed after hand-off")
        TIMINGS["De-Mail hand-off with 1 MB attachment → compose closed (s)"] = time.time() - t0
        m = self.outbox()[0]
        self.assertEqual(m["subject"], "Bescheid mit Anlage")
        self.assertGreater(m["size"], 1024 * 1024)


    def test_4_slow_helper_one_submission_one_de_mail(self):
        """The helper commits late (test hook: 5 s, past its own deadline of 3 s, like a
        slow disk). The add-in's first attempt gets 408; it sends once more with the same
        Message-ID and gets the stored entry, the window closes. (A caseworker shown a
        dialog would press Send again; the test does, too.) Exactly one outbox entry."""
        tb, h = self.tb, self.h
        before = {m["id"] for m in self.outbox()}
        user_cfg = h.helper.home / "config/demail/helper.toml"
        h.helper.stop()
        user_cfg.parent.mkdir(parents=True, exist_ok=True)
        user_cfg.write_text("[api]\nrequest_timeout = 3\n")
        h.helper.env["DEMAIL_HELPER_TEST_COMMIT_DELAY_MS"] = "5000"
        try:
            h.helper.start()
            self.compose_demail("Bescheid, langsam gespeichert", options=("private",))
            t0 = time.time()
            tb.press_send()
            sends = 1
            end = time.time() + 60
            while time.time() < end and tb.compose_count():
                try:
                    tb.dialog(timeout=1)
                except TimeoutError:
                    continue
                tb.close_dialogs()
                tb.press_send()
                sends += 1
            TIMINGS["slow helper: Send → compose closed (s)"] = time.time() - t0
            self.assertEqual(tb.compose_count(), 0, f"the compose window is still open after {sends} Send(s)")
            time.sleep(6)  # a late commit of another attempt would be in the outbox now
            new = [m for m in self.outbox() if m["id"] not in before]
            self.assertEqual([m["subject"] for m in new], ["Bescheid, langsam gespeichert"], f"{sends} Send(s): {new}")
            log = h.helper.log_path.read_text(errors="replace")
            # The second attempt found the first one's entry: the commit was late (the hook).
            self.assertIn("duplicate=true", log)
        finally:
            h.helper.stop()
            user_cfg.unlink()
            del h.helper.env["DEMAIL_HELPER_TEST_COMMIT_DELAY_MS"]
            h.helper.start()


# The organisation's one policy file: helper and gateway read it, the add-in gets it
# from the helper (GET /v1/policy), since IT gives none through storage.managed here.
CHAIN_POLICY = {
    **POLICY,
    "authorization": {
        "default": "deny",
        "senders": [{"address": "peter.meier@musterstadt.de", "cost_unit": "KST-3210",
                     "options": ["private", "confirmation-of-dispatch", "confirmation-of-receipt", "confirmation-of-retrieve"]}],
    },
    "mapping": {"catch_all": "sammelpostfach@musterstadt.de", "domains": [{"demail": "musterstadt.de-mail.de", "email": "musterstadt.de"}]},
}
OPTION_HEADERS = ["x-de-mail-private", "x-de-mail-confirmation-of-dispatch", "x-de-mail-confirmation-of-receipt",
                  "x-de-mail-confirmation-of-retrieve", "x-de-mail-authoritative"]


def option_headers(raw: bytes) -> dict[str, str]:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return {k.lower(): str(v) for k, v in msg.items() if k.lower() in OPTION_HEADERS}


def wait_for(fn, timeout=40, interval=0.2, what="condition"):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}; last={last!r}")


def compose_demail(tb, to, subject, options, private_id=None):
    """A new message to a De-Mail address with options ticked in the add-in's popup."""
    tb.open_compose(to=to, subject=subject)
    tb.wait_button("De-Mail")
    tb.open_popup()
    for o in options:
        tb.popup(f"document.getElementById('opt-{o}').click(); return true;")
        time.sleep(0.5)
    if private_id:
        tb.popup(f"const i = document.getElementById('private-id'); i.value = {json.dumps(private_id)}; i.dispatchEvent(new Event('input')); return true;")
        time.sleep(0.8)
    tb.close_popup()


def send_and_wait_closed(tb, timeout=20):
    t0 = time.time()
    tb.press_send()
    tb.wait('return [...Services.wm.getEnumerator("msgcompose")].filter(w => !w.closed).length === 0;', timeout=timeout, interval=0.02, what="compose closed after hand-off")
    return time.time() - t0


def tagged(tb, folder, subject_part, keyword):
    """Thunderbird's database: the message's keywords contain `keyword`."""
    return tb.js("""
        const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
        const server = MailServices.accounts.getIncomingServer("server1");
        const f = args[0] === "INBOX" ? server.rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox) : server.rootFolder.getChildNamed(args[0]);
        const h = f && [...f.messages].find(h => h.mime2DecodedSubject.includes(args[1]));
        return h ? h.getStringProperty("keywords").split(" ").includes(args[2]) : false;
    """, folder, subject_part, keyword)


def server_flags(dovecot, mailbox, subject_part):
    for _, flags, raw in dovecot.fetch_all(mailbox):
        m = email.message_from_bytes(raw, policy=email.policy.default)
        if subject_part in str(m["Subject"] or ""):
            return flags
    return None


class FullChainTest(unittest.TestCase):
    """Everything real, as separate processes: Thunderbird with the add-in, the helper
    (`demail serve`, paired through the native host), the gateway (`demail-gateway`,
    STARTTLS + AUTH with the password from the kernel keyring, a test CA made now), the
    provider simulator (`demail-provider-sim`, implicit + mutual TLS) and Dovecot (IMAP,
    and LMTP for what the gateway delivers). The SMTP sink is the ordinary e-mail path:
    it must stay empty for every De-Mail."""

    @classmethod
    def setUpClass(cls):
        if not XPI.exists():
            raise unittest.SkipTest(f"{XPI} missing: run scripts/build-xpi")

        def before(h: Harness):
            imap_append(h.dovecot, "Sent", fixture("email/03-intern-kollegen.eml"))

        # No policy in storage.managed: the add-in takes the helper's.
        # The gateway seals what it delivers; the policy requires the seal (seal.required).
        cls.h = Harness(XPI, managed={"helper_discovery": "auto"}, helper_policy=CHAIN_POLICY, chain=True, seal=True, before_thunderbird=before,
                        keep=bool(os.environ.get("DEMAIL_KEEP")))
        try:
            cls.tb = TB(cls.h.m)
            cls.host = cls.tb.addon_ready()
            cls.tb.login()
            cls.token = cls.h.helper.token()
        except BaseException:
            cls.h.close()
            raise

    @classmethod
    def tearDownClass(cls):
        h = cls.h
        (SHOTS.parent / "thunderbird-chain-e2e.log").write_text(
            h.tb.log() + "\n--- gateway ---\n" + h.gateway.log() + "\n--- provider sim ---\n" + h.sim.log())
        h.close()

    def tearDown(self):
        try:
            self.tb.close_dialogs()
            if self.tb.compose_count():
                self.tb.close_compose()
        except Exception:
            pass
        self.assertEqual(len(self.h.sink.messages), 0, "a De-Mail must never reach the ordinary SMTP server")

    def journal(self, private_id):
        return self.h.helper.api(f"/v1/journal?private_id={private_id}", self.token)["result"]["messages"]

    def test_0_policy_comes_from_the_helper(self):
        r = wait_for(lambda: (lambda v: v if v["result"]["policySource"] == "helper" else None)(self.tb.addin_message({"type": "settings.get"})),
                     timeout=30, interval=1, what="policy from the helper")
        self.assertIsNone(r["result"]["policyProblem"])

    def test_0_caseworker_signs_in_with_kerberos_no_password_on_the_desk(self):
        signed = json.loads(self.h.helper.cli("credentials", "test"))
        self.assertEqual(signed["signed_in"], {"person": "Peter Meier", "method": "kerberos", "method_label": "Kerberos", "method_label_en": "Kerberos"}, signed)
        cfg = json.loads(self.h.helper.cli("config", "show"))
        self.assertEqual(cfg["gateway"]["username"], "", "no account in the helper's configuration")
        doctor = json.loads(subprocess.run([str(self.h.helper.demail), "doctor", "--offline"], env=self.h.helper._env(),
                                           capture_output=True, text=True, timeout=60).stdout)
        keyring = [f for f in doctor["findings"] if f["check"] == "keyring"]
        self.assertTrue(keyring and keyring[0]["status"] == "ok" and "Kerberos" in keyring[0]["message"], keyring)
        # Neither the person's password nor any other lies in the profile or the helper's files.
        secret = Directory.PERSON_PASSWORD.encode()
        for base, _, names in os.walk(self.h.tmp / "home"):
            for n in names:
                path = os.path.join(base, n)
                if os.path.isfile(path) and not os.path.islink(path):
                    self.assertNotIn(secret, open(path, "rb").read(), path)

    def test_1_options_reach_the_provider_exactly(self):
        """Scenario 1: Persönlich + Versandbestätigung → exactly these headers at the provider, subject unchanged, Sent copy with the options."""
        tb, h = self.tb, self.h
        self.assertIn("Thunderbird De-Mail-Add-in", h.helper.cli("pair", "list"))
        subject = "Bescheid über Ihren Antrag vom 3. November"
        compose_demail(tb, "Erika Schmidt <erika.schmidt@buerger.de-mail.de>", subject, ["private", "confirmation-of-dispatch"])
        t0 = time.time()
        TIMINGS["chain: De-Mail hand-off → compose closed (s)"] = send_and_wait_closed(tb)
        stored = wait_for(lambda: [x for x in h.sim.stored() if x[0]["subject"] == subject], timeout=40, what="De-Mail at the provider")
        TIMINGS["chain: Send → provider simulator stored it (s)"] = time.time() - t0
        self.assertEqual(len(stored), 1)
        record, raw = stored[0]
        self.assertEqual(option_headers(raw), {"x-de-mail-private": "yes", "x-de-mail-confirmation-of-dispatch": "yes"})
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(str(msg["Subject"]), subject, "the subject arrives unchanged")
        self.assertEqual(msg["From"].addresses[0].addr_spec, "peter.meier@musterstadt.de-mail.de", "the gateway mapped the sender")
        self.assertEqual(record["rcpts"], ["erika.schmidt@buerger.de-mail.de"])
        pid = str(msg["X-de-mail-private-id"])
        self.assertRegex(pid, r"^DM-\d{8}-\d{6}-[0-9A-F]{16}$")
        # The Sent copy carries the options and is tagged, on the server too.
        sent = wait_for(lambda: [(f, r) for _, f, r in h.dovecot.fetch_all("Sent") if subject in str(email.message_from_bytes(r, policy=email.policy.default)["Subject"])],
                        timeout=20, what="Sent copy")
        flags, copy = sent[0]
        self.assertEqual(option_headers(copy), {"x-de-mail-private": "yes", "x-de-mail-confirmation-of-dispatch": "yes"})
        self.assertEqual(str(email.message_from_bytes(copy, policy=email.policy.default)["X-de-mail-private-id"]), pid)
        self.assertIn(DEMAIL_TAG, flags)
        # The gateway's archive names the person the directory signed in, and how.
        out = h.tmp / "archive-export-1"
        h.gateway.cli("archive", "export", "--out", str(out))
        entries = json.loads((out / "manifest.json").read_text())["entries"]
        sent_entry = [e for e in entries if e["direction"] == "out" and e.get("private_id") == pid]
        self.assertEqual([e.get("actor") for e in sent_entry], [f"kerberos:peter@{Directory.REALM}"], sent_entry)
        # Its Versandbestätigung comes back through the gateway and is tagged as receipt.
        wait_for(lambda: tagged(tb, "INBOX", f"*Versandbestätigung* {subject}", RECEIPT_TAG), timeout=40, what="Versandbestätigung tagged")

    def test_2_citizen_demail_through_gateway_tagged_with_banner(self):
        """Scenario 6: a citizen's De-Mail: provider simulator → gateway → Dovecot LMTP → tagged, banner with options."""
        tb, h = self.tb, self.h
        subject = "Widerspruch gegen den Gebührenbescheid"
        h.sim.inject("erika.schmidt@buerger.de-mail.de", "peter.meier@musterstadt.de-mail.de", subject, "private,confirmation-of-receipt", private_id="WS-2026-77")
        tb.get_new_mail()
        wait_for(lambda: tagged(tb, "INBOX", subject, DEMAIL_TAG), timeout=40, what="citizen De-Mail tagged in Thunderbird")
        flags = wait_for(lambda: (lambda f: f if f and DEMAIL_TAG in f else None)(server_flags(h.dovecot, "INBOX", subject)), timeout=20, what="IMAP keyword")
        self.assertIn(DEMAIL_TAG, flags)
        self.assertTrue(tb.select_in("INBOX", subject))
        b = tb.banner()
        self.assertEqual(b["kind"], "demail")
        self.assertEqual(set(b["fields"]["options"].split(", ")), {"Persönlich", "Eingangsbestätigung"})
        self.assertEqual(b["fields"]["auth-level"], "hoch")
        self.assertEqual(b["fields"]["private-id"], "WS-2026-77")
        self.assertEqual(b["fields"]["sender"], "erika.schmidt@buerger.de-mail.de")
        tb.shot(SHOTS / "chain-citizen-demail-banner.png", tb.main_handle())

    def test_3_three_receipts_tagged_and_timeline_on_the_original(self):
        """Scenario 7: Versand-, Eingangs- and Abholbestätigung arrive through the gateway, are tagged as receipts, and the sent De-Mail's banner shows the timeline from the helper's journal."""
        tb, h = self.tb, self.h
        subject = "Bescheid mit Zustellnachweis"
        pid = "AZ-E2E-0007"
        compose_demail(tb, "erika.schmidt@buerger.de-mail.de", subject, ["confirmation-of-dispatch", "confirmation-of-receipt", "confirmation-of-retrieve"], private_id=pid)
        send_and_wait_closed(tb)
        record, raw = wait_for(lambda: [x for x in h.sim.stored() if x[0]["subject"] == subject], timeout=40, what="De-Mail at the provider")[0]
        self.assertEqual(option_headers(raw), {"x-de-mail-private": "yes", "x-de-mail-confirmation-of-dispatch": "yes",
                                               "x-de-mail-confirmation-of-receipt": "yes", "x-de-mail-confirmation-of-retrieve": "yes"})
        # Versand- and Eingangsbestätigung come by themselves; the recipient "logs in" for the third.
        tb.get_new_mail()
        for kind in ("Versandbestätigung", "Eingangsbestätigung"):
            wait_for(lambda: tagged(tb, "INBOX", f"*{kind}* {subject}", RECEIPT_TAG), timeout=40, what=f"{kind} tagged")
        self.assertEqual(h.sim.retrieve(pid), {"sent": 1})
        tb.get_new_mail()
        wait_for(lambda: tagged(tb, "INBOX", f"*Abholbestätigung* {subject}", RECEIPT_TAG), timeout=40, what="Abholbestätigung tagged")
        for kind in ("Versandbestätigung", "Eingangsbestätigung", "Abholbestätigung"):
            flags = wait_for(lambda: (lambda f: f if f and RECEIPT_TAG in f else None)(server_flags(h.dovecot, "INBOX", f"*{kind}* {subject}")), timeout=20, what=f"IMAP keyword on the {kind}")
            self.assertNotIn(DEMAIL_TAG, flags)
        # The add-in told the helper; the journal has all three.
        j = wait_for(lambda: (lambda m: m if m and len(m[0]["receipts"]) >= 3 else None)(self.journal(pid)), timeout=30, what="three receipts in the helper's journal")
        self.assertEqual(sorted(r["type"] for r in j[0]["receipts"]), ["dispatch", "receipt", "retrieve"])
        # The helper checked each (the simulator's signature under the policy's provider CA;
        # Hash and Metadata against the MIME it handed to the gateway): all three count.
        self.assertEqual([(r["check"], r["counts"]) for r in j[0]["receipts"]], [("matches", True)] * 3, j)
        self.assertEqual(j[0]["receipt_status"], "retrieved")
        # The Abholbestätigung's banner names the De-Mail it confirms.
        self.assertTrue(tb.select_in("INBOX", f"*Abholbestätigung* {subject}"))
        b = wait_for(lambda: (lambda x: x if x and x["kind"] == "receipt" else None)(tb.banner()), timeout=20, what="receipt banner")
        self.assertEqual((b["kind"], b["fields"]["receipt-type"], b["fields"]["confirms"]), ("receipt", "Abholbestätigung", subject))
        # The sent De-Mail's banner shows the timeline.
        self.assertTrue(tb.select_in("Sent", subject))
        b = tb.wait(MAIN_BANNER_TIMELINE, FIND_BANNER, timeout=20, what="timeline in the banner")
        self.assertEqual(b["status"], "retrieved")
        self.assertEqual([s["step"] for s in b["steps"]], ["sent", "dispatch", "receipt", "retrieve"])
        self.assertTrue(all(s["done"] == "1" for s in b["steps"]), b)
        self.assertIn("Verlauf: vom Empfänger abgeholt", b["text"])
        # Each receipt's check in words beside its step.
        for st in b["steps"][1:]:
            self.assertEqual(st["checks"], [{"check": "matches", "text": "✓ Bestätigung geprüft: passt zur gesendeten Nachricht"}], b)
        self.assertIn("Bestätigung geprüft: passt zur gesendeten Nachricht", b["text"])
        tb.shot(SHOTS / "chain-sent-demail-timeline.png", tb.main_handle())

    def test_3b_forged_receipt_through_the_gateway_is_a_warning_not_proof(self):
        """Issue 15: an Eingangsbestätigung altered after the provider signed it (another
        Message-ID, other text), handed to the gateway as the provider would: the add-in
        reports it, the helper finds its signature invalid, it does not count, and the sent
        De-Mail's timeline shows the warning in words beside the checked real one."""
        tb, h = self.tb, self.h
        subject = "Bescheid mit Zustellnachweis"
        pid = "AZ-E2E-0007"
        real = [r for _, _, r in h.dovecot.fetch_all("INBOX")
                if re.search(rb"(?im)^X-de-mail-message-type: confirmation of receipt", r) and pid.encode() in r]
        self.assertEqual(len(real), 1, "the real Eingangsbestätigung of scenario 7")
        # Only what the provider sent: from its integrity value on top (the gateway's and the
        # mailbox's lines above it go).
        raw = real[0][re.search(rb"(?im)^X-de-mail-integrity:", real[0]).start():]
        forged = re.sub(rb"(?im)^Message-ID: <", b"Message-ID: <gefaelscht-", raw, count=1)
        forged = forged.replace(b"eingegangen.", b"eingegangen, am 1. Januar.", 1)
        self.assertNotEqual(forged, raw)
        h.gateway.deliver_as_provider("Eingangsbestaetigung@dmda-sim.de-mail.de", "peter.meier@musterstadt.de-mail.de", forged)
        tb.get_new_mail()
        j = wait_for(lambda: (lambda m: m if m and len(m[0]["receipts"]) >= 4 else None)(self.journal(pid)), timeout=40, what="the forged receipt in the helper's journal")
        bad = [r for r in j[0]["receipts"] if not r["counts"]]
        self.assertEqual([(r["type"], r["check"]) for r in bad], [("receipt", "invalid-signature")], j)
        self.assertEqual(j[0]["receipt_status"], "retrieved", "the real receipts still count")
        # The sent De-Mail's banner (shown anew): the real one checked, the forged one a warning in words.
        self.assertTrue(tb.select_in("INBOX", f"*Abholbestätigung* {subject}"))
        self.assertTrue(tb.select_in("Sent", subject))
        b = tb.wait(MAIN_BANNER_TIMELINE_WITH("invalid-signature"), FIND_BANNER, timeout=30, what="the warning in the timeline")
        receipt = [st for st in b["steps"] if st["step"] == "receipt"][0]
        self.assertEqual(receipt["done"], "1", b)
        self.assertEqual([c["check"] for c in receipt["checks"]], ["matches", "invalid-signature"], b)
        self.assertTrue(receipt["checks"][1]["text"].startswith("⚠ Warnung – Signatur der Bestätigung ist nicht gültig (verändert oder gefälscht)"), b)
        self.assertIn("zählt nicht als Nachweis", receipt["checks"][1]["text"])
        tb.shot(SHOTS / "chain-sent-demail-forged-receipt-warning.png", tb.main_handle())

    def test_4_forged_demail_not_marked_warning_banner(self):
        """Gateway seal: a message with De-Mail headers that did not come through the
        gateway (delivered straight to the mailbox) is not marked; its banner warns. The
        gateway's own deliveries above carried a valid seal (they were marked)."""
        tb, h = self.tb, self.h
        for _, _, raw in h.dovecot.fetch_all("INBOX"):
            self.assertIn(b"X-Demail-Gateway-Seal: v=1; kid=gw1; s=", raw)
        forged = fixture("demail/01-buerger-anfrage-normal.eml").replace(b"Subject: ", b"Subject: Gefaelscht: ", 1)
        h.dovecot.deliver(forged)
        tb.get_new_mail()
        tb.wait(INBOX_JS + "return [...inbox.messages].some(h => h.mime2DecodedSubject.startsWith('Gefaelscht'));", what="forged message arrived")
        self.assertTrue(tb.select_in("INBOX", "Gefaelscht"))
        # The pane may still show the previous message's banner for a moment.
        b = wait_for(lambda: (lambda x: x if x and x["kind"] != "demail" else None)(tb.banner()), timeout=20, what="banner of the forged message")
        self.assertEqual(b["kind"], "untrusted")
        self.assertEqual(b["title"], "Nicht vom De-Mail-Gateway bestätigt – Vorsicht")
        self.assertIn("kam aber nicht über das De-Mail-Gateway", b["fields"]["seal"])
        time.sleep(1)
        self.assertFalse(tagged(tb, "INBOX", "Gefaelscht", DEMAIL_TAG))
        self.assertNotIn(DEMAIL_TAG, server_flags(h.dovecot, "INBOX", "Gefaelscht") or [])
        tb.shot(SHOTS / "chain-forged-demail-warning.png", tb.main_handle())


    def test_5_a_forged_banner_cannot_hide_the_warning(self):
        """A forged De-Mail brings its own banner: an element with the add-in's old id
        `demail-banner` and class names, laid over the top of the message pane with the
        highest z-index, saying "vom Gateway bestätigt". The add-in's warning is inserted
        anyway (in a closed shadow root, in the top layer): it is in the DOM for chrome
        code, invisible to the message's own content, and on the screen above the fake."""
        tb, h = self.tb, self.h
        fake = (
            '<style>.demail-banner, #demail-banner { display: block !important; }</style>'
            '<aside id="demail-banner" class="demail-banner demail-demail" data-kind="demail" role="note" '
            'style="position: fixed; top: 0; left: 0; right: 0; height: 160px; z-index: 2147483647; background: #2E7D32; color: #fff; padding: 8px">'
            '<strong class="demail-title">De-Mail – vom De-Mail-Gateway bestätigt</strong></aside>'
            '<p>Sehr geehrte Damen und Herren, bitte überweisen Sie die Gebühr auf das folgende Konto.</p>'
        )
        forged = (fixture("demail/01-buerger-anfrage-normal.eml")
                  .replace(b"Subject: ", b"Subject: Gefaelscht mit Banner ", 1)
                  .replace(b"Message-ID: <a81f3c2e", b"Message-ID: <forged-banner-a81f3c2e", 1)
                  .replace(b"Content-Type: text/plain; charset=UTF-8", b"Content-Type: text/html; charset=UTF-8", 1))
        forged = re.split(rb"\r?\n\r?\n", forged, maxsplit=1)[0] + b"\r\n\r\n" + fake.encode()
        h.dovecot.deliver(forged)
        tb.get_new_mail()
        tb.wait(INBOX_JS + "return [...inbox.messages].some(h => h.mime2DecodedSubject.startsWith('Gefaelscht mit Banner'));", what="forged message arrived")
        self.assertTrue(tb.select_in("INBOX", "Gefaelscht mit Banner"))
        b = wait_for(lambda: (lambda x: x if x and x["kind"] == "untrusted" else None)(tb.banner()), timeout=30, what="the add-in's warning despite the fake banner")
        self.assertEqual(b["title"], "Nicht vom De-Mail-Gateway bestätigt – Vorsicht")
        self.assertEqual(b["count"], 1, "exactly one banner of the add-in")
        # The add-in may render the banner once more while the message settles: ask until it stands.
        geo = tb.wait(MAIN + IN_BROWSER + """
            const mb = about3Pane.messageBrowser.contentWindow.getMessagePaneBrowser();
            // What the message's own content sees: its fake, no shadow root, no banner of ours.
            const page = await inBrowser(mb, `
              const all = [...document.querySelectorAll("*")];
              return { fake: document.getElementById("demail-banner")?.textContent || null,
                       shadowRoots: all.filter((e) => e.shadowRoot).length,
                       ours: document.querySelectorAll("[data-demail-banner]").length,
                       chromeOnly: all.some((e) => "openOrClosedShadowRoot" in e) };
            `);
            const inner = await inBrowserSystem(mb, `${args[0]}
              if (!banners[0]) return null;
              const r = banners[0].getBoundingClientRect();
              return { x: r.x, y: r.y, w: r.width, h: r.height };
            `, [args[0]]);
            if (!inner) return null;
            const tabR = win.gTabmail.currentTabInfo.chromeBrowser.getBoundingClientRect();
            const msgR = about3Pane.messageBrowser.getBoundingClientRect();
            const paneR = mb.getBoundingClientRect();
            const dpr = win.devicePixelRatio;
            const x = tabR.x + msgR.x + paneR.x + inner.x, y = tabR.y + msgR.y + paneR.y + inner.y;
            return { page, rect: { x: Math.round(x * dpr) + 8, y: Math.round(y * dpr) + 2, w: Math.round(inner.w * dpr) - 10, h: Math.round(inner.h * dpr) - 4 } };
        """, FIND_BANNER, timeout=20, what="the warning's place on the screen")
        self.assertEqual(geo["page"], {"fake": "De-Mail – vom De-Mail-Gateway bestätigt", "shadowRoots": 0, "ours": 0, "chromeOnly": False}, geo)
        png = tb.shot(SHOTS / "chain-forged-banner-warning.png", tb.main_handle())
        rect = geo["rect"]
        self.assertGreater(rect["w"] * rect["h"], 2000, rect)
        warn_bg, n = count_colour(png, rect, hex_rgb("#FDECEA"), tolerance=12)
        fake_bg, _ = count_colour(png, rect, hex_rgb("#2E7D32"), tolerance=30)
        self.assertGreater(warn_bg / n, 0.4, f"the warning's background is not on the screen: {warn_bg}/{n} px in {rect}")
        self.assertLess(fake_bg / n, 0.02, f"the fake banner covers the warning: {fake_bg}/{n} px in {rect}")


class GuidedPairingTest(unittest.TestCase):
    """First run without IT pre-provisioning: the add-in opens its guided pairing page,
    requests a pairing, shows the code and polls until the user approves it in the
    helper (`demail pair approve CODE`); then it takes the policy from the helper."""

    @classmethod
    def setUpClass(cls):
        if not XPI.exists():
            raise unittest.SkipTest(f"{XPI} missing: run scripts/build-xpi")
        cls.h = Harness(XPI, managed={"helper_discovery": "auto"}, helper_policy=CHAIN_POLICY, auto_approve=False)
        try:
            cls.tb = TB(cls.h.m)
            cls.tb.addon_ready()
        except BaseException:
            cls.h.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.h.close()

    def page(self, script):
        return self.tb.wait(MAIN + IN_BROWSER + """
            const t = win.gTabmail.tabInfo.find(t => t.browser?.currentURI?.spec.includes("/options/options.html?firstrun=1"));
            if (!t || !t.browser.browsingContext?.currentWindowGlobal) return null;
            return await inBrowser(t.browser, args[0]);
        """, script, timeout=30, what="pairing page")

    def test_first_run_pairing_with_poll(self):
        h, tb = self.h, self.tb
        code = self.page("const c = document.getElementById('pair-code').textContent; return document.getElementById('pairing').dataset.state === 'waiting' && c ? c : null;")
        self.assertRegex(code, r"^[A-Z0-9]{4}-[A-Z0-9]{4}$")
        self.assertIn(code, self.page("return document.getElementById('pair-status').textContent || null;"))
        pending = json.loads(h.helper.cli("pair", "list"))["pairings"]
        self.assertEqual([(p["status"], p["code"]) for p in pending], [("pending", code)])
        tb.shot(SHOTS / "pairing-first-run.png", tb.main_handle())
        time.sleep(1.5)  # the page keeps polling while nobody approved
        self.assertEqual(self.page("return document.getElementById('pairing').dataset.state;"), "waiting")
        h.helper.cli("pair", "approve", code)
        self.page("return document.getElementById('pairing').dataset.state === 'paired' || null;")
        src = self.page("const s = document.getElementById('policy-source'); return s.dataset.source === 'helper' ? s.textContent : null;")
        self.assertEqual(src, "Die De-Mail-Regeln kommen vom De-Mail-Helfer (Richtlinie Ihrer IT).")


MAIN_BANNER_TIMELINE = """
    const win = Services.wm.getMostRecentWindow("mail:3pane");
    const mb = win.gTabmail.currentAbout3Pane.messageBrowser.contentWindow.getMessagePaneBrowser();
    if (!mb || !mb.browsingContext?.currentWindowGlobal) return null;
    return mb.browsingContext.currentWindowGlobal.getActor("MarionetteCommands").executeScript(`${args[0]}
      const t = banners[0]?.querySelector("[data-field=timeline]");
      if (!t) return null;
      return { status: t.dataset.status, text: t.innerText, steps: [...t.querySelectorAll("li[data-step]")].map(li => ({ step: li.dataset.step, done: li.dataset.done, text: li.textContent,
               checks: [...li.querySelectorAll("li[data-check]")].map(c => ({ check: c.dataset.check, text: c.textContent })) })) };
    `, [], { sandboxName: "system", newSandbox: false });
"""



def MAIN_BANNER_TIMELINE_WITH(check: str) -> str:
    """The timeline once a receipt with `check` is shown (the banner is rendered anew
    when the message is shown again)."""
    return MAIN_BANNER_TIMELINE.replace("if (!t) return null;", f"if (!t || !t.querySelector('[data-check={check}]')) return null;")


# Marking without the add-in (issue 18): what IT ships, read from the shipped files.
KEYWORD_SIEVE = ROOT / "installer/linux/gateway/files/demail-keywords.sieve"
DESKTOP_POLICIES = ROOT / "installer/linux/desktop/files/policies.json"


def addin_tags() -> dict[str, tuple[str, str]]:
    """The add-in's tags (lib/constants.js TAGS) with their German names (_locales/de):
    {key: (name, colour)}. The policy must define the same, so Thunderbird looks the same
    with and without the add-in."""
    addin = ROOT / "addin/thunderbird"
    names = json.loads((addin / "_locales/de/messages.json").read_text())
    found = re.findall(r'key: "([^"]+)", labelKey: "([^"]+)", color: "(#[0-9A-Fa-f]{6})"', (addin / "lib/constants.js").read_text())
    return {key: (names[label]["message"], colour.upper()) for key, label, colour in found}


def gateway_delivered(raw: bytes, verdict: str) -> bytes:
    """A message as the gateway hands it to Dovecot: its Authentication-Results field on
    top (authserv-id = the name in the shipped keyword script, gateway/src/border.rs)."""
    ar = f'Authentication-Results: gw.musterstadt.de; demail-integrity={verdict} header.a="sha256/rsa" policy.signer="CN=DMDA Simulator Signatur"\r\n'
    return ar.encode() + raw


class MarkingWithoutAddinTest(unittest.TestCase):
    """Thunderbird WITHOUT the add-in: Dovecot's Pigeonhole runs the shipped keyword script
    at LMTP delivery, Thunderbird reads the shipped desktop policy from its installation's
    distribution/policies.json (only its `Preferences`: tag names, colours, table view) and
    shows a De-Mail's row in the tag colour. DEMAIL_TAG_POLICY=0 leaves the policy out (the
    negative check: the keyword still arrives, but nothing is coloured)."""

    as_text = False  # the Preferences policy as JSON text, as the MSI writes it (REG_SZ)
    shot = "inbox-marked-without-addin.png"

    @classmethod
    def setUpClass(cls):
        # scripts/setup test installs dovecot-sieve: a missing sievec is a broken setup, not a skip.
        if not shutil.which("sievec"):
            raise RuntimeError("sievec missing: scripts/setup test (dovecot-sieve)")
        SHOTS.mkdir(parents=True, exist_ok=True)
        cls.want = addin_tags()
        prefs = json.loads(DESKTOP_POLICIES.read_text())["policies"].get("Preferences", {})
        policies = {"Preferences": json.dumps(prefs) if cls.as_text else prefs} if os.environ.get("DEMAIL_TAG_POLICY", "1") != "0" else {}
        # The harness's user.js sets the table view itself; here the policy must.
        cls.h = Harness(None, policies=policies, sieve_before=KEYWORD_SIEVE, prefs={"mail.threadpane.listview": None},
                        keep=bool(os.environ.get("DEMAIL_KEEP")))
        try:
            cls.tb = TB(cls.h.m)
            d = cls.h.dovecot
            d.deliver(gateway_delivered(fixture("demail/01-buerger-anfrage-normal.eml"), "pass"))
            d.deliver(gateway_delivered(fixture("demail/03-bescheid-alle-optionen-anhang.eml"), 'fail reason="signature.invalid"'))
            d.deliver(fixture("email/03-intern-kollegen.eml"))
            cls.tb.login()
            cls.tb.wait_messages(3)
        except BaseException:
            cls.h.close()
            raise

    @classmethod
    def tearDownClass(cls):
        h = getattr(cls, "h", None)
        if h:
            (SHOTS.parent / "thunderbird-marking-without-addin.log").write_text(h.tb.log())
            h.close()

    def test_1_keywords_set_by_the_sieve_script_reach_thunderbird_without_the_add_in(self):
        tb = self.tb
        addon = tb.js("""
            const { AddonManager } = ChromeUtils.importESModule("resource://gre/modules/AddonManager.sys.mjs");
            return (await AddonManager.getAllAddons()).filter(a => a.type == "extension" && !a.isBuiltin && !a.isSystem).map(a => a.id);
        """)
        self.assertNotIn(ADDON_ID, addon)
        self.assertEqual(sorted(self.h.dovecot.keywords().values()), [[], ["$demail"], ["$demail", "$demail-warning"]])
        kw = {m["subject"]: sorted(k for k in m["keywords"] if k.startswith("$demail")) for m in tb.folder_messages()}
        self.assertEqual(kw, {
            "Anfrage zur Sperrmüllabholung": ["$demail"],
            "Grundsteuerbescheid 2027, Kassenzeichen 4711.0815.2027": ["$demail", "$demail-warning"],
            "[P] Frage zur KFZ-Zulassung": [],
        })

    def test_2_tags_named_and_coloured_by_the_enterprise_policy(self):
        self.assertEqual(self.want, {
            "$demail": ("De-Mail", "#C2185B"), "$demail-receipt": ("De-Mail-Bestätigung", "#00796B"),
            "$demail-notification": ("De-Mail-Meldung", "#5D4037"), "$demail-warning": ("De-Mail-Warnung", "#BF360C"),
        })
        tags = {t["key"]: (t["tag"], t["color"].upper()) for t in self.tb.tags()}
        self.assertEqual({k: tags.get(k) for k in self.want}, self.want, "Thunderbird's tags (policy Preferences) = the add-in's")
        # Default branch, so a caseworker may still recolour a tag.
        self.assertFalse(self.tb.js('return Services.prefs.prefHasUserValue("mailnews.tags.$demail.color");'))

    def test_3_the_de_mail_rows_show_the_tag_colour_on_screen(self):
        tb = self.tb
        self.assertEqual(tb.js('return Services.prefs.getIntPref("mail.threadpane.listview");'), 1, "table view from the policy")
        tb.clear_selection()
        tb.show_folder("INBOX")
        time.sleep(1)
        png = tb.shot(SHOTS / self.shot, tb.main_handle())
        demail, warning = hex_rgb(self.want["$demail"][1]), hex_rgb(self.want["$demail-warning"][1])
        rows = {
            "demail": tb.thread_row_rect("Anfrage zur Sperrm"),
            "warning": tb.thread_row_rect("Grundsteuerbescheid 2027"),
            "plain": tb.thread_row_rect("[P] Frage zur KFZ-Zulassung"),
        }
        # Tolerance 20: the text is drawn in exactly the tag colour; Thunderbird's orange
        # "new message" diamond (#F97518) in every unread row stays out of it.
        counts = {name: {c: count_colour(png, r, rgb, tolerance=20)[0] for c, rgb in (("demail", demail), ("warning", warning))} for name, r in rows.items()}
        TIMINGS[f"{type(self).__name__}: pixels per row in the $demail/$demail-warning colour"] = json.dumps(counts)
        print(f"\npixels in the tag colours per row: {counts} (rows {rows})", file=sys.stderr)
        # The De-Mail row is written in the De-Mail colour, the unconfirmed one in the
        # warning colour (the warning tag sorts first: policy ordinal), the e-mail in neither.
        self.assertGreater(counts["demail"]["demail"], 80, counts)
        self.assertGreater(counts["warning"]["warning"], 80, counts)
        self.assertLess(counts["warning"]["demail"], 10, counts)
        self.assertLess(counts["plain"]["demail"] + counts["plain"]["warning"], 10, counts)


class MarkingWithoutAddinJsonTextTest(MarkingWithoutAddinTest):
    """The same with the Preferences policy as one JSON text: what the MSI writes to
    HKLM\\SOFTWARE\\Policies\\Mozilla\\Thunderbird, value Preferences (REG_SZ), and IT
    enters in the GPO; Thunderbird's policy schema accepts JSON text for it."""

    as_text = True
    shot = "inbox-marked-without-addin-json-text.png"


@unittest.skipUnless(os.environ.get("DEMAIL_BENCH"), "benchmark: set DEMAIL_BENCH=1")
class FirstSyncBenchmark(unittest.TestCase):
    """First sync of a folder with 2,000 messages (200 De-Mails): classification and
    tagging finished, measured from the moment Thunderbird has all headers."""

    N, DEMAILS = 2000, 200

    @classmethod
    def setUpClass(cls):
        if not XPI.exists():
            raise unittest.SkipTest(f"{XPI} missing: run scripts/build-xpi")
        demail = fixture("demail/02-versand-eingang-private-id-qp.eml")
        mail = fixture("email/04-newsletter-html.eml")

        def before(h: Harness):
            with imaplib.IMAP4("127.0.0.1", h.dovecot.imap_port) as m:
                m.login(USER, "x")
                m.create("Ablage")
                m.subscribe("Ablage")
                for i in range(cls.N):
                    raw = demail if i % (cls.N // cls.DEMAILS) == 0 else mail
                    raw = raw.replace(b"Message-ID: <", f"Message-ID: <bench{i}.".encode(), 1)
                    # Read mail of an existing archive folder: Thunderbird does not
                    # report it as new, so this measures the first sync itself.
                    m.append("Ablage", "(\\Seen)", None, raw)

        # DEMAIL_BENCH=offline: Thunderbird keeps messages offline (its default for IMAP),
        # so the add-in reads them from the local store instead of the server.
        offline = os.environ.get("DEMAIL_BENCH") == "offline"
        cls.h = Harness(XPI, managed={"policy": POLICY}, before_thunderbird=before,
                        prefs={"mail.server.server1.offline_download": offline})
        cls.tb = TB(cls.h.m)
        cls.tb.addon_ready()

    @classmethod
    def tearDownClass(cls):
        cls.h.close()

    def test_first_sync_2000(self):
        tb = self.tb
        tb.login()
        tb.wait(INBOX_JS + """
            const win = Services.wm.getMostRecentWindow("mail:3pane");
            const f = inbox.server.rootFolder.getChildNamed("Ablage");
            if (!f) { inbox.server.performExpand(win.msgWindow); return false; }
            win.gTabmail.currentAbout3Pane.displayFolder(f);
            return true;
        """, timeout=60, what="folder Ablage")
        tb.wait(INBOX_JS + "return [...inbox.server.rootFolder.getChildNamed('Ablage').messages].length >= args[0];", self.N, timeout=120, what="all headers")
        t0 = time.time()
        tb.wait(INBOX_JS + """
            const l = [...inbox.server.rootFolder.getChildNamed('Ablage').messages];
            return l.filter(h => h.getStringProperty("keywords").includes("$demail")).length >= args[0];
        """, self.DEMAILS, timeout=120, interval=0.25, what="all De-Mails tagged")
        TIMINGS[f"first sync {self.N} messages: all headers → all De-Mails tagged (s)"] = time.time() - t0
        time.sleep(1)
        lines = [l for l in self.h.tb.log().splitlines() if "demail: first sync" in l and "Ablage" in l]
        TIMINGS["first sync log lines"] = lines
        import re

        scans = [int(m.group(1)) for l in lines if (m := re.search(r"in (\d+) ms", l))]
        self.assertTrue(scans, "the add-in logged its first sync")
        if os.environ.get("DEMAIL_BENCH") == "offline":
            self.assertLess(max(scans), 10000, lines)


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


@unittest.skipUnless(os.environ.get("DEMAIL_BENCH"), "benchmark: set DEMAIL_BENCH=1")
class ComposeAndSendBenchmark(unittest.TestCase):
    """What a caseworker waits for, in real Thunderbird (issue 13's targets, printed with
    the goal; a benchmark, so it reports and does not fail on a miss):
    - wasm instantiate and policy parse in the background page (goal 40 ms);
    - compose popup opened → first verdict rendered (goal 150 ms median);
    - Send of a De-Mail with a 10 MB attachment → compose window closed after the
      helper's 202 (goal 3 s median)."""

    POPUPS, RESTARTS, SENDS = 15, 5, 5
    BIG_POLICY = {**POLICY, "rules": {**POLICY["rules"], "max_size": "20 MiB"}}

    @classmethod
    def setUpClass(cls):
        if not XPI.exists():
            raise unittest.SkipTest(f"{XPI} missing: run scripts/build-xpi")
        if not helper_bins():
            raise unittest.SkipTest("helper binaries missing: cargo build -p demail-cli -p demail-helper")
        cls.h = Harness(XPI, managed={"policy": cls.BIG_POLICY}, helper_policy=cls.BIG_POLICY)
        try:
            cls.tb = TB(cls.h.m)
            cls.host = cls.tb.addon_ready()
            cls.tb.login()
        except BaseException:
            cls.h.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.h.close()

    def tearDown(self):
        try:
            self.tb.close_dialogs()
            if self.tb.compose_count():
                self.tb.close_compose()
        except Exception:
            pass

    def report(self, name, values, goal, unit):
        med = _median(values)
        TIMINGS[f"{name} ({unit}, median of {len(values)})"] = med
        TIMINGS[f"{name} ({unit}, all)"] = [round(v, 1) for v in values]
        verdict = "erreicht / met" if med <= goal else "VERFEHLT / MISSED"
        print(f"\n{name}: median {med:.1f} {unit}, goal ≤ {goal} {unit}: {verdict}; all {[round(v, 1) for v in values]}", file=sys.stderr)

    def startup(self):
        self.tb.open_options(self.host)
        r = self.tb.options("return (window.wrappedJSObject || window).browser.runtime.sendMessage({ type: 'ping' }).then(r => JSON.stringify(r.result.startup))")
        self.tb.close_options()
        return json.loads(r)

    def test_1_wasm_instantiate_and_policy_parse(self):
        total = []
        for i in range(self.RESTARTS):
            if i:
                # A fresh background page: disable and enable the add-in.
                self.tb.js("""
                    const { AddonManager } = ChromeUtils.importESModule("resource://gre/modules/AddonManager.sys.mjs");
                    const a = await AddonManager.getAddonByID(args[0]);
                    await a.disable(); await a.enable(); return true;
                """, "demail-addin@open-demail.de")
                self.host = self.tb.addon_ready()
            s = self.startup()
            self.assertIsNotNone(s, "the background recorded its start-up")
            total.append(s["instantiate_ms"] + s["policy_ms"])
        self.report("wasm instantiate + policy parse in the background page", total, 40, "ms")

    def test_2_popup_first_verdict(self):
        tb = self.tb
        tb.open_compose(to="Erika Schmidt <erika.schmidt@buerger.de-mail.de>", subject="Messung")
        tb.wait_button("De-Mail")
        times = []
        for _ in range(self.POPUPS):
            t0 = tb.js(COMPOSE + "const t = Date.now(); cw.document.getElementById(args[0]).click(); return t;", tb.button_id())
            tb.wait(COMPOSE + IN_BROWSER + """
                const b = [...cw.document.querySelectorAll("panel browser, .webextension-popup-browser")].find(b => b.currentURI?.spec.includes("/popup/compose.html"));
                if (!b || !b.browsingContext?.currentWindowGlobal) return null;
                return await inBrowser(b, "return document.body?.dataset.ready === '1'");
            """, what="compose popup", interval=0.05)
            shown = int(tb.popup("return document.body.dataset.firstVerdictAt;"))
            times.append(shown - t0)
            tb.close_popup()
            time.sleep(0.3)
        self.report("compose popup opened → first verdict rendered", times, 150, "ms")

    def test_3_send_10mb_attachment(self):
        tb, h = self.tb, self.h
        blob = h.tmp / "anlage-10mb.pdf"
        blob.write_bytes(b"%PDF-1.4\n" + os.urandom(10 * 1000 * 1000))
        times = []
        for i in range(self.SENDS):
            tb.open_compose(to="Erika Schmidt <erika.schmidt@buerger.de-mail.de>", subject=f"Bescheid mit großer Anlage {i}")
            tb.wait_button("De-Mail")
            tb.open_popup()
            tb.popup("document.getElementById('opt-confirmation-of-dispatch').click(); return true;")
            time.sleep(0.5)
            tb.close_popup()
            tb.attach_file(blob)
            time.sleep(0.5)
            t0 = time.time()
            tb.press_send()
            tb.wait('return [...Services.wm.getEnumerator("msgcompose")].filter(w => !w.closed).length === 0;', timeout=60, interval=0.02, what="compose closed after hand-off")
            times.append(time.time() - t0)
        token = h.helper.token()
        out = h.helper.api("/v1/outbox?limit=100", token)["result"]["messages"]
        self.assertEqual(len([m for m in out if m["subject"].startswith("Bescheid mit großer Anlage")]), self.SENDS)
        self.report("Send of a De-Mail with a 10 MB attachment → compose closed", times, 3, "s")


if __name__ == "__main__":
    unittest.main(verbosity=2)
