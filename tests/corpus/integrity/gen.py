#!/usr/bin/env python3
"""Writes the integrity fixtures (NAME.eml + NAME.json), policy.toml here and
tests/cases/integrity.json.

An independent implementation of X-de-mail-integrity as docs/gateway.md defines it
(Python and `cryptography`: RFC 5322 field split, topmost instance per h= name, b= emptied,
simple body canonicalisation; RSA PKCS#1 v1.5, RSASSA-PSS, ECDSA P-256/P-384), so the
Rust verifier is checked against a second reading of the spec. Keys are made on each run
and thrown away; the CAs are TEST CAs. Expectations hold at the runners' fixed time,
2026-11-27T10:32:12Z. Run: python3 tests/corpus/integrity/gen.py
"""
import base64, datetime, json, os, re
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, "..", "..", "cases", "integrity.json")
UTC = datetime.timezone.utc
D = lambda y, m, d: datetime.datetime(y, m, d, tzinfo=UTC)
HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
TR_HEADERS = [
    "From", "Date", "Message-ID", "Subject", "Reply-To", "X-de-mail-confirmation-of-dispatch",
    "X-de-mail-confirmation-of-receipt", "X-de-mail-confirmation-of-retrieve", "X-de-mail-authoritative",
    "X-de-mail-private", "X-de-mail-sender", "X-de-mail-chosen-recipient", "X-de-mail-auth-mechanism",
    "X-de-mail-auth-level", "X-de-mail-originator-provider", "X-de-mail-message-type", "X-de-mail-version",
    "X-de-mail-private-id", "X-de-mail-message-id", "X-de-mail-account-holder",
]


def key(kind):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1() if kind == "p256" else ec.SECP384R1())


def name(cn, o):
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, o),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def cert(subject, pub, issuer, issuer_key, serial, nb, na, ca):
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub).serial_number(serial)
         .not_valid_before(nb).not_valid_after(na)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    return b.sign(issuer_key, hashes.SHA256())


QCA_KEY = key("rsa")
QCA_NAME = name("Test-QCA Musterprovider", "Test-QCA")
QCA = cert(QCA_NAME, QCA_KEY.public_key(), QCA_NAME, QCA_KEY, 1, D(2025, 1, 1), D(2035, 1, 1), True)
OTHER_KEY = key("p256")
OTHER_NAME = name("Fremde CA", "Unbekannt")
OTHER = cert(OTHER_NAME, OTHER_KEY.public_key(), OTHER_NAME, OTHER_KEY, 2, D(2025, 1, 1), D(2035, 1, 1), True)


def signer(kind, serial, cn="DMDA Signatur", issuer=(QCA_NAME, QCA_KEY), nb=D(2026, 1, 1), na=D(2027, 12, 31)):
    k = key(kind)
    c = cert(name(cn, "Musterprovider"), k.public_key(), issuer[0], issuer[1], serial, nb, na, False)
    return k, c


def fields(head):
    """RFC 5322 §2.2: a field runs until a line not starting with SP/HT."""
    out = []
    for line in re.split(r"(?<=\r\n)(?![ \t])", head):
        if line:
            out.append((line.split(":", 1)[0].strip(), line))
    return out


def canon_body(body):
    while body.endswith("\r\n\r\n"):
        body = body[:-2]
    if body in ("", "\r\n"):
        return "\r\n"
    return body if body.endswith("\r\n") else body + "\r\n"


def sign(head, body, alg, k=None, c=None, cert_header=True):
    """`head` ends with CRLF; returns the new header block to put on top. Bare LF counts
    as CRLF (the wire form)."""
    head, body = (re.sub(r"(?<!\r)\n", "\r\n", x) for x in (head, body))
    hname, _, kind = alg.partition("/")
    h = HASHES[hname]
    present = [n for n, _ in fields(head)]
    names = [t for t in TR_HEADERS if any(p.lower() == t.lower() for p in present)]
    bh = hashes.Hash(h()); bh.update(canon_body(body).encode()); bh = base64.b64encode(bh.finalize()).decode()
    q = "\r\n q=x-header/x-de-mail-signature-certificate;" if kind else ""
    hlist = ":".join(names[:6]) + ("\r\n\t:" + ":".join(names[6:]) if len(names) > 6 else "")
    field = f"X-de-mail-integrity: c=simple/simple; a={alg};{q}\r\n h={hlist};\r\n bh={bh};\r\n b="
    used, data = set(), ""
    flist = fields(head)
    for n in names:
        for i, (fn, raw) in enumerate(flist):
            if i not in used and fn.lower() == n.lower():
                used.add(i); data += raw; break
    data += field
    if not kind:
        d = hashes.Hash(h()); d.update(data.encode()); b = d.finalize()
    elif kind == "rsa":
        b = k.sign(data.encode(), padding.PKCS1v15(), h())
    elif kind == "rsassa-pss":
        b = k.sign(data.encode(), padding.PSS(mgf=padding.MGF1(h()), salt_length=h.digest_size), h())
    else:
        b = k.sign(data.encode(), ec.ECDSA(h()))
    b64 = base64.b64encode(b).decode()
    out = field + "\r\n ".join(b64[i:i + 76] for i in range(0, len(b64), 76)) + "\r\n"
    if kind and cert_header:
        der = base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
        out += "X-de-mail-signature-certificate: " + "\r\n ".join(der[i:i + 76] for i in range(0, len(der), 76)) + "\r\n"
    return out


