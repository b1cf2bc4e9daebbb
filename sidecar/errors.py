"""The sidecar's errors, and the one place they become HTTP answers."""

from __future__ import annotations

from typing import ClassVar

import orjson
from aiohttp import web


class SidecarError(Exception):
    """Root of every error the sidecar raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"


class ConfigError(SidecarError):
    """The configuration is missing or invalid; the message names the key."""


class BadRequest(SidecarError):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code  # type: ignore[misc]  # per-instance refinement of the class default


class PayloadTooLarge(SidecarError):
    status = 413
    code = "payload_too_large"


class Unauthorized(SidecarError):
    status = 401
    code = "unauthorized"


class NotFound(SidecarError):
    status = 404
    code = "not_found"


class UpstreamUnavailable(SidecarError):
    status = 502
    code = "upstream_unavailable"


class UpstreamTimeout(SidecarError):
    status = 504
    code = "upstream_timeout"


class NotReady(SidecarError):
    status = 503
    code = "not_ready"


class StoreUnavailable(SidecarError):
    """Redis or PostgreSQL did not answer in time; callers degrade instead of failing."""

    status = 503
    code = "store_unavailable"


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The JSON error body of every answer the sidecar itself gives."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def to_response(err: SidecarError) -> web.Response:
    return error_response(err.status, err.code, str(err))
