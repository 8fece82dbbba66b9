"""The code stays lint- and type-clean (the job core and the store with no bare generics):
the same checks a contributor runs, in the suite so CI holds every change to them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_ruff_finds_nothing() -> None:
    done = _run("ruff", "check", "app", "workers", "sandbox", "tests", "bench")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_finds_nothing_with_the_strict_core() -> None:
    done = _run("mypy", "--no-incremental", "app", "workers", "sandbox")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "disallow_any_generics = true" in (ROOT / "pyproject.toml").read_text()
