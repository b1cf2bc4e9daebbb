"""Three sidecar processes on one Redis and one PostgreSQL behave as one: every replica sees
what another wrote, during and after a Redis outage, and no (session, seq) is stored twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from sidecar.devservices import TemporaryRedis, free_port
from tests.harness import ADMIN_TOKEN, FakeUpstream, SidecarProcess, answer_text, deep_merge
from tests.harness.waiting import pg_fetch, pg_value, wait_for_rows, wait_until

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@contextlib.asynccontextmanager
async def replicas(config: dict[str, Any], n: int = 3) -> AsyncIterator[list[SidecarProcess]]:
    procs = [
        SidecarProcess(deep_merge(config, {"listen": {"port": free_port()}})) for _ in range(n)
    ]
    try:
        for p in procs:
            p.start()
        await asyncio.gather(*(p.wait_ready() for p in procs))
        yield procs
    finally:
        for p in procs:
            p.close()


async def turn(
    http: aiohttp.ClientSession, url: str, sid: str, query: str
) -> tuple[int, str | None]:
    async with http.post(f"{url}/api/tasks", json={"query": query, "session_id": sid}) as r:
        await r.read()
        return r.status, r.headers.get("X-Sidecar-Degraded")


async def stored_history(http: aiohttp.ClientSession, url: str, sid: str) -> list[str]:
    async with http.get(f"{url}/_sidecar/sessions/anonymous/{sid}", headers=AUTH) as r:
        assert r.status == 200, await r.text()
        return [m["content"] for m in (await r.json())["history"]]


async def readyz_degraded(http: aiohttp.ClientSession, url: str) -> list[str]:
    async with http.get(f"{url}/_sidecar/readyz") as r:
        degraded: list[str] = (await r.json())["degraded"]
        return degraded


def turns_of(queries: list[str]) -> list[str]:
    return [text for q in queries for text in (q, answer_text(q))]


async def assert_no_duplicate_seq(pg_dsn: str) -> None:
    dupes = await pg_value(
        pg_dsn,
        "SELECT count(*) FROM (SELECT tenant, session_id, seq FROM messages"
        " GROUP BY 1, 2, 3 HAVING count(*) > 1) d",
    )
    assert dupes == 0
    # And the database itself refuses one: the key exists.
    row = (await pg_fetch(pg_dsn, "SELECT tenant, session_id, seq FROM messages LIMIT 1"))[0]
    conn = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO messages (id, tenant, session_id, seq, role, content, turn_id,"
                " created_at) VALUES (gen_random_uuid(), $1, $2, $3, 'user', 'x',"
                " gen_random_uuid(), now())",
                row["tenant"],
                row["session_id"],
                row["seq"],
            )
    finally:
        await conn.close()


async def test_alternating_and_concurrent_turns_keep_complete_ordered_history(
    sidecar_config: dict[str, Any],
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
) -> None:
    async with replicas(sidecar_config) as procs:
        urls = [p.url for p in procs]
        # Alternating: each turn on the next replica; each sees every earlier turn.
        queries = [f"alternating {i}" for i in range(9)]
        for i, q in enumerate(queries):
            assert await turn(http, urls[i % 3], "alt", q) == (200, None)
            sent = upstream.requests_to("/api/tasks")[-1].json["history"]
            assert [m["content"] for m in sent] == turns_of(queries[:i])

        # Concurrent: three replicas, one session, at once; every turn lands, none twice.
        together = [f"together {r}-{i}" for r in range(6) for i in range(3)]
        for r in range(6):
            batch = together[r * 3 : r * 3 + 3]
            answers = await asyncio.gather(
                *(turn(http, urls[i], "together", q) for i, q in enumerate(batch))
            )
            assert answers == [(200, None)] * 3
        for url in urls:
            history = await stored_history(http, url, "together")
            assert sorted(history) == sorted(turns_of(together))
            # Each answer right after its own question: turns are never interleaved.
            for i in range(0, len(history), 2):
                assert history[i + 1] == answer_text(history[i])
        await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 2 * (9 + 18))
        rows = await pg_fetch(
            pg_dsn, "SELECT content FROM messages WHERE session_id = 'alt' ORDER BY seq"
        )
        assert [r["content"] for r in rows] == turns_of(queries)
        await assert_no_duplicate_seq(pg_dsn)


async def test_turns_written_during_a_redis_outage_are_seen_by_every_replica(
    sidecar_config: dict[str, Any],
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_server: TemporaryRedis,
) -> None:
    # A replica waits up to restore_timeout_s for the reconciliation after Redis returns before
    # serving from it; on a loaded 2-core machine reading PostgreSQL's marks can take longer than
    # the 1 s default, and this test is about the reconciliation, not about that bound.
    config = deep_merge(
        sidecar_config, {"redis": {"breaker_reset_s": 0.3}, "session": {"restore_timeout_s": 5.0}}
    )
    async with replicas(config) as (x, y, z):
        sessions = [f"outage-{i}" for i in range(4)]
        for sid in sessions:
            # Known to every replica (in Redis and in their local caches) before the outage.
            for url in (x.url, y.url, z.url):
                assert await turn(http, url, sid, f"before on {url[-5:]}") == (200, None)
        await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 2 * 3 * len(sessions))

        # Redis goes away (it comes back with its old copies, from its append-only file);
        # meanwhile X answers from PostgreSQL and records straight there.
        await redis_server.stop()
        try:
            for sid in sessions:
                for i in range(2):
                    status, degraded = await turn(http, x.url, sid, f"during {i}")
                    assert (status, degraded) == (200, "redis")
            # Y and Z notice the outage too (their breakers open), without serving a turn.
            for url in (y.url, z.url):
                await wait_until(
                    lambda url=url: readyz_degraded(http, url),
                    lambda degraded: "redis" in degraded,
                    what="the replica to see Redis gone",
                )
        finally:
            await redis_server.start()

        # Y, then Z, then X: each sees X's turns, and numbers its own after them.
        for url in (y.url, z.url, x.url):
            for sid in sessions:
                status, _ = await turn(http, url, sid, f"after on {url[-5:]}")
                assert status == 200
                sent = upstream.requests_to("/api/tasks")[-1].json["history"]
                contents = [m["content"] for m in sent]
                assert contents[6:10] == turns_of(["during 0", "during 1"]), (url, contents)
        total = len(sessions) * (3 + 2 + 3)
        await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 2 * total, timeout_s=30)
        await assert_no_duplicate_seq(pg_dsn)
        for sid in sessions:
            rows = await pg_fetch(
                pg_dsn, "SELECT content FROM messages WHERE session_id = $1 ORDER BY seq", sid
            )
            contents = [r["content"] for r in rows]
            assert contents[6:10] == turns_of(["during 0", "during 1"])
            assert len(contents) == 2 * 8
