"""Prometheus metrics of one server: requests by route and status, latency, tokens, batch sizes.

Each server has its own registry, so several servers in one process (tests) never share counters.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

ROUTES = frozenset({"/chat", "/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/metrics", "/health",
                    "/ready", "/metrics", "/", "/v1/models/{id}"})
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    """The counters and histograms `/metrics` shows."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("kairo_requests", "HTTP requests answered, by route and status code",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("kairo_request_duration_seconds", "Time from request to the last byte, by route",
                                 ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.prompt_tokens = Counter("kairo_prompt_tokens", "Prompt tokens read, by model", ["model"],
                                     registry=self.registry)
        self.generated_tokens = Counter("kairo_generated_tokens", "Tokens generated, by model", ["model"],
                                        registry=self.registry)
        self.batch_size = Histogram("kairo_batch_size", "Requests answered by one generate call",
                                    buckets=_BATCH_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("kairo_batch_duration_seconds", "Time one generate call took",
                                       buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.queue_seconds = Histogram("kairo_queue_wait_seconds", "Time a request waited for its batch",
                                       buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.ready = Gauge("kairo_model_ready", "1 once the model is loaded", registry=self.registry)

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        route = "/v1/models/{id}" if path.startswith("/v1/models/") else path
        route = route if route in ROUTES else "other"  # unknown paths must not grow the label set
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def observe_batch(self, jobs: list[Any], started: float) -> None:
        """Record one finished generate call (called from the worker thread)."""
        self.batch_size.observe(len(jobs))
        self.batch_seconds.observe(time.monotonic() - started)
        for job in jobs:
            self.queue_seconds.observe(max(started - job.enqueued, 0.0))
            self.prompt_tokens.labels(model=job.model_name).inc(len(job.prompt))
            self.generated_tokens.labels(model=job.model_name).inc(len(job.tokens))

    def render(self) -> bytes:
        return generate_latest(self.registry)
