"""The clips jobs serve: the result's `video` object and each download's answer, faults included."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.config import MIB
from sandbox.jobs import Job
from sandbox.observations import Observations
from sandbox.state import State

_ZEROS = bytes(MIB)
_HTML = (b"<!DOCTYPE html><html><head><title>Access denied</title></head>"
         b"<body><h1>Access denied</h1><p>This object is not available.</p></body></html>")


@dataclass(slots=True)
class Download:
    """How to answer a video download: headers, a body stream, and whether to cut it short."""

    status: int
    headers: list[tuple[str, str]]
    chunks: Iterable[bytes]
    cut: bool = False  # close the socket after the body (which is shorter than announced)


class Files:
    """Rendered clips (or the stock clip) and how `/files/{id}/output.mp4` answers."""

    def __init__(self, state: State, observed: Observations) -> None:
        self._state = state
        self._observed = observed

    def video(self, job: Job) -> dict[str, Any]:
        """The `video` object of a result or webhook payload."""
        size = self._state.config.huge_file_bytes if job.has("huge_file") else self.file_size(job)
        return {"url": f"{job.base}/files/{job.request_id}/output.mp4",
                "content_type": "video/mp4", "file_name": "output.mp4", "file_size": size}

    def file_size(self, job: Job) -> int:
        """Bytes of the clip the job serves."""
        return job.video_size if self._state.config.render else len(self._state.stock_video)

    def open_download(self, request_id: str, *, direct: bool = False,
                      head: bool = False) -> Download:
        """GET /files/{id}/output.mp4, misbehaving as the job's scenario says."""
        job = self._state.jobs.get(request_id)
        if job is None or job.failure is not None or job.phase(time.monotonic()) != "COMPLETED":
            body = b'{"detail":"Not Found"}'
            return Download(404, [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))], [body])
        attempt = self._observed.download_started(job, head=head)
        download, mode = self._plan(job, attempt, direct)
        if head:
            download.chunks, download.cut, mode = [], False, "head"
        self._observed.record_download(request_id, attempt, mode)
        return download

    def _plan(self, job: Job, attempt: int, direct: bool) -> tuple[Download, str]:
        config = self._state.config
        if job.has("private_redirect"):
            target = job.param("private_redirect") or config.private_redirect_url
            return Download(302, [("Location", target), ("Content-Length", "0")], []), "redirect"
        if job.has("redirect") and not direct:
            target = f"{job.base}/files/{job.request_id}/output.mp4?direct=1"
            return Download(302, [("Location", target), ("Content-Length", "0")], []), "redirect"
        if job.has("wrong_content_type"):
            return Download(200, [("Content-Type", "text/html; charset=utf-8"),
                                  ("Content-Length", str(len(_HTML)))], [_HTML]), "html"
        size = self.file_size(job)
        if job.has("huge_file"):
            total = config.huge_file_bytes
            return Download(200, [("Content-Type", "video/mp4"),
                                  ("Content-Length", str(total))],
                            self._padded(job, total)), "huge"
        if job.has("huge_file_chunked"):
            return Download(200, [("Content-Type", "video/mp4")],
                            self._padded(job, config.huge_chunked_bytes)), "huge_chunked"
        headers = [("Content-Type", "video/mp4"), ("Content-Length", str(size))]
        if job.has("cut_download") and attempt == 1:
            half = self._read_video(job)[: size // 2]
            return Download(200, headers, [half], cut=True), "cut"
        return Download(200, headers, self._video_chunks(job)), "full"

    def _read_video(self, job: Job) -> bytes:
        if not self._state.config.render:
            return self._state.stock_video
        return Path(job.video_path).read_bytes() if job.video_path else b""

    def _video_chunks(self, job: Job) -> Iterator[bytes]:
        if not self._state.config.render:
            yield self._state.stock_video
            return
        if job.video_path is None:
            return
        with open(job.video_path, "rb") as handle:
            while chunk := handle.read(256 * 1024):
                yield chunk

    def _padded(self, job: Job, total: int) -> Iterator[bytes]:
        # The real clip first (so sniffers see an MP4), then zeros up to `total` bytes.
        head = self._read_video(job)[:total]
        yield head
        sent = len(head)
        while sent < total:
            chunk = _ZEROS if total - sent >= MIB else _ZEROS[: total - sent]
            sent += len(chunk)
            yield chunk
