"""Redis copies known to be stale, dropped so that they are restored from PostgreSQL.

A copy goes stale when its session's turns are written elsewhere (straight to PostgreSQL while
Redis was away, a journal replay, a renumbering) or the session is deleted while Redis is away;
a user's profile copy, when such a turn stated facts. Such writes mark the session in PostgreSQL
(``redis_stale``; the user in ``redis_stale_profiles``), which every replica reads: at once
when it sees Redis come back (its breaker closes, or Redis lost its scripts: a restart or a
failover), and about once a second otherwise. The replica that made the writes also keeps its
own list, and drops those copies before serving the sessions again. See docs/consistency.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from ..errors import StoreError, StoreUnavailable
from ..profile.memory import ProfileMemory
from ..store.postgres import PostgresSessionStore
from ..store.redis import RedisSessionStore
from ..store.seqs import StaleSession
from .cache import SessionCache
from .model import SessionKey

log = logging.getLogger(__name__)

EVERY_S = 1.0  # how often the shared list of stale Redis copies is read
BATCH = 500
CLOSE_WITHIN_S = 2.0  # a query stuck on a frozen PostgreSQL must not hold up shutdown


class StaleCopies:
    def __init__(
        self,
        redis: RedisSessionStore,
        pg: PostgresSessionStore,
        cache: SessionCache,
        restore_timeout_s: float,
        profiles: ProfileMemory | None = None,
    ) -> None:
        self.redis = redis
        self.pg = pg
        self.cache = cache
        self.profiles = profiles
        self.restore_timeout_s = restore_timeout_s
        # Sessions this process wrote to PostgreSQL while Redis was away.
        self.local: set[SessionKey] = set()
        self._reconciling: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # How many times Redis was seen coming back: a load that spans a change re-reads after
        # the reconciliation (the load itself may have been the call that found Redis back).
        self.returns = 0
        self._settling: asyncio.Task[None] | None = None  # the reconciliation after a return

    def start(self) -> None:
        self._spawn(self._loop(), "reconcile")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=CLOSE_WITHIN_S)
            if pending:
                log.warning("reconciliation still winding down at shutdown; left behind")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- this process's list ---------------------------------------------------------------------

    async def drop_one(self, key: SessionKey, *, probe: bool = False) -> None:
        """Drop a session's stale Redis copy before serving it (it then restores from PostgreSQL).
        Taken out of the set first, so a concurrent request never drops a copy restored since."""
        self.local.discard(key)
        self.cache.discard(key)
        try:
            await self.redis.delete(key, probe=probe)
        except StoreUnavailable:
            self.local.add(key)
            raise

    async def drop_local(self) -> None:
        """Drop the Redis copies of every session written elsewhere meanwhile, one at a time."""
        while self.local:
            try:
                await self.drop_one(next(iter(self.local)), probe=True)
            except StoreUnavailable:
                return

    # --- every replica's list ---------------------------------------------------------------------

    def redis_returned(self) -> None:
        log.info("Redis answers again")
        self.returns += 1
        self._settling = self._start()

    @property
    def settling(self) -> bool:
        """A reconciliation started because Redis came back is still running."""
        return self._settling is not None and not self._settling.done()

    async def settle(self) -> None:
        """Wait for the reconciliation after Redis came back, bounded like a restore."""
        if self._settling is not None and not self._settling.done():
            await asyncio.wait({self._settling}, timeout=self.restore_timeout_s)

    def _start(self) -> asyncio.Task[None]:
        """One reconciliation at a time; callers arriving meanwhile share it."""
        if self._reconciling is None or self._reconciling.done():
            self._reconciling = self._spawn(self._reconcile(), "reconcile-now")
        return self._reconciling

    async def reconcile_now(self) -> None:
        """Drop the stale copies before serving from a Redis that just came back (restarted or
        failed over), bounded like a restore: a slow PostgreSQL delays it to the background."""
        if asyncio.current_task() is self._reconciling:
            return  # the reconciliation itself met the restart: it is already running
        self.returns += 1
        self._settling = self._start()
        await asyncio.wait({self._settling}, timeout=self.restore_timeout_s)

    async def _reconcile(self) -> None:
        """Drop every Redis copy known to be stale: this process's list, then the shared one."""
        try:
            await self.drop_local()
            while True:
                stale = await self.pg.stale_sessions(BATCH)
                if not stale:
                    break
                handled = await self._drop_shared(stale)
                await self.pg.clear_stale(handled)
                if len(handled) < len(stale):
                    return  # Redis went away again; the next round goes on
            if self.profiles is not None:
                await self._drop_profiles(self.profiles)
        except StoreError as e:
            log.debug("reconciliation postponed, PostgreSQL unavailable: %s", e)

    async def _drop_shared(self, stale: list[StaleSession]) -> list[StaleSession]:
        handled = []
        for mark in stale:
            self.cache.discard(mark.key)
            # As probes: this runs when Redis has just answered again, often inside the very
            # call that found it back (NOSCRIPT), while the breaker still lets that call alone
            # through. Skipped, the stale copies would be served.
            try:
                if mark.deleted_at_ms is not None:
                    await self.redis.erase(mark.key, mark.deleted_at_ms, probe=True)
                else:
                    await self.redis.delete(mark.key, probe=True)
            except StoreUnavailable:
                break
            handled.append(mark)
        if handled:
            log.info("dropped %d stale Redis copies", len(handled))
        return handled

    async def _drop_profiles(self, profiles: ProfileMemory) -> None:
        while stale := await self.pg.stale_profiles(BATCH):
            handled = []
            for mark in stale:
                try:
                    await profiles.drop(mark.owner)
                except StoreUnavailable:
                    break
                handled.append(mark)
            await self.pg.clear_stale_profiles(handled)
            if len(handled) < len(stale):
                return  # Redis went away again; the next round goes on
            log.info("dropped %d stale Redis profile copies", len(handled))

    async def _loop(self) -> None:
        """About once a second: re-measure Redis's clock and drop copies marked stale by any
        replica (one cheap query of a table that is empty unless there was an outage)."""
        while True:
            await asyncio.sleep(EVERY_S)
            if self.redis.breaker.is_open:
                continue
            try:
                await self.redis.sync_clock()
                await self._start()
            except StoreUnavailable:
                continue
            except Exception:
                # A bug must not end the loop that keeps replicas from serving stale copies.
                log.exception("reconciliation failed unexpectedly")
