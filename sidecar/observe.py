"""What every request leaves behind: its id, its count and timings in the metrics, its access log
line and its trace. One middleware does it all, around every handler, for every response (the
sidecar's own errors and pass-through answers included); the upstream call reports its timing
through ``upstream_call``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from random import getrandbits
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractResource

from . import tracing
from .errors import UpstreamTimeout, UpstreamUnavailable
from .lifecycle import Lifecycle
from .logs import REQUEST, write_access
from .metrics import Metrics
from .middleware import CLIENT_GONE, answer_error, status_of
from .tracing import Tracer

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is kept when it is a plain token a log line can hold safely.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
PASSTHROUGH = "passthrough"
NO_ADAPTER = "none"
SIDECAR_PREFIX = "/_sidecar"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class RequestInfo:
    """What is known of one request as it goes: filled in by the middleware and the hooks."""

    request_id: str
    route: str
    adapter: str
    trace_id: str
    # Sent upstream as traceparent when tracing is off (continuing the client's trace), and
    # back to the client as traceresponse.
    traceparent: str
    upstream_s: float | None = None
    upstream_status: int | None = None
    # The sidecar's own time on an intercepted turn, as its ``Server-Timing`` header says it
    # (set by the turn route with the header: the metrics need not parse it back).
    overhead_s: float | None = None


# The request's info for the response hook: answers are prepared after the middleware returned,
# outside the request's context.
REQUEST_INFO = web.RequestKey("request_info", RequestInfo)


def current() -> RequestInfo | None:
    """The request being handled in this task, if any."""
    info = REQUEST.get()
    return info if isinstance(info, RequestInfo) else None


def request_id_of(headers: Mapping[str, str]) -> str:
    given = headers.get(REQUEST_ID_HEADER)
    if given and _SANE_REQUEST_ID.fullmatch(given):
        return given
    # As unique as uuid4().hex, from the process's generator: no system call per request
    # (os.urandom is one), and reseeded in a forked child.
    return f"{getrandbits(128):032x}"


class UpstreamCall:
    """Around one request to the upstream: forwards the request id and trace context, and times
    the wait for the response headers. The caller reports the status it got through the function
    ``with`` gives; leaving without reporting means no answer came. (A class: a generator-based
    context manager costs a generator and its wrapper on every request.)"""

    __slots__ = ("_headers", "_info", "_span", "_started")

    def __init__(self, headers: MutableMapping[str, str]) -> None:
        self._headers = headers
        self._info: RequestInfo | None = None
        self._span: contextlib.AbstractContextManager[None] | None = None
        self._started = 0.0

    def __enter__(self) -> Callable[[int], None]:
        info = self._info = current()
        if info is None:
            return _ignore_status
        headers = self._headers
        headers[REQUEST_ID_HEADER] = info.request_id
        headers["traceparent"] = info.traceparent  # replaced by the upstream span's when tracing
        if tracing.ACTIVE.get() is not None:
            self._span = tracing.upstream_span(headers)
            self._span.__enter__()
        self._started = time.perf_counter()
        return self._answered

    def _answered(self, status: int) -> None:
        info = self._info
        assert info is not None  # only handed out with a request
        info.upstream_s = (info.upstream_s or 0.0) + time.perf_counter() - self._started
        info.upstream_status = status

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._span is not None:
            return self._span.__exit__(kind, error, tb)
        return None


upstream_call = UpstreamCall


def _ignore_status(status: int) -> None:
    """Outside a request nothing is timed."""


def _ms(seconds: float) -> float:
    """Milliseconds to two decimals, half up (cheaper than ``round(x, 2)``; differs on ties)."""
    return int(seconds * 100_000 + 0.5) / 100


class Observer:
    """The middleware and the response hook of one application."""

    def __init__(
        self,
        metrics: Metrics,
        routes: Sequence[tuple[str, str]],
        *,
        access_log: bool,
        tracer: Tracer | None = None,
        fallback: str = PASSTHROUGH,
        aliases: Mapping[str, str] | None = None,
        lifecycle: Lifecycle | None = None,
    ) -> None:
        self.metrics = metrics
        # Counts requests in flight for the drain (a middleware of its own costs a coroutine each).
        self.lifecycle = lifecycle
        # Paths counted under a route though not under it (Shannon's stream beside its tasks).
        self.aliases = dict(aliases or {})
        # Longest first: a route's sub-paths (task polls) belong to it.
        self.routes = sorted(routes, key=lambda r: len(r[0]), reverse=True)
        self.access_log = access_log
        self.tracer = tracer
        # The label of requests no route or endpoint takes: forwarded, or (admin listener) 404.
        self.fallback = fallback
        metrics.known_routes([*self.routes, (PASSTHROUGH, NO_ADAPTER)])
        # The labels of each resource, and the metric children of each label set, found once:
        # both are few (routes x status codes) and looking them up costs more than the count.
        self._labels: dict[AbstractResource, tuple[str, str]] = {}
        self._children: dict[tuple[object, ...], Any] = {}
        self._tally = metrics.tally()

    def route_of(self, request: web.Request) -> tuple[str, str]:
        """(route, adapter) labels: a configured route, ``passthrough``, or a /_sidecar template;
        never the path a client chose."""
        resource = request.match_info.route.resource
        if resource is None:
            return self._route_of_template("")
        labels = self._labels.get(resource)
        if labels is None:
            labels = self._labels[resource] = self._route_of_template(resource.canonical)
        return labels

    def _route_of_template(self, template: str) -> tuple[str, str]:
        template = self.aliases.get(template, template)
        for path, adapter in self.routes:
            if template == path or template.startswith(path.rstrip("/") + "/"):
                return path, adapter
        if template == SIDECAR_PREFIX or template.startswith(SIDECAR_PREFIX + "/"):
            # The catch-all under /_sidecar would carry the client's path: one label for all.
            return (SIDECAR_PREFIX if "{tail" in template else template), NO_ADAPTER
        return self.fallback, NO_ADAPTER

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Around every handler: the request's id and trace, its answer (errors answered as
        JSON here, see ``answer_error``: one middleware, not two, saves a coroutine per
        request), then its metrics and access line."""
        started = time.perf_counter()
        route, adapter = self.route_of(request)
        parent = tracing.parse_traceparent(request.headers.get("traceparent"))
        if parent is None:
            trace_id, flags = tracing.new_trace_id(), "00"
        else:
            trace_id, flags = parent[0], parent[2]
        info = RequestInfo(
            request_id=request_id_of(request.headers),
            route=route,
            adapter=adapter,
            trace_id=trace_id,
            traceparent=tracing.format_traceparent(trace_id, tracing.new_span_id(), flags),
        )
        request[REQUEST_INFO] = info
        token = REQUEST.set(info)
        tracer = self.tracer
        tracer_token = tracing.ACTIVE.set(tracer) if tracer is not None else None
        status = CLIENT_GONE
        resp: web.StreamResponse | None = None  # the handler's answer
        error_answer: web.StreamResponse | None = None
        upstream_failure: str | None = None
        lifecycle = self.lifecycle
        if lifecycle is not None:
            lifecycle.in_flight += 1
        try:
            if tracer is None:
                resp = await handler(request)
            else:
                resp = await self._traced(request, info, handler, tracer)
            status = resp.status
        except Exception as e:
            status = status_of(e)
            if isinstance(e, UpstreamTimeout):
                upstream_failure = "timeout"
            elif isinstance(e, UpstreamUnavailable):
                upstream_failure = "unreachable"
            error_answer = answer_error(request, e)  # raises a redirect again, for aiohttp
        finally:
            if lifecycle is not None:
                lifecycle.in_flight -= 1
            if tracer_token is not None:
                tracing.ACTIVE.reset(tracer_token)
            duration = time.perf_counter() - started
            if upstream_failure is None and (info.upstream_status or 0) >= 500:
                upstream_failure = "status_5xx"
            # Counted and logged once the answer is on its way: the handler's return is
            # followed, in the same step of its task, by aiohttp writing the response, so a
            # callback queued now runs after that write, and before any later request is read.
            asyncio.get_running_loop().call_soon(
                self._record, request, info, status, resp, duration, upstream_failure
            )
            REQUEST.reset(token)
        if resp is None:
            assert error_answer is not None  # the handler raised, and answer_error answered
            return error_answer
        return resp

    async def _traced(
        self, request: web.Request, info: RequestInfo, handler: Handler, tracer: Tracer
    ) -> web.StreamResponse:
        """The handler inside the request's server span (tracing on)."""
        name = request.method if info.route == PASSTHROUGH else f"{request.method} {info.route}"
        attributes = {
            "http.request.method": request.method,
            "http.route": info.route,
            "sidecar.adapter": info.adapter,
            "sidecar.request_id": info.request_id,
        }
        with tracer.server_span(name, request.headers, attributes) as span:
            context = span.get_span_context()
            info.trace_id = f"{context.trace_id:032x}"
            info.traceparent = tracing.format_traceparent(
                info.trace_id, f"{context.span_id:016x}", f"{context.trace_flags:02x}"
            )
            status = CLIENT_GONE
            try:
                resp = await handler(request)
                status = resp.status
                return resp
            except Exception as e:
                status = status_of(e)
                raise
            finally:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    tracer.mark_error(span)

    def _record(
        self,
        request: web.BaseRequest,
        info: RequestInfo,
        status: int,
        resp: web.StreamResponse | None,
        duration: float,
        upstream_failure: str | None,
    ) -> None:
        m = self.metrics
        route, adapter = info.route, info.adapter
        overhead = None
        if status != CLIENT_GONE:
            self._tally.add(self._child(m.http_requests, route, adapter, status))
        upstream_s = info.upstream_s
        if upstream_s is not None:
            self._tally.observe(self._child(m.upstream_duration, route, adapter), upstream_s)
        if upstream_failure is not None:
            self._tally.add(self._child(m.upstream_errors, route, adapter, upstream_failure))
        if resp is not None and adapter != NO_ADAPTER:
            overhead = info.overhead_s
            if overhead is not None:
                self._tally.observe(self._child(m.overhead, route, adapter), overhead)
        if not self.access_log:
            return
        session_id = degraded = None
        if resp is not None:
            headers = resp.headers
            session_id = headers.get("X-Session-ID")
            degraded = headers.get("X-Sidecar-Degraded")
        write_access(
            (  # in ACCESS_FIELDS order
                info.request_id,
                request.method,
                route,
                adapter,
                status,
                _ms(duration),
                None if upstream_s is None else _ms(upstream_s),
                None if overhead is None else _ms(overhead),
                session_id,
                degraded,
                info.trace_id,
            )
        )

    def _child(self, metric: Any, *labels: object) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*map(str, labels))
        return child

    def unhandled(self, request: web.BaseRequest, status: int) -> dict[str, str]:
        """A request too malformed to route, answered below the handlers: counted, logged."""
        trace = tracing.new_trace_id()
        sent = tracing.format_traceparent(trace, tracing.new_span_id(), "00")
        info = RequestInfo(request_id_of(request.headers), self.fallback, NO_ADAPTER, trace, sent)
        self._record(request, info, status, None, 0.0, None)
        return {REQUEST_ID_HEADER: info.request_id, "traceresponse": sent}

    async def on_response_prepare(self, request: web.Request, resp: web.StreamResponse) -> None:
        """Every response tells the client its request id and trace (W3C ``traceresponse``)."""
        info = request.get(REQUEST_INFO)
        if info is None:
            return
        resp.headers[REQUEST_ID_HEADER] = info.request_id
        resp.headers["traceresponse"] = info.traceparent
