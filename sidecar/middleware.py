"""The one place errors become HTTP answers: every error the sidecar itself answers is JSON
(contract section 6), with the status and code its ``SidecarError`` class carries.

That includes what aiohttp answers below any handler: a request too malformed to be routed (a
bad request line, a NUL in a header, both ``Content-Length`` and ``Transfer-Encoding``) gets the
same JSON body from ``Runner``'s connections, with a request id, and is counted and logged by
the hook the runner is given, instead of aiohttp's text/plain ``400``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from .errors import SidecarError
from .wire import log_bad_http, log_client_gone, log_unrecorded

log = logging.getLogger(__name__)

# Not an HTTP status: the client went away before it was answered (as nginx logs it).
CLIENT_GONE = 499


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The JSON error body of every answer the sidecar itself gives."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def to_response(err: SidecarError) -> web.Response:
    return error_response(err.status, err.code, str(err))


def status_of(error: Exception) -> int:
    """The status a handler's error is counted and logged with: the client that went away
    mid-request (a reset, a timeout) is logged as 499, as nobody reads the answer."""
    if isinstance(error, (SidecarError, web.HTTPException)):
        return error.status
    if isinstance(error, HttpProcessingError):
        return 400  # answered 400 (see ``answer_error``): counted and logged as answered
    if isinstance(error, (ConnectionResetError, TimeoutError)):
        return CLIENT_GONE
    return 500


def answer_error(request: web.Request, error: Exception) -> web.StreamResponse:
    """The answer to an error a handler raised: JSON, with the sidecar's own 5xx logged and,
    whole, anything unexpected. An ``HTTPException`` below 400 (a redirect) is raised again
    for aiohttp to send as it is. Called by the observer's middleware, the one around every
    handler (a middleware of its own would cost another coroutine per request)."""
    if isinstance(error, SidecarError):
        if error.status >= 500:
            log.warning("%s %s: %s", request.method, request.path, error)
        return to_response(error)
    if isinstance(error, web.HTTPException):
        if error.status >= 400:
            code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
            return error_response(error.status, code.get(error.status, "http_error"), error.reason)
        raise error
    if isinstance(error, HttpProcessingError):
        # The body broke the framing (cut short, say): the client's fault.
        log_bad_http(error, f"{request.remote} on {request.method} {request.path!r}")
        return error_response(400, "bad_http", f"malformed HTTP request: {error.message}")
    if isinstance(error, ConnectionResetError):
        # The client went away mid-request: nobody will read an answer; one line, no traceback.
        log_client_gone(f"{request.remote} on {request.method} {request.path!r}")
        return error_response(400, "client_disconnected", "the client went away")
    # A bug, not a condition we know: answered as JSON like every error, and logged whole.
    log.error("unexpected error on %s %s", request.method, request.path, exc_info=error)
    return error_response(500, "internal_error", "the sidecar failed unexpectedly")


# Counts and logs a request answered below the handlers, with the status it is answered with;
# returns the headers it is answered with (its request id).
Unhandled = Callable[[web.BaseRequest, int], Mapping[str, str]]

# What aiohttp answers below the handlers: 400 for what it cannot parse, 500 and 504 only when
# something fails outside every middleware.
_UNHANDLED_CODES = {400: "bad_http", 413: "payload_too_large", 504: "timeout"}


class _Connection(RequestHandler):
    """aiohttp's connection, answering what never reached a handler as JSON."""

    __slots__ = ("_on_unhandled",)

    def __init__(self, manager: web.Server, on_unhandled: Unhandled, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._on_unhandled = on_unhandled

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own logs the fault (to the app's ``ServerLog``) and raises when part of an
        # answer went out already; its text answer is replaced.
        super().handle_error(request, status, exc, message)
        try:
            headers = dict(self._on_unhandled(request, status))
        except Exception as e:  # the count or the log line failed: the client still gets its answer
            log_unrecorded(e, f"{request.remote} on {request.method} {request.path!r}")
            headers = {}
        if status >= 500:
            code, text = _UNHANDLED_CODES.get(status, "internal_error"), "the sidecar failed"
        else:
            code = _UNHANDLED_CODES.get(status, "http_error")
            text = f"malformed HTTP request: {message or 'unreadable'}"
        resp = error_response(status, code, text, headers)
        resp.force_close()  # what follows on this connection cannot be trusted to be framed
        return resp


class _Server(web.Server):
    def __init__(self, made: web.Server, on_unhandled: Unhandled) -> None:
        super().__init__(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )
        self.on_unhandled = on_unhandled

    def __call__(self) -> RequestHandler:  # one per connection, as aiohttp's own
        return _Connection(self, self.on_unhandled, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """``web.AppRunner`` whose server answers unroutable requests as JSON (see the module)."""

    def __init__(self, app: web.Application, *, on_unhandled: Unhandled, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._on_unhandled = on_unhandled

    async def _make_server(self) -> web.Server:
        # aiohttp builds the server inside the application (with the app's handler_args); the
        # same server is made again with connections of ours. That reads parts of aiohttp's
        # server that are not its public interface: a release that changes them serves with
        # aiohttp's own answers to malformed requests rather than not at all.
        made = await super()._make_server()
        try:
            return _Server(made, self._on_unhandled)
        except (AttributeError, TypeError) as e:
            log.warning(
                "malformed requests get aiohttp's own text answers: its server could not be"
                " rebuilt (%s: %s)",
                type(e).__name__,
                e,
            )
            return made
