"""In-flight capacity benchmark: how many fal jobs one worker process tracks, how often each
is checked, at what memory and CPU (the README's Performance targets: >= 5,000 in flight,
each checked at least every 10 s, RSS <= 300 MB), beside a naive worker that polls inside its tasks.

    .venv/bin/python bench/inflight.py [--jobs 5000] [--window 60] [--interval 10]
                                       [--concurrency 8] [--poll 1.0] [--naive-window S]
                                       [--store surrealkv|mem|ws] [--workers N]
                                       [--no-keep-alive] [--skip-naive]
                                       [--profile PATH] [--patch FILE] [--keep]

Processes (all on 127.0.0.1; every one stopped by pid and the temp dir removed on exit,
failure or SIGTERM; children also get SIGKILL if this script dies):

- the sandbox provider as its own process (`python -m sandbox --no-render`), with a
  run time far longer than the benchmark, so every job stays IN_PROGRESS;
- a private `redis-server` on a free port;
- "our" worker process (this file, `--role worker`): opens the embedded store
  (`surrealkv://` in the temp dir, or `mem://`), seeds the demo templates, a user, one
  start image and N pending jobs through `store.jobs.create_with_charge`, enqueues one
  `videojobs.submit` per job (as the API does), then runs a real Celery worker (threads
  pool, `--concurrency` slots, `worker_main` in the main thread) and the sweeper loop
  (`workers.pipeline.sweep` at 1 s ticks, as beat triggers it) on that one store;
- with `--workers N` (and `--store ws`: the WebSocket SurrealDB stand-in of
  tests/support/surreal_server.py, its own process), N-1 more worker processes that only
  consume tasks (status-check batches included), like more `worker` lines;
- the naive reference (`--role naive`): a Celery worker of the same pool size whose task
  submits to fal, then loops `status` + `time.sleep(interval)` until done (one slot held
  per job; no store).

Measured over the window, which starts once fal has accepted all N of our jobs: worker
VmRSS/VmHWM (/proc/<pid>/status, sampled every poll), worker CPU % of one core
(utime+stime from /proc/<pid>/stat), jobs in flight (one GROUP BY in the worker, at the
window's end), fal status calls/s, and the gaps between two status checks of one job.
Gaps come from the sandbox process itself, without wrapping any of our code: it runs at
`--log-level DEBUG`, where its request handler logs every request with a millisecond
timestamp, so each status call of each request id has its time (exact to ~1 ms; the log
line is written as the answer goes out). As a cross-check, this script also polls
`GET /_sandbox/requests` every `--poll` seconds and times each request's status-call
counter increments (exact to within one poll either way). A job that stops being checked
shows up as an open gap at the window's end, so starvation cannot hide.
"""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODEL = "fal-ai/kling-video/v2.1/standard/image-to-video"
TEMPLATE = "night-life-roller"
NAIVE_TASK = "bench.naive_track"
NAIVE_QUEUE = "naive"
CLK_TCK = os.sysconf("SC_CLK_TCK")
RSS_TARGET_MB = 300
MIN_IN_FLIGHT = 5000
RSS_PROJECT_MINUTES = 10  # the RSS target is a steady state: growth must not cross it soon


# ---- shared helpers ----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tiny_png(width: int = 16, height: int = 9) -> bytes:
    """A valid solid-colour PNG (the start image every job points at)."""
    from app.demo.sample import solid_png

    return solid_png(width, height)


class Events:
    """JSON lines from a child to the parent (one write per line)."""

    def __init__(self, path: str) -> None:
        self._fh = open(path, "a", buffering=1)
        self._lock = threading.Lock()

    def emit(self, kind: str, **data: Any) -> None:
        with self._lock:
            self._fh.write(json.dumps({"event": kind, "t": time.time(), **data}) + "\n")


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line being written
    return out


# ---- child: our worker process -----------------------------------------------------------

def run_worker(args: argparse.Namespace) -> int:
    """Seed N pending jobs, enqueue their submits, run Celery worker + sweeper in one process."""
    import logging

    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    events = Events(args.events)
    work = Path(args.work)
    if args.patch:
        # A candidate fix, monkeypatched in before anything runs (see --patch).
        exec(compile(Path(args.patch).read_text(), args.patch, "exec"), {"__name__": "patch"})
        events.emit("patched", file=args.patch)

    from app.config import Settings
    from app.ids import new_id
    from app.storage import LocalStorage, library_key
    from app.store import DatabaseConfig, Store
    from app.store.jobs import NewJob
    from app.video_templates import load_template_file, render_inputs, resolve_variables
    from workers.celery_app import make_celery
    from workers.context import build_context, set_context

    settings = Settings(
        secret_key="bench-secret", surrealdb_url=args.db_url, redis_url=args.redis,
        storage_dir=str(work / "storage"), rate_limit_per_minute=0, embedded=True,
        fal_key="bench:key", fal_queue_url=args.fal, fal_jwks_url=f"{args.fal}/_sandbox/jwks",
        allow_private_downloads=True, status_check_interval=args.interval,
        job_timeout_seconds=3600)
    store = Store.open(DatabaseConfig(args.db_url))
    storage = LocalStorage(Path(settings.storage_dir), "bench-secret")

    if args.secondary:
        # A second worker process: no seeding, no sweeper; it takes tasks like any worker.
        celery = make_celery(settings)
        set_context(build_context(settings, celery, store=store, storage=storage))
        return _serve(args, events, celery, store, None, work)

    # Seed: templates, one user with enough credits, one start image, N pending jobs.
    templates = load_template_file(ROOT / "app" / "demo" / "templates.yaml")
    for template in templates:
        store.templates.upsert(template.to_record())
    template = next(t for t in templates if t.slug == TEMPLATE)
    cost = int(template.durations["5"])
    user = store.users.create("bench@example.com", None, credits=cost * args.jobs)
    key = library_key(user["id"], "png")
    image = tiny_png()
    storage.put_stream(key, io.BytesIO(image), "image/png")
    store.library.add(key=key, user_id=user["id"], kind="image", content_type="image/png",
                      size=len(image))
    variables = resolve_variables(template, {})
    prompt, negative = render_inputs(template, variables)
    t0 = time.time()
    job_ids = []
    for _ in range(args.jobs):
        job_id = new_id()
        store.jobs.create_with_charge(NewJob(
            job_id=job_id, user_id=user["id"], email=user["email"], template_id=template.slug,
            model=template.model, prompt=prompt, negative_prompt=negative, start_key=key,
            duration="5", variables=variables, credits=cost, timeout_seconds=3600))
        job_ids.append(job_id)
    created = time.time() - t0

    celery = make_celery(settings)
    ctx = build_context(settings, celery, store=store, storage=storage)
    set_context(ctx)
    t0 = time.time()
    for job_id in job_ids:
        ctx.enqueuer.submit(job_id)
    enqueued = time.time() - t0
    del job_ids
    events.emit("seeded", jobs=args.jobs, create_seconds=round(created, 2),
                enqueue_seconds=round(enqueued, 2))
    return _serve(args, events, celery, store, ctx, work)


