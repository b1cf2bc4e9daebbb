"""Moving a tenant's rows to another tenant name (``sidecar migrate --rekey-from``).

The caller names the pairs (``identity`` knows how a credential's old and new tenants are
computed; a store does not). Each pair is moved in one transaction, and running it again moves
only what is left (a turn of the old scheme that reached PostgreSQL late). A session whose id
already exists under the new tenant (a client that used the new scheme first) stays under the old
tenant and is reported.
"""

from __future__ import annotations

import logging

import asyncpg

from ..frozen import frozen
from .postgres import guarded
from .schema import Conn

log = logging.getLogger(__name__)


@frozen
class Rekeyed:
    old: str
    new: str
    sessions: int
    left_behind: tuple[str, ...]  # session ids that exist under the new tenant already


_MOVE_SESSIONS = """
UPDATE sessions s SET tenant = $2
WHERE s.tenant = $1 AND NOT EXISTS (
    SELECT 1 FROM sessions n WHERE n.tenant = $2 AND n.session_id = s.session_id)
RETURNING s.session_id
"""

# Rows follow their session: whatever no longer has a session row under the old tenant moves.
_MOVE_ROWS = """
UPDATE {table} r SET tenant = $2
WHERE r.tenant = $1 AND NOT EXISTS (
    SELECT 1 FROM sessions s WHERE s.tenant = $1 AND s.session_id = r.session_id)
"""

_MOVE_TOMBSTONES = """
WITH gone AS (DELETE FROM deleted_sessions WHERE tenant = $1 RETURNING session_id, deleted_at)
INSERT INTO deleted_sessions (tenant, session_id, deleted_at)
SELECT $2, session_id, deleted_at FROM gone
ON CONFLICT (tenant, session_id) DO UPDATE
    SET deleted_at = GREATEST(deleted_sessions.deleted_at, EXCLUDED.deleted_at)
"""

_MOVE_PROFILES = """
UPDATE user_profiles p SET tenant = $2
WHERE p.tenant = $1 AND NOT EXISTS (
    SELECT 1 FROM user_profiles n WHERE n.tenant = $2 AND n.user_id = p.user_id)
"""


async def move_tenant(conn: Conn, old: str, new: str) -> Rekeyed:
    """Move the rows of tenant ``old`` to tenant ``new``."""
    async with conn.transaction():
        moved = [r["session_id"] for r in await conn.fetch(_MOVE_SESSIONS, old, new)]
        for table in ("messages", "token_usage"):
            await conn.execute(_MOVE_ROWS.format(table=table), old, new)
        await conn.execute(_MOVE_TOMBSTONES, old, new)
        if await conn.fetchval("SELECT to_regclass('user_profiles') IS NOT NULL"):
            await conn.execute(_MOVE_PROFILES, old, new)
        left = await conn.fetch("SELECT session_id FROM sessions WHERE tenant = $1", old)
    return Rekeyed(old, new, len(moved), tuple(r["session_id"] for r in left))


async def move_tenants(
    dsn: str, connect_timeout_s: float, pairs: list[tuple[str, str]]
) -> list[Rekeyed]:
    """Move each ``(old, new)`` tenant over a connection of its own; PostgreSQL's failures leave
    it as ``StoreError``."""
    results = []
    with guarded("re-keying"):
        conn = await asyncpg.connect(dsn, timeout=connect_timeout_s)
        try:
            for old, new in pairs:
                result = await move_tenant(conn, old, new)
                if result.left_behind:
                    log.warning(
                        "%d session(s) of %s stay under it: their ids exist under %s already",
                        len(result.left_behind),
                        old,
                        new,
                    )
                results.append(result)
        finally:
            await conn.close()
    return results
