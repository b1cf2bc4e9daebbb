"""The Redis circuit breaker: once open, Redis is skipped; after ``breaker_reset_s`` exactly one
caller probes it; the probe's success closes the breaker and its failure opens it again.

Calls go through the real store against a real Redis (and, for failures, a port where nothing
listens); only the breaker's clock is stepped by hand, so no test waits for ``reset_s``.
"""

from __future__ import annotations

import asyncio

import pytest

from sidecar.config import Config
from sidecar.devservices import free_port
from sidecar.errors import StoreUnavailable
from sidecar.store.breaker import CircuitBreaker
from sidecar.store.client import make_client
from sidecar.store.redis import RedisSessionStore
from sidecar.store.redis_tasks import RedisTaskStore

RESET_S = 30.0
CALLERS = 10


class SteppedClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _store(url: str, clock: SteppedClock) -> RedisSessionStore:
    cfg = Config.from_mapping(
        {"upstream": {"url": "http://127.0.0.1:1"}, "redis": {"url": url}}
    ).redis
    return RedisSessionStore(
        make_client(cfg, cluster=False), cfg, CircuitBreaker(3, RESET_S, clock)
    )


async def _outcomes(store: RedisSessionStore) -> list[str]:
    """What each of ``CALLERS`` concurrent reads got: ``redis`` (it asked Redis and got its
    answer), ``skipped`` (refused at once, circuit open) or ``failed`` (asked, no answer)."""

    async def one() -> str:
        try:
            await RedisTaskStore(store).get_task("t", "/api/tasks", "no-such-task")
        except StoreUnavailable as e:
            return "skipped" if "circuit open" in str(e) else "failed"
        return "redis"

    return list(await asyncio.gather(*(one() for _ in range(CALLERS))))


async def test_half_open_lets_exactly_one_caller_probe_and_its_success_closes(
    redis_url: str,
) -> None:
    clock = SteppedClock()
    store = _store(redis_url, clock)
    try:
        store.breaker.failure(timed_out=True)  # as a hung Redis would
        assert await _outcomes(store) == ["skipped"] * CALLERS

        clock.now += RESET_S  # half-open
        outcomes = await _outcomes(store)
        assert sorted(outcomes) == ["redis"] + ["skipped"] * (CALLERS - 1)
        assert not store.breaker.is_open
        assert await _outcomes(store) == ["redis"] * CALLERS
    finally:
        await store.client.aclose()


async def test_a_failed_probe_opens_the_breaker_again() -> None:
    clock = SteppedClock()
    store = _store(f"redis://127.0.0.1:{free_port()}/0", clock)  # nothing listens there
    try:
        # Opened by one timeout (below the failure threshold), as a hung Redis does; the probe
        # then fails by a refused connection, which alone would not reach the threshold either.
        store.breaker.failure(timed_out=True)
        assert await _outcomes(store) == ["skipped"] * CALLERS

        clock.now += RESET_S
        outcomes = await _outcomes(store)
        assert sorted(outcomes) == ["failed"] + ["skipped"] * (CALLERS - 1)
        # Open again, for a whole reset_s counted from the failed probe.
        clock.now += RESET_S - 1
        assert await _outcomes(store) == ["skipped"] * CALLERS
        clock.now += 1
        assert sorted(await _outcomes(store)) == ["failed"] + ["skipped"] * (CALLERS - 1)
        with pytest.raises(StoreUnavailable, match="circuit open"):
            await RedisTaskStore(store).get_task("t", "/api/tasks", "x")
    finally:
        await store.client.aclose()
