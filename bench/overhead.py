"""What the sidecar costs a request, against a direct call to the same backend in the same run.

Three modes, one after the other, each with the same number of requests at the same concurrency,
against one scripted upstream running as its own process:

- ``direct``: the client calls the upstream's ``POST /api/tasks`` itself (the baseline);
- ``passthrough``: through the sidecar on a path no route intercepts (``POST /bench/tasks``):
  the cost of the proxy alone;
- ``memory``: through the sidecar on ``POST /api/tasks``: load the session, extract entities,
  inject history (growing to the 50-message window), forward, record the turn in Redis, and the
  writer copies it to PostgreSQL in the background.

The sidecar runs as its own process (``python -m sidecar serve``), as in a deployment; the client
and the upstream are separate processes too. Reported per mode: requests/s, p50 and p99 latency,
and the ratios of the sidecar modes to ``direct``; for ``memory`` also the median of the
``Server-Timing: sidecar;dur=`` header, the time spent in the sidecar itself.
``python -m bench.overhead`` prints the report.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.stack import (
    Stores,
    median,
    percentile,
    ratio,
    sidecar_config,
    sidecar_process,
    stores_or_temporary,
    upstream_process,
)

QUERIES = (
    "what's the weather in Paris tomorrow?",
    "and in Berlin?",
    "what about friday",
    "明天北京天气怎么样",
    "那后天呢",
    "tell me a joke",
)
SERVER_TIMING = re.compile(r"sidecar;dur=([0-9.]+)")


@dataclass(frozen=True, slots=True)
class ModeResult:
    name: str
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    sidecar_ms: list[float] = field(repr=False)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)

    @property
    def sidecar_median_ms(self) -> float | None:
        return median(self.sidecar_ms) if self.sidecar_ms else None


@dataclass(frozen=True, slots=True)
class OverheadReport:
    direct: ModeResult
    passthrough: ModeResult
    memory: ModeResult
    concurrency: int
    memory_alone: ModeResult

    def ratios(self, mode: ModeResult) -> dict[str, float]:
        """``mode`` against ``direct``: latency ratios above 1 and a throughput ratio below 1
        are what the sidecar costs."""
        return {
            "p50": ratio(mode.p50_ms, self.direct.p50_ms),
            "p99": ratio(mode.p99_ms, self.direct.p99_ms),
            "rps": ratio(mode.rps, self.direct.rps),
        }

    def fields(self) -> dict[str, float]:
        """The figures as flat name/value pairs (for the combined report and the tests)."""
        out: dict[str, float] = {}
        for mode in (self.direct, self.passthrough, self.memory):
            out[f"{mode.name}_rps"] = mode.rps
            out[f"{mode.name}_p50_ms"] = mode.p50_ms
            out[f"{mode.name}_p99_ms"] = mode.p99_ms
        for mode in (self.passthrough, self.memory):
            for key, value in self.ratios(mode).items():
                out[f"{mode.name}_to_direct_{key}"] = value
        out["memory_sidecar_dur_median_ms"] = self.memory.sidecar_median_ms or 0.0
        out["memory_alone_p50_ms"] = self.memory_alone.p50_ms
        out["memory_alone_sidecar_dur_median_ms"] = self.memory_alone.sidecar_median_ms or 0.0
        return out

    def render(self) -> str:
        n = self.direct.requests
        out = [
            f"sidecar overhead ({n} requests per mode, concurrency {self.concurrency}, "
            "modes taking turns)",
            "",
            f"  {'mode':<28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"
            f"   {'p50 x':>6} {'p99 x':>6} {'req/s x':>7}",
        ]
        labels = {
            "direct": "a direct to upstream",
            "passthrough": "b sidecar, pass-through",
            "memory": "c sidecar, /api/tasks memory",
        }
        for mode in (self.direct, self.passthrough, self.memory):
            line = (
                f"  {labels[mode.name]:<28} {mode.rps:8.0f} {mode.p50_ms:8.2f} {mode.p99_ms:8.2f}"
                f" {mode.errors:7d}"
            )
            if mode is not self.direct:
                r = self.ratios(mode)
                line += f"   {r['p50']:6.2f} {r['p99']:6.2f} {r['rps']:7.2f}"
            out.append(line)
        sidecar_ms = self.memory.sidecar_median_ms
        out += [
            "",
            "  ratios are against a (b/a, c/a): latency x above 1 and req/s x below 1 are the cost",
            f"  c: median Server-Timing sidecar;dur = "
            f"{sidecar_ms:.2f} ms (time spent in the sidecar itself)"
            if sidecar_ms is not None
            else "  c: no Server-Timing header seen",
            f"  c with one client at a time ({self.memory_alone.requests} requests): "
            f"p50 {self.memory_alone.p50_ms:.2f} ms, Server-Timing median "
            f"{self.memory_alone.sidecar_median_ms or 0.0:.2f} ms",
        ]
        return "\n".join(out)


BodyFor = Callable[[int, int], dict[str, Any]]


async def drive(
    http: aiohttp.ClientSession,
    name: str,
    url: str,
    body_for: BodyFor,
    *,
    requests: int,
    concurrency: int,
) -> ModeResult:
    """``requests`` POSTs to ``url`` from ``concurrency`` workers; ``body_for(worker, n)`` gives
    the body of a worker's ``n``-th request."""
    counter = itertools.count()
    latencies: list[float] = []
    sidecar_ms: list[float] = []
    errors = 0

    async def worker(w: int) -> None:
        nonlocal errors
        for n in itertools.count():
            if next(counter) >= requests:
                return
            body = body_for(w, n)
            t0 = time.perf_counter()
            async with http.post(url, json=body) as resp:
                await resp.read()
                status = resp.status
                timing = resp.headers.get("Server-Timing")
            latencies.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                errors += 1
            if timing and (m := SERVER_TIMING.search(timing)):
                sidecar_ms.append(float(m.group(1)))

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    seconds = time.perf_counter() - started
    latencies.sort()
    return ModeResult(name, requests, errors, seconds, latencies, sidecar_ms)