def _serve(args: argparse.Namespace, events: Events, celery: Any, store: Any, ctx: Any,
           work: Path) -> int:
    """Run the Celery worker in the main thread; the sweeper loop too when `ctx` is given."""
    from workers import pipeline

    stop = threading.Event()

    def sweeper() -> None:
        # Beat sends one sweep a second; this loop runs them back to back when a sweep takes
        # longer than the tick (beat would start overlapping sweeps in other slots).
        tick = time.monotonic()
        while not stop.is_set():
            started, m0 = time.time(), time.monotonic()
            try:
                report = pipeline.sweep(ctx)
                events.emit("sweep", start=started, seconds=round(time.monotonic() - m0, 4),
                            checked=report.checked, resent=report.resent,
                            errors=len(report.errors), timed_out=report.timed_out,
                            waiting=report.resend_waiting, rebuilt=report.rebuilt_seconds)
            except Exception as exc:  # keep sweeping; the parent reports it
                events.emit("sweep_error", start=started, error=repr(exc))
            tick += pipeline.SWEEP_PERIOD_SECONDS
            now = time.monotonic()
            if tick < now:
                tick = now
            stop.wait(tick - now)

    def counter() -> None:
        # Counts only when the parent asks (a file appears): a periodic GROUP BY would add
        # store load that is the benchmark's, not the pipeline's.
        request = work / "count.request"
        while not stop.wait(0.25):
            if not request.exists():
                continue
            tag = request.read_text().strip()
            request.unlink()
            try:
                rows = store.db.query("SELECT status, phase, count() AS n FROM video_job "
                                      "GROUP BY status, phase;")[0]
                events.emit("counts", tag=tag, rows=rows)
            except Exception as exc:
                events.emit("count_error", tag=tag, error=repr(exc))

    from celery.signals import task_prerun

    done = {"checks": 0}
    done_lock = threading.Lock()

    def count_checks(sender: Any = None, args: Any = None, **_: Any) -> None:
        if getattr(sender, "name", None) == "videojobs.check" and args:
            with done_lock:
                done["checks"] += len(args[0])

    task_prerun.connect(count_checks, weak=False)

    def reporter() -> None:
        while not stop.wait(1.0):
            events.emit("checks_done", n=done["checks"], pid=os.getpid(),
                        cpu=proc_cpu_seconds(os.getpid()))

    threads = [threading.Thread(target=counter, name="bench-counter", daemon=True),
               threading.Thread(target=reporter, name="bench-reporter", daemon=True)]
    if ctx is not None:
        threads.append(threading.Thread(target=sweeper, name="bench-sweeper", daemon=True))
    for thread in threads:
        thread.start()
    events.emit("worker_start")
    try:
        celery.worker_main(["worker", "--pool=threads", f"--concurrency={args.concurrency}",
                            "--queues=control,checks,transfer", "--loglevel=WARNING",
                            f"--hostname=bench-inflight-{os.getpid()}@%h"])
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        store.close()
    return 0


# ---- child: the naive reference ----------------------------------------------------------

def run_naive(args: argparse.Namespace) -> int:
    """A worker of the same pool size whose task polls fal with time.sleep (one slot per job)."""
    import base64
    import logging

    from celery import Celery

    from app.fal import FalClient

    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    events = Events(args.events)
    app = Celery("naive", broker=args.redis, set_as_current=True)
    app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True,
                    task_acks_late=True, worker_prefetch_multiplier=1,
                    broker_transport_options={"visibility_timeout": 7200},
                    worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
    fal = FalClient(args.fal, "bench:key")
    image = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
    interval = float(args.interval)

    @app.task(name=NAIVE_TASK)
    def naive_track(index: int) -> None:
        submission = fal.submit(MODEL, {"prompt": f"naive job {index}", "image_url": image,
                                        "duration": "5"}, None)
        while True:  # the anti-pattern our workers avoid: a slot held while fal works
            status = fal.status(submission.status_url)
            if status.status == "COMPLETED":
                return
            time.sleep(interval)

    for index in range(args.jobs):
        app.send_task(NAIVE_TASK, args=[index], queue=NAIVE_QUEUE)
    events.emit("seeded", jobs=args.jobs)
    events.emit("worker_start")
    app.worker_main(["worker", "--pool=threads", f"--concurrency={args.concurrency}",
                     f"--queues={NAIVE_QUEUE}", "--loglevel=WARNING",
                     f"--hostname=bench-naive-{os.getpid()}@%h"])
    return 0


