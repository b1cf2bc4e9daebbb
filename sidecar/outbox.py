"""The Redis side of the outbox: its partition streams read through one consumer group
(new entries, this consumer's own pending ones, entries claimed from consumers gone idle),
acknowledged once written, and dead-lettered when they cannot be.

On one Redis node every stream is read in one blocking ``XREADGROUP``; on a Redis Cluster each
stream lives in its own slot, so each is read on its own (pipelined: one round trip per master)
and an idle writer polls. Streams are found by ``SCAN`` as well as named by the partition count,
so entries written under another count are drained, never orphaned."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from .config import WriterConfig
from .metrics import Metrics
from .store.batch import OutboxEvent
from .store.client import RedisClient
from .store.keys import KeySpace
from .store.replies import as_str

log = logging.getLogger(__name__)

GROUP = "pg-writer"
DISCOVER_EVERY_S = 30.0  # how often the writer looks for outbox streams it does not know
# How often consumers gone by are looked for: one XINFO per stream, for consumers idle an hour
# at least, so a minute late costs nothing (asked with every claim, it took ~4 % of the
# writer's CPU under load).
FORGET_EVERY_S = 60.0
IDLE_POLL_S = 0.05  # cluster: how long an idle writer waits before polling the streams again

T = TypeVar("T")


def decode_entry(stream: str, entry_id: str, fields: dict[Any, Any]) -> OutboxEvent:
    # The writer's client answers bytes, so the field names are looked up as they come (no
    # dict rebuilt per entry); a client that decodes answers str, turned into bytes here.
    if b"data" not in fields:
        fields = {k.encode() if isinstance(k, str) else k: v for k, v in fields.items()}
    data = orjson.loads(fields[b"data"])
    asked = fields.get(b"asked")
    if asked is not None:  # when the turn was asked, Redis's clock (what tombstones compare with)
        data["asked_ms"] = int(asked)
    kind = fields.get(b"kind", b"turn")
    return OutboxEvent(
        stream=stream,
        entry_id=entry_id,
        kind="session" if kind in (b"session", "session") else "turn",
        seq=int(fields.get(b"seq", 0)),
        data=data,
    )


# Acknowledges and deletes written entries, every stream's in one call. KEYS: the streams;
# ARGV: the group, then for each stream the number of its ids, then the ids. Sent whole (EVAL,
# cached by Redis after the first call): no NOSCRIPT to handle, and what it is shows in MONITOR
# beside the request path's EVALSHAs.
_ACK = """
local at = 2
for _, stream in ipairs(KEYS) do
  local n = tonumber(ARGV[at])
  -- in slices: unpack() takes at most a few thousand values
  for first = at + 1, at + n, 1000 do
    local last = math.min(first + 999, at + n)
    redis.call('XACK', stream, ARGV[1], unpack(ARGV, first, last))
    redis.call('XDEL', stream, unpack(ARGV, first, last))
  end
  at = at + n + 1
