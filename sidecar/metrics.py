"""Prometheus metrics: one registry per application (several apps may share a process in tests),
holding the sidecar's own metrics and the standard process, platform and GC collectors."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class _Callback(Collector):
    def __init__(self, name: str, doc: str, fn: Callable[[], float]) -> None:
        self.name, self.doc, self.fn = name, doc, fn

    def collect(self):  # type: ignore[no-untyped-def]
        yield GaugeMetricFamily(self.name, self.doc, value=self.fn())


UPSTREAM_ERROR_REASONS = ("status_5xx", "unreachable", "timeout")


def _histogram_parts() -> bool:
    """Whether this prometheus_client's histograms hold what ``Tally`` adds to (``_sum``,
    ``_buckets`` and ``_upper_bounds``, not its public interface): if a release changes them,
    observations go to ``observe`` one by one, as before there was a tally."""
    probe = Histogram("probe_seconds", "", registry=None)
    return all(hasattr(probe, name) for name in ("_sum", "_buckets", "_upper_bounds"))


HISTOGRAM_PARTS = _histogram_parts()


class Tally:
    """Counter increments and histogram observations held in plain dicts and added to their
    metrics when the metrics are rendered: a counter's own ``inc`` takes a lock and makes a few
    checks, and a histogram's ``observe`` takes two locks and walks its buckets, a cost paid on
    every request otherwise. What is rendered is the same (a histogram's sum, added up here
    first, may differ from one added an observation at a time in its last binary digits)."""

    __slots__ = ("_counts", "_observed")

    def __init__(self) -> None:
        self._counts: dict[Any, int] = {}
        # Per labelled histogram: [sum, then the count of each bucket, +Inf last].
        self._observed: dict[Any, list[Any]] = {}

    def add(self, child: Any) -> None:
        """One more of ``child`` (a labelled counter)."""
        counts = self._counts
        counts[child] = counts.get(child, 0) + 1

    def observe(self, child: Any, amount: float) -> None:
        """One observation of ``amount`` by ``child`` (a labelled histogram): counted in its
        first bucket whose upper bound is at least ``amount``, as ``Histogram.observe`` does."""
        if not HISTOGRAM_PARTS:
            child.observe(amount)  # a prometheus_client whose histograms are built otherwise
            return
        seen = self._observed.get(child)
        if seen is None:
            seen = self._observed[child] = [0.0] + [0] * len(child._upper_bounds)
        seen[0] += amount
        seen[1 + bisect_left(child._upper_bounds, amount)] += 1

    def flush(self) -> None:
        counts, self._counts = self._counts, {}
        for child, n in counts.items():
            child.inc(n)
        observed, self._observed = self._observed, {}
        # A histogram's parts, as its own ``observe`` adds to them (prometheus_client's
        # ``Histogram``: ``_sum`` and one ``_buckets`` value per bound; a test renders both ways).
        for child, (total, *buckets) in observed.items():
            child._sum.inc(total)
            for bucket, n in zip(child._buckets, buckets, strict=True):
                if n:
                    bucket.inc(n)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._tallies: list[Tally] = []
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        if GC_COLLECTOR is not None:  # absent on interpreters without gc.get_stats
            GCCollector(registry=r)
        # Labels are the configured route (or "passthrough", or a /_sidecar endpoint's template),
        # never anything a client chooses: no paths, session ids or tenants.
        self.http_requests = Counter(
            "sidecar_http_requests",
            "Responses sent to clients, the sidecar's own (4xx, 502, 504) and pass-through ones "
            "included, by route, adapter and status code.",
            ["route", "adapter", "code"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "sidecar_upstream_duration_seconds",
            "Time from sending a request upstream to the upstream's response headers.",
            ["route", "adapter"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.upstream_errors = Counter(
            "sidecar_upstream_errors",
            "Requests the upstream failed: it answered 5xx (status_5xx), could not be reached "
            "(unreachable, a 502) or did not answer in time (timeout, a 504).",
            ["route", "adapter", "reason"],
            registry=r,
        )
        self.overhead = Histogram(
            "sidecar_overhead_seconds",
            "Time spent in the sidecar itself on intercepted turns (the upstream's time excluded).",
            ["route", "adapter"],
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
            "Turns waiting in the outbox for PostgreSQL (last measured).",
            registry=r,
        )
        self.outbox_lag_unknown = Gauge(
            "sidecar_outbox_lag_unknown",
            "1 when the last measurement of the outbox lag failed (sidecar_outbox_lag is stale).",
            registry=r,
        )

    def known_routes(self, routes: list[tuple[str, str]]) -> None:
        """Start the error counters of these (route, adapter) pairs at zero, so that an alert
        comparing them with the request count has a series to compare from the start."""
        for route, adapter in routes:
            for reason in UPSTREAM_ERROR_REASONS:
                self.upstream_errors.labels(route, adapter, reason)

    def gauge_callback(self, name: str, doc: str, fn: Callable[[], float]) -> None:
        self.registry.register(_Callback(name, doc, fn))

    def tally(self) -> Tally:
        """A tally of counter increments, added to the counters before every render."""
        tally = Tally()
        self._tallies.append(tally)
        return tally

    def render(self) -> bytes:
        for tally in self._tallies:
            tally.flush()
        return bytes(generate_latest(self.registry))
