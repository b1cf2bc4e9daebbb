"""The long-term store: schema migrations, session restore and idempotent batch writes."""

from __future__ import annotations

import logging
import math
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, Literal

import asyncpg
import orjson

from ..config import PostgresConfig
from ..session.model import Message, SessionKey, SessionSnapshot

log = logging.getLogger(__name__)

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

# Any constant works; it only has to be the same for every replica running migrations.
MIGRATION_LOCK_ID = 0x5E55_10C5


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


def _migrations() -> list[tuple[int, str, str]]:
    folder = resources.files(__package__).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text("utf-8")))
    return sorted(found)


async def migrate(conn: Conn) -> list[str]:
    """Apply the numbered migrations not applied yet, under an advisory lock (safe from many replicas)."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in _migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied.append(name)
            log.info("applied migration %s", name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied


# PostgreSQL error classes that say "try again later" rather than "this row is wrong":
# connection exceptions, insufficient resources, operator intervention, system errors,
# transaction rollbacks (serialization failures, deadlocks).
TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "58", "40")


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
        return state[:2] in TRANSIENT_SQLSTATE_CLASSES
    return isinstance(exc, CONNECTION_ERRORS)


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One entry of the outbox stream, decoded."""

    stream: str
    entry_id: str
    kind: Literal["turn", "session"]
    seq: int
    data: dict[str, Any]


def _text(value: str) -> str:
    """PostgreSQL text and jsonb cannot hold NUL; a user's stray NUL must not cost the turn."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_INSERT_MESSAGES = """
INSERT INTO messages (id, tenant, session_id, seq, role, content, tokens, turn_id, partial, created_at)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                     $7::integer[], $8::uuid[], $9::boolean[], $10::timestamptz[])
ON CONFLICT (id) DO NOTHING
RETURNING tenant, session_id
"""

_INSERT_USAGE = """
INSERT INTO token_usage (id, tenant, session_id, model, prompt_tokens, completion_tokens,
                         total_tokens, cost, provider, created_at)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::integer[],
                     $6::integer[], $7::integer[], $8::float8[], $9::text[], $10::timestamptz[])
ON CONFLICT (id) DO NOTHING
RETURNING id
"""

_USAGE_ROW = uuid.UUID("0b7c4e52-93d1-5a8f-b6e2-4c1d9f3a7e60")


def usage_row_id(turn_id: str, index: int) -> str:
    """The id of a turn's ``index``-th usage row. The first is the turn's own id (the row that
    tells a replay the turn is stored already); the others follow from it, so a replay writes
    the very same rows."""
    return turn_id if index == 0 else str(uuid.uuid5(_USAGE_ROW, f"{turn_id}:{index}"))


def _usage_rows(d: dict[str, Any]) -> list[list[Any]]:
    """``[model, prompt, completion, total, cost, provider]`` per row; entries written before
    rows had cost and provider carry only the turn's totals."""
    rows = d.get("usage_rows")
    if isinstance(rows, list) and rows:
        return rows
    return [[*d["usage"], None, None]]


def _cost(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value) if math.isfinite(value) else None
    return None


_UPSERT_SESSION = """
INSERT INTO sessions AS s (tenant, session_id, context, tokens_used, message_count,
                           created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $6)
ON CONFLICT (tenant, session_id) DO UPDATE SET
    context = s.context || EXCLUDED.context,
    tokens_used = s.tokens_used + EXCLUDED.tokens_used,
    message_count = s.message_count + EXCLUDED.message_count,
    updated_at = GREATEST(s.updated_at, EXCLUDED.updated_at)
"""


