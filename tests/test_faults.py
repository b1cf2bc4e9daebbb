"""Nothing lost, nothing stuck: each fault is produced for real (servers stopped, killed or
frozen; the sidecar killed or terminated) and PostgreSQL is checked afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

import aiohttp
import asyncpg
import orjson
import psutil
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from sidecar.devservices import TemporaryPostgres, TemporaryRedis
from tests.harness import FakeUpstream, SidecarProcess, deep_merge
from tests.harness.killing import kill_holding_entries, stored_user_turns
from tests.harness.waiting import pg_fetch, pg_value, wait_for_rows, wait_until
from tests.turns import Answered, post_turn


async def assert_stored_exactly_once(pg_dsn: str, upstream: FakeUpstream, turns: int) -> None:
    """Every answered turn is in PostgreSQL once, with the token totals the upstream reported."""
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 2 * turns, timeout_s=60)
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM token_usage", turns, timeout_s=30)
    dupes = await pg_value(
        pg_dsn,
        "SELECT count(*) FROM (SELECT tenant, session_id, seq FROM messages"
        " GROUP BY 1, 2, 3 HAVING count(*) > 1) d",
    )
    assert dupes == 0
    user_dupes = await pg_value(
        pg_dsn,
        "SELECT count(*) FROM (SELECT session_id, content FROM messages WHERE role = 'user'"
        " GROUP BY 1, 2 HAVING count(*) > 1) d",
    )
    assert user_dupes == 0
    expected: Counter[str] = Counter()
    for answer in upstream.reported:
        expected[answer.session_id or ""] += answer.usage["total_tokens"]
    rows = await pg_fetch(pg_dsn, "SELECT session_id, tokens_used, message_count FROM sessions")
    assert {r["session_id"]: r["tokens_used"] for r in rows} == dict(expected)
    assert sum(r["message_count"] for r in rows) == 2 * turns


@pytest.mark.parametrize("fault", ["stop", "kill"])
async def test_postgres_down_while_turns_are_sent_loses_nothing(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    postgres_server: TemporaryPostgres,
    fault: str,
) -> None:
    """``stop`` is a clean shutdown; ``kill`` SIGKILLs the server and its backends mid-work."""
    sc = await start_sidecar(writer={"ready_max_lag": 100})
    sessions = [f"pg-down-{i}" for i in range(20)]
    first = await asyncio.gather(*(post_turn(http, sc.url, "hello", sid) for sid in sessions))
    assert all(status == 200 for status, _, _ in first)
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 40)

    await getattr(postgres_server, fault)()
    results: list[Answered] = []
    for round_ in range(9):
        results += await asyncio.gather(
            *(post_turn(http, sc.url, f"question {round_}", sid) for sid in sessions)
        )
    assert [status for status, _, _ in results] == [200] * 180
    async with http.get(f"{sc.url}/_sidecar/metrics") as r:
        metrics = await r.text()
    lag = next(line for line in metrics.splitlines() if line.startswith("sidecar_outbox_lag "))
    assert float(lag.split()[1]) >= 150  # the turns wait in the outbox, safe in Redis
    async with http.get(f"{sc.url}/_sidecar/readyz") as r:
        # Reported, not a reason to leave the Service: turns are safe in Redis meanwhile.
        assert r.status == 200
        body = await r.json()
    assert "postgres" in body["degraded"]
    assert body["outbox_lag"] >= 150
    assert any(p.startswith("writer:") and "waiting for PostgreSQL" in p for p in body["problems"])

    await postgres_server.start()
    await assert_stored_exactly_once(pg_dsn, upstream, 200)


async def test_sidecar_killed_mid_load_keeps_every_answered_turn(
    upstream: FakeUpstream,
    sidecar_config: dict[str, Any],
    pg_dsn: str,
    http: aiohttp.ClientSession,
    postgres_server: TemporaryPostgres,
    redis_url: str,
) -> None:
    config = deep_merge(sidecar_config, {"writer": {"claim_idle_ms": 1000, "block_ms": 200}})
    prefix = config["redis"]["key_prefix"]
    # The restarted process must take over the entries the dead one held.
    async with SidecarProcess(config) as proc:
        answered = await kill_holding_entries(
            proc, http, upstream, postgres_server, redis_url, prefix, "kill"
        )

    async with SidecarProcess(config):
        await wait_until(
            lambda: stored_user_turns(pg_dsn),
            lambda s: all(pair in s for pair in answered),
            timeout_s=30,
            what="every answered turn in PostgreSQL",
        )
        client = aioredis.Redis.from_url(redis_url)
        try:
            await wait_until(
                lambda: _outbox_length(client, prefix),
                lambda n: n == 0,
                timeout_s=30,
                what="the outbox drained",
            )
        finally:
            await client.aclose()
    stored = await stored_user_turns(pg_dsn)
    assert all(stored[pair] == 1 for pair in answered)
    assert max(stored.values()) == 1  # nothing twice, answered or not


async def _async(value: Any) -> Any:
    return value


async def test_sigterm_drains_slow_turns_and_flushes_them(
    upstream: FakeUpstream,
    sidecar_config: dict[str, Any],
    pg_dsn: str,
    http: aiohttp.ClientSession,
) -> None:
    upstream.tasks_delay_s = 1.5
    async with SidecarProcess(
        deep_merge(sidecar_config, {"shutdown": {"drain_timeout_s": 15}})
    ) as proc:
        pending = [
            asyncio.create_task(post_turn(http, proc.url, f"slow {i}", f"term-{i}"))
            for i in range(20)
        ]
        await wait_until(
            lambda: _async(len(upstream.requests_to("/api/tasks"))),
            lambda n: n == 20,
            what="20 turns in flight",
        )
        proc.terminate()
        results = await asyncio.gather(*pending)
        assert [status for status, _, _ in results] == [200] * 20
        assert await proc.wait() == 0
    # Checked after the process exited: its writer flushed before it stopped.
    assert await pg_value(pg_dsn, "SELECT count(*) FROM messages") == 40
    assert await pg_value(pg_dsn, "SELECT count(*) FROM token_usage") == 20


async def test_redis_down_serves_from_postgres_and_recovers_without_stale_history(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_server: TemporaryRedis,
) -> None:
    sc = await start_sidecar(redis={"breaker_reset_s": 0.5})
    sid = "redis-down"
    await post_turn(http, sc.url, "first", sid)
    await post_turn(http, sc.url, "second", sid)
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 4)

    await redis_server.stop()
    status, _, headers = await post_turn(http, sc.url, "during outage", sid)
    assert status == 200
    assert headers["X-Sidecar-Degraded"] == "redis"
    history = upstream.requests_to("/api/tasks")[-1].json["history"]
    assert [m["content"] for m in history] == [
        "first",
        "answer to: first",
        "second",
        "answer to: second",
    ]
    status, _, headers = await post_turn(http, sc.url, "brand new", "born-in-outage")
    assert (status, headers["X-Sidecar-Degraded"]) == (200, "redis")
    assert await pg_value(pg_dsn, "SELECT count(*) FROM messages") == 8

    await redis_server.start()  # with its old (now stale) copy of the session, from the AOF

    async def degraded() -> str | None:
        _, _, headers = await post_turn(http, sc.url, "ping", "probe")
        return headers.get("X-Sidecar-Degraded")

    await wait_until(degraded, lambda d: d is None, timeout_s=10, what="normal service")
    status, _, headers = await post_turn(http, sc.url, "after outage", sid)
    assert status == 200
    assert "X-Sidecar-Degraded" not in headers
    history = upstream.requests_to("/api/tasks")[-1].json["history"]
    assert [m["content"] for m in history][-2:] == ["during outage", "answer to: during outage"]
    assert len(history) == 6
    # The new session's outage turn is there too.
    await post_turn(http, sc.url, "again", "born-in-outage")
    history = upstream.requests_to("/api/tasks")[-1].json["history"]
    assert [m["content"] for m in history] == ["brand new", "answer to: brand new"]


async def test_hung_redis_costs_a_request_one_timeout_then_service_resumes(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_server: TemporaryRedis,
) -> None:
    timeout_s = 0.3
    sc = await start_sidecar(
        redis={
            "socket_timeout_s": timeout_s,
            "connect_timeout_s": timeout_s,
            "breaker_reset_s": 0.5,
        }
    )
    sid = "hung"
    await post_turn(http, sc.url, "before", sid)
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 2)

    await redis_server.pause()
    try:
        for i in range(6):
            started = time.monotonic()
            status, _, headers = await post_turn(
                http, sc.url, f"while frozen {i}", sid, timeout_s=10
            )
            elapsed = time.monotonic() - started
            assert status == 200
            assert "redis" in headers["X-Sidecar-Degraded"]
            # One socket timeout at most (then the breaker skips Redis), plus PostgreSQL's time.
            assert elapsed < timeout_s + 1.0, elapsed
    finally:
        await redis_server.resume()

    async def degraded() -> str | None:
        _, _, headers = await post_turn(http, sc.url, "ping", "probe-hung")
        return headers.get("X-Sidecar-Degraded")

    await wait_until(degraded, lambda d: d is None, timeout_s=10, what="normal service")
    await post_turn(http, sc.url, "after", sid)
    contents = [m["content"] for m in upstream.requests_to("/api/tasks")[-1].json["history"]]
    assert [c for c in contents if not c.startswith("answer")] == [
        "before",
        *(f"while frozen {i}" for i in range(6)),
    ]


async def test_poison_entry_is_dead_lettered_and_the_rest_written(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_url: str,
    postgres_server: TemporaryPostgres,
    sidecar_config: dict[str, Any],
) -> None:
    sc = await start_sidecar()
    await post_turn(http, sc.url, "hello", "poison")
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 2)
    prefix = sidecar_config["redis"]["key_prefix"]

    await postgres_server.stop()  # so the poison and good turns land in one batch
    for i in range(4):
        assert (await post_turn(http, sc.url, f"good {i}", "poison"))[0] == 200
    client = aioredis.Redis.from_url(redis_url)
    try:
        outbox = await anext(client.scan_iter(match=f"{prefix}:*:outbox"))
        bad = {
            "tenant": "anonymous",
            "session_id": "poison",
            "turn_id": "6f1c9a52-0b9e-4c57-9d0e-0d5b2f0c0001",
            "messages": [
                [
                    "6f1c9a52-0b9e-4c57-9d0e-0d5b2f0c0002",
                    "system",
                    "not a role",
                    "2026-01-01T00:00:00Z",
                    1,
                ],
                [
                    "6f1c9a52-0b9e-4c57-9d0e-0d5b2f0c0003",
                    "assistant",
                    "x",
                    "2026-01-01T00:00:00Z",
                    1,
                ],
            ],
            "usage": ["m", 1, 1, 2],
            "context": {},
            "partial": False,
            "at": "2026-01-01T00:00:00Z",
        }
        await client.xadd(outbox, {"kind": "turn", "seq": 900, "data": orjson.dumps(bad)})
        for i in range(4, 6):
            assert (await post_turn(http, sc.url, f"good {i}", "poison"))[0] == 200
        await postgres_server.start()

        await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 14)
        dead = await wait_until(
            lambda: client.xrange(f"{prefix}:dead-letters"),
            lambda r: len(r) == 1,
            what="one dead letter",
        )
        fields = dead[0][1]
        assert orjson.loads(fields[b"data"])["session_id"] == "poison"
        assert b"CheckViolation" in fields[b"error"]
        assert (
            await pg_value(pg_dsn, "SELECT count(*) FROM messages WHERE content = 'not a role'")
            == 0
        )
        async with http.get(f"{sc.url}/_sidecar/metrics") as r:
            assert "sidecar_writer_dead_letters_total 1.0" in await r.text()
        # Nothing is left waiting behind it.
        await wait_until(
            lambda: _outbox_length(client, prefix), lambda n: n == 0, what="an empty outbox"
        )
    finally:
        await client.aclose()


async def _outbox_length(client: aioredis.Redis, prefix: str) -> int:
    total = 0
    async for key in client.scan_iter(match=f"{prefix}:*:outbox"):
        total += await client.xlen(key)
    return total


async def test_both_stores_down_journals_the_turn_and_replays_it(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_server: TemporaryRedis,
    postgres_server: TemporaryPostgres,
    tmp_path: Any,
) -> None:
    journal = tmp_path / "journal.jsonl"
    sc = await start_sidecar(writer={"journal_path": str(journal)}, redis={"breaker_reset_s": 0.5})
    await post_turn(http, sc.url, "before", "journaled")
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 2)

    await redis_server.stop()
    await postgres_server.stop()
    try:
        status, _, headers = await post_turn(http, sc.url, "nobody home", "journaled")
        assert status == 200
        assert headers["X-Sidecar-Degraded"] == "postgres,redis"
        assert journal.exists()
    finally:
        await postgres_server.start()
        await redis_server.start()
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 4, timeout_s=30)
    assert (
        await pg_value(pg_dsn, "SELECT count(*) FROM messages WHERE content = 'nobody home'") == 1
    )
    await wait_until(lambda: _async(journal.exists()), lambda e: not e, what="journal emptied")


async def test_journal_replay_keeps_a_rejected_turn_aside_and_writes_the_rest(
    start_sidecar: Any, pg_dsn: str, tmp_path: Any
) -> None:
    """A journal left by an earlier process holds one turn PostgreSQL can never accept."""
    journal = tmp_path / "journal.jsonl"

    def entry(turn_id: str, role: str, content: str) -> bytes:
        payload = {
            "tenant": "anonymous",
            "session_id": "from-journal",
            "turn_id": turn_id,
            "messages": [
                [f"{turn_id[:-1]}1", role, content, "2026-01-01T00:00:00Z", 1],
                [f"{turn_id[:-1]}2", "assistant", "ok", "2026-01-01T00:00:01Z", 1],
            ],
            "usage": ["m", 1, 1, 2],
            "context": {},
            "partial": False,
            "at": "2026-01-01T00:00:01Z",
        }
        return (
            orjson.dumps({"tenant": "anonymous", "session_id": "from-journal", "turn": payload})
            + b"\n"
        )

    journal.write_bytes(
        entry("0b1c9a52-0b9e-4c57-9d0e-0d5b2f0c0000", "user", "kept one")
        + entry("0b1c9a52-0b9e-4c57-9d0e-0d5b2f0c1000", "system", "never fits")
        + b'{"cut short by a crash'  # the last line of a journal interrupted mid-write
        + b"\n"
        + entry("0b1c9a52-0b9e-4c57-9d0e-0d5b2f0c2000", "user", "kept two")
    )
    await start_sidecar(writer={"journal_path": str(journal)})

    rejected = tmp_path / "journal.jsonl.rejected"
    replaying = tmp_path / "journal.jsonl.replaying"
    await wait_until(
        lambda: _async(journal.exists() or replaying.exists()),
        lambda e: not e,
        what="journal replayed",
    )
    contents = {r["content"] for r in await pg_fetch(pg_dsn, "SELECT content FROM messages")}
    assert contents == {"kept one", "kept two", "ok"}
    assert await pg_value(pg_dsn, "SELECT count(*) FROM messages") == 4
    kept_aside = [orjson.loads(line) for line in rejected.read_bytes().splitlines()]
    assert [e["turn"]["messages"][0][2] for e in kept_aside] == ["never fits"]
    assert "check" in kept_aside[0]["error"].lower()


async def test_new_session_while_postgres_is_down_is_served_and_stored_later(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    postgres_server: TemporaryPostgres,
) -> None:
    sc = await start_sidecar()
    await post_turn(http, sc.url, "warm up", "other")
    await postgres_server.stop()
    try:
        # Not in Redis, and PostgreSQL cannot say whether it existed: served, and said so.
        status, _, headers = await post_turn(http, sc.url, "first words", "born-without-pg")
        assert status == 200
        assert headers["X-Sidecar-Degraded"] == "postgres"
        status, _, headers = await post_turn(http, sc.url, "second words", "born-without-pg")
        assert status == 200
        assert "X-Sidecar-Degraded" not in headers  # now in Redis: served as usual
        history = upstream.requests_to("/api/tasks")[-1].json["history"]
        assert [m["content"] for m in history] == ["first words", "answer to: first words"]
        async with http.get(
            f"{sc.url}/_sidecar/sessions/anonymous/born-without-pg",
            headers={"Authorization": "Bearer test-admin-token"},
        ) as r:
            assert r.status == 200  # the admin API reads Redis while PostgreSQL is away
        async with http.delete(
            f"{sc.url}/_sidecar/sessions/anonymous/born-without-pg",
            headers={"Authorization": "Bearer test-admin-token"},
        ) as r:
            assert r.status == 503  # nothing deleted: it would come back from the outbox
            assert (await r.json())["error"]["code"] == "store_unavailable"
    finally:
        await postgres_server.start()
    await wait_for_rows(
        pg_dsn, "SELECT count(*) FROM messages WHERE session_id = 'born-without-pg'", 4
    )
    assert (
        await pg_value(
            pg_dsn, "SELECT message_count FROM sessions WHERE session_id = 'born-without-pg'"
        )
        == 4
    )


async def test_redis_refusing_writes_falls_back_to_postgres(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_url: str,
) -> None:
    """Redis answers but refuses (out of memory): the turn is served and kept all the same."""
    sc = await start_sidecar()
    await post_turn(http, sc.url, "before", "refused")
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 2)
    client = aioredis.Redis.from_url(redis_url)
    await client.config_set("maxmemory", 1)
    try:
        status, _, headers = await post_turn(http, sc.url, "while full", "refused")
        assert status == 200
        assert headers["X-Sidecar-Degraded"] == "redis"
        history = upstream.requests_to("/api/tasks")[-1].json["history"]
        assert [m["content"] for m in history] == ["before", "answer to: before"]
    finally:
        await client.config_set("maxmemory", 0)
        await client.aclose()
    assert await pg_value(pg_dsn, "SELECT count(*) FROM messages WHERE content = 'while full'") == 1


async def test_idempotency_holds_while_redis_is_down(
    start_sidecar: Any, http: aiohttp.ClientSession, pg_dsn: str, redis_server: TemporaryRedis
) -> None:
    sc = await start_sidecar()
    await redis_server.stop()
    for _ in range(2):
        async with http.post(
            f"{sc.url}/api/tasks",
            json={"query": "charge me once", "session_id": "idem-down"},
            headers={"Idempotency-Key": "order-17"},
        ) as r:
            assert r.status == 200
            assert r.headers["X-Sidecar-Degraded"] == "redis"
    assert await pg_value(pg_dsn, "SELECT count(*) FROM messages") == 2
    assert await pg_value(pg_dsn, "SELECT count(*) FROM token_usage") == 1
    assert await pg_value(pg_dsn, "SELECT message_count FROM sessions") == 2


async def test_postgres_frozen_does_not_hold_up_new_or_cached_sessions(
    start_sidecar: Any,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    postgres_server: TemporaryPostgres,
    redis_url: str,
) -> None:
    sc = await start_sidecar(session={"restore_timeout_s": 0.3})
    await post_turn(http, sc.url, "hello", "known")
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 2)
    client = aioredis.Redis.from_url(redis_url)
    await postgres_server.pause()
    try:
        # A session the sidecar names itself exists nowhere yet: PostgreSQL is not asked.
        async with http.post(f"{sc.url}/api/tasks", json={"query": "new here"}) as r:
            assert r.status == 200
            assert "X-Sidecar-Degraded" not in r.headers
        status, _, headers = await post_turn(http, sc.url, "again", "known")
        assert (status, headers.get("X-Sidecar-Degraded")) == (200, None)
        # One Redis lost: the restore is bounded by restore_timeout_s and the turn still served.
        async for key in client.scan_iter(match="*:s:*known*"):
            await client.delete(key)
        status, _, headers = await post_turn(http, sc.url, "after loss", "known", timeout_s=5)
        assert (status, headers["X-Sidecar-Degraded"]) == (200, "postgres")
    finally:
        await postgres_server.resume()
        await client.aclose()


async def test_upstream_stalling_mid_answer_is_a_504(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession, pg_dsn: str
) -> None:
    async def stall(request: web.Request, body: Any) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "application/json", "Content-Length": "100"}
        )
        await resp.prepare(request)
        await resp.write(b'{"result": "half an ans')
        await asyncio.sleep(3)
        return resp

    sc = await start_sidecar(upstream={"read_timeout_s": 0.5})
    upstream.tasks_handler = stall
    status, _, _ = await post_turn(http, sc.url, "hello", "stalled")
    assert status == 504
    async with http.post(f"{sc.url}/api/tasks", json={"query": "q", "session_id": "stalled"}) as r:
        assert (await r.json())["error"]["code"] == "upstream_timeout"
    assert await pg_value(pg_dsn, "SELECT count(*) FROM messages") == 0


async def test_unreadable_outbox_entry_is_dead_lettered_not_blocking(
    start_sidecar: Any,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_url: str,
    sidecar_config: dict[str, Any],
) -> None:
    sc = await start_sidecar()
    await post_turn(http, sc.url, "first", "unreadable")
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 2)
    prefix = sidecar_config["redis"]["key_prefix"]
    client = aioredis.Redis.from_url(redis_url)
    try:
        outbox = await anext(client.scan_iter(match=f"{prefix}:*:outbox"))
        await client.xadd(outbox, {"kind": "turn", "seq": 1, "data": b"{not json"})
        await client.xadd(outbox, {"kind": "turn", "seq": 1})  # no data at all
        await post_turn(http, sc.url, "second", "unreadable")
        await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 4)
        dead = await wait_until(
            lambda: client.xrange(f"{prefix}:dead-letters"),
            lambda r: len(r) == 2,
            what="two dead letters",
        )
        assert dead[0][1][b"field:data"] == b"{not json"
        await wait_until(
            lambda: _outbox_length(client, prefix), lambda n: n == 0, what="an empty outbox"
        )
    finally:
        await client.aclose()


async def test_sigterm_with_a_commit_in_flight_finishes_it_before_redis_closes(
    upstream: FakeUpstream,
    sidecar_config: dict[str, Any],
    pg_dsn: str,
    http: aiohttp.ClientSession,
    redis_server: TemporaryRedis,
) -> None:
    """The request outlives the drain and is cancelled mid-commit; its commit is handed to a
    task of its own and sent again: the shutdown waits for it, and only then do the writer
    flush and Redis close. The turn is kept once."""
    answer_now = asyncio.Event()

    async def held(request: web.Request, body: Any) -> web.StreamResponse:
        await answer_now.wait()
        usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
        return web.json_response({"result": "answered before the shutdown", "usage": usage})

    upstream.tasks_handler = held
    config = deep_merge(
        sidecar_config,
        {
            # Long enough that the commit waits for Redis rather than giving up on it.
            "redis": {"socket_timeout_s": 30},
            "shutdown": {"drain_timeout_s": 1},
            "writer": {"block_ms": 100},
        },
    )
    async with SidecarProcess(config) as proc:
        sent = asyncio.create_task(post_turn(http, proc.url, "asked before the shutdown", "shield"))
        await wait_until(
            lambda: _async(len(upstream.requests_to("/api/tasks"))),
            lambda n: n == 1,
            what="the turn at the upstream",
        )
        await redis_server.pause()  # the commit that follows the answer cannot finish yet
        try:
            answer_now.set()
            proc.terminate()
            # The drain gives up on the request, which is cancelled; its commit is not, and
            # the shutdown keeps waiting for it (Redis still frozen) past the point where the
            # writer's stop would have closed the stores.
            await wait_until(
                lambda: _async(proc.log_text()),
                lambda text: "still waiting for 1 commit(s) in flight" in text,
                timeout_s=20,
                what="the shutdown still waiting for the commit",
            )
        finally:
            await redis_server.resume()
        assert await proc.wait() == 0, proc.log_tail()
        with contextlib.suppress(aiohttp.ClientError):
            await sent  # the client's connection was closed with the listener
    log = proc.log_text()
    assert "still in flight at shutdown" not in log, log
    rows = await pg_fetch(
        pg_dsn, "SELECT role, content FROM messages WHERE session_id = 'shield' ORDER BY seq"
    )
    assert [(r["role"], r["content"]) for r in rows] == [
        ("user", "asked before the shutdown"),
        ("assistant", "answered before the shutdown"),
    ]


async def test_a_client_gone_before_its_turn_is_committed_leaves_the_turn_kept_once(
    upstream: FakeUpstream,
    sidecar_config: dict[str, Any],
    pg_dsn: str,
    redis_server: TemporaryRedis,
) -> None:
    """The upstream answers, and the client hangs up while Redis is frozen, so before the turn
    can be committed. Its request goes on (a client going away cancels no handler): once Redis
    is back the turn is committed and written, once."""
    answer_now, answered = asyncio.Event(), asyncio.Event()

    async def held(request: web.Request, body: Any) -> web.StreamResponse:
        await answer_now.wait()
        answered.set()
        usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
        return web.json_response({"result": "answered to nobody", "usage": usage})

    upstream.tasks_handler = held
    config = deep_merge(sidecar_config, {"redis": {"socket_timeout_s": 30}})
    async with SidecarProcess(config) as proc, aiohttp.ClientSession() as client:
        sent = asyncio.create_task(post_turn(client, proc.url, "asked, then gone", "gone"))
        await wait_until(
            lambda: _async(len(upstream.requests_to("/api/tasks"))),
            lambda n: n == 1,
            what="the turn at the upstream",
        )
        await redis_server.pause()
        try:
            answer_now.set()
            await wait_until(lambda: _async(answered.is_set()), what="the upstream's answer")
            sent.cancel()  # the client hangs up: its connection is closed
            with contextlib.suppress(asyncio.CancelledError):
                await sent
            await wait_until(
                lambda: _async(_clients_of(proc.pid, proc.port)),
                lambda n: n == 0,
                what="the sidecar to see its client gone",
            )
        finally:
            await redis_server.resume()
        await wait_for_rows(
            pg_dsn, "SELECT count(*) FROM messages WHERE session_id = 'gone'", 2, timeout_s=20
        )
        assert proc.returncode is None, proc.log_tail()
    rows = await pg_fetch(
        pg_dsn, "SELECT role, content FROM messages WHERE session_id = 'gone' ORDER BY seq"
    )
    assert [(r["role"], r["content"]) for r in rows] == [
        ("user", "asked, then gone"),
        ("assistant", "answered to nobody"),
    ]


def _clients_of(pid: int, port: int) -> int:
    """Connections established to the sidecar's listener."""
    return sum(
        1
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
    )


