#!/usr/bin/env python3
"""Writes the seal fixtures (NAME.eml + NAME.json) and policy.toml in this directory.

An independent implementation of the canonical form in docs/core-api.md (Python and
`cryptography`, as an add-in would do it with WebCrypto), so the Rust verifier is checked
against a second reading of the spec. The key is a fixed TEST key, not a secret.
Run: python3 tests/seal/gen.py
"""
import base64, json, os, re
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

HERE = os.path.dirname(os.path.abspath(__file__))
SK = Ed25519PrivateKey.from_private_bytes(bytes([1] * 32))
PK = SK.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
KID = "gw-test"


def fields(head):
    out = []
    for line in re.split(r"\r\n(?![ \t])", head):
        if not line:
            continue
        name, _, value = line.partition(":")
        out.append((name, value.replace("\r\n", "").strip()))
    return out


def canonical(head, kid):
    picked = {}
    for name, value in fields(head):
        n = name.strip().lower()
        if n in ("message-id", "from", "date") or n.startswith("x-de-mail-"):
            picked.setdefault(n, value)
    text = f"x-demail-gateway-seal:v=1; kid={kid}\r\n"
    for n in sorted(picked):
        text += f"{n}:{picked[n]}\r\n"
    return text


def seal(head, kid=KID, key=SK):
    sig = base64.b64encode(key.sign(canonical(head, kid).encode())).decode()
    return f"X-Demail-Gateway-Seal: v=1; kid={kid}; s={sig}\r\n"


DEMAIL = (
    "From: Erika Muster <erika@buerger.de-mail.de>\r\n"
    "To: poststelle@musterstadt.de-mail.de\r\n"
    "Subject: Widerspruch\r\n"
    "Date: Fri, 27 Nov 2026 10:00:00 +0100\r\n"
    "Message-ID: <a1@dmda-sim.de-mail.de>\r\n"
    "X-de-mail-message-id: <19ab@dmda-sim.de-mail.de>\r\n"
    "X-de-mail-originator-provider: dmda-sim.de-mail.de\r\n"
    "X-de-mail-auth-level: high\r\n"
    "X-de-mail-message-type: normal\r\n"
    "X-de-mail-private: yes\r\n"
)
RECEIPT = (
    "From: Versandbestaetigung@dmda-sim.de-mail.de\r\n"
    "To: peter.meier@musterstadt.de-mail.de\r\n"
    "Subject: *Versandbestätigung* Bescheid\r\n"
    "Date: Fri, 27 Nov 2026 10:01:00 +0100\r\n"
    "Message-ID: <r1@dmda-sim.de-mail.de>\r\n"
    "X-de-mail-message-type: confirmation of dispatch\r\n"
    "X-de-mail-private-id: DM-20261127-100000-0102030405060708\r\n"
)
BODY = "\r\nText\r\n"
other = Ed25519PrivateKey.from_private_bytes(bytes([2] * 32))

cases = {
    "01-valid-de-mail": (seal(DEMAIL) + DEMAIL, {"sealed": True, "kid": KID, "code": "seal.valid"}, DEMAIL),
    "02-valid-folded-subject-changed": (
        seal(DEMAIL) + DEMAIL.replace("From: Erika Muster <", "From: Erika Muster\r\n <").replace("Widerspruch", "Anderer Betreff"),
        {"sealed": True, "code": "seal.valid"}, None),
    "03-forged-auth-level": (seal(DEMAIL) + DEMAIL.replace("auth-level: high", "auth-level: normal"),
                             {"sealed": False, "kid": KID, "code": "seal.bad_signature"}, None),
    "04-forged-header-on-top": ("X-de-mail-message-type: confirmation of receipt\r\n" + seal(DEMAIL) + DEMAIL,
                                {"sealed": False, "code": "seal.bad_signature"}, None),
    "05-internet-mail-forged-headers": (DEMAIL.replace("erika@buerger.de-mail.de", "betrueger@example.org"),
                                        {"sealed": False, "kid": None, "code": "seal.missing"}, None),
    "06-two-seals": (seal(DEMAIL) + seal(DEMAIL) + DEMAIL, {"sealed": False, "code": "seal.multiple"}, None),
    "07-unknown-key-id": (seal(DEMAIL, "gw-alt", other) + DEMAIL,
                          {"sealed": False, "kid": "gw-alt", "code": "seal.unknown_key"}, None),
    "08-malformed": ("X-Demail-Gateway-Seal: v=2; kid=gw-test; s=AAAA\r\n" + DEMAIL, {"sealed": False, "code": "seal.malformed"}, None),
    "09-known-kid-wrong-key": (seal(DEMAIL, KID, other) + DEMAIL, {"sealed": False, "code": "seal.bad_signature"}, None),
    "10-valid-receipt": (seal(RECEIPT) + RECEIPT, {"sealed": True, "code": "seal.valid"}, RECEIPT),
}

for name, (head, expected, canon_of) in cases.items():
    expected = dict(expected, required=True)
    if canon_of is not None:
        expected["canonical"] = canonical(canon_of, KID)
    with open(os.path.join(HERE, name + ".eml"), "w", newline="") as f:
        f.write(head + BODY)
    with open(os.path.join(HERE, name + ".json"), "w") as f:
        json.dump(expected, f, ensure_ascii=False, indent=2)
        f.write("\n")

with open(os.path.join(HERE, "policy.toml"), "w") as f:
    f.write("# Test policy for the seal fixtures (tests/seal/gen.py); the key is a TEST key.\n")
    f.write("version = 1\n[seal]\n")
    f.write(f'public_keys = ["{KID}:{base64.b64encode(PK).decode()}"]\nrequired = true\n')