# ---- parent: processes -------------------------------------------------------------------

def _die_with_parent() -> None:
    """Children get SIGKILL if this script dies without cleaning up (Linux prctl)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Processes:
    """Every child this script starts; stop() ends them by pid (TERM, then KILL)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        # TMPDIR inside the work dir: whatever a child leaves behind goes with it.
        self.env = {**os.environ, "TMPDIR": str(work / "tmp"), "PYTHONUNBUFFERED": "1",
                    "AWS_EC2_METADATA_DISABLED": "true"}
        (work / "tmp").mkdir(exist_ok=True)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.work / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log,
                                    stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self.procs.append((name, proc))
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], grace: float = 20.0) -> None:
        if proc.poll() is None:
            try:
                proc.terminate()
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            except ProcessLookupError:
                pass

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            self.stop(proc, grace=10)

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.work / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_until(check: Any, timeout: float, what: str, proc: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                out[name] = int(value.split()[0])
    return out


def proc_cpu_seconds(pid: int) -> float:
    return sum(proc_cpu_split(pid))


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime, stime


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


# ---- parent: observing the sandbox ------------------------------------------------------

@dataclass
class Snapshot:
    before: float
    after: float

    @property
    def mid(self) -> float:
        return (self.before + self.after) / 2


def _pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))] if values else 0.0


@dataclass
class Observer:
    """Polls /_sandbox/requests; times each request's status-call counter increments."""

    base: str
    period: float
    snaps: list[Snapshot] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    increments: dict[str, list[int]] = field(default_factory=dict)  # rid -> snapshot indexes
    totals: list[tuple[int, dict[str, int]]] = field(default_factory=list)
    poll_seconds: list[float] = field(default_factory=list)
    failures: int = 0

    def __post_init__(self) -> None:
        import requests

        self._session = requests.Session()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="observer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        tick = time.monotonic()
        while not self._stop.is_set():
            self.poll()
            tick += self.period
            now = time.monotonic()
            if tick < now:
                tick = now
            self._stop.wait(tick - now)

    def poll(self) -> None:
        before = time.time()
        try:
            # /requests copies the job list under the sandbox's lock and describes each job
            # outside it (/observations would hold the lock while copying every log).
            body = self._session.get(f"{self.base}/_sandbox/requests", timeout=30).json()
        except Exception:
            self.failures += 1
            return
        after = time.time()
        with self._lock:
            index = len(self.snaps)
            self.snaps.append(Snapshot(before, after))
            self.poll_seconds.append(after - before)
            calls = 0
            for info in body:
                rid, count = info["request_id"], info["status_calls"]
                calls += count
                if count > self.counts.get(rid, 0):
                    self.counts[rid] = count
                    self.increments.setdefault(rid, []).append(index)
            self.totals.append((index, {"accepted": len(body), "status_calls": calls}))

    def latest_totals(self) -> dict[str, int]:
        with self._lock:
            return dict(self.totals[-1][1]) if self.totals else {}

    def totals_at(self, t: float) -> tuple[float, dict[str, int]]:
        """The first snapshot taken at or after t."""
        with self._lock:
            for index, totals in self.totals:
                if self.snaps[index].before >= t:
                    return self.snaps[index].mid, totals
            index, totals = self.totals[-1]
            return self.snaps[index].mid, totals

    def gaps(self, start: float, end: float, interval: float) -> dict[str, Any]:
        """Gaps between consecutive status calls of one request, both seen inside
        [start, end], plus each request's open gap from its last call to `end`.

        A call counted first in snapshot k happened in (snapshot k-1, snapshot k], so the
        gap between calls first seen in snapshots a and b is estimated as mid_b - mid_a and
        lies within (before_{b-1} - after_a, after_b - before_{a-1}).
        """
        with self._lock:
            snaps = list(self.snaps)
            increments = {k: list(v) for k, v in self.increments.items()}
        est: list[float] = []
        worst = (0.0, 0.0, 0.0)  # estimate, low bound, high bound
        late_est = late_sure = never = 0
        for all_idxs in increments.values():
            idxs = [i for i in all_idxs if start <= snaps[i].mid <= end]
            if not idxs:
                never += 1
                continue
            job_est = job_low = 0.0
            for a, b in zip(idxs, idxs[1:], strict=False):
                gap = snaps[b].mid - snaps[a].mid
                low = max(0.0, snaps[b - 1].before - snaps[a].after)
                high = snaps[b].after - snaps[max(0, a - 1)].before
                est.append(gap)
                job_est, job_low = max(job_est, gap), max(job_low, low)
                if gap > worst[0]:
                    worst = (gap, low, high)
            last = idxs[-1]
            gap = end - snaps[last].mid  # still open at the window's end
            low = max(0.0, end - snaps[last].after)
            job_est, job_low = max(job_est, gap), max(job_low, low)
            if gap > worst[0]:
                worst = (gap, low, end - snaps[max(0, last - 1)].before)
            late_est += job_est > interval
            late_sure += job_low > interval
        est.sort()
        return {"count": len(est), "p50": _pct(est, 0.5), "p99": _pct(est, 0.99),
                "max": worst[0], "max_low": worst[1], "max_high": worst[2],
                "jobs": len(increments), "never": never, "late_est": late_est,
                "late_sure": late_sure}


_STATUS_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) DEBUG sandbox\.server: "
                          r"GET /\S+/requests/([0-9a-f-]+)/status")
_ACCEPT_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO sandbox\.protocol: "
                          r"sandbox accepted ([0-9a-f-]+) ")


