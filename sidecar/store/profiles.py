"""Users in PostgreSQL: profiles written with the turns that stated them, and deleted users.

A turn's outbox payload carries the facts its question stated (``profile``); they are merged
into ``user_profiles`` in the same transaction as the turn, fact by fact, and only over an older
statement of the same fact, so a late or repeated delivery never replaces a newer one. A deleted
user leaves a tombstone (``deleted_users``) that keeps out every write asked before it, for the
profile and for every session stored under the user's scope.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from ..frozen import frozen
from .keys import user_scope
from .schema import Conn

log = logging.getLogger(__name__)


@frozen
class StoredProfile:
    facts: dict[str, str]
    updated_at: datetime


def _clean(value: str) -> str:
    return value.replace("\x00", "\ufffd")


async def merge_facts(
    conn: Conn, statements: list[tuple[str, str, datetime, dict[str, Any]]]
) -> None:
    """Merge ``(tenant, user, stated_at, facts)`` into the profiles, newest statement per fact.

    Each profile row is locked while it is merged; owners in a stable order, so two writers
    never wait on each other's rows in opposite orders.
    """
    by_owner: dict[tuple[str, str], list[tuple[datetime, dict[str, Any]]]] = {}
    for tenant, user, at, stated in statements:
        by_owner.setdefault((tenant, user), []).append((at, stated))
    for (tenant, user), items in sorted(by_owner.items()):
        # The row exists before it is locked, so two writers merging into a new profile take
        # turns instead of the second overwriting the first.
        await conn.execute(
            "INSERT INTO user_profiles (tenant, user_id) VALUES ($1, $2)"
            " ON CONFLICT (tenant, user_id) DO NOTHING",
            tenant,
            user,
        )
        row = await conn.fetchrow(
            "SELECT facts, fact_times FROM user_profiles WHERE tenant = $1 AND user_id = $2"
            " FOR UPDATE",
            tenant,
            user,
        )
        facts: dict[str, Any] = dict(row["facts"]) if row else {}
        times: dict[str, str] = dict(row["fact_times"]) if row else {}
        changed = False
        for at, said in items:
            for fact, value in said.items():
                if not isinstance(value, str):
                    continue
                known = times.get(fact)
                if known is not None and datetime.fromisoformat(known) > at:
                    continue  # a newer statement of this fact is stored already
                facts[_clean(fact)] = _clean(value)
                times[_clean(fact)] = at.isoformat()
                changed = True
        if not changed:
            continue
        await conn.execute(
            "UPDATE user_profiles SET facts = $3, fact_times = $4, updated_at = now()"
            " WHERE tenant = $1 AND user_id = $2",
            tenant,
            user,
            facts,
            times,
        )


async def fetch_profile(conn: Conn, tenant: str, user: str) -> StoredProfile | None:
    row = await conn.fetchrow(
        "SELECT facts, updated_at FROM user_profiles WHERE tenant = $1 AND user_id = $2",
        tenant,
        user,
    )
    if row is None:
        return None
    return StoredProfile(dict(row["facts"]), row["updated_at"])


async def user_sessions(conn: Conn, tenant: str, user: str) -> list[str]:
    """The ids of the user's sessions that PostgreSQL holds, most recently used first."""
    rows = await conn.fetch(
        "SELECT session_id FROM sessions WHERE tenant = $1 ORDER BY updated_at DESC",
        user_scope(tenant, user),
    )
    return [r["session_id"] for r in rows]


async def delete_user(conn: Conn, tenant: str, user: str, deleted_at: datetime) -> list[str]:
    """Delete the profile and every row of every session of the user, leaving a tombstone;
    returns the ids of the sessions that had rows. Runs in the caller's transaction."""
    scope = user_scope(tenant, user)
    await conn.execute(
        "INSERT INTO deleted_users (tenant, user_id, scope, deleted_at) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (tenant, user_id) DO UPDATE SET deleted_at = EXCLUDED.deleted_at",
        tenant,
        user,
        scope,
        deleted_at,
    )
    await conn.execute("DELETE FROM user_profiles WHERE tenant = $1 AND user_id = $2", tenant, user)
    rows = await conn.fetch("DELETE FROM sessions WHERE tenant = $1 RETURNING session_id", scope)
    for table in ("messages", "token_usage"):
        await conn.execute(f"DELETE FROM {table} WHERE tenant = $1", scope)
    return [r["session_id"] for r in rows]
