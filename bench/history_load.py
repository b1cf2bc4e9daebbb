"""The cost of loading a session does not grow with its length.

Sessions of 50, 500 and 5,000 stored messages are seeded in Redis (``RedisSessionStore.seed``,
as a restore from PostgreSQL would), then loaded again and again:

- ``SessionService.load`` with the in-process cache (L1) cleared before every load, so each one
  is a full Redis round trip that returns the window (the last ``history_limit`` = 50 messages),
  the counters and the context;
- the same, with the L1 current: Redis answers with the version only;
- ``POST /api/tasks`` through the sidecar over HTTP, L1 cleared before each request (each request
  also records a turn, which adds 2 messages to sessions of thousands).

Reported per session size: the median time of a load, the bytes Redis sent per load (the delta
of ``INFO stats`` ``total_net_output_bytes`` over the loads, divided by their number), and the
ratio of the largest session to the smallest, which should be close to 1.
``python -m bench.history_load`` prints the report.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import redis.asyncio as aioredis

from bench.stack import (
    Stores,
    median,
    percentile,
    ratio,
    scripted_upstream,
    sidecar_config,
    sidecar_in_process,
    stores_or_temporary,
)
from sidecar.app import REDIS_STORE, SESSIONS
from sidecar.session.manager import SessionService
from sidecar.session.model import Message, SessionKey, utc_now_iso
from sidecar.store.redis import RedisSessionStore

SIZES = (50, 500, 5000)
TENANT = "anonymous"  # what the sidecar names a client that presents no credential
WINDOW = 50


@dataclass(frozen=True, slots=True)
class SizeResult:
    messages: int
    cold_ms: float
    cold_p99_ms: float
    warm_ms: float
    http_ms: float
    cold_bytes: float
    warm_bytes: float


@dataclass(frozen=True, slots=True)
class HistoryLoadReport:
    results: tuple[SizeResult, ...]
    loads: int
    http_requests: int

    @property
    def smallest(self) -> SizeResult:
        return self.results[0]

    @property
    def largest(self) -> SizeResult:
        return self.results[-1]

    def ratios(self) -> dict[str, float]:
        """Largest session against smallest: about 1 when the cost does not grow with length."""
        small, large = self.smallest, self.largest
        return {
            "cold_load": ratio(large.cold_ms, small.cold_ms),
            "warm_load": ratio(large.warm_ms, small.warm_ms),
            "http": ratio(large.http_ms, small.http_ms),
            "cold_bytes": ratio(large.cold_bytes, small.cold_bytes),
        }

    def fields(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in self.results:
            out[f"load_cold_ms_{r.messages}"] = r.cold_ms
            out[f"load_warm_ms_{r.messages}"] = r.warm_ms
            out[f"http_ms_{r.messages}"] = r.http_ms
            out[f"redis_bytes_per_cold_load_{r.messages}"] = r.cold_bytes
        for key, value in self.ratios().items():
            out[f"ratio_{self.largest.messages}_to_{self.smallest.messages}_{key}"] = value
        return out

    def render(self) -> str:
        small, large = self.smallest.messages, self.largest.messages
        out = [
            f"history load cost against session length (window {WINDOW} messages; "
            f"{self.loads} loads and {self.http_requests} HTTP requests per size)",
            "",
            f"  {'messages':>8} {'cold ms':>9} {'cold p99':>9} {'warm ms':>9} {'HTTP ms':>9}"
            f" {'bytes/cold':>11} {'bytes/warm':>11}",
        ]
        for r in self.results:
            out.append(
                f"  {r.messages:>8} {r.cold_ms:9.3f} {r.cold_p99_ms:9.3f} {r.warm_ms:9.3f}"
                f" {r.http_ms:9.3f} {r.cold_bytes:11.0f} {r.warm_bytes:11.0f}"
            )
        ratios = self.ratios()
        out += [
            "",
            f"  ratio {large}/{small}: cold load {ratios['cold_load']:.2f}, "
            f"warm load {ratios['warm_load']:.2f}, HTTP {ratios['http']:.2f}, "
            f"Redis bytes per cold load {ratios['cold_bytes']:.2f}  (about 1: flat)",
            "  cold: L1 cleared, Redis returns the window; warm: L1 current, Redis returns the "
            "version only",
        ]
        return "\n".join(out)


def _messages(n: int) -> list[Message]:
    now = utc_now_iso()
    out = []
    for i in range(n):
        role = "user" if i % 2 == 0 else "assistant"
        text = (
            f"message {i}: what will the weather be like in Paris on day {i}?"
            if role == "user"
            else f"answer {i}: mostly sunny with a light breeze, highs of 22 and lows of 14 degrees."
        )
        out.append(Message(seq=i + 1, id=str(uuid.uuid4()), role=role, content=text, timestamp=now))
    return out


async def seed(store: RedisSessionStore, key: SessionKey, n: int) -> None:
    now = utc_now_iso()
    await store.seed(
        key,
        last_seq=n,
        tokens_used=20 * n,
        message_count=n,
        created_at=now,
        updated_at=now,
        context={"location": "Paris", "topic": "weather", "date": "2025-06-05"},
        messages=_messages(n),
        announce=False,
    )


async def _bytes_sent(info: aioredis.Redis) -> int:
    stats = await info.info("stats")
    return int(stats["total_net_output_bytes"])


async def _timed(times: int, step: Callable[[], Awaitable[object]]) -> list[float]:
    out = []
    for _ in range(times):
        t0 = time.perf_counter()
        await step()
        out.append((time.perf_counter() - t0) * 1000)
    out.sort()
    return out


async def _interleaved(
    keys: dict[int, SessionKey],
    times: int,
    step_for: Callable[[SessionKey], Callable[[], Awaitable[object]]],
) -> dict[int, list[float]]:
    steps = {n: step_for(key) for n, key in keys.items()}
    out: dict[int, list[float]] = {n: [] for n in keys}
    for _ in range(times):
        for n, step in steps.items():
            t0 = time.perf_counter()
            await step()
            out[n].append((time.perf_counter() - t0) * 1000)
    for values in out.values():
        values.sort()
    return out


async def _bytes_per_call(
    info: aioredis.Redis, times: int, step: Callable[[], Awaitable[object]]
) -> float:
    # The first INFO's own reply is counted in the delta: measure it and take it off.
    a, b = await _bytes_sent(info), await _bytes_sent(info)
    info_reply = b - a
    before = await _bytes_sent(info)
    for _ in range(times):
        await step()
    after = await _bytes_sent(info)
    return max(0.0, (after - before - info_reply) / times)


async def measure(
    stores: Stores, *, sizes: tuple[int, ...] = SIZES, loads: int = 300, http_requests: int = 100
) -> HistoryLoadReport:
    async with scripted_upstream() as upstream:
        config = sidecar_config(
            upstream.url,
            stores,
            session={"history_limit": WINDOW, "max_stored_messages": 2 * max(sizes) + 1000},
            # A long block keeps the writer's polling out of the byte counts.
            writer={"block_ms": 5000},
        )
        async with (
            sidecar_in_process(config) as sidecar,
            aiohttp.ClientSession() as http,
        ):
            sessions: SessionService = sidecar.app[SESSIONS]
            store = sidecar.app[REDIS_STORE]
            info = aioredis.Redis.from_url(stores.redis_url)
            try:
                keys = {n: SessionKey(TENANT, f"hist-{n}-{uuid.uuid4().hex[:8]}") for n in sizes}
                for n, key in keys.items():
                    await seed(store, key, n)

                def cold(key: SessionKey) -> Callable[[], Awaitable[object]]:
                    async def step() -> object:
                        sessions.cache.clear()
                        return await sessions.load(key)

                    return step

                def warm(key: SessionKey) -> Callable[[], Awaitable[object]]:
                    return lambda: sessions.load(key)

                def post(key: SessionKey) -> Callable[[], Awaitable[object]]:
                    async def step() -> object:
                        sessions.cache.clear()
                        body = {"query": "and tomorrow?", "session_id": key.session_id}
                        async with http.post(sidecar.url + "/api/tasks", json=body) as resp:
                            if resp.status != 200:
                                raise RuntimeError(f"sidecar answered {resp.status}")
                            return await resp.read()

                    return step

                for key in keys.values():  # warm-up: scripts, connections, code paths
                    await _timed(20, cold(key))
                    await _timed(5, post(key))

                for n, key in keys.items():
                    loaded = await sessions.load(key)
                    assert len(loaded.snapshot.window) == min(n, WINDOW)
                # The sizes take turns, so a drift of the machine's speed hits them alike.
                cold_ms = await _interleaved(keys, loads, cold)
                warm_ms = await _interleaved(keys, loads, warm)
                http_ms = await _interleaved(keys, http_requests, post)
                results = [
                    SizeResult(
                        messages=n,
                        cold_ms=median(cold_ms[n]),
                        cold_p99_ms=percentile(cold_ms[n], 99),
                        warm_ms=median(warm_ms[n]),
                        http_ms=median(http_ms[n]),
                        cold_bytes=await _bytes_per_call(info, loads, cold(key)),
                        warm_bytes=await _bytes_per_call(info, loads, warm(key)),
                    )
                    for n, key in keys.items()
                ]
            finally:
                await info.aclose()
    return HistoryLoadReport(tuple(results), loads, http_requests)


def main(argv: list[str] | None = None, stores: Stores | None = None) -> HistoryLoadReport:
    parser = argparse.ArgumentParser(prog="python -m bench.history_load", description=__doc__)
    parser.add_argument("--loads", type=int, default=300, help="timed loads per session size")
    parser.add_argument("--http-requests", type=int, default=100, help="per session size")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    args = parser.parse_args(argv)

    def run(s: Stores) -> HistoryLoadReport:
        return asyncio.run(
            measure(
                s,
                sizes=tuple(sorted(args.sizes)),
                loads=args.loads,
                http_requests=args.http_requests,
            )
        )

    with stores_or_temporary(stores) as made:
        report = run(made)
    print(report.render())
    sys.stdout.flush()
    return report


if __name__ == "__main__":
    main()
