"""What PostgreSQL holds of one session, read straight from its tables for a person to look at
(``sidecar demo``); the request path reads through ``postgres.PostgresSessionStore`` instead."""

from __future__ import annotations

import asyncpg

from ..frozen import frozen
from .postgres import guarded


@frozen
class StoredSession:
    tenant: str
    tokens_used: int
    message_count: int
    context: str  # the JSON text as stored
    messages: tuple[tuple[int, str, str], ...]  # (seq, role, content), in order
    usage: tuple[tuple[str, int], ...]  # (model, total_tokens), oldest first


async def count_messages(dsn: str, session_id: str) -> int:
    """How many messages of the session PostgreSQL holds (all tenants)."""
    with guarded("count messages"):
        conn = await asyncpg.connect(dsn)
        try:
            count: int = await conn.fetchval(
                "SELECT count(*) FROM messages WHERE session_id = $1", session_id
            )
        finally:
            await conn.close()
    return count


async def read_stored(dsn: str, session_id: str) -> StoredSession | None:
    """The session's row, messages and token usage; None when it has no row (yet)."""
    with guarded("read a stored session"):
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(
                "SELECT tenant, tokens_used, message_count, context::text FROM sessions"
                " WHERE session_id = $1",
                session_id,
            )
            if row is None:
                return None
            messages = await conn.fetch(
                "SELECT seq, role, content FROM messages WHERE session_id = $1 ORDER BY seq",
                session_id,
            )
            usage = await conn.fetch(
                "SELECT model, total_tokens FROM token_usage WHERE session_id = $1"
                " ORDER BY created_at",
                session_id,
            )
        finally:
            await conn.close()
    return StoredSession(
        tenant=row["tenant"],
        tokens_used=row["tokens_used"],
        message_count=row["message_count"],
        context=row["context"],
        messages=tuple((m["seq"], m["role"], m["content"]) for m in messages),
        usage=tuple((u["model"], u["total_tokens"]) for u in usage),
    )