def _bodies(prefix: str, turns_per_session: int) -> BodyFor:
    """Each worker plays its own sessions, ``turns_per_session`` turns each, one after another."""

    def body_for(w: int, n: int) -> dict[str, Any]:
        return {
            "query": QUERIES[n % len(QUERIES)],
            "session_id": f"{prefix}-{w}-{n // turns_per_session}",
        }

    return body_for


async def measure(
    stores: Stores,
    *,
    requests: int = 2000,
    concurrency: int = 16,
    warmup: int = 200,
    turns_per_session: int = 25,
    rounds: int = 4,
) -> OverheadReport:
    async with upstream_process() as upstream_url:
        config = sidecar_config(upstream_url, stores)
        async with sidecar_process(config) as sidecar_url:
            connector = aiohttp.TCPConnector(limit=concurrency)
            timeout = aiohttp.ClientTimeout(total=60)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
                plan = [
                    ("direct", upstream_url + "/api/tasks"),
                    ("passthrough", sidecar_url + "/bench/tasks"),
                    ("memory", sidecar_url + "/api/tasks"),
                ]
                for name, url in plan:
                    # Warm-up: connections, scripts, code paths; its sessions are not reused.
                    await drive(
                        http,
                        name,
                        url,
                        _bodies(f"warm-{name}", turns_per_session),
                        requests=min(warmup, requests),
                        concurrency=concurrency,
                    )
                # The modes take turns, so a drift of the machine's speed hits them alike.
                parts: dict[str, list[ModeResult]] = {name: [] for name, _ in plan}
                for r in range(rounds):
                    share = requests // rounds + (1 if r < requests % rounds else 0)
                    for name, url in plan:
                        parts[name].append(
                            await drive(
                                http,
                                name,
                                url,
                                _bodies(f"ovh{r}-{name}", turns_per_session),
                                requests=share,
                                concurrency=concurrency,
                            )
                        )
                results = {name: _merge(name, done) for name, done in parts.items()}
                # One client at a time: what a turn costs when nothing queues in the sidecar.
                alone = await drive(
                    http,
                    "memory_alone",
                    sidecar_url + "/api/tasks",
                    _bodies("alone", turns_per_session),
                    requests=min(requests, 200),
                    concurrency=1,
                )
    return OverheadReport(
        results["direct"], results["passthrough"], results["memory"], concurrency, alone
    )


def _merge(name: str, parts: list[ModeResult]) -> ModeResult:
    return ModeResult(
        name,
        sum(p.requests for p in parts),
        sum(p.errors for p in parts),
        sum(p.seconds for p in parts),
        sorted(x for p in parts for x in p.latencies_ms),
        [x for p in parts for x in p.sidecar_ms],
    )


def main(argv: list[str] | None = None, stores: Stores | None = None) -> OverheadReport:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="per mode")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4, help="turns the modes take")
    args = parser.parse_args(argv)

    def run(s: Stores) -> OverheadReport:
        return asyncio.run(
            measure(
                s,
                requests=args.requests,
                concurrency=args.concurrency,
                warmup=args.warmup,
                rounds=args.rounds,
            )
        )

    with stores_or_temporary(stores) as made:
        report = run(made)
    print(report.render())
    sys.stdout.flush()
    return report


if __name__ == "__main__":
    main()
