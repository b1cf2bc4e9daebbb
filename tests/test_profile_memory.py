"""User memory across sessions, against real Redis and PostgreSQL: what a user says about
themselves in one session reaches their next ones, and nobody else's."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis

from sidecar.config import PostgresConfig
from sidecar.devservices import TemporaryRedis
from sidecar.store.postgres import OutboxEvent, PostgresSessionStore, create_pool
from tests.harness import ADMIN_TOKEN, FakeUpstream
from tests.harness.waiting import pg_fetch, pg_value, wait_outbox_empty, wait_until
from tests.identity_keys import HS_SECRET, claims, hs_token

PROFILE = {"memory": {"profile": True}}
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def ask(
    http: aiohttp.ClientSession,
    url: str,
    query: str,
    sid: str,
    user: str | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """One tasks turn, answered 2xx (``last_forwarded`` shows what the upstream received)."""
    body: dict[str, Any] = {"query": query, "session_id": sid}
    if user is not None:
        body["user_id"] = user
    async with http.post(f"{url}/api/tasks", json=body, headers=headers or {}) as r:
        assert r.status == 200, await r.text()


async def count_when_drained(sc: Any, dsn: str, sql: str) -> int:
    """``sql`` (a count) once the writer has moved everything recorded to PostgreSQL, so a turn
    written late or twice is counted too."""
    await wait_outbox_empty(sc.config.redis.url, sc.config.redis.key_prefix)
    return int(await pg_value(dsn, sql))


def last_forwarded(upstream: FakeUpstream) -> dict[str, Any]:
    forwarded: dict[str, Any] = upstream.requests_to("/api/tasks")[-1].json
    return forwarded


async def stored_facts(dsn: str, user: str, tenant: str = "anonymous") -> Any:
    rows = await pg_fetch(
        dsn, "SELECT facts FROM user_profiles WHERE tenant = $1 AND user_id = $2", tenant, user
    )
    return orjson.loads(rows[0]["facts"]) if rows else None


async def test_a_fact_said_in_one_session_reaches_the_first_request_of_the_next(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession, pg_dsn: str
) -> None:
    sc = await start_sidecar(**PROFILE)
    await ask(http, sc.url, "我住在北京，请用华氏度", "a-1", user="u1")

    await ask(http, sc.url, "今天天气怎么样", "b-1", user="u1")
    first_of_b = last_forwarded(upstream)
    assert first_of_b["history"] == []
    assert first_of_b["context"]["profile"] == {"home_location": "北京", "units": "imperial"}
    # A weather question with no place gets the user's home.
    assert first_of_b["context"]["location"] == "北京"

    # A place said in the query wins over the home, and is what the session keeps.
    await ask(http, sc.url, "上海明天会下雨吗", "b-1", user="u1")
    assert last_forwarded(upstream)["context"]["location"] == "上海"
    await ask(http, sc.url, "那后天呢", "b-1", user="u1")
    assert last_forwarded(upstream)["context"]["location"] == "上海"

    # A question that needs no place is not given one.
    await ask(http, sc.url, "讲个笑话", "c-1", user="u1")
    assert "location" not in last_forwarded(upstream)["context"]
    assert last_forwarded(upstream)["context"]["profile"]["home_location"] == "北京"

    await wait_until(
        lambda: stored_facts(pg_dsn, "u1"),
        lambda f: f == {"home_location": "北京", "units": "imperial"},
        what="the profile in PostgreSQL",
    )


async def test_a_correction_replaces_and_negatives_stay_out(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession, pg_dsn: str
) -> None:
    sc = await start_sidecar(**PROFILE)
    await ask(http, sc.url, "I live in Berlin. Call me Max.", "s-1", user="max")
    for negative in (
        "do you live in Paris?",
        "my friend lives in Rome",
        "I was in Berlin last year",
        "北京天气怎么样",
        "call me back later",
    ):
        await ask(http, sc.url, negative, "s-2", user="max")
    await ask(http, sc.url, "What's the weather like?", "s-3", user="max")
    assert last_forwarded(upstream)["context"]["profile"] == {
        "home_location": "Berlin",
        "name": "Max",
    }
    assert last_forwarded(upstream)["context"]["location"] == "Berlin"

    await ask(http, sc.url, "I moved to Tokyo", "s-4", user="max")
    await ask(http, sc.url, "will it rain tomorrow?", "s-5", user="max")
    assert last_forwarded(upstream)["context"]["profile"]["home_location"] == "Tokyo"
    assert last_forwarded(upstream)["context"]["location"] == "Tokyo"
    await wait_until(
        lambda: stored_facts(pg_dsn, "max"),
        lambda f: f == {"home_location": "Tokyo", "name": "Max"},
        what="the corrected profile in PostgreSQL",
    )


async def test_other_users_and_other_tenants_see_nothing(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession, pg_dsn: str
) -> None:
    sc = await start_sidecar(**PROFILE)
    key_a = {"Authorization": "Bearer key-of-tenant-a"}
    key_b = {"Authorization": "Bearer key-of-tenant-b"}
    await ask(http, sc.url, "我住在杭州", "x-1", user="alice", headers=key_a)

    await ask(http, sc.url, "今天天气怎么样", "x-2", user="alice", headers=key_a)
    assert last_forwarded(upstream)["context"]["location"] == "杭州"
    # Another user of the same tenant.
    await ask(http, sc.url, "今天天气怎么样", "x-3", user="bob", headers=key_a)
    assert "profile" not in last_forwarded(upstream)["context"]
    assert "location" not in last_forwarded(upstream)["context"]
    # The same user id under another credential, and without one.
    await ask(http, sc.url, "今天天气怎么样", "x-4", user="alice", headers=key_b)
    assert "profile" not in last_forwarded(upstream)["context"]
    await ask(http, sc.url, "今天天气怎么样", "x-5", user="alice")
    assert "profile" not in last_forwarded(upstream)["context"]
    # No user at all: no profile, and what is said is not kept for anyone.
    await ask(http, sc.url, "我住在成都", "x-6", headers=key_a)
    await ask(http, sc.url, "今天天气怎么样", "x-7", headers=key_a)
    assert "profile" not in last_forwarded(upstream)["context"]
    # Two users of one tenant never share a session, even under the same id.
    await ask(http, sc.url, "你好", "shared", user="alice", headers=key_a)
    await ask(http, sc.url, "你好呀", "shared", user="bob", headers=key_a)
    assert last_forwarded(upstream)["history"] == []

    assert await count_when_drained(sc, pg_dsn, "SELECT count(*) FROM messages") == 2 * 9
    rows = await pg_fetch(pg_dsn, "SELECT user_id, facts FROM user_profiles")
    assert [(r["user_id"], orjson.loads(r["facts"])) for r in rows] == [
        ("alice", {"home_location": "杭州"})
    ]


async def test_without_memory_profile_nothing_is_injected_or_written(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_url: str,
    sidecar_config: dict[str, Any],
) -> None:
    sc = await start_sidecar(memory={"profile": False, "profile_note": True})
    await ask(http, sc.url, "我住在北京", "o-1", user="u1")
    await ask(http, sc.url, "今天天气怎么样", "o-2", user="u1")
    assert "profile" not in last_forwarded(upstream)["context"]
    assert "location" not in last_forwarded(upstream)["context"]
    assert await count_when_drained(sc, pg_dsn, "SELECT count(*) FROM messages") == 4
    assert await pg_value(pg_dsn, "SELECT count(*) FROM user_profiles") == 0
    # The body's user is not a scope either: sessions stay the credential's.
    assert {r["tenant"] for r in await pg_fetch(pg_dsn, "SELECT tenant FROM sessions")} == {
        "anonymous"
    }
    prefix = sidecar_config["redis"]["key_prefix"]
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert [k async for k in client.scan_iter(match=f"{prefix}:*:u:*")] == []
    finally:
        await client.aclose()


async def test_a_fact_reaches_another_replica_by_its_next_turn(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    one = await start_sidecar(**PROFILE)
    two = await start_sidecar(**PROFILE)  # same Redis and PostgreSQL, its own caches
    # Replica two knows the user's (empty) profile and holds it in its cache.
    await ask(http, two.url, "你好", "r-1", user="u")
    assert "profile" not in last_forwarded(upstream)["context"]
    await ask(http, one.url, "请叫我小王", "r-2", user="u")
    await ask(http, two.url, "你好", "r-1", user="u")
    assert last_forwarded(upstream)["context"]["profile"] == {"name": "小王"}
    await ask(http, one.url, "叫我老王", "r-2", user="u")
    await ask(http, two.url, "你好", "r-1", user="u")
    assert last_forwarded(upstream)["context"]["profile"] == {"name": "老王"}


async def test_a_turn_of_an_unchanged_profile_costs_no_extra_redis_round_trip(
    start_sidecar: Any, http: aiohttp.ClientSession, redis_url: str
) -> None:
    """The profile rides in the session's load script: the same commands reach Redis from the
    request path as for a turn without a profile (commands run inside scripts aside)."""
    # The writer's own commands, and a new connection's handshake (the test's included).
    writer = {"XREADGROUP", "XACK", "XDEL", "XLEN", "XAUTOCLAIM", "XINFO", "XGROUP", "PING"}
    writer |= {"HELLO", "CLIENT", "SELECT", "AUTH"}
    # Background work off the request path: the writer finding outbox streams (SCAN), its
    # consumer-name lease (taken with SET, renewed by a script naming its key), its
    # acknowledgements (a script sent whole, XACK in its text), and the measurement of Redis's
    # clock (TIME) once a second.
    writer |= {"SCAN", "SET", "GET", "PEXPIRE", "DEL", "TIME"}

    def background(name: str, command: str) -> bool:
        return name in writer or (name == "EVAL" and (":consumer:" in command or "XACK" in command))

    client = aioredis.Redis.from_url(redis_url)

    async def commands_of_one_turn(url: str, sid: str, user: str | None) -> list[str]:
        await ask(http, url, "你好", sid, user=user)  # warm: session and profile exist
        async with client.monitor() as monitor:
            await ask(http, url, "再见", sid, user=user)
            await client.echo("end-of-turn")
            seen = []
            while True:
                command = await monitor.next_command()
                if "end-of-turn" in command["command"]:
                    return seen
                name = command["command"].split()[0].upper()
                if command.get("client_type") != "lua" and not background(name, command["command"]):
                    seen.append(name)

    try:
        with_profile = await start_sidecar(**PROFILE)
        await ask(http, with_profile.url, "我住在北京", "c-0", user="cu")
        without = await start_sidecar(memory={"profile": False})
        assert await commands_of_one_turn(with_profile.url, "c-1", "cu") == ["EVALSHA"] * 2
        assert await commands_of_one_turn(without.url, "c-2", None) == ["EVALSHA"] * 2
    finally:
        await client.aclose()


async def test_the_profile_survives_a_redis_flush(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_url: str,
) -> None:
    sc = await start_sidecar(**PROFILE)
    await ask(http, sc.url, "use Fahrenheit please", "f-1", user="f")
    await wait_until(lambda: stored_facts(pg_dsn, "f"), what="the profile in PostgreSQL")
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    await ask(http, sc.url, "hello", "f-2", user="f")
    assert last_forwarded(upstream)["context"]["profile"] == {"units": "imperial"}


async def test_chat_api_gets_one_system_note_after_the_clients_own(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    sc = await start_sidecar(memory={"profile": True, "profile_note": True})
    await ask(http, sc.url, "我住在北京，叫我小王", "n-1", user="wang")
    body = {
        "model": "fake-1",
        "user": "wang",
        "messages": [
            {"role": "system", "content": "你是一个助手"},
            {"role": "user", "content": "今天天气怎么样"},
        ],
    }
    async with http.post(
        f"{sc.url}/v1/chat/completions", json=body, headers={"X-Session-ID": "n-2"}
    ) as r:
        assert r.status == 200
    sent = upstream.requests_to("/v1/chat/completions")[-1].json["messages"]
    assert [m["role"] for m in sent] == ["system", "system", "user"]
    assert sent[0]["content"] == "你是一个助手"
    assert "北京" in sent[1]["content"]
    assert "小王" in sent[1]["content"]
    # Another user of the tenant gets no note.
    body["user"] = "li"
    async with http.post(
        f"{sc.url}/v1/chat/completions", json=body, headers={"X-Session-ID": "n-3"}
    ) as r:
        assert r.status == 200
    sent = upstream.requests_to("/v1/chat/completions")[-1].json["messages"]
    assert [m["role"] for m in sent] == ["system", "user"]


async def test_deleting_a_user_forgets_everything_and_turns_in_flight_bring_nothing_back(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_url: str,
    sidecar_config: dict[str, Any],
) -> None:
    sc = await start_sidecar(**PROFILE)
    for sid in ("d-1", "d-2", "d-3"):
        await ask(http, sc.url, "我住在广州", sid, user="gone")
    await ask(http, sc.url, "我住在深圳", "k-1", user="kept")
    assert await count_when_drained(sc, pg_dsn, "SELECT count(*) FROM messages") == 8
    url = f"{sc.url}/_sidecar/users/anonymous/gone"
    async with http.get(url, headers=AUTH) as r:
        assert r.status == 200
        shown = await r.json()
    assert shown["facts"] == {"home_location": "广州"}
    assert sorted(shown["sessions"]) == ["d-1", "d-2", "d-3"]

    # Turns of the user in flight while the user is deleted, one of them stating a new fact.
    upstream.tasks_delay_s = 1.0
    in_flight = [
        asyncio.create_task(ask(http, sc.url, q, sid, user="gone"))
        for q, sid in (("我搬到杭州了", "d-1"), ("今天天气怎么样", "d-4"))
    ]

    async def forwarded() -> int:
        return len(upstream.requests_to("/api/tasks"))

    await wait_until(forwarded, lambda n: n >= 6, what="the turns to reach the upstream")
    async with http.delete(url, headers=AUTH) as r:
        assert r.status == 204
    await asyncio.gather(*in_flight)
    upstream.tasks_delay_s = 0.0

    await ask(http, sc.url, "你好", "k-2", user="kept")
    prefix = sidecar_config["redis"]["key_prefix"]
    client = aioredis.Redis.from_url(redis_url)

    async def outbox_length() -> int:
        return sum(
            [await client.xlen(k) async for k in client.scan_iter(match=f"{prefix}:*:outbox")]
        )

    try:
        # The writer drained everything, the turns that were in flight included.
        await wait_until(outbox_length, lambda n: n == 0, what="an empty outbox")
        keys = [k.decode() async for k in client.scan_iter(match=f"{prefix}:*gone*")]
    finally:
        await client.aclose()
    assert await pg_value(pg_dsn, "SELECT count(*) FROM messages") == 4  # the other user's
    for table in ("sessions", "messages", "token_usage"):
        left = await pg_value(
            pg_dsn, f"SELECT count(*) FROM {table} WHERE tenant = 'anonymous/gone'"
        )
        assert left == 0, table
    assert await stored_facts(pg_dsn, "gone") is None
    assert await stored_facts(pg_dsn, "kept") == {"home_location": "深圳"}
    async with http.get(url, headers=AUTH) as r:
        assert r.status == 404
    # Only the tombstones that keep turns asked before the deletion out, and the markers that
    # keep a resent commit from recording twice (a version and a seq, gone within a minute).
    assert keys
    assert all(k.endswith(":deleted") or ":idem:turn:" in k for k in keys), keys

    # A new statement after the deletion starts afresh.
    await ask(http, sc.url, "今天天气怎么样", "d-5", user="gone")
    assert "profile" not in last_forwarded(upstream)["context"]


async def test_an_asynchronous_task_states_its_fact_once_its_result_is_read(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession, pg_dsn: str
) -> None:
    """The poll carries no body, so no user: it still finds the task the user submitted."""
    sc = await start_sidecar(**PROFILE)
    upstream.tasks_mode = "async"
    upstream.tasks_async_polls = 2
    body = {"query": "I'm based in London.", "session_id": "t-1", "user_id": "tasker"}
    async with http.post(f"{sc.url}/api/tasks", json=body) as r:
        assert r.status == 202
        task_id = (await r.json())["task_id"]
    statuses = []
    for _ in range(2):
        async with http.get(f"{sc.url}/api/tasks/{task_id}") as r:
            statuses.append((await r.json())["status"])
    assert statuses == ["running", "completed"]

    upstream.tasks_mode = "json"
    await ask(http, sc.url, "weather tomorrow?", "t-2", user="tasker")
    assert last_forwarded(upstream)["context"]["profile"] == {"home_location": "London"}
    assert (
        await count_when_drained(
            sc, pg_dsn, "SELECT count(*) FROM messages WHERE tenant = 'anonymous/tasker'"
        )
        == 4
    )


async def test_a_fact_stated_while_redis_is_down_is_kept_and_seen_after(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_server: TemporaryRedis,
) -> None:
    sc = await start_sidecar(redis={"breaker_reset_s": 0.5}, **PROFILE)
    await ask(http, sc.url, "hello", "o-1", user="ou")  # Redis now holds an empty profile
    await state_oslo_while_redis_is_away(http, sc.url, "o-1", "ou", redis_server, pg_dsn)
    await wait_for_oslo(http, upstream, sc.url, "o-2", "ou")


async def state_oslo_while_redis_is_away(
    http: aiohttp.ClientSession,
    url: str,
    sid: str,
    user: str,
    redis_server: TemporaryRedis,
    pg_dsn: str,
) -> None:
    """Redis stops, the user says where they live, Redis starts again with its old copy."""
    await redis_server.stop()
    body = {"query": "I live in Oslo", "session_id": sid, "user_id": user}
    async with http.post(f"{url}/api/tasks", json=body) as r:
        assert r.status == 200
        assert r.headers["X-Sidecar-Degraded"] == "redis"
    # Written straight to PostgreSQL, with the turn.
    assert await stored_facts(pg_dsn, user) == {"home_location": "Oslo"}
    await redis_server.start()  # with its old, empty copy of the profile, from the AOF


async def wait_for_oslo(
    http: aiohttp.ClientSession, upstream: FakeUpstream, url: str, sid: str, user: str
) -> None:
    """Until a turn through ``url`` is served whole and carries the fact to the upstream."""

    async def profile_seen() -> Any:
        body = {"query": "weather?", "session_id": sid, "user_id": user}
        async with http.post(f"{url}/api/tasks", json=body) as r:
            degraded = r.headers.get("X-Sidecar-Degraded")
        return degraded, last_forwarded(upstream)["context"].get("profile")

    await wait_until(
        profile_seen,
        lambda seen: seen == (None, {"home_location": "Oslo"}),
        timeout_s=10,
        what="the fact once Redis serves again",
    )


async def test_a_fact_stated_on_one_replica_while_redis_was_away_reaches_the_others(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_server: TemporaryRedis,
) -> None:
    # Replica B has the profile cached (in Redis and in-process) when A writes a fact straight
    # to PostgreSQL during an outage; Redis comes back with its old copy. Only A knows the copy
    # is stale unless it says so through PostgreSQL, and B never asks A.
    a = await start_sidecar(redis={"breaker_reset_s": 0.5}, **PROFILE)
    b = await start_sidecar(redis={"breaker_reset_s": 0.5}, **PROFILE)
    await ask(http, b.url, "hello", "r-1", user="roamer")
    await ask(http, b.url, "hello again", "r-1", user="roamer")  # B's copy is current
    await state_oslo_while_redis_is_away(http, a.url, "r-2", "roamer", redis_server, pg_dsn)
    await wait_for_oslo(http, upstream, b.url, "r-3", "roamer")
    assert await pg_value(pg_dsn, "SELECT count(*) FROM redis_stale_profiles") == 0


def _turn_event(turn_id: str, asked: str, facts: dict[str, str]) -> OutboxEvent:
    """An outbox entry of a turn of user ``late`` stating ``facts`` (the shape of
    ``Turn.outbox_payload``)."""
    return OutboxEvent(
        stream="",
        entry_id="",
        kind="turn",
        seq=1,
        data={
            "tenant": "anonymous/late",
            "session_id": f"s-{turn_id[:4]}",
            "turn_id": turn_id,
            "messages": [
                [str(uuid.uuid4()), "user", "q", asked, 1],
                [str(uuid.uuid4()), "assistant", "a", asked, 1],
            ],
            "usage": ["m", 1, 1, 2],
            "context": {},
            "partial": False,
            "at": asked,
            "profile": {"tenant": "anonymous", "user_id": "late", "facts": facts},
        },
    )


async def test_a_late_delivery_never_undoes_a_newer_statement(pg_dsn: str) -> None:
    pool = await create_pool(PostgresConfig(dsn=pg_dsn))
    try:
        store = PostgresSessionStore(pool)
        await store.migrate()
        older = _turn_event(
            str(uuid.uuid4()), "2026-01-01T10:00:00.000Z", {"home_location": "Paris", "name": "Ann"}
        )
        newer = _turn_event(
            str(uuid.uuid4()), "2026-01-01T11:00:00.000Z", {"home_location": "Rome"}
        )
        await store.write([newer])
        await store.write([older])  # a claimed entry of a crashed writer, delivered last
        await store.write([newer, older])  # and both again
        assert await stored_facts(pg_dsn, "late") == {"home_location": "Rome", "name": "Ann"}
    finally:
        await pool.close()


async def test_behind_a_gateway_only_its_user_header_names_the_user(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    sc = await start_sidecar(identity={"trust_headers": True}, **PROFILE)
    alice = {"X-Tenant-ID": "acme", "X-User-ID": "alice"}
    await ask(http, sc.url, "我住在西安", "g-1", headers=alice)
    await ask(http, sc.url, "今天天气怎么样", "g-2", headers=alice)
    assert last_forwarded(upstream)["context"]["location"] == "西安"
    # A body naming alice cannot read her profile as bob, nor without a user header.
    bob = {"X-Tenant-ID": "acme", "X-User-ID": "bob"}
    await ask(http, sc.url, "今天天气怎么样", "g-3", user="alice", headers=bob)
    assert "profile" not in last_forwarded(upstream)["context"]
    await ask(http, sc.url, "今天天气怎么样", "g-4", user="alice", headers={"X-Tenant-ID": "acme"})
    assert "profile" not in last_forwarded(upstream)["context"]


async def test_a_jwt_users_facts_survive_a_token_refresh_and_a_forged_token_gets_none(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    sc = await start_sidecar(
        identity={"mode": "jwt", "jwt": {"secret": HS_SECRET, "algorithms": ["HS256"]}},
        **PROFILE,
    )

    def bearer(sub: str, secret: str = HS_SECRET) -> dict[str, str]:
        return {"Authorization": f"Bearer {hs_token(claims(sub), secret)}"}

    # A body naming another user changes nothing: the token's user is the user.
    await ask(http, sc.url, "I live in Lyon", "j-1", user="someone-else", headers=bearer("ann"))
    await ask(http, sc.url, "weather tomorrow?", "j-2", headers=bearer("ann"))  # a new token
    assert last_forwarded(upstream)["context"]["location"] == "Lyon"
    await ask(http, sc.url, "weather tomorrow?", "j-3", headers=bearer("bea"))
    assert "profile" not in last_forwarded(upstream)["context"]
    forged = bearer("ann", secret="not-the-secret-of-this-deployment!!")
    await ask(http, sc.url, "weather tomorrow?", "j-4", headers=forged)
    assert "profile" not in last_forwarded(upstream).get("context", {})
