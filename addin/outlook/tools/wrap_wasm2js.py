#!/usr/bin/env python3
"""Turn wasm2js's ES module into one ES2016 script value: DemailCoreJs.
The module's `import {…} from '…'` (only wasm-bindgen's describe placeholder, never
called at run time) become throwing stubs; `export var x = retasmFunc.x;` lines fill
`wasmExports`; the ES2016 glue (core-js-glue.js) turns them into the envelope API.
Usage: wrap_wasm2js.py core.mjs core-js-glue.js > core-js.js"""
import re
import sys

KEEP = re.compile(r"^(memory|__wbindgen_malloc|__wbindgen_free|__wbindgen_realloc|(call|classify_raw|version)(_[0-9a-f]{8,})?)$")


def main(module_path, glue_path):
    src = open(module_path, encoding="utf-8").read()
    if "`" in src or re.search(r"\\\n", src):
        sys.exit("wrap_wasm2js: template literal or continued line in wasm2js output; cannot strip indentation")
    out = []
    for line in src.splitlines():
        m = re.match(r"^import \{([^}]*)\} from '([^']+)';$", line)
        if m:
            for name in (n.strip() for n in m.group(1).split(",") if n.strip()):
                out.append(f"var {name} = function () {{ throw new Error('wasm import {m.group(2)}.{name} is not provided'); }};")
            continue
        m = re.match(r"^export var (\w+) = retasmFunc\.(\w+);$", line)
        if m:
            if KEEP.match(m.group(1)):
                out.append(f"wasmExports.{m.group(1)} = retasmFunc.{m.group(2)};")
            continue
        if re.match(r"^\s*(import|export)\b", line):
            sys.exit(f"wrap_wasm2js: unexpected module syntax: {line[:120]}")
        # Indentation is almost half of wasm2js's output; with no template literals
        # or continued string lines in it, dropping it changes nothing.
        out.append(line.lstrip(" \t"))
    body = "\n".join(out)
    if "wasmExports.memory" not in body:
        sys.exit("wrap_wasm2js: no memory export found")
    glue = open(glue_path, encoding="utf-8").read()
    sys.stdout.write(
        "var DemailCoreJs = (function () {\n"
        "var wasmExports = {};\n"
        f"{body}\n{glue}\n"
        "return demailCoreFromExports(wasmExports);\n"
        "})();\n"
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
