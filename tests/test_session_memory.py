"""Session memory on the tasks route, against real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import gzip
import uuid
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis

from sidecar.app import REDIS_STORE, SESSIONS
from sidecar.config import Config
from sidecar.context import estimate_tokens
from sidecar.session.cache import snapshot_bytes
from sidecar.session.model import Message, SessionKey
from sidecar.store.breaker import CircuitBreaker
from sidecar.store.client import make_client
from sidecar.store.redis import RedisSessionStore
from tests.harness import FakeUpstream
from tests.harness.waiting import pg_fetch, pg_value, wait_for_rows
from tests.turns import post_turn

WEATHER = ("今天天气怎么样", "巴黎", "那明天呢")


def tasks_requests(upstream: FakeUpstream) -> list[dict[str, Any]]:
    return [r.json for r in upstream.requests_to("/api/tasks")]


async def test_weather_conversation_forwards_history_in_order_and_stores_everything(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession, pg_dsn: str
) -> None:
    sc = await start_sidecar()
    sid = "weather-1"
    answers = []
    for query in WEATHER:
        status, body, headers = await post_turn(http, sc.url, query, sid)
        assert status == 200
        assert headers["X-Session-ID"] == sid
        assert headers["Server-Timing"].startswith("sidecar;dur=")
        answers.append(body["result"])

    third = tasks_requests(upstream)[2]
    history = third["history"]
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", WEATHER[0]),
        ("assistant", answers[0]),
        ("user", WEATHER[1]),
        ("assistant", answers[1]),
    ]
    assert all(m["timestamp"] for m in history)
    assert third["session_id"] == sid
    assert upstream.requests_to("/api/tasks")[2].headers["X-Session-ID"] == sid

    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages WHERE session_id = $1", 6, sid)
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM token_usage WHERE session_id = $1", 3, sid)
    rows = await pg_fetch(
        pg_dsn, "SELECT seq, role, content FROM messages WHERE session_id = $1 ORDER BY seq", sid
    )
    assert [r["content"] for r in rows] == [
        WEATHER[0],
        answers[0],
        WEATHER[1],
        answers[1],
        WEATHER[2],
        answers[2],
    ]
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5, 6]
    reported = sum(u["total_tokens"] for u in upstream.reported_usage)
    assert (
        await pg_value(pg_dsn, "SELECT tokens_used FROM sessions WHERE session_id = $1", sid)
        == reported
    )
    assert (
        await pg_value(
            pg_dsn, "SELECT sum(total_tokens) FROM token_usage WHERE session_id = $1", sid
        )
        == reported
    )


async def test_request_without_session_id_gets_one_and_the_next_sees_the_first_turn(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    sc = await start_sidecar()
    status, first, headers = await post_turn(http, sc.url, "tell me about Berlin")
    assert status == 200
    sid = headers["X-Session-ID"]
    assert uuid.UUID(sid)
    assert tasks_requests(upstream)[0]["session_id"] == sid

    await post_turn(http, sc.url, "and its history?", sid)
    history = tasks_requests(upstream)[1]["history"]
    assert [m["content"] for m in history] == ["tell me about Berlin", first["result"]]


async def test_fifty_concurrent_turns_on_one_session_lose_nothing(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession, pg_dsn: str
) -> None:
    sc = await start_sidecar()
    sid = "busy"
    results = await asyncio.gather(
        *(post_turn(http, sc.url, f"question {i}", sid) for i in range(50))
    )
    assert [r[0] for r in results] == [200] * 50

    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages WHERE session_id = $1", 100, sid)
    seqs = [
        r["seq"]
        for r in await pg_fetch(pg_dsn, "SELECT seq FROM messages WHERE session_id = $1", sid)
    ]
    assert sorted(seqs) == list(range(1, 101))
    reported = sum(u["total_tokens"] for u in upstream.reported_usage)
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM token_usage WHERE session_id = $1", 50, sid)
    row = (
        await pg_fetch(
            pg_dsn, "SELECT tokens_used, message_count FROM sessions WHERE session_id = $1", sid
        )
    )[0]
    assert (row["tokens_used"], row["message_count"]) == (reported, 100)
    # Each user message is paired with the answer to it.
    pairs = await pg_fetch(
        pg_dsn,
        "SELECT u.content AS q, a.content AS a FROM messages u JOIN messages a"
        " ON a.turn_id = u.turn_id AND a.role = 'assistant' WHERE u.role = 'user'"
        " AND u.session_id = $1",
        sid,
    )
    assert len(pairs) == 50
    assert all(p["a"] == f"answer to: {p['q']}" for p in pairs)


async def test_history_is_restored_from_postgres_after_redis_loses_the_session(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_url: str,
) -> None:
    sc = await start_sidecar()
    sid = "restored"
    for query in WEATHER[:2]:
        await post_turn(http, sc.url, query, sid)
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages WHERE session_id = $1", 4, sid)
    expected = [(m["role"], m["content"]) for m in tasks_requests(upstream)[1]["history"]]
    expected += [
        ("user", WEATHER[1]),
        ("assistant", f"answer to: {tasks_requests(upstream)[1]['query']}"),
    ]

    client = aioredis.Redis.from_url(redis_url)
    await client.flushall()
    await client.aclose()

    await post_turn(http, sc.url, WEATHER[2], sid)
    third = tasks_requests(upstream)[2]
    assert [(m["role"], m["content"]) for m in third["history"]] == expected
    assert third["context"]["location"] == "巴黎"  # the context came back too
    # Sequence numbers continue after the restore.
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages WHERE session_id = $1", 6, sid)
    seqs = [
        r["seq"]
        for r in await pg_fetch(
            pg_dsn, "SELECT seq FROM messages WHERE session_id = $1 ORDER BY seq", sid
        )
    ]
    assert seqs == [1, 2, 3, 4, 5, 6]


async def test_history_is_restored_after_the_redis_copy_expires(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_url: str,
    sidecar_config: dict[str, Any],
) -> None:
    sc = await start_sidecar(redis={"session_ttl_s": 1})
    sid = "expiring"
    await post_turn(http, sc.url, "first question", sid)
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages WHERE session_id = $1", 2, sid)
    client = aioredis.Redis.from_url(redis_url)
    prefix = sidecar_config["redis"]["key_prefix"]
    try:

        async def session_keys() -> list[bytes]:
            return [k async for k in client.scan_iter(match=f"{prefix}:*:s:*")]

        deadline = asyncio.get_running_loop().time() + 10
        while await session_keys():
            assert asyncio.get_running_loop().time() < deadline, "keys never expired"
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()
    await post_turn(http, sc.url, "second question", sid)
    history = tasks_requests(upstream)[1]["history"]
    assert [m["content"] for m in history] == ["first question", "answer to: first question"]


async def test_a_turn_through_one_replica_is_seen_by_the_other(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    a = await start_sidecar()
    b = await start_sidecar()
    sid = "shared"
    await post_turn(http, b.url, "one", sid)  # b caches the session locally
    await post_turn(http, a.url, "two", sid)  # a turn that b did not see
    await post_turn(http, b.url, "three", sid)
    history = tasks_requests(upstream)[2]["history"]
    assert [m["content"] for m in history] == ["one", "answer to: one", "two", "answer to: two"]


async def test_same_idempotency_key_records_one_turn(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession, pg_dsn: str
) -> None:
    sc = await start_sidecar()
    sid = "idem"
    for _ in range(2):
        status, _, _ = await post_turn(
            http, sc.url, "pay once", sid, headers={"Idempotency-Key": "k1"}
        )
        assert status == 200
    await post_turn(http, sc.url, "next", sid)
    history = tasks_requests(upstream)[2]["history"]
    assert [m["content"] for m in history] == ["pay once", "answer to: pay once"]
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages WHERE session_id = $1", 4, sid)
    assert (
        await pg_value(pg_dsn, "SELECT count(*) FROM token_usage WHERE session_id = $1", sid) == 2
    )


async def test_an_upstream_error_records_nothing(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession, pg_dsn: str
) -> None:
    sc = await start_sidecar()
    sid = "failing"
    await post_turn(http, sc.url, "works", sid)
    upstream.tasks_status = 500
    status, _, _ = await post_turn(http, sc.url, "breaks", sid)
    assert status == 500  # the upstream's own status and body reach the client
    upstream.tasks_status = 200
    await post_turn(http, sc.url, "works again", sid)
    history = tasks_requests(upstream)[2]["history"]
    assert [m["content"] for m in history] == ["works", "answer to: works"]
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages WHERE session_id = $1", 4, sid)
    contents = {
        r["content"]
        for r in await pg_fetch(pg_dsn, "SELECT content FROM messages WHERE session_id = $1", sid)
    }
    assert "breaks" not in contents


async def test_bad_input_is_a_400_and_records_nothing(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    sc = await start_sidecar(session={"max_body_bytes": 10_000})
    cases: list[tuple[bytes, int, str]] = [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_body"),
        (b'{"query": ""}', 400, "invalid_query"),
        (b'{"query": 5}', 400, "invalid_query"),
        (b'{"query": "q", "session_id": "has space"}', 400, "invalid_session_id"),
        (b'{"query": "q", "session_id": "' + b"x" * 129 + b'"}', 400, "invalid_session_id"),
        (b'{"query": "q", "context": [1]}', 400, "invalid_context"),
        (b'{"query": "' + b"x" * 20_000 + b'"}', 413, "payload_too_large"),
        ('{"query": "\u0000\udc80"}'.encode("utf-8", "surrogatepass"), 400, "invalid_json"),
    ]
    for raw, status, code in cases:
        async with http.post(
            f"{sc.url}/api/tasks", data=raw, headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == status, raw[:60]
            body = await r.json()
            assert body["error"]["code"] == code
            assert body["error"]["message"]
    assert upstream.requests_to("/api/tasks") == []
    status, _, _ = await post_turn(http, sc.url, "still fine", "ok")
    assert status == 200


async def test_tenants_do_not_share_sessions(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    sc = await start_sidecar()
    await post_turn(
        http, sc.url, "secret of alice", "same-id", headers={"Authorization": "Bearer alice"}
    )
    await post_turn(http, sc.url, "hello", "same-id", headers={"Authorization": "Bearer bob"})
    assert tasks_requests(upstream)[1]["history"] == []


class RoundTrips:
    """Counts the commands the sidecar's request path sends to Redis (each is one round trip:
    a script call or a single command; the store uses no pipelines)."""

    def __init__(self, store: RedisSessionStore) -> None:
        self.calls: list[str] = []
        original = store.client.execute_command

        async def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(str(args[0]).upper())
            return await original(*args, **kwargs)

        store.client.execute_command = counting  # type: ignore[method-assign,union-attr]
        # Script calls on a single node go out on the store's own connections.
        lane = store._lane
        if lane is not None:
            evalsha = lane.evalsha

            async def counting_scripts(*args: Any) -> Any:
                self.calls.append("EVALSHA")
                return await evalsha(*args)

            lane.evalsha = counting_scripts  # type: ignore[method-assign]


async def _evalsha_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_load_is_one_redis_round_trip_and_commit_one_more(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession, redis_url: str
) -> None:
    sc = await start_sidecar()
    trips = RoundTrips(sc.app[REDIS_STORE])
    sid = "counted"
    await post_turn(http, sc.url, "warm up", sid)
    server = aioredis.Redis.from_url(redis_url)
    try:
        trips.calls.clear()
        before = await _evalsha_calls(server)
        await post_turn(http, sc.url, "counted turn", sid)
        assert trips.calls == ["EVALSHA", "EVALSHA"]  # load, commit
        assert await _evalsha_calls(server) - before == 2  # and Redis agrees

        # A session this replica has not seen yet: still one round trip to load it.
        other = await start_sidecar()
        other_trips = RoundTrips(other.app[REDIS_STORE])
        await post_turn(http, other.url, "from elsewhere", sid)
        assert other_trips.calls == ["EVALSHA", "EVALSHA"]

        # An upstream error: the load only.
        upstream.tasks_status = 502
        trips.calls.clear()
        await post_turn(http, sc.url, "failed turn", sid)
        assert trips.calls == ["EVALSHA"]
    finally:
        await server.aclose()


async def _bytes_sent_by_redis(client: aioredis.Redis) -> int:
    return int((await client.info("stats"))["total_net_output_bytes"])


async def test_history_load_does_not_grow_with_session_length(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    redis_url: str,
    sidecar_config: dict[str, Any],
) -> None:
    """A 5,000-message session costs Redis no more bytes to load than a 50-message one."""
    cfg = Config.from_mapping({**sidecar_config, "session": {"max_stored_messages": 10_000}})
    client = make_client(cfg.redis, cluster=False)
    store = RedisSessionStore(client, cfg.redis, CircuitBreaker(3, 1.0))
    for sid, n in (("short", 50), ("long", 5000)):
        msgs = [
            Message(
                seq=i + 1,
                id=str(uuid.uuid4()),
                role="user" if i % 2 == 0 else "assistant",
                content=f"message number {i} " + "x" * 40,
                timestamp="2026-01-01T00:00:00Z",
            )
            for i in range(n)
        ]
        await store.seed(
            SessionKey("anonymous", sid),
            last_seq=n,
            tokens_used=0,
            message_count=n,
            created_at="2026-01-01T00:00:00Z",
            updated_at="2026-01-01T00:00:00Z",
            context={},
            messages=msgs,
            announce=False,
        )
    await client.aclose()

    sc = await start_sidecar(session={"max_stored_messages": 10_000})
    stats = aioredis.Redis.from_url(redis_url)
    sent = {}
    try:
        for sid in ("short", "long"):
            before = await _bytes_sent_by_redis(stats)
            await post_turn(http, sc.url, "what did we say?", sid)
            sent[sid] = await _bytes_sent_by_redis(stats) - before
    finally:
        await stats.aclose()
    forwarded = {r["session_id"]: len(r["history"]) for r in tasks_requests(upstream)}
    assert forwarded == {"short": 50, "long": 50}
    # Same window, same cost (allow for the writer's background reads in between).
    assert sent["long"] < sent["short"] * 1.5, sent


async def test_token_budget_cuts_the_window_counting_cjk_properly(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    budget = 60
    sc = await start_sidecar(session={"history_token_budget": budget})
    sid = "budget"
    queries = ["天" * 40, "short one", "third"]
    for query in queries:
        await post_turn(http, sc.url, query, sid)

    # Assistant messages cost what the upstream reported; user messages are estimated.
    costs = []
    for query, usage in zip(queries[:2], upstream.reported_usage[:2], strict=True):
        costs += [
            (query, estimate_tokens(query)),
            (f"answer to: {query}", usage["completion_tokens"]),
        ]
    expected: list[str] = []
    used = 0
    for content, cost in reversed(costs):
        if used + cost > budget:
            break
        expected.insert(0, content)
        used += cost
    history = [m["content"] for m in tasks_requests(upstream)[2]["history"]]
    assert history == expected
    assert estimate_tokens("天" * 40) >= 30  # a CJK character is about a token, not a quarter
    assert "天" * 40 not in history


async def test_tenant_headers_are_trusted_only_when_configured(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession, pg_dsn: str
) -> None:
    trusting = await start_sidecar(identity={"trust_headers": True})
    await post_turn(http, trusting.url, "acme secret", "s", headers={"X-Tenant-ID": "acme"})
    await post_turn(http, trusting.url, "hi", "s", headers={"X-Tenant-ID": "globex"})
    assert tasks_requests(upstream)[1]["history"] == []
    await post_turn(http, trusting.url, "again", "s", headers={"X-Tenant-ID": "acme"})
    assert tasks_requests(upstream)[2]["history"][0]["content"] == "acme secret"

    # Not behind a trusted gateway: a client cannot claim another tenant with a header.
    plain = await start_sidecar(identity={"trust_headers": False})
    await post_turn(http, plain.url, "spoof", "s", headers={"X-Tenant-ID": "acme"})
    assert tasks_requests(upstream)[3]["history"] == []

    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 8)
    tenants = {r["tenant"] for r in await pg_fetch(pg_dsn, "SELECT DISTINCT tenant FROM sessions")}
    assert tenants == {"acme", "globex", "anonymous"}


async def test_credentials_are_hashed_never_stored(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession, pg_dsn: str
) -> None:
    sc = await start_sidecar()
    secret = "Bearer sk-very-secret-token"
    await post_turn(http, sc.url, "hello", "s", headers={"Authorization": secret})
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 2)
    tenant = await pg_value(pg_dsn, "SELECT tenant FROM sessions")
    assert "sk-very-secret-token" not in tenant
    assert tenant.startswith("key-")


async def test_compressed_turn_bodies_are_decoded_and_bounded(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    sc = await start_sidecar(session={"max_body_bytes": 10_000})
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    body = orjson.dumps({"query": "compressed hello", "session_id": "gz"})
    async with http.post(f"{sc.url}/api/tasks", data=gzip.compress(body), headers=headers) as r:
        assert r.status == 200
    forwarded = upstream.requests_to("/api/tasks")[0]
    assert forwarded.json["query"] == "compressed hello"
    assert "Content-Encoding" not in forwarded.headers

    bomb = gzip.compress(orjson.dumps({"query": "x" * 5_000_000}))
    assert len(bomb) < 10_000  # small on the wire, huge once decoded
    cases = [
        (gzip.compress(body)[:-8] + b"garbage!", "gzip", 400, "invalid_body"),
        (body, "br", 400, "unsupported_content_encoding"),
        (bomb, "gzip", 413, "payload_too_large"),
    ]
    for raw, encoding, status, code in cases:
        async with http.post(
            f"{sc.url}/api/tasks", data=raw, headers={**headers, "Content-Encoding": encoding}
        ) as r:
            assert r.status == status
            assert (await r.json())["error"]["code"] == code
    assert len(upstream.requests_to("/api/tasks")) == 1


async def test_a_pasted_document_is_forwarded_without_holding_up_the_sidecar(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    """Entity extraction costs more than linear time in the text (some 10,000-character texts
    took tens of seconds, freezing every request); a long query is forwarded without it."""
    sc = await start_sidecar()
    document = "今天北京天气怎么样，明天上海会下雨吗？" * 15_000  # 285k characters, 855 kB
    async with http.post(
        f"{sc.url}/api/tasks",
        data=orjson.dumps({"query": document, "session_id": "pasted"}),  # UTF-8, not \\u escapes
        headers={"Content-Type": "application/json"},
    ) as r:
        assert r.status == 200
    forwarded = tasks_requests(upstream)[0]
    assert forwarded["query"] == document
    assert "location" not in forwarded["context"]
    status, _, _ = await post_turn(http, sc.url, "那明天呢", "pasted")
    assert status == 200


async def test_the_cache_counts_a_growing_window_as_it_holds_it(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    # The cache's byte bound (session.cache_max_bytes) rests on the size it counts for each
    # window; a window grown by turns, and trimmed at history_limit, must count what it holds.
    sc = await start_sidecar(session={"history_limit": 4})
    for i in range(7):
        status, _, _ = await post_turn(http, sc.url, f"question {i} " + "x" * (10 * i), "grown")
        assert status == 200
    cache = sc.app[SESSIONS].cache
    (snapshot, counted), *_ = cache._entries.values()
    assert [m.content for m in snapshot.window][-2].startswith("question 6")
    assert len(snapshot.window) == 4
    assert counted == snapshot_bytes(snapshot)
    assert cache.bytes == counted
