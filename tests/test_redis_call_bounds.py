"""How long a Redis call may take, and what running out of time means for the breaker, against a
real redis-server: a reconciliation after Redis lost its scripts is not cut short by one call's
bound, an admin walk that runs out of time does not stop the requests, the script lane never
opens more connections than it may, and every script call waiting on a frozen Redis ends as a
timeout."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from sidecar.config import Config
from sidecar.devservices import TemporaryRedis
from sidecar.errors import StoreUnavailable
from sidecar.session.model import SessionKey
from sidecar.store.breaker import CircuitBreaker
from sidecar.store.client import make_client
from sidecar.store.lane import ScriptLane
from sidecar.store.redis import RedisSessionStore


def _store(url: str, socket_timeout_s: float = 0.5) -> RedisSessionStore:
    cfg = Config.from_mapping(
        {
            "upstream": {"url": "http://127.0.0.1:1"},
            "redis": {"url": url, "socket_timeout_s": socket_timeout_s},
        }
    ).redis
    return RedisSessionStore(make_client(cfg, cluster=False), cfg, CircuitBreaker(3, 30.0))


async def test_a_reconciliation_after_lost_scripts_may_take_longer_than_one_call(
    redis_url: str,
) -> None:
    store = _store(redis_url, socket_timeout_s=0.2)
    reconciled: list[bool] = []

    async def slow_reconciliation() -> None:
        await asyncio.sleep(0.5)  # PostgreSQL taking its time over the stale marks
        reconciled.append(True)

    store.on_restart = slow_reconciliation
    try:
        await store.prepare()
        await store.client.script_flush()  # what a restart or a failover does to the scripts
        found = await store.load(SessionKey("t", "s"), "", 50)
        assert found.state == "absent"  # answered, not a timeout
        assert reconciled == [True]
        assert not store.breaker.is_open
    finally:
        await store.aclose()
        await store.client.aclose()


async def test_an_admin_walk_out_of_time_leaves_the_requests_breaker_closed(
    redis_url: str,
) -> None:
    store = _store(redis_url)
    try:
        with pytest.raises(StoreUnavailable):
            await store.guarded(asyncio.sleep(1), timeout_s=0.05)  # a SCAN over a huge keyspace
        assert not store.breaker.is_open
        assert (await store.load(SessionKey("t", "s"), "", 50)).state == "absent"
        # A request's own call running out of time still opens it: a hung Redis costs one wait.
        with pytest.raises(StoreUnavailable):
            await store.guarded(asyncio.sleep(1))
        assert store.breaker.is_open
    finally:
        await store.aclose()
        await store.client.aclose()


async def test_the_lane_opens_no_more_connections_than_it_may(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    lane = ScriptLane(client, 0.5, 0.5, max_open=2)
    opened: list[Any] = []
    new = lane._new

    def counting() -> Any:
        conn = new()
        opened.append(conn)
        return conn

    lane._new = counting  # type: ignore[method-assign]
    try:
        sha = await client.script_load("return ARGV[1]")
        answers = await asyncio.gather(*(lane.evalsha(sha, [], [str(i)]) for i in range(12)))
        assert answers == [str(i).encode() for i in range(12)]
        assert len(opened) <= 2
    finally:
        await lane.aclose()
        await client.aclose()


async def test_every_script_call_waiting_on_a_frozen_redis_ends_as_a_timeout(
    redis_server: TemporaryRedis,
) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    lane = ScriptLane(client, 0.3, 0.3)
    try:
        sha = await client.script_load("return ARGV[1]")
        # Connections that served before the freeze, so each could be resent on (it must not be).
        await asyncio.gather(*(lane.evalsha(sha, [], [str(i)]) for i in range(3)))
        await redis_server.pause()
        try:
            async with asyncio.timeout(10):  # a call that hangs fails the test here
                first = [asyncio.create_task(lane.evalsha(sha, [], ["a"])) for _ in range(2)]
                await asyncio.sleep(0)
                later = [asyncio.create_task(lane.evalsha(sha, [], ["b"])) for _ in range(2)]
                outcomes = await asyncio.gather(*first, *later, return_exceptions=True)
                assert all(isinstance(o, TimeoutError) for o in outcomes), outcomes
                # The bound also holds for a call that starts once no other is waiting.
                with pytest.raises(TimeoutError):
                    await lane.evalsha(sha, [], ["c"])
        finally:
            await redis_server.resume()
        assert await lane.evalsha(sha, [], ["back"]) == b"back"
    finally:
        await lane.aclose()
        await client.aclose()
