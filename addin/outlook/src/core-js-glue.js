// @ts-check
/*
 * ES2016 glue around the core translated to plain JS by wasm2js (no WebAssembly, no
 * TextEncoder needed). scripts/build-outlook puts the translated module in front of this
 * file, inside one function, with its exports in `wasmExports`. Same envelope API as the
 * wasm package: call(op, policy, inputJson, nowMillis, entropy) → JSON string.
 */
/* global wasmExports */
function demailCoreFromExports(x) {
  "use strict";

  // wasm-bindgen exports carry a hash suffix before its CLI renames them.
  function pick(name) {
    if (typeof x[name] === "function") return x[name];
    var re = new RegExp("^" + name + "_[0-9a-f]{8,}$");
    var keys = Object.keys(x).filter(function (k) { return re.test(k); });
    if (keys.length !== 1) throw new Error("core export " + name + " not found");
    return x[keys[0]];
  }
  var rawCall = pick("call");
  var rawClassify = pick("classify_raw");
  var rawVersion = pick("version");
  var malloc = x.__wbindgen_malloc;
  var free = x.__wbindgen_free;

  function bytes() { return new Uint8Array(x.memory.buffer); }

  function utf8Encode(s) {
    var out = [];
    for (var i = 0; i < s.length; i++) {
      var c = s.charCodeAt(i);
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
        var d = s.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) { c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00); i++; }
        else c = 0xfffd;
      } else if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
      if (c < 0x80) out.push(c);
      else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
      else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
      else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    }
    return out;
  }

  // The core returns valid UTF-8 (Rust String); decode it without TextDecoder.
  function utf8Decode(b) {
    var s = "";
    var chunk = [];
    for (var i = 0; i < b.length;) {
      var c = b[i++];
      if (c >= 0xf0) c = ((c & 7) << 18) | ((b[i++] & 63) << 12) | ((b[i++] & 63) << 6) | (b[i++] & 63);
      else if (c >= 0xe0) c = ((c & 15) << 12) | ((b[i++] & 63) << 6) | (b[i++] & 63);
      else if (c >= 0xc0) c = ((c & 31) << 6) | (b[i++] & 63);
      if (c >= 0x10000) { c -= 0x10000; chunk.push(0xd800 + (c >> 10), 0xdc00 + (c & 1023)); }
      else chunk.push(c);
      if (chunk.length >= 4096) { s += String.fromCharCode.apply(null, chunk); chunk = []; }
    }
    return s + String.fromCharCode.apply(null, chunk);
  }

  /** Copy bytes into the module; the Rust side takes ownership of the allocation. */
  function pass(arr) {
    var p = malloc(arr.length, 1) >>> 0;
    bytes().set(arr, p);
    return [p, arr.length];
  }

  /** Run an export that writes (ptr, len) of a returned String at retptr. */
  function withString(fn) {
    var ret = malloc(16, 8) >>> 0;
    try {
      fn(ret);
      var v = new DataView(x.memory.buffer);
      var ptr = v.getUint32(ret, true);
      var len = v.getUint32(ret + 4, true);
      var s = utf8Decode(bytes().subarray(ptr, ptr + len));
      free(ptr, len, 1);
      return s;
    } finally {
      free(ret, 16, 8);
    }
  }

  return {
    call: function (op, policy, inputJson, nowMillis, entropy) {
      return withString(function (ret) {
        var a = pass(utf8Encode(String(op)));
        var b = pass(utf8Encode(String(policy)));
        var c = pass(utf8Encode(String(inputJson)));
        var e = pass(Array.prototype.slice.call(entropy || []));
        rawCall(ret, a[0], a[1], b[0], b[1], c[0], c[1], +nowMillis, e[0], e[1]);
      });
    },
    classifyRaw: function (policy, raw) {
      return withString(function (ret) {
        var b = pass(utf8Encode(String(policy)));
        var r = pass(typeof raw === "string" ? utf8Encode(raw) : Array.prototype.slice.call(raw));
        rawClassify(ret, b[0], b[1], r[0], r[1]);
      });
    },
    version: function () {
      return withString(function (ret) { rawVersion(ret); });
    },
  };
}
