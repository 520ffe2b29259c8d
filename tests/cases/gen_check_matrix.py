#!/usr/bin/env python3
"""Generate tests/cases/check-matrix-{reject,allow-internal,allow}.json.

Every combination of To/Cc/Bcc, each one of {empty, De-Mail, internal, external}
(4^3 = 64), under each `rules.mixed_addressing` policy. The expected verdict comes
from the oracle below, written from the spec (docs/policy.md, demail-reference.md §3),
not from the Rust code:

  no De-Mail recipient            -> "email"
  De-Mail recipients only         -> "demail"
  De-Mail and e-mail recipients:
    reject                        -> "blocked" (mixed.rejected)
    allow-internal                -> "demail" if every e-mail recipient is internal,
                                     else "blocked" (mixed.external)
    allow                         -> "demail"

Run from anywhere: python3 tests/cases/gen_check_matrix.py
The output is deterministic; commit the JSON files together with this script.
"""

import itertools
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIELDS = ("to", "cc", "bcc")
KINDS = ("empty", "demail", "internal", "external")
POLICIES = ("reject", "allow-internal", "allow")
SENDER = "sachbearbeiter@stadt.de"


def address(kind, field):
    """A distinct address per field, so no two fields collapse into one recipient."""
    return {
        "demail": f"buerger.{field}@beispiel.de-mail.de",
        "internal": f"kollegin.{field}@stadt.de",
        "external": f"kunde.{field}@example.org",
    }[kind]


def policy_toml(mixed):
    return (
        f"# check matrix: mixed_addressing = {mixed}\n"
        "[organisation]\n"
        'internal_domains = ["stadt.de"]\n'
        "\n"
        "[rules]\n"
        f'mixed_addressing = "{mixed}"\n'
    )


def oracle(mixed, combo):
    """Expected verdict and blocking reason for one combination, from the spec."""
    demail = [address(k, f) for f, k in zip(FIELDS, combo) if k == "demail"]
    internal = [address(k, f) for f, k in zip(FIELDS, combo) if k == "internal"]
    external = [address(k, f) for f, k in zip(FIELDS, combo) if k == "external"]
    email = [address(k, f) for f, k in zip(FIELDS, combo) if k in ("internal", "external")]
    reason = None
    if not demail:
        verdict = "email"
    elif not email:
        verdict = "demail"
    elif mixed == "reject":
        verdict, reason = "blocked", "mixed.rejected"
    elif mixed == "allow-internal":
        if external:
            verdict, reason = "blocked", "mixed.external"
        else:
            verdict = "demail"
    elif mixed == "allow":
        verdict = "demail"
    else:
        raise ValueError(mixed)
    return verdict, reason, demail, email, internal, external


def cases(mixed):
    out = []
    for combo in itertools.product(KINDS, repeat=3):
        inp = {"from": SENDER}
        for f, k in zip(FIELDS, combo):
            inp[f] = [] if k == "empty" else [address(k, f)]
        verdict, reason, demail, email, internal, external = oracle(mixed, combo)
        expect = {
            "verdict": verdict,
            "demail_recipients": demail,
            "email_recipients": email,
            "internal_recipients": internal,
            "external_recipients": external,
        }
        if verdict == "email":
            # Plain e-mail: nothing to say.
            expect["reasons"] = []
        elif reason:
            expect["reasons"] = [{"code": reason, "severity": "block"}]
        name = " ".join(f"{f}={k}" for f, k in zip(FIELDS, combo))
        out.append({"name": name, "op": "check", "input": inp, "expect": expect})
    return out


def main():
    for mixed in POLICIES:
        doc = {"policy": policy_toml(mixed), "cases": cases(mixed)}
        path = HERE / f"check-matrix-{mixed}.json"
        path.write_text(json.dumps(doc, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        print(f"{path.name}: {len(doc['cases'])} cases")


if __name__ == "__main__":
    main()