async def test_a_read_only_postgresql_is_waited_for_not_dead_lettered(
    start_sidecar: Any,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_url: str,
    sidecar_config: dict[str, Any],
) -> None:
    """After a failover the old primary answers as a read-only replica (SQLSTATE 25006): the
    writer waits for a writable server instead of setting acknowledged turns aside."""
    sc = await start_sidecar()
    await post_turn(http, sc.url, "hello", "ro")
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 2)
    prefix = sidecar_config["redis"]["key_prefix"]

    async def set_read_only(on: bool) -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute("SET default_transaction_read_only = off")
            value = "on" if on else "off"
            database = await conn.fetchval("SELECT current_database()")
            await conn.execute(
                f'ALTER DATABASE "{database}" SET default_transaction_read_only = {value}'
            )
            # The writer's pooled connections reconnect into the new setting.
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()

    await set_read_only(True)
    for i in range(5):
        assert (await post_turn(http, sc.url, f"during {i}", "ro"))[0] == 200
    client = aioredis.Redis.from_url(redis_url)
    try:
        # The writer meets the read-only server and retries; nothing may be set aside meanwhile.
        async def writer_failing() -> float:
            async with http.get(sc.url + "/_sidecar/metrics") as r:
                for line in (await r.text()).splitlines():
                    if line.startswith("sidecar_writer_failing "):
                        return float(line.split()[1])
            return 0.0

        await wait_until(writer_failing, lambda n: n == 1.0, what="the writer failing, retrying")
        assert await pg_value(pg_dsn, "SELECT count(*) FROM messages") == 2
        assert await client.xrange(f"{prefix}:dead-letters") == []
        await set_read_only(False)
        await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages", 2 * 6, timeout_s=30)
        assert await client.xrange(f"{prefix}:dead-letters") == []
    finally:
        await client.aclose()
