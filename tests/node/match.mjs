// Same rule as core/tests/support/mod.rs: expected ⊆ actual for objects, arrays of
// equal length compared element-wise, scalars equal; an expected null may be absent.
export function matches(expected, actual, path = "$", out = []) {
  if (expected !== null && typeof expected === "object" && !Array.isArray(expected)) {
    if (actual === null || typeof actual !== "object" || Array.isArray(actual)) {
      out.push(`${path}: expected object ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
      return out;
    }
    for (const [k, ev] of Object.entries(expected)) {
      if (!(k in actual)) {
        if (ev !== null) out.push(`${path}.${k}: missing, expected ${JSON.stringify(ev)}`);
        continue;
      }
      matches(ev, actual[k], `${path}.${k}`, out);
    }
  } else if (Array.isArray(expected)) {
    if (!Array.isArray(actual) || actual.length !== expected.length) {
      out.push(`${path}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
      return out;
    }
    expected.forEach((ev, i) => matches(ev, actual[i], `${path}[${i}]`, out));
  } else if (expected !== actual) {
    out.push(`${path}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
  return out;
}
