"""Fetch a start image the way fal would and render it into a short zooming H.264 MP4."""

from __future__ import annotations

import base64
import binascii
import functools
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import requests

from app.demo.sample import encode_png

_SIZE = re.compile(r"Stream #[^\n]*?Video: (\w+)[^\n]*?\b(\d{2,5})x(\d{2,5})\b")
_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_FFMPEG_TIMEOUT = 120.0


class RenderError(Exception):
    """The start image could not be used: the job ends with a model error, not a crash."""


class FetchError(RenderError):
    """image_url could not be downloaded (bad scheme, HTTP error, timeout, too large)."""


class DecodeError(RenderError):
    """The downloaded bytes are not an image ffmpeg can decode."""


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What `ffmpeg -i` reports about a media file's first video stream."""

    codec: str
    width: int
    height: int
    duration: float


@functools.cache
def ffmpeg_exe() -> str:
    """The ffmpeg binary shipped by imageio-ffmpeg (imported lazily: it is only needed here)."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def fetch_image(url: str, *, timeout: float = 10.0, max_bytes: int = 50 * 1024 * 1024) -> bytes:
    """GET image_url like fal does (http(s) or a base64 `data:` URI), capped and timed out."""
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or not header.endswith(";base64"):
            raise FetchError("data: URI is not base64-encoded")
        try:
            data = base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise FetchError(f"bad base64 in data: URI: {exc}") from exc
        if len(data) > max_bytes:
            raise FetchError("image too large")
        return data
    if not url.startswith(("http://", "https://")):
        raise FetchError("unsupported URL scheme")
    try:
        with requests.get(url, timeout=(min(timeout, 5.0), timeout), stream=True,
                          headers={"User-Agent": "fal-sandbox/1.0"}) as response:
            if response.status_code != 200:
                raise FetchError(f"HTTP {response.status_code} from image_url")
            chunks: list[bytes] = []
            total = 0
            for chunk in response.iter_content(64 * 1024):
                total += len(chunk)
                if total > max_bytes:
                    raise FetchError("image too large")
                chunks.append(chunk)
    except requests.RequestException as exc:
        raise FetchError(f"{type(exc).__name__}: {exc}") from exc
    return b"".join(chunks)


def _ffmpeg_info(path: Path) -> str:
    # `ffmpeg -i` without an output exits 1 but prints the stream table on stderr.
    done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
                          capture_output=True, timeout=_FFMPEG_TIMEOUT, check=False)
    return done.stderr.decode("utf-8", "replace")


def probe_video(path: Path) -> VideoInfo | None:
    """Codec, size and duration of a media file, or None when it has no video stream."""
    text = _ffmpeg_info(path)
    stream = _SIZE.search(text)
    if stream is None:
        return None
    duration = 0.0
    match = _DURATION.search(text)
    if match:
        hours, minutes, seconds = match.groups()
        duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return VideoInfo(stream.group(1), int(stream.group(2)), int(stream.group(3)), duration)


def render_clip(image: bytes, out_path: Path, *, seconds: float, width: int = 320,
                fps: int = 12) -> int:
    """Render a slow centred zoom on the image into out_path; returns the file size."""
    source = out_path.with_name(out_path.name + ".src")
    source.write_bytes(image)
    try:
        info = probe_video(source)
        if info is None or info.width < 2 or info.height < 2:
            raise DecodeError("not a decodable image")
        height = max(2, round(width * info.height / info.width / 2) * 2)
        frames = max(1, round(seconds * fps))
        step = 0.2 / frames  # ends at 1.2x zoom
        video_filter = (
            f"scale={width * 2}:{height * 2},"
            f"zoompan=z='min(zoom+{step:.6f},1.2)':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)'"
            f":d={frames}:s={width}x{height}:fps={fps},format=yuv420p")
        command = [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-i", str(source), "-vf", video_filter, "-frames:v", str(frames), "-r", str(fps),
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "30", "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", "-an", str(out_path),
        ]
        done = subprocess.run(command, capture_output=True, timeout=_FFMPEG_TIMEOUT, check=False)
        if done.returncode != 0 or not out_path.exists():
            message = done.stderr.decode("utf-8", "replace").strip()[-300:]
            raise DecodeError(f"ffmpeg failed: {message}")
        return out_path.stat().st_size
    except subprocess.TimeoutExpired as exc:
        raise DecodeError("ffmpeg timed out") from exc
    finally:
        source.unlink(missing_ok=True)


def make_png(width: int = 320, height: int = 180) -> bytes:
    """A real RGB gradient PNG (a start image needing no imaging library)."""
    pixels = bytearray()
    for y in range(height):
        for x in range(width):
            pixels += bytes(((x * 255) // max(1, width - 1), (y * 255) // max(1, height - 1),
                             128 + ((x // 16 + y // 16) % 2) * 96))
    return encode_png(width, height, pixels)
