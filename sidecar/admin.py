"""The admin session API: read or delete one session (``Authorization: Bearer <admin.token>``)."""

from __future__ import annotations

import hmac

import orjson
from aiohttp import web

from .errors import NotFound, StoreError, StoreUnavailable, Unauthorized
from .session.manager import SessionService
from .session.model import SessionKey


class AdminSessions:
    def __init__(self, token: str, sessions: SessionService) -> None:
        self.token = token
        self.sessions = sessions

    def _authorize(self, request: web.Request) -> SessionKey:
        if not self.token:
            raise NotFound("the admin API is disabled (no admin.token configured)")
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            raise Unauthorized("a valid admin bearer token is required")
        return SessionKey(request.match_info["tenant"], request.match_info["session_id"])

    async def get(self, request: web.Request) -> web.Response:
        key = self._authorize(request)
        try:
            snapshot = await self.sessions.inspect(key)
        except StoreError as e:
            raise StoreUnavailable("PostgreSQL is unavailable; try again") from e
        if snapshot is None:
            raise NotFound(f"no session {key.session_id} for tenant {key.tenant}")
        body = {
            "session_id": key.session_id,
            "tenant": key.tenant,
            "history": [m.as_history() for m in snapshot.window],
            "context": snapshot.context,
            "tokens_used": snapshot.tokens_used,
            "message_count": snapshot.message_count,
            "created_at": snapshot.created_at,
            "updated_at": snapshot.updated_at,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def delete(self, request: web.Request) -> web.Response:
        key = self._authorize(request)
        try:
            await self.sessions.delete(key)
        except StoreError as e:
            raise StoreUnavailable("PostgreSQL is unavailable; nothing was deleted") from e
        return web.Response(status=204)