end
return at - 2
"""


class Outbox:
    """The outbox streams as one consumer of the writers' group sees them."""

    def __init__(
        self,
        redis: RedisClient,
        keys: KeySpace,
        cfg: WriterConfig,
        metrics: Metrics,
        consumer: str,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.cfg = cfg
        self.metrics = metrics
        self.consumer = consumer
        self.sleep = sleep  # the writer's: returns early when it stops
        # A cluster serves each stream from its own slot: no multi-stream read there.
        self.cluster = isinstance(redis, RedisCluster)
        # Its own partitions' streams, and any other found in Redis (another partition count).
        self.streams = keys.outboxes()
        self.discovered_at = 0.0
        self._last_claim = 0.0
        self._last_forget = 0.0

    async def discover(self) -> None:
        """Read every outbox stream there is, not only this partition count's: entries written
        under another count (before a change of ``redis.partitions``, or by replicas not yet
        restarted with it) are drained as well, never orphaned."""
        found = set(self.keys.outboxes())
        async for key in self.redis.scan_iter(
            match=self.keys.outbox_pattern(), count=1000, _type="stream"
        ):
            found.add(as_str(key))
        new = sorted(found - set(self.streams))
        self.streams = [*self.streams, *new]
        self.discovered_at = time.monotonic()
        if new:
            log.info("outbox: reading %d more streams: %s", len(new), ", ".join(new[:5]))
            await self.ensure_groups(new)

    async def ensure_groups(self, streams: list[str] | None = None) -> None:
        for stream in self.streams if streams is None else streams:
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
        log.warning("outbox: group missing, recreating it")
        await self.ensure_groups()
        return None

    async def read(self, *, block: bool, count: int, start: str = ">") -> list[OutboxEvent]:
        """New entries (``>``), or this consumer's own unacknowledged ones (``0``)."""
        if self.cluster:
            return await self._read_each(block=block, count=count, start=start)
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

    async def _read_each(self, *, block: bool, count: int, start: str) -> list[OutboxEvent]:
        """Cluster: one read per stream (each in its own slot), pipelined, so one round trip per
        master; an idle writer polls every ``IDLE_POLL_S`` instead of blocking."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xreadgroup(GROUP, self.consumer, {stream: start}, count=count)
            replies = await pipe.execute(raise_on_error=False)
        events: list[OutboxEvent] = []
        missing = False
        for reply in replies:
            if isinstance(reply, ResponseError) and str(reply).startswith("NOGROUP"):
                missing = True
            elif isinstance(reply, BaseException):
                raise reply
            else:
                events += await self._decode(reply)
        if missing:
            log.warning("outbox: group missing, recreating it")
            await self.ensure_groups()
        if not events and block:
            await self.sleep(IDLE_POLL_S)
        return events

    async def _decode(self, reply: Any) -> list[OutboxEvent]:
        events = []
        for raw_stream, entries in reply or []:
            stream = as_str(raw_stream)
            for eid, fields in entries:
                if not fields:
                    # Deleted while pending (written and deleted by another consumer that had
                    # claimed it): nothing to write, but it must leave this pending list.
                    await self.redis.xack(stream, GROUP, as_str(eid))
                    continue
                try:
                    events.append(decode_entry(stream, as_str(eid), fields))
                except (KeyError, ValueError, TypeError) as e:
                    # Unreadable (another version's format, say): set aside, never a blocker.
                    await self._dead_letter_raw(stream, as_str(eid), fields, e)
        return events

    async def claim_stale(self) -> list[OutboxEvent]:
        now = time.monotonic()
        if now - self._last_claim < min(self.cfg.claim_idle_ms / 2000, 5.0):
            return []
        self._last_claim = now
        # Every stream in one pipeline (one round trip per master), not a round trip each: with
        # 64 partitions those were most of what claiming cost.
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xautoclaim(
                    stream,
                    GROUP,
                    self.consumer,
                    self.cfg.claim_idle_ms,
                    "0-0",
                    count=self.cfg.batch_size,
                )
            replies = await pipe.execute(raise_on_error=False)
        claimed: list[OutboxEvent] = []
        missing = False
        for stream, reply in zip(self.streams, replies, strict=True):
            if isinstance(reply, ResponseError) and str(reply).startswith("NOGROUP"):
                missing = True  # the outbox vanished (see ``_grouped``)
            elif isinstance(reply, BaseException):
                raise reply
            else:
                claimed += await self._decode([(stream, reply[1])])
        if missing:
            log.warning("outbox: group missing, recreating it")
            await self.ensure_groups()
        if claimed:
            log.info("outbox: claimed %d entries from idle consumers", len(claimed))
        if now - self._last_forget >= FORGET_EVERY_S:
            self._last_forget = now
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

    async def length(self) -> int:
        """Entries waiting: acknowledged entries are deleted, so it is the streams' length."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xlen(stream)
            lengths = await pipe.execute()
        return sum(int(n) for n in lengths)

    async def dead_letter(self, event: OutboxEvent, error: Exception) -> None:
        d = event.data
        log.error(
            "outbox: dead-lettered %s entry %s of session %s/%s after %d attempts: %s",
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
        log.error("outbox: dead-lettered unreadable entry %s of %s: %r", entry_id, stream, error)
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

    async def ack(self, events: Iterable[OutboxEvent]) -> None:
        by_stream: dict[str, list[str]] = {}
        for e in events:
            by_stream.setdefault(e.stream, []).append(e.entry_id)
        if not self.cluster:
            # One call instead of two commands per stream (a batch touches most partitions).
            args: list[Any] = [GROUP]
            for ids in by_stream.values():
                args += [len(ids), *ids]
            await self.redis.eval(_ACK, len(by_stream), *by_stream, *args)
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, GROUP, *ids)
                pipe.xdel(stream, *ids)
            await pipe.execute()
