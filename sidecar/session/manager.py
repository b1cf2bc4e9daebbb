"""The load chain and the commit of a turn.

Load: L1 (versioned LRU) → Redis (one round trip; only the version when L1 is current) →
PostgreSQL restore → a new session. Commit: one Redis round trip (a script) that also appends the
turn to the outbox the writer drains into PostgreSQL. With Redis unavailable, history is read from
PostgreSQL and the turn written straight there; the session is then marked stale in PostgreSQL (in
the same transaction), and every replica drops such copies once Redis answers: at once when it
sees Redis come back, and about once a second otherwise (``stale``, docs/consistency.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime
from functools import partial

import orjson

from ..config import SessionConfig
from ..errors import SessionAbsent, StoreError, StoreUnavailable
from ..frozen import frozen
from ..journal import Journal, JournalUnwritable
from ..metrics import Metrics
from ..profile.cache import Owner
from ..profile.memory import ProfileMemory
from ..store.postgres import PostgresSessionStore
from ..store.redis import Committed, RedisSessionStore
from ..store.replies import Lookup
from .admin import SessionAdmin
from .cache import Ahead, SessionCache, grown
from .model import SessionKey, SessionSnapshot, Turn, utc_now_iso
from .replay import JournalReplay
from .stale import StaleCopies

log = logging.getLogger(__name__)


@frozen
class Loaded:
    snapshot: SessionSnapshot
    degraded: str | None = None  # "redis", "postgres" or "redis,postgres"
    profile: dict[str, str] | None = None  # the user's facts, when an owner was asked for


@frozen
class Recorded:
    recorded: bool
    degraded: str | None = None


class SessionService:
    def __init__(
        self,
        redis: RedisSessionStore,
        pg: PostgresSessionStore,
        cfg: SessionConfig,
        metrics: Metrics,
        journal: Journal,
    ) -> None:
        self.journal = journal
        self.redis = redis
        self.pg = pg
        self.cfg = cfg
        self.metrics = metrics
        self._recorded_in_redis = metrics.turns_recorded.labels("redis")  # looked up once
        self.cache = SessionCache(cfg.local_cache_size, cfg.local_cache_max_bytes)
        self.users = ProfileMemory(redis, pg, cfg)
        # Redis copies known to be stale, this process's and every replica's.
        self.stale = StaleCopies(redis, pg, self.cache, cfg.restore_timeout_s, self.users)
        self.replay = JournalReplay(journal, pg, self.cache, self.stale, metrics)
        # Reading and removing stored sessions and users, for the admin API.
        self.admin = SessionAdmin(redis, pg, cfg, self.cache, self.stale, self.users)
        self._late_reads: set[asyncio.Future[SessionSnapshot | None]] = set()
        redis.breaker.on_close.append(self.stale.redis_returned)
        redis.on_restart = self.stale.reconcile_now

    # --- load ----------------------------------------------------------------------------------

    async def load(
        self,
        key: SessionKey,
        *,
        new: bool = False,
        owner: Owner | None = None,
        meanwhile: Callable[[SessionSnapshot], None] | None = None,
    ) -> Loaded:
        """The session's snapshot. ``new``: the id was just made, so it exists nowhere yet.
        ``owner`` (tenant, user): the user's profile comes with it, in the same round trip.

        ``meanwhile`` (which must not raise) is called with the copy this process holds while
        the round trip that checks it is out, when there is one: the caller can work ahead
        with it. The load returns that very object when Redis confirmed it current."""
        cached = self.cache.get(key)
        try:
            if key in self.stale.local:
                await self.stale.drop_one(key)
            if owner is not None:
                await self.users.drop_if_stale(owner)
            if new:
                return await self._create(key, owner)
            if self.stale.settling:
                await self.stale.settle()
            returns = self.stale.returns
            ahead = partial(meanwhile, cached) if meanwhile and cached is not None else None
            res = await self._read(key, cached, owner, ahead)
            if self.stale.returns != returns:
                # Redis came back during this call (this call may be what found it back): what
                # it holds may be stale until the reconciliation has run. Read again after it.
                await self.stale.settle()
                cached = self.cache.get(key)
                res = await self._read(key, cached, owner)
            if res.state == "current" and cached is not None:
                return Loaded(cached, profile=await self.users.resolve(owner, res.profile))
            if res.state == "fresh" and res.snapshot is not None:
                self.cache.put(res.snapshot)
                return Loaded(res.snapshot, profile=await self.users.resolve(owner, res.profile))
            return await self._restore_or_create(key, owner)
        except StoreUnavailable:
            self.cache.discard(key)
            self.users.forget(owner)
            return await self._load_degraded(key, owner)

    async def _read(
        self,
        key: SessionKey,
        cached: SessionSnapshot | None,
        owner: Owner | None,
        meanwhile: Callable[[], None] | None = None,
    ) -> Lookup:
        """One load round trip: the session (only its version when ``cached`` is current) and
        the owner's profile."""
        return await self.redis.load(
            key,
            cached.version if cached else "",
            self.cfg.history_limit,
            owner=owner,
            known_profile=self.users.version(owner),
            meanwhile=meanwhile,
        )

    async def _fetch(self, key: SessionKey, limit: int) -> SessionSnapshot | None:
        """Read a session from PostgreSQL within the request path's bound.

        Not ``wait_for``: it waits for the cancelled read to wind down, and the driver cancels a
        query by talking to the server, which hangs as long as a frozen server does. The late
        read is left to finish (or fail) in the background instead.
        """
        task = asyncio.ensure_future(self.pg.fetch_session(key, limit))
        done, _ = await asyncio.wait({task}, timeout=self.cfg.restore_timeout_s)
        if not done:
            task.cancel()
            self._late_reads.add(task)
            task.add_done_callback(self._forget_late_read)
            raise StoreUnavailable(
                f"PostgreSQL did not answer within {self.cfg.restore_timeout_s}s"
            )
        return task.result()

    def _forget_late_read(self, task: asyncio.Future[SessionSnapshot | None]) -> None:
        self._late_reads.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not report it as never retrieved

    async def _create(
        self, key: SessionKey, owner: Owner | None = None, *, known_empty: bool = True
    ) -> Loaded:
        """A new session. ``known_empty`` False: PostgreSQL could not be read, so the session
        may have history there; its numbering then starts above any seq it can have."""
        now = utc_now_iso()
        await self.redis.seed(
            key,
            last_seq=0 if known_empty else None,
            tokens_used=0,
            message_count=0,
            created_at=now,
            updated_at=now,
            context={},
            messages=[],
            announce=True,
        )
        return await self._read_seeded(key, None, owner)

    async def _restore_or_create(self, key: SessionKey, owner: Owner | None = None) -> Loaded:
        degraded = None
        try:
            stored = await self._fetch(key, self.cfg.max_stored_messages)
        except StoreError as e:
            # Without PostgreSQL we cannot tell a lost session from a new one; start it fresh in
            # Redis so the turn is still remembered, and say so.
            log.warning(
                "restore of %s/%s skipped, PostgreSQL unavailable: %s",
                key.tenant,
                key.session_id,
                e,
            )
            stored, degraded = None, "postgres"
        if stored is None:
            created = await self._create(key, owner, known_empty=degraded is None)
            return Loaded(created.snapshot, degraded, created.profile)
        else:
            await self.redis.seed(
                key,
                last_seq=stored.last_seq,
                tokens_used=stored.tokens_used,
                message_count=stored.message_count,
                created_at=stored.created_at,
                updated_at=stored.updated_at,
                context=stored.context,
                messages=list(stored.window),
                announce=False,
            )
        return await self._read_seeded(key, degraded, owner)

    async def _read_seeded(
        self, key: SessionKey, degraded: str | None, owner: Owner | None = None
    ) -> Loaded:
        # Whoever won the race to seed, read what is there now.
        res = await self.redis.load(
            key,
            "",
            self.cfg.history_limit,
            owner=owner,
            known_profile=self.users.version(owner),
        )
        if res.snapshot is None:
            raise StoreUnavailable(f"session {key.session_id} vanished while being restored")
        self.cache.put(res.snapshot)
        return Loaded(res.snapshot, degraded, await self.users.resolve(owner, res.profile))

    async def _load_degraded(self, key: SessionKey, owner: Owner | None = None) -> Loaded:
        self.metrics.degraded.labels("redis").inc()
        try:
            stored = await self._fetch(key, self.cfg.history_limit)
        except StoreError as e:
            log.warning(
                "no history for %s/%s: Redis and PostgreSQL unavailable: %s",
                key.tenant,
                key.session_id,
                e,
            )
            return Loaded(SessionSnapshot(key=key, version=""), "redis,postgres")
        profile = await self.users.stored(owner)
        return Loaded(stored or SessionSnapshot(key=key, version=""), "redis", profile)

    # --- commit --------------------------------------------------------------------------------

    async def commit(self, turn: Turn) -> Recorded:
        ahead: list[Ahead | None] = []

        def meanwhile() -> None:
            # While the commit's round trip is out: grow the copy held here as Redis will hold
            # it if nothing else is written in between. Cached only if the reply says exactly so.
            with suppress(Exception):  # grown again after the reply, where the error belongs
                ahead.append(self.cache.grow_ahead(turn, self.cfg.history_limit))

        try:
            try:
                committed = await self.redis.commit(turn, self.cfg.max_stored_messages, meanwhile)
            except SessionAbsent:
                # Expired or flushed between load and commit: restore, then commit once more.
                await self._restore_or_create(turn.key)
                try:
                    committed = await self.redis.commit(turn, self.cfg.max_stored_messages)
                except SessionAbsent:
                    # Dropped again meanwhile (a reconciliation after Redis came back drops stale
                    # copies): the client has its answer, so write the turn straight to
                    # PostgreSQL, as while Redis is away, rather than lose it.
                    return await self._commit_degraded(turn)
        except StoreUnavailable:
            return await self._commit_degraded(turn)
        if turn.profile_patch:
            # The next load reads the new facts (and their version) with the session.
            self.users.forget(turn.profile_owner)
        self._update_cache(turn, committed, ahead[0] if ahead else None)
        if committed.recorded:
            self._recorded_in_redis.inc()
        return Recorded(committed.recorded)

    def _update_cache(self, turn: Turn, committed: Committed, ahead: Ahead | None) -> None:
        entry = self.cache.entry(turn.key)
        if entry is None or not committed.recorded:
            return
        cached, size = entry
        if (
            ahead is not None
            and ahead[0] is cached
            and ahead[1] == size
            and ahead[2].version == committed.version
            and ahead[2].last_seq == committed.first_seq + 1
        ):
            # Grown while the reply was out, from this very copy, as the reply now confirms.
            self.cache.put(ahead[2], ahead[3])
            return
        epoch, _, n = committed.version.rpartition(":")
        if cached.version != f"{epoch}:{int(n) - 1}":
            # Another turn landed in between: the next load fetches the real window.
            self.cache.discard(turn.key)
            return
        built = grown(
            cached, size, turn, committed.version, committed.first_seq, self.cfg.history_limit
        )
        self.cache.put(*built)

    async def _commit_degraded(self, turn: Turn) -> Recorded:
        self.cache.discard(turn.key)
        self.stale.local.add(turn.key)
        if turn.profile_patch:
            self.users.mark_stale(turn.profile_owner)
        payload = orjson.loads(turn.outbox_payload())
        # Redis's clock (as last measured), which deletion tombstones are compared with.
        payload["asked_ms"] = self.redis.clock.to_redis_ms(
            int(datetime.fromisoformat(turn.user.timestamp).timestamp() * 1000)
        )
        try:
            await self.pg.record_turn(turn.key.tenant, turn.key.session_id, payload)
        except StoreError as e:
            try:
                await self.journal.append(turn.key.tenant, turn.key.session_id, payload)
            except JournalUnwritable as refused:
                # Reported to the client as unrecorded (the disk is never filled, a failed write
                # is cut off again).
                log.error(
                    "turn of %s/%s not recorded: %s", turn.key.tenant, turn.key.session_id, refused
                )
                raise
            log.warning(
                "turn of %s/%s journaled locally: Redis and PostgreSQL unavailable: %s",
                turn.key.tenant,
                turn.key.session_id,
                e,
            )
            self.metrics.turns_recorded.labels("journal").inc()
            return Recorded(True, "redis,postgres")
        self.metrics.turns_recorded.labels("postgres").inc()
        return Recorded(True, "redis")

    # --- background work and shutdown ---------------------------------------------------------

    def start(self) -> None:
        self.replay.start()
        self.stale.start()

    async def close(self) -> None:
        await self.replay.close()
        await self.stale.close()
