"""The production topology for real: the Procfile's processes on one SurrealDB server.

One topology is started for the module (its start-up is most of the cost) from the
Procfile's own lines: `web` (gunicorn, 2 processes), `worker` twice (`-n w1@%h`,
`-n w2@%h`), `beat` twice (one schedules, one stands by) and `flower`, on a real
redis-server, the test SurrealDB server (`tests/support/surreal_server.py`, or the server
named by SURREALDB_TEST_URL), moto's S3 endpoint and the sandbox provider. The tests then
do what an operator would: post jobs through both web processes, read Flower, kill -9
and SIGTERM workers, take the store away for 10 s, restart Redis empty, kill -9 the
scheduling beat. Each asserts the end state: every job ends once, one submit each at
the provider, every balance explained by its ledger.
"""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from surrealdb import RecordID

from app.demo.sample import car_design_png
from app.lifecycle import FINALIZE_LEASE_SECONDS
from app.passwords import hash_password
from app.store import DatabaseConfig, Store
from app.store.records import rows
from app.video_templates import load_template_file
from sandbox import SandboxProvider
from tests.conftest import DEMO_TEMPLATES, PASSWORD, ExternalSurreal
from tests.support.topology import ProcfileProcess, RedisServer, free_port, procfile_commands
from workers.beat import BEAT_LOCK_KEY, LOCK_TTL_SECONDS

TEMPLATE = "night-life-roller"
COST = 500
BIN = Path(sys.executable).parent
DESIGN = car_design_png(160, 90)
HUGE = 64 * 1024 * 1024  # a transfer long enough to kill a worker in the middle of it


