#!/usr/bin/env python3
"""Draw the add-in's PNG icons (blue tile, white envelope) at the sizes Outlook asks for.
Generated at build time so no binary lives in git. Usage: icons.py OUTDIR"""
import struct, sys, zlib
from pathlib import Path

BLUE = (15, 92, 168, 255)
WHITE = (255, 255, 255, 255)
CLEAR = (0, 0, 0, 0)


def pixel(x, y, n):
    u, v = (x + 0.5) / n, (y + 0.5) / n
    r = 0.18  # rounded corners
    cx, cy = min(max(u, r), 1 - r), min(max(v, r), 1 - r)
    if (u - cx) ** 2 + (v - cy) ** 2 > r * r:
        return CLEAR
    w = max(1.5 / n, 0.06)
    left, right, top, bottom = 0.2, 0.8, 0.3, 0.72
    inside = left <= u <= right and top <= v <= bottom
    edge = inside and (u - left < w or right - u < w or v - top < w or bottom - v < w)
    # the flap: two lines from the top corners to the middle
    mid_v = 0.52
    t = (u - left) / (right - left)
    flap_v = top + (mid_v - top) * (1 - abs(2 * t - 1))
    flap = inside and abs(v - flap_v) < w
    return WHITE if edge or flap else BLUE


def png(n):
    rows = b"".join(b"\0" + b"".join(struct.pack("4B", *pixel(x, y, n)) for x in range(n)) for y in range(n))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", n, n, 8, 6, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def outline(n):
    """The unified manifest's 32x32 outline icon: white on transparent only."""
    rows = []
    for y in range(n):
        row = b"\0"
        for x in range(n):
            p = pixel(x, y, n)
            row += struct.pack("4B", *(WHITE if p == WHITE else CLEAR))
        rows.append(row)
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", n, n, 8, 6, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for n in (16, 32, 64, 80, 128, 192):
        (out / f"icon-{n}.png").write_bytes(png(n))
    (out / "outline-32.png").write_bytes(outline(32))
