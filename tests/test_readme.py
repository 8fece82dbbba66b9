"""The README's commands run verbatim: its quick-start block starts the service, its API
tour blocks run in order against it, with the port and files the README names.

Blocks are the ```bash fences right after a `<!-- readme-test: NAME -->` marker. They run
in a scratch directory laid out like a fresh clone (the repository's files linked in, its
`.venv` reused so nothing is installed again), so the service's `var/` and the files the
tour writes (`upload.json`, `video.mp4`, ...) start empty. The README names port 8000;
only when something else on this machine already listens there is that one number
replaced by a free port (said in the test output), so the test never joins a foreign
service.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"<!-- readme-test: ([\w-]+)[^>]*-->\s*```bash\n(.*?)```", re.S)
PORT = 8000


def readme_blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(README.read_text())]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fresh_clone(where: Path) -> Path:
    """The tracked top-level files and folders, linked; `.venv` reused."""
    where.mkdir()
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    for top in sorted({name.split("/", 1)[0] for name in tracked} | {".venv"}):
        (where / top).symlink_to(ROOT / top)
    return where


def test_readme_blocks_list_the_quick_start_then_the_api_tour() -> None:
    names = [name for name, _ in readme_blocks()]
    assert names[0] == "quick-start" and names.count("quick-start") == 1
    assert names[1:] and set(names[1:]) == {"api-tour"}


def test_readme_quick_start_and_api_tour_run_verbatim(tmp_path: Path) -> None:
    blocks = readme_blocks()
    quick_start = blocks[0][1]
    tour = "\n".join(body for _, body in blocks[1:])
    port = PORT
    if not port_is_free(PORT):
        port = free_port()
        print(f"port {PORT} is taken on this machine: the README's blocks run on {port}")
        quick_start = quick_start.replace("./dev up", f"./dev up --port {port}")
        tour = tour.replace(f":{PORT}/", f":{port}/")
    clone = fresh_clone(tmp_path / "clone")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SURREALDB_", "STORAGE_", "FAL_", "S3_", "PUBLIC_", "AWS_"))
           and k not in {"REDIS_URL", "PORT", "SECRET_KEY", "VIRTUAL_ENV"}}
    log = (tmp_path / "up.log").open("w")
    service = subprocess.Popen(["bash", "-c", quick_start], cwd=clone, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            assert service.poll() is None, (tmp_path / "up.log").read_text()
            try:
                if requests.get(base + "/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.3)
        else:
            raise AssertionError("./dev up never answered:\n" + (tmp_path / "up.log").read_text())
        printed = (tmp_path / "up.log").read_text()
        assert f"videojobs is running at {base}/" in printed
        assert "Redis: a private server on redis://127.0.0.1:" in printed, printed

        result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", tour], cwd=clone,
                                env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (result.stdout, result.stderr)
        status = (clone / "status.json").read_text()
        assert '"status":"completed"' in status.replace(" ", ""), status
        video = (clone / "video.mp4").read_bytes()
        assert video[4:8] == b"ftyp" and len(video) > 1000
        job_id = re.search(r'"jobId":\s*"([^"]+)"', (clone / "job.json").read_text())
        assert job_id and job_id.group(1) in result.stdout  # the jobs list shows it
    finally:
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGINT)  # Ctrl-C, as the README says
        code = service.wait(timeout=60)
        log.close()
    assert code == 0, (tmp_path / "up.log").read_text()
