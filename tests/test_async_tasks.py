"""Shannon-style asynchronous tasks: a submitted task's turn is recorded once, when the client
reads its result through the sidecar."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from sidecar.devservices import TemporaryRedis
from sidecar.store.keys import KeySpace
from tests.harness import FakeUpstream, answer_text
from tests.harness.waiting import session_messages, session_usage, token_counts
from tests.turns import post_turn

TASKS = "/api/tasks"


async def submit(http: aiohttp.ClientSession, url: str, query: str, sid: str) -> str:
    async with http.post(url + TASKS, json={"query": query, "session_id": sid}) as resp:
        assert resp.status == 202
        assert resp.headers["X-Session-ID"] == sid
        body = await resp.json()
    task_id = body["task_id"]
    assert isinstance(task_id, str)
    return task_id


async def poll(http: aiohttp.ClientSession, url: str, task_id: str) -> tuple[int, Any]:
    async with http.get(f"{url}{TASKS}/{task_id}") as resp:
        return resp.status, await resp.json()


async def test_task_recorded_once_when_its_result_is_read(
    start_sidecar: Any, upstream: FakeUpstream, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    sidecar = await start_sidecar()
    upstream.tasks_mode = "async"
    upstream.tasks_async_polls = 3
    sid = f"at-{uuid.uuid4().hex[:8]}"
    q = "What is the weather in Paris?"
    task_id = await submit(http, sidecar.url, q, sid)

    statuses = [await poll(http, sidecar.url, task_id) for _ in range(3)]
    assert [s for s, _ in statuses] == [200, 200, 200]
    assert [b["status"] for _, b in statuses] == ["running", "running", "completed"]
    assert statuses[2][1]["result"] == answer_text(q)

    rows = await session_messages(pg_dsn, sid, 2)
    assert [(r["role"], r["content"], r["partial"]) for r in rows] == [
        ("user", q, False),
        ("assistant", answer_text(q), False),
    ]
    assert [token_counts(r) for r in await session_usage(pg_dsn, sid)] == upstream.reported_usage

    # Reading it again, even many at once, records nothing more.
    again = await asyncio.gather(*(poll(http, sidecar.url, task_id) for _ in range(5)))
    assert all(s == 200 and b["status"] == "completed" for s, b in again)

    # The next turn sees the task's exchange in its history, and lands right after it.
    upstream.tasks_mode = "json"
    assert (await post_turn(http, sidecar.url, "Thank you", sid, path=TASKS)).status == 200
    history = upstream.requests_to(TASKS)[-1].json["history"]
    assert [(h["role"], h["content"]) for h in history] == [
        ("user", q),
        ("assistant", answer_text(q)),
    ]
    rows = await session_messages(pg_dsn, sid, 4)
    assert len(rows) == 4
    assert [r["content"] for r in rows[2:]] == ["Thank you", answer_text("Thank you")]
    assert len(await session_usage(pg_dsn, sid)) == 2


async def test_concurrent_first_reads_record_once(
    start_sidecar: Any, upstream: FakeUpstream, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    sidecar = await start_sidecar()
    upstream.tasks_mode = "async"
    upstream.tasks_async_polls = 1  # completed from the first read on
    sid = f"at-{uuid.uuid4().hex[:8]}"
    task_id = await submit(http, sidecar.url, "Weather in Rome?", sid)
    answers = await asyncio.gather(*(poll(http, sidecar.url, task_id) for _ in range(6)))
    assert all(b["status"] == "completed" for _, b in answers)

    upstream.tasks_mode = "json"

    assert (await post_turn(http, sidecar.url, "Thanks", sid, path=TASKS)).status == 200
    rows = await session_messages(pg_dsn, sid, 4)
    assert [r["content"] for r in rows] == [
        "Weather in Rome?",
        answer_text("Weather in Rome?"),
        "Thanks",
        answer_text("Thanks"),
    ]


async def test_unknown_tasks_pass_through_untouched(
    start_sidecar: Any, upstream: FakeUpstream, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    sidecar = await start_sidecar()
    # No such task anywhere: the upstream's 404 comes back as it was.
    status, body = await poll(http, sidecar.url, "no-such-task")
    assert (status, body) == (404, {"error": "task not found"})

    # A task submitted to the upstream directly: its result passes through, nothing recorded.
    upstream.tasks_mode = "async"
    upstream.tasks_async_polls = 1
    async with http.post(
        upstream.url + TASKS, json={"query": "direct", "session_id": "elsewhere"}
    ) as resp:
        task_id = (await resp.json())["task_id"]
    async with http.get(f"{sidecar.url}{TASKS}/{task_id}?verbose=1") as resp:
        assert resp.status == 200
        assert "X-Session-ID" not in resp.headers
        assert (await resp.json())["result"] == answer_text("direct")
    forwarded = upstream.requests_to(f"{TASKS}/{task_id}")[-1]
    assert forwarded.query_string == "verbose=1"

    # A later turn of that session id proves no turn was recorded for it.
    upstream.tasks_mode = "json"
    assert (await post_turn(http, sidecar.url, "hello", "elsewhere", path=TASKS)).status == 200
    rows = await session_messages(pg_dsn, "elsewhere", 2)
    assert [r["content"] for r in rows] == ["hello", answer_text("hello")]


async def test_remembered_task_expires(
    start_sidecar: Any, upstream: FakeUpstream, redis_url: str, http: aiohttp.ClientSession
) -> None:
    sidecar = await start_sidecar()
    upstream.tasks_mode = "async"
    upstream.tasks_async_polls = 2
    task_id = await submit(http, sidecar.url, "q", f"at-{uuid.uuid4().hex[:8]}")
    cfg = sidecar.config.redis
    key = KeySpace(cfg.key_prefix, cfg.partitions).task("anonymous", TASKS, task_id)
    client = aioredis.Redis.from_url(redis_url)
    try:
        ttl = await client.ttl(key)
        assert 23 * 3600 < ttl <= 24 * 3600
        await poll(http, sidecar.url, task_id)
        await poll(http, sidecar.url, task_id)  # completed: recorded and forgotten
        assert await client.exists(key) == 0
    finally:
        await client.aclose()


async def test_redis_down_while_remembering_still_serves(
    start_sidecar: Any,
    upstream: FakeUpstream,
    redis_server: TemporaryRedis,
    http: aiohttp.ClientSession,
) -> None:
    sidecar = await start_sidecar()

    async def accept_then_lose_redis(request: web.Request, body: Any) -> web.StreamResponse:
        await redis_server.stop()
        return web.json_response({"task_id": "task-x", "status": "queued"}, status=202)

    upstream.tasks_handler = accept_then_lose_redis
    try:
        async with http.post(sidecar.url + TASKS, json={"query": "q", "session_id": "s"}) as resp:
            assert resp.status == 202
            assert await resp.json() == {"task_id": "task-x", "status": "queued"}
            assert "unrecorded" in resp.headers["X-Sidecar-Degraded"]
    finally:
        await redis_server.ensure_running()
