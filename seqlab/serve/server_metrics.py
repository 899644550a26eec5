"""The server's Prometheus metrics (``GET /metrics``, text exposition format)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ServerMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    """Requests by endpoint and status, request latency, batch sizes and decode time, and
    the queue depth, in a registry of their own (one per server)."""

    def __init__(self, queue_depth: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "seqlab_requests",
            "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "seqlab_request_latency_seconds",
            "Time from a request's arrival to its answer, by endpoint.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "seqlab_batch_size",
            "Inputs decoded together in one batch.",
            buckets=_BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.decode_time = Histogram(
            "seqlab_batch_decode_seconds",
            "Time to decode one batch.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        gauge = Gauge("seqlab_queue_depth", "Requests waiting for a batch.", registry=self.registry)
        gauge.set_function(lambda: float(queue_depth()))

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.decode_time.observe(seconds)

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)
