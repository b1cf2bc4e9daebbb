"""The admin session API: read a session, delete it everywhere, and keep it deleted."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis

from tests.harness import ADMIN_TOKEN, FakeUpstream
from tests.harness.waiting import pg_fetch, pg_value, wait_for_rows, wait_until
from tests.turns import post_turn

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_admin_api_is_off_without_a_token_and_guarded_with_one(
    start_sidecar: Any, http: aiohttp.ClientSession
) -> None:
    off = await start_sidecar(admin={"token": ""})
    async with http.get(f"{off.url}/_sidecar/sessions/anonymous/x", headers=AUTH) as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "not_found"
    on = await start_sidecar(admin={"token": ADMIN_TOKEN})
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN}):
        async with http.get(f"{on.url}/_sidecar/sessions/anonymous/x", headers=headers) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "unauthorized"


async def test_get_shows_the_session_and_delete_removes_it_everywhere(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_url: str,
    sidecar_config: dict[str, Any],
) -> None:
    sc = await start_sidecar(admin={"token": ADMIN_TOKEN})
    sid = "to-delete"
    assert (await post_turn(http, sc.url, "今天天气怎么样", sid)).status == 200
    assert (await post_turn(http, sc.url, "巴黎", sid)).status == 200
    url = f"{sc.url}/_sidecar/sessions/anonymous/{sid}"
    async with http.get(url, headers=AUTH) as r:
        assert r.status == 200
        body = await r.json()
    assert body["session_id"] == sid
    assert body["tenant"] == "anonymous"
    assert [m["content"] for m in body["history"]][0::2] == ["今天天气怎么样", "巴黎"]
    assert body["context"]["location"] == "巴黎"
    assert body["message_count"] == 4
    assert body["tokens_used"] == sum(u["total_tokens"] for u in upstream.reported_usage)
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 4)
    # Keep a real outbox payload to replay late, after the deletion.
    prefix = sidecar_config["redis"]["key_prefix"]
    late = await pg_fetch(
        pg_dsn, "SELECT id, turn_id, seq, role, content FROM messages ORDER BY seq"
    )

    async with http.delete(url, headers=AUTH) as r:
        assert r.status == 204
    async with http.get(url, headers=AUTH) as r:
        assert r.status == 404
    for table in ("messages", "token_usage", "sessions"):
        assert await pg_value(pg_dsn, f"SELECT count(*) FROM {table}") == 0
    client = aioredis.Redis.from_url(redis_url)
    try:
        left = [k async for k in client.scan_iter(match=f"{prefix}:*:s:*")]
        # Only the tombstone that keeps turns asked before the deletion out, and the markers
        # that keep a resent commit from recording twice: no content, expiring within minutes.
        assert [k.rsplit(b":", 1)[1] for k in left if b":idem:" not in k] == [b"deleted"]
        for k in left:
            if b":idem:" in k:
                assert b":idem:turn:" in k
                assert 0 < await client.pttl(k) <= 60 * 1000
                assert b"|" in await client.get(k)  # a version and a seq, nothing said

        # A write of the deleted session's turn arriving late (a replica's pending entry, say).
        outbox = await anext(client.scan_iter(match=f"{prefix}:*:outbox"))
        payload = {
            "tenant": "anonymous",
            "session_id": sid,
            "turn_id": str(late[0]["turn_id"]),
            "messages": [
                [str(m["id"]), m["role"], m["content"], "2020-01-01T00:00:00Z", 1] for m in late[:2]
            ],
            "usage": ["m", 1, 1, 2],
            "context": {"location": "巴黎"},
            "partial": False,
            "at": "2020-01-01T00:00:00Z",
        }
        await client.xadd(outbox, {"kind": "turn", "seq": 1, "data": orjson.dumps(payload)})

        async def outbox_empty() -> int:
            return int(await client.xlen(outbox))

        await wait_until(outbox_empty, lambda n: n == 0, what="the late entry consumed")
    finally:
        await client.aclose()
    assert await pg_value(pg_dsn, "SELECT count(*) FROM messages") == 0
    assert await pg_value(pg_dsn, "SELECT count(*) FROM sessions") == 0

    # The id can be used again, as a new, empty session.
    assert (await post_turn(http, sc.url, "hello again", sid)).status == 200
    assert upstream.requests_to("/api/tasks")[-1].json["history"] == []


async def test_a_turn_in_flight_during_delete_does_not_bring_the_session_back(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_url: str,
    sidecar_config: dict[str, Any],
) -> None:
    sc = await start_sidecar(admin={"token": ADMIN_TOKEN})
    sid = "deleted-mid-turn"
    assert (await post_turn(http, sc.url, "first", sid)).status == 200
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 2)
    upstream.tasks_delay_s = 1.0
    in_flight = asyncio.create_task(post_turn(http, sc.url, "asked before the delete", sid))
    await wait_until(
        lambda: _value(len(upstream.requests_to("/api/tasks"))),
        lambda n: n == 2,
        what="the second turn at the upstream",
    )
    async with http.delete(f"{sc.url}/_sidecar/sessions/anonymous/{sid}", headers=AUTH) as r:
        assert r.status == 204
    assert (await in_flight).status == 200  # answered: the client got its answer
    upstream.tasks_delay_s = 0

    prefix = sidecar_config["redis"]["key_prefix"]
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert [k async for k in client.scan_iter(match=f"{prefix}:*:s:*:meta")] == []
    finally:
        await client.aclose()
    async with http.get(f"{sc.url}/_sidecar/sessions/anonymous/{sid}", headers=AUTH) as r:
        assert r.status == 404
    assert await pg_value(pg_dsn, "SELECT count(*) FROM messages") == 0
    # A request made after the deletion starts the id afresh and is kept.
    assert (await post_turn(http, sc.url, "asked after the delete", sid)).status == 200
    assert upstream.requests_to("/api/tasks")[-1].json["history"] == []
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 2)


async def _value(value: Any) -> Any:
    return value
