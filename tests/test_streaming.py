"""Streamed answers on intercepted routes: relayed as they arrive, recorded when they end, and a
stream cut short recorded once, marked partial."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
import uuid
from typing import Any

import aiohttp
from aiohttp import web

from tests.harness import FakeUpstream, answer_text
from tests.harness.waiting import session_messages, wait_until

TASKS = "/api/tasks"


def query_for(answer_length: int) -> str:
    """A query whose fake answer has exactly ``answer_length`` characters."""
    base = "Tell me about the weather in Paris, please, in some detail "
    q = (base * 4)[: answer_length - len(answer_text(""))]
    assert len(answer_text(q)) == answer_length
    return q


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    events = []
    while (idx := buffer.find(b"\n\n")) != -1:
        events.append(buffer[:idx])
        buffer = buffer[idx + 2 :]
    return events, buffer


async def test_stream_relayed_chunk_by_chunk_and_recorded(
    start_sidecar: Any, upstream: FakeUpstream, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    sidecar = await start_sidecar()
    upstream.tasks_mode = "sse"
    upstream.tasks_chunks = 20
    upstream.tasks_chunk_interval_s = 0.05
    sid = f"st-{uuid.uuid4().hex[:8]}"
    q = query_for(100)  # 20 pieces of 5 characters

    reads: list[tuple[float, bytes]] = []
    async with http.post(sidecar.url + TASKS, json={"query": q, "session_id": sid}) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        assert resp.headers["X-Accel-Buffering"] == "no"
        assert resp.headers["X-Session-ID"] == sid
        async for chunk in resp.content.iter_any():
            reads.append((time.monotonic(), chunk))

    # Which read brought each event in.
    buffer, arrivals = b"", []
    for i, (at, chunk) in enumerate(reads):
        events, buffer = split_events(buffer + chunk)
        arrivals += [(i, at, e) for e in events]
    deltas = [(i, at) for i, at, e in arrivals if b'"delta"' in e]
    assert len(deltas) == 20
    read_indexes = [i for i, _ in deltas]
    assert len(set(read_indexes)) == 20, f"chunks were coalesced: {read_indexes}"
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(deltas)]
    spread = deltas[-1][1] - deltas[0][1]
    # The upstream spaces its 20 pieces 50 ms apart: 0.95 s from first to last.
    assert spread > 0.75, f"first and last chunk only {spread:.3f}s apart"
    assert statistics.median(gaps) > 0.03
    print(
        f"\nSSE timing: {len(reads)} reads, first->last delta {spread * 1000:.0f} ms, "
        f"gaps min {min(gaps) * 1000:.1f} / median {statistics.median(gaps) * 1000:.1f} / "
        f"max {max(gaps) * 1000:.1f} ms"
    )

    rows = await session_messages(pg_dsn, sid, 2)
    assert [(r["role"], r["content"], r["partial"]) for r in rows] == [
        ("user", q, False),
        ("assistant", answer_text(q), False),
    ]


def slow_stream(upstream: FakeUpstream, pieces: int, *, cut_after: int | None = None) -> Any:
    """A tasks handler streaming ``pieces`` deltas 50 ms apart, counted in ``open_streams``;
    with ``cut_after`` it drops the connection after that many pieces."""

    async def handler(request: web.Request, body: Any) -> web.StreamResponse:
        text = answer_text(body["query"])
        size = -(-len(text) // pieces)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        upstream.open_streams += 1
        try:
            await response.prepare(request)
            for i in range(pieces):
                if cut_after is not None and i == cut_after:
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                await response.write(
                    f'data: {{"delta": "{text[i * size : (i + 1) * size]}"}}\n\n'.encode()
                )
                await asyncio.sleep(0.05)
            await response.write(b'data: {"done": true}\n\n')
            await response.write_eof()
            return response
        finally:
            upstream.open_streams -= 1

    return handler


async def test_client_disconnect_mid_stream_leaves_nothing_behind(
    start_sidecar: Any, upstream: FakeUpstream, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    sidecar = await start_sidecar()
    upstream.tasks_handler = slow_stream(upstream, 40)
    sid = f"st-{uuid.uuid4().hex[:8]}"
    q = query_for(120)
    before = asyncio.all_tasks()

    received = b""
    resp = await http.post(sidecar.url + TASKS, json={"query": q, "session_id": sid})
    async for chunk in resp.content.iter_any():
        received += chunk
        if received.count(b"\n\n") >= 5:
            break
    resp.close()  # the client goes away mid-stream

    async def upstream_closed() -> bool:
        return upstream.open_streams == 0

    await wait_until(upstream_closed, timeout_s=15.0, what="the upstream stream to be closed")

    async def no_tasks_left() -> bool:
        return not asyncio.all_tasks() - before - {asyncio.current_task()}

    # Nothing the request started is still running (the commit included).
    await wait_until(no_tasks_left, timeout_s=15.0, what="the request's tasks to end")

    rows = await session_messages(pg_dsn, sid, 2)
    shown = "".join(
        e.split(b'"delta": "')[1].split(b'"')[0].decode()
        for e in split_events(received)[0]
        if b'"delta"' in e
    )
    stored = rows[1]["content"]
    assert rows[0]["role"] == "user"
    assert rows[0]["content"] == q
    assert rows[1]["role"] == "assistant"
    assert rows[1]["partial"] is True
    # What the user saw is what was remembered (and maybe a piece or two more in flight).
    assert stored.startswith(shown)
    assert answer_text(q).startswith(stored)
    assert len(stored) < len(answer_text(q))

    # A later turn of the session lands after the first one: no duplicate came in between.
    upstream.tasks_handler = None
    async with http.post(sidecar.url + TASKS, json={"query": "next", "session_id": sid}) as r:
        assert r.status == 200
        await r.read()
    rows = await session_messages(pg_dsn, sid, 4)
    assert [r["content"] for r in rows][2:] == ["next", answer_text("next")]
    assert len(rows) == 4
    # The next request saw the partial answer in its history.
    history = upstream.requests_to(TASKS)[-1].json["history"]
    assert [h["content"] for h in history] == [q, stored]


async def test_upstream_cut_mid_stream_records_partial_once(
    start_sidecar: Any, upstream: FakeUpstream, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    sidecar = await start_sidecar()
    upstream.tasks_handler = slow_stream(upstream, 10, cut_after=4)
    sid = f"st-{uuid.uuid4().hex[:8]}"
    q = query_for(100)
    received = b""
    async with http.post(sidecar.url + TASKS, json={"query": q, "session_id": sid}) as resp:
        assert resp.status == 200
        try:
            async for chunk in resp.content.iter_any():
                received += chunk
        except aiohttp.ClientPayloadError:
            pass  # the sidecar cut the client's connection too: the only honest signal
    assert received.count(b'"delta"') == 4

    rows = await session_messages(pg_dsn, sid, 2)
    assert len(rows) == 2
    assert rows[1]["content"] == answer_text(q)[:40]
    assert rows[1]["partial"] is True
