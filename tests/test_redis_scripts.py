"""The commit script against a real redis-server: what a turn leaves in the session's hash, list
and outbox, including where numbers outgrow the way Lua writes them by default."""

from __future__ import annotations

import orjson

from sidecar.config import Config
from sidecar.session.model import SessionKey, Turn, Usage, new_message, turn_ids
from sidecar.store.breaker import CircuitBreaker
from sidecar.store.client import make_client
from sidecar.store.redis import RedisSessionStore


def _store(url: str) -> RedisSessionStore:
    cfg = Config.from_mapping(
        {"upstream": {"url": "http://127.0.0.1:1"}, "redis": {"url": url}}
    ).redis
    return RedisSessionStore(make_client(cfg, cluster=False), cfg, CircuitBreaker(3, 30.0))


def _turn(key: SessionKey, query: str, model: str = "m-1", tokens: int = 30) -> Turn:
    turn_id, user_id, assistant_id = turn_ids(key, None)
    return Turn(
        key=key,
        user=new_message("user", query, 8, None, user_id),
        assistant=new_message("assistant", f"answer to {query}", 22, None, assistant_id),
        usage=Usage(
            prompt_tokens=10, completion_tokens=tokens - 10, total_tokens=tokens, model=model
        ),
        context_patch={"location": "Paris"},
        turn_id=turn_id,
    )


async def _seed_empty(
    store: RedisSessionStore, key: SessionKey, *, last_seq: int | None, tokens_used: int
) -> None:
    """A session with no message yet, as a restore writes it."""
    await store.seed(
        key,
        last_seq=last_seq,
        tokens_used=tokens_used,
        message_count=0,
        created_at="2026-01-01T00:00:00Z",
        updated_at="2026-01-01T00:00:00Z",
        context={},
        messages=[],
        announce=False,
    )


async def test_a_session_numbered_from_the_clock_keeps_every_digit_of_its_seqs(
    redis_url: str,
) -> None:
    """A session restored while PostgreSQL could not be read numbers its messages from Redis's
    clock in microseconds (16 digits); its history must carry those seqs exactly, as the
    outbox does, not as ``1.78e+15``."""
    store = _store(redis_url)
    key = SessionKey("t", "clocked")
    try:
        await store.prepare()
        await _seed_empty(store, key, last_seq=None, tokens_used=0)
        first = await store.commit(_turn(key, "first"), 200)
        second = await store.commit(_turn(key, "second"), 200)
        assert first.first_seq > 10**15
        assert second.first_seq == first.first_seq + 2

        found = await store.load(key, "", 50)
        assert found.snapshot is not None
        assert [m.seq for m in found.snapshot.window] == [
            first.first_seq,
            first.first_seq + 1,
            second.first_seq,
            second.first_seq + 1,
        ]
        assert found.snapshot.last_seq == second.first_seq + 1
        entries = await store.client.xrange(store.keys.session(key).outbox)
        assert [int(fields[b"seq"]) for _, fields in entries] == [
            first.first_seq,
            second.first_seq,
        ]
    finally:
        await store.aclose()
        await store.client.aclose()


async def test_the_counters_add_up_over_turns_and_the_list_keeps_the_newest(
    redis_url: str,
) -> None:
    store = _store(redis_url)
    key = SessionKey("t", "counted")
    try:
        await store.prepare()
        await _seed_empty(store, key, last_seq=0, tokens_used=5)
        versions = []
        for i, (model, tokens) in enumerate([("m-1", 30), ("m-2", 40), ("m-1", 50), ("", 7)]):
            versions.append((await store.commit(_turn(key, f"q{i}", model, tokens), 6)).version)
        assert [v.rpartition(":")[2] for v in versions] == ["1", "2", "3", "4"]

        meta = await store.client.hgetall(store.keys.session(key).meta)
        assert int(meta[b"tokens_used"]) == 5 + 30 + 40 + 50 + 7
        assert int(meta[b"model:m-1"]) == 80
        assert int(meta[b"model:m-2"]) == 40
        assert int(meta[b"message_count"]) == 8
        assert int(meta[b"seq"]) == 8

        stored = await store.client.lrange(store.keys.session(key).messages, 0, -1)
        assert [orjson.loads(raw)[0] for raw in stored] == [3, 4, 5, 6, 7, 8]  # the newest 6
        found = await store.load(key, "", 50)
        assert found.snapshot is not None
        assert found.snapshot.version == versions[-1]
        assert found.snapshot.context == {"location": "Paris"}
    finally:
        await store.aclose()
        await store.client.aclose()