HEAD = (
    "From: Erika Muster <erika@buerger.de-mail.de>\r\n"
    "To: poststelle@musterstadt.de-mail.de\r\n"
    "Subject: Widerspruch gegen den Bescheid vom 12.11.2026\r\n"
    "Date: Fri, 27 Nov 2026 10:00:00 +0100\r\n"
    "Message-ID: <w-20261127@buerger.de-mail.de>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=UTF-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "X-de-mail-private: yes\r\n"
    "X-de-mail-confirmation-of-receipt: yes\r\n"
    "X-de-mail-sender: erika@buerger.de-mail.de\r\n"
    "X-de-mail-chosen-recipient: to=poststelle@musterstadt.de-mail.de\r\n"
    "X-de-mail-auth-level: high\r\n"
    "X-de-mail-auth-mechanism: password+totp\r\n"
    "X-de-mail-originator-provider: musterprovider.de-mail.de\r\n"
    "X-de-mail-message-type: normal\r\n"
    "X-de-mail-version: 1.8\r\n"
    "X-de-mail-private-id: W-2026-0042\r\n"
    "X-de-mail-message-id: <pvd-7f3a@musterprovider.de-mail.de>\r\n"
)
BODY = "Sehr geehrte Damen und Herren,\r\n\r\nhiermit widerspreche ich dem Bescheid.\r\n\r\nMit freundlichen Grüßen\r\nErika Muster\r\n\r\n"

RECEIPT_HEAD = (
    "From: Versandbestaetigung@musterprovider.de-mail.de\r\n"
    "To: poststelle@musterstadt.de-mail.de\r\n"
    "Subject: *Versandbestätigung* Bescheid\r\n"
    "Date: Fri, 27 Nov 2026 10:05:00 +0100\r\n"
    "Message-ID: <vb-1@musterprovider.de-mail.de>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
    "X-de-mail-message-type: confirmation of dispatch\r\n"
    "X-de-mail-version: 1.8\r\n"
    "X-de-mail-private-id: DM-20261127-0001\r\n"
    "X-de-mail-originator-provider: musterprovider.de-mail.de\r\n"
    "X-de-mail-message-id: <vb-pvd-1@musterprovider.de-mail.de>\r\n"
)
RECEIPT_BODY = (
    "--b1\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nIhre De-Mail wurde versandt.\r\n"
    "--b1\r\nContent-Type: application/xml; charset=UTF-8\r\n\r\n"
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<Acknowledge-Message xmlns=\"urn:de-mail\">\r\n"
    "  <Sender>poststelle@musterstadt.de-mail.de</Sender>\r\n  <Metadata>\r\n"
    "    <Metadate><Name>X-de-mail-private-id</Name><Value>DM-20261127-0001</Value></Metadate>\r\n  </Metadata>\r\n"
    "  <Subject>Bescheid</Subject>\r\n  <Text>Ihre De-Mail wurde versandt.</Text>\r\n"
    "  <Hash>c=simple/simple; a=sha256; h=From:Subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=</Hash>\r\n"
    "  <Time>2026-11-27T10:05:00+01:00</Time>\r\n</Acknowledge-Message>\r\n"
    "--b1--\r\n"
)

QCA_TOML = base64.b64encode(QCA.public_bytes(serialization.Encoding.DER)).decode()
SUBJECT = "CN=DMDA Signatur,O=Musterprovider,C=DE"
r = lambda *codes: [{"code": c} for c in codes]


