"""A sidecar process killed (SIGKILL) while its writer holds outbox entries it read and never
acknowledged: what the crash tests of the writer start from."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

import aiohttp
import redis.asyncio as aioredis

from sidecar.devservices import TemporaryPostgres
from tests.harness.sidecar import SidecarProcess
from tests.harness.upstream import FakeUpstream
from tests.harness.waiting import pg_fetch, wait_until
from tests.turns import post_turn


async def _now(value: int) -> int:
    return value


async def kill_holding_entries(
    proc: SidecarProcess,
    http: aiohttp.ClientSession,
    upstream: FakeUpstream,
    postgres_server: TemporaryPostgres,
    redis_url: str,
    prefix: str,
    tag: str,
) -> list[tuple[str, str]]:
    """Eight clients send turns to ``proc`` (sessions ``<tag>-<n>``); after 30 answers
    PostgreSQL is frozen, so the writer is caught holding entries it read but never
    acknowledged; after 80 the process is killed. Returns the (session, query) pairs that
    were answered 200, and checks that entries were left pending (else the test proves
    nothing about resuming them)."""
    answered: list[tuple[str, str]] = []
    upstream.tasks_delay_s = 0.02

    async def client(n: int) -> None:
        for i in range(1000):
            try:
                status, _, _ = await post_turn(
                    http, proc.url, f"c{n} q{i}", f"{tag}-{n}", timeout_s=5
                )
            except (aiohttp.ClientError, TimeoutError):
                return
            if status == 200:
                answered.append((f"{tag}-{n}", f"c{n} q{i}"))

    clients = [asyncio.create_task(client(n)) for n in range(8)]
    await wait_until(lambda: _now(len(answered)), lambda n: n >= 30, what="30 answers")
    await postgres_server.pause()
    try:
        await wait_until(lambda: _now(len(answered)), lambda n: n >= 80, what="80 answers")
        proc.kill()
        await asyncio.gather(*clients)
        assert await proc.wait() == -signal.SIGKILL
    finally:
        await postgres_server.resume()
    upstream.tasks_delay_s = 0

    client_ = aioredis.Redis.from_url(redis_url)
    try:
        held = 0
        async for key in client_.scan_iter(match=f"{prefix}:*:outbox"):
            held += (await client_.xpending(key, "pg-writer"))["pending"]
        assert held > 0, "the killed writer held no entries: nothing left to resume"
    finally:
        await client_.aclose()
    return answered


async def stored_user_turns(dsn: str) -> Counter[tuple[str, str]]:
    """How many times each (session, user message) is stored in PostgreSQL."""
    rows = await pg_fetch(dsn, "SELECT session_id, content FROM messages WHERE role = 'user'")
    return Counter((r["session_id"], r["content"]) for r in rows)
