"""The path of one intercepted turn: parse, load the session, resolve the context, forward with
history injected, read the answer as it passes, and record the turn.

Answers come three ways: a JSON body (read whole, then relayed), a Server-Sent Events stream
(relayed chunk by chunk while a parser reads a copy) and, on tasks routes, an asynchronous task
(remembered, and recorded when the client reads its result through ``GET <route>/{task_id}``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import zlib
import zoneinfo
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import orjson
from aiohttp import web
from yarl import URL

from .adapters.base import Adapter, Incoming, Injection
from .adapters.sse import SSEAccumulator, UsageChunkFilter
from .config import Config
from .context import Extractor, estimate_tokens
from .errors import (
    BadRequest,
    PayloadTooLarge,
    StoreUnavailable,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .identity import resolve_tenant
from .metrics import Metrics
from .proxy import (
    ChunkFilter,
    client_response_headers,
    open_upstream,
    relay_response,
    upstream_request_headers,
    upstream_url,
)
from .session.manager import SessionService
from .session.model import (
    SessionKey,
    SessionSnapshot,
    Turn,
    Usage,
    new_message,
    turn_ids,
    utc_now_iso,
)
from .session.window import history_window
from .tasks_async import (
    FAILED_STATUSES,
    RUNNING_STATUSES,
    PendingTask,
    TaskRegistry,
    task_id_of,
    task_status,
)

log = logging.getLogger(__name__)

# Follow-ups are short; the engine's cost grows faster than the text, so a pasted document is
# forwarded without entity extraction rather than holding up the event loop.
MAX_EXTRACTED_CHARS = 2000
# Answers larger than this are relayed but not parsed for memory.
MAX_PARSED_ANSWER = 32 * 1024 * 1024
# The path parameter of a task poll route: ``<route>/{task_id}``.
TASK_ID_PARAM = "/{task_id}"

T = TypeVar("T")


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, decoded when the client compressed it, at most ``limit`` bytes either way."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    data = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    return decode_body(bytes(data), encoding, limit)


def decode_body(data: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return data
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise BadRequest(
            f"unsupported Content-Encoding {encoding!r} (use gzip, deflate or none)",
            code="unsupported_content_encoding",
        )
    # gzip or zlib header detected automatically; output bounded against decompression bombs.
    inflater = zlib.decompressobj(wbits=47)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as e:
        raise BadRequest(f"the body is not valid {encoding}: {e}", code="invalid_body") from e
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"the decoded body is larger than {limit} bytes")
    return out


@dataclass(slots=True)
class Prepared:
    key: SessionKey
    incoming: Incoming
    snapshot: SessionSnapshot
    degraded: list[str]
    forward_body: dict[str, Any]
    context_patch: dict[str, Any]
    idempotency_key: str | None
    # When the request arrived: the user's message is stamped with it, and a session deleted
    # after this moment does not get this turn back.
    received_at: str = field(default_factory=utc_now_iso)


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
        metrics: Metrics,
    ) -> None:
        self.adapter = adapter
        self.config = config
        self.client = client
        self.sessions = sessions
        self.extractor = extractor
        self.metrics = metrics
        self.base = URL(config.upstream.url)
        self.tasks = TaskRegistry(sessions.redis) if adapter.async_tasks else None
        # Commits running under shield; referenced so none is collected mid-way.
        self._commits: set[asyncio.Task[Any]] = set()

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
            if up.content_length is not None and up.content_length > MAX_PARSED_ANSWER:
                # Too large to hold for reading: relayed as it comes, not remembered.
                passthrough = client_response_headers(up)
                passthrough["X-Session-ID"] = prepared.key.session_id
                resp, _ = await relay_response(request, up, passthrough)
                return resp
            return await self._relay_json(request, up, out_headers, prepared, clock)

    async def prepare(self, request: web.Request, incoming: Incoming) -> Prepared:
        tenant = resolve_tenant(request, trust_headers=self.config.identity.trust_headers)
        session_id = incoming.session_id or str(uuid.uuid4())
        key = SessionKey(tenant, session_id)
        # An id the sidecar just made cannot exist anywhere: no need to ask PostgreSQL.
        loaded = await self.sessions.load(key, new=incoming.session_id is None)
        snapshot = loaded.snapshot
        degraded = [loaded.degraded] if loaded.degraded else []

        patch: dict[str, Any] = dict(incoming.request_context)
        completed = None
        if (
            self.extractor is not None
            and self.config.context.extract_entities
            and len(incoming.query) <= MAX_EXTRACTED_CHARS
        ):
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
        body = await read_answer(up)
        clock.resume()
        if 200 <= up.status < 300 and len(body) <= MAX_PARSED_ANSWER:
            try:
                parsed: Any = orjson.loads(body)
            except orjson.JSONDecodeError:
                parsed = None
            text, usage = self.adapter.answer(parsed)
            if text is not None:
                await self._record(prepared, text, usage, partial=False)
            elif self.tasks is not None and (task_id := task_id_of(parsed)) is not None:
                await self._remember_task(request, task_id, prepared)
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
        """Relay an SSE answer chunk by chunk while a parser reads a copy, then record the turn.

        A stream cut short (the client went away, or the upstream stopped) is recorded as far as
        it got, marked ``partial``: that text was generated and shown to the user, and the next
        turn ("go on", "that is not what I asked") refers to it; forgetting it would make the
        conversation incoherent. It is recorded once: this is the only place a stream's turn is
        committed, and a retry with the same ``Idempotency-Key`` finds it recorded already.
        A stream whose events said the answer was whole (``[DONE]``, a final event with the
        full result, a ``finish_reason``) is not partial even if its connection ended early.
        """
        acc = SSEAccumulator()
        transform: ChunkFilter | None = UsageChunkFilter() if hide_usage else None
        headers["X-Accel-Buffering"] = "no"
        self._finish_headers(headers, prepared, clock)
        clock.pause()
        resp, complete = await relay_response(
            request, up, headers, observe=acc.feed, transform=transform
        )
        if 200 <= up.status < 300 and acc.text and not acc.tool_calls:
            partial = not (complete or acc.finished)
            await self._record(prepared, acc.text, acc.result_usage(), partial=partial)
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
        await self._commit(
            prepared.key,
            prepared.incoming.query,
            text,
            usage,
            context_patch=prepared.context_patch,
            idempotency_key=prepared.idempotency_key,
            partial=partial,
            degraded=prepared.degraded,
            asked_at=prepared.received_at,
        )

    async def _commit(
        self,
        key: SessionKey,
        query: str,
        text: str,
        usage: Usage,
        *,
        context_patch: dict[str, Any],
        idempotency_key: str | None,
        partial: bool,
        degraded: list[str],
        asked_at: str | None = None,
    ) -> bool:
        """Record one turn; False when no store took it (``unrecorded`` is added to ``degraded``)."""
        turn_id, user_id, assistant_id = turn_ids(key, idempotency_key)
        user = new_message("user", query, usage_or_estimate(None, query), asked_at, user_id)
        assistant = new_message(
            "assistant",
            text,
            usage_or_estimate(usage.completion_tokens or None, text),
            message_id=assistant_id,
        )
        turn = Turn(
            turn_id=turn_id,
            key=key,
            user=user,
            assistant=assistant,
            usage=usage,
            context_patch=context_patch,
            idempotency_key=idempotency_key,
            partial=partial,
        )
        # The client may go away now; the turn it was answered must still be recorded whole.
        try:
            result = await self._shielded(self.sessions.commit(turn))
        except StoreUnavailable:
            degraded.append("unrecorded")
            return False
        except Exception:
            # The client has its answer already; a failure to remember it must not cost it.
            log.exception("turn of %s/%s not recorded", key.tenant, key.session_id)
            degraded.append("unrecorded")
            return False
        if result.degraded:
            degraded.append(result.degraded)
            self.metrics.degraded.labels(result.degraded).inc()
        return True

    async def _shielded(self, coro: Coroutine[Any, Any, T]) -> T:
        task = asyncio.get_running_loop().create_task(coro)
        self._commits.add(task)
        task.add_done_callback(self._commits.discard)
        return await asyncio.shield(task)

    # --- asynchronous tasks ----------------------------------------------------------------------

    async def _remember_task(self, request: web.Request, task_id: str, prepared: Prepared) -> None:
        """Keep what the task's turn needs until the client reads its result."""
        assert self.tasks is not None
        task = PendingTask(
            tenant=prepared.key.tenant,
            session_id=prepared.key.session_id,
            query=prepared.incoming.query,
            context_patch=prepared.context_patch,
            # The client's key when it gave one (a resubmission is then one turn too), else
            # one per task: however often the task is read, its turn is recorded once.
            idempotency_key=prepared.idempotency_key or f"task:{task_id}",
        )
        if not await self._shielded(self.tasks.remember(_route_of(request), task_id, task)):
            prepared.degraded.append("unrecorded")

    async def poll_task(self, request: web.Request) -> web.StreamResponse:
        """``GET <route>/{task_id}``: passed through; the answer of a task the sidecar remembers
        is read, and once it shows the result the turn is recorded (once) and the task forgotten.
        """
        task_id = request.match_info["task_id"]
        route = _route_of(request)
        tenant = resolve_tenant(request, trust_headers=self.config.identity.trust_headers)
        pending = await self.tasks.lookup(tenant, route, task_id) if self.tasks else None
        url = upstream_url(self.base, request)
        headers = upstream_request_headers(request)
        data = request.content if request.body_exists else None
        if pending is None:
            async with open_upstream(self.client, request.method, url, headers, data) as up:
                resp, _ = await relay_response(request, up, client_response_headers(up))
                return resp

        headers.popall("Accept-Encoding", None)
        async with open_upstream(self.client, request.method, url, headers, data) as up:
            if up.content_type == "text/event-stream" or (
                up.content_length is not None and up.content_length > MAX_PARSED_ANSWER
            ):
                resp, _ = await relay_response(request, up, client_response_headers(up))
                return resp
            body = await read_answer(up)
            out_headers = client_response_headers(up, body_changed=True)
            out_headers["X-Session-ID"] = pending.session_id
            degraded: list[str] = []
            if 200 <= up.status < 300:
                await self._task_answer(route, task_id, pending, body, degraded)
            if degraded:
                out_headers["X-Sidecar-Degraded"] = ",".join(sorted(set(degraded)))
            self.metrics.requests.labels(self.adapter.name, str(up.status)).inc()
            return web.Response(status=up.status, reason=up.reason, body=body, headers=out_headers)

    async def _task_answer(
        self, route: str, task_id: str, pending: PendingTask, body: bytes, degraded: list[str]
    ) -> None:
        assert self.tasks is not None
        try:
            parsed: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        status = task_status(parsed)
        if status in FAILED_STATUSES:
            await self.tasks.forget(pending.tenant, route, task_id)
            return
        text, usage = self.adapter.answer(parsed)
        if text is None or status in RUNNING_STATUSES:
            return
        recorded = await self._commit(
            pending.key,
            pending.query,
            text,
            usage,
            context_patch=pending.context_patch,
            idempotency_key=pending.idempotency_key,
            partial=False,
            degraded=degraded,
            asked_at=pending.submitted_at,
        )
        if recorded:
            await self._shielded(self.tasks.forget(pending.tenant, route, task_id))


def _route_of(request: web.Request) -> str:
    """The configured path of the route a request came in by (a task poll's without its id)."""
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else request.path
    return canonical.removesuffix(TASK_ID_PARAM).rstrip("/")


async def read_answer(up: aiohttp.ClientResponse) -> bytes:
    """The upstream's whole answer; a stall or a cut while reading it is a 504 or a 502."""
    try:
        return await up.read()
    except TimeoutError as e:
        raise UpstreamTimeout("the upstream stopped sending its answer") from e
    except aiohttp.ClientError as e:
        raise UpstreamUnavailable(f"the upstream's answer broke off: {type(e).__name__}") from e


def usage_or_estimate(reported: int | None, text: str) -> int:
    return reported if reported is not None else estimate_tokens(text)
