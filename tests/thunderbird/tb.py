"""Thunderbird actions through Marionette (chrome context): accounts, folders, the
3-pane, compose windows, the add-in's pages (read through Marionette's own window
actor, since extension pages run in another process), screenshots and pixels."""

from __future__ import annotations

import json
import struct
import time
import zlib

from harness import ADDON_ID, Marionette, MarionetteError

MS = 'const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");\n'
INBOX = MS + 'const server = MailServices.accounts.getIncomingServer("server1");\nconst inbox = server.rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox);\n'
MAIN = 'const win = Services.wm.getMostRecentWindow("mail:3pane");\nconst about3Pane = win.gTabmail.currentAbout3Pane;\n'
COMPOSE = 'const cw = [...Services.wm.getEnumerator("msgcompose")].filter(w => !w.closed).pop();\n'
# Run a script inside a remote <browser> (extension page or message content).
IN_BROWSER = """
async function inBrowser(browser, script, args = []) {
  const actor = browser.browsingContext.currentWindowGlobal.getActor("MarionetteCommands");
  return actor.executeScript(script, args, { sandboxName: null, newSandbox: false });
}
async function inBrowserSystem(browser, script, args = []) {
  const actor = browser.browsingContext.currentWindowGlobal.getActor("MarionetteCommands");
  return actor.executeScript(script, args, { sandboxName: "system", newSandbox: false });
}
"""
# In a message's document, with the system principal (`inBrowserSystem`): the add-in's
# banners. The banner lives in a closed shadow root on an element in the top layer
# (display/banner.js); only chrome code reaches into it (`openOrClosedShadowRoot`), the
# message's own content cannot. Sets `banners` (the <aside>s) and `hosts`.
FIND_BANNER = """
  const hosts = [...document.querySelectorAll(":popover-open")].filter((h) => h.openOrClosedShadowRoot?.querySelector("[data-demail-banner]"));
  const banners = hosts.map((h) => h.openOrClosedShadowRoot.querySelector("[data-demail-banner]"));
"""


