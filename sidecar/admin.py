"""The admin API (``Authorization: Bearer <admin.token>``): read or delete one session, or one
user (the profile and every session of the user).

A session of a user is addressed by the bare tenant plus ``?user=<user>``: it is stored under the
identity's scope, ``<tenant>/<user>``. Path and query parameters are validated before any store
is asked, so a hostile value is a 400, never a store error.
"""

from __future__ import annotations

import hmac

import orjson
from aiohttp import web

from .adapters.tasks import validate_session_id
from .errors import BadRequest, NotFound, StoreError, StoreUnavailable, Unauthorized
from .identity import Identity, is_identity_text
from .session.admin import SessionAdmin
from .session.model import SessionKey


def _identity_param(value: str, name: str) -> str:
    if not is_identity_text(value):
        raise BadRequest(
            f"{name} must be 1-256 characters without control characters",
            code=f"invalid_{name}",
        )
    return value


class AdminSessions:
    def __init__(self, token: str, sessions: SessionAdmin) -> None:
        self.token = token
        self.sessions = sessions

    def _authorize(self, request: web.Request) -> tuple[SessionKey, Identity]:
        self._check_token(request)
        tenant = _identity_param(request.match_info["tenant"], "tenant")
        user = request.query.get("user")
        identity = Identity(tenant, _identity_param(user, "user") if user is not None else None)
        session_id = validate_session_id(request.match_info["session_id"])
        return SessionKey(identity.scope, session_id), identity

    def _owner(self, request: web.Request) -> tuple[str, str]:
        """The bare tenant and the user of ``/_sidecar/users/{tenant}/{user_id}``."""
        self._check_token(request)
        tenant = _identity_param(request.match_info["tenant"], "tenant")
        return tenant, _identity_param(request.match_info["user_id"], "user")

    def _check_token(self, request: web.Request) -> None:
        if not self.token:
            raise NotFound("the admin API is disabled (no admin.token configured)")
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(
            given.encode("utf-8", "surrogateescape"), f"Bearer {self.token}".encode()
        ):
            raise Unauthorized("a valid admin bearer token is required")

    async def get(self, request: web.Request) -> web.Response:
        key, identity = self._authorize(request)
        try:
            snapshot = await self.sessions.inspect(key)
        except StoreError as e:
            raise StoreUnavailable("PostgreSQL is unavailable; try again") from e
        if snapshot is None:
            whose = f"user {identity.user} of tenant" if identity.user else "tenant"
            raise NotFound(f"no session {key.session_id} for {whose} {identity.tenant}")
        body = {
            "session_id": key.session_id,
            "tenant": identity.tenant,
            "user_id": identity.user,
            "history": [m.as_history() for m in snapshot.window],
            "context": snapshot.context,
            "tokens_used": snapshot.tokens_used,
            "message_count": snapshot.message_count,
            "created_at": snapshot.created_at,
            "updated_at": snapshot.updated_at,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def delete(self, request: web.Request) -> web.Response:
        key, _ = self._authorize(request)
        try:
            await self.sessions.delete(key)
        except StoreError as e:
            raise StoreUnavailable("PostgreSQL is unavailable; nothing was deleted") from e
        return web.Response(status=204)

    async def get_user(self, request: web.Request) -> web.Response:
        owner = self._owner(request)
        try:
            record = await self.sessions.inspect_user(owner)
        except StoreError as e:
            raise StoreUnavailable("PostgreSQL is unavailable; try again") from e
        if record is None:
            raise NotFound(f"nothing is kept of user {owner[1]} of tenant {owner[0]}")
        body = {
            "tenant": record.tenant,
            "user_id": record.user_id,
            "facts": record.facts,
            "updated_at": record.updated_at,
            "sessions": record.sessions,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def delete_user(self, request: web.Request) -> web.Response:
        owner = self._owner(request)
        # A store failing answers 503 with what was done (``ProfileMemory.erase``); the call
        # is safe to repeat.
        await self.sessions.delete_user(owner)
        return web.Response(status=204)
