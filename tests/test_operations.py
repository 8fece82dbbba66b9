"""Operators' view: Flower sees the real worker and our task names; the Procfile and
docker-compose.yml name only commands and modules that exist."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def worker_and_flower(redis_url: str, redis_client: Any, tmp_path: Path
                      ) -> Iterator[tuple[str, str]]:
    env = {**os.environ, "REDIS_URL": redis_url, "SECRET_KEY": "ops-test",
           "SURREALDB_URL": "mem://", "STORAGE_DIR": str(tmp_path / "storage"),
           "FLOWER_UNAUTHENTICATED_API": "true"}
    node = f"opsworker{free_port()}@localhost"
    worker = subprocess.Popen(
        [str(BIN / "celery"), "-A", "workers.celery_app:celery", "worker", "--pool", "threads",
         "--concurrency", "2", "--queues", "control,checks,transfer,webhooks", "-E", "-n", node,
         "--loglevel", "WARNING"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "worker.log", "w"))  # noqa: SIM115
    port = free_port()
    flower = subprocess.Popen(
        [str(BIN / "celery"), "-A", "workers.celery_app:celery", "flower",
         f"--port={port}", "--address=127.0.0.1"], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "flower.log", "w"))  # noqa: SIM115
    try:
        yield f"http://127.0.0.1:{port}", node
    finally:
        for proc in (flower, worker):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_flower_sees_the_worker_and_its_tasks(worker_and_flower: tuple[str, str]) -> None:
    base, node = worker_and_flower
    deadline = time.time() + 60
    workers: dict[str, Any] = {}
    while time.time() < deadline:
        try:
            resp = requests.get(base + "/api/workers", params={"refresh": "1"}, timeout=10)
            if resp.ok:
                workers = resp.json()
                if node in workers and workers[node].get("registered"):
                    break
        except requests.RequestException:
            pass
        time.sleep(1)
    assert node in workers, workers
    registered = set(workers[node]["registered"])
    assert {"videojobs.submit", "videojobs.finalize", "videojobs.sweep",
            "videojobs.cancel", "videojobs.check"} <= registered
    queues = {q["name"] for q in workers[node].get("active_queues", [])}
    assert {"control", "checks", "transfer"} <= queues


def _commands() -> list[list[str]]:
    procfile = (ROOT / "Procfile").read_text().splitlines()
    commands = [shlex.split(line.split(":", 1)[1]) for line in procfile if ":" in line]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        if "command" in service and not service.get("image", "").startswith(
                ("redis", "surrealdb", "minio")):
            cmd = service["command"]
            commands.append(shlex.split(cmd) if isinstance(cmd, str) else list(cmd))
    return commands


def test_procfile_and_compose_name_real_commands_and_modules() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"redis", "surrealdb", "minio", "web", "worker", "beat", "flower"} <= set(
        compose["services"])
    assert compose["services"]["surrealdb"]["image"] == "surrealdb/surrealdb:v3.2.4"
    assert "noeviction" in " ".join(compose["services"]["redis"]["command"])
    seen = set()
    for cmd in _commands():
        exe = cmd[0]
        seen.add(exe)
        assert (BIN / exe).exists(), f"{exe} is not installed by the package"
        for i, arg in enumerate(cmd):
            target = None
            if arg == "-A":
                target = cmd[i + 1]
            elif ":" in arg and arg.split(":")[0].replace(".", "").isalnum() and \
                    arg.split(":")[0].startswith(("app", "workers")):
                target = arg
            if target:
                module, _, attr = target.partition(":")
                spec = importlib.util.find_spec(module)
                assert spec is not None and spec.origin, target
                # Entry modules build their app at import (from the environment), so the
                # attribute is checked in the source rather than by importing it.
                source = Path(spec.origin).read_text()
                assert not attr or f"{attr} = " in source or f'"{attr}"' in source, target
        if exe == "videojobs":
            help_run = subprocess.run([str(BIN / "videojobs"), *cmd[1:], "--help"],
                                      capture_output=True, text=True)
            assert help_run.returncode == 0, cmd
    assert {"gunicorn", "celery", "videojobs"} <= seen
