"""Uploads are decoded before they are accepted: broken files, polyglots and
decompression bombs get 415/413 and nothing is stored."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.config import Settings
from tests.conftest import make_png


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_bomb(side: int = 20000) -> bytes:
    """A real decompression bomb: a side x side grey PNG of zeros, a few hundred KiB."""
    packer = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte + pixels
    block = row * 500
    body = b"".join(packer.compress(block) for _ in range(side // 500)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body)
            + _chunk(b"IEND", b""))


def _encoded(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, fmt)
    return out.getvalue()


PNG = make_png(64, 48)
JPEG = _encoded("JPEG")


def _upload(user: Any, data: bytes) -> Any:
    return user.client.post("/api/library", data={"file": (io.BytesIO(data), "x.png")},
                            content_type="multipart/form-data")


def _stored_files(settings: Settings) -> list[Path]:
    root = Path(settings.storage_dir)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.parametrize("name, data, status", [
    ("png signature then html", b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>",
     415),
    ("png cut in half", PNG[: len(PNG) // 2], 415),
    ("33 bytes of header", PNG[:33], 415),
    ("jpeg cut short", JPEG[: len(JPEG) - 40], 415),
    ("valid png with html appended", PNG + b"<html><script>alert(1)</script></html>", 415),
    ("jpeg bytes in a webp wrapper", b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(200), 415),
    ("20000 x 20000 decompression bomb", png_bomb(), 413),
])
def test_bad_images_are_refused_and_nothing_is_stored(make_user: Any, settings: Settings,
                                                      name: str, data: bytes,
                                                      status: int) -> None:
    user = make_user()
    resp = _upload(user, data)
    assert resp.status_code == status, (name, resp.get_data(as_text=True))
    expected = "FILE_TOO_LARGE" if status == 413 else "UNSUPPORTED_MEDIA_TYPE"
    assert resp.get_json()["error"] == expected
    assert user.client.get("/api/library").get_json()["items"] == []
    assert _stored_files(settings) == []


def test_the_pixel_cap_is_a_setting(app: Any, make_user: Any, settings: Settings,
                                    store: Any) -> None:
    from app import create_app
    from tests.conftest import UserSession

    small = create_app(settings.replace(max_image_pixels=64 * 47), store=store)
    user = UserSession(small, store, "cap@example.com", 0)
    assert _upload(user, PNG).status_code == 413
    assert _upload(user, make_png(64, 47)).status_code == 201


@pytest.mark.parametrize("data", [PNG, JPEG, _encoded("WEBP")])
def test_real_images_are_stored_byte_for_byte(make_user: Any, data: bytes) -> None:
    user = make_user()
    resp = _upload(user, data)
    assert resp.status_code == 201, resp.get_json()
    item = user.client.get("/api/library").get_json()["items"][0]
    assert item["size"] == len(data)