def fixtures():
    rsa_k, rsa_c = signer("rsa", 0x1001)
    p256_k, p256_c = signer("p256", 0x1002)
    p384_k, p384_c = signer("p384", 0x1003)
    old_k, old_c = signer("rsa", 0x1004, nb=D(2024, 1, 1), na=D(2025, 1, 1))
    foreign_k, foreign_c = signer("p256", 0x1005, cn="Fremder Anbieter", issuer=(OTHER_NAME, OTHER_KEY))
    msg = lambda top, head=HEAD, body=BODY: top + head + "\r\n" + body
    ok = {"status": "valid", "signer": SUBJECT, "reasons": r("integrity.valid")}
    out = []
    m = msg(sign(HEAD, BODY, "sha256/rsa", rsa_k, rsa_c))
    out.append(("01-rsa-sha256", m, dict(ok, algorithm="sha256/rsa")))
    out.append(("02-rsa-sha512", msg(sign(HEAD, BODY, "sha512/rsa", rsa_k, rsa_c)), dict(ok, algorithm="sha512/rsa")))
    out.append(("03-pss-sha256", msg(sign(HEAD, BODY, "sha256/rsassa-pss", rsa_k, rsa_c)), dict(ok, algorithm="sha256/rsassa-pss")))
    out.append(("04-pss-sha384", msg(sign(HEAD, BODY, "sha384/rsassa-pss", rsa_k, rsa_c)), dict(ok, algorithm="sha384/rsassa-pss")))
    out.append(("05-ecdsa-p256-sha256", msg(sign(HEAD, BODY, "sha256/ec-dsa", p256_k, p256_c)), dict(ok, algorithm="sha256/ec-dsa")))
    out.append(("06-ecdsa-p384-sha384", msg(sign(HEAD, BODY, "sha384/ec-dsa", p384_k, p384_c)), dict(ok, algorithm="sha384/ec-dsa")))
    out.append(("07-ecdsa-p384-sha512", msg(sign(HEAD, BODY, "sha512/ec-dsa", p384_k, p384_c)), dict(ok, algorithm="sha512/ec-dsa")))
    out.append(("08-hash-only-sha256", msg(sign(HEAD, BODY, "sha256")),
                {"status": "hash-only", "algorithm": "sha256", "signer": None, "reasons": r("integrity.hash_only")}))
    out.append(("09-hash-only-sha512", msg(sign(HEAD, BODY, "sha512")),
                {"status": "hash-only", "algorithm": "sha512", "reasons": r("integrity.hash_only")}))
    bad = {"status": "invalid", "algorithm": "sha256/rsa", "signer": SUBJECT}
    out.append(("10-subject-altered", m.replace("Subject: Widerspruch", "Subject: Zustimmung"),
                dict(bad, reasons=r("integrity.bad_signature"))))
    out.append(("11-body-altered", m.replace("widerspreche ich", "stimme ich"), dict(bad, reasons=r("integrity.body_altered"))))
    out.append(("12-recipient-altered", m.replace("chosen-recipient: to=poststelle@", "chosen-recipient: to=kasse@"),
                dict(bad, reasons=r("integrity.bad_signature"))))
    out.append(("13-option-added", m.replace("X-de-mail-private: yes\r\n", "X-de-mail-private: yes\r\nX-de-mail-authoritative: yes\r\n"),
                dict(bad, reasons=[{"code": "integrity.header_not_covered", "subject": "X-de-mail-authoritative"}])))
    out.append(("14-untrusted-ca", msg(sign(HEAD, BODY, "sha256/ec-dsa", foreign_k, foreign_c)),
                {"status": "untrusted-certificate", "signer": "CN=Fremder Anbieter,O=Musterprovider,C=DE",
                 "reasons": r("integrity.untrusted")}))
    out.append(("15-expired", msg(sign(HEAD, BODY, "sha256/rsa", old_k, old_c)),
                {"status": "expired", "certificate": {"not_after": "2025-01-01T00:00:00Z", "serial": "1004"},
                 "reasons": r("integrity.expired")}))
    out.append(("16-unsigned", msg(""), {"status": "unsigned", "algorithm": None, "reasons": r("integrity.missing")}))
    out.append(("17-malformed", msg("X-de-mail-integrity: c=simple/simple; a=sha256; h=From; b=AAAA\r\n"),
                {"status": "invalid", "reasons": r("integrity.malformed")}))
    out.append(("18-certificate-missing", msg(sign(HEAD, BODY, "sha256/rsa", rsa_k, rsa_c, cert_header=False)),
                dict(bad, signer=None, reasons=r("integrity.certificate_missing"))))
    hashed = msg(sign(HEAD, BODY, "sha256"))
    out.append(("19-hash-only-header-altered", hashed.replace("auth-level: high", "auth-level: normal"),
                {"status": "invalid", "reasons": r("integrity.header_altered")}))
    out.append(("20-lf-line-ends", m.replace("\r\n", "\n"), dict(ok, algorithm="sha256/rsa")))
    out.append(("21-receipt-signed", msg(sign(RECEIPT_HEAD, RECEIPT_BODY, "sha256/rsa", rsa_k, rsa_c), RECEIPT_HEAD, RECEIPT_BODY),
                dict(ok, algorithm="sha256/rsa", signed_headers=[
                    "From", "Date", "Message-ID", "Subject", "X-de-mail-originator-provider",
                    "X-de-mail-message-type", "X-de-mail-version", "X-de-mail-private-id", "X-de-mail-message-id"])))
    out.append(("22-forged-option-on-top", "X-de-mail-private: no\r\n" + m, dict(bad, reasons=r("integrity.bad_signature"))))
    out.append(("23-unsupported-algorithm", hashed.replace("a=sha256;", "a=sha1;", 1),
                {"status": "invalid", "reasons": r("integrity.unsupported_algorithm")}))
    return out


