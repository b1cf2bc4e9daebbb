"""Readiness follows Redis, PostgreSQL and shutdown; liveness stays up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from sidecar.devservices import TemporaryPostgres, TemporaryRedis
from tests.harness import FakeUpstream, RunningSidecar, SidecarProcess
from tests.harness.waiting import wait_until

StartSidecar = Callable[..., Awaitable[RunningSidecar]]


async def readyz(http: aiohttp.ClientSession, base: str) -> tuple[int, dict[str, Any]]:
    async with http.get(base + "/_sidecar/readyz") as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def wait_readyz(
    http: aiohttp.ClientSession, base: str, status: int, timeout_s: float = 15.0
) -> dict[str, Any]:
    """Poll readyz until it answers ``status``; return that answer's body."""

    async def probe() -> tuple[int, Any]:
        try:
            return await readyz(http, base)
        except aiohttp.ClientConnectionError as e:
            return 0, repr(e)

    answer = await wait_until(
        probe,
        lambda last: last[0] == status,
        timeout_s=timeout_s,
        what=f"readyz to answer {status}",
    )
    return answer[1]


async def test_ready_and_healthy_normally(
    start_sidecar: StartSidecar, http: aiohttp.ClientSession
) -> None:
    sidecar = await start_sidecar()
    status, body = await readyz(http, sidecar.url)
    assert status == 200, body
    assert body["problems"] == []
    async with http.get(sidecar.url + "/_sidecar/healthz") as resp:
        assert resp.status == 200


@pytest.mark.parametrize(
    ("store", "other"), [("redis", "postgres"), ("postgres", "redis")], ids=["redis", "postgres"]
)
async def test_readyz_follows_each_store(
    store: str,
    other: str,
    start_sidecar: StartSidecar,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
) -> None:
    server: TemporaryRedis | TemporaryPostgres = request.getfixturevalue(f"{store}_server")
    sidecar = await start_sidecar()
    await wait_readyz(http, sidecar.url, 200)
    await server.stop()
    try:
        body = await wait_readyz(http, sidecar.url, 503)
        assert any(p.startswith(store) for p in body["problems"]), body
        assert not any(p.startswith(other) for p in body["problems"]), body
        async with http.get(sidecar.url + "/_sidecar/healthz") as resp:
            assert resp.status == 200, "liveness must not follow a dependency"
    finally:
        await server.start()
    body = await wait_readyz(http, sidecar.url, 200)
    assert body["problems"] == []


async def test_sigterm_drains_in_flight_requests_while_readyz_says_503(
    sidecar_config: dict[str, Any], upstream: FakeUpstream
) -> None:
    # A fresh connection per probe, as a load balancer's health check makes.
    fresh = aiohttp.TCPConnector(force_close=True)
    async with (
        SidecarProcess(sidecar_config) as proc,
        aiohttp.ClientSession(connector=fresh) as http,
    ):
        await wait_readyz(http, proc.url, 200)

        async def slow() -> tuple[int, Any]:
            async with aiohttp.ClientSession() as own, own.get(proc.url + "/delay?s=2") as resp:
                return resp.status, await resp.json()

        async def reached_upstream() -> bool:
            return bool(upstream.requests_to("/delay"))

        in_flight = asyncio.create_task(slow())
        try:
            await wait_until(
                reached_upstream,
                timeout_s=5,
                interval_s=0.02,
                what="the slow request to reach the upstream",
            )
            proc.terminate()
            terminated_at = time.monotonic()
            try:
                body = await wait_readyz(http, proc.url, 503, timeout_s=1.5)
            except AssertionError as e:
                raise AssertionError(f"{e}\n{proc.log_tail()}") from None
            assert "shutting down" in body["problems"]
            # Still answered well into the drain, not only in the instant after the signal.
            while time.monotonic() < terminated_at + 0.5:
                status, body = await readyz(http, proc.url)
                assert status == 503, body
                await asyncio.sleep(0.05)
            assert not in_flight.done(), "the slow request ended before the drain was observed"
            assert await asyncio.wait_for(in_flight, 10) == (200, {"slept": 2.0})
        finally:
            if not in_flight.done():
                in_flight.cancel()
        assert await proc.wait(timeout_s=15) == 0, proc.log_tail()
