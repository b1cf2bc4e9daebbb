"""A stable writer consumer name: a restarted sidecar resumes its own pending turns at once, and
two live processes never write under one name."""

from __future__ import annotations

from typing import Any

import aiohttp

from sidecar.devservices import TemporaryPostgres, free_port
from tests.harness import FakeUpstream, SidecarProcess, deep_merge
from tests.harness.killing import kill_holding_entries, stored_user_turns
from tests.harness.waiting import wait_until


async def turn(http: aiohttp.ClientSession, url: str, sid: str, query: str) -> int:
    async with http.post(
        f"{url}/api/tasks",
        json={"query": query, "session_id": sid},
        timeout=aiohttp.ClientTimeout(total=5),
    ) as r:
        await r.read()
        return r.status


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
    prefix = config["redis"]["key_prefix"]
    async with SidecarProcess(config) as proc:
        answered = await kill_holding_entries(
            proc, http, upstream, postgres_server, redis_url, prefix, "crash"
        )

    restarted = SidecarProcess(deep_merge(config, {"listen": {"port": free_port()}}))
    async with restarted:
        await wait_until(
            lambda: stored_user_turns(pg_dsn),
            lambda s: all(pair in s for pair in answered),
            timeout_s=30,
            what="every answered turn in PostgreSQL",
        )
        assert "resuming" in restarted.log_text()
    stored = await stored_user_turns(pg_dsn)
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
