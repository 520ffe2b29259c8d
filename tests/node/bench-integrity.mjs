// Benchmark (not a test): verifying one 10 MB signed De-Mail in the wasm module the
// add-in way (prepare → WebCrypto → verify), median of 21 runs; goal <= 150 ms.
// The key and CA come from openssl, the signature from Node's crypto.
// Run: node tests/node/bench-integrity.mjs   (after scripts/build-wasm; bench.mjs runs it too)
import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { execFileSync } from "node:child_process";
import { createPrivateKey, sign, randomBytes } from "node:crypto";
import { integrity_prepare_raw } from "../../addin/wasm/demail_wasm.js";
import { loadWasm } from "./env.mjs";
import { verifyWithWebCrypto } from "./integrity.mjs";

export async function benchIntegrity({ sizeMb = 10, runs = 21 } = {}) {
  loadWasm();
  const dir = mkdtempSync(join(tmpdir(), "demail-bench-"));
  try {
    const ssl = (...a) => execFileSync("openssl", a, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
    ssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "ca.key");
    ssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/C=DE/CN=Bench QCA", "-days", "30", "-out", "ca.pem");
    ssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "leaf.key");
    ssl("req", "-new", "-key", "leaf.key", "-subj", "/C=DE/CN=Bench DMDA", "-out", "leaf.csr");
    ssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "30", "-out", "leaf.pem");
    const der = (f) => ssl("x509", "-in", f, "-outform", "DER").toString("base64");
    const policy = JSON.stringify({ integrity: { trusted_providers: [der("ca.pem")] } });

    // A text part and a base64 attachment of random bytes, CRLF lines of 76.
    const b64 = randomBytes(Math.floor((sizeMb * 1024 * 1024 * 3) / 4)).toString("base64");
    const lines = [];
    for (let i = 0; i < b64.length; i += 76) lines.push(b64.slice(i, i + 76));
    const head =
      "From: Erika Muster <erika@buerger.de-mail.de>\r\nTo: poststelle@musterstadt.de-mail.de\r\n" +
      "Subject: Antrag mit Anlagen\r\nDate: Fri, 27 Nov 2026 10:00:00 +0100\r\nMessage-ID: <bench@buerger.de-mail.de>\r\n" +
      "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\nX-de-mail-private: yes\r\n" +
      "X-de-mail-auth-level: high\r\nX-de-mail-message-type: normal\r\n";
    const body =
      "--b\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nAnbei die Unterlagen.\r\n" +
      "--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n" + lines.join("\r\n") + "\r\n--b--\r\n";
    const cert = `X-de-mail-signature-certificate: ${der("leaf.pem")}\r\n`;
    const placeholder = (h) =>
      `X-de-mail-integrity: c=simple/simple; a=sha256/rsa; q=x-header/x-de-mail-signature-certificate;\r\n` +
      ` h=From:Date:Message-ID:Subject:X-de-mail-private:X-de-mail-auth-level:X-de-mail-message-type;\r\n bh=${h};\r\n b=\r\n`;
    // bh= and the signed input from the core itself (prepare), the signature from Node.
    const { createHash } = await import("node:crypto");
    const bh = createHash("sha256").update(body).digest("base64");
    const unsigned = Buffer.from(placeholder(bh) + cert + head + "\r\n" + body);
    const p = JSON.parse(integrity_prepare_raw(policy, unsigned, Date.now()));
    if (!p.ok || !p.result.checks.length) throw new Error(`prepare failed: ${JSON.stringify(p).slice(0, 400)}`);
    const sig = sign("sha256", Buffer.from(p.result.checks[0].data, "base64"), createPrivateKey(readFileSync(join(dir, "leaf.key"))));
    const raw = Buffer.from(placeholder(bh).replace(" b=\r\n", ` b=${sig.toString("base64")}\r\n`) + cert + head + "\r\n" + body);

    const first = await verifyWithWebCrypto(policy, raw, Date.now());
    const status = JSON.parse(first.verdict).result?.status;
    if (status !== "valid") throw new Error(`not valid: ${first.verdict.slice(0, 400)}`);
    for (let i = 0; i < 3; i++) await verifyWithWebCrypto(policy, raw, Date.now());
    const times = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      await verifyWithWebCrypto(policy, raw, Date.now());
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    return { bytes: raw.length, median: times[runs >> 1], min: times[0], max: times[runs - 1] };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await benchIntegrity();
  console.log(`integrity 10 MB wasm (Node): ${r.median.toFixed(1)} ms median, ${r.min.toFixed(1)} min, ${r.max.toFixed(1)} max ` +
    `(${(r.bytes / 1048576).toFixed(1)} MiB, sha256/rsa, prepare + WebCrypto + verify; goal <= 150 ms)`);
}
