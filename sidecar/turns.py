"""The path of one intercepted turn: parse, load the session, resolve the context, forward with
history injected, read the answer as it passes, and record the turn."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import zoneinfo
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from yarl import URL

from .adapters.base import Adapter, Incoming, Injection
from .adapters.sse import SSEAccumulator
from .config import Config
from .context import Extractor, estimate_tokens
from .errors import PayloadTooLarge, StoreUnavailable
from .identity import resolve_tenant
from .metrics import Metrics
from .proxy import (
    client_response_headers,
    open_upstream,
    relay_response,
    upstream_request_headers,
    upstream_url,
)
from .session.manager import SessionService
from .session.model import SessionKey, SessionSnapshot, Turn, Usage, new_message
from .session.window import history_window

log = logging.getLogger(__name__)

# Answers larger than this are relayed but not parsed for memory.
MAX_PARSED_ANSWER = 32 * 1024 * 1024


async def read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    data = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    return bytes(data)


@dataclass(slots=True)
class Prepared:
    key: SessionKey
    incoming: Incoming
    snapshot: SessionSnapshot
    degraded: list[str]
    forward_body: dict[str, Any]
    context_patch: dict[str, Any]
    idempotency_key: str | None


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
    """The handler of one intercepted route."""

    def __init__(
        self,
        adapter: Adapter,
        config: Config,
        client: aiohttp.ClientSession,
        sessions: SessionService,
        extractor: Extractor | None,
        metrics: Metrics,
    ) -> None:
        self.adapter = adapter
        self.config = config
        self.client = client
        self.sessions = sessions
        self.extractor = extractor
        self.metrics = metrics
        self.base = URL(config.upstream.url)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        clock = Clock()
        raw = await read_body(request, self.config.session.max_body_bytes)
        incoming = self.adapter.parse(raw, request.headers)
        prepared = await self.prepare(request, incoming)
        hide_usage = (
            self.adapter.prepare_stream(prepared.forward_body) if incoming.stream else False
        )

        headers = upstream_request_headers(request, body_changed=True)
        headers["Content-Type"] = "application/json"
        headers["X-Session-ID"] = prepared.key.session_id
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
            return await self._relay_json(request, up, out_headers, prepared, clock)

    async def prepare(self, request: web.Request, incoming: Incoming) -> Prepared:
        tenant = resolve_tenant(request, trust_headers=self.config.identity.trust_headers)
        session_id = incoming.session_id or str(uuid.uuid4())
        key = SessionKey(tenant, session_id)
        loaded = await self.sessions.load(key)
        snapshot = loaded.snapshot
        degraded = [loaded.degraded] if loaded.degraded else []

        patch: dict[str, Any] = dict(incoming.request_context)
        completed = None
        if self.extractor is not None and self.config.context.extract_entities:
            last_assistant = next(
                (m.content for m in reversed(snapshot.window) if m.role == "assistant"), None
            )
            resolution = await self.extractor.resolve(
                incoming.query,
                context={**snapshot.context, **incoming.request_context},
                last_assistant=last_assistant,
                timezone=self._timezone(incoming.request_context),
            )
            patch = {**resolution.entities, **incoming.request_context}
            completed = resolution.completed_query
        context = {**snapshot.context, **patch}
        session_cfg = self.config.session
        window = history_window(
            snapshot.window, session_cfg.history_limit, session_cfg.history_token_budget
        )
        body = self.adapter.inject(
            incoming,
            Injection(session_id, window, context, completed, self.config.context.rewrite),
        )
        idempotency_key = request.headers.get("Idempotency-Key") or None
        return Prepared(key, incoming, snapshot, degraded, body, patch, idempotency_key)

    def _timezone(self, request_context: dict[str, Any]) -> str:
        tz = request_context.get("timezone")
        if isinstance(tz, str) and tz:
            try:
                zoneinfo.ZoneInfo(tz)
                return tz
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                pass
        return self.config.context.timezone

    # --- answers ---------------------------------------------------------------------------------

    async def _relay_json(
        self,
        request: web.Request,
        up: aiohttp.ClientResponse,
        headers: Any,
        prepared: Prepared,
        clock: Clock,
    ) -> web.StreamResponse:
        clock.pause()
        body = await up.read()
        clock.resume()
        if 200 <= up.status < 300 and len(body) <= MAX_PARSED_ANSWER:
            try:
                parsed: Any = orjson.loads(body)
            except orjson.JSONDecodeError:
                parsed = None
            text, usage = self.adapter.answer(parsed)
            if text is not None:
                await self._record(prepared, text, usage, partial=False)
        self._finish_headers(headers, prepared, clock)
        self.metrics.requests.labels(self.adapter.name, str(up.status)).inc()
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
        acc = SSEAccumulator()
        headers["X-Accel-Buffering"] = "no"
        self._finish_headers(headers, prepared, clock)
        clock.pause()
        resp, complete = await relay_response(request, up, headers, observe=acc.feed)
        if 200 <= up.status < 300 and acc.text:
            # A stream cut short is recorded as far as it got, marked partial: the user saw it.
            await self._record(prepared, acc.text, acc.result_usage(), partial=not complete)
        self.metrics.requests.labels(self.adapter.name, str(up.status)).inc()
        return resp

    def _finish_headers(self, headers: Any, prepared: Prepared, clock: Clock) -> None:
        if prepared.degraded:
            headers["X-Sidecar-Degraded"] = ",".join(
                sorted(set(",".join(prepared.degraded).split(",")))
            )
        headers["Server-Timing"] = clock.header()
        self.metrics.overhead.observe(clock.spent)

    async def _record(self, prepared: Prepared, text: str, usage: Usage, *, partial: bool) -> None:
        query = prepared.incoming.query
        user = new_message("user", query, usage_or_estimate(None, query))
        assistant = new_message(
            "assistant", text, usage_or_estimate(usage.completion_tokens or None, text)
        )
        turn = Turn(
            key=prepared.key,
            user=user,
            assistant=assistant,
            usage=usage,
            context_patch=prepared.context_patch,
            idempotency_key=prepared.idempotency_key,
            partial=partial,
        )
        # The client may go away now; the turn it was answered must still be recorded whole.
        try:
            result = await asyncio.shield(self.sessions.commit(turn))
        except StoreUnavailable:
            prepared.degraded.append("unrecorded")
            return
        if result.degraded:
            prepared.degraded.append(result.degraded)
            self.metrics.degraded.labels(result.degraded).inc()


def usage_or_estimate(reported: int | None, text: str) -> int:
    return reported if reported is not None else estimate_tokens(text)