class Topology:
    """The running processes and the parts around them."""

    def __init__(self, tmp: Path, s3_endpoint: str, surreal: Any) -> None:
        self.tmp = tmp
        self.surreal = surreal
        self.redis = RedisServer()
        self.redis.start()
        self.sandbox = SandboxProvider(
            queue_seconds=0.3, run_seconds=1.0, render=False, huge_file_bytes=HUGE,
            # fal retries a failed delivery for about two hours; a 10 s outage must not
            # lose a webhook here either.
            webhook_retries=8, webhook_backoff=1.0)
        self.sandbox.start()
        self.web_port, self.flower_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.web_port}"
        self.flower = f"http://127.0.0.1:{self.flower_port}"
        bucket = f"vj-topology-{uuid.uuid4().hex[:8]}"
        import boto3

        boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing",
                     ).create_bucket(Bucket=bucket)
        self.config = surreal_config_for(surreal)
        self.env = {
            **{k: v for k, v in os.environ.items()
               if not k.startswith(("SURREALDB_", "FAL_", "S3_", "PUBLIC_", "STORAGE_"))},
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "SECRET_KEY": "topology-secret", "SURREALDB_URL": self.config.url,
            "SURREALDB_DATABASE": self.config.database, "REDIS_URL": self.redis.url,
            "S3_BUCKET": bucket, "S3_ENDPOINT_URL": s3_endpoint, "S3_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "FAL_KEY": "topology:key", "FAL_QUEUE_URL": self.sandbox.queue_url,
            "FAL_JWKS_URL": self.sandbox.jwks_url, "PUBLIC_BASE_URL": self.base,
            "ALLOW_PRIVATE_DOWNLOADS": "true", "RATE_LIMIT_PER_MINUTE": "0",
            "STATUS_CHECK_INTERVAL": "2", "JOB_TIMEOUT_SECONDS": "1800",
            "PORT": str(self.web_port), "WEB_CONCURRENCY": "2", "WEB_THREADS": "8",
            "WORKER_CONCURRENCY": "2", "FLOWER_PORT": str(self.flower_port),
            "FLOWER_ADDRESS": "127.0.0.1", "FLOWER_UNAUTHENTICATED_API": "true",
            # The access log names the gunicorn process that answered (%(p)s = its pid).
            "GUNICORN_CMD_ARGS": "--access-logformat '%(p)s %(m)s %(U)s %(s)s'",
            "PYTHONUNBUFFERED": "1",
        }
        if self.config.user:
            self.env.update(SURREALDB_USER=self.config.user,
                            SURREALDB_PASS=self.config.password or "")
        self.store = Store.open(self.config)  # migrates, as `videojobs db migrate` would
        for template in load_template_file(DEMO_TEMPLATES):
            self.store.templates.upsert(template.to_record())
        lines = procfile_commands()
        logs = tmp / "logs"
        logs.mkdir()

        def proc(name: str, line: str, extra: str = "") -> ProcfileProcess:
            return ProcfileProcess(name, f"{lines[line]}{extra}", self.env, logs, tmp)

        self.web = proc("web", "web")
        self.workers = {n: proc(n, "worker", f" -n {n}@%h") for n in ("w1", "w2")}
        self.beats = [proc("beat1", "beat"), proc("beat2", "beat")]
        self.flower_proc = proc("flower", "flower")
        self.processes = [self.web, *self.workers.values(), *self.beats, self.flower_proc]
        for p in self.processes:
            p.start()
        self.wait_ready()

    # ----------------------------------------------------------------- readiness

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.processes:
                assert p.running, f"{p.name} exited:\n{p.log_text()[-3000:]}"
            if self._ready() and set(self.flower_workers()) >= set(self.node_names()):
                return
            time.sleep(0.5)
        raise AssertionError("topology did not become ready:\n" + "\n".join(
            f"== {p.name}\n{p.log_text()[-1500:]}" for p in self.processes))

    def _ready(self) -> bool:
        try:
            return requests.get(self.base + "/readyz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def node_names(self) -> list[str]:
        host = os.uname().nodename
        return [f"{n}@{host}" for n in self.workers]

    def flower_workers(self) -> dict[str, Any]:
        try:
            resp = requests.get(self.flower + "/api/workers", params={"refresh": "1"},
                                timeout=15)
            return dict(resp.json()) if resp.ok else {}
        except (requests.RequestException, ValueError):
            return {}

    # ----------------------------------------------------------------- users and jobs

    def user(self, credits: int = 100 * COST) -> dict[str, Any]:
        email = f"op{uuid.uuid4().hex[:10]}@example.com"
        record = self.store.users.create(email, hash_password(PASSWORD), credits=credits)
        resp = requests.post(self.base + "/api/auth/login", timeout=30,
                             json={"email": email, "password": PASSWORD})
        assert resp.status_code == 200, resp.text
        up = requests.post(self.base + "/api/library", cookies=resp.cookies, timeout=60,
                           files={"file": ("design.png", DESIGN, "image/png")})
        assert up.status_code == 201, up.text
        return {"id": record["id"], "email": email, "cookies": resp.cookies,
                "start_key": up.json()["key"]}

    def post_job(self, user: dict[str, Any]) -> requests.Response:
        """One POST on a fresh connection, so the kernel spreads them over both processes."""
        return requests.post(self.base + "/api/templates/video", cookies=user["cookies"],
                             json={"templateSlug": TEMPLATE, "startKey": user["start_key"]},
                             headers={"Connection": "close"}, timeout=60)

    def start_jobs(self, users: list[dict[str, Any]], count: int) -> list[str]:
        """`count` jobs, alternating users, posted 8 at a time (as many clients would)."""
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(self.post_job, [users[i % len(users)]
                                                    for i in range(count)]))
        for resp in answers:
            assert resp.status_code == 200, resp.text
        return [resp.json()["jobId"] for resp in answers]

    def jobs(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        found = self.store.db.query("SELECT * FROM $rids;", {
            "rids": [RecordID("video_job", i) for i in ids]})[0]
        return {r["id"]: r for r in rows(found)}

    def wait_terminal(self, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        jobs: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            try:
                jobs = self.jobs(ids)
            except Exception:  # the store may be coming back
                time.sleep(1)
                continue
            if len(jobs) == len(ids) and all(
                    j["status"] in ("completed", "failed") for j in jobs.values()):
                return jobs
            time.sleep(0.5)
        pending = {i: (j.get("status"), j.get("phase")) for i, j in jobs.items()
                   if j.get("status") not in ("completed", "failed")}
        raise AssertionError(f"{len(pending)} jobs did not end: {pending}\n" + self.tails())

    def tails(self) -> str:
        return "\n".join(f"== {p.name}\n{p.log_text()[-2500:]}" for p in self.processes)

    def submits_per_job(self) -> Counter[str]:
        """Submits the provider received, per job id (from the webhook URL fal was given)."""
        counts: Counter[str] = Counter()
        for submit in self.sandbox.submits():
            hook = submit.get("webhook") or ""
            job = parse_qs(urlsplit(hook).query).get("jobId", [""])[0]
            counts[job] += 1
        return counts

    def assert_exactly_once(self, users: list[dict[str, Any]], ids: list[str]) -> None:
        jobs = self.jobs(ids)
        failed = {i: j.get("error") for i, j in jobs.items() if j["status"] != "completed"}
        assert not failed, failed
        submits = self.submits_per_job()
        assert all(submits[i] == 1 for i in ids), {i: submits[i] for i in ids}
        for user in users:
            balance = self.store.users.credits(user["id"])
            assert self.store.ledger.sum_for_user(user["id"]) == balance
        for job_id in ids:
            kinds = [r["kind"] for r in self.store.ledger.for_job(job_id)]
            assert kinds == ["charge"], (job_id, kinds)
        keys = [j["result_key"] for j in jobs.values()]
        assert len(set(keys)) == len(ids)
        for key in keys:
            item = self.store.library.get(key)
            assert item is not None and item["size"] > 0

    def lines(self, process: ProcfileProcess, pattern: str) -> list[str]:
        return re.findall(pattern, process.log_text())

    def stop(self) -> None:
        for p in self.processes:
            p.stop()
        self.sandbox.stop()
        self.store.close()
        self.redis.stop()


def surreal_config_for(surreal: Any) -> DatabaseConfig:
    if isinstance(surreal, ExternalSurreal):
        return DatabaseConfig(surreal.url, database=f"topology{uuid.uuid4().hex[:8]}",
                              user=os.environ.get("SURREALDB_TEST_USER", "root"),
                              password=os.environ.get("SURREALDB_TEST_PASS", "root"))
    return DatabaseConfig(surreal.url)


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Topology]:
    tmp = tmp_path_factory.mktemp("topology")
    external = os.environ.get("SURREALDB_TEST_URL")
    if external:
        surreal: Any = ExternalSurreal(external)
    else:
        from tests.support.surreal_server import SurrealServer

        surreal = SurrealServer(tmp / "surreal").start()
    topo = Topology(tmp, s3_endpoint, surreal)
    try:
        yield topo
    finally:
        topo.stop()
        surreal.stop() if not isinstance(surreal, ExternalSurreal) else None


@pytest.fixture(scope="module")
def two_users(topology: Topology) -> list[dict[str, Any]]:
    return [topology.user(), topology.user()]


SUBMITTED = r"\[VIDEO JOB (\S+)\] Submitted to fal as"
DOWNLOADING = r"\[VIDEO JOB (\S+)\] Completed, downloading from"


@pytest.mark.timeout(400)
def test_forty_jobs_through_both_web_processes_and_both_workers(
        topology: Topology, two_users: list[dict[str, Any]]) -> None:
    ids = topology.start_jobs(two_users, 40)
    topology.wait_terminal(ids, timeout=240)
    topology.assert_exactly_once(two_users, ids)
    # Both gunicorn processes answered POSTs (the access log names the answering pid).
    posts = Counter(re.findall(r"^<(\d+)> POST /api/templates/video 200$",
                               topology.web.log_text(), re.MULTILINE))
    assert len(posts) == 2 and sum(posts.values()) == 40, posts
    # Each worker did at least 20 % of the submits and of the finalizes.
    for name, worker in topology.workers.items():
        submits = set(topology.lines(worker, SUBMITTED)) & set(ids)
        finals = set(topology.lines(worker, DOWNLOADING)) & set(ids)
        assert len(submits) >= 8 and len(finals) >= 8, (name, len(submits), len(finals))
    # Quiet workers: the job lines (docs/api.md §7) are there, per-sweep heartbeats are not.
    for worker in topology.workers.values():
        text = worker.log_text()
        assert "Task videojobs.sweep[" not in text, text[-2000:]
        assert "Stored library video metadata for" in text
    for beat in topology.beats:
        assert "Sending due task" not in beat.log_text()


@pytest.mark.timeout(120)
def test_flower_lists_both_workers_and_their_succeeded_tasks(
        topology: Topology, two_users: list[dict[str, Any]]) -> None:
    workers = topology.flower_workers()
    assert set(topology.node_names()) <= set(workers), list(workers)
    deadline = time.monotonic() + 60
    seen: set[tuple[str, str]] = set()
    while time.monotonic() < deadline:
        resp = requests.get(topology.flower + "/api/tasks", timeout=30,
                            params={"state": "SUCCESS", "limit": "100000"})
        assert resp.status_code == 200
        seen = {(t.get("worker"), t.get("name")) for t in resp.json().values()}
        wanted = {(n, t) for n in topology.node_names()
                  for t in ("videojobs.submit", "videojobs.finalize")}
        if wanted <= seen:
            return
        time.sleep(2)
    raise AssertionError(f"Flower's succeeded tasks: {sorted(seen, key=str)}")


@pytest.mark.timeout(300)
def test_sigterm_to_a_worker_fails_no_job(topology: Topology,
                                          two_users: list[dict[str, Any]]) -> None:
    """A rolling deploy: SIGTERM one worker while jobs run, start it again."""
    ids = topology.start_jobs(two_users, 12)
    time.sleep(1.0)
    w2 = topology.workers["w2"]
    code = w2.terminate(timeout=120)  # warm shutdown: running tasks finish first
    assert code == 0, w2.log_text()[-3000:]
    w2.start()
    topology.wait_terminal(ids, timeout=200)
    topology.assert_exactly_once(two_users, ids)


@pytest.mark.timeout(400)
def test_kill9_of_a_worker_mid_transfer(topology: Topology,
                                        two_users: list[dict[str, Any]]) -> None:
    """Every job still completes exactly once, within the finalize-lease takeover; the
    worker, restarted, takes work again."""
    topology.sandbox.queue_scenario("huge_file", count=4)
    ids = topology.start_jobs(two_users, 4)
    victim, job_id = _worker_transferring(topology, ids, timeout=120)
    killed_at = time.monotonic()
    victim.kill9()
    victim.start()
    jobs = topology.wait_terminal(ids, timeout=FINALIZE_LEASE_SECONDS + 150)
    takeover = time.monotonic() - killed_at
    assert jobs[job_id]["status"] == "completed"
    assert takeover <= FINALIZE_LEASE_SECONDS + 120, takeover
    topology.assert_exactly_once(two_users, ids)
    print(f"\nkill -9 mid-transfer: job {job_id} completed {takeover:.0f} s after the kill "
          f"(finalize lease {FINALIZE_LEASE_SECONDS} s)")
    # Restarted, it takes work again.
    more = topology.start_jobs(two_users, 8)
    topology.wait_terminal(more, timeout=200)
    topology.assert_exactly_once(two_users, more)
    after = victim.log_text().rsplit(f"---- start {victim.starts}:", 1)[1]
    assert set(re.findall(SUBMITTED, after)) | set(re.findall(DOWNLOADING, after)), after[-3000:]


def _worker_transferring(topology: Topology, ids: list[str], timeout: float
                         ) -> tuple[ProcfileProcess, str]:
    """The worker holding a finalize lease (a transfer running), and that job's id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job_id, job in topology.jobs(ids).items():
            owner = job.get("lease_owner")
            if job.get("phase") != "finalizing" or not owner:
                continue
            pid = int(str(owner).rsplit("-", 2)[1])
            for worker in topology.workers.values():
                if pid in worker.group_pids():
                    return worker, job_id
        time.sleep(0.1)
    raise AssertionError("no transfer seen running\n" + topology.tails())


@pytest.mark.timeout(300)
def test_store_outage_of_ten_seconds(topology: Topology,
                                     two_users: list[dict[str, Any]]) -> None:
    """POST answers 503 and charges nothing; /readyz says why; everything recovers
    without a restart and every job in flight completes (none waits for its deadline)."""
    surreal = topology.surreal
    if isinstance(surreal, ExternalSurreal):
        pytest.skip("SURREALDB_TEST_URL names a server this test cannot stop")
    user = two_users[0]
    ids = topology.start_jobs(two_users, 12)
    web_pids = topology.web.group_pids()
    balance = topology.store.users.credits(user["id"])
    jobs_before = topology.store.jobs.count()
    surreal.kill()
    down_at = time.monotonic()
    refused = topology.post_job(user)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "SERVICE_UNAVAILABLE"
    ready = requests.get(topology.base + "/readyz", timeout=30)
    assert ready.status_code == 503
    assert ready.json()["checks"]["store"].startswith("unavailable")
    time.sleep(max(0.0, 10 - (time.monotonic() - down_at)))
    surreal.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not topology._ready():
        time.sleep(0.5)
    assert topology._ready(), topology.tails()
    assert topology.web.group_pids() == web_pids  # recovered, not restarted
    assert all(w.running for w in topology.workers.values())
    jobs = topology.wait_terminal(ids, timeout=240)
    assert all(j["status"] == "completed" for j in jobs.values()), {
        i: j.get("error") for i, j in jobs.items()}
    topology.assert_exactly_once(two_users, ids)
    # The refused POST charged nothing and left no job behind.
    assert topology.store.jobs.count() == jobs_before
    assert topology.store.users.credits(user["id"]) == balance


@pytest.mark.timeout(300)
def test_redis_restarted_empty_several_times(topology: Topology,
                                             two_users: list[dict[str, Any]]) -> None:
    # Restarts while tasks are unacknowledged (transfers running, messages reserved):
    # that is when kombu's Redis transport used to end the worker.
    topology.sandbox.queue_scenario("huge_file", count=4)
    ids = topology.start_jobs(two_users, 16)
    for _ in range(3):
        time.sleep(1.5)
        topology.redis.restart_empty(down_seconds=1.0)
    jobs = topology.wait_terminal(ids, timeout=240)
    assert all(j["status"] == "completed" for j in jobs.values()), {
        i: j.get("error") for i, j in jobs.items()}
    topology.assert_exactly_once(two_users, ids)
    for p in topology.processes:
        assert p.running, f"{p.name} exited after Redis restarts:\n{p.log_text()[-3000:]}"
    for worker in topology.workers.values():
        assert "Unrecoverable error" not in worker.log_text()
    # And new work still flows through everything.
    more = topology.start_jobs(two_users, 4)
    topology.wait_terminal(more, timeout=120)
    topology.assert_exactly_once(two_users, more)


@pytest.mark.timeout(200)
def test_second_beat_takes_over_within_30_s_of_a_kill9(
        topology: Topology, two_users: list[dict[str, Any]]) -> None:
    client = topology.redis.client()

    def holder() -> ProcfileProcess | None:
        value = client.get(BEAT_LOCK_KEY)
        text = value.decode() if isinstance(value, bytes) else str(value or "")
        pid = int(text.split(":")[1]) if text else None
        return next((b for b in topology.beats if b.running and b.pid == pid), None)

    leader = _poll(holder, timeout=30)
    assert leader is not None, "no beat holds the lock"
    standby = next(b for b in topology.beats if b is not leader)
    assert "beat: standing by" in standby.log_text()
    leader.kill9()
    killed = time.monotonic()
    assert _poll(lambda: holder() is standby, timeout=60), standby.log_text()[-2000:]
    took = time.monotonic() - killed
    print(f"\nbeat takeover after kill -9: {took:.1f} s")
    assert took <= 30, took
    assert took <= LOCK_TTL_SECONDS + 5
    assert "beat: scheduling" in standby.log_text()
    # The new leader's sweeps run: a job whose message is lost is still picked up.
    leader.start()
    ids = topology.start_jobs(two_users, 2)
    topology.wait_terminal(ids, timeout=120)
    topology.assert_exactly_once(two_users, ids)


def _poll(probe: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    return None
