"""`./dev`: what it says when it cannot set itself up, and the CLI it runs."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(os.getuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run ./dev as an unprivileged user")
def test_dev_test_without_chromium_and_not_root_says_the_one_command() -> None:
    """In a checkout whose venv is already set up (a stand-in: this machine's own venv
    lives where `nobody` may not read), `./dev test` stops with the one command to run."""
    import tempfile

    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3")
    nobody = pwd.getpwnam("nobody")
    checkout = Path(tempfile.mkdtemp(prefix="vj-dev-"))
    try:
        checkout.chmod(0o755)
        shutil.copy(ROOT / "dev", checkout / "dev")
        shutil.copy(ROOT / "pyproject.toml", checkout / "pyproject.toml")
        (checkout / ".venv" / "bin").mkdir(parents=True)
        (checkout / ".venv" / "bin" / "python").symlink_to(python)
        digest = subprocess.run(["sha1sum", "pyproject.toml"], cwd=checkout, text=True,
                                capture_output=True, check=True).stdout[:12]
        (checkout / ".venv" / f".installed-{digest}-dev").touch()
        for path in [checkout / ".venv", checkout / ".venv" / "bin"]:
            path.chmod(0o755)
        env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHON": python,
               "CHROMIUM_PATH": "/nonexistent/chromium"}
        result = subprocess.run(
            ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
             "--clear-groups", str(checkout / "dev"), "test", "--version"],
            capture_output=True, text=True, timeout=120, env=env, cwd="/tmp")
    finally:
        shutil.rmtree(checkout, ignore_errors=True)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result
    assert lines == ["the dashboard tests drive Debian's Chromium; install it once: "
                     "sudo apt-get install -y chromium"], result.stderr


def test_dev_videojobs_runs_the_cli() -> None:
    result = subprocess.run([str(ROOT / "dev"), "videojobs", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "users" in result.stdout and "tokens" in result.stdout
