"""Trace context: W3C ``traceparent`` always, OpenTelemetry spans when ``tracing.enabled``.

Off (the default) tracing costs nothing: OpenTelemetry is not even imported, and ``span()`` hands
back one shared do-nothing context manager. The trace id a client sent is still continued (or a
new one made), forwarded upstream and logged. On, it needs the ``otel`` extra
(``pip install 'session-sidecar[otel]'``): a server span per request, a child span per phase
(``span("load")``...) and a root span per writer batch.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, MutableMapping
from contextvars import ContextVar
from random import getrandbits
from typing import Any

from .config import TracingConfig
from .errors import ConfigError

SERVICE_NAME = "session-sidecar"
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_NOOP: contextlib.nullcontext[None] = contextlib.nullcontext()


def parse_traceparent(value: str | None) -> tuple[str, str, str] | None:
    """(trace id, parent span id, flags) of a valid W3C ``traceparent``, else None."""
    if not value:
        return None
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    # Version ff is invalid; version 00 has exactly four fields; later versions may add more.
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"}:
        return None
    if set(span_id) == {"0"}:
        return None
    return trace_id, span_id, flags


# Ids from the process's generator rather than os.urandom (a system call each, two per
# request): W3C asks ids to be random and unique, not secret, and the generator is reseeded in
# a forked child. A zero id (invalid) has a chance of 2**-64 at worst.
def new_trace_id() -> str:
    return f"{getrandbits(128):032x}"


def new_span_id() -> str:
    return f"{getrandbits(64):016x}"


def format_traceparent(trace_id: str, span_id: str, flags: str = "00") -> str:
    return f"00-{trace_id}-{span_id}-{flags}"


class Tracer:
    """This application's OpenTelemetry tracer provider and its exporter."""

    def __init__(self, config: TracingConfig, exporter: Any = None) -> None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import (
                BatchSpanProcessor,
                ConsoleSpanExporter,
                SimpleSpanProcessor,
            )
            from opentelemetry.trace import SpanKind, Status, StatusCode
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError as e:
            raise ConfigError(
                "config error: tracing.enabled: OpenTelemetry is not installed "
                "(pip install 'session-sidecar[otel]')"
            ) from e
        self._kind_server = SpanKind.SERVER
        self._kind_client = SpanKind.CLIENT
        self._error = Status(StatusCode.ERROR)
        self._propagator = TraceContextTextMapPropagator()
        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set, win over this name.
        self.provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        if exporter is not None:  # given by tests: every span exported as it ends
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif config.exporter == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError as e:
                raise ConfigError(
                    "config error: tracing.exporter: the OTLP exporter is not installed "
                    "(pip install 'session-sidecar[otel]')"
                ) from e
            # Endpoint, headers and timeouts from the standard OTEL_EXPORTER_OTLP_* variables.
            self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif config.exporter == "console":
            self.provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        self._tracer = self.provider.get_tracer("sidecar")

    def server_span(
        self, name: str, headers: Mapping[str, str], attributes: dict[str, Any]
    ) -> contextlib.AbstractContextManager[Any]:
        """The span of one request, a child of the client's ``traceparent`` when it sent one."""
        parent = self._propagator.extract(headers)
        return self._tracer.start_as_current_span(
            name, context=parent, kind=self._kind_server, attributes=attributes
        )

    def span(
        self, name: str, attributes: dict[str, Any] | None = None, *, client: bool = False
    ) -> contextlib.AbstractContextManager[Any]:
        kind = self._kind_client if client else None
        if kind is None:
            return self._tracer.start_as_current_span(name, attributes=attributes)
        return self._tracer.start_as_current_span(name, kind=kind, attributes=attributes)

    def mark_error(self, span: Any) -> None:
        span.set_status(self._error)

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Put the current span's ``traceparent`` (and ``tracestate``) into ``headers``."""
        self._propagator.inject(headers)

    def shutdown(self) -> None:
        """Export what is buffered, then stop."""
        self.provider.shutdown()


# The tracer of the request being handled (None: tracing is off). Set per request by the
# middleware, so the hooks deep in the request's path need no reference to the application.
ACTIVE: ContextVar[Tracer | None] = ContextVar("sidecar_tracer", default=None)


def span(
    name: str, tracer: Tracer | None = None, **attributes: Any
) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one named ``sidecar.<name>``; nothing when tracing is off."""
    t = tracer if tracer is not None else ACTIVE.get()
    if t is None:
        return _NOOP
    return t.span(f"sidecar.{name}", attributes or None)


@contextlib.contextmanager
def upstream_span(headers: MutableMapping[str, str]) -> Iterator[None]:
    """The span of one upstream call, its context put into the forwarded ``traceparent``."""
    t = ACTIVE.get()
    if t is None:
        yield
        return
    with t.span("sidecar.upstream", client=True):
        t.inject(headers)
        yield
