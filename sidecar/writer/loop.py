"""The outbox writer: turns committed to Redis reach PostgreSQL in batches, durably.

Entries are read with a consumer group and acknowledged only after their batch is committed in
PostgreSQL; the writes are idempotent, so an entry delivered twice (a crash between commit and
acknowledgement, or a claim from a dead consumer) never doubles rows or tokens. Transient errors
are retried with backoff for as long as it takes (the entries are safe in Redis meanwhile); an
entry that fails for a data reason is retried a bounded number of times on its own, then moved to
the dead-letter stream so it never blocks the entries behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from .. import tracing
from ..config import WriterConfig
from ..errors import StoreUnavailable
from ..lease import RENEW_EVERY_S, ConsumerLease, consumer_name
from ..metrics import Metrics
from ..outbox import DISCOVER_EVERY_S, Outbox
from ..store.batch import OutboxEvent
from ..store.client import REDIS_ERRORS, RedisClient
from ..store.keys import KeySpace
from ..store.postgres import PostgresSessionStore
from ..tracing import Tracer
from .retries import STORE_ERRORS, WriterRetries
from .status import WriterHealth, WriterStatus

log = logging.getLogger(__package__)  # one logger for the whole writer

# What a failed measurement of the outbox's length may raise.
LAG_ERRORS: tuple[type[BaseException], ...] = (*REDIS_ERRORS, TimeoutError)
# How long a batch that is not full waits for company: as long as the recent rate of entries
# takes to fill it, within these bounds. Under load the batches grow with the throughput
# (each costs a PostgreSQL transaction and a few Redis calls, whatever its size); a lone
# entry waits at most MAX_LINGER_S.
MIN_LINGER_S = 0.02
MAX_LINGER_S = 0.1
BACKLOG_BATCHES = 8
LAG_EVERY_S = 1.0  # how often a busy writer measures the outbox length


class OutboxWriter:
    def __init__(
        self,
        redis: RedisClient,
        keys: KeySpace,
        pg: PostgresSessionStore,
        cfg: WriterConfig,
        metrics: Metrics,
        *,
        migrate: bool,
        tracer: Tracer | None = None,
        lease: ConsumerLease | None = None,
    ) -> None:
        self.pg = pg
        self.cfg = cfg
        self.metrics = metrics
        self.migrate = migrate
        self.tracer = tracer
        self.lease = lease or ConsumerLease(redis, keys.prefix, consumer_name(cfg.consumer))
        self.outbox = Outbox(redis, keys, cfg, metrics, self.lease.name, self._sleep)
        # This consumer's own unacknowledged entries (a predecessor's under the same name, after
        # a crash) are read before anything new.
        self._own_pending = True
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._renewing: asyncio.Task[None] | None = None
        self._lag_measured = 0.0
        self._wrote_since_lag = False  # entries written since the lag was last measured
        self._rate = 0.0  # entries per second lately (see ``_linger_s``)
        self._batch = cfg.batch_size  # the next read's size (see ``step``)
        self._stepped_at = time.monotonic()
        self.schema_ready = asyncio.Event()
        self.status = WriterStatus()
        self.retries = WriterRetries(
            self._stop, self._sleep, self.status, metrics, cfg.max_data_attempts
        )

    # --- what it shows ----------------------------------------------------------------------

    def health(self) -> WriterHealth:
        return self.status.health()

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-writer")
        self._renewing = asyncio.create_task(self.lease.keep(self._stop), name="consumer-lease")

    async def stop(self, timeout_s: float) -> None:
        """Stop taking new entries, finish what is in hand (bounded), then return."""
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                log.warning(
                    "writer did not finish within %.1fs; unwritten turns stay in the outbox",
                    timeout_s,
                )
                self._task.cancel()
                # Bounded: cancelling a call to a frozen PostgreSQL can itself wait on it.
                await asyncio.wait({self._task}, timeout=1.0)
        if self._renewing is not None:
            # The renewal loop ends by itself on the stop flag. Cancelling alone is not enough:
            # a cancellation that lands inside a Redis call can come back as a timeout error,
            # which the loop treats as a failed renewal and then sleeps on.
            await asyncio.wait({self._renewing}, timeout=RENEW_EVERY_S + 1.0)
            self._renewing.cancel()
            await asyncio.wait({self._renewing}, timeout=1.0)
        await self.lease.release()

    # --- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        # Each failing cycle is retried with backoff until one succeeds (which resets the
        # backoff) or the writer is stopped.
        while not self._stop.is_set():
            async for attempt in self.retries.cycle():
                with attempt:
                    if not self.lease.held:
                        # ConsumerNameInUse when a live process has the name: retried (and
                        # reported failing) until that process goes, never consumed under it.
                        await self.lease.acquire()
                        self._own_pending = True
                    if not self.schema_ready.is_set():
                        await self._prepare()
                    await self.step(block=True)
                    self.status.succeeded()
        # On shutdown: what this consumer holds, then one more batch of what just arrived.
        # Bounded on purpose: other replicas keep committing, and whatever is left stays safe
        # in the outbox for them.
        if not self.lease.held:
            return
        try:
            held = await self.outbox.read(block=False, count=self.cfg.batch_size, start="0")
            if held:
                await self.write(held)
            fresh = await self.outbox.read(block=False, count=self.cfg.batch_size)
            if fresh:
                await self.write(fresh)
        except STORE_ERRORS as e:
            log.warning("writer: final flush stopped: %s", e)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early when stopped (in this task: wait_for would make one per sleep)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    async def _prepare(self) -> None:
        if self.migrate:
            applied = await self.pg.migrate()
            if applied:
                log.info("migrations applied: %s", ", ".join(applied))
        await self.outbox.ensure_groups()
        await self.outbox.discover()
        self.schema_ready.set()

    async def step(self, *, block: bool) -> int:
        """Read one batch and write it; returns its size. This consumer's own pending entries
        come first (a predecessor under the same name crashed holding them), then entries of
        consumers idle for ``claim_idle_ms``, then new ones."""
        events: list[OutboxEvent] = []
        if self._own_pending:
            events = await self.outbox.read(block=False, count=self.cfg.batch_size, start="0")
            if events:
                log.info("writer: resuming %d entries left pending under this name", len(events))
            else:
                self._own_pending = False
        if not events:
            events = await self.outbox.claim_stale()
        if not events:
            # A backlog (PostgreSQL was away, or a burst) is read in ever larger batches, up to
            # BACKLOG_BATCHES times the configured size: fewer transactions to catch up.
            size = self._batch
            events = await self.outbox.read(block=block, count=size)
            self._batch = (
                min(size * 2, self.cfg.batch_size * BACKLOG_BATCHES)
                if len(events) >= size
                else self.cfg.batch_size
            )
            if events and block and len(events) < size:
                # Wait a moment so that one transaction carries many turns instead of one each.
                await self._sleep(self._linger_s(len(events)))
                events += await self.outbox.read(block=False, count=size - len(events))
        # A cluster read takes up to a batch from each stream: written a batch at a time.
        limit = self.cfg.batch_size * BACKLOG_BATCHES
        for i in range(0, len(events), limit):
            await self.write(events[i : i + limit])
        self._observe_rate(len(events))
        # Measured once a second, busy or idle (an idle writer's every read would be a
        # pipeline of one XLEN per stream), and as soon as a read finds the outbox drained.
        if events:
            self._wrote_since_lag = True
        elif self._wrote_since_lag:
            await self.measure_lag()
        if time.monotonic() - self._lag_measured >= LAG_EVERY_S:
            await self.measure_lag()
        if time.monotonic() - self.outbox.discovered_at >= DISCOVER_EVERY_S:
            await self.outbox.discover()
        return len(events)

    def _linger_s(self, have: int) -> float:
        """How long a batch of ``have`` entries waits: the time the recent rate takes to fill it."""
        if self._rate <= 0:
            return MIN_LINGER_S
        return min(MAX_LINGER_S, max(MIN_LINGER_S, (self.cfg.batch_size - have) / self._rate))

    def _observe_rate(self, written: int) -> None:
        """Entries per second over the last step, smoothed over a few steps."""
        now = time.monotonic()
        elapsed, self._stepped_at = now - self._stepped_at, now
        if elapsed > 0:
            self._rate += 0.3 * (written / elapsed - self._rate)

    async def measure_lag(self) -> None:
        """Turns waiting for PostgreSQL (readiness and the outbox lag gauge). A failed
        measurement leaves the lag unknown (None), never the last figure seen."""
        self._lag_measured = time.monotonic()
        self._wrote_since_lag = False
        try:
            lag = await self.outbox.length()
        except LAG_ERRORS as e:
            self.status.lag, self.status.lag_error = None, f"{type(e).__name__}: {e}"
            self.metrics.outbox_lag_unknown.set(1)
            raise
        self.status.lag, self.status.lag_error = lag, None
        self.metrics.outbox_lag.set(lag)
        self.metrics.outbox_lag_unknown.set(0)

    # --- writing -------------------------------------------------------------------------------

    async def write(self, events: list[OutboxEvent]) -> None:
        with tracing.span("writer.batch", self.tracer, events=len(events)):
            await self._write(events)

    async def _write(self, events: list[OutboxEvent]) -> None:
        try:
            async for attempt in self.retries.outage():
                with attempt:
                    await self.pg.write(events)
        except StoreUnavailable:
            raise
        except Exception as e:
            log.warning(
                "writer: batch of %d rejected (%s: %s); writing its entries one by one",
                len(events),
                type(e).__name__,
                getattr(e, "sqlstate", None) or e,
            )
            await self._write_one_by_one(events)
            return
        self.metrics.writer_batches.inc()
        self.metrics.writer_events.inc(len(events))
        await self.outbox.ack(events)

    async def _write_one_by_one(self, events: list[OutboxEvent]) -> None:
        for event in events:
            try:
                async for data_attempt in self.retries.data_errors():
                    with data_attempt:
                        async for attempt in self.retries.outage():
                            with attempt:
                                await self.pg.write([event])
            except StoreUnavailable:
                raise
            except Exception as e:
                await self.outbox.dead_letter(event, e)
            else:
                self.metrics.writer_events.inc()
            await self.outbox.ack([event])
