"""Retention: rows older than ``postgres.retention_days`` leave PostgreSQL, in bounded batches.

Each batch is its own short transaction touching at most ``batch_size`` rows, so pruning a large
backlog never holds long locks nor bloats one transaction, and the turns being written meanwhile
are not held up. Old messages, usage rows and deletion tombstones (of sessions and of users) go,
then sessions left without messages (and not updated since the cut-off, so a session whose first
turn is still on its way is kept). A session's counters (``tokens_used``, ``message_count``) stay
lifetime totals.

A tombstone keeps out turns asked before its deletion. Once it is older than the cut-off, so is
every such turn: one delivered after the tombstone went is older than the cut-off too, and its
rows go on the next pass.

One replica prunes at a time (an advisory lock); the others skip that round.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import asyncpg

from ..config import PostgresConfig
from ..errors import StoreError
from ..frozen import frozen
from .postgres import create_pool, guarded

log = logging.getLogger(__name__)

PRUNE_LOCK_ID = 0x5E55_10C6  # any constant, the same for every replica
BATCH_SIZE = 5000
EVERY_S = 3600.0

# Each statement deletes at most $2 rows older than $1, chosen through the created_at indexes.
BATCHES = {
    "messages": (
        "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE created_at < $1 LIMIT $2)"
    ),
    "usage": (
        "DELETE FROM token_usage WHERE id IN"
        " (SELECT id FROM token_usage WHERE created_at < $1 LIMIT $2)"
    ),
    "tombstones": (
        "DELETE FROM deleted_sessions WHERE (tenant, session_id) IN"
        " (SELECT tenant, session_id FROM deleted_sessions WHERE deleted_at < $1 LIMIT $2)"
    ),
    "user_tombstones": (
        "DELETE FROM deleted_users WHERE (tenant, user_id) IN"
        " (SELECT tenant, user_id FROM deleted_users WHERE deleted_at < $1 LIMIT $2)"
    ),
    "sessions": (
        "DELETE FROM sessions WHERE (tenant, session_id) IN"
        " (SELECT s.tenant, s.session_id FROM sessions s WHERE s.updated_at < $1"
        "  AND NOT EXISTS (SELECT 1 FROM messages m"
        "   WHERE m.tenant = s.tenant AND m.session_id = s.session_id) LIMIT $2)"
    ),
}


@frozen
class Pruned:
    messages: int = 0
    usage: int = 0
    tombstones: int = 0
    sessions: int = 0
    skipped: bool = False  # another replica was pruning

    def __str__(self) -> str:
        if self.skipped:
            return "skipped: another process is pruning"
        return (
            f"messages: {self.messages}, usage rows: {self.usage}, "
            f"tombstones: {self.tombstones}, sessions: {self.sessions}"
        )


async def prune(
    pool: asyncpg.Pool,
    retention_days: int,
    *,
    batch_size: int = BATCH_SIZE,
    now: datetime | None = None,
) -> Pruned:
    """Delete what is older than ``retention_days``, ``batch_size`` rows per transaction."""
    with guarded("pruning"):
        return await _prune(pool, retention_days, batch_size, now)


async def run_prune(cfg: PostgresConfig, retention_days: int, batch_size: int) -> Pruned:
    """``sidecar prune``: one pass on a pool of its own."""
    with guarded("connecting"):
        pool = await create_pool(cfg)
    try:
        return await prune(pool, retention_days, batch_size=batch_size)
    finally:
        await pool.close()


async def _prune(
    pool: asyncpg.Pool, retention_days: int, batch_size: int, now: datetime | None
) -> Pruned:
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    async with pool.acquire() as lock_conn:
        if not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", PRUNE_LOCK_ID):
            return Pruned(skipped=True)
        try:
            counts: dict[str, int] = {}
            for what, sql in BATCHES.items():
                total = 0
                while True:
                    async with pool.acquire() as conn:
                        status = await conn.execute(sql, cutoff, batch_size)
                    deleted = int(status.rsplit(" ", 1)[1])
                    total += deleted
                    if deleted < batch_size:
                        break
                counts[what] = total
        finally:
            await lock_conn.execute("SELECT pg_advisory_unlock($1)", PRUNE_LOCK_ID)
    return Pruned(
        messages=counts["messages"],
        usage=counts["usage"],
        tombstones=counts["tombstones"] + counts["user_tombstones"],
        sessions=counts["sessions"],
    )


class Pruner:
    """Prunes in the background, a minute after start and then every ``every_s``."""

    def __init__(self, pool: asyncpg.Pool, retention_days: int, every_s: float = EVERY_S) -> None:
        self.pool = pool
        self.retention_days = retention_days
        self.every_s = every_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pruner")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # Bounded: cancelling a call to a frozen PostgreSQL can itself wait on it.
            await asyncio.wait({self._task}, timeout=1.0)

    async def _run(self) -> None:
        delay = min(60.0, self.every_s)
        while True:
            await asyncio.sleep(delay)
            delay = self.every_s
            try:
                pruned = await prune(self.pool, self.retention_days)
            except StoreError as e:
                log.warning("pruning postponed, PostgreSQL unavailable: %s", e)
                continue
            if not pruned.skipped:
                log.info("pruned rows older than %d days: %s", self.retention_days, pruned)
