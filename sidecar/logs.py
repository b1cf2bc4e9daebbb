"""Logging set-up: text or one JSON object per line (``logging.format``), and the access log.

Every line written while a request is handled carries its request id. The access log line has a
fixed set of fields (``ACCESS_FIELDS``): no header, body, query or credential ever reaches it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Literal, TextIO

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

# The id of the request being handled, for every line logged on its behalf.
REQUEST_ID: ContextVar[str | None] = ContextVar("sidecar_request_id", default=None)

access_log = logging.getLogger(ACCESS_LOGGER)


def _iso(created: float) -> str:
    ms = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{ms:03d}Z"


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


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

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
            record.request_id = REQUEST_ID.get()
        return True


def setup_logging(
    level: str, fmt: Literal["text", "json"] = "text", stream: TextIO | None = None
) -> None:
    """Route every logger (aiohttp's and warnings included) through one handler on stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))
    # The access log is INFO whatever the level, unless turned off (logging.access_log).
    access_log.setLevel(logging.INFO)
    logging.captureWarnings(True)


def log_access(fields: dict[str, Any]) -> None:
    """Write one access line; ``fields`` holds exactly ``ACCESS_FIELDS``."""
    if access_log.isEnabledFor(logging.INFO):
        message = f"{fields['method']} {fields['route']} {fields['status']}"
        access_log.info(message, extra={"access": fields})
