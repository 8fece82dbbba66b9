"""What a sandbox keeps across restarts when given a state directory: its port, and one
small JSON file per accepted request (what fal would keep on its side).

`videojobs up` runs the sandbox inside its own process, so a `kill -9` used to take the
accepted requests with it and the restarted sandbox came back on a new port: every
stored status URL was dead and in-progress jobs waited for their deadline. With the port
and the requests in the data directory, a restarted sandbox answers the same URLs and
finishes (re-renders) what it had accepted.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KEEP_SECONDS = 2 * 24 * 3600


class Journal:
    """`<state>/port` and `<state>/requests/<request_id>.json`, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests = root / "requests"
        self.files = root / "files"
        for path in (self.requests, self.files):
            path.mkdir(parents=True, exist_ok=True)

    def saved_port(self) -> int:
        try:
            return int((self.root / "port").read_text().strip())
        except (OSError, ValueError):
            return 0

    def save_port(self, port: int) -> None:
        self._write(self.root / "port", str(port))

    def record(self, request_id: str, entry: dict[str, Any]) -> None:
        self._write(self.requests / f"{request_id}.json",
                    json.dumps({**entry, "recorded_at": time.time()}))

    def update(self, request_id: str, **fields: Any) -> None:
        path = self.requests / f"{request_id}.json"
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        entry.update(fields)
        self._write(path, json.dumps(entry))

    def entries(self) -> list[tuple[str, dict[str, Any]]]:
        """Every request kept, oldest first; entries past KEEP_SECONDS are deleted."""
        kept: list[tuple[str, dict[str, Any]]] = []
        for path in sorted(self.requests.glob("*.json")):
            try:
                entry = json.loads(path.read_text())
            except (OSError, ValueError):
                log.warning("sandbox journal: unreadable %s skipped", path.name)
                continue
            if time.time() - float(entry.get("recorded_at", 0)) > KEEP_SECONDS:
                path.unlink(missing_ok=True)
                (self.files / f"{path.stem}.mp4").unlink(missing_ok=True)
                continue
            kept.append((path.stem, entry))
        return kept

    @staticmethod
    def _write(path: Path, text: str) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
