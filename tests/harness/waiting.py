"""Waiting for a condition with a deadline (tests never assert after a fixed sleep)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import redis.asyncio as aioredis

T = TypeVar("T")


async def wait_until(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool] = bool,
    *,
    timeout_s: float = 20.0,
    interval_s: float = 0.05,
    what: str = "condition",
) -> T:
    """Call ``probe`` until ``accept(result)``; fail with the last result after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if accept(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what}; last: {result!r}"
            )
        await asyncio.sleep(interval_s)


async def pg_fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """The rows ``sql`` returns, on a connection of its own."""
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def pg_value(dsn: str, sql: str, *args: Any) -> Any:
    """The first column of the first row ``sql`` returns, on a connection of its own."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def wait_for_rows(
    dsn: str, sql: str, count: int, *args: Any, timeout_s: float = 20.0
) -> None:
    """Wait until ``sql`` (a ``count(*)`` query) returns ``count``."""

    async def probe() -> int:
        try:
            return int(await pg_value(dsn, sql, *args))
        except (OSError, asyncpg.PostgresError):
            return -1

    await wait_until(probe, lambda n: n == count, timeout_s=timeout_s, what=f"{count} rows: {sql}")


async def _session_rows(
    dsn: str, sql: str, session_id: str, count: int, what: str, timeout_s: float
) -> list[asyncpg.Record]:
    """The rows ``sql`` returns for ``session_id`` (its ``$1``), once there are ``count`` or more."""

    async def probe() -> list[asyncpg.Record]:
        return await pg_fetch(dsn, sql, session_id)

    return await wait_until(
        probe, lambda rows: len(rows) >= count, timeout_s=timeout_s, what=f"{count} {what}"
    )


async def session_messages(
    dsn: str, session_id: str, count: int, *, timeout_s: float = 15.0
) -> list[asyncpg.Record]:
    """A session's stored messages (``role``, ``content``, ``partial``, in ``seq`` order), once
    there are at least ``count`` of them."""
    return await _session_rows(
        dsn,
        "SELECT role, content, partial FROM messages WHERE session_id = $1 ORDER BY seq",
        session_id,
        count,
        f"messages of {session_id}",
        timeout_s,
    )


async def session_usage(
    dsn: str, session_id: str, count: int = 0, *, timeout_s: float = 15.0
) -> list[asyncpg.Record]:
    """A session's token usage rows (``model`` and the three token counts, oldest first), once
    there are at least ``count`` of them; with no ``count``, as they are now."""
    return await _session_rows(
        dsn,
        "SELECT model, prompt_tokens, completion_tokens, total_tokens FROM token_usage"
        " WHERE session_id = $1 ORDER BY created_at",
        session_id,
        count,
        f"usage rows of {session_id}",
        timeout_s,
    )


def token_counts(row: asyncpg.Record) -> dict[str, int]:
    """A usage row's token counts, shaped like ``FakeUpstream.reported_usage`` entries."""
    return {
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "total_tokens": row["total_tokens"],
    }


async def wait_outbox_empty(redis_url: str, prefix: str, timeout_s: float = 20.0) -> None:
    """Until the writer has moved every outbox entry to PostgreSQL (it deletes what it wrote), so
    a count taken afterwards also sees any turn that was recorded late or twice."""
    client = aioredis.Redis.from_url(redis_url)

    async def length() -> int:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*outbox*", _type="stream")]
        return sum([await client.xlen(k) for k in keys])

    try:
        await wait_until(length, lambda n: n == 0, timeout_s=timeout_s, what="an empty outbox")
    finally:
        await client.aclose()
