"""The one place errors become HTTP answers: every error the sidecar itself answers is JSON
(contract section 6), with the status and code its ``SidecarError`` class carries."""

from __future__ import annotations

import logging

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .errors import SidecarError
from .wire import log_bad_http, log_client_gone

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
