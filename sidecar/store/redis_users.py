"""Users in Redis: a user's profile and deletion tombstone, beside the user's sessions (one hash
tag: see ``keys``). Reading a profile on a turn is not here: it rides in the session's load."""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from .keys import glob_escape
from .redis import TOMBSTONE_TTL_MS, RedisSessionStore
from .replies import as_str

# A walk over the keyspace for one user's sessions (the admin API, a user's deletion) takes many
# SCAN round trips: bounded as a whole, far longer than one request's call.
SCAN_TIMEOUT_S = 30.0


class RedisUserStore:
    """User-level calls, through the session store's client and breaker."""

    def __init__(self, sessions: RedisSessionStore) -> None:
        self.sessions = sessions

    async def seed_profile(self, owner: tuple[str, str], facts: dict[str, str]) -> None:
        """Put a user's profile (from PostgreSQL) into Redis unless a copy is there already."""
        args: list[Any] = [self.sessions.ttl_ms, secrets.token_hex(6)]
        for fact, value in facts.items():
            args += [fact, orjson.dumps(value)]
        await self.sessions.guarded(
            self.sessions.seed_profile_script(
                keys=[self.sessions.keys.user(*owner).profile], args=args
            )
        )

    async def drop_profile(self, owner: tuple[str, str]) -> None:
        """Drop a stale Redis copy of a profile (it is restored from PostgreSQL on next load)."""
        await self.sessions.guarded(
            self.sessions.client.delete(self.sessions.keys.user(*owner).profile)
        )

    async def erase_user(self, owner: tuple[str, str], deleted_at_ms: int) -> list[str]:
        """Forget a user in Redis: the profile goes, a tombstone makes every turn of the user
        asked before ``deleted_at_ms`` record nothing, and the ids of the user's sessions still
        in Redis are returned (the caller erases them)."""
        u = self.sessions.keys.user(*owner)

        async def run() -> list[str]:
            async with self.sessions.client.pipeline(transaction=True) as pipe:
                pipe.set(u.tombstone, deleted_at_ms, px=TOMBSTONE_TTL_MS)
                pipe.delete(u.profile)
                await pipe.execute()
            return await self._user_sessions(owner)

        result: list[str] = await self.sessions.guarded(run(), timeout_s=SCAN_TIMEOUT_S)
        return result

    async def _user_sessions(self, owner: tuple[str, str]) -> list[str]:
        found = []
        prefix = self.sessions.keys.user_sessions_prefix(*owner)
        match = glob_escape(prefix) + "*:meta"
        async for raw in self.sessions.client.scan_iter(match=match, count=1000):
            found.append(as_str(raw)[len(prefix) : -len(":meta")])
        return found

    async def user_session_ids(self, owner: tuple[str, str]) -> list[str]:
        """The ids of the user's sessions in Redis (a SCAN: for the admin API, not for turns)."""
        result: list[str] = await self.sessions.guarded(
            self._user_sessions(owner), timeout_s=SCAN_TIMEOUT_S
        )
        return result

    async def read_profile(self, owner: tuple[str, str]) -> dict[str, str] | None:
        """The facts of a user's profile in Redis, or None when Redis holds no copy."""
        flat = await self.sessions.guarded(
            self.sessions.client.hgetall(self.sessions.keys.user(*owner).profile)
        )
        if not flat:
            return None
        fields = {as_str(k): v for k, v in flat.items()}
        return {k[2:]: orjson.loads(v) for k, v in fields.items() if k.startswith("f:")}