def _log_time(stamp: str) -> float:
    from datetime import datetime

    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _gap_stats(per_job: dict[str, list[float]], lo: float, hi: float, interval: float
               ) -> dict[str, Any]:
    """Gaps between consecutive calls with both calls inside [lo, hi], plus each job's
    open gap from its last call in [lo, hi] to `hi`; a job with no call inside is `never`."""
    gaps: list[float] = []
    worst = 0.0
    late = never = 0
    for times in per_job.values():
        inside = [t for t in times if lo <= t <= hi]
        if not inside:
            never += 1
            continue
        job_max = hi - inside[-1]  # still open at the end
        for a, b in zip(inside, inside[1:], strict=False):
            gaps.append(b - a)
            job_max = max(job_max, b - a)
        worst = max(worst, job_max)
        late += job_max > interval
    gaps.sort()
    return {"count": len(gaps), "p50": _pct(gaps, 0.5), "p99": _pct(gaps, 0.99),
            "max": worst, "max_low": worst, "max_high": worst, "jobs": len(per_job),
            "never": never, "late_est": late, "late_sure": late, "source": "log"}


def log_gaps(path: Path, since: float, start: float, end: float, interval: float
             ) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Exact gaps from the sandbox's request log, for requests accepted between `since`
    and `start` (this phase's): inside the window [start, end], and before it (from each
    request's acceptance, which counts as its first "call", to `start`)."""
    if not path.exists():
        return None
    accepted: dict[str, float] = {}
    calls: dict[str, list[float]] = {}
    with open(path, errors="replace") as fh:
        for line in fh:
            m = _STATUS_LINE.match(line)
            if m:
                t = _log_time(m.group(1))
                if t <= end:
                    calls.setdefault(m.group(2), []).append(t)
                continue
            m = _ACCEPT_LINE.match(line)
            if m:
                t = _log_time(m.group(1))
                if since <= t <= start:
                    accepted[m.group(2)] = t
    if not accepted:
        return None
    jobs = {rid: [at] + calls.get(rid, []) for rid, at in accepted.items()}
    return (_gap_stats(jobs, start, end, interval),
            _gap_stats(jobs, since, start, interval))


# ---- parent: the runs --------------------------------------------------------------------

@dataclass
class Result:
    label: str
    created: int = 0
    submitted: int = 0
    in_flight: int = 0
    waiting: int = 0
    status_rate: float = 0.0
    gap: dict[str, Any] = field(default_factory=dict)
    gap_before: dict[str, Any] = field(default_factory=dict)
    rss_start_mb: float = 0.0
    rss_mb: float = 0.0
    rss_max_mb: float = 0.0
    hwm_mb: float = 0.0
    cpu_pct: float = 0.0
    sandbox_cpu_pct: float = 0.0
    threads: int = 0
    window: float = 0.0
    submit_seconds: float | None = None
    poll_ms: float = 0.0
    notes: list[str] = field(default_factory=list)
    sweeps: dict[str, Any] = field(default_factory=dict)
    rss_samples: list[tuple[float, int]] = field(default_factory=list)  # (s, kB), worker 1
    cpu_seconds: list[float] = field(default_factory=list)  # per worker process, in window
    pids: list[int] = field(default_factory=list)
    others_rss_mb: list[float] = field(default_factory=list)
    checks_by_worker: list[int] = field(default_factory=list)  # checks run in the window

    def rss_at(self, t: float) -> float:
        """Worker 1's RSS (MB) sampled closest to t seconds into the window."""
        if not self.rss_samples:
            return 0.0
        return min(self.rss_samples, key=lambda s: abs(s[0] - t))[1] / 1024

    @property
    def tail_seconds(self) -> float:
        """The span the growth target looks at: the last 5 minutes (or half a shorter window)."""
        return min(300.0, self.window / 2)

    @property
    def tail_growth_mb(self) -> float:
        return self.rss_at(self.window) - self.rss_at(self.window - self.tail_seconds)

    @property
    def cpu_ms_per_check(self) -> float:
        checks = sum(self.checks_by_worker) or self.status_rate * self.window
        return 1000 * sum(self.cpu_seconds) / max(1.0, checks)


def measure_window(proc: subprocess.Popen[bytes], sandbox_pid: int, seconds: float,
                   poll: float, others: list[subprocess.Popen[bytes]] | None = None,
                   store_pid: int | None = None) -> dict[str, Any]:
    """Sample the workers' memory through the window (with times); CPU at both ends."""
    procs = [proc, *(others or [])]
    start = time.time()
    store0 = proc_cpu_seconds(store_pid) if store_pid else 0.0
    split0 = proc_cpu_split(proc.pid)
    cpu0 = [proc_cpu_seconds(p.pid) for p in procs]
    scpu0 = proc_cpu_seconds(sandbox_pid)
    rss_start = proc_status(proc.pid)["VmRSS"]
    rss_max = rss_start
    samples: list[tuple[float, int]] = [(0.0, rss_start)]
    end = start + seconds
    while time.time() < end:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"worker exited during the window ({p.returncode})")
        rss = proc_status(proc.pid)["VmRSS"]
        samples.append((time.time() - start, rss))
        rss_max = max(rss_max, rss)
        time.sleep(min(poll, max(0.0, end - time.time())))
    stop = time.time()
    cpu1 = [proc_cpu_seconds(p.pid) for p in procs]
    split1 = proc_cpu_split(proc.pid)
    scpu1 = proc_cpu_seconds(sandbox_pid)
    store1 = proc_cpu_seconds(store_pid) if store_pid else 0.0
    mem = proc_status(proc.pid)
    samples.append((stop - start, mem["VmRSS"]))
    return {"start": start, "end": stop, "cpu": 100 * (cpu1[0] - cpu0[0]) / (stop - start),
            "cpu_seconds": [b - a for a, b in zip(cpu0, cpu1, strict=True)],
            "sandbox_cpu": 100 * (scpu1 - scpu0) / (stop - start), "rss": mem["VmRSS"],
            "rss_start": rss_start, "hwm": mem["VmHWM"], "rss_max": max(rss_max, mem["VmRSS"]),
            "threads": threads_of(proc.pid), "rss_samples": samples,
            "pids": [p.pid for p in procs],
            "user_system": (split1[0] - split0[0], split1[1] - split0[1]),
            "store_cpu": 100 * (store1 - store0) / (stop - start) if store_pid else None,
            "others_rss": [proc_status(p.pid)["VmRSS"] for p in procs[1:]]}