class TB:
    def __init__(self, m: Marionette):
        self.m = m

    def js(self, script, *args):
        return self.m.js(script, *args)

    def wait(self, script, *args, timeout=30, interval=0.2, what="condition"):
        end = time.time() + timeout
        last = None
        while time.time() < end:
            try:
                last = self.js(script, *args)
            except MarionetteError as e:
                # Pages and windows come and go while we wait (a document without body
                # yet, a browser being swapped): try again until the deadline.
                last = f"error: {str(e).splitlines()[0]}"
            else:
                if last:
                    return last
            time.sleep(interval)
        raise TimeoutError(f"timed out waiting for {what}; last={last!r}")

    # ------------------------------------------------------------ add-in

    def addon_ready(self, timeout=30):
        return self.wait(
            """
            const { AddonManager } = ChromeUtils.importESModule("resource://gre/modules/AddonManager.sys.mjs");
            const a = await AddonManager.getAddonByID(args[0]);
            const policy = WebExtensionPolicy.getByID(args[0]);
            return a && a.isActive && policy ? policy.mozExtensionHostname : null;
            """,
            ADDON_ID,
            timeout=timeout,
            what="add-in active",
        )

    # ------------------------------------------------------------ mail

    def login(self):
        self.js(INBOX + MAIN + """
            server.password = "x";
            about3Pane.displayFolder(inbox);
            inbox.getNewMessages(win.msgWindow, null);
        """)

    def get_new_mail(self):
        self.js(INBOX + MAIN + "inbox.getNewMessages(win.msgWindow, null);")

    def folder_messages(self, folder="INBOX"):
        return self.js(MS + """
            const server = MailServices.accounts.getIncomingServer("server1");
            const f = args[0] === "INBOX" ? server.rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox) : server.rootFolder.getChildNamed(args[0]);
            return [...f.messages].map(h => ({ subject: h.mime2DecodedSubject, keywords: h.getStringProperty("keywords").split(" ").filter(Boolean), messageId: h.messageId, key: h.messageKey }));
        """, folder)

    def wait_messages(self, n, folder="INBOX", timeout=40):
        return self.wait(
            MS + """
            const server = MailServices.accounts.getIncomingServer("server1");
            const f = args[0] === "INBOX" ? server.rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox) : server.rootFolder.getChildNamed(args[0]);
            return f && [...f.messages].length >= args[1];
            """,
            folder, n, timeout=timeout, what=f"{n} messages in {folder}",
        )

    def tag_colour(self, key):
        return self.js(MS + "return MailServices.tags.getColorForKey(args[0]);", key)

    def tags(self):
        return self.js(MS + "return MailServices.tags.getAllTags().map(t => ({key: t.key, tag: t.tag, color: t.color}));")

    def select_message(self, subject_part):
        return self.js(INBOX + MAIN + """
            const hdr = [...inbox.messages].find(h => h.mime2DecodedSubject.startsWith(args[0]));
            if (!hdr) return false;
            about3Pane.threadTree.focus();
            about3Pane.selectMessage(hdr);
            return true;
        """, subject_part)

    def show_folder(self, name):
        """Show a folder of the IMAP account ("INBOX", "Sent", …) in the 3-pane."""
        return self.js(MS + MAIN + """
            const server = MailServices.accounts.getIncomingServer("server1");
            const f = args[0] === "INBOX" ? server.rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox) : server.rootFolder.getChildNamed(args[0]);
            if (!f) return false;
            about3Pane.displayFolder(f);
            return true;
        """, name)

    def select_in(self, folder, subject_part):
        """Select the first message of a folder whose subject starts with subject_part."""
        return self.js(MS + MAIN + """
            const server = MailServices.accounts.getIncomingServer("server1");
            const f = args[0] === "INBOX" ? server.rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox) : server.rootFolder.getChildNamed(args[0]);
            const hdr = f && [...f.messages].find(h => h.mime2DecodedSubject.startsWith(args[1]));
            if (!hdr) return false;
            about3Pane.displayFolder(f);
            about3Pane.threadTree.focus();
            about3Pane.selectMessage(hdr);
            return true;
        """, folder, subject_part)

    def addin_message(self, message):
        """Send a message to the add-in's dispatcher from one of its pages (a content tab
        with the options page is opened and closed for it)."""
        import json as _json
        host = self.addon_ready()
        self.open_options(host)
        try:
            r = self.options("return (window.wrappedJSObject || window).browser.runtime.sendMessage(JSON.parse(arguments[0])).then(r => JSON.stringify(r))", _json.dumps(message))
            return _json.loads(r)
        finally:
            self.close_options()

    def clear_selection(self):
        self.js(MAIN + "about3Pane.threadTree.selectedIndex = -1;")

    def banner(self, timeout=20):
        """The add-in's banner in the message pane, as {kind, title, fields}."""
        return self.wait(MAIN + IN_BROWSER + """
            const mb = about3Pane.messageBrowser.contentWindow.getMessagePaneBrowser();
            if (!mb || !mb.browsingContext?.currentWindowGlobal) return null;
            return await inBrowserSystem(mb, `${args[0]}
              const b = banners[0];
              if (!b) return null;
              const fields = {};
              for (const r of b.querySelectorAll("[data-field]")) fields[r.dataset.field] = r.querySelector("dd") ? r.querySelector("dd").textContent : r.textContent;
              return { kind: b.dataset.kind, title: b.querySelector(".title").textContent, fields, text: b.innerText, count: banners.length };
            `);
        """, FIND_BANNER, timeout=timeout, what="De-Mail banner")

    def no_banner(self):
        return self.js(MAIN + IN_BROWSER + """
            const mb = about3Pane.messageBrowser.contentWindow.getMessagePaneBrowser();
            return await inBrowserSystem(mb, `${args[0]} return document.readyState === "complete" && banners.length === 0 && document.body.innerText.length > 0`);
        """, FIND_BANNER)

    def thread_row_rect(self, subject_part):
        """Screen rect (CSS px in the main window) of a message's row in the thread pane."""
        return self.js(INBOX + MAIN + """
            const hdr = [...inbox.messages].find(h => h.mime2DecodedSubject.startsWith(args[0]));
            const index = about3Pane.gDBView.findIndexOfMsgHdr(hdr, true);
            about3Pane.threadTree.scrollToIndex(index);
            const row = about3Pane.threadTree.getRowAtIndex(index);
            const r = row.getBoundingClientRect();
            const b = win.gTabmail.currentTabInfo.chromeBrowser.getBoundingClientRect();
            return { x: Math.round(b.x + r.x), y: Math.round(b.y + r.y), w: Math.round(r.width), h: Math.round(r.height), dpr: win.devicePixelRatio };
        """, subject_part)

    # ------------------------------------------------------------ compose

    def open_compose(self, to="", cc="", subject="", body="Sehr geehrte Damen und Herren,\n\nTest.\n"):
        self.js(MS + """
            const [to, cc, subject, body] = args;
            const params = Cc["@mozilla.org/messengercompose/composeparams;1"].createInstance(Ci.nsIMsgComposeParams);
            const fields = Cc["@mozilla.org/messengercompose/composefields;1"].createInstance(Ci.nsIMsgCompFields);
            fields.to = to; fields.cc = cc; fields.subject = subject; fields.body = body;
            params.composeFields = fields;
            params.format = Ci.nsIMsgCompFormat.PlainText;
            params.identity = MailServices.accounts.getIdentity("id1");
            MailServices.compose.OpenComposeWindowWithParams(null, params);
        """, to, cc, subject, body)
        self.wait(COMPOSE + "return cw && cw.gLoadingComplete;", what="compose window")
        time.sleep(0.7)  # the compose window needs a moment after gLoadingComplete

    def open_reply_or_forward(self, subject_start, kind, to=()):
        """Reply to / forward a message of the inbox through Thunderbird's own compose code."""
        self.js(INBOX + MAIN + """
            const hdr = [...inbox.messages].find(h => h.mime2DecodedSubject.startsWith(args[0]));
            MailServices.compose.OpenComposeWindow(null, hdr, hdr.folder.getUriForMsg(hdr), Ci.nsIMsgCompType[args[1]],
              Ci.nsIMsgCompFormat.Default, MailServices.accounts.getIdentity("id1"), null, win.msgWindow);
        """, subject_start, kind)
        self.wait(COMPOSE + "return cw && cw.gLoadingComplete;", what="compose window")
        if to:
            self.js(COMPOSE + 'cw.addressRowAddRecipientsArray(cw.document.getElementById("addressRowTo"), args[0]);', list(to))
        time.sleep(0.7)

    def compose_count(self):
        return self.js('return [...Services.wm.getEnumerator("msgcompose")].filter(w => !w.closed).length;')

    def compose_fields(self):
        return self.js(COMPOSE + """
            if (!cw) return null;
            const f = Cc["@mozilla.org/messengercompose/composefields;1"].createInstance(Ci.nsIMsgCompFields);
            cw.Recipients2CompFields(f);
            return { to: f.to, cc: f.cc, bcc: f.bcc, subject: cw.document.getElementById("msgSubject").value };
        """)

    def compose_button(self):
        return self.js(COMPOSE + """
            const b = cw.document.getElementById(args[0]);
            return b ? { label: b.getAttribute("label"), title: b.getAttribute("tooltiptext"), badge: b.getAttribute("badge") || "" } : null;
        """, self.button_id())

    @staticmethod
    def button_id():
        wid = "".join(c if c.isalnum() or c in "-_" else "_" for c in ADDON_ID.lower())
        return f"{wid}-composeAction-toolbarbutton"

    def wait_button(self, label, timeout=15):
        return self.wait(COMPOSE + """
            const b = cw && cw.document.getElementById(args[0]);
            return b && b.getAttribute("label") === args[1] ? b.getAttribute("label") : null;
        """, self.button_id(), label, timeout=timeout, what=f"compose button {label!r}")

    def press_send(self):
        self.js(COMPOSE + 'cw.goDoCommand("cmd_sendNow");')

    def attach_file(self, path, name="anlage.pdf", content_type="application/pdf"):
        """Attach a file to the newest compose window, as the attach command would."""
        self.js("""
            const cw = [...Services.wm.getEnumerator("msgcompose")].filter(w => !w.closed).pop();
            const f = new FileUtils.File(args[0]);
            const a = Cc["@mozilla.org/messengercompose/attachment;1"].createInstance(Ci.nsIMsgAttachment);
            a.url = Services.io.newFileURI(f).spec; a.name = args[1]; a.size = f.fileSize; a.contentType = args[2];
            await cw.AddAttachments([a]);
        """, str(path), name, content_type)

    def close_compose(self):
        self.js(COMPOSE + "if (cw) { cw.gMsgCompose && (cw.gContentChanged = false); cw.ComposeCanClose = () => true; cw.close(); }")
        self.wait('return [...Services.wm.getEnumerator("msgcompose")].filter(w => !w.closed).length === 0;', what="compose closed")

    # compose-action popup (a panel with a remote <browser> in the compose window)

    def open_popup(self):
        self.js(COMPOSE + "cw.document.getElementById(args[0]).click();", self.button_id())
        return self.wait(COMPOSE + IN_BROWSER + """
            const b = [...cw.document.querySelectorAll("panel browser, .webextension-popup-browser")].find(b => b.currentURI?.spec.includes("/popup/compose.html"));
            if (!b || !b.browsingContext?.currentWindowGlobal) return null;
            return await inBrowser(b, "return document.body?.dataset.ready === '1'");
        """, what="compose popup")

    def popup(self, script, *args):
        return self.js(COMPOSE + IN_BROWSER + """
            const b = [...cw.document.querySelectorAll("panel browser, .webextension-popup-browser")].find(b => b.currentURI?.spec.includes("/popup/compose.html"));
            return await inBrowser(b, args[0], args.slice(1));
        """, script, *args)

    def popup_state(self):
        return self.popup("""
            return {
              mode: document.body.dataset.mode,
              verdict: document.body.dataset.verdict,
              explanation: [...document.querySelectorAll("#explanation p")].map(p => ({ code: p.dataset.code, text: p.textContent })),
              options: [...document.querySelectorAll("#options input")].map(i => ({ id: i.dataset.option, checked: i.checked, disabled: i.disabled, label: document.querySelector('label[for="' + i.id + '"]').textContent, why: i.getAttribute("aria-describedby") ? document.getElementById(i.getAttribute("aria-describedby")).textContent : null })),
              groups: Object.fromEntries([...document.querySelectorAll("[data-group]")].map(g => [g.dataset.group, [...g.querySelectorAll("li")].map(li => li.textContent)])),
            };
        """)

    def popup_snapshot_png(self):
        """PNG of the popup's content, drawn by the compositor (panels are not in window screenshots)."""
        data_url = self.js(COMPOSE + """
            const b = [...cw.document.querySelectorAll("panel browser, .webextension-popup-browser")].find(b => b.currentURI?.spec.includes("/popup/compose.html"));
            const r = b.getBoundingClientRect();
            const bmp = await b.browsingContext.currentWindowGlobal.drawSnapshot(null, 1, "white");
            const canvas = cw.document.createElementNS("http://www.w3.org/1999/xhtml", "canvas");
            canvas.width = bmp.width; canvas.height = bmp.height;
            canvas.getContext("2d").drawImage(bmp, 0, 0);
            return canvas.toDataURL("image/png");
        """)
        import base64

        return base64.b64decode(data_url.split(",", 1)[1])

    def close_popup(self):
        self.js(COMPOSE + """
            for (const p of cw.document.querySelectorAll("panel")) if (p.state === "open") p.hidePopup();
        """)

    # the add-in's dialog window (blocked / confirm / helper)

    def dialog(self, timeout=15):
        return self.wait(IN_BROWSER + """
            const w = [...Services.wm.getEnumerator(null)].find(w => !w.closed && w.document.documentURI.includes("extensionPopup") && w.document.querySelector("browser")?.currentURI?.spec.includes("/dialog/dialog.html"));
            if (!w) return null;
            const b = w.document.querySelector("browser");
            if (!b.browsingContext?.currentWindowGlobal) return null;
            return await inBrowser(b, `
              if (document.body?.dataset.ready !== "1") return null;
              return {
                kind: document.body.dataset.kind,
                heading: document.getElementById("heading").textContent,
                explanation: [...document.querySelectorAll("#explanation p")].map(p => ({ code: p.dataset.code, text: p.textContent })),
                fixes: [...document.querySelectorAll("#fixes button")].map(b => ({ id: b.dataset.fix, label: b.textContent })),
                text: document.body.innerText,
              };
            `);
        """, timeout=timeout, what="add-in dialog")

    def dialog_click(self, selector):
        return self.js(IN_BROWSER + """
            const w = [...Services.wm.getEnumerator(null)].find(w => !w.closed && w.document.documentURI.includes("extensionPopup") && w.document.querySelector("browser")?.currentURI?.spec.includes("/dialog/dialog.html"));
            return await inBrowser(w.document.querySelector("browser"), "document.querySelector(arguments[0]).click(); return true;", [args[0]]);
        """, selector)

    def dialog_handle(self):
        return self.m.handle_of('[...Services.wm.getEnumerator(null)].find(w => !w.closed && w.document.documentURI.includes("extensionPopup"))')

    def close_dialogs(self):
        self.js("""
            for (const w of [...Services.wm.getEnumerator(null)]) if (!w.closed && w.document.documentURI.includes("extensionPopup")) w.close();
        """)

    # options page in a content tab

    def open_options(self, host):
        self.js(MAIN + "win.gTabmail.openTab('contentTab', { url: args[0] });", f"moz-extension://{host}/options/options.html")
        return self.wait(MAIN + IN_BROWSER + """
            const t = win.gTabmail.tabInfo.find(t => t.browser?.currentURI?.spec.includes("/options/options.html"));
            if (!t || !t.browser.browsingContext?.currentWindowGlobal) return null;
            return await inBrowser(t.browser, "return document.querySelector('#unreachable_helper')?.value ? true : null");
        """, what="options page")

    def options(self, script, *args):
        return self.js(MAIN + IN_BROWSER + """
            const t = win.gTabmail.tabInfo.find(t => t.browser?.currentURI?.spec.includes("/options/options.html"));
            return await inBrowser(t.browser, args[0], args.slice(1));
        """, script, *args)

    def close_options(self):
        self.js(MAIN + """
            const t = win.gTabmail.tabInfo.find(t => t.browser?.currentURI?.spec.includes("/options/options.html"));
            if (t) win.gTabmail.closeTab(t);
        """)

    def shot(self, path, handle) -> bytes:
        """Screenshot one chrome window, then return to the main window (a window that
        closes later must not stay Marionette's current one)."""
        main = self.main_handle()
        try:
            png = self.m.screenshot(handle)
        finally:
            self.m.command("WebDriver:SwitchToWindow", {"handle": main})
        path.write_bytes(png)
        return png

    def main_handle(self):
        return self.m.handle_of('Services.wm.getMostRecentWindow("mail:3pane")')

    def compose_handle(self):
        return self.m.handle_of('[...Services.wm.getEnumerator("msgcompose")].filter(w => !w.closed).pop()')


