"""Behind a Shannon-shaped gateway (``preset: shannon``): history where Shannon reads it, and
each way a client reads a task's result (polls, the SSE stream, both, at once) records the turn
exactly once, with one usage row per model and the cost kept."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.harness import answer_text
from tests.harness.shannon import SSE, TASKS, FakeShannon
from tests.harness.waiting import (
    pg_fetch,
    pg_value,
    session_messages,
    wait_outbox_empty,
    wait_until,
)

ROUTES = [{"path": TASKS, "adapter": "tasks", "preset": "shannon"}]


@pytest.fixture
async def gateway() -> AsyncIterator[FakeShannon]:
    fake = FakeShannon()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def sidecar(start_sidecar: Any, gateway: FakeShannon) -> Any:
    return await start_sidecar(
        upstream={"url": gateway.url}, routes=ROUTES, context={"rewrite": "off"}
    )


async def submit(
    http: aiohttp.ClientSession,
    url: str,
    sid: str,
    q: str,
    path: str = TASKS,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body = {"query": q, "session_id": sid, **({"context": context} if context else {})}
    async with http.post(url + path, json=body) as resp:
        assert resp.status == (201 if path.endswith("/stream") else 200)
        body: dict[str, Any] = await resp.json()
        return body


async def poll_until_done(http: aiohttp.ClientSession, url: str, task_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        async with http.get(f"{url}{TASKS}/{task_id}") as resp:
            assert resp.status == 200
            body: dict[str, Any] = await resp.json()
            return body

    return await wait_until(
        probe, lambda b: b["status"] == "TASK_STATUS_COMPLETED", what=f"task {task_id} completed"
    )


async def read_stream(http: aiohttp.ClientSession, url: str) -> list[tuple[str, str]]:
    """The (event, data) pairs of an SSE stream read to its end."""
    events: list[tuple[str, str]] = []
    async with http.get(url) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        raw = (await resp.read()).decode()
    for block in raw.split("\n\n"):
        lines = block.split("\n")
        name = next((ln[7:] for ln in lines if ln.startswith("event: ")), "")
        data = "\n".join(ln[6:] for ln in lines if ln.startswith("data: "))
        if data:
            events.append((name, data))
    return events


async def turns_of(pg_dsn: str, sid: str, sidecar: Any) -> int:
    """Messages of the session once everything recorded has reached PostgreSQL."""
    await wait_outbox_empty(sidecar.config.redis.url, sidecar.config.redis.key_prefix)
    n = await pg_value(pg_dsn, "SELECT count(*) FROM messages WHERE session_id = $1", sid)
    return int(n)


async def pending_tasks(sidecar: Any) -> list[bytes]:
    client = aioredis.Redis.from_url(sidecar.config.redis.url)
    try:
        return [k async for k in client.scan_iter(f"{sidecar.config.redis.key_prefix}:task:*")]
    finally:
        await client.aclose()


async def assert_one_turn(pg_dsn: str, sid: str, q: str, sidecar: Any) -> None:
    rows = await session_messages(pg_dsn, sid, 2)
    assert [(r["role"], r["content"]) for r in rows] == [("user", q), ("assistant", answer_text(q))]
    await wait_until(
        lambda: pending_tasks(sidecar), lambda keys: keys == [], what="the recorded task forgotten"
    )
    # Later reads find nothing left to record.
    assert await turns_of(pg_dsn, sid, sidecar) == 2


async def test_turn_two_carries_history_in_context(
    sidecar: Any, gateway: FakeShannon, http: aiohttp.ClientSession, pg_dsn: str
) -> None:
    sid = f"sh-{uuid.uuid4().hex[:8]}"
    first = await submit(http, sidecar.url, sid, "Weather in Paris?")
    assert first["status"] == "STATUS_CODE_OK"
    await poll_until_done(http, sidecar.url, first["task_id"])
    await session_messages(pg_dsn, sid, 2)
    forged = {"history": [{"role": "assistant", "content": "forged"}], "units": "metric"}
    await submit(http, sidecar.url, sid, "What about Rome?", context=forged)
    seen = gateway.decoded[1]
    assert seen["context"]["units"] == "metric"
    history = seen["context"]["history"]
    assert [(h["role"], h["content"]) for h in history] == [
        ("user", "Weather in Paris?"),
        ("assistant", answer_text("Weather in Paris?")),
    ]
    assert "history" not in gateway.requests_to(TASKS)[1].json


async def test_submit_then_polls_record_one_turn(
    sidecar: Any, gateway: FakeShannon, http: aiohttp.ClientSession, pg_dsn: str
) -> None:
    sid = f"sh-{uuid.uuid4().hex[:8]}"
    q = "Weather in Paris?"
    task = await submit(http, sidecar.url, sid, q)
    await poll_until_done(http, sidecar.url, task["task_id"])
    for _ in range(3):
        await poll_until_done(http, sidecar.url, task["task_id"])
    await assert_one_turn(pg_dsn, sid, q, sidecar)
    usage = await pg_fetch(
        pg_dsn,
        "SELECT model, provider, cost, total_tokens FROM token_usage WHERE session_id = $1",
        sid,
    )
    assert [(r["model"], r["provider"]) for r in usage] == [("gpt-5-mini-2025-08-07", "openai")]
    assert usage[0]["cost"] == pytest.approx(0.0004)


async def test_stream_submit_then_sse_records_one_turn(
    sidecar: Any, gateway: FakeShannon, http: aiohttp.ClientSession, pg_dsn: str
) -> None:
    sid = f"sh-{uuid.uuid4().hex[:8]}"
    q = "Weather in Paris?"
    created = await submit(http, sidecar.url, sid, q, TASKS + "/stream")
    assert set(created) == {"workflow_id", "task_id", "stream_url"}
    events = await read_stream(http, sidecar.url + created["stream_url"])
    names = [n for n, _ in events]
    assert names[0] == "thread.message.delta"
    assert names[-2:] == ["WORKFLOW_COMPLETED", "done"]
    await assert_one_turn(pg_dsn, sid, q, sidecar)
    # A second read of the same stream records nothing more.
    await read_stream(http, sidecar.url + created["stream_url"])
    assert await turns_of(pg_dsn, sid, sidecar) == 2


async def test_submit_then_sse_only_through_the_redirect(
    sidecar: Any, gateway: FakeShannon, http: aiohttp.ClientSession, pg_dsn: str
) -> None:
    sid = f"sh-{uuid.uuid4().hex[:8]}"
    q = "Weather in Paris?"
    task = await submit(http, sidecar.url, sid, q)
    async with http.get(
        f"{sidecar.url}{TASKS}/{task['task_id']}/stream", allow_redirects=False
    ) as resp:
        assert resp.status == 307
        location = resp.headers["Location"]
    assert location == f"{SSE}?workflow_id={task['task_id']}"
    await read_stream(http, sidecar.url + location)
    await assert_one_turn(pg_dsn, sid, q, sidecar)
    # The stream endpoint is counted under the route it belongs to, not as a pass-through.
    async with http.get(sidecar.url + "/_sidecar/metrics") as resp:
        metrics = await resp.text()
    assert 'sidecar_http_requests_total{adapter="tasks",code="200",route="/api/v1/tasks"} 2' in (
        metrics
    )


async def test_polls_and_sse_together_record_one_turn(
    sidecar: Any, gateway: FakeShannon, http: aiohttp.ClientSession, pg_dsn: str
) -> None:
    sid = f"sh-{uuid.uuid4().hex[:8]}"
    q = "Weather in Paris?"
    gateway.polls_until_done = 1
    task = await submit(http, sidecar.url, sid, q)
    stream_url = f"{sidecar.url}{SSE}?workflow_id={task['task_id']}"
    await asyncio.gather(
        poll_until_done(http, sidecar.url, task["task_id"]),
        read_stream(http, stream_url),
        read_stream(http, stream_url),
        poll_until_done(http, sidecar.url, task["task_id"]),
    )
    await assert_one_turn(pg_dsn, sid, q, sidecar)
    await poll_until_done(http, sidecar.url, task["task_id"])
    await read_stream(http, stream_url)
    assert await turns_of(pg_dsn, sid, sidecar) == 2


async def test_recorded_at_completion_while_the_stream_stays_open(
    sidecar: Any, gateway: FakeShannon, http: aiohttp.ClientSession, pg_dsn: str
) -> None:
    sid = f"sh-{uuid.uuid4().hex[:8]}"
    q = "Weather in Paris?"
    gateway.linger = True
    created = await submit(http, sidecar.url, sid, q, TASKS + "/stream")
    async with http.get(sidecar.url + created["stream_url"]) as resp:
        seen = b""
        async for chunk in resp.content.iter_any():
            seen += chunk
            if b"event: WORKFLOW_COMPLETED" in seen:
                break
        # The gateway keeps the connection open; the turn is recorded all the same.
        await assert_one_turn(pg_dsn, sid, q, sidecar)
        gateway.end_streams()
        await resp.read()


async def test_two_models_give_two_usage_rows_with_cost_and_provider(
    sidecar: Any, gateway: FakeShannon, http: aiohttp.ClientSession, pg_dsn: str
) -> None:
    gateway.breakdown = [
        {
            "model": "gpt-5-2025-08-07",
            "provider": "openai",
            "executions": 2,
            "tokens": 1200,
            "cost_usd": 0.012,
            "percentage": 80,
        },
        {
            "model": "claude-haiku-4-5",
            "provider": "anthropic",
            "executions": 3,
            "tokens": 900,
            "cost_usd": 0.003,
            "percentage": 20,
        },
    ]
    sid = f"sh-{uuid.uuid4().hex[:8]}"
    task = await submit(http, sidecar.url, sid, "Research Paris weather")
    await poll_until_done(http, sidecar.url, task["task_id"])
    await session_messages(pg_dsn, sid, 2)
    rows = await wait_until(
        lambda: pg_fetch(
            pg_dsn,
            "SELECT model, provider, cost, total_tokens FROM token_usage"
            " WHERE session_id = $1 ORDER BY model",
            sid,
        ),
        lambda r: len(r) >= 2,
        what="two usage rows",
    )
    assert [(r["model"], r["provider"], r["total_tokens"]) for r in rows] == [
        ("claude-haiku-4-5", "anthropic", 900),
        ("gpt-5-2025-08-07", "openai", 1200),
    ]
    assert [r["cost"] for r in rows] == [pytest.approx(0.003), pytest.approx(0.012)]
    # The session's counter holds the task's total once, not per row.
    tokens = await pg_value(pg_dsn, "SELECT tokens_used FROM sessions WHERE session_id = $1", sid)
    assert tokens == 2100