async def write_events(conn: Conn, events: list[OutboxEvent]) -> None:
    """Write a batch in the caller's transaction. Idempotent: messages and usage rows are keyed by
    their ids, and session counters grow only by what this call actually inserted."""
    events = await _drop_deleted(conn, events)
    msg_cols: list[list[Any]] = [[] for _ in range(10)]
    use_cols: list[list[Any]] = [[] for _ in range(10)]
    turns = [e for e in events if e.kind == "turn"]
    for e in turns:
        d = e.data
        for offset, (mid, role, content, ts, tokens) in enumerate(d["messages"]):
            row = (
                mid,
                d["tenant"],
                d["session_id"],
                e.seq + offset,
                role,
                _text(content),
                tokens,
                d["turn_id"],
                bool(d.get("partial")) and role == "assistant",  # the question itself was whole
                _ts(ts),
            )
            for col, value in zip(msg_cols, row, strict=True):
                col.append(value)
        for index, (model, prompt, completion, total, cost, provider) in enumerate(_usage_rows(d)):
            row2 = (
                usage_row_id(d["turn_id"], index),
                d["tenant"],
                d["session_id"],
                _text(model),
                prompt,
                completion,
                total,
                _cost(cost),
                _text(provider) if isinstance(provider, str) and provider else None,
                _ts(d["at"]),
            )
            for col, value in zip(use_cols, row2, strict=True):
                col.append(value)

    inserted_msgs: dict[tuple[str, str], int] = defaultdict(int)
    new_turns: set[str] = set()
    if turns:
        for r in await conn.fetch(_INSERT_MESSAGES, *msg_cols):
            inserted_msgs[(r["tenant"], r["session_id"])] += 1
        new_turns = {str(r["id"]) for r in await conn.fetch(_INSERT_USAGE, *use_cols)}

    # Per session: counters from what was inserted now, context patches applied in order.
    sessions: dict[tuple[str, str], list[Any]] = {}
    for e in events:
        d = e.data
        key = (d["tenant"], d["session_id"])
        entry = sessions.setdefault(key, [{}, 0, _ts(d["at"])])
        if e.kind == "session":
            entry[0] = {**_clean(d.get("context") or {}), **entry[0]}
            entry[2] = min(entry[2], _ts(d["at"]))
        elif d["turn_id"] in new_turns:
            entry[0].update(_clean(d.get("context") or {}))
            entry[1] += d["usage"][3]
            entry[2] = max(entry[2], _ts(d["at"]))
    # A stable order, so two writers never lock the same rows in opposite orders.
    rows = [
        (tenant, sid, ctx, tokens, inserted_msgs.get((tenant, sid), 0), at)
        for (tenant, sid), (ctx, tokens, at) in sorted(sessions.items())
    ]
    if rows:
        await conn.executemany(_UPSERT_SESSION, rows)


async def _drop_deleted(conn: Conn, events: list[OutboxEvent]) -> list[OutboxEvent]:
    """Leave out events of sessions deleted after the event happened."""
    keys = {(e.data["tenant"], e.data["session_id"]) for e in events}
    if not keys:
        return events
    tenants, sids = zip(*keys, strict=True)
    rows = await conn.fetch(
        "SELECT d.tenant, d.session_id, d.deleted_at FROM deleted_sessions d"
        " JOIN unnest($1::text[], $2::text[]) AS k(tenant, session_id)"
        " ON d.tenant = k.tenant AND d.session_id = k.session_id",
        list(tenants),
        list(sids),
    )
    if not rows:
        return events
    deleted = {(r["tenant"], r["session_id"]): r["deleted_at"] for r in rows}
    kept = []
    for e in events:
        when = deleted.get((e.data["tenant"], e.data["session_id"]))
        # A turn belongs to the moment it was asked (its user message's time): one asked before
        # the deletion stays out even when its answer came after.
        asked = e.data["messages"][0][3] if e.kind == "turn" else e.data["at"]
        if when is None or _ts(asked) > when:
            kept.append(e)
        else:
            log.info(
                "dropping a write for deleted session %s/%s", e.data["tenant"], e.data["session_id"]
            )
    return kept


class PostgresSessionStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def ping(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def migrate(self) -> list[str]:
        async with self.pool.acquire() as conn:
            return await migrate(conn)

    async def write(self, events: list[OutboxEvent]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await write_events(conn, events)

    async def fetch_session(self, key: SessionKey, limit: int) -> SessionSnapshot | None:
        """The session row and its last ``limit`` messages (oldest first), or None."""
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
                " ORDER BY seq DESC, created_at DESC LIMIT $3) last ORDER BY seq, created_at",
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

    async def delete(self, key: SessionKey, deleted_at: datetime) -> bool:
        """Delete every row of a session and leave a tombstone; True when it had rows."""
        async with self.pool.acquire() as conn, conn.transaction():
            # The sidecar's clock, the one that stamps turns, not the database's.
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


async def record_turn_direct(
    pool: asyncpg.Pool, tenant: str, session_id: str, payload: dict[str, Any]
) -> int:
    """Write one turn straight to PostgreSQL (Redis is down): sequence numbers continue from the
    highest one stored, under a per-session lock so concurrent turns do not collide."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(length($1) || ':' || $1 || $2, 0))",
            tenant,
            session_id,
        )
        last = await conn.fetchval(
            "SELECT coalesce(max(seq), 0) FROM messages WHERE tenant = $1 AND session_id = $2",
            tenant,
            session_id,
        )
        seq = int(last) + 1
        await write_events(conn, [OutboxEvent("", "", "turn", seq, payload)])
        return seq
