"""Prometheus metrics of one server: requests, the gate's path, transferred tokens, per-stage latency.

Each server owns its registry (not the process-global one), so two apps in one process never clash.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..relay import STAGES, RelayResult

__all__ = ["ServeMetrics"]

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServeMetrics:
    """The counters and histograms /metrics exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tokenrelay_requests",
            "HTTP requests by endpoint and status code",
            ["endpoint", "status"],
            registry=r,
        )
        self.paths = Counter(
            "tokenrelay_relay_path",
            "Relay answers by path: direct, transfer, or fallback (small model failed or timed out)",
            ["path"],
            registry=r,
        )
        self.transferred = Counter(
            "tokenrelay_transferred_tokens", "Reasoning tokens sent to the large model", registry=r
        )
        self.reasoning = Counter(
            "tokenrelay_reasoning_tokens",
            "Reasoning tokens the small model wrote (large-model tokens)",
            registry=r,
        )
        self.stage_seconds = Histogram(
            "tokenrelay_stage_seconds",
            "Wall seconds per relay stage",
            ["stage"],
            buckets=_SECONDS,
            registry=r,
        )
        self.request_seconds = Histogram(
            "tokenrelay_request_seconds",
            "Seconds from a request's arrival to its answer (queue included)",
            buckets=_SECONDS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "tokenrelay_queue_depth", "Requests waiting for the model worker", registry=r
        )
        self.batch_size = Histogram(
            "tokenrelay_batch_size",
            "Requests answered per relay batch",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        for path in ("direct", "transfer", "fallback"):
            self.paths.labels(path=path)
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)

    def record_result(self, result: RelayResult, fallback: bool) -> None:
        self.paths.labels(path="fallback" if fallback else result.path).inc()
        self.transferred.inc(result.transfer_tokens)
        self.reasoning.inc(result.reasoning_tokens)
        for stage, stats in result.stages.items():
            self.stage_seconds.labels(stage=stage).observe(stats.seconds)
