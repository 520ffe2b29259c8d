#!/usr/bin/env python3
"""Generate hostile/12-riesiger-kopf.eml: a De-Mail whose header block holds 5,000
Received: lines before the De-Mail headers. Deterministic; the output is committed,
so run this only to regenerate it (the expected result is in the .json next to it).

    python3 tests/corpus/hostile/make_large.py
"""
import os

N = 5000
here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "12-riesiger-kopf.eml")

lines = []
for i in range(N, 0, -1):
    lines.append(
        f"Received: from r{i:04d}.provider.de-mail.de\r\n"
        f"\tby r{i + 1:04d}.provider.de-mail.de id R{i:06d}; Fri, 27 Nov 2026 10:32:12 +0100"
    )
lines += [
    "From: Max Mustermann <max.mustermann@buerger.de-mail.de>",
    "To: poststelle@musterstadt.de-mail.de",
    "Subject: Viele Umwege",
    "Date: Fri, 27 Nov 2026 10:32:12 +0100",
    "Message-ID: <riesig-5000@buerger.de-mail.de>",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=UTF-8",
    "X-de-mail-message-type: normal",
    "X-de-mail-auth-level: normal",
    "X-de-mail-confirmation-of-dispatch: yes",
    "X-de-mail-private-id: RIESIG-5000",
]
data = ("\r\n".join(lines) + "\r\n\r\nDiese Nachricht hat einen sehr langen Kopf.\r\n").encode("ascii")
assert len(data) < 1_000_000, len(data)
with open(out, "wb") as f:
    f.write(data)
print(f"{out}: {len(data)} bytes")
