"""The handler of one intercepted route: wires the phases of a turn together around the
upstream call (read → prepare → forward → capture → record) and relays the answer as it comes.

Answers come three ways: a JSON body (read whole, then relayed), a Server-Sent Events stream
(relayed chunk by chunk while a parser reads a copy) and, on tasks routes, an asynchronous task
(remembered, and recorded when the client reads its result; see ``tasks``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web
from yarl import URL

from ..adapters.base import Adapter
from ..config import Config
from ..context import Extractor
from ..errors import BadRequest, InvalidToken, UpstreamTimeout, UpstreamUnavailable
from ..identity import IdentityResolver
from ..inputs import is_visible_ascii
from ..metrics import Metrics
from ..observe import current as current_request
from ..profile.extract import ProfileExtractor
from ..profile.owner import with_profile_user
from ..proxy import (
    client_response_headers,
    open_upstream,
    raise_client_fault,
    read_whole,
    relay_response,
    upstream_request_headers,
    upstream_url,
)
from ..session.manager import SessionService
from ..upstream import Response, UpstreamClient
from .capture import StreamCapture, capture_json, too_large
from .prepare import Prepared, Preparer
from .recorder import TurnRecorder
from .request import read_body
from .tasks import PendingTask, TaskPolls, TaskRegistry, task_id_of


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
        """``Server-Timing`` of the time spent so far; the request's metrics and access line
        take the same figure (milliseconds to two decimals) as its overhead."""
        self.pause()
        ms = f"{self.spent * 1000:.2f}"
        if (info := current_request()) is not None:
            info.overhead_s = float(ms) / 1000
        return f"sidecar;dur={ms}"


class TurnRoute:
    """The handler of one intercepted route (and, on tasks routes, of its task polls)."""

    def __init__(
        self,
        adapter: Adapter,
        config: Config,
        client: UpstreamClient,
        sessions: SessionService,
        extractor: Extractor | None,
        recorder: TurnRecorder,
        metrics: Metrics,
        identity: IdentityResolver,
        path: str = "",
    ) -> None:
        self.adapter = adapter
        self.config = config
        self.client = client
        self.recorder = recorder
        self.metrics = metrics
        self.identity = identity
        self.base = URL(config.upstream.url)
        self.path = path.rstrip("/")
        # Questions whose answers wait for tool results, for requests that go on from such an
        # answer by its id without re-sending the question (Responses' previous_response_id).
        self.continuations = TaskRegistry(sessions.redis)
        self.preparer = Preparer(adapter, config, sessions, extractor, ProfileExtractor())
        self.tasks = (
            TaskPolls(
                adapter,
                self.base,
                identity,
                client,
                TaskRegistry(sessions.redis),
                recorder,
                metrics,
                path,
            )
            if adapter.async_tasks
            else None
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        clock = Clock()
        identity = await self.identity.resolve(request.headers)
        if identity.invalid:
            if self.identity.rejects_invalid:
                raise InvalidToken("the bearer token failed verification")
            return await self._without_memory(request)
        idempotency_key = idempotency_key_of(request)
        raw = await read_body(request, self.config.session.max_body_bytes)
        incoming = self.adapter.parse(raw, request.headers)
        if incoming.continues is not None and not incoming.query:
            earlier = await self.continuations.lookup(identity.scope, self.path, incoming.continues)
            if earlier is not None:
                incoming.query = earlier.query
        session_identity = identity
        if self.config.memory.profile:
            session_identity = with_profile_user(
                identity, self.config.identity, self.adapter.name, incoming.body
            )
        prepared = await self.preparer.prepare(session_identity, incoming, idempotency_key)
        if session_identity is not identity:
            # A task's poll carries no body: it finds the task under the request's own scope.
            prepared.poll_tenant = identity.scope
        hide_usage = (
            self.adapter.prepare_stream(prepared.forward_body) if incoming.stream else False
        )

        headers = upstream_request_headers(
            request, body_changed=True, keep_identity=self.identity.trusts_headers
        )
        headers["Content-Type"] = "application/json"
        headers["X-Session-ID"] = prepared.key.session_id
        # The answer is read for memory; an encoding the sidecar does not decode would hide it.
        headers.popall("Accept-Encoding", None)
        url = upstream_url(self.base, request)
        data = orjson.dumps(prepared.forward_body)
        clock.pause()
        # The question's half of the turn is made while the upstream answers: queued now, it
        # runs once this step has sent the request and waits.
        asyncio.get_running_loop().call_soon(prepared.make_asked)
        async with open_upstream(self.client, request.method, url, headers, data) as up:
            clock.resume()
            out_headers = client_response_headers(up, body_changed=True, ours=True)
            out_headers["X-Session-ID"] = prepared.key.session_id
            if up.content_type == "text/event-stream":
                return await self._relay_stream(
                    request, up, out_headers, prepared, clock, hide_usage
                )
            if too_large(up):
                # Too large to hold for reading: relayed as it comes, not remembered.
                passthrough = client_response_headers(up, ours=True)
                passthrough["X-Session-ID"] = prepared.key.session_id
                resp, _ = await relay_response(request, up, passthrough)
                return resp
            return await self._relay_json(request, up, out_headers, prepared, clock)

    async def _without_memory(self, request: web.Request) -> web.StreamResponse:
        """A request whose token failed verification: forwarded untouched (its body streamed as
        the client sent it), nothing injected, nothing recorded, and the client told so."""
        self.metrics.degraded.labels("identity").inc()
        headers = upstream_request_headers(request, keep_identity=self.identity.trusts_headers)
        data = request.content if request.body_exists else None
        url = upstream_url(self.base, request)
        try:
            async with open_upstream(self.client, request.method, url, headers, data) as up:
                out = client_response_headers(up, ours=True)
                out["X-Sidecar-Degraded"] = "identity"
                resp, _ = await relay_response(request, up, out)
        except (UpstreamUnavailable, UpstreamTimeout) as e:
            raise_client_fault(request, e)
            raise
        return resp

    async def _relay_json(
        self,
        request: web.Request,
        up: Response,
        headers: Any,
        prepared: Prepared,
        clock: Clock,
    ) -> web.StreamResponse:
        clock.pause()
        body = await read_whole(up)
        clock.resume()
        captured = capture_json(self.adapter, up.status, body)
        if captured is not None:
            if captured.answer is not None:
                await self.recorder.record(prepared.question, captured.answer, prepared.degraded)
            elif self.tasks is not None and (task_id := task_id_of(captured.parsed)) is not None:
                await self.tasks.remember(request, task_id, prepared)
            else:
                await self._await_tools(prepared, captured.parsed)
        self._finish_headers(headers, prepared, clock)
        return web.Response(status=up.status, reason=up.reason, body=body, headers=headers)

    async def _relay_stream(
        self,
        request: web.Request,
        up: Response,
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
        capture = StreamCapture(self.adapter.stream_reader(), hide_usage)
        recording: list[asyncio.Task[bool]] = []

        def completed() -> None:
            # The stream said the answer is whole: record now, while the connection may stay open.
            answer = capture.answer(up.status, True)
            if answer is not None:
                recording.append(self.recorder.start(prepared.question, answer, prepared.degraded))

        capture.on_complete = completed
        headers["X-Accel-Buffering"] = "no"
        self._finish_headers(headers, prepared, clock)
        clock.pause()
        resp, complete = await relay_response(
            request, up, headers, observe=capture.feed, transform=capture.transform
        )
        capture.end()
        if recording:
            await asyncio.shield(recording[0])
        elif (answer := capture.answer(up.status, complete)) is not None:
            await self.recorder.record(prepared.question, answer, prepared.degraded)
        elif 200 <= up.status < 300 and capture.reader.tool_calls:
            await self._await_tools(prepared, capture.reader.whole)
        return resp

    async def _await_tools(self, prepared: Prepared, answer: Any) -> None:
        """An answer that waits for tool results: keep its question for the request that goes
        on from it by its id, if the protocol has such requests."""
        answer_id = self.adapter.continuation_id(answer)
        if answer_id is None or not prepared.incoming.query:
            return
        question = PendingTask.of(prepared, f"continued:{answer_id}")
        await self.recorder.shielded(self.continuations.remember(self.path, answer_id, question))

    def _finish_headers(self, headers: Any, prepared: Prepared, clock: Clock) -> None:
        if prepared.degraded:
            headers["X-Sidecar-Degraded"] = ",".join(
                sorted(set(",".join(prepared.degraded).split(",")))
            )
        headers["Server-Timing"] = clock.header()  # also what the metrics take as overhead


# Bound of an ``Idempotency-Key``: it becomes part of a Redis key and of the turn's ids.
MAX_IDEMPOTENCY_KEY = 255


def idempotency_key_of(request: web.Request) -> str | None:
    value = request.headers.get("Idempotency-Key")
    if not value:
        return None
    if not is_visible_ascii(value, MAX_IDEMPOTENCY_KEY):
        raise BadRequest(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters",
            code="invalid_idempotency_key",
        )
    return value
