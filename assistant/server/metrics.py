"""Prometheus metrics of a running server (GET /metrics), in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Requests, tokens, queue depth, time to first token and batch occupancy."""

    def __init__(self, backend):
        self.registry = CollectorRegistry()
        self.requests = Counter("hearth_requests", "HTTP requests answered", ["endpoint", "status"],
                                registry=self.registry)
        self.prompt_tokens = Counter("hearth_prompt_tokens", "prompt tokens of served replies", registry=self.registry)
        self.completion_tokens = Counter("hearth_completion_tokens", "tokens generated for served replies",
                                         registry=self.registry)
        self.ttft = Histogram("hearth_time_to_first_token_seconds", "from request to first reply text",
                              buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        queue = Gauge("hearth_queue_depth", "requests waiting for a slot", registry=self.registry)
        queue.set_function(lambda: getattr(backend, "queued", 0))
        active = Gauge("hearth_active_sequences", "sequences being decoded", registry=self.registry)
        active.set_function(lambda: getattr(backend, "active", 0))
        if hasattr(backend, "occupancy"):  # a batching backend
            occupancy = Gauge("hearth_batch_occupancy", "mean sequences per decode step since start",
                              registry=self.registry)
            occupancy.set_function(lambda: backend.occupancy)

    def request(self, endpoint: str, status: int) -> None:
        self.requests.labels(endpoint, str(status)).inc()

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def tokens(self, prompt: int, completion: int) -> None:
        self.prompt_tokens.inc(prompt)
        self.completion_tokens.inc(completion)

    def text(self) -> bytes:
        return generate_latest(self.registry)
