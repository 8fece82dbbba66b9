"""An accepted job over time: its render, its completion, and its return after a restart."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from sandbox import render
from sandbox.jobs import CANCELLED, DECODE_FAILED, FETCH_FAILED, RUNNER_DISCONNECTED, Failure, Job
from sandbox.journal import Journal
from sandbox.observations import Observations
from sandbox.scheduler import Scheduler
from sandbox.state import State
from sandbox.webhooks import Webhooks

log = logging.getLogger(__name__)


class JobRunner:
    """Schedules each job's steps; renders run on a small pool (fetch + ffmpeg)."""

    def __init__(self, state: State, scheduler: Scheduler, observed: Observations,
                 webhooks: Webhooks) -> None:
        self._state = state
        self._scheduler = scheduler
        self._observed = observed
        self._webhooks = webhooks
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        """Make the render pool."""
        self._pool = ThreadPoolExecutor(self._state.config.render_workers,
                                        thread_name_prefix="sandbox-render")

    def stop(self) -> None:
        """Drop renders not yet started."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def accepted(self, job: Job) -> None:
        """Schedule a new job's next step: its render, or (no rendering) its completion."""
        if self._state.config.render:
            self._scheduler.at(job.started, partial(self._start_render, job.request_id))
        elif job.webhook and job.done_at is not None:
            self._scheduler.at(job.due, partial(self.finish, job.request_id))

    def finish(self, request_id: str) -> None:
        """Run completion side effects once the job is due: its webhook(s)."""
        job = self._state.jobs.get(request_id)
        if job is None:
            return
        with self._state.lock:
            done_at = job.done_at
            if job.finished or done_at is None or time.monotonic() < done_at:
                return
            job.finished = True
        self._webhooks.send(job)

    def restore(self, journal: Journal) -> None:
        """Take back the requests accepted before a restart: a rendered one is done, a
        cancelled one stays cancelled, any other starts again (fetch, render, finish)."""
        state, config = self._state, self._state.config
        now = time.monotonic()
        restored = 0
        for request_id, entry in journal.entries():
            if request_id in state.jobs:
                continue
            job = Job(request_id, entry["endpoint"], entry["app_path"], entry["base"],
                      float(entry["seconds"]), entry.get("image_url") if config.render else None,
                      entry.get("webhook"), entry.get("scenarios"), now, now,
                      now + config.run_seconds, 0)
            video = state.workdir / f"{request_id}.mp4" if state.workdir else None
            if entry.get("cancelled"):
                job.failure, job.done_at, job.finished = CANCELLED, now, True
            elif config.render and entry.get("video_size") and video and video.exists():
                job.video_path, job.video_size = str(video), int(entry["video_size"])
                job.started = job.due = job.done_at = now
            elif not config.render:
                job.failure = job.scripted_failure()
                job.done_at = None if job.has("never_finish") else job.due
            with state.lock:
                state.jobs[request_id] = job
            restored += 1
            if job.done_at is None and config.render:
                self._scheduler.at(now, partial(self._start_render, request_id))
            elif job.webhook and job.done_at is not None and not job.finished:
                self._scheduler.at(job.done_at, partial(self.finish, request_id))
        if restored:
            log.info("sandbox restored %s request(s) from %s", restored, journal.root)

    def _start_render(self, request_id: str) -> None:
        if self._pool is not None and request_id in self._state.jobs:
            self._pool.submit(self._render, request_id)

    def _render(self, request_id: str) -> None:
        """Fetch image_url like fal, render the clip, then settle when the job is due."""
        state, config = self._state, self._state.config
        job = state.jobs.get(request_id)
        if job is None or job.failure is CANCELLED or state.workdir is None:
            return
        url, job.image_url = job.image_url or "", None
        failure: Failure | None = None
        path = state.workdir / f"{request_id}.mp4"
        size = 0
        try:
            image = render.fetch_image(url, timeout=config.image_timeout,
                                       max_bytes=config.max_image_bytes)
            self._observed.record_fetch(request_id, url, None)
            failure = job.scripted_failure()
            if failure is None:
                size = render.render_clip(image, path, seconds=job.seconds, width=config.width,
                                          fps=config.fps)
        except render.FetchError as exc:
            self._observed.record_fetch(request_id, url, str(exc))
            failure = FETCH_FAILED
        except render.DecodeError as exc:
            log.info("sandbox %s: %s", request_id, exc)
            failure = DECODE_FAILED
        except Exception:
            log.exception("sandbox render of %s failed", request_id)
            failure = RUNNER_DISCONNECTED
        now = time.monotonic()
        with state.lock:
            if job.failure is CANCELLED or state.jobs.get(request_id) is not job:
                path.unlink(missing_ok=True)
                return
            job.failure = failure
            if failure is None:
                job.video_path, job.video_size = str(path), size
                if state.journal is not None:
                    state.journal.update(request_id, video_size=size)
            job.done_at = None if job.has("never_finish") else max(job.due, now)
            done_at = job.done_at
        if done_at is not None:
            self._scheduler.at(done_at, partial(self.finish, request_id))
