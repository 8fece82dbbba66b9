"""Uploaded images are decoded before they are accepted, not just sniffed.

Magic bytes say what a file claims to be; only decoding says whether it is one. A PNG
signature followed by HTML, a truncated file, a bare header, a decompression bomb or an
image with something appended (a polyglot) would otherwise be stored and forwarded to the
provider, which charges for failed generations too. Pillow reads the header (format and
dimensions, checked against a pixel cap before any pixel is decoded), then decodes every
pixel (truncation and corrupt data fail here); the bytes must end where the image ends.
The file is stored as uploaded (no re-encoding, so no quality loss).
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image

from app.errors import ApiError

_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int


def _unsupported() -> ApiError:
    return ApiError(415, "UNSUPPORTED_MEDIA_TYPE")


def _ends_where_the_image_ends(file: BinaryIO, size: int, content_type: str) -> bool:
    file.seek(max(0, size - len(_PNG_END)))
    tail = file.read()
    if content_type == "image/png":
        return tail.endswith(_PNG_END)
    if content_type == "image/jpeg":
        return tail.endswith(b"\xff\xd9")
    file.seek(4)
    riff_size = struct.unpack("<I", file.read(4))[0]
    return riff_size + 8 == size


def check_image(file: BinaryIO, size: int, sniffed_type: str, max_pixels: int) -> ImageInfo:
    """Decode the whole image; 415 unless it is a complete png/jpeg/webp of the sniffed
    type with nothing after it, 413 FILE_TOO_LARGE beyond `max_pixels`."""
    file.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file, formats=list(_FORMATS)) as image:
                width, height = image.size
                if width <= 0 or height <= 0:
                    raise _unsupported()
                if width * height > max_pixels:
                    raise ApiError(413, "FILE_TOO_LARGE")
                if _FORMATS.get(image.format or "") != sniffed_type:
                    raise _unsupported()
                image.load()  # every pixel: truncated or corrupt data fails here
    except ApiError:
        raise
    except Image.DecompressionBombError:
        raise ApiError(413, "FILE_TOO_LARGE") from None
    except Exception:  # Pillow's decoders raise OSError, SyntaxError, ValueError, ...
        raise _unsupported() from None
    if not _ends_where_the_image_ends(file, size, sniffed_type):
        raise _unsupported()
    file.seek(0)
    return ImageInfo(sniffed_type, width, height)
