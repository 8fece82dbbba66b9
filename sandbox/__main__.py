"""Run the sandbox provider in the foreground: `python -m sandbox --port 8765`."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from sandbox.config import SandboxConfig
from sandbox.provider import SandboxProvider

log = logging.getLogger("sandbox")


def main(argv: list[str] | None = None) -> int:
    """Parse options, serve until SIGINT/SIGTERM, then stop cleanly."""
    parser = argparse.ArgumentParser(prog="python -m sandbox",
                                     description="Local fal-queue-compatible sandbox provider.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--queue-seconds", type=float, default=0.5)
    parser.add_argument("--run-seconds", type=float, default=2.0)
    parser.add_argument("--no-render", action="store_true",
                        help="serve one pre-rendered clip instead of rendering each job")
    parser.add_argument("--public-url", default=None,
                        help="URL root used in answers (default: the Host the client used)")
    parser.add_argument("--api-key", default=None, help="accept only this FAL_KEY")
    parser.add_argument("--webhook-retries", type=int, default=3)
    parser.add_argument("--no-keep-alive", action="store_true",
                        help="close every connection after one request (HTTP/1.0)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    provider = SandboxProvider(SandboxConfig(
        queue_seconds=args.queue_seconds, run_seconds=args.run_seconds,
        render=not args.no_render, webhook_retries=args.webhook_retries,
        public_url=args.public_url, api_key=args.api_key, keep_alive=not args.no_keep_alive))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    provider.start(args.host, args.port)
    log.info("FAL_QUEUE_URL=%s FAL_JWKS_URL=%s (any FAL_KEY)", provider.queue_url,
             provider.jwks_url)
    stop.wait()
    provider.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
