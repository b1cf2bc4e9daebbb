"""Sequence numbers in PostgreSQL, and the marks of stale Redis copies (sessions, profiles).

``(tenant, session_id, seq)`` is unique in ``messages``. A message whose seq is taken is never
dropped: it is renumbered after the session's highest seq, under the session's lock, and the
session is marked in ``redis_stale`` so that every replica rebuilds its Redis copy from
PostgreSQL (docs/consistency.md).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime
from typing import Any

from ..frozen import frozen
from ..session.model import SessionKey
from .schema import Conn

log = logging.getLogger(__name__)

# A per-session lock for writers that choose a seq themselves (renumbering, direct writes).
LOCK_SESSION = "SELECT pg_advisory_xact_lock(hashtextextended(length($1) || ':' || $1 || $2, 0))"

MARK_STALE = """
INSERT INTO redis_stale (tenant, session_id)
SELECT * FROM unnest($1::text[], $2::text[])
ON CONFLICT (tenant, session_id) DO UPDATE SET marked_at = clock_timestamp()
"""


MARK_PROFILE_STALE = """
INSERT INTO redis_stale_profiles (tenant, user_id) VALUES ($1, $2)
ON CONFLICT (tenant, user_id) DO UPDATE SET marked_at = clock_timestamp()
"""


@frozen
class StaleProfile:
    owner: tuple[str, str]  # (tenant, user)
    marked_at: datetime


@frozen
class StaleSession:
    key: SessionKey
    marked_at: datetime
    deleted_at_ms: int | None  # set: the session was deleted while Redis was away


async def renumber_clashes(conn: Conn, rows: list[list[Any]]) -> set[str]:
    """Insert messages whose seq another message of their session already holds, after that
    session's highest seq; returns their ids. Rows as the batch builds them: the columns of
    ``messages`` in order, ``created_at`` as ISO text. Messages whose id is stored already (a batch
    written twice) are left alone.

    A clash means a Redis copy went stale while turns were written elsewhere (straight to
    PostgreSQL while Redis was away, or by a replica that did not know): the row is kept, never
    dropped, and the session is marked so that every replica rebuilds its Redis copy from here.
    """
    ids = [row[0] for row in rows]
    stored = {
        str(r["id"])
        for r in await conn.fetch("SELECT id FROM messages WHERE id = ANY($1::uuid[])", ids)
    }
    by_session: dict[tuple[str, str], list[list[Any]]] = defaultdict(list)
    for row in rows:
        if str(row[0]) not in stored:
            by_session[(row[1], row[2])].append(row)
    done: set[str] = set()
    # A stable order, so two writers never take these locks in opposite orders.
    for (tenant, sid), clashing in sorted(by_session.items()):
        await conn.execute(LOCK_SESSION, tenant, sid)
        top = await conn.fetchval(
            "SELECT coalesce(max(seq), 0) FROM messages WHERE tenant = $1 AND session_id = $2",
            tenant,
            sid,
        )
        for offset, row in enumerate(sorted(clashing, key=lambda r: (r[3], r[9])), 1):
            moved = (*row[:3], int(top) + offset, *row[4:9], datetime.fromisoformat(row[9]))
            await conn.execute(
                "INSERT INTO messages (id, tenant, session_id, seq, role, content, tokens, turn_id,"
                " partial, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                *moved,
            )
            done.add(str(row[0]))
        log.warning(
            "%d message(s) of %s/%s renumbered after seq %d: their seq was taken",
            len(clashing),
            tenant,
            sid,
            top,
        )
    if by_session:
        tenants, sids = zip(*by_session, strict=True)
        await conn.execute(MARK_STALE, list(tenants), list(sids))
    return done


async def stale_sessions(conn: Conn, limit: int) -> list[StaleSession]:
    """Sessions whose Redis copy must go (oldest marks first)."""
    rows = await conn.fetch(
        "SELECT tenant, session_id, marked_at, deleted_at_ms FROM redis_stale"
        " ORDER BY marked_at LIMIT $1",
        limit,
    )
    return [
        StaleSession(SessionKey(r["tenant"], r["session_id"]), r["marked_at"], r["deleted_at_ms"])
        for r in rows
    ]


async def mark_stale(conn: Conn, key: SessionKey, deleted_at_ms: int | None = None) -> None:
    """Record that a session's Redis copy is stale (or, ``deleted_at_ms``, deleted)."""
    await conn.execute(
        "INSERT INTO redis_stale (tenant, session_id, deleted_at_ms) VALUES ($1, $2, $3)"
        " ON CONFLICT (tenant, session_id) DO UPDATE SET marked_at = clock_timestamp(),"
        " deleted_at_ms = coalesce(EXCLUDED.deleted_at_ms, redis_stale.deleted_at_ms)",
        key.tenant,
        key.session_id,
        deleted_at_ms,
    )


async def mark_deleted(conn: Conn, keys: list[SessionKey], deleted_at_ms: int) -> None:
    """Record that these sessions were deleted at ``deleted_at_ms`` while their Redis copies
    could not be erased: every replica erases them once Redis answers."""
    await conn.execute(
        "INSERT INTO redis_stale (tenant, session_id, deleted_at_ms)"
        " SELECT tenant, session_id, $3 FROM unnest($1::text[], $2::text[]) AS k(tenant, session_id)"
        " ON CONFLICT (tenant, session_id) DO UPDATE SET marked_at = clock_timestamp(),"
        " deleted_at_ms = EXCLUDED.deleted_at_ms",
        [k.tenant for k in keys],
        [k.session_id for k in keys],
        deleted_at_ms,
    )


async def clear_stale(conn: Conn, handled: list[StaleSession]) -> None:
    """Forget marks once handled; a mark renewed since (another direct write) stays."""
    await conn.execute(
        "DELETE FROM redis_stale r USING unnest($1::text[], $2::text[], $3::timestamptz[])"
        " AS h(tenant, session_id, marked_at) WHERE r.tenant = h.tenant"
        " AND r.session_id = h.session_id AND r.marked_at <= h.marked_at",
        [s.key.tenant for s in handled],
        [s.key.session_id for s in handled],
        [s.marked_at for s in handled],
    )


async def stale_profiles(conn: Conn, limit: int) -> list[StaleProfile]:
    """Users whose profile's Redis copy must go (oldest marks first)."""
    rows = await conn.fetch(
        "SELECT tenant, user_id, marked_at FROM redis_stale_profiles ORDER BY marked_at LIMIT $1",
        limit,
    )
    return [StaleProfile((r["tenant"], r["user_id"]), r["marked_at"]) for r in rows]


async def clear_stale_profiles(conn: Conn, handled: list[StaleProfile]) -> None:
    """Forget profile marks once handled; a mark renewed since stays."""
    await conn.execute(
        "DELETE FROM redis_stale_profiles r USING unnest($1::text[], $2::text[], $3::timestamptz[])"
        " AS h(tenant, user_id, marked_at) WHERE r.tenant = h.tenant AND r.user_id = h.user_id"
        " AND r.marked_at <= h.marked_at",
        [p.owner[0] for p in handled],
        [p.owner[1] for p in handled],
        [p.marked_at for p in handled],
    )