def fill(result: Result, w: dict[str, Any], observer: Observer, args: argparse.Namespace,
         sandbox_log: Path, since: float) -> None:
    time.sleep(max(1.0, args.poll * 1.5))  # a snapshot (and log lines) past the window's end
    result.window = w["end"] - w["start"]
    t0, a = observer.totals_at(w["start"])
    t1, b = observer.totals_at(w["end"])
    result.status_rate = (b["status_calls"] - a["status_calls"]) / max(1e-9, t1 - t0)
    polled = observer.gaps(w["start"], w["end"], float(args.interval))
    exact = log_gaps(sandbox_log, since, w["start"], w["end"], float(args.interval))
    result.gap = exact[0] if exact else {**polled, "source": "poll"}
    result.gap_before = exact[1] if exact else {}
    if exact:
        result.notes.append(
            f"{result.label.split(':')[0]}: cross-check from /_sandbox/requests polling "
            f"(+/- {args.poll} s): longest gap {polled['max']:.1f} s "
            f"({polled['max_low']:.1f}-{polled['max_high']:.1f}), p99 {polled['p99']:.1f} s")
    result.rss_start_mb, result.rss_mb = w["rss_start"] / 1024, w["rss"] / 1024
    result.rss_max_mb, result.hwm_mb = w["rss_max"] / 1024, w["hwm"] / 1024
    result.cpu_pct, result.sandbox_cpu_pct = w["cpu"], w["sandbox_cpu"]
    result.threads = w["threads"]
    result.rss_samples = w.get("rss_samples", [])
    result.cpu_seconds = w.get("cpu_seconds", [])
    result.pids = w.get("pids", [])
    result.others_rss_mb = [r / 1024 for r in w.get("others_rss", [])]
    polls = sorted(observer.poll_seconds)
    result.poll_ms = 1000 * _pct(polls, 0.5)


def ask_counts(work: Path, events: Path, tag: str) -> dict[str, Any] | None:
    """Ask the worker for job counts by status (it runs one GROUP BY) and wait for them."""
    (work / "count.request").write_text(tag)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [e for e in read_events(events) if e["event"] == "counts" and e.get("tag") == tag]
        if found:
            return found[-1]
        time.sleep(0.2)
    return None


