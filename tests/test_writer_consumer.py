"""A stable writer consumer name: a restarted sidecar resumes its own pending turns at once, and
two live processes never write under one name."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from sidecar.devservices import TemporaryPostgres, free_port
from tests.harness import FakeUpstream, SidecarProcess, deep_merge
from tests.harness.waiting import pg_fetch, wait_until


async def turn(http: aiohttp.ClientSession, url: str, sid: str, query: str) -> int:
    async with http.post(
        f"{url}/api/tasks",
        json={"query": query, "session_id": sid},
        timeout=aiohttp.ClientTimeout(total=5),
    ) as r:
        await r.read()
        return r.status


async def _value(value: Any) -> Any:
    return value


async def test_restart_under_the_same_name_resumes_pending_turns_at_once(
    upstream: FakeUpstream,
    sidecar_config: dict[str, Any],
    pg_dsn: str,
    http: aiohttp.ClientSession,
    postgres_server: TemporaryPostgres,
    redis_url: str,
) -> None:
    # Claims of idle entries are put out of reach: only resuming its own pending list can
    # bring the killed process's entries to PostgreSQL in this test.
    config = deep_merge(
        sidecar_config,
        {"writer": {"consumer": "pod-a", "claim_idle_ms": 3_600_000, "block_ms": 200}},
    )
    answered: list[tuple[str, str]] = []
    async with SidecarProcess(config) as proc:
        upstream.tasks_delay_s = 0.02

        async def client(n: int) -> None:
            for i in range(1000):
                try:
                    status = await turn(http, proc.url, f"crash-{n}", f"c{n} q{i}")
                except (aiohttp.ClientError, TimeoutError):
                    return
                if status == 200:
                    answered.append((f"crash-{n}", f"c{n} q{i}"))

        clients = [asyncio.create_task(client(n)) for n in range(8)]
        await wait_until(lambda: _value(len(answered)), lambda n: n >= 30, what="30 answers")
        # A frozen PostgreSQL catches the writer holding entries it read but never acknowledged.
        await postgres_server.pause()
        try:
            await wait_until(lambda: _value(len(answered)), lambda n: n >= 80, what="80 answers")
            proc.kill()
            await asyncio.gather(*clients)
            assert await proc.wait() == -signal.SIGKILL
        finally:
            await postgres_server.resume()

    upstream.tasks_delay_s = 0
    prefix = config["redis"]["key_prefix"]
    client = aioredis.Redis.from_url(redis_url)
    try:
        held = 0
        async for key in client.scan_iter(match=f"{prefix}:*:outbox"):
            held += (await client.xpending(key, "pg-writer"))["pending"]
        assert held > 0, "the killed writer held no entries: nothing to resume"
    finally:
        await client.aclose()

    async def stored_pairs() -> Counter[tuple[str, str]]:
        rows = await pg_fetch(
            pg_dsn, "SELECT session_id, content FROM messages WHERE role = 'user'"
        )
        return Counter((r["session_id"], r["content"]) for r in rows)

    restarted = SidecarProcess(deep_merge(config, {"listen": {"port": free_port()}}))
    async with restarted:
        await wait_until(
            stored_pairs,
            lambda s: all(pair in s for pair in answered),
            timeout_s=30,
            what="every answered turn in PostgreSQL",
        )
        assert "resuming" in restarted.log_text()
    stored = await stored_pairs()
    assert all(stored[pair] == 1 for pair in answered)


async def test_a_second_live_process_with_the_same_name_refuses_to_start(
    sidecar_config: dict[str, Any],
) -> None:
    config = deep_merge(sidecar_config, {"writer": {"consumer": "pod-twin"}})
    async with SidecarProcess(config) as first:
        twin = SidecarProcess(deep_merge(config, {"listen": {"port": free_port()}}))
        try:
            twin.start()
            assert await twin.wait(timeout_s=30) == 1
            assert "writer.consumer 'pod-twin' is in use by another live process" in (
                twin.log_text()
            )
        finally:
            twin.close()
        first.terminate()
        assert await first.wait() == 0
    # Stopped cleanly, the first gave its name back: a successor starts at once.
    async with SidecarProcess(deep_merge(config, {"listen": {"port": free_port()}})) as after:
        assert "still leased" not in after.log_text()
