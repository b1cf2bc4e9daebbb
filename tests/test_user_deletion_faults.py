"""Deleting a user while a store fails, against real Redis and PostgreSQL stopped at the worst
moment: the call answers 503 (so the client repeats it), nothing deleted comes back, and the
repeated call completes."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from sidecar.app import REDIS_STORE
from sidecar.devservices import TemporaryPostgres, TemporaryRedis
from sidecar.session.model import SessionKey
from sidecar.store.redis import RedisSessionStore
from tests.harness import ADMIN_TOKEN, FakeUpstream
from tests.harness.waiting import pg_fetch, pg_value, wait_outbox_empty, wait_until

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SCOPE = "anonymous/gone"


async def ask(http: aiohttp.ClientSession, url: str, query: str, sid: str, user: str) -> str | None:
    """One tasks turn, answered 2xx; returns its ``X-Sidecar-Degraded``."""
    body = {"query": query, "session_id": sid, "user_id": user}
    async with http.post(f"{url}/api/tasks", json=body) as r:
        assert r.status == 200, await r.text()
        return r.headers.get("X-Sidecar-Degraded")


async def rows_of_user(dsn: str) -> dict[str, int]:
    return {
        table: await pg_value(dsn, f"SELECT count(*) FROM {table} WHERE tenant = $1", SCOPE)
        for table in ("sessions", "messages", "token_usage")
    }


async def test_a_user_deletion_cut_short_answers_503_and_no_erased_session_comes_back(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_url: str,
    redis_server: TemporaryRedis,
    postgres_server: TemporaryPostgres,
    sidecar_config: dict[str, Any],
    monkeypatch: Any,
) -> None:
    sc = await start_sidecar(memory={"profile": True}, redis={"breaker_reset_s": 0.5})
    for sid in ("d-1", "d-2", "d-3"):
        await ask(http, sc.url, "我住在广州", sid, "gone")
    await ask(http, sc.url, "我住在深圳", "k-1", "kept")
    prefix = sidecar_config["redis"]["key_prefix"]
    await wait_outbox_empty(redis_url, prefix)
    url = f"{sc.url}/_sidecar/users/anonymous/gone"

    # PostgreSQL down: it deletes first, in one transaction, so nothing is deleted anywhere.
    await postgres_server.stop()
    try:
        async with http.delete(url, headers=AUTH) as r:
            assert r.status == 503
            assert (await r.json())["error"]["code"] == "store_unavailable"
    finally:
        await postgres_server.start()
    assert await rows_of_user(pg_dsn) == {"sessions": 3, "messages": 6, "token_usage": 3}
    async with http.get(url, headers=AUTH) as r:
        assert sorted((await r.json())["sessions"]) == ["d-1", "d-2", "d-3"]

    # Redis goes away once PostgreSQL's part is done and the first session's copy is erased.
    erase = RedisSessionStore.erase
    erased: list[SessionKey] = []

    async def erase_then_stop(self: RedisSessionStore, key: SessionKey, *a: Any, **kw: Any) -> int:
        at = await erase(self, key, *a, **kw)
        if not erased:
            erased.append(key)
            await redis_server.stop()
        return at

    monkeypatch.setattr(RedisSessionStore, "erase", erase_then_stop)
    try:
        async with http.delete(url, headers=AUTH) as r:
            assert r.status == 503
            assert "retry" in (await r.json())["error"]["message"]
    finally:
        monkeypatch.undo()
        await redis_server.start()
    assert erased == [SessionKey(SCOPE, "d-1")]
    assert await rows_of_user(pg_dsn) == {"sessions": 0, "messages": 0, "token_usage": 0}

    # Nobody repeats the call yet. Once Redis answers again, the copies left there are erased
    # (by whichever replica looks first), not served.
    async def degraded() -> str | None:
        return await ask(http, sc.url, "你好", "k-2", "kept")

    await wait_until(degraded, lambda d: d is None, what="Redis to serve again")
    client = aioredis.Redis.from_url(redis_url)

    async def copies_left() -> list[bytes]:
        return [k async for k in client.scan_iter(match=f"{prefix}:*{SCOPE}*:meta")]

    try:
        await wait_until(copies_left, lambda keys: not keys, what="the copies left to go")
    finally:
        await client.aclose()
    for sid in ("d-2", "d-3"):
        async with http.get(
            f"{sc.url}/_sidecar/sessions/anonymous/{sid}?user=gone", headers=AUTH
        ) as r:
            assert r.status == 404, sid
    # A turn in one of them now starts afresh: nothing of the deleted user is injected.
    assert await ask(http, sc.url, "今天天气怎么样", "d-3", "gone") is None
    forwarded = upstream.requests_to("/api/tasks")[-1].json
    assert forwarded["history"] == []
    assert "profile" not in forwarded["context"]

    # The repeated call completes, and takes the turn asked since with it.
    async with http.delete(url, headers=AUTH) as r:
        assert r.status == 204
    await wait_outbox_empty(redis_url, prefix)
    assert await rows_of_user(pg_dsn) == {"sessions": 0, "messages": 0, "token_usage": 0}
    kept = await pg_fetch(pg_dsn, "SELECT session_id FROM sessions ORDER BY session_id")
    assert [r["session_id"] for r in kept] == ["k-1", "k-2"]
    async with http.get(url, headers=AUTH) as r:
        assert r.status == 404


async def test_a_user_deletion_is_stamped_with_the_clock_turns_are_compared_by(
    start_sidecar: Any, http: aiohttp.ClientSession, pg_dsn: str, monkeypatch: Any
) -> None:
    # Turns carry the time they were asked on Redis's clock, the one all replicas share; a
    # deletion stamped by this replica's own clock would let its skew decide which turns of the
    # user come back. This replica's clock is made a minute behind Redis's.
    sc = await start_sidecar(memory={"profile": True})
    await ask(http, sc.url, "我住在广州", "d-1", "gone")
    store: RedisSessionStore = sc.app[REDIS_STORE]
    ahead_ms = 60_000
    real_now = store.clock.now_ms
    monkeypatch.setattr(store.clock, "now_ms", lambda: real_now() + ahead_ms)
    before = time.time()
    async with http.delete(f"{sc.url}/_sidecar/users/anonymous/gone", headers=AUTH) as r:
        assert r.status == 204, await r.text()
    deleted_at = await pg_value(
        pg_dsn, "SELECT extract(epoch FROM deleted_at) FROM deleted_users WHERE scope = $1", SCOPE
    )
    assert before + ahead_ms / 1000 - 1 <= float(deleted_at) <= time.time() + ahead_ms / 1000 + 1


async def test_a_users_profile_left_in_redis_by_a_failed_deletion_is_not_served_again(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_url: str,
    redis_server: TemporaryRedis,
    sidecar_config: dict[str, Any],
) -> None:
    # Redis is away for the whole call: PostgreSQL forgets the user, Redis keeps its copy of
    # the profile (and restarts with it, from its AOF). Nobody repeats the call; the copy must
    # still never reach the upstream again, through this replica or another.
    sc = await start_sidecar(memory={"profile": True}, redis={"breaker_reset_s": 0.5})
    other = await start_sidecar(memory={"profile": True}, redis={"breaker_reset_s": 0.5})
    await ask(http, sc.url, "我住在广州", "d-1", "gone")
    await ask(http, other.url, "你好", "d-2", "gone")  # the other replica has it cached too
    assert upstream.requests_to("/api/tasks")[-1].json["context"]["profile"] == {
        "home_location": "广州"
    }
    await wait_outbox_empty(redis_url, sidecar_config["redis"]["key_prefix"])
    await redis_server.stop()
    try:
        async with http.delete(f"{sc.url}/_sidecar/users/anonymous/gone", headers=AUTH) as r:
            assert r.status == 503
    finally:
        await redis_server.start()
    assert await pg_value(pg_dsn, "SELECT count(*) FROM user_profiles") == 0

    async def profile_forwarded() -> tuple[str | None, Any]:
        degraded = await ask(http, other.url, "今天天气怎么样", "d-9", "gone")
        return degraded, upstream.requests_to("/api/tasks")[-1].json["context"].get("profile")

    await wait_until(
        profile_forwarded,
        lambda seen: seen == (None, None),
        what="the deleted user's profile to stop being served",
    )
    # What Redis holds of the user now is what PostgreSQL restored: no fact.
    client = aioredis.Redis.from_url(redis_url)
    try:
        for key in [k async for k in client.scan_iter(match="*:u:*:gone:profile")]:
            assert not [f for f in await client.hkeys(key) if f.startswith(b"f:")]
    finally:
        await client.aclose()
