"""Prometheus metrics (process-global, as prometheus-client expects)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter("videojobs_http_requests_total", "HTTP requests",
                   ["method", "route", "status"])
LATENCY = Histogram("videojobs_http_request_seconds", "HTTP request latency",
                    ["method", "route"],
                    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
JOBS_CREATED = Counter("videojobs_jobs_created_total", "Video jobs created", ["template"])
CREDITS_CHARGED = Counter("videojobs_credits_charged_total", "Credits charged for video jobs")
JOBS_FINISHED = Counter("videojobs_jobs_finished_total", "Video jobs that reached a terminal "
                        "state", ["status"])