def run_ours(args: argparse.Namespace, procs: Processes, work: Path, fal: str, redis: str,
             observer: Observer, sandbox_pid: int) -> Result:
    label = f"ours: {args.workers} worker process{'es' if args.workers > 1 else ''}"
    if args.no_keep_alive:
        label += ", no keep-alive"
    result = Result(label)
    events = work / "worker.events"
    db_url = ({"surrealkv": f"surrealkv://{work / 'db'}", "mem": "mem://"}.get(args.store)
              or args.db_url)
    argv = [sys.executable, str(Path(__file__).resolve()), "--role", "worker", "--jobs",
            str(args.jobs), "--interval", str(args.interval), "--concurrency",
            str(args.concurrency), "--redis", redis, "--fal", fal, "--work", str(work),
            "--db-url", db_url, "--events", str(events)]
    if args.patch:
        argv += ["--patch", str(Path(args.patch).resolve())]
    proc = procs.start("worker", argv)
    t_boot = time.time()
    wait_until(lambda: any(e["event"] == "worker_start" for e in read_events(events)),
               args.seed_timeout, "the worker to seed its jobs", proc)
    others = [procs.start(f"worker{i + 2}", [*argv, "--secondary"])
              for i in range(args.workers - 1)]
    seeded = next(e for e in read_events(events) if e["event"] == "seeded")
    result.notes.append(f"seeding {args.jobs} jobs via create_with_charge took "
                        f"{seeded['create_seconds']} s, enqueueing their submits "
                        f"{seeded['enqueue_seconds']} s (boot to ready "
                        f"{time.time() - t_boot:.0f} s)")
    if args.patch:
        result.notes.append(f"PATCHED worker: {args.patch}")
    t_submit = time.time()
    try:
        wait_until(lambda: observer.latest_totals().get("accepted", 0) >= args.jobs,
                   args.submit_timeout, "fal to accept every job", proc)
        result.submit_seconds = time.time() - t_submit
    except RuntimeError as exc:
        if proc.poll() is not None:
            raise
        result.notes.append(f"not all jobs submitted in {args.submit_timeout:.0f} s: {exc}")
    profiler = None
    if args.profile:
        # --gil: only the thread holding the GIL is sampled, i.e. where Python time goes.
        profiler = threading.Timer(min(10.0, args.window / 4), lambda: subprocess.run(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking", "--gil",
             "--format", "raw", "-d", str(int(min(20, args.window / 2))), "-r", "50",
             "-o", args.profile, "-p", str(proc.pid)], capture_output=True, timeout=120))
        profiler.start()
    w = measure_window(proc, sandbox_pid, args.window, args.poll, others,
                       store_pid=args.store_pid)
    user, system = w["user_system"]
    result.notes.append(f"worker 1 CPU split: {100 * user / max(1e-9, user + system):.0f} % "
                        f"user, {100 * system / max(1e-9, user + system):.0f} % system (kernel)")
    if w.get("store_cpu") is not None:
        result.notes.append(f"store server process (ws://, one engine): {w['store_cpu']:.0f} % "
                            "of a core in the window")
    if others:
        result.notes.append("other worker processes' VmRSS at window end: " + ", ".join(
            f"{proc_status(o.pid)['VmRSS'] / 1024:.0f} MB" for o in others))
    counts = ask_counts(work, events, "end")
    if profiler is not None:
        profiler.join()
        result.notes.append(f"py-spy --gil profile (collapsed stacks) in {args.profile}")
    result.created = args.jobs
    result.submitted = int(observer.latest_totals().get("accepted", 0))
    if counts:
        rows = counts["rows"]
        result.in_flight = sum(r["n"] for r in rows if r["status"] == "processing")
        result.waiting = sum(r["n"] for r in rows if r["status"] == "pending")
        result.notes.append("store at window end: " + ", ".join(
            f"{r['status']}/{r.get('phase')}={r['n']}" for r in rows))
    all_events = read_events(events)
    sweeps = [e for e in all_events if e["event"] == "sweep"]
    in_window = [e for e in sweeps if w["start"] <= e["start"] <= w["end"]]
    if in_window:
        durations = sorted(e["seconds"] for e in in_window)
        result.sweeps = {"n": len(in_window), "mean": sum(durations) / len(durations),
                         "p95": _pct(durations, 0.95), "max": durations[-1],
                         "checked": sum(e["checked"] for e in in_window),
                         "max_checked": max(e["checked"] for e in in_window),
                         "errors": sum(e["errors"] for e in in_window),
                         "resent_total": sum(e["resent"] for e in sweeps),
                         "waiting_max": max((e.get("waiting") or 0 for e in sweeps), default=0),
                         "rebuilds": [e["rebuilt"] for e in in_window if e.get("rebuilt")],
                         "longest_before": max((e["seconds"] for e in sweeps
                                                if e["start"] < w["start"]), default=0.0)}
    errors = [e for e in all_events if e["event"] == "sweep_error"]
    if errors:
        result.notes.append(f"{len(errors)} sweeps raised, first: {errors[0]['error']}")
    fill(result, w, observer, args, work / "sandbox.log", t_boot)
    done = [e for e in all_events if e["event"] == "checks_done"]
    for pid in w["pids"]:
        mine = [e for e in done if e["pid"] == pid]
        at_start = max((e["n"] for e in mine if e["t"] <= w["start"]), default=0)
        at_end = max((e["n"] for e in mine if e["t"] <= w["end"]), default=0)
        result.checks_by_worker.append(at_end - at_start)
    for other in others:
        procs.stop(other, grace=30)
    procs.stop(proc, grace=30)
    return result


def run_naive_ref(args: argparse.Namespace, procs: Processes, work: Path, fal: str,
                  redis: str, observer: Observer, sandbox_pid: int) -> Result:
    import redis as redis_lib

    result = Result("naive: poll + sleep in the task")
    events = work / "naive.events"
    since = time.time()
    proc = procs.start("naive", [
        sys.executable, str(Path(__file__).resolve()), "--role", "naive", "--jobs",
        str(args.jobs), "--interval", str(args.interval), "--concurrency",
        str(args.concurrency), "--redis", redis, "--fal", fal, "--work", str(work),
        "--events", str(events)])
    wait_until(lambda: any(e["event"] == "worker_start" for e in read_events(events)),
               args.seed_timeout, "the naive worker to start", proc)
    time.sleep(min(args.interval, 5))  # let it fill its slots
    w = measure_window(proc, sandbox_pid, args.naive_window, args.poll)
    result.created = args.jobs
    result.submitted = int(observer.latest_totals().get("accepted", 0))
    result.in_flight = result.submitted  # none can finish: fal runs longer than the bench
    result.waiting = int(redis_lib.Redis.from_url(redis).llen(NAIVE_QUEUE))
    result.notes.append(f"naive: {result.waiting:,} messages still in the Redis queue, "
                        f"{args.jobs - result.waiting - result.submitted} reserved by the "
                        "worker but not started")
    fill(result, w, observer, args, work / "sandbox.log", since)
    procs.stop(proc, grace=3)  # its tasks never end: a warm shutdown would wait forever
    return result


