"""Admin commands beside a running `videojobs up` (docs/api.md §10): same output, same exit codes
and the same one-line errors as with the service stopped; refused for another user."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from app.admin_channel import socket_path_for
from app.store import DatabaseConfig, Store
from tests.conftest import DEMO_TEMPLATES
from tests.test_oneprocess import EXE, Up

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")


def admin(data_dir: Path, env: dict[str, str], *args: str,
          as_user: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [EXE, *args, "--data-dir", str(data_dir)]
    if as_user is not None:
        import pwd

        account = pwd.getpwnam(as_user)
        command = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}",
                   "--clear-groups", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env,
                          cwd="/tmp")


def bad_template_file(directory: Path) -> Path:
    bad = directory / "bad-templates.json"
    bad.write_text(json.dumps([{"slug": "x", "name": "X", "model": "fal-ai/x",
                                "prompt": "a {undeclared} b", "durations": {"5": 10}}]))
    return bad


def transcript(data_dir: Path, env: dict[str, str], bad: Path) -> list[tuple[object, ...]]:
    """Every admin command, good and bad: (args, exit code, stdout shape, stderr lines)."""
    steps = [
        ["users", "create", "ana@example.com", "--password", "a-long-password",
         "--credits", "700"],
        ["users", "create", "ana@example.com", "--password", "a-long-password"],
        ["users", "create", "not-an-email", "--password", "a-long-password"],
        ["credits", "grant", "ana@example.com", "300"],
        ["credits", "grant", "ghost@example.com", "5"],
        ["templates", "load", str(DEMO_TEMPLATES)],
        ["templates", "load", str(bad)],
        ["tokens", "create", "ghost@example.com"],
        ["db", "migrate"],
    ]
    out: list[tuple[object, ...]] = []
    for args in steps:
        result = admin(data_dir, env, *args)
        stderr = [TIMESTAMP.sub("", line) for line in result.stderr.splitlines() if line]
        out.append((args, result.returncode, result.stdout, stderr))
    token = admin(data_dir, env, "tokens", "create", "ana@example.com")
    lines = token.stdout.splitlines()
    assert token.returncode == 0 and len(lines) == 1 and lines[0].startswith("vj_"), token
    out.append((["tokens", "create"], token.returncode, "<one token line>", token.stderr))
    return out


def test_every_admin_command_answers_alike_with_the_service_running_or_stopped(
        tmp_path: Path, up_env: dict[str, str]) -> None:
    bad = bad_template_file(tmp_path)
    stopped_dir, running_dir = tmp_path / "stopped", tmp_path / "running"

    stopped = transcript(stopped_dir, up_env, bad)
    store = Store.open(DatabaseConfig(f"surrealkv://{stopped_dir / 'db'}"))
    try:
        user = store.users.get_by_email("ana@example.com")
        assert user is not None and user["credits"] == 1000
        assert store.ledger.sum_for_user(user["id"]) == 1000
    finally:
        store.close()

    running_dir.mkdir()
    up = Up(running_dir, up_env)
    try:
        channel = socket_path_for(f"surrealkv://{running_dir / 'db'}")
        assert channel is not None and channel.is_socket()
        assert channel.stat().st_mode & 0o777 == 0o600
        running = transcript(running_dir, up_env, bad)
        # The running service sees the changes at once: log in, spend the token.
        s = requests.Session()
        login = s.post(up.base + "/api/auth/login",
                       json={"email": "ana@example.com", "password": "a-long-password"})
        assert login.status_code == 200 and login.json()["credits"] == 1000, login.text
        token = admin(running_dir, up_env, "tokens", "create", "ana@example.com").stdout.strip()
        me = requests.get(up.base + "/api/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200 and me.json()["email"] == "ana@example.com"
        slugs = {t["slug"] for t in s.get(up.base + "/api/templates").json()["templates"]}
        assert "night-life-roller" in slugs
    finally:
        assert up.stop() == 0
    assert not channel.exists(), "the socket is removed when the service stops"
    assert running == stopped
    codes = [step[1] for step in running]
    assert codes == [0, 1, 1, 0, 1, 0, 1, 1, 0, 0]
    for _args, code, _stdout, stderr in running:
        if code:
            assert len(stderr) == 1 and str(stderr[0]).startswith("videojobs: "), stderr


def test_a_dead_services_socket_is_ignored(tmp_path: Path, up_env: dict[str, str]) -> None:
    """After a kill -9 the socket file stays; admin commands open the freed store."""
    import signal

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    up = Up(data_dir, up_env)
    up.stop(signal.SIGKILL)
    channel = socket_path_for(f"surrealkv://{data_dir / 'db'}")
    assert channel is not None and channel.is_socket()
    ok = admin(data_dir, up_env, "users", "create", "bo@example.com", "--password", "longenough")
    assert ok.returncode == 0, ok.stderr


@pytest.fixture
def shared_data_dir() -> Iterator[Path]:
    """A data directory other users may traverse (pytest's tmp dirs are private to root)."""
    parent = Path(tempfile.mkdtemp(prefix="vj-admin-"))
    parent.chmod(0o755)
    yield parent / "data"
    shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.skipif(os.getuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run a command as another user")
def test_another_user_is_refused(shared_data_dir: Path, up_env: dict[str, str]) -> None:
    shared_data_dir.mkdir()
    up = Up(shared_data_dir, up_env)
    try:
        channel = socket_path_for(f"surrealkv://{shared_data_dir / 'db'}")
        assert channel is not None
        args = ("users", "create", "mallory@example.com", "--password", "a-long-password",
                "--credits", "99999")
        # The socket file's mode keeps them out...
        denied = admin(shared_data_dir, up_env, *args, as_user="nobody")
        lines = denied.stderr.strip().splitlines()
        assert denied.returncode == 1 and len(lines) == 1, denied.stderr
        assert "permission denied" in lines[0]
        # ...and if it were opened up, the service still checks who is calling.
        channel.chmod(0o666)
        try:
            refused = admin(shared_data_dir, up_env, *args, as_user="nobody")
        finally:
            channel.chmod(0o600)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 1 and len(lines) == 1, refused.stderr
        assert "refused" in lines[0] and "owner" in lines[0]
        s = requests.Session()
        login = s.post(up.base + "/api/auth/login",
                       json={"email": "mallory@example.com", "password": "a-long-password"})
        assert login.status_code == 401, "nothing was created"
        owner = admin(shared_data_dir, up_env, "tokens", "create", "mallory@example.com")
        assert owner.returncode == 1 and "no user" in owner.stderr
    finally:
        up.stop()
    assert "refused a connection from uid" in up.output()


def test_channel_in_process_long_path_errors_and_private_names(tmp_path: Path,
                                                               store: Store) -> None:
    """Calls, raised domain errors and refusals, on a path too long for sockaddr_un."""
    from app.admin_channel import AdminChannelError, AdminServer, connect
    from app.store.users import UserExists

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "db.admin.sock"
    assert len(str(path)) > 108
    server = AdminServer(path, store)
    server.start()
    try:
        remote = connect(path)
        assert remote is not None
        user = remote.users.create("cy@example.com", "hash", credits=5)
        assert user["email"] == "cy@example.com" and store.users.credits(user["id"]) == 5
        with pytest.raises(UserExists):
            remote.users.create("cy@example.com", "hash")
        for private in [("users", "_rid"), ("close",), ("db", "close"), ("users",)]:
            with pytest.raises(AdminChannelError, match="not a store call"):
                remote.call(private, ("x",), {})
        remote.close()
        assert store.users.get_by_email("cy@example.com") is not None, "store still open"
    finally:
        server.stop()
    assert not path.exists() and connect(path) is None
