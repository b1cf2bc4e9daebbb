"""The profiles of users as the load path sees them: the in-process copy checked against Redis
in the session's own round trip, restored from PostgreSQL when Redis has none."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from ..config import SessionConfig
from ..errors import StoreError, StoreUnavailable
from ..session.model import SessionKey
from ..store.keys import user_scope
from ..store.postgres import PostgresSessionStore
from ..store.redis import RedisSessionStore
from ..store.redis_users import RedisUserStore
from ..store.replies import ProfileLoaded
from .cache import Owner, ProfileCache
from .model import UserRecord

log = logging.getLogger(__name__)


class ProfileMemory:
    def __init__(
        self, redis: RedisSessionStore, pg: PostgresSessionStore, cfg: SessionConfig
    ) -> None:
        self.sessions = redis
        self.redis = RedisUserStore(redis)
        self.pg = pg
        self.cfg = cfg
        self.cache = ProfileCache(cfg.local_cache_size)
        # Profiles written to PostgreSQL while Redis was away: their Redis copy is stale.
        self.stale: set[Owner] = set()
        self._late_reads: set[asyncio.Future[Any]] = set()

    def version(self, owner: Owner | None) -> str:
        return self.cache.version(owner) if owner is not None else ""

    def forget(self, owner: Owner | None) -> None:
        """Drop the in-process copy: the next load reads the facts with the session."""
        if owner is not None:
            self.cache.discard(owner)

    def mark_stale(self, owner: Owner | None) -> None:
        if owner is not None:
            self.cache.discard(owner)
            self.stale.add(owner)

    async def drop(self, owner: Owner) -> None:
        """Drop the user's profile copy in Redis and here (another replica wrote facts past
        Redis): the next load restores it from PostgreSQL."""
        self.cache.discard(owner)
        marked = owner in self.stale
        self.stale.discard(owner)
        try:
            await self.redis.drop_profile(owner)
        except StoreUnavailable:
            if marked:  # still stale here too: dropped before this replica serves it
                self.stale.add(owner)
            raise

    async def drop_if_stale(self, owner: Owner) -> None:
        """Before a load: a profile written past Redis is dropped there, to be restored."""
        if owner in self.stale:
            self.stale.discard(owner)
            try:
                await self.redis.drop_profile(owner)
            except StoreUnavailable:
                self.stale.add(owner)
                raise

    async def resolve(
        self, owner: Owner | None, loaded: ProfileLoaded | None
    ) -> dict[str, str] | None:
        """The user's facts from what the load script said about them (restored if absent)."""
        if owner is None:
            return None
        if loaded is not None and loaded.state == "fresh" and loaded.facts is not None:
            self.cache.put(owner, loaded.version, loaded.facts)
            return loaded.facts
        if loaded is not None and loaded.state == "current":
            cached = self.cache.facts(owner)
            if cached is not None:
                return cached
        # Absent from Redis (the user's first turn, expired, flushed): restore it from
        # PostgreSQL. Later loads read it with the session, in the same round trip.
        facts = await self._from_postgres(owner)
        if facts is not None:
            await self.redis.seed_profile(owner, facts)
        return facts or {}

    async def stored(self, owner: Owner | None) -> dict[str, str] | None:
        """The facts PostgreSQL holds (Redis is away); ``{}`` when it cannot say."""
        if owner is None:
            return None
        return await self._from_postgres(owner) or {}

    async def _from_postgres(self, owner: Owner) -> dict[str, str] | None:
        """The stored facts (None when PostgreSQL cannot say), within the request's bound.
        Not ``wait_for``, for the reason ``SessionService._fetch`` gives."""
        task = asyncio.ensure_future(self.pg.fetch_profile(*owner))
        done, _ = await asyncio.wait({task}, timeout=self.cfg.restore_timeout_s)
        if not done:
            task.cancel()
            self._late_reads.add(task)
            task.add_done_callback(self._forget_late_read)
            return None
        try:
            stored = task.result()
        except StoreError as e:
            log.warning("profile of %s/%s not restored: PostgreSQL unavailable: %s", *owner, e)
            return None
        return stored.facts if stored is not None else {}

    # --- admin -----------------------------------------------------------------------------------

    async def inspect(self, owner: Owner) -> UserRecord | None:
        """What is kept of a user: the facts (Redis's copy is the freshest) and the sessions."""
        stored = await self.pg.fetch_profile(*owner)
        sessions = await self.pg.user_sessions(*owner)
        facts = stored.facts if stored else None
        updated_at = stored.updated_at.isoformat() if stored else None
        try:
            live = await self.redis.read_profile(owner)
            in_redis = await self.redis.user_session_ids(owner)
        except StoreUnavailable:
            live, in_redis = None, []
        if live:
            facts = {**(facts or {}), **live}
        sessions += sorted(set(in_redis) - set(sessions))
        if facts is None and not sessions:
            return None
        return UserRecord(owner[0], owner[1], facts or {}, updated_at, sessions)

    async def erase(self, owner: Owner, deleted_at: datetime) -> list[SessionKey]:
        """Forget a user everywhere: the profile and every session, PostgreSQL first (its
        tombstone keeps out late writes), then Redis (whose tombstone drops turns in flight).
        Returns the sessions erased, for the caller's caches.

        When Redis fails part-way, the sessions known to be left there (PostgreSQL's, and
        Redis's own once listed) are marked deleted in PostgreSQL, and the profile's copy
        marked stale: every replica erases those copies once Redis answers, so they are not
        served again even if the call is never repeated. The caller is still told to repeat it
        (it is safe to, and completes)."""
        in_postgres = await self.pg.delete_user(*owner, deleted_at)
        ms = int(deleted_at.timestamp() * 1000)
        self.cache.discard(owner)
        self.stale.discard(owner)
        scope = user_scope(*owner)
        left = {SessionKey(scope, sid) for sid in in_postgres}
        try:
            in_redis = await self.redis.erase_user(owner, ms)
            left |= {SessionKey(scope, sid) for sid in in_redis}
            keys = sorted(left, key=lambda k: k.session_id)
            for key in keys:
                await self.sessions.erase(key, ms)
                left.discard(key)
        except StoreUnavailable as e:
            await self._mark_left(owner, sorted(left, key=lambda k: k.session_id), ms)
            # PostgreSQL's part is done and tombstoned; the call is safe to repeat.
            raise StoreUnavailable(
                "Redis is unavailable; the user is deleted from PostgreSQL, retry to finish"
            ) from e
        return keys

    async def _mark_left(self, owner: Owner, left: list[SessionKey], ms: int) -> None:
        try:
            await self.pg.mark_deleted(left, ms)
            # The profile's copy may still be in Redis (its erase is the first Redis call).
            await self.pg.mark_profile_stale(owner)
        except StoreError as e:
            # Only a repeated call erases these copies now; the caller is told to repeat it.
            log.error(
                "deletion of user %s/%s: %d Redis copies left and not marked: %s",
                *owner,
                len(left),
                e,
            )

    def _forget_late_read(self, task: asyncio.Future[Any]) -> None:
        self._late_reads.discard(task)
        if not task.cancelled():
            task.exception()