def main():
    with open(os.path.join(HERE, "policy.toml"), "w") as f:
        f.write("# Written by tests/corpus/integrity/gen.py: the TEST provider CA its fixtures chain to.\n"
                f"version = 1\n[integrity]\ntrusted_providers = [\"{QCA_TOML}\"]\n")
    fx = fixtures()
    for n in os.listdir(HERE):
        if n.endswith((".eml", ".json")):
            os.remove(os.path.join(HERE, n))
    for n, m, exp in fx:
        with open(os.path.join(HERE, n + ".eml"), "wb") as f:
            f.write(m.encode())
        with open(os.path.join(HERE, n + ".json"), "w") as f:
            json.dump(exp, f, indent=2, ensure_ascii=False)
            f.write("\n")
    by = dict((n, m) for n, m, _ in fx)
    # Cases for the JSON API, run natively and in wasm with byte-identical answers: only
    # what needs no public-key operation, or with the check results given.
    cases = [
        {"name": "integrity.verify: no integrity value", "op": "integrity.verify", "input": by["16-unsigned"],
         "expect": {"status": "unsigned", "reasons": r("integrity.missing")}},
        {"name": "integrity.verify: hash only, unaltered", "op": "integrity.verify", "input": by["08-hash-only-sha256"],
         "expect": {"status": "hash-only", "algorithm": "sha256", "signer": None}},
        {"name": "integrity.verify: hash only, auth level altered", "op": "integrity.verify",
         "input": by["19-hash-only-header-altered"], "expect": {"status": "invalid", "reasons": r("integrity.header_altered")}},
        {"name": "integrity.verify: body altered (no signature check needed)", "op": "integrity.verify",
         "input": by["11-body-altered"], "expect": {"status": "invalid", "reasons": r("integrity.body_altered")}},
        {"name": "integrity.verify: malformed value", "op": "integrity.verify", "input": by["17-malformed"],
         "expect": {"status": "invalid", "reasons": r("integrity.malformed")}},
        {"name": "integrity.prepare: RSA, one message check and one certificate check", "op": "integrity.prepare",
         "input": by["01-rsa-sha256"], "expect": {"verdict": None, "checks": [
             {"purpose": "message", "algorithm": "RSASSA-PKCS1-v1_5", "hash": "SHA-256"},
             {"purpose": "certificate", "algorithm": "RSASSA-PKCS1-v1_5", "hash": "SHA-256"}],
             "pending": {"status": "valid", "signer": SUBJECT}}},
        {"name": "integrity.prepare: RSA-PSS salt = hash length", "op": "integrity.prepare", "input": by["04-pss-sha384"],
         "expect": {"checks": [{"purpose": "message", "algorithm": "RSA-PSS", "hash": "SHA-384", "salt_length": 48},
                               {"purpose": "certificate"}]}},
        {"name": "integrity.prepare: ECDSA P-384 (signature as raw r||s for WebCrypto)", "op": "integrity.prepare",
         "input": by["06-ecdsa-p384-sha384"],
         "expect": {"checks": [{"purpose": "message", "algorithm": "ECDSA", "hash": "SHA-384", "named_curve": "P-384"},
                               {"purpose": "certificate"}]}},
        {"name": "integrity.prepare: untrusted CA needs only the message check", "op": "integrity.prepare",
         "input": by["14-untrusted-ca"], "expect": {"checks": [{"purpose": "message"}],
                                                    "pending": {"status": "untrusted-certificate"}}},
        {"name": "integrity.verify: a signed message needs the public-key checks (native: RustCrypto; wasm: see integrity.test.mjs)",
         "op": "integrity.prepare", "input": by["15-expired"],
         "expect": {"checks": [{"purpose": "message"}, {"purpose": "certificate"}], "pending": {"status": "expired",
                    "reasons": r("integrity.expired")}}},
        {"name": "integrity.verify: the message is a JSON string", "op": "integrity.verify",
         "input": {"message": by["16-unsigned"]}, "error": "input.invalid"},
        {"name": "policy: a provider CA that is no certificate", "op": "policy.check",
         "input": "{\"integrity\": {\"trusted_providers\": [\"bm90IGEgY2VydA==\"]}}",
         "expect": {"valid": False, "errors": [{"code": "policy.certificate_invalid"}]}},
    ]
    doc = {"policy": f"version = 1\n[integrity]\ntrusted_providers = [\"{QCA_TOML}\"]\n", "cases": cases}
    with open(CASES, "w") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")


main()