def print_report(args: argparse.Namespace, ours: Result, naive: Result | None) -> bool:
    cols = [ours] + ([naive] if naive else [])
    interval = float(args.interval)

    def row(name: str, fmt: Any, target: str = "") -> None:
        print(f"| {name} | " + " | ".join(fmt(r) for r in cols) + f" | {target} |")

    print(f"\n{args.jobs:,} jobs; window {ours.window:.0f} s"
          + (f" (naive {naive.window:.0f} s)" if naive else "")
          + f"; STATUS_CHECK_INTERVAL={args.interval} s; {args.concurrency} Celery threads; "
          f"store {args.store}; {os.cpu_count()} cores; gaps "
          + ("from the sandbox's request log (~1 ms)" if ours.gap.get("source") == "log"
             else f"from polling (+/- {args.poll} s)")
          + f"; a /_sandbox/requests poll took {ours.poll_ms:.0f} ms median\n")
    print("| metric | " + " | ".join(r.label for r in cols) + " | target |")
    print("|---|" + "---|" * len(cols) + "---|")
    row("jobs created", lambda r: f"{r.created:,}")
    row("accepted by fal (submitted)", lambda r: f"{r.submitted:,}")
    row("in flight (processing, at fal)", lambda r: f"**{r.in_flight:,}**",
        f">= {MIN_IN_FLIGHT:,}")
    row("still waiting (pending / queued message)", lambda r: f"{r.waiting:,}")
    row("time until fal had all N", lambda r: "-" if r.submit_seconds is None
        else f"{r.submit_seconds:.0f} s")
    row("fal status calls/s", lambda r: f"{r.status_rate:.0f}",
        f">= {args.jobs / interval:.0f} (N / interval)")
    row("check gaps seen in window", lambda r: f"{r.gap['count']:,}")
    row("gap p50 / p99", lambda r: f"{r.gap['p50']:.2f} s / {r.gap['p99']:.2f} s")
    row("longest gap between 2 checks of a job",
        lambda r: f"**{r.gap['max']:.2f} s**" if r.gap.get("source") == "log" else
        f"**{r.gap['max']:.1f} s** ({r.gap['max_low']:.1f}-{r.gap['max_high']:.1f})",
        f"<= {interval:.0f} s")
    row(f"jobs with a gap > {interval:.0f} s", lambda r: f"{r.gap['late_est']:,}"
        if r.gap.get("source") == "log" else
        f"{r.gap['late_est']:,} (certainly: {r.gap['late_sure']:,})", "0")
    row("submitted jobs never checked in window", lambda r: f"{r.gap['never']:,}", "0")
    row("before the window (submitting): longest gap / p99",
        lambda r: f"{r.gap_before['max']:.2f} s / {r.gap_before['p99']:.2f} s"
        if r.gap_before else "-")
    row("worker VmRSS start -> end of window",
        lambda r: f"{r.rss_start_mb:.0f} -> {r.rss_mb:.0f} MB "
        f"({60 * (r.rss_mb - r.rss_start_mb) / max(1.0, r.window):+.0f} MB/min)")
    row("worker VmRSS max sampled / VmHWM", lambda r: f"**{r.rss_max_mb:.0f}** / {r.hwm_mb:.0f} MB",
        f"<= {RSS_TARGET_MB} MB")
    row(f"worker 1 VmRSS growth over the last {ours.tail_seconds / 60:.1f} min",
        lambda r: f"**{r.tail_growth_mb:+.1f} MB**" if r.rss_samples else "-", "<= +5 MB")
    row("worker 1 VmRSS each minute", lambda r: " / ".join(
        f"{r.rss_at(t):.0f}" for t in range(0, int(r.window) + 1, 60)) + " MB"
        if r.rss_samples else "-")
    row("worker CPU (% of one core)", lambda r: f"{r.cpu_pct:.0f} %"
        + (f" (+ {', '.join(f'{100 * c / max(1.0, r.window):.0f} %' for c in r.cpu_seconds[1:])})"
           if len(r.cpu_seconds) > 1 else ""))
    row("our CPU per status check (all workers)", lambda r: f"**{r.cpu_ms_per_check:.3f} ms**"
        if r.cpu_seconds else "-", "<= 0.3 ms")
    row("checks run per worker process in window", lambda r: " / ".join(
        f"{n:,} ({100 * n / max(1, sum(r.checks_by_worker)):.0f} %)" for n in r.checks_by_worker)
        if r.checks_by_worker and sum(r.checks_by_worker) else "-",
        "30-70 % each" if args.workers > 1 else "")
    row("worker threads", lambda r: f"{r.threads}")
    row("sandbox CPU (% of one core)", lambda r: f"{r.sandbox_cpu_pct:.0f} %")
    if ours.sweeps:
        s = ours.sweeps
        print(f"\nsweeps in window: {s['n']}, duration mean {s['mean']:.2f} s, p95 "
              f"{s['p95']:.2f} s, max {s['max']:.2f} s; {s['checked']:,} checks (max "
              f"{s['max_checked']:,} in one sweep), {s['errors']} errors. Before the window: "
              f"longest sweep {s['longest_before']:.1f} s, {s['resent_total']:,} submit "
              "messages re-sent by the sweeper in total (up to "
              f"{s['waiting_max']:,} due ones left alone at once: still queued)")
        if s["rebuilds"]:
            print(f"schedule reconciled from the store in the window: {len(s['rebuilds'])} "
                  f"times, {1000 * sum(s['rebuilds']) / len(s['rebuilds']):.0f} ms mean, "
                  f"{1000 * max(s['rebuilds']):.0f} ms max ({ours.in_flight:,} jobs)")
    for r in cols:
        for note in r.notes:
            print(f"- {note}")
    flight_ok = ours.in_flight >= MIN_IN_FLIGHT
    gap_ok = ours.gap["max"] <= interval and ours.gap["never"] == 0
    slope = 60 * (ours.rss_mb - ours.rss_start_mb) / max(1.0, ours.window)  # MB/min
    projected = ours.rss_mb + RSS_PROJECT_MINUTES * max(0.0, slope)
    rss_ok = ours.rss_max_mb <= RSS_TARGET_MB and projected <= RSS_TARGET_MB
    growth_ok = ours.tail_growth_mb <= 5.0
    cpu_ok = ours.cpu_ms_per_check <= 0.3
    shares = [n / max(1, sum(ours.checks_by_worker)) for n in ours.checks_by_worker]
    split_ok = len(shares) < 2 or all(0.3 <= x <= 0.7 for x in shares)
    ok = flight_ok and gap_ok and rss_ok and growth_ok and cpu_ok and split_ok

    def yes(flag: bool) -> str:
        return "yes" if flag else "NO"

    verdict = (f"{ours.in_flight:,} in flight (>= {MIN_IN_FLIGHT:,}: {yes(flight_ok)}), "
               f"longest gap {ours.gap['max']:.1f} s (<= {interval:.0f} s: {yes(gap_ok)}), "
               f"RSS {ours.rss_max_mb:.0f} MB, {slope:+.0f} MB/min, {projected:.0f} MB "
               f"projected {RSS_PROJECT_MINUTES} min on (<= {RSS_TARGET_MB} MB: {yes(rss_ok)}), "
               f"{ours.tail_growth_mb:+.1f} MB over the last {ours.tail_seconds / 60:.1f} min "
               f"(<= 5 MB: {yes(growth_ok)}), {ours.cpu_ms_per_check:.3f} ms CPU per check "
               f"(<= 0.3 ms: {yes(cpu_ok)})"
               + (f", split {' / '.join(f'{100 * x:.0f} %' for x in shares)} "
                  f"(30-70 %: {yes(split_ok)})" if len(shares) > 1 else ""))
    if naive:
        verdict += (f"; a naive worker of the same size keeps {naive.in_flight:,} in flight "
                    f"({ours.in_flight / max(1, naive.in_flight):.0f}x fewer)")
    print(f"\nVERDICT: {'target MET' if ok else 'target MISSED'}: {verdict}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--window", type=float, default=60.0,
                        help="seconds measured once fal has accepted every job")
    parser.add_argument("--naive-window", type=float, default=None,
                        help="seconds for the naive reference (default: --window)")
    parser.add_argument("--interval", type=int, default=10, help="STATUS_CHECK_INTERVAL")
    parser.add_argument("--concurrency", type=int, default=8, help="Celery threads per worker")
    parser.add_argument("--poll", type=float, default=1.0,
                        help="seconds between /_sandbox/requests snapshots (gap resolution)")
    parser.add_argument("--store", choices=["surrealkv", "mem", "ws"], default="surrealkv",
                        help="ws: the WebSocket SurrealDB stand-in (tests/support) on loopback")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (more than 1 needs --store ws)")
    parser.add_argument("--no-keep-alive", action="store_true",
                        help="the sandbox closes every connection (the reference: before)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--seed-timeout", type=float, default=120.0)
    parser.add_argument("--submit-timeout", type=float, default=150.0)
    parser.add_argument("--profile", metavar="PATH", default=None,
                        help="py-spy record (--gil) our worker for 20 s mid-window into PATH")
    parser.add_argument("--patch", metavar="FILE", default=None,
                        help="python file our worker runs first: try a candidate fix by "
                        "monkeypatching, without editing the code under test")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, events)")
    # internal: the child roles
    parser.add_argument("--role", choices=["bench", "worker", "naive"], default="bench",
                        help=argparse.SUPPRESS)
    for name in ("--redis", "--fal", "--work", "--db-url", "--events"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--secondary", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "worker":
        return run_worker(args)
    if args.role == "naive":
        return run_naive(args)
    if args.naive_window is None:
        args.naive_window = args.window
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is required (apt-get install redis-server)")

    work = Path(tempfile.mkdtemp(prefix="vj-inflight-"))
    procs = Processes(work)
    observer: Observer | None = None
    surreal: Any = None

    def on_signal(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally below

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        import redis as redis_lib
        import requests

        redis_port, fal_port = free_port(), free_port()
        (work / "redis").mkdir()
        procs.start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(work / "redis")])
        redis = f"redis://127.0.0.1:{redis_port}/0"
        wait_until(lambda: redis_lib.Redis(port=redis_port).ping(), 20, "redis-server")
        sandbox = procs.start("sandbox", [
            sys.executable, "-m", "sandbox", "--host", "127.0.0.1", "--port", str(fal_port),
            "--no-render", "--queue-seconds", "1", "--run-seconds", "3600",
            # DEBUG: one timestamped line per request (gaps)
            "--log-level", "DEBUG", *(["--no-keep-alive"] if args.no_keep_alive else [])])
        fal = f"http://127.0.0.1:{fal_port}"
        wait_until(lambda: requests.get(f"{fal}/_sandbox/health", timeout=2).ok, 30,
                   "the sandbox", sandbox)
        args.store_pid = None
        if args.store == "ws":
            from tests.support.surreal_server import SurrealServer

            surreal = SurrealServer(work / "surreal").start()
            args.db_url, args.store_pid = surreal.url, surreal.pid
        elif args.workers > 1:
            raise SystemExit("--workers > 1 needs --store ws (an embedded store is one "
                             "process's)")
        observer = Observer(fal, args.poll)
        observer.start()
        print(f"[bench] work dir {work}; sandbox {fal}; redis {redis}", file=sys.stderr)
        print(f"[bench] our worker: seeding {args.jobs} jobs, submitting, then a "
              f"{args.window:.0f} s window", file=sys.stderr)
        ours = run_ours(args, procs, work, fal, redis, observer, sandbox.pid)
        naive = None
        if not args.skip_naive:
            print(f"[bench] naive worker: {args.naive_window:.0f} s window", file=sys.stderr)
            observer.stop()
            requests.post(f"{fal}/_sandbox/reset", timeout=10).raise_for_status()
            redis_lib.Redis(port=redis_port).flushall()
            observer = Observer(fal, args.poll)
            observer.start()
            naive = run_naive_ref(args, procs, work, fal, redis, observer, sandbox.pid)
        observer.stop()
        return 0 if print_report(args, ours, naive) else 1
    except BaseException:
        for name, _ in procs.procs:
            tail = procs.tail(name)
            if tail:
                print(f"--- {name}.log (tail) ---\n{tail}", file=sys.stderr)
        raise
    finally:
        if observer is not None:
            observer.stop()
        procs.stop_all()
        if surreal is not None:
            surreal.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        if args.keep:
            print(f"[bench] kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
