"""The local journal's way back: turns journaled while neither store took them are replayed into
PostgreSQL once it answers, and their sessions' Redis copies are then stale."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import StoreError, StoreRejected
from ..journal import Journal
from ..metrics import Metrics
from ..store.postgres import PostgresSessionStore
from .cache import SessionCache
from .model import SessionKey
from .stale import CLOSE_WITHIN_S, StaleCopies

log = logging.getLogger(__name__)

REPLAY_EVERY_S = 2.0


class JournalReplay:
    def __init__(
        self,
        journal: Journal,
        pg: PostgresSessionStore,
        cache: SessionCache,
        stale: StaleCopies,
        metrics: Metrics,
    ) -> None:
        self.journal = journal
        self.pg = pg
        self.cache = cache
        self.stale = stale
        self.metrics = metrics
        self._task: asyncio.Task[None] | None = None

    async def replay(self) -> int:
        """Write journaled turns to PostgreSQL; their sessions' Redis copies are then stale."""
        touched: set[SessionKey] = set()

        async def write(tenant: str, session_id: str, payload: dict[str, Any]) -> None:
            try:
                await self.pg.record_turn(tenant, session_id, payload)
            except StoreRejected as e:
                # This turn will never fit; keep it aside rather than block the others.
                log.error(
                    "journal: turn of %s/%s rejected by PostgreSQL (%s); kept in %s",
                    tenant,
                    session_id,
                    e,
                    self.journal.rejected,
                )
                await self.journal.reject(tenant, session_id, payload, str(e))
                return
            touched.add(SessionKey(tenant, session_id))

        try:
            count = await self.journal.replay(write)
        finally:
            self.stale.local |= touched
            for key in touched:
                self.cache.discard(key)
        if count:
            self.metrics.journal_replayed.inc(count)
            log.info("journal: %d turns replayed into PostgreSQL", count)
            await self.stale.drop_local()
        return count

    async def _loop(self, interval_s: float = REPLAY_EVERY_S) -> None:
        """Replay the journal whenever it holds turns and PostgreSQL answers."""
        while True:
            await asyncio.sleep(interval_s)
            if not self.journal.pending():
                continue
            try:
                await self.replay()
            except StoreError as e:
                log.debug("journal replay postponed: %s", e)
            except Exception:
                # Not a store outage (a file error, an entry of an unknown shape): the loop must
                # live on, or the journal's turns wait for a restart that meets the same line.
                log.exception("journal replay failed; retrying")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="journal-replay")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        # Bounded: a cancellation swallowed inside a store call must not hold up shutdown.
        _, pending = await asyncio.wait({task}, timeout=CLOSE_WITHIN_S)
        if pending:
            log.warning("journal replay still winding down at shutdown; left behind")
