"""Poster frames: one still image per finished video, so library cards are not black.

Taken just after finalize completes the job, on one background thread per worker process
(so ffmpeg never delays finishing the next job), with the ffmpeg binary shipped by
imageio-ffmpeg at low CPU priority. Stored next to the video under a key derived from the
job id (`users/<user-id>/library/<jobId>.poster.jpg`, so a retried finalize overwrites
it) and deleted with the video. A poster is a nicety: any failure here is logged, and a
card without one shows the video's first frame as before.
"""

from __future__ import annotations

import functools
import io
import logging
import shutil
import subprocess
from typing import Any

from app.storage import LocalStorage, job_poster_key

log = logging.getLogger(__name__)

POSTER_CONTENT_TYPE = "image/jpeg"
_TIMEOUT_SECONDS = 60.0
_MAX_POSTER_BYTES = 2 * 1024 * 1024
_WIDTH = 640  # cards are at most ~400 px wide; twice that for dense screens would be waste


@functools.cache
def _ffmpeg() -> list[str]:
    """ffmpeg at low CPU priority: a poster must not slow the jobs being finished."""
    import imageio_ffmpeg

    nice = shutil.which("nice")
    return [*([nice, "-n", "15"] if nice else []), str(imageio_ffmpeg.get_ffmpeg_exe())]


def _source(storage: Any, video_key: str) -> str:
    """What ffmpeg reads: the file itself for local storage, else a short-lived signed URL
    (ffmpeg seeks with range requests instead of copying the whole video)."""
    if isinstance(storage, LocalStorage):
        return str(storage.path_for(video_key))
    return str(storage.download_url(video_key, expires_in=300))


def extract_frame(source: str, at_seconds: float = 1.0) -> bytes | None:
    """A JPEG of the frame at `at_seconds` (the first frame for shorter videos)."""
    for seek in (at_seconds, 0.0):
        cmd = [*_ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin"]
        if seek:
            cmd += ["-ss", f"{seek:.2f}"]
        cmd += ["-i", source, "-frames:v", "1", "-vf", f"scale='min({_WIDTH},iw)':-2",
                "-q:v", "4", "-f", "image2", "-c:v", "mjpeg", "pipe:1"]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=_TIMEOUT_SECONDS,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("poster frame: ffmpeg did not run: %s", exc)
            return None
        if done.returncode == 0 and done.stdout[:2] == b"\xff\xd8":
            return done.stdout[:_MAX_POSTER_BYTES] if len(done.stdout) <= _MAX_POSTER_BYTES \
                else None
    return None


def store_poster(storage: Any, user_id: str, job_id: str, video_key: str) -> str | None:
    """Extract and store the poster of a stored video; its key, or None (never raises)."""
    try:
        frame = extract_frame(_source(storage, video_key))
        if frame is None:
            log.warning("no poster frame for %s", video_key, extra={"job_id": job_id})
            return None
        key = job_poster_key(user_id, job_id)
        storage.put_stream(key, io.BytesIO(frame), POSTER_CONTENT_TYPE)
        return key
    except Exception:  # a poster must never fail a finished job
        log.warning("storing the poster frame failed", exc_info=True, extra={"job_id": job_id})
        return None
