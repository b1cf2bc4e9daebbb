"""The one place errors become HTTP answers: every error the sidecar itself answers is JSON
(contract section 6), with the status and code its ``SidecarError`` class carries."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .errors import SidecarError
from .wire import log_bad_http, log_client_gone

log = logging.getLogger(__name__)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The JSON error body of every answer the sidecar itself gives."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def to_response(err: SidecarError) -> web.Response:
    return error_response(err.status, err.code, str(err))


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer every error as JSON; log the sidecar's own 5xx and, whole, anything unexpected."""
    try:
        return await handler(request)
    except SidecarError as e:
        if e.status >= 500:
            log.warning("%s %s: %s", request.method, request.path, e)
        return to_response(e)
    except web.HTTPException as e:
        if e.status >= 400:
            code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
            return error_response(e.status, code.get(e.status, "http_error"), e.reason)
        raise
    except HttpProcessingError as e:
        # The body broke the framing (cut short, say): the client's fault.
        log_bad_http(e, f"{request.remote} on {request.method} {request.path!r}")
        return error_response(400, "bad_http", f"malformed HTTP request: {e.message}")
    except ConnectionResetError:
        # The client went away mid-request: nobody will read an answer; one line, no traceback.
        log_client_gone(f"{request.remote} on {request.method} {request.path!r}")
        return error_response(400, "client_disconnected", "the client went away")
    except Exception:
        # A bug, not a condition we know: answered as JSON like every error, and logged whole.
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "the sidecar failed unexpectedly")
