"""Readiness follows shutdown and the stores named in readiness.require; store outages and a
failing writer are reported in its body; liveness stays up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

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
    assert body["status"] == "ready"
    assert body["degraded"] == []
    assert body["problems"] == []
    assert body["outbox_lag"] == 0
    async with http.get(sidecar.url + "/_sidecar/healthz") as resp:
        assert resp.status == 200


async def tasks_turn(http: aiohttp.ClientSession, base: str, sid: str) -> tuple[int, str | None]:
    async with http.post(base + "/api/tasks", json={"query": "hello", "session_id": sid}) as r:
        await r.read()
        return r.status, r.headers.get("X-Sidecar-Degraded")


async def test_store_outages_are_reported_not_503(
    start_sidecar: StartSidecar,
    http: aiohttp.ClientSession,
    redis_server: TemporaryRedis,
    postgres_server: TemporaryPostgres,
) -> None:
    """The sidecar serves through outages, so a shared store going down must not take every
    pod out of its Service: readyz stays 200 and names what is degraded."""
    sidecar = await start_sidecar(redis={"breaker_reset_s": 0.2})
    await wait_readyz(http, sidecar.url, 200)
    await postgres_server.stop()
    try:
        body = await wait_until(
            lambda: readyz(http, sidecar.url),
            lambda last: "postgres" in last[1]["degraded"],
            what="readyz to name postgres",
        )
        assert body[0] == 200, body
        assert body[1]["status"] == "ready"
        assert (await tasks_turn(http, sidecar.url, "pg-down"))[0] == 200
        await redis_server.stop()
        try:
            status, body2 = await wait_until(
                lambda: readyz(http, sidecar.url),
                lambda last: "redis" in last[1]["degraded"],
                what="readyz to name redis",
            )
            assert status == 200, body2
            assert {"redis", "postgres"} <= set(body2["degraded"])
            # Redis is down: the lag cannot be measured, and the body says so.
            assert body2["outbox_lag"] is None
            assert body2["outbox_lag_error"]
            status, degraded = await tasks_turn(http, sidecar.url, "both-down")
            assert status == 200
            assert "redis" in (degraded or "")
            async with http.get(sidecar.url + "/_sidecar/metrics") as resp:
                metrics = await resp.text()
            assert "sidecar_outbox_lag_unknown 1.0" in metrics
            async with http.get(sidecar.url + "/_sidecar/healthz") as resp:
                assert resp.status == 200, "liveness must not follow a dependency"
        finally:
            await redis_server.start()
    finally:
        await postgres_server.start()
    body3 = await wait_until(
        lambda: readyz(http, sidecar.url),
        lambda last: last[1]["degraded"] == [] and last[1]["outbox_lag"] is not None,
        timeout_s=20,
        what="readyz to clear",
    )
    assert body3[0] == 200
    assert "outbox_lag_error" not in body3[1]


async def test_required_store_outage_is_503(
    start_sidecar: StartSidecar, http: aiohttp.ClientSession, postgres_server: TemporaryPostgres
) -> None:
    sidecar = await start_sidecar(readiness={"require": ["postgres"]})
    await wait_readyz(http, sidecar.url, 200)
    await postgres_server.stop()
    try:
        body = await wait_readyz(http, sidecar.url, 503)
        assert body["status"] == "not ready"
        assert "postgres" in body["degraded"]
        assert body["require"] == ["postgres"]
    finally:
        await postgres_server.start()
    body = await wait_readyz(http, sidecar.url, 200)
    assert "postgres" not in body["degraded"]


async def test_writer_failing_is_reported_in_readyz_and_metrics(
    start_sidecar: StartSidecar,
    http: aiohttp.ClientSession,
    postgres_server: TemporaryPostgres,
) -> None:
    sidecar = await start_sidecar(writer={"ready_max_lag": 1})
    await wait_readyz(http, sidecar.url, 200)
    await postgres_server.stop()
    try:
        for i in range(3):
            assert (await tasks_turn(http, sidecar.url, f"lagging-{i}"))[0] == 200
        status, body = await wait_until(
            lambda: readyz(http, sidecar.url),
            lambda last: last[1]["writer"]["failing"] and last[1]["outbox_lag"] >= 3,
            what="the writer to be reported failing",
        )
        assert status == 200
        assert "writer" in body["degraded"]
        assert body["writer"]["error"]
        assert any("turns waiting for PostgreSQL" in p for p in body["problems"]), body
        async with http.get(sidecar.url + "/_sidecar/metrics") as resp:
            metrics = await resp.text()
        assert "sidecar_writer_failing 1.0" in metrics
    finally:
        await postgres_server.start()
    status, body = await wait_until(
        lambda: readyz(http, sidecar.url),
        lambda last: not last[1]["writer"]["failing"] and last[1]["outbox_lag"] == 0,
        timeout_s=30,
        what="the writer to recover",
    )
    assert "writer" not in body["degraded"]


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
