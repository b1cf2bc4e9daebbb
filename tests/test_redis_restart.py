"""A Redis restart under traffic: dead pooled connections are replaced, not counted as failures."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from sidecar.devservices import TemporaryRedis
from tests.harness import FakeUpstream
from tests.harness.waiting import pg_value, wait_for_rows, wait_until

Answer = tuple[float, float, int, str | None]  # (sent at, answered at, status, degraded)


async def turn(http: aiohttp.ClientSession, url: str, sid: str, query: str) -> Answer:
    sent = time.monotonic()
    async with http.post(f"{url}/api/tasks", json={"query": query, "session_id": sid}) as r:
        await r.read()
        return sent, time.monotonic(), r.status, r.headers.get("X-Sidecar-Degraded")


async def test_redis_restart_under_traffic_degrades_nothing_once_noticed(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    redis_server: TemporaryRedis,
    pg_dsn: str,
) -> None:
    sc = await start_sidecar()
    sessions = [f"restart-{i}" for i in range(20)]
    # Twenty concurrent turns fill the pool with twenty connections, all dead after the restart.
    warm = await asyncio.gather(*(turn(http, sc.url, sid, "warm up") for sid in sessions))
    assert [(s, d) for _, _, s, d in warm] == [(200, None)] * 20

    answers: list[Answer] = []
    stop = asyncio.Event()

    async def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            answers.append(await turn(http, sc.url, sessions[n], f"q{i}"))
            i += 1

    clients = [asyncio.create_task(client(n)) for n in range(8)]
    try:
        await wait_until(lambda: _now(len(answers)), lambda n: n >= 16, what="traffic")
        await redis_server.restart()
        restarted = time.monotonic()

        # Noticed: an answer served from Redis again has come back (the breaker closed).
        async def first_normal_after_restart() -> float | None:
            normal = [done for sent, done, _, d in answers if sent > restarted and d is None]
            return min(normal) if normal else None

        noticed = await wait_until(
            first_normal_after_restart, lambda t: t is not None, what="a normal answer"
        )
        assert noticed is not None
        await wait_until(
            lambda: _now(sum(1 for sent, _, _, _ in answers if sent > noticed)),
            lambda n: n >= 40,
            what="40 answers after the restart was noticed",
        )
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert all(status == 200 for _, _, status, _ in answers)
    after = [d for sent, _, _, d in answers if sent > noticed]
    assert after.count(None) == len(after), f"degraded after the restart was noticed: {after}"

    # And a burst of concurrent turns on a pool that Redis restarted under once more.
    await redis_server.restart()
    burst = await asyncio.gather(*(turn(http, sc.url, sid, "after") for sid in sessions))
    assert [(s, d) for _, _, s, d in burst] == [(200, None)] * 20

    # Every answered turn reaches PostgreSQL once.
    turns = len(warm) + len(answers) + len(burst)
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM token_usage", turns, timeout_s=60)
    dupes = await pg_value(
        pg_dsn,
        "SELECT count(*) FROM (SELECT session_id, seq FROM messages"
        " GROUP BY 1, 2 HAVING count(*) > 1) d",
    )
    assert dupes == 0


async def _now(value: int) -> int:
    return value
