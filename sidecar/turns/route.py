"""The handler of one intercepted route: wires the phases of a turn together around the
upstream call (read → prepare → forward → capture → record) and relays the answer as it comes.

Answers come three ways: a JSON body (read whole, then relayed), a Server-Sent Events stream
(relayed chunk by chunk while a parser reads a copy) and, on tasks routes, an asynchronous task
(remembered, and recorded when the client reads its result; see ``tasks``).
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from yarl import URL

from ..adapters.base import Adapter
from ..config import Config
from ..context import Extractor
from ..identity import resolve_tenant
from ..metrics import Metrics
from ..proxy import (
    client_response_headers,
    open_upstream,
    relay_response,
    upstream_request_headers,
    upstream_url,
)
from ..session.manager import SessionService
from .capture import StreamCapture, capture_json, read_answer, too_large
from .prepare import Prepared, Preparer
from .recorder import TurnRecorder
from .request import read_body
from .tasks import TaskPolls, TaskRegistry, task_id_of


class Clock:
    """Time spent in the sidecar itself: everything but waiting for the upstream."""

    def __init__(self) -> None:
        self.spent = 0.0
        self._since: float | None = time.perf_counter()

    def pause(self) -> None:
        if self._since is not None:
            self.spent += time.perf_counter() - self._since
            self._since = None

    def resume(self) -> None:
        self._since = time.perf_counter()

    def header(self) -> str:
        self.pause()
        return f"sidecar;dur={self.spent * 1000:.2f}"


class TurnRoute:
    """The handler of one intercepted route (and, on tasks routes, of its task polls)."""

    def __init__(
        self,
        adapter: Adapter,
        config: Config,
        client: aiohttp.ClientSession,
        sessions: SessionService,
        extractor: Extractor | None,
        recorder: TurnRecorder,
        metrics: Metrics,
    ) -> None:
        self.adapter = adapter
        self.config = config
        self.client = client
        self.recorder = recorder
        self.metrics = metrics
        self.base = URL(config.upstream.url)
        self.preparer = Preparer(adapter, config, sessions, extractor)
        self.tasks = (
            TaskPolls(
                adapter,
                self.base,
                config.identity.trust_headers,
                client,
                TaskRegistry(sessions.redis),
                recorder,
                metrics,
            )
            if adapter.async_tasks
            else None
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        clock = Clock()
        raw = await read_body(request, self.config.session.max_body_bytes)
        incoming = self.adapter.parse(raw, request.headers)
        tenant = resolve_tenant(request, trust_headers=self.config.identity.trust_headers)
        prepared = await self.preparer.prepare(
            tenant, incoming, request.headers.get("Idempotency-Key") or None
        )
        hide_usage = (
            self.adapter.prepare_stream(prepared.forward_body) if incoming.stream else False
        )

        headers = upstream_request_headers(request, body_changed=True)
        headers["Content-Type"] = "application/json"
        headers["X-Session-ID"] = prepared.key.session_id
        # The answer is read for memory; an encoding the sidecar does not decode would hide it.
        headers.popall("Accept-Encoding", None)
        url = upstream_url(self.base, request)
        data = orjson.dumps(prepared.forward_body)
        clock.pause()
        async with open_upstream(self.client, request.method, url, headers, data) as up:
            clock.resume()
            out_headers = client_response_headers(up, body_changed=True)
            out_headers["X-Session-ID"] = prepared.key.session_id
            if up.content_type == "text/event-stream":
                return await self._relay_stream(
                    request, up, out_headers, prepared, clock, hide_usage
                )
            if too_large(up):
                # Too large to hold for reading: relayed as it comes, not remembered.
                passthrough = client_response_headers(up)
                passthrough["X-Session-ID"] = prepared.key.session_id
                resp, _ = await relay_response(request, up, passthrough)
                return resp
            return await self._relay_json(request, up, out_headers, prepared, clock)

    async def _relay_json(
        self,
        request: web.Request,
        up: aiohttp.ClientResponse,
        headers: Any,
        prepared: Prepared,
        clock: Clock,
    ) -> web.StreamResponse:
        clock.pause()
        body = await read_answer(up)
        clock.resume()
        captured = capture_json(self.adapter, up.status, body)
        if captured is not None:
            if captured.answer is not None:
                await self.recorder.record(prepared.question, captured.answer, prepared.degraded)
            elif self.tasks is not None and (task_id := task_id_of(captured.parsed)) is not None:
                await self.tasks.remember(request, task_id, prepared)
        self._finish_headers(headers, prepared, clock)
        return web.Response(status=up.status, reason=up.reason, body=body, headers=headers)

    async def _relay_stream(
        self,
        request: web.Request,
        up: aiohttp.ClientResponse,
        headers: Any,
        prepared: Prepared,
        clock: Clock,
        hide_usage: bool,
    ) -> web.StreamResponse:
        """Relay an SSE answer chunk by chunk while a parser reads a copy, then record the turn.

        A stream cut short is recorded as far as it got (see ``StreamCapture.answer``), once:
        this is the only place a stream's turn is committed, and a retry with the same
        ``Idempotency-Key`` finds it recorded already.
        """
        capture = StreamCapture(hide_usage)
        headers["X-Accel-Buffering"] = "no"
        self._finish_headers(headers, prepared, clock)
        clock.pause()
        resp, complete = await relay_response(
            request, up, headers, observe=capture.feed, transform=capture.transform
        )
        answer = capture.answer(up.status, complete)
        if answer is not None:
            await self.recorder.record(prepared.question, answer, prepared.degraded)
        return resp

    def _finish_headers(self, headers: Any, prepared: Prepared, clock: Clock) -> None:
        if prepared.degraded:
            headers["X-Sidecar-Degraded"] = ",".join(
                sorted(set(",".join(prepared.degraded).split(",")))
            )
        headers["Server-Timing"] = clock.header()  # also what the metrics take as overhead
