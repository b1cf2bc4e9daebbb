"""Acknowledging written outbox entries on one Redis node, against a real Redis: every entry of
every stream leaves both the pending list and the stream, in one call however large the batch,
and a stream that vanished meanwhile (a flush) is no error."""

from __future__ import annotations

import uuid

import orjson

from sidecar.config import RedisConfig, WriterConfig
from sidecar.metrics import Metrics
from sidecar.outbox import GROUP, Outbox
from sidecar.store.client import make_client
from sidecar.store.keys import KeySpace


def entry(n: int) -> dict[str, bytes | int | str]:
    data = {"tenant": "t", "session_id": f"s{n}", "turn_id": str(uuid.uuid4()), "at": "x"}
    return {"kind": "turn", "seq": n, "data": orjson.dumps(data)}


async def test_a_large_batch_over_many_streams_is_acknowledged_and_deleted(redis_url: str) -> None:
    keys = KeySpace(f"ack-{uuid.uuid4().hex[:6]}", 8)
    client = make_client(RedisConfig(url=redis_url), cluster=False, socket_timeout_s=5.0)
    try:
        outbox = Outbox(client, keys, WriterConfig(batch_size=10_000), Metrics(), "c1")
        await outbox.ensure_groups()
        streams = keys.outboxes()
        # One stream holds more ids than Lua's unpack() takes at once (about 8,000); the
        # others one each.
        async with client.pipeline(transaction=False) as pipe:
            for n in range(8500):
                pipe.xadd(streams[0], entry(n))
            await pipe.execute()
        for n, stream in enumerate(streams[1:]):
            await client.xadd(stream, entry(n))
        read = await outbox.read(block=False, count=10_000)
        assert len(read) == 8500 + len(streams) - 1
        assert {e.stream for e in read} == set(streams)
        await outbox.ack(read)
        assert await outbox.length() == 0
        for stream in streams:
            assert (await client.xpending(stream, GROUP))["pending"] == 0
        assert await outbox.read(block=False, count=10_000, start="0") == []
    finally:
        await client.aclose()


async def test_acknowledging_entries_of_a_flushed_outbox_is_no_error(redis_url: str) -> None:
    keys = KeySpace(f"ack-{uuid.uuid4().hex[:6]}", 2)
    client = make_client(RedisConfig(url=redis_url), cluster=False, socket_timeout_s=5.0)
    try:
        outbox = Outbox(client, keys, WriterConfig(), Metrics(), "c1")
        await outbox.ensure_groups()
        await client.xadd(keys.outboxes()[0], entry(1))
        read = await outbox.read(block=False, count=10)
        await client.delete(*keys.outboxes())  # the streams and their group go
        await outbox.ack(read)
        assert await outbox.length() == 0
    finally:
        await client.aclose()
