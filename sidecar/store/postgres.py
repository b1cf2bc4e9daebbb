"""The long-term store: PostgreSQL behind one boundary. Session restore, deletion, batch and
direct writes; every asyncpg failure leaves this module as the project's own ``StoreError``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from ..config import PostgresConfig
from ..errors import StoreError, StoreRejected, StoreUnavailable
from ..session.model import Message, SessionKey, SessionSnapshot
from . import profiles, seqs
from .batch import OutboxEvent, RowsNotNew, write_events
from .schema import migrate
from .seqs import StaleProfile, StaleSession

log = logging.getLogger(__name__)

# PostgreSQL error classes that say "try again later" rather than "this row is wrong":
# connection exceptions, insufficient resources, operator intervention, system errors,
# transaction rollbacks (serialization failures, deadlocks).
TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "58", "40")
# And single states of other classes that say the same: a server that became a read-only replica
# in a failover (25006), a lock or object busy for now (55P03, 55006).
TRANSIENT_SQLSTATES = frozenset({"25006", "55P03", "55006"})


# What a lost or unreachable server looks like from asyncpg. InternalClientError is among
# them: a connection killed mid-operation can surface as one ("cannot switch to state ...").
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.InternalClientError,
)
# Everything a PostgreSQL call may raise that is about PostgreSQL, not about our code.
PG_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *CONNECTION_ERRORS)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] in TRANSIENT_SQLSTATE_CLASSES or state in TRANSIENT_SQLSTATES
    return isinstance(exc, CONNECTION_ERRORS)


def as_store_error(exc: BaseException, what: str) -> StoreError:
    """The project's error for an asyncpg (or socket) failure of ``what``."""
    detail = f"{what}: {type(exc).__name__}: {exc}".rstrip(": ")
    if is_transient(exc):
        return StoreUnavailable(detail)
    return StoreRejected(detail, sqlstate=getattr(exc, "sqlstate", None))


