"""What the parts of a running sandbox share: its settings, its jobs, and the one lock over them."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.config import SandboxConfig
from sandbox.jobs import Job
from sandbox.journal import Journal


@dataclass(eq=False)
class State:
    """Held by the protocol, the job runner, the webhooks, the files and the observations.

    `lock` guards `jobs`, every job's outcome and counters, and the observation logs.
    """

    config: SandboxConfig
    journal: Journal | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    jobs: dict[str, Job] = field(default_factory=dict)
    generation: int = 0  # bumped by reset(): late webhooks of forgotten jobs are dropped
    url: str = ""  # the root URL the sandbox answers on, once it listens
    workdir: Path | None = None  # rendered files, while running
    stock_video: bytes = b""  # render=False: the one clip every job serves
