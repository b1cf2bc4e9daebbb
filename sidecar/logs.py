"""Logging set-up: text or one JSON object per line (``logging.format``), and the access log.

Every line written while a request is handled carries its request id. The access log line has a
fixed set of fields (``ACCESS_FIELDS``): no header, body, query or credential ever reaches it.

Access lines are the one log written per request, so they skip the ``logging`` machinery (a
record, filters, a formatter, a write to stderr each: about a third of a pass-through request's
CPU). They are formatted here, exactly as the formatters would, and written in batches by the
handler: every ``ACCESS_FLUSH_S`` or ``ACCESS_BATCH`` lines, before any other record (so the
log keeps its order), and when logging shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Literal, Protocol, TextIO

import orjson

ACCESS_LOGGER = "sidecar.access"
ACCESS_FIELDS = (
    "request_id",
    "method",
    "route",
    "adapter",
    "status",
    "duration_ms",
    "upstream_ms",
    "overhead_ms",
    "session_id",
    "degraded",
    "trace_id",
)

# An access line's fields, in ``ACCESS_FIELDS`` order (a tuple: no dict per request).
AccessValues = tuple[Any, ...]
_TEXT_KEYS = tuple(f"{k}=" for k in ACCESS_FIELDS)


def _values(fields: Mapping[str, Any]) -> AccessValues:
    return tuple(fields[k] for k in ACCESS_FIELDS)


class RequestLike(Protocol):
    request_id: str


# The request being handled, whose id goes on every line logged on its behalf (the request
# itself rather than its id: one context variable per request to set, not two).
REQUEST: ContextVar[RequestLike | None] = ContextVar("sidecar_request", default=None)

access_log = logging.getLogger(ACCESS_LOGGER)


# Pending access lines are written at the latest this long after the first of them, or as soon
# as this many are pending.
ACCESS_FLUSH_S = 0.1
ACCESS_BATCH = 256


class _SecondCache:
    """``strftime`` of the current second, computed once a second rather than once a line."""

    __slots__ = ("_convert", "_fmt", "_second", "_text")

    def __init__(self, fmt: str, convert: Any) -> None:
        self._fmt = fmt
        self._convert = convert
        self._second = -1
        self._text = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._text = time.strftime(self._fmt, self._convert(second))
            self._second = second
        return self._text


_iso_second = _SecondCache("%Y-%m-%dT%H:%M:%S", time.gmtime)
_local_second = _SecondCache(logging.Formatter.default_time_format, time.localtime)


def _iso(created: float) -> str:
    ms = int(created * 1000) % 1000
    return f"{_iso_second(created)}.{ms:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts, level, logger, message`` (+ ``request_id``, ``exc``);
    access records carry their fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "access", None)
        if isinstance(fields, Mapping):
            out.update(fields)
        else:
            request_id = getattr(record, "request_id", None)
            if request_id is not None:
                out["request_id"] = request_id
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str).decode()

    def format_access(self, created: float, message: str, fields: Mapping[str, Any]) -> str:
        """The line ``format`` gives an access record, without making one."""
        return self.access_line(created, message, _values(fields))

    def access_line(self, created: float, message: str, values: AccessValues) -> str:
        """``format_access`` of the fields ``values`` holds in ``ACCESS_FIELDS`` order."""
        out = {"ts": _iso(created), "level": "INFO", "logger": ACCESS_LOGGER, "message": message}
        out.update(zip(ACCESS_FIELDS, values, strict=True))
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format_access(self, created: float, message: str, fields: Mapping[str, Any]) -> str:
        """The line ``format`` gives an access record, without making one."""
        return self.access_line(created, message, _values(fields))

    def access_line(self, created: float, message: str, values: AccessValues) -> str:
        """``format_access`` of the fields ``values`` holds in ``ACCESS_FIELDS`` order."""
        msecs = int((created - int(created)) * 1000)
        # str(v) is what f"{k}={v}" writes for the field types (str, int, float).
        pairs = " ".join(
            [k + str(v) for k, v in zip(_TEXT_KEYS, values, strict=True) if v is not None]
        )
        return f"{_local_second(created)},{msecs:03d} INFO {ACCESS_LOGGER}: {message} {pairs}"

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "access", None)
        if isinstance(fields, Mapping):
            pairs = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
            return f"{line} {pairs}"
        request_id = getattr(record, "request_id", None)
        return f"{line} [request_id={request_id}]" if request_id else line


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request = REQUEST.get()
            record.request_id = None if request is None else request.request_id
        return True


class LogHandler(logging.StreamHandler[TextIO]):
    """The one handler: records as usual, access lines (``add_access``) preformatted and batched.

    Pending access lines always go out before any record that comes after them, so the log's
    order is the order things happened in.
    """

    def __init__(self, stream: TextIO, formatter: JsonFormatter | TextFormatter) -> None:
        super().__init__(stream)
        self.setFormatter(formatter)
        self.line_formatter = formatter
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._owner = threading.get_ident()

    def add_access(self, created: float, message: str, values: AccessValues) -> None:
        pending = self._pending
        # No lock: only the event loop's thread adds lines, list.append is atomic, and
        # ``_write_pending`` takes what it saw without losing a line appended meanwhile.
        pending.append(self.line_formatter.access_line(created, message, values))
        if len(pending) >= ACCESS_BATCH:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        # A timer of a loop that has since stopped would never fire: one per loop.
        if self._timer is None or self._timer_loop is not loop:
            self._timer_loop = loop
            self._timer = loop.call_later(ACCESS_FLUSH_S, self.flush)

    def _write_pending(self) -> None:
        if self._timer is not None:
            if threading.get_ident() == self._owner:
                self._timer.cancel()
            self._timer = None
        pending = self._pending
        if pending:
            # Slice then delete (each atomic): a line appended in between stays pending.
            taken = len(pending)
            lines = pending[:taken]
            del pending[:taken]
            self.stream.write(self.terminator.join(lines) + self.terminator)

    def emit(self, record: logging.LogRecord) -> None:
        if self._pending:
            with self.lock or contextlib.nullcontext():
                try:
                    self._write_pending()
                except Exception:  # a closed stream: reported as logging does, never raised
                    self.handleError(record)
        super().emit(record)

    def flush(self) -> None:
        with self.lock or contextlib.nullcontext():
            try:
                self._write_pending()
            except Exception:  # a closed stream at exit: as logging itself does, say so
                self.handleError(logging.makeLogRecord({"msg": "access log flush failed"}))
        super().flush()


_handler: LogHandler | None = None


def setup_logging(
    level: str, fmt: Literal["text", "json"] = "text", stream: TextIO | None = None
) -> None:
    """Route every logger (aiohttp's and warnings included) through one handler on stderr."""
    global _handler
    handler = LogHandler(
        stream or sys.stderr, JsonFormatter() if fmt == "json" else TextFormatter()
    )
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))
    # The access log is INFO whatever the level, unless turned off (logging.access_log).
    access_log.setLevel(logging.INFO)
    logging.captureWarnings(True)
    _handler = handler


def flush_logs() -> None:
    """Write out pending access lines (at shutdown; ``logging.shutdown`` does it at exit too)."""
    if _handler is not None:
        _handler.flush()


def log_access(fields: Mapping[str, Any]) -> None:
    """Write one access line; ``fields`` holds exactly ``ACCESS_FIELDS``."""
    write_access(_values(fields))


def write_access(values: AccessValues) -> None:
    """Write one access line of the fields ``values`` holds in ``ACCESS_FIELDS`` order."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    message = f"{values[1]} {values[2]} {values[4]}"  # method, route, status
    handler = _handler
    if handler is not None and access_log.propagate and not access_log.handlers:
        handler.add_access(time.time(), message, values)
    else:  # logging set up by someone else (a test's caplog, an embedding program)
        access_log.info(message, extra={"access": dict(zip(ACCESS_FIELDS, values, strict=True))})
