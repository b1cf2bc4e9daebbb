"""The test harness itself: servers that stop, crash and hang on demand, and the fake upstream."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
import redis.exceptions
from redis.crc import key_slot

from sidecar.devservices import TemporaryPostgres, TemporaryRedis, TemporaryRedisCluster
from sidecar.devservices.cluster import CLUSTER_SLOTS
from sidecar.store.postgres import PG_ERRORS
from tests.harness import (
    ADMIN_TOKEN,
    FakeUpstream,
    SidecarProcess,
    answer_text,
    base_config,
    deterministic_bytes,
    fake_usage,
)

# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------


def _client(url: str, timeout: float = 1.0) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


async def test_redis_stop_refuses_then_restart_same_url(
    redis_server: TemporaryRedis, redis_url: str
) -> None:
    client = _client(redis_url)
    try:
        await client.set("k", "v")
        await redis_server.stop()
        with pytest.raises(redis.exceptions.ConnectionError):
            await client.ping()
        await redis_server.start()
        assert redis_server.url == redis_url
        assert await client.ping() is True
        assert await client.get("k") == b"v", "appendonly keeps data across a clean stop"
    finally:
        await client.aclose()


async def test_redis_kill_then_restart(redis_server: TemporaryRedis, redis_url: str) -> None:
    await redis_server.kill()
    assert not redis_server.is_running
    await redis_server.restart()
    client = _client(redis_url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


async def test_redis_pause_hangs_until_resumed(
    redis_server: TemporaryRedis, redis_url: str
) -> None:
    client = _client(redis_url, timeout=0.3)
    try:
        assert await client.ping() is True
        await redis_server.pause()
        try:
            with pytest.raises(redis.exceptions.TimeoutError):
                await client.ping()
        finally:
            await redis_server.resume()
        assert await client.ping() is True
    finally:
        await client.aclose()


async def test_redis_url_fixture_flushes(redis_url: str) -> None:
    client = _client(redis_url)
    try:
        assert await client.dbsize() == 0
    finally:
        await client.aclose()


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


async def _select_one(dsn: str, timeout_s: float = 2.0) -> int:
    conn = await asyncpg.connect(dsn, timeout=timeout_s)
    try:
        value: int = await conn.fetchval("SELECT 1")
        return value
    finally:
        await conn.close()


async def test_postgres_stop_start_same_dsn(
    postgres_server: TemporaryPostgres, pg_dsn: str
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
    await conn.close()

    await postgres_server.stop()
    with pytest.raises(ConnectionRefusedError):
        await _select_one(pg_dsn)
    await postgres_server.start()

    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT x FROM t") == 42
    finally:
        await conn.close()


async def test_postgres_kill_then_restart(postgres_server: TemporaryPostgres, pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
    await postgres_server.kill()
    # A killed server surfaces in asyncpg as any of its connection errors.
    with pytest.raises(PG_ERRORS):
        await conn.fetchval("SELECT 1")
    conn.terminate()
    await postgres_server.restart()
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT x FROM t") == 7, "committed rows survive a crash"
    finally:
        await conn.close()


async def test_postgres_pause_hangs_until_resumed(
    postgres_server: TemporaryPostgres, pg_dsn: str
) -> None:
    # A connection opened before the pause is served by a backend in a session of its own
    # (setsid): the pause must reach it too, not only the postmaster's process group.
    conn = await asyncpg.connect(pg_dsn)
    try:
        await postgres_server.pause()
        try:
            with pytest.raises(asyncio.TimeoutError):
                await _select_one(pg_dsn, timeout_s=0.3)
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetchval("SELECT 1", timeout=0.3)
        finally:
            await postgres_server.resume()
        assert await _select_one(pg_dsn) == 1
    finally:
        conn.terminate()


async def test_restart_leaves_the_event_loop_serving(
    postgres_server: TemporaryPostgres, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    await postgres_server.ensure_running()
    restart = asyncio.create_task(postgres_server.restart())

    async def request() -> int:
        async with http.get(upstream.url + "/status/200") as resp:
            return resp.status

    served = asyncio.create_task(request())
    done, _ = await asyncio.wait({restart, served}, return_when=asyncio.FIRST_COMPLETED)
    assert served in done, "an HTTP request on this loop waited for PostgreSQL to restart"
    assert served.result() == 200
    await restart
    assert await _select_one(postgres_server.dsn) == 1


# --------------------------------------------------------------------------------------------
# Redis Cluster
# --------------------------------------------------------------------------------------------


async def test_redis_cluster_spreads_keys_over_three_healthy_masters(
    redis_cluster: TemporaryRedisCluster, redis_cluster_url: str
) -> None:
    assert redis_cluster_url == redis_cluster.url
    client = redis_cluster.client()
    try:
        keys = [f"key-{i}" for i in range(300)]
        for key in keys:
            await client.set(key, key.upper())
        slots = {key_slot(key.encode()) for key in keys}
        assert len(slots) > 250, "the keys should land in many slots"
        assert [await client.get(key) for key in keys] == [k.upper().encode() for k in keys]
    finally:
        await client.aclose()

    owned = await redis_cluster.slots_per_node()
    assert sorted(owned) == sorted(redis_cluster.ports)
    assert all(count > 0 for count in owned.values()), owned
    assert sum(owned.values()) == CLUSTER_SLOTS
    per_node = [await node.execute("DBSIZE") for node in redis_cluster.nodes]
    assert all(n > 0 for n in per_node), f"every master holds some keys: {per_node}"
    assert sum(per_node) == len(keys)
    for node in redis_cluster.nodes:
        info = await redis_cluster.cluster_info(node)
        assert info["cluster_state"] == "ok"
        assert info["cluster_known_nodes"] == "3"


# --------------------------------------------------------------------------------------------
# Fake upstream
# --------------------------------------------------------------------------------------------


async def test_sse_events_arrive_before_the_last_is_sent(
    upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    async with http.get(upstream.url + "/sse", params={"n": "10", "interval": "0.05"}) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        first = await resp.content.readuntil(b"\n\n")
        assert json.loads(first.removeprefix(b"data: ")) == {"i": 0}
        assert upstream.sse_last_sent_at is None, "the first event came only after the last"
        rest = await resp.read()
    events = [json.loads(line[6:]) for line in rest.decode().split("\n\n") if line]
    assert events == [{"i": i} for i in range(1, 10)]
    assert upstream.sse_last_sent_at is not None
    assert not upstream.sse_client_gone.is_set()
    assert upstream.open_streams == 0


async def test_sse_notices_client_going_away(
    upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    resp = await http.get(upstream.url + "/sse", params={"n": "100", "interval": "0.02"})
    await resp.content.readuntil(b"\n\n")
    assert upstream.open_streams == 1
    resp.close()
    await asyncio.wait_for(upstream.sse_client_gone.wait(), 2)
    assert upstream.open_streams == 0
    assert upstream.sse_last_sent_at is None


async def test_echo_status_bytes_and_redirect(
    upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        upstream.url + "/echo/a/b?x=1&x=2", data=b"hi", headers={"X-Test": "1"}
    ) as resp:
        echo = await resp.json()
    assert (echo["method"], echo["path"], echo["query_string"]) == ("POST", "/echo/a/b", "x=1&x=2")
    assert echo["body"] == "hi"
    assert ["X-Test", "1"] in echo["headers"]
    recorded = upstream.requests_to("/echo/a/b")
    assert len(recorded) == 1
    assert recorded[0].body == b"hi"
    assert recorded[0].headers.getall("X-Test") == ["1"]

    async with http.get(upstream.url + "/status/418") as resp:
        assert resp.status == 418
        assert resp.headers["X-Upstream"] == "yes"
        assert await resp.json() == {"status": 418}

    payload = deterministic_bytes(300_000, seed=1)
    async with http.put(upstream.url + "/bytes", data=payload) as resp:
        assert await resp.read() == payload
    assert upstream.requests_to("/bytes")[0].body == payload

    async with http.get(upstream.url + "/bytes/100000") as resp:
        assert await resp.read() == deterministic_bytes(100_000)

    async with http.get(upstream.url + "/redirect", allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "/echo/x"


async def test_tasks_json_and_sse(upstream: FakeUpstream, http: aiohttp.ClientSession) -> None:
    history = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    body = {"query": "巴黎天气", "session_id": "s1", "history": history}
    async with http.post(upstream.url + "/api/tasks", json=body) as resp:
        answer = await resp.json()
    expected_usage = fake_usage(["巴黎天气", "hello", "hi"], answer_text("巴黎天气"))
    assert answer == {
        "result": "answer to: 巴黎天气",
        "usage": expected_usage,
        "model": "fake-1",
        "session_id": "s1",
    }
    assert upstream.reported_usage == [expected_usage]

    upstream.tasks_mode = "sse"
    async with http.post(upstream.url + "/api/v1/tasks", json={"query": "q"}) as resp:
        text = await resp.text()
    events = [json.loads(e[6:]) for e in text.split("\n\n") if e]
    assert "".join(e.get("delta", "") for e in events) == answer_text("q")
    assert events[-1]["done"] is True
    assert events[-1]["usage"] == upstream.reported_usage[-1]

    upstream.tasks_status = 503
    async with http.post(upstream.url + "/api/tasks", json={"query": "q"}) as resp:
        assert resp.status == 503
    assert len(upstream.reported) == 2


async def test_tasks_async_polls(upstream: FakeUpstream, http: aiohttp.ClientSession) -> None:
    upstream.tasks_mode = "async"
    async with http.post(upstream.url + "/api/tasks", json={"query": "q"}) as resp:
        queued = await resp.json()
    assert queued["status"] == "queued"
    statuses = []
    for _ in range(4):
        async with http.get(f"{upstream.url}/api/tasks/{queued['task_id']}") as resp:
            statuses.append(await resp.json())
    assert [s["status"] for s in statuses] == ["running", "running", "completed", "completed"]
    assert statuses[-1]["result"] == answer_text("q")
    assert len(upstream.reported) == 1


async def test_chat_completions_with_openai_sdk(upstream: FakeUpstream) -> None:
    openai = pytest.importorskip("openai")
    client = openai.AsyncOpenAI(base_url=upstream.url + "/v1", api_key="sk-test", max_retries=0)
    try:
        messages: list[Any] = [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "weather in Paris?"},
        ]
        completion = await client.chat.completions.create(model="m1", messages=messages)
        assert completion.choices[0].message.content == answer_text("weather in Paris?")
        assert completion.usage is not None
        assert completion.usage.total_tokens == upstream.reported_usage[-1]["total_tokens"]

        stream = await client.chat.completions.create(
            model="m1", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == answer_text("weather in Paris?")
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None

        stream = await client.chat.completions.create(model="m1", messages=messages, stream=True)
        chunks = [c async for c in stream]
        assert all(c.usage is None and c.choices for c in chunks)
        assert upstream.reported[-1].usage_sent is False
    finally:
        await client.close()


# --------------------------------------------------------------------------------------------
# Config and the sidecar process
# --------------------------------------------------------------------------------------------


def test_base_config_deep_merges() -> None:
    cfg = base_config(
        "http://u", "redis://r", "postgresql://p", session={"history_limit": 3}, admin={"token": ""}
    )
    assert cfg["session"]["history_limit"] == 3
    assert cfg["session"]["max_stored_messages"] == 1000
    assert cfg["admin"]["token"] == ""
    other = base_config("http://u", "redis://r", "postgresql://p")
    assert other["admin"]["token"] == ADMIN_TOKEN
    assert cfg["redis"]["key_prefix"] != other["redis"]["key_prefix"]
    assert cfg["listen"]["host"] == "127.0.0.1"


_HAS_CLI = importlib.util.find_spec("sidecar.cli") is not None


@pytest.mark.skipif(not _HAS_CLI, reason="sidecar.cli is not written yet")
async def test_sidecar_process_starts_and_stops(sidecar_config: dict[str, Any]) -> None:
    started = time.monotonic()
    async with SidecarProcess(sidecar_config) as proc:
        ready_after = time.monotonic() - started
        assert ready_after < 20
        proc.terminate()
        assert await proc.wait() == 0, proc.log_tail()
