"""The admin commands, run as a user would: the installed `videojobs` executable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.store import DatabaseConfig, Store
from tests.conftest import DEMO_TEMPLATES

EXE = shutil.which("videojobs") or str(Path(sys.executable).parent / "videojobs")


def run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SURREALDB_", "STORAGE_"))}
    return subprocess.run([EXE, *args, "--data-dir", str(data_dir)], capture_output=True,
                          text=True, timeout=120, env=env)


def open_store(data_dir: Path) -> Store:
    return Store.open(DatabaseConfig(f"surrealkv://{data_dir / 'db'}"))


def test_admin_commands_end_to_end(tmp_path: Path) -> None:
    assert run(tmp_path, "db", "migrate").returncode == 0
    assert run(tmp_path, "db", "migrate").returncode == 0
    ok = run(tmp_path, "users", "create", "Ana@Example.com", "--password", "s3cret-pass",
             "--credits", "700")
    assert ok.returncode == 0, ok.stderr
    assert run(tmp_path, "credits", "grant", "ana@example.com", "300").returncode == 0
    loaded = run(tmp_path, "templates", "load", str(DEMO_TEMPLATES))
    assert loaded.returncode == 0, loaded.stderr
    assert run(tmp_path, "templates", "load", str(DEMO_TEMPLATES)).returncode == 0
    token = run(tmp_path, "tokens", "create", "ana@example.com")
    assert token.returncode == 0
    lines = token.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vj_") and len(lines[0]) > 30
    store = open_store(tmp_path)
    try:
        user = store.users.get_by_email("ana@example.com")
        assert user is not None and user["credits"] == 1000
        assert [r["kind"] for r in store.ledger.for_user(user["id"])] == ["grant", "grant"]
        assert store.ledger.sum_for_user(user["id"]) == 1000
        assert store.tokens.find(lines[0]) is not None
        assert any(t["slug"] == "night-life-roller" for t in store.templates.list_active())
    finally:
        store.close()


@pytest.mark.parametrize("args, says", [
    (["users", "create", "not-an-email", "--password", "longenough"], "not an email"),
    (["users", "create", "a@b.co", "--password", "short"], "at least 8"),
    (["credits", "grant", "ghost@example.com", "5"], "no user"),
    (["credits", "grant", "ghost@example.com", "-5"], "positive"),
    (["tokens", "create", "ghost@example.com"], "no user"),
    (["templates", "load", "/nonexistent/file.yaml"], "file.yaml"),
])
def test_failing_commands_say_why_in_one_line(tmp_path: Path, args: list[str], says: str
                                              ) -> None:
    result = run(tmp_path, *args)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], result.stderr


def test_duplicate_user_and_bad_template_file(tmp_path: Path) -> None:
    assert run(tmp_path, "users", "create", "b@example.com", "--password", "longenough"
               ).returncode == 0
    dup = run(tmp_path, "users", "create", "b@example.com", "--password", "longenough")
    assert dup.returncode == 1 and "already exists" in dup.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"slug": "x", "name": "X", "model": "fal-ai/x",
                                "prompt": "a {undeclared} b", "durations": {"5": 10}}]))
    result = run(tmp_path, "templates", "load", str(bad))
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1


def test_admin_command_refuses_while_another_process_holds_the_store(tmp_path: Path) -> None:
    holder = open_store(tmp_path)
    try:
        result = run(tmp_path, "db", "migrate")
        assert result.returncode == 1
        assert "in use by another process" in result.stderr
    finally:
        holder.close()
