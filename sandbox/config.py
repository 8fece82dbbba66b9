"""A sandbox's settings as one frozen value, so what a provider does is stated where it is built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """How a `SandboxProvider` behaves; the defaults suit tests (`python -m sandbox` sets a few)."""

    # Timing: a job is IN_QUEUE for queue_seconds, then IN_PROGRESS for at least run_seconds.
    queue_seconds: float = 0.5
    run_seconds: float = 2.0

    # Output: fetch image_url and render a real MP4 per job, or (False) serve one stock clip.
    render: bool = True
    width: int = 320
    fps: int = 12
    render_workers: int = 2
    image_timeout: float = 10.0
    max_image_bytes: int = 50 * MIB

    # Protocol: accept only this key (None: any `Key <non-empty>`); the URL root in answers
    # (None: the Host the client used); HTTP/1.1 keep-alive as fal serves it.
    api_key: str | None = None
    public_url: str | None = None
    keep_alive: bool = True

    # Webhooks: the signer's user id; retries after the first attempt, backoff * 2**n apart.
    user_id: str = "sandbox-user"
    webhook_retries: int = 3
    webhook_backoff: float = 0.2
    webhook_timeout: float = 5.0

    # Fault scenarios without an `=value`: their defaults (see jobs.SCENARIOS).
    submit_timeout_seconds: float = 5.0
    slow_status_seconds: float = 3.0
    private_redirect_url: str = "http://169.254.169.254/latest/meta-data"
    huge_file_bytes: int = 640 * MIB
    huge_chunked_bytes: int = 64 * 1024 * MIB

    # With a state directory the port and accepted requests survive a restart (journal.py).
    state_dir: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_url", (self.public_url or "").rstrip("/") or None)
        if self.state_dir is not None:
            object.__setattr__(self, "state_dir", Path(self.state_dir))
