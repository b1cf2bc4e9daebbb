"""Waiting for a condition with a deadline (tests never assert after a fixed sleep)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

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
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def pg_value(dsn: str, sql: str, *args: Any) -> Any:
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