@contextlib.contextmanager
def guarded(what: str) -> Iterator[None]:
    """Turn PostgreSQL's failures of ``what`` into ``StoreUnavailable`` / ``StoreRejected``."""
    try:
        yield
    except PG_ERRORS as e:
        raise as_store_error(e, what) from e


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def create_pool(cfg: PostgresConfig) -> asyncpg.Pool:
    """A pool that opens connections on demand, so the sidecar starts while PostgreSQL is down."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        cfg.dsn,
        min_size=0,
        max_size=cfg.pool_max_size,
        timeout=cfg.connect_timeout_s,
        command_timeout=cfg.command_timeout_s,
        init=_init_connection,
        max_inactive_connection_lifetime=60,
    )
    return pool


async def run_migrations(dsn: str, connect_timeout_s: float) -> list[str]:
    """Apply the schema over a connection of its own (``sidecar migrate``)."""
    with guarded("migrations"):
        conn = await asyncpg.connect(dsn, timeout=connect_timeout_s)
        try:
            return await migrate(conn)
        finally:
            await conn.close()


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PostgresSessionStore:
    """Sessions in PostgreSQL. Every call raises ``StoreUnavailable`` or ``StoreRejected`` (never
    an asyncpg error) when PostgreSQL fails it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, cfg: PostgresConfig) -> PostgresSessionStore:
        with guarded("connecting"):
            return cls(await create_pool(cfg))

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self) -> None:
        with guarded("ping"):
            async with self.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")

    async def migrate(self) -> list[str]:
        with guarded("migrations"):
            async with self.pool.acquire() as conn:
                return await migrate(conn)

    async def write(self, events: list[OutboxEvent]) -> None:
        with guarded("batch write"):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    await write_events(conn, events, assume_new=True)
            except RowsNotNew:
                # Rolled back: part of the batch was stored before (written twice) or clashes
                # with stored seqs. Again, asking which rows are new; rare, so never the cost.
                async with self.pool.acquire() as conn, conn.transaction():
                    await write_events(conn, events)

    async def fetch_session(self, key: SessionKey, limit: int) -> SessionSnapshot | None:
        """The session row and its last ``limit`` messages (oldest first), or None."""
        with guarded(f"read of session {key.session_id}"):
            return await self._fetch_session(key, limit)

    async def _fetch_session(self, key: SessionKey, limit: int) -> SessionSnapshot | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT context, tokens_used, message_count, created_at, updated_at,"
                " (SELECT max(seq) FROM messages m WHERE m.tenant = s.tenant"
                "   AND m.session_id = s.session_id) AS last_seq"
                " FROM sessions s WHERE tenant = $1 AND session_id = $2",
                key.tenant,
                key.session_id,
            )
            if row is None:
                return None
            msgs = await conn.fetch(
                "SELECT id, seq, role, content, tokens, created_at FROM ("
                " SELECT * FROM messages WHERE tenant = $1 AND session_id = $2"
                " ORDER BY seq DESC LIMIT $3) last ORDER BY seq",
                key.tenant,
                key.session_id,
                limit,
            )
        return SessionSnapshot(
            key=key,
            version="",
            window=tuple(
                Message(
                    seq=m["seq"],
                    id=str(m["id"]),
                    role=m["role"],
                    content=m["content"],
                    timestamp=_iso(m["created_at"]),
                    tokens=m["tokens"],
                )
                for m in msgs
            ),
            context=dict(row["context"]),
            tokens_used=row["tokens_used"],
            message_count=row["message_count"],
            last_seq=row["last_seq"] or 0,
            created_at=_iso(row["created_at"]),
            updated_at=_iso(row["updated_at"]),
        )

    async def stale_sessions(self, limit: int) -> list[StaleSession]:
        """Sessions whose Redis copy must go (oldest marks first)."""
        with guarded("read of stale Redis copies"):
            async with self.pool.acquire() as conn:
                return await seqs.stale_sessions(conn, limit)

    async def stale_profiles(self, limit: int) -> list[StaleProfile]:
        """Users whose profile's Redis copy must go (oldest marks first)."""
        with guarded("read of stale Redis profiles"):
            async with self.pool.acquire() as conn:
                return await seqs.stale_profiles(conn, limit)

    async def mark_profile_stale(self, owner: tuple[str, str]) -> None:
        """Record that a user's profile copy in Redis must go (every replica drops it)."""
        with guarded("mark of a stale profile"):
            async with self.pool.acquire() as conn:
                await conn.execute(seqs.MARK_PROFILE_STALE, *owner)

    async def clear_stale_profiles(self, handled: list[StaleProfile]) -> None:
        if handled:
            with guarded("clearing stale profile marks"):
                async with self.pool.acquire() as conn:
                    await seqs.clear_stale_profiles(conn, handled)

    async def mark_stale(self, key: SessionKey, deleted_at_ms: int | None = None) -> None:
        """Record that a session's Redis copy is stale (or, ``deleted_at_ms``, deleted)."""
        with guarded(f"mark of session {key.session_id}"):
            async with self.pool.acquire() as conn:
                await seqs.mark_stale(conn, key, deleted_at_ms)

    async def mark_deleted(self, keys: list[SessionKey], deleted_at_ms: int) -> None:
        """Record that these sessions were deleted but their Redis copies are still there."""
        if keys:
            with guarded(f"mark of {len(keys)} deleted sessions"):
                async with self.pool.acquire() as conn:
                    await seqs.mark_deleted(conn, keys, deleted_at_ms)

    async def clear_stale(self, handled: list[StaleSession]) -> None:
        if handled:
            with guarded("clearing stale marks"):
                async with self.pool.acquire() as conn:
                    await seqs.clear_stale(conn, handled)

    async def delete(self, key: SessionKey, deleted_at: datetime) -> bool:
        """Delete every row of a session and leave a tombstone; True when it had rows."""
        with guarded(f"deletion of session {key.session_id}"):
            return await self._delete(key, deleted_at)

    async def _delete(self, key: SessionKey, deleted_at: datetime) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            # Redis's clock (the caller's reading of it), the one turns are compared by.
            await conn.execute(
                "INSERT INTO deleted_sessions (tenant, session_id, deleted_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (tenant, session_id) DO UPDATE SET deleted_at = EXCLUDED.deleted_at",
                key.tenant,
                key.session_id,
                deleted_at,
            )
            existed = await conn.fetchval(
                "SELECT count(*) FROM sessions WHERE tenant = $1 AND session_id = $2",
                key.tenant,
                key.session_id,
            )
            for table in ("messages", "token_usage", "sessions"):
                await conn.execute(
                    f"DELETE FROM {table} WHERE tenant = $1 AND session_id = $2",
                    key.tenant,
                    key.session_id,
                )
        return bool(existed)

    async def fetch_profile(self, tenant: str, user: str) -> profiles.StoredProfile | None:
        with guarded(f"read of the profile of {user}"):
            async with self.pool.acquire() as conn:
                return await profiles.fetch_profile(conn, tenant, user)

    async def user_sessions(self, tenant: str, user: str) -> list[str]:
        with guarded(f"read of the sessions of {user}"):
            async with self.pool.acquire() as conn:
                return await profiles.user_sessions(conn, tenant, user)

    async def delete_user(self, tenant: str, user: str, deleted_at: datetime) -> list[str]:
        """Delete a user's profile and sessions; a tombstone keeps late writes out."""
        with guarded(f"deletion of user {user}"):
            async with self.pool.acquire() as conn, conn.transaction():
                return await profiles.delete_user(conn, tenant, user, deleted_at)

    async def record_turn(self, tenant: str, session_id: str, payload: dict[str, Any]) -> int:
        """Write one turn straight to PostgreSQL (Redis is down): sequence numbers continue from
        the highest one stored, under a per-session lock so concurrent turns do not collide."""
        with guarded(f"direct write to session {session_id}"):
            return await self._record_turn(tenant, session_id, payload)

    async def _record_turn(self, tenant: str, session_id: str, payload: dict[str, Any]) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(seqs.LOCK_SESSION, tenant, session_id)
            last = await conn.fetchval(
                "SELECT coalesce(max(seq), 0) FROM messages WHERE tenant = $1 AND session_id = $2",
                tenant,
                session_id,
            )
            seq = int(last) + 1
            await write_events(conn, [OutboxEvent("", "", "turn", seq, payload)])
            # Redis's copy of this session (if any) now lacks this turn: every replica must know.
            await conn.execute(seqs.MARK_STALE, [tenant], [session_id])
            # And so does its copy of the user's profile, when the turn stated facts.
            profile = payload.get("profile")
            if isinstance(profile, dict) and profile.get("facts"):
                await conn.execute(seqs.MARK_PROFILE_STALE, profile["tenant"], profile["user_id"])
            return seq
