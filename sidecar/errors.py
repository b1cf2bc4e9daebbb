"""The sidecar's errors: one root, ``SidecarError``, each class with the HTTP status and code it
is answered with (the answer itself is made by the middleware in ``middleware``)."""

from __future__ import annotations

from typing import ClassVar


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


class InvalidToken(Unauthorized):
    """A bearer token failed verification and ``identity.jwt.reject_invalid`` is set."""

    code = "invalid_token"


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


class StoreError(SidecarError):
    """A store (Redis or PostgreSQL) failed a call; raised by the stores only, with the driver's
    error as its cause, so nothing above them handles driver exceptions."""

    status = 503
    code = "store_unavailable"


class StoreUnavailable(StoreError):
    """The store did not answer, or answered "not now" (a lost connection, a timeout, a failover,
    an open circuit): worth trying again later; callers degrade instead of failing."""


class StoreRejected(StoreError):
    """The store answered and refused this data (a constraint, a type, a malformed value):
    trying the same write again will not help."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class SessionAbsent(SidecarError):
    """The session vanished from Redis between its load and the commit of a turn (expired or
    flushed); the commit restores it and tries once more."""

    status = 409
    code = "session_absent"
