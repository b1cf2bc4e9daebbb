"""Faults on the wire, below any handler: malformed HTTP and clients that go away.

Both are the client's doing and cost nothing but a line: each is logged as one WARNING without a
traceback, and at most ``BURST`` lines per ``WINDOW_S`` per kind (the rest are counted and the
count is reported with the next line), so nobody can flood the log by sending garbage.

Framing errors found before a request exists (a NUL in a header, both ``Content-Length`` and
``Transfer-Encoding``, a bad request line) are reported by aiohttp to the logger an application
gives it, ``ServerLog``, and answered with the sidecar's JSON error by the connections of
``middleware.Runner``. Errors found in a body (a bad chunk size, a body cut short) reach the
handler, and the sidecar answers them with the same JSON error body.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger("sidecar.wire")

WINDOW_S = 10.0
BURST = 5


class RateLimitedLog:
    """WARNING lines, at most ``burst`` per ``window_s`` for each kind."""

    def __init__(self, logger: logging.Logger, window_s: float = WINDOW_S, burst: int = BURST):
        self.logger = logger
        self.window_s = window_s
        self.burst = burst
        self._windows: dict[str, tuple[float, int, int]] = {}  # kind -> (start, logged, dropped)

    def reset(self) -> None:
        """Start every kind's window afresh (tests that count lines)."""
        self._windows.clear()

    def warning(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        start, logged, dropped = self._windows.get(kind, (now, 0, 0))
        if now - start >= self.window_s:
            start, logged = now, 0
        if logged >= self.burst:
            self._windows[kind] = (start, logged, dropped + 1)
            return
        if dropped:
            message += " (%d similar not logged)"
            args = (*args, dropped)
        self._windows[kind] = (start, logged + 1, 0)
        self.logger.warning(message, *args)


WIRE_LOG = RateLimitedLog(log)


def describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, HttpProcessingError):
        return f"{type(exc).__name__}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def log_bad_http(exc: BaseException | None, where: str) -> None:
    WIRE_LOG.warning("bad_http", "malformed HTTP from %s: %s", where, describe(exc))


def log_client_gone(where: str) -> None:
    WIRE_LOG.warning("client_gone", "client went away: %s", where)


def log_unrecorded(exc: BaseException, where: str) -> None:
    """Counting or logging a request answered below the handlers failed: rate limited like the
    requests themselves, which a client can send by the thousand."""
    WIRE_LOG.warning("unrecorded", "could not record the answer to %s: %s", where, describe(exc))


class ServerLog:
    """What aiohttp's request handler logs to (``handler_args={"logger": ...}``).

    It reports its own faults through ``exception()``: protocol errors and disconnects become one
    rate-limited WARNING; anything else (a real bug) keeps its traceback.
    """

    def __init__(self) -> None:
        self._fallback = logging.getLogger("aiohttp.server")

    def exception(self, msg: str, *args: Any, exc_info: Any = None, **kw: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else None
        where = str(args[0]) if args else "a client"
        if isinstance(exc, HttpProcessingError):
            log_bad_http(exc, where)
        elif isinstance(exc, ConnectionError):
            log_client_gone(where)
        else:
            self._fallback.error(msg, *args, exc_info=exc_info or True, **kw)

    def debug(self, msg: str, *args: Any, **kw: Any) -> None:
        self._fallback.debug(msg, *args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fallback, name)
