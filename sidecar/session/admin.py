"""What the admin API asks of the stores: a whole stored session or user read without creating
anything, and a session or a user (the profile and every session of the user) removed everywhere."""

from __future__ import annotations

from datetime import UTC, datetime

from ..config import SessionConfig
from ..errors import StoreUnavailable
from ..profile.cache import Owner
from ..profile.memory import ProfileMemory
from ..profile.model import UserRecord
from ..store.postgres import PostgresSessionStore
from ..store.redis import RedisSessionStore
from .cache import SessionCache
from .model import SessionKey, SessionSnapshot
from .stale import StaleCopies


class SessionAdmin:
    def __init__(
        self,
        redis: RedisSessionStore,
        pg: PostgresSessionStore,
        cfg: SessionConfig,
        cache: SessionCache,
        stale: StaleCopies,
        users: ProfileMemory,
    ) -> None:
        self.redis = redis
        self.pg = pg
        self.cfg = cfg
        self.cache = cache
        self.stale = stale
        self.users = users

    async def inspect(self, key: SessionKey) -> SessionSnapshot | None:
        """The whole stored session (up to ``max_stored_messages``), without creating it."""
        try:
            res = await self.redis.load(key, "", self.cfg.max_stored_messages)
            if res.snapshot is not None:
                return res.snapshot
        except StoreUnavailable:
            pass
        return await self.pg.fetch_session(key, self.cfg.max_stored_messages)

    async def delete(self, key: SessionKey) -> None:
        """Remove a session everywhere; PostgreSQL keeps a tombstone so late writes stay out.
        The deletion is stamped with Redis's clock, the one every replica compares turns by."""
        at_ms = self.redis.clock.now_ms()
        await self.pg.delete(key, datetime.fromtimestamp(at_ms / 1000, UTC))
        self.cache.discard(key)
        try:
            await self.redis.erase(key, at_ms)
        except StoreUnavailable:
            # Every replica must learn it, not only this one: the sweep erases the copy later.
            await self.pg.mark_stale(key, deleted_at_ms=at_ms)

    async def inspect_user(self, owner: Owner) -> UserRecord | None:
        """What is kept of a user: the profile's facts and the user's sessions."""
        return await self.users.inspect(owner)

    async def delete_user(self, owner: Owner) -> None:
        """Remove a user's profile and every session of the user, as ``delete`` does one, the
        deletion stamped with Redis's clock too (a turn is compared with it by that clock)."""
        at = datetime.fromtimestamp(self.redis.clock.now_ms() / 1000, UTC)
        for key in await self.users.erase(owner, at):
            self.cache.discard(key)
            self.stale.local.discard(key)