# ------------------------------------------------------------------ PNG pixels


def png_pixels(data: bytes, max_rows: int | None = None):
    """Decode an 8-bit RGB/RGBA PNG (what Gecko writes): returns (width, height, rows)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        n, typ = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if typ == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and ctype in (2, 6), (depth, ctype)
            bpp = 4 if ctype == 6 else 3
        elif typ == b"IDAT":
            idat += chunk
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(min(height, max_rows or height)):
        f = raw[i]
        line = bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[j:j + 3]) for j in range(0, stride, bpp)])
        prev = line
    return width, height, rows


def count_colour(png: bytes, rect, rgb, tolerance=40):
    w, h, rows = png_pixels(png, max_rows=rect["y"] + rect["h"])
    h = min(h, len(rows))
    x0, y0 = max(0, rect["x"]), max(0, rect["y"])
    x1, y1 = min(w, rect["x"] + rect["w"]), min(h, rect["y"] + rect["h"])
    n = 0
    for y in range(y0, y1):
        for x in range(x0, x1):
            p = rows[y][x]
            if all(abs(p[k] - rgb[k]) <= tolerance for k in range(3)):
                n += 1
    return n, (x1 - x0) * (y1 - y0)


def hex_rgb(h: str):
    h = h.lstrip("#")
    return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))
