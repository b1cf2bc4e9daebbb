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
import os
import socket
import time
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
    wait_none,
)

from .config import WriterConfig
from .errors import StoreError, StoreUnavailable
from .metrics import Metrics
from .store.batch import OutboxEvent
from .store.keys import KeySpace
from .store.postgres import PostgresSessionStore
from .store.redis import as_str

log = logging.getLogger(__name__)

GROUP = "pg-writer"
# Failures of either store: the writer backs off and tries again.
STORE_ERRORS: tuple[type[BaseException], ...] = (RedisError, StoreError)
LINGER_S = 0.02  # how long a small batch waits for company
LAG_EVERY_S = 1.0  # how often a busy writer measures the outbox length

T = TypeVar("T")


def decode_entry(stream: str, entry_id: str, fields: dict[Any, Any]) -> OutboxEvent:
    f = {as_str(k): v for k, v in fields.items()}
    kind = as_str(f.get("kind", b"turn"))
    return OutboxEvent(
        stream=stream,
        entry_id=entry_id,
        kind="session" if kind == "session" else "turn",
        seq=int(f.get("seq", 0)),
        data=orjson.loads(f["data"]),
    )


class OutboxWriter:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: KeySpace,
        pg: PostgresSessionStore,
        cfg: WriterConfig,
        metrics: Metrics,
        *,
        migrate: bool,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.pg = pg
        self.cfg = cfg
        self.metrics = metrics
        self.migrate = migrate
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"
        self.streams = keys.outboxes()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_claim = 0.0
        self._lag_measured = 0.0
        self.schema_ready = asyncio.Event()
        self.lag = 0

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-writer")

    async def stop(self, timeout_s: float) -> None:
        """Stop taking new entries, finish what is in hand (bounded), then return."""
        self._stop.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            log.warning(
                "writer did not finish within %.1fs; unwritten turns stay in the outbox", timeout_s
            )
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _stopping(self, _state: RetryCallState | None = None) -> bool:
        return self._stop.is_set()

    # --- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        # Each failing cycle is retried with backoff until one succeeds (which resets the
        # backoff) or the writer is stopped.
        while not self._stop.is_set():
            async for attempt in AsyncRetrying(
                stop=self._stopping,
                wait=wait_exponential_jitter(multiplier=0.1, max=5.0, jitter=0.1),
                retry=retry_if_exception_type(Exception),
                before_sleep=self._log_cycle_failure,
                sleep=self._sleep,
                retry_error_callback=lambda _state: None,
            ):
                with attempt:
                    if not self.schema_ready.is_set():
                        await self._prepare()
                    await self.step(block=True)
        # On shutdown: what this consumer holds, then one more batch of what just arrived.
        # Bounded on purpose: other replicas keep committing, and whatever is left stays safe
        # in the outbox for them.
        try:
            held = await self._read(block=False, count=self.cfg.batch_size, start="0")
            if held:
                await self.write(held)
            fresh = await self._read(block=False, count=self.cfg.batch_size)
            if fresh:
                await self.write(fresh)
        except STORE_ERRORS as e:
            log.warning("writer: final flush stopped: %s", e)

    def _log_cycle_failure(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.upcoming_sleep
        if isinstance(exc, STORE_ERRORS):
            log.warning("writer: %s: %s; retrying in %.1fs", type(exc).__name__, exc, wait)
        else:
            # A bug must not silently end the only thing that moves turns to PostgreSQL:
            # the entries stay pending in Redis, so log loudly and keep going.
            log.error("writer: unexpected error; retrying in %.1fs", wait, exc_info=exc)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _prepare(self) -> None:
        if self.migrate:
            applied = await self.pg.migrate()
            if applied:
                log.info("migrations applied: %s", ", ".join(applied))
        await self.ensure_groups()
        self.schema_ready.set()

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            await self._grouped(self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True))

    async def _grouped(self, command: Awaitable[T]) -> T | None:
        """Run a consumer-group command. ``None`` when the group was missing (NOGROUP: the
        outbox vanished in a FLUSHALL, a failover or a fresh Redis; it is recreated and the
        writer carries on) or, creating it, was there already (BUSYGROUP)."""
        try:
            return await command
        except ResponseError as e:
            if str(e).startswith("BUSYGROUP"):
                return None
            if not str(e).startswith("NOGROUP"):
                raise
        log.warning("writer: outbox group missing, recreating it")
        await self.ensure_groups()
        return None

    async def step(self, *, block: bool) -> int:
        """Read one batch (claimed entries of dead consumers first) and write it. Returns its size."""
        events = await self._claim_stale()
        if not events:
            events = await self._read(block=block, count=self.cfg.batch_size)
            if events and block and len(events) < self.cfg.batch_size:
                # Under a steady trickle of turns, wait a moment so that one transaction
                # carries many of them instead of one each.
                await self._sleep(LINGER_S)
                events += await self._read(block=False, count=self.cfg.batch_size - len(events))
        if events:
            await self.write(events)
        if not events or time.monotonic() - self._lag_measured >= LAG_EVERY_S:
            await self.measure_lag()
        return len(events)

    async def _read(self, *, block: bool, count: int, start: str = ">") -> list[OutboxEvent]:
        """New entries (``>``), or this consumer's own unacknowledged ones (``0``)."""
        reply = await self._grouped(
            self.redis.xreadgroup(
                GROUP,
                self.consumer,
                dict.fromkeys(self.streams, start),
                count=count,
                block=self.cfg.block_ms if block else None,
            )
        )
        return await self._decode(reply)

    async def _decode(self, reply: Any) -> list[OutboxEvent]:
        events = []
        for stream, entries in reply or []:
            for eid, fields in entries:
                if not fields:  # an entry deleted while pending shows up without fields
                    continue
                try:
                    events.append(decode_entry(as_str(stream), as_str(eid), fields))
                except (KeyError, ValueError, TypeError) as e:
                    # Unreadable (another version's format, say): set aside, never a blocker.
                    await self._dead_letter_raw(as_str(stream), as_str(eid), fields, e)
        return events

    async def _claim_stale(self) -> list[OutboxEvent]:
        now = time.monotonic()
        if now - self._last_claim < min(self.cfg.claim_idle_ms / 2000, 5.0):
            return []
        self._last_claim = now
        claimed: list[OutboxEvent] = []
        for stream in self.streams:
            reply = await self._grouped(
                self.redis.xautoclaim(
                    stream,
                    GROUP,
                    self.consumer,
                    self.cfg.claim_idle_ms,
                    "0-0",
                    count=self.cfg.batch_size,
                )
            )
            if reply is None:
                continue
            claimed += await self._decode([(stream, reply[1])])
            if len(claimed) >= self.cfg.batch_size:
                break
        if claimed:
            log.info("writer: claimed %d entries from idle consumers", len(claimed))
        await self._forget_gone_consumers()
        return claimed

    async def _forget_gone_consumers(self) -> None:
        """Drop consumers (replicas gone by) that hold nothing and have been idle for long."""
        idle_ms = max(self.cfg.claim_idle_ms * 10, 3_600_000)
        for stream in self.streams:
            try:
                consumers = await self.redis.xinfo_consumers(stream, GROUP)
            except ResponseError:
                continue
            for c in consumers:
                name = as_str(c["name"])
                if name != self.consumer and int(c["pending"]) == 0 and int(c["idle"]) > idle_ms:
                    await self.redis.xgroup_delconsumer(stream, GROUP, name)

    async def measure_lag(self) -> None:
        """Turns waiting for PostgreSQL: acknowledged entries are deleted, so it is the length."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xlen(stream)
            lengths = await pipe.execute()
        self.lag = sum(int(n) for n in lengths)
        self._lag_measured = time.monotonic()
        self.metrics.outbox_lag.set(self.lag)

    # --- writing -------------------------------------------------------------------------------

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=self._stopping,
            wait=wait_exponential_jitter(multiplier=0.1, max=5.0, jitter=0.5),
            retry=retry_if_exception_type(StoreUnavailable),
            before_sleep=self._log_retry,
            reraise=True,
        )

    def _log_retry(self, state: RetryCallState) -> None:
        self.metrics.writer_retries.labels("postgres").inc()
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "writer: PostgreSQL write failed (%s), attempt %d; retrying",
            type(exc).__name__,
            state.attempt_number,
        )

    async def write(self, events: list[OutboxEvent]) -> None:
        try:
            async for attempt in self._retrying():
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
        await self._ack(events)

    def _retrying_data_errors(self) -> AsyncRetrying:
        """Whatever is not a passing outage is about the entry: a bounded number of attempts."""
        return AsyncRetrying(
            # Not cut short by a shutdown: the attempts follow each other at once, and stopping
            # early would dead-letter an entry that was never given its chances.
            stop=stop_after_attempt(self.cfg.max_data_attempts),
            wait=wait_none(),
            retry=retry_if_not_exception_type(StoreUnavailable),
            reraise=True,
        )

    async def _write_one_by_one(self, events: list[OutboxEvent]) -> None:
        for event in events:
            try:
                async for data_attempt in self._retrying_data_errors():
                    with data_attempt:
                        async for attempt in self._retrying():
                            with attempt:
                                await self.pg.write([event])
            except StoreUnavailable:
                raise
            except Exception as e:
                await self._dead_letter(event, e)
            else:
                self.metrics.writer_events.inc()
            await self._ack([event])

    async def _dead_letter(self, event: OutboxEvent, error: Exception) -> None:
        d = event.data
        log.error(
            "writer: dead-lettered %s entry %s of session %s/%s after %d attempts: %s",
            event.kind,
            event.entry_id,
            d.get("tenant"),
            d.get("session_id"),
            self.cfg.max_data_attempts,
            error,
        )
        await self.redis.xadd(
            self.keys.dead_letters(),
            {
                "stream": event.stream,
                "entry_id": event.entry_id,
                "kind": event.kind,
                "seq": event.seq,
                "data": orjson.dumps(event.data),
                "error": f"{type(error).__name__}: {error}",
            },
        )
        self.metrics.dead_letters.inc()

    async def _dead_letter_raw(
        self, stream: str, entry_id: str, fields: dict[Any, Any], error: Exception
    ) -> None:
        log.error("writer: dead-lettered unreadable entry %s of %s: %r", entry_id, stream, error)
        await self.redis.xadd(
            self.keys.dead_letters(),
            {
                "stream": stream,
                "entry_id": entry_id,
                **{f"field:{as_str(k)}": v for k, v in fields.items()},
                "error": f"{type(error).__name__}: {error}",
            },
        )
        self.metrics.dead_letters.inc()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(stream, GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()

    async def _ack(self, events: Iterable[OutboxEvent]) -> None:
        by_stream: dict[str, list[str]] = {}
        for e in events:
            by_stream.setdefault(e.stream, []).append(e.entry_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, GROUP, *ids)
                pipe.xdel(stream, *ids)
            await pipe.execute()
