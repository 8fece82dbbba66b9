"""`videojobs up` as a user runs it: a subprocess on a fresh data directory, no network
but loopback; plus crash recovery (kill -9 mid-job, restart, every job ends once)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
import requests

from app.store import DatabaseConfig, Store
from tests.conftest import free_port

EXE = str(Path(sys.executable).parent / "videojobs")


class Up:
    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.log = open(data_dir.parent / f"up-{self.port}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen([EXE, "up", "--port", str(self.port), "--data-dir",
                                      str(data_dir)], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if requests.get(self.base + "/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.2)
            if self.proc.poll() is not None:
                raise AssertionError(self.output())
        else:
            raise AssertionError("videojobs up did not start:\n" + self.output())

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.data_dir.parent / f"up-{self.port}.log").read_text()

    def session(self) -> requests.Session:
        password = (self.data_dir / "demo-login.txt").read_text().split()[1]
        s = requests.Session()
        r = s.post(self.base + "/api/auth/login", json={"email": "demo@videojobs.local",
                                                        "password": password})
        assert r.status_code == 200, r.text
        return s

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        self.log.close()
        return code


def wait_status(s: requests.Session, base: str, job_id: str, wanted: tuple[str, ...],
                timeout: float = 60) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = s.get(base + "/api/templates/video/status", params={"jobId": job_id},
                     timeout=5).json()
        if body["status"] in wanted:
            return dict(body)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {wanted}")




def test_up_runs_a_demo_animation_end_to_end(tmp_path: Path, up_env: dict[str, str]
                                             ) -> None:
    env = up_env
    up = Up(tmp_path / "data", env)
    try:
        assert "demo login: demo@videojobs.local" in up.output()
        s = up.session()
        items = s.get(up.base + "/api/library").json()["items"]
        assert len(items) == 1 and items[0]["kind"] == "image"
        started = s.post(up.base + "/api/templates/video", json={
            "templateSlug": "night-life-roller", "startKey": items[0]["key"]})
        assert started.status_code == 200
        body = wait_status(s, up.base, started.json()["jobId"], ("completed", "failed"))
        assert body["status"] == "completed", body
        video = s.get(urljoin(up.base, body["url"]), timeout=10)
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
        assert s.get(up.base + "/api/me").json()["credits"] == 4500

        second = subprocess.run([EXE, "up", "--port", str(free_port()), "--data-dir",
                                 str(up.data_dir)], env=env, capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 1
        assert "in use by another process" in second.stderr
    finally:
        assert up.stop() == 0
    assert "stopping" in up.output()


@pytest.fixture
def external_sandbox(tmp_path: Path) -> Iterator[str]:
    """fal lives outside the process we crash, as it does in real life."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "--port", str(port),
                             "--queue-seconds", "1", "--run-seconds", "6"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if requests.get(base + "/_sandbox/health", timeout=1).ok:
                break
        except requests.RequestException:
            time.sleep(0.2)
    yield base
    proc.terminate()
    proc.wait(timeout=10)


def test_kill_9_mid_job_then_restart_every_job_ends_once(
        tmp_path: Path, up_env: dict[str, str], external_sandbox: str) -> None:
    env = {**up_env, "FAL_KEY": "test:key", "FAL_QUEUE_URL": external_sandbox,
           "FAL_JWKS_URL": external_sandbox + "/.well-known/jwks.json",
           "ALLOW_PRIVATE_DOWNLOADS": "true", "STATUS_CHECK_INTERVAL": "2"}
    data = tmp_path / "data"
    up = Up(data, env)
    s = up.session()
    key = s.get(up.base + "/api/library").json()["items"][0]["key"]
    job_ids = [s.post(up.base + "/api/templates/video", json={
        "templateSlug": "night-life-roller", "startKey": key}).json()["jobId"]
        for _ in range(3)]
    wait_status(s, up.base, job_ids[0], ("processing",), timeout=30)
    up.stop(signal.SIGKILL)  # while generating

    up = Up(data, env)
    try:
        s = up.session()
        finals = [wait_status(s, up.base, j, ("completed", "failed"), timeout=90)
                  for j in job_ids]
        assert [f["status"] for f in finals] == ["completed"] * 3, finals
    finally:
        up.stop()
    submits = requests.get(external_sandbox + "/_sandbox/observations").json()["submits"]
    accepted = [x for x in submits if x.get("accepted")]
    assert len(accepted) == 3  # nobody was submitted twice
    store = Store.open(DatabaseConfig(f"surrealkv://{data / 'db'}"))
    try:
        user = store.users.get_by_email("demo@videojobs.local")
        assert user is not None
        assert store.ledger.sum_for_user(user["id"]) == user["credits"] == 5000 - 3 * 500
        for job_id in job_ids:
            kinds = sorted(r["kind"] for r in store.ledger.for_job(job_id))
            assert kinds == ["charge"]
    finally:
        store.close()


