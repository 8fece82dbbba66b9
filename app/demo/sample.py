"""PNG images made in pure Python (a sample car design, solid test images), so the demo,
the sandbox and the tests need no image files or imaging libraries."""

from __future__ import annotations

import struct
import zlib


def encode_png(width: int, height: int, pixels: bytes | bytearray) -> bytes:
    """An 8-bit RGB PNG from `width * height * 3` bytes of pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    rows = b"".join(b"\x00" + bytes(pixels[y * width * 3:(y + 1) * width * 3])
                    for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b""))


def car_design_png(width: int = 640, height: int = 360) -> bytes:
    """A red coupe on a night-blue backdrop with a road line: a recognisable design."""
    px = bytearray(width * height * 3)

    def fill(x0: int, y0: int, x1: int, y1: int, rgb: tuple[int, int, int]) -> None:
        for y in range(max(0, y0), min(height, y1)):
            for x in range(max(0, x0), min(width, x1)):
                i = (y * width + x) * 3
                px[i:i + 3] = bytes(rgb)

    def disc(cx: int, cy: int, r: int, rgb: tuple[int, int, int]) -> None:
        for y in range(cy - r, cy + r):
            for x in range(cx - r, cx + r):
                if 0 <= x < width and 0 <= y < height and (x - cx) ** 2 + (y - cy) ** 2 < r * r:
                    i = (y * width + x) * 3
                    px[i:i + 3] = bytes(rgb)

    for y in range(height):  # night sky gradient
        shade = (18 + y // 12, 24 + y // 10, 60 + y // 5)
        fill(0, y, width, y + 1, shade)
    fill(0, int(height * 0.78), width, height, (40, 40, 48))  # road
    for x in range(0, width, 80):
        fill(x + 10, int(height * 0.88), x + 50, int(height * 0.9), (230, 210, 90))
    body_top, body_bottom = int(height * 0.52), int(height * 0.74)
    fill(int(width * 0.18), body_top, int(width * 0.82), body_bottom, (200, 30, 40))  # body
    fill(int(width * 0.32), int(height * 0.38), int(width * 0.66), body_top,
         (180, 25, 35))  # cabin
    fill(int(width * 0.35), int(height * 0.41), int(width * 0.48), body_top - 4,
         (150, 200, 230))  # windows
    fill(int(width * 0.50), int(height * 0.41), int(width * 0.63), body_top - 4,
         (150, 200, 230))
    fill(int(width * 0.79), int(height * 0.56), int(width * 0.82), int(height * 0.6),
         (255, 240, 180))  # headlight
    for cx in (int(width * 0.3), int(width * 0.7)):  # wheels
        disc(cx, body_bottom, int(height * 0.09), (20, 20, 20))
        disc(cx, body_bottom, int(height * 0.045), (160, 160, 170))
    return encode_png(width, height, px)


def solid_png(width: int = 8, height: int = 8, rgb: tuple[int, int, int] = (208, 64, 32)
              ) -> bytes:
    """A valid one-colour PNG (small test and benchmark images)."""
    return encode_png(width, height, bytes(rgb) * (width * height))
