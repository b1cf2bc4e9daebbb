"""Moving data stored under the old plain-hash tenants to the keyed (HMAC) ones.

Before ``identity.secret``, a credential's tenant was ``key-`` + the first 32 hex digits of the
plain SHA-256 of the ``Authorization`` (or ``X-API-Key``) value. A hash cannot be turned back
into its credential, so the old tenant of a credential can be found only from the credential
itself: ``sidecar migrate --rekey-from plain-sha256 --credentials FILE`` reads the credentials
(one per line, exactly as clients send them, e.g. ``Bearer sk-...``), computes both tenants of
each and moves that tenant's rows. Tenants of rotating bearer tokens (JWTs, which made a new
tenant at every refresh) have no credential left to name them and stay where they are.

Each credential is moved in one transaction, and running it again moves only what is left (a
turn of the old scheme that reached PostgreSQL late). A session whose id already exists under the
new tenant (a client that used the new scheme first) is left under the old tenant and reported.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import asyncpg

from ..identity import credential_tenant
from .postgres import guarded
from .schema import Conn

log = logging.getLogger(__name__)

OLD_SCHEMES = ("plain-sha256",)


def plain_sha256_tenant(credential: str) -> str:
    """The tenant the old scheme gave a credential."""
    return "key-" + hashlib.sha256(credential.strip().encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
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


async def rekey_credential(conn: Conn, credential: str, secret: str) -> Rekeyed:
    """Move one credential's rows from its plain-hash tenant to its keyed one."""
    old, new = plain_sha256_tenant(credential), credential_tenant(credential, secret)
    async with conn.transaction():
        moved = [r["session_id"] for r in await conn.fetch(_MOVE_SESSIONS, old, new)]
        for table in ("messages", "token_usage"):
            await conn.execute(_MOVE_ROWS.format(table=table), old, new)
        await conn.execute(_MOVE_TOMBSTONES, old, new)
        if await conn.fetchval("SELECT to_regclass('user_profiles') IS NOT NULL"):
            await conn.execute(_MOVE_PROFILES, old, new)
        left = await conn.fetch("SELECT session_id FROM sessions WHERE tenant = $1", old)
    return Rekeyed(old, new, len(moved), tuple(r["session_id"] for r in left))


async def rekey_plain_hash_tenants(
    dsn: str, connect_timeout_s: float, credentials: list[str], secret: str
) -> list[Rekeyed]:
    """``rekey_credentials`` over a connection of its own (``sidecar migrate --rekey-from``);
    PostgreSQL's failures leave it as ``StoreError``."""
    with guarded("re-keying"):
        conn = await asyncpg.connect(dsn, timeout=connect_timeout_s)
        try:
            return await rekey_credentials(conn, credentials, secret)
        finally:
            await conn.close()


async def rekey_credentials(conn: Conn, credentials: list[str], secret: str) -> list[Rekeyed]:
    results = []
    for credential in credentials:
        result = await rekey_credential(conn, credential, secret)
        if result.left_behind:
            log.warning(
                "%d session(s) of %s stay under it: their ids exist under %s already",
                len(result.left_behind),
                result.old,
                result.new,
            )
        results.append(result)
    return results