def test_kill_9_while_storing_then_restart_completes_once(
        tmp_path: Path, up_env: dict[str, str], external_sandbox: str) -> None:
    env = {**up_env, "FAL_KEY": "test:key", "FAL_QUEUE_URL": external_sandbox,
           "FAL_JWKS_URL": external_sandbox + "/.well-known/jwks.json",
           "ALLOW_PRIVATE_DOWNLOADS": "true", "STATUS_CHECK_INTERVAL": "2"}
    # The first download is cut off mid-body: the job sits in `finalizing` (storing) while
    # its transfer waits to be retried, and that is when the process dies.
    requests.post(external_sandbox + "/_sandbox/scenarios",
                  json={"name": "cut_download", "count": 1}, timeout=5).raise_for_status()
    data = tmp_path / "data"
    up = Up(data, env)
    s = up.session()
    key = s.get(up.base + "/api/library").json()["items"][0]["key"]
    job_id = s.post(up.base + "/api/templates/video", json={
        "templateSlug": "night-life-roller", "startKey": key}).json()["jobId"]
    deadline = time.time() + 60
    while time.time() < deadline:
        body = s.get(up.base + "/api/templates/video/status", params={"jobId": job_id},
                     timeout=5).json()
        if body.get("phase") == "finalizing" or body["status"] in ("completed", "failed"):
            break
        time.sleep(0.05)
    assert body.get("phase") == "finalizing", body
    up.stop(signal.SIGKILL)

    up = Up(data, env)
    try:
        final = wait_status(up.session(), up.base, job_id, ("completed", "failed"), timeout=120)
        assert final["status"] == "completed", final
    finally:
        up.stop()
    observed = requests.get(external_sandbox + "/_sandbox/observations").json()
    assert len([x for x in observed["submits"] if x.get("accepted")]) == 1
    store = Store.open(DatabaseConfig(f"surrealkv://{data / 'db'}"))
    try:
        user = store.users.get_by_email("demo@videojobs.local")
        assert user is not None and user["credits"] == 4500
        assert store.ledger.sum_for_user(user["id"]) == 4500
        videos = [i for i in store.library.list_for_user(user["id"]) if i["kind"] == "video"]
        assert [v["job_id"] for v in videos] == [job_id]
    finally:
        store.close()


def test_kill_9_with_the_bundled_sandbox_then_restart_every_job_completes(
        tmp_path: Path, up_env: dict[str, str]) -> None:
    """The sandbox inside `videojobs up` dies with it: it must come back on the same port
    with the requests it had accepted, or the stored status URLs are dead."""
    env = {**up_env, "STATUS_CHECK_INTERVAL": "2"}
    data = tmp_path / "data"
    up = Up(data, env)
    s = up.session()
    key = s.get(up.base + "/api/library").json()["items"][0]["key"]
    job_ids = [s.post(up.base + "/api/templates/video", json={
        "templateSlug": "night-life-roller", "startKey": key}).json()["jobId"]
        for _ in range(5)]
    for job_id in job_ids:
        wait_status(s, up.base, job_id, ("processing",), timeout=60)
    port = int((data / "sandbox" / "port").read_text())
    up.stop(signal.SIGKILL)  # while the sandbox is generating
    assert len(list((data / "sandbox" / "requests").glob("*.json"))) == 5

    up = Up(data, env)
    try:
        assert int((data / "sandbox" / "port").read_text()) == port
        s = up.session()
        finals = [wait_status(s, up.base, j, ("completed", "failed"), timeout=120)
                  for j in job_ids]
        assert [f["status"] for f in finals] == ["completed"] * 5, finals
        video = s.get(urljoin(up.base, finals[0]["url"]), timeout=10)
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    finally:
        up.stop()
    store = Store.open(DatabaseConfig(f"surrealkv://{data / 'db'}"))
    try:
        user = store.users.get_by_email("demo@videojobs.local")
        assert user is not None
        assert store.ledger.sum_for_user(user["id"]) == user["credits"] == 5000 - 5 * 500
    finally:
        store.close()


def test_up_runs_a_private_redis_by_default_and_says_which_redis(
        tmp_path: Path, up_env: dict[str, str], redis_url: str) -> None:
    """REDIS_URL unset: a private, password-protected server (never the one on 6379);
    set: joined and said so; set but silent: the in-process broker, said so."""
    import re

    import redis

    env = {k: v for k, v in up_env.items() if k != "REDIS_URL"}
    data_dir = tmp_path / "private"
    data_dir.mkdir()
    up = Up(data_dir, env)
    try:
        line = re.search(r"Redis: a private server on redis://127\.0\.0\.1:(\d+)/0 \((.+?);",
                         up.output())
        assert line, up.output()
        port = int(line.group(1))
        assert port != 6379
        config = data_dir / "redis" / "redis.conf"
        assert config.stat().st_mode & 0o777 == 0o600
        with pytest.raises(redis.AuthenticationError):  # private: needs the password
            redis.Redis(port=port, socket_timeout=2).set("x", "1")
        password = next(ln.split()[1] for ln in config.read_text().splitlines()
                        if ln.startswith("requirepass "))
        assert password not in up.output(), "the password is never logged"
        private = redis.Redis(port=port, password=password, socket_timeout=2)
        # The one-process mode now has the status cache and a broker in that Redis.
        s = up.session()
        key = s.get(up.base + "/api/library").json()["items"][0]["key"]
        job = s.post(up.base + "/api/templates/video",
                     json={"templateSlug": "night-life-roller", "startKey": key}).json()
        s.get(up.base + "/api/templates/video/status", params={"jobId": job["jobId"]})
        assert private.dbsize() > 0
    finally:
        assert up.stop() == 0
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2).ping()

    joined_dir = tmp_path / "joined"
    joined_dir.mkdir()
    up = Up(joined_dir, {**up_env, "REDIS_URL": redis_url})
    try:
        assert f"Redis: joining REDIS_URL {redis_url}" in up.output()
    finally:
        up.stop()
    silent_dir = tmp_path / "silent"
    silent_dir.mkdir()
    up = Up(silent_dir, up_env)
    try:
        assert "does not answer; using an in-process broker" in up.output()
    finally:
        up.stop()
