#!/usr/bin/env python3
"""Build helper/tray/icons/icon.ico from the tray's PNG icons (stdlib only, byte-reproducible).

    installer/windows/make-icon.py [--check]

tauri-build needs a Windows icon for the x86_64-pc-windows-gnu build (resource of
demail-tray.exe, window and tray icon). An ICO with PNG entries (Windows Vista and later) is
a 6-byte header, one 16-byte directory entry per image, then the PNG files unchanged; no
rescaling, so the result depends only on the PNGs. The 32 px image comes first because
Tauri's code generator takes the first entry as the default window/tray icon.
--check: exit 1 if the committed icon.ico differs from what the PNGs give.
"""
import struct
import sys
from pathlib import Path

ICONS = Path(__file__).resolve().parents[2] / "helper" / "tray" / "icons"
SOURCES = ["32x32.png", "128x128.png", "icon.png"]  # 32, 128, 256 px


def png_size(data: bytes, name: str) -> tuple[int, int]:
    # PNG signature, then the IHDR chunk: length, b"IHDR", width, height (big endian).
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        sys.exit(f"{name}: keine PNG-Datei / not a PNG file")
    w, h = struct.unpack(">II", data[16:24])
    if not (1 <= w <= 256 and 1 <= h <= 256):
        sys.exit(f"{name}: {w}x{h} passt nicht in eine ICO-Datei (max. 256) / too large for ICO")
    return w, h


def build() -> bytes:
    images = [(n, (ICONS / n).read_bytes()) for n in SOURCES]
    out = struct.pack("<HHH", 0, 1, len(images))  # reserved, type 1 = icon, count
    offset = 6 + 16 * len(images)
    for name, data in images:
        w, h = png_size(data, name)
        # width/height 0 means 256; no palette; 1 plane; 32 bpp (RGBA).
        out += struct.pack("<BBBBHHII", w % 256, h % 256, 0, 0, 1, 32, len(data), offset)
        offset += len(data)
    return out + b"".join(data for _, data in images)


def main() -> int:
    ico = build()
    target = ICONS / "icon.ico"
    if sys.argv[1:] == ["--check"]:
        if not target.exists() or target.read_bytes() != ico:
            print(f"{target} fehlt oder ist veraltet / missing or stale: "
                  "installer/windows/make-icon.py", file=sys.stderr)
            return 1
        return 0
    if sys.argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    target.write_bytes(ico)
    print(f"{target} ({len(ico)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
