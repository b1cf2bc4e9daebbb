"""Prometheus metrics, one registry per application (several apps may share a process in tests)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class _Callback(Collector):
    def __init__(self, name: str, doc: str, fn: Callable[[], float]) -> None:
        self.name, self.doc, self.fn = name, doc, fn

    def collect(self):  # type: ignore[no-untyped-def]
        yield GaugeMetricFamily(self.name, self.doc, value=self.fn())


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sidecar_requests",
            "Requests handled, by route kind and status.",
            ["route", "status"],
            registry=r,
        )
        self.overhead = Histogram(
            "sidecar_overhead_seconds",
            "Time spent in the sidecar itself on intercepted turns.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.degraded = Counter(
            "sidecar_degraded_requests",
            "Turns served with degraded memory, by reason.",
            ["reason"],
            registry=r,
        )
        self.turns_recorded = Counter(
            "sidecar_turns_recorded",
            "Turns committed to Redis (or, degraded, elsewhere).",
            ["store"],
            registry=r,
        )
        self.writer_events = Counter(
            "sidecar_writer_events_written",
            "Outbox events written to PostgreSQL.",
            registry=r,
        )
        self.writer_batches = Counter(
            "sidecar_writer_batches",
            "Batches written to PostgreSQL.",
            registry=r,
        )
        self.writer_retries = Counter(
            "sidecar_writer_retries",
            "Write attempts retried after a transient error.",
            ["store"],
            registry=r,
        )
        self.dead_letters = Counter(
            "sidecar_writer_dead_letters",
            "Outbox events moved to the dead-letter stream.",
            registry=r,
        )
        self.journal_replayed = Counter(
            "sidecar_journal_replayed",
            "Turns replayed from the local journal.",
            registry=r,
        )
        self.outbox_lag = Gauge(
            "sidecar_outbox_lag",
            "Turns waiting in the outbox for PostgreSQL (last seen).",
            registry=r,
        )

    def gauge_callback(self, name: str, doc: str, fn: Callable[[], float]) -> None:
        self.registry.register(_Callback(name, doc, fn))

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
