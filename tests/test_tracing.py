"""OpenTelemetry spans (``tracing.enabled``), read with the SDK's in-memory exporter: a server
span per request continuing the client's trace, a child span per phase, the upstream call's
span in the forwarded ``traceparent``, and the writer's batches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from sidecar.app import create_app
from sidecar.config import Config
from tests.harness import FakeUpstream, deep_merge
from tests.harness.waiting import wait_until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"


@pytest.fixture
async def traced(
    sidecar_config: dict[str, Any],
) -> AsyncIterator[tuple[str, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    config = Config.from_mapping(deep_merge(sidecar_config, {"tracing": {"enabled": True}}))
    app = create_app(config, span_exporter=exporter)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", exporter
    finally:
        await runner.cleanup()


def _hex(n: int, width: int) -> str:
    return f"{n:0{width}x}"


def _descends_from(span: ReadableSpan, ancestor: ReadableSpan, spans: list[ReadableSpan]) -> bool:
    by_id = {s.context.span_id: s for s in spans}
    current: ReadableSpan | None = span
    while current is not None and current.parent is not None:
        if current.parent.span_id == ancestor.context.span_id:
            return True
        current = by_id.get(current.parent.span_id)
    return False


async def test_a_turn_is_one_trace_with_a_span_per_phase(
    traced: tuple[str, InMemorySpanExporter],
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
) -> None:
    url, exporter = traced
    headers = {"traceparent": TRACEPARENT}
    body = {"query": "明天巴黎天气怎么样", "session_id": "traced-1"}
    async with http.post(url + "/api/tasks", json=body, headers=headers) as resp:
        assert resp.status == 200
        traceresponse = resp.headers["traceresponse"]

    spans = list(exporter.get_finished_spans())
    (server,) = [s for s in spans if s.kind == SpanKind.SERVER]
    assert server.name == "POST /api/tasks"
    # The client's trace goes on: same trace id, the client's span as parent.
    assert _hex(server.context.trace_id, 32) == TRACE_ID
    assert server.parent is not None
    assert _hex(server.parent.span_id, 16) == CLIENT_SPAN
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["http.route"] == "/api/tasks"
    assert traceresponse == f"00-{TRACE_ID}-{_hex(server.context.span_id, 16)}-01"

    names = {s.name: s for s in spans}
    for phase in ("sidecar.load", "sidecar.context", "sidecar.upstream", "sidecar.commit"):
        assert phase in names, f"no {phase} span among {sorted(names)}"
        assert _descends_from(names[phase], server, spans), phase
        assert _hex(names[phase].context.trace_id, 32) == TRACE_ID
    # The upstream saw the upstream call's span as its parent.
    (seen,) = upstream.requests_to("/api/tasks", "POST")
    _, trace_id, parent, _ = seen.headers["traceparent"].split("-")
    assert trace_id == TRACE_ID
    assert parent == _hex(names["sidecar.upstream"].context.span_id, 16)
    assert names["sidecar.upstream"].kind == SpanKind.CLIENT
    # No span carries the user's words.
    assert not any("巴黎" in str(s.attributes) for s in spans)

    # The writer's batch, later and off the request path, is its own trace.
    def batches() -> list[ReadableSpan]:
        return [s for s in exporter.get_finished_spans() if s.name == "sidecar.writer.batch"]

    async def probe() -> list[ReadableSpan]:
        return batches()

    (batch, *_) = await wait_until(probe, what="a writer batch span")
    assert batch.parent is None
    assert batch.attributes is not None
    assert batch.attributes["events"] >= 1


async def test_failures_mark_the_server_span(
    traced: tuple[str, InMemorySpanExporter],
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
) -> None:
    url, exporter = traced
    await upstream.stop()
    async with http.get(url + "/echo/x") as resp:
        assert resp.status == 502
    (server,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert server.name == "GET"  # pass-through: no route to name it by
    assert server.status.status_code == StatusCode.ERROR
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 502
    # Without a client traceparent, a new trace starts.
    assert server.parent is None
