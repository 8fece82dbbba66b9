"""Sign-in is throttled per account and per client address, in Redis (shared by every
web process), with 429 RATE_LIMITED and Retry-After; unknown accounts answer like known
ones."""

from __future__ import annotations

import time
from typing import Any

from app.config import Settings
from app.store import Store
from tests.conftest import PASSWORD


def _login(client: Any, email: str, password: str = "wrong password",
           address: str = "203.0.113.7") -> Any:
    return client.post("/api/auth/login", json={"email": email, "password": password},
                       environ_base={"REMOTE_ADDR": address})


def test_wrong_passwords_for_one_account_are_throttled(app: Any, make_user: Any,
                                                       settings: Settings) -> None:
    user = make_user()
    client = app.test_client()
    allowed = settings.login_limit_per_account - 1  # make_user's own sign-in counted
    codes = [_login(client, user.email).status_code for _ in range(allowed)]
    assert codes == [401] * allowed
    started = time.perf_counter()
    resp = _login(client, user.email, address="198.51.100.9")  # another address too
    assert time.perf_counter() - started < 0.2  # answered before any Argon2 work
    assert resp.status_code == 429 and resp.get_json()["error"] == "RATE_LIMITED"
    assert 1 <= int(resp.headers["Retry-After"]) <= 300
    # even the right password waits: the account is being guessed at
    assert _login(client, user.email, PASSWORD).status_code == 429
    # other accounts are not affected
    assert _login(client, make_user().email, PASSWORD).status_code == 200


def test_one_address_trying_many_accounts_is_throttled(app: Any, settings: Settings,
                                                       store: Store, redis_client: Any
                                                       ) -> None:
    from app import create_app

    app = create_app(settings.replace(login_limit_per_address=5), store=store)
    client = app.test_client()
    codes = [_login(client, f"nobody{i}@example.com").status_code for i in range(6)]
    assert codes == [401] * 5 + [429]
    assert _login(client, "nobody@example.com", address="198.51.100.10").status_code == 401
    # the counters live in Redis, so every web process shares them
    assert any(k.startswith(b"videojobs:login-address:") for k in redis_client.keys("*"))
    second = create_app(settings.replace(login_limit_per_address=5), store=store)
    assert _login(second.test_client(), "x@example.com").status_code == 429


def test_unknown_accounts_cost_as_much_as_known_ones(app: Any, make_user: Any) -> None:
    user = make_user()
    client = app.test_client()

    def timed(email: str, address: str) -> float:
        started = time.perf_counter()
        assert _login(client, email, address=address).status_code == 401
        return time.perf_counter() - started

    known = min(timed(user.email, f"192.0.2.{i}") for i in range(3))
    unknown = min(timed("ghost@example.com", f"192.0.2.{10 + i}") for i in range(3))
    assert unknown > known / 3  # both run Argon2 (a miss without it would be ~100x faster)
