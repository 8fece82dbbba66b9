"""Settings from the environment (and an optional `.env`): the only reader of os.environ.

| variable | default |
|---|---|
| SECRET_KEY | required outside the embedded default (`videojobs up`, tests) |
| SURREALDB_URL | surrealkv://var/db |
| SURREALDB_NAMESPACE / SURREALDB_DATABASE | videojobs / videojobs |
| SURREALDB_USER / SURREALDB_PASS | none |
| REDIS_URL | redis://127.0.0.1:6379/0 |
| FAL_KEY | none (the local sandbox provider is used) |
| FAL_QUEUE_URL | https://queue.fal.run |
| FAL_JWKS_URL | https://rest.alpha.fal.ai/.well-known/jwks.json |
| PUBLIC_BASE_URL | none (webhooks off) |
| S3_BUCKET, S3_ENDPOINT_URL, S3_REGION | none: local storage |
| AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY | none (boto3's default chain) |
| STORAGE_DIR | var/storage |
| JOB_TIMEOUT_SECONDS | 1800 |
| STATUS_CHECK_INTERVAL | 5 |
| RATE_LIMIT_PER_MINUTE | 60 |
| MAX_UPLOAD_BYTES | 20971520 |
| MAX_VIDEO_BYTES | 524288000 |
| ALLOW_PRIVATE_DOWNLOADS | false |
| LOGIN_LIMIT_PER_ACCOUNT / LOGIN_LIMIT_PER_ADDRESS | 10 / 100 sign-in attempts per 5 minutes |
| MAX_IMAGE_PIXELS | 40000000 |
| TRUSTED_PROXY_COUNT | 0 (X-Forwarded-* headers ignored) |
| METRICS_TOKEN | none (/metrics answers 404) |
| ALLOW_PRIVATE_WEBHOOKS | false |
| WEBHOOK_RETRY_DELAYS | 5,300,1800,7200,18000,36000,36000 (seconds; ~27.6 h in all) |
| PORT | 8000 |
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _str(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    return raw.strip()


# Outbound webhook retries: the wait after each failed attempt (Standard Webhooks' own
# schedule); the last attempt comes ~27.6 h after the first, then the delivery gives up.
DEFAULT_WEBHOOK_RETRY_DELAYS = (5, 300, 1800, 7200, 18000, 36000, 36000)


def _delays(env: Mapping[str, str], name: str, default: tuple[float, ...]
            ) -> tuple[float, ...]:
    raw = _str(env, name)
    if raw is None:
        return default
    try:
        values = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise SettingsError(f"{name} must be comma-separated seconds, got {raw!r}") from None
    if any(v < 0 for v in values):
        raise SettingsError(f"{name} must not contain negative delays, got {raw!r}")
    return values


@dataclass(frozen=True)
class Settings:
    """Every setting of the README's settings table (docs/api.md §9), typed; build with
    `Settings.from_env()`."""

    secret_key: str | None = None
    surrealdb_url: str = "surrealkv://var/db"
    surrealdb_namespace: str = "videojobs"
    surrealdb_database: str = "videojobs"
    surrealdb_user: str | None = None
    surrealdb_pass: str | None = field(default=None, repr=False)
    redis_url: str = "redis://127.0.0.1:6379/0"
    fal_key: str | None = field(default=None, repr=False)
    fal_queue_url: str = "https://queue.fal.run"
    fal_jwks_url: str = "https://rest.alpha.fal.ai/.well-known/jwks.json"
    public_base_url: str | None = None
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = field(default=None, repr=False)
    storage_dir: str = "var/storage"
    job_timeout_seconds: int = 1800
    status_check_interval: int = 5
    rate_limit_per_minute: int = 60
    max_upload_bytes: int = 20 * 1024 * 1024
    max_video_bytes: int = 500 * 1024 * 1024
    allow_private_downloads: bool = False
    allow_private_webhooks: bool = False
    webhook_retry_delays: tuple[float, ...] = DEFAULT_WEBHOOK_RETRY_DELAYS
    port: int = 8000
    login_limit_per_account: int = 10
    login_limit_per_address: int = 100
    max_image_pixels: int = 40_000_000
    trusted_proxy_count: int = 0
    metrics_token: str | None = field(default=None, repr=False)
    # Not in the README's settings table: the embedded one-process mode (`videojobs up`,
    # tests) may run without SECRET_KEY; everything else must have it.
    embedded: bool = False
    # Whether REDIS_URL was given: `videojobs up` then joins that Redis (saying so) instead
    # of starting its private one.
    redis_url_explicit: bool = False

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        data_dir: str | None = None,
        embedded: bool = False,
        load_dotenv_file: bool = True,
    ) -> Settings:
        """Read settings; `data_dir` moves the embedded defaults (explicit settings win)."""
        if env is None:
            if load_dotenv_file:
                from dotenv import load_dotenv

                load_dotenv(override=False)
            env = os.environ
        base = Path(data_dir) if data_dir else Path("var")
        settings = cls(
            secret_key=_str(env, "SECRET_KEY"),
            surrealdb_url=_str(env, "SURREALDB_URL") or f"surrealkv://{base / 'db'}",
            surrealdb_namespace=_str(env, "SURREALDB_NAMESPACE") or "videojobs",
            surrealdb_database=_str(env, "SURREALDB_DATABASE") or "videojobs",
            surrealdb_user=_str(env, "SURREALDB_USER"),
            surrealdb_pass=_str(env, "SURREALDB_PASS"),
            redis_url=_str(env, "REDIS_URL") or "redis://127.0.0.1:6379/0",
            fal_key=_str(env, "FAL_KEY"),
            fal_queue_url=(_str(env, "FAL_QUEUE_URL") or "https://queue.fal.run").rstrip("/"),
            fal_jwks_url=_str(env, "FAL_JWKS_URL")
            or "https://rest.alpha.fal.ai/.well-known/jwks.json",
            public_base_url=(_str(env, "PUBLIC_BASE_URL") or "").rstrip("/") or None,
            s3_bucket=_str(env, "S3_BUCKET"),
            s3_endpoint_url=_str(env, "S3_ENDPOINT_URL"),
            s3_region=_str(env, "S3_REGION"),
            aws_access_key_id=_str(env, "AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=_str(env, "AWS_SECRET_ACCESS_KEY"),
            storage_dir=_str(env, "STORAGE_DIR") or str(base / "storage"),
            job_timeout_seconds=_int(env, "JOB_TIMEOUT_SECONDS", 1800, minimum=1),
            status_check_interval=_int(env, "STATUS_CHECK_INTERVAL", 5, minimum=1),
            rate_limit_per_minute=_int(env, "RATE_LIMIT_PER_MINUTE", 60),
            max_upload_bytes=_int(env, "MAX_UPLOAD_BYTES", 20 * 1024 * 1024, minimum=1),
            max_video_bytes=_int(env, "MAX_VIDEO_BYTES", 500 * 1024 * 1024, minimum=1),
            allow_private_downloads=_bool(env, "ALLOW_PRIVATE_DOWNLOADS", False),
            allow_private_webhooks=_bool(env, "ALLOW_PRIVATE_WEBHOOKS", False),
            webhook_retry_delays=_delays(env, "WEBHOOK_RETRY_DELAYS",
                                         DEFAULT_WEBHOOK_RETRY_DELAYS),
            port=_int(env, "PORT", 8000, minimum=1),
            login_limit_per_account=_int(env, "LOGIN_LIMIT_PER_ACCOUNT", 10),
            login_limit_per_address=_int(env, "LOGIN_LIMIT_PER_ADDRESS", 100),
            max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", 40_000_000, minimum=1),
            trusted_proxy_count=_int(env, "TRUSTED_PROXY_COUNT", 0),
            metrics_token=_str(env, "METRICS_TOKEN"),
            embedded=embedded,
            redis_url_explicit=_str(env, "REDIS_URL") is not None,
        )
        settings.check()
        return settings

    def replace(self, **changes: object) -> Settings:
        """A copy with some fields changed (tests, `videojobs up`)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def check(self) -> None:
        """Fail at start, naming the variable, rather than at first use."""
        if not self.secret_key and not self.embedded:
            raise SettingsError("SECRET_KEY is required (set it in the environment or .env)")
        if self.s3_bucket is None and self.s3_endpoint_url is not None:
            raise SettingsError("S3_ENDPOINT_URL is set but S3_BUCKET is not")
