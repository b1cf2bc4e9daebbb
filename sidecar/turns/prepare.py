"""Preparing one turn before it is forwarded: load the session, resolve the context (entities,
follow-up completion), cut the history window and inject it into the request body.

Knows nothing of HTTP: it is handed the identity, the parsed request and its idempotency key.
"""

from __future__ import annotations

import uuid
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

from .. import tracing
from ..adapters.base import Adapter, Incoming, Injection
from ..config import Config
from ..context import Extractor
from ..identity import Identity
from ..session.manager import SessionService
from ..session.model import SessionKey, SessionSnapshot, utc_now_iso
from ..session.window import history_window

# Follow-ups are short; the engine's cost grows faster than the text, so a pasted document is
# forwarded without entity extraction rather than holding up the event loop.
MAX_EXTRACTED_CHARS = 2000


@dataclass(frozen=True, slots=True)
class Question:
    """What the user asked, as the turn will record it once the answer is known."""

    key: SessionKey
    query: str
    context_patch: dict[str, Any]
    idempotency_key: str | None
    # The user's message is stamped with it, and a session deleted after this moment does not
    # get this turn back.
    asked_at: str | None
    # The identity's user, when it has one (the key's tenant is then its scope).
    user_id: str | None = None


@dataclass(slots=True)
class Prepared:
    key: SessionKey
    incoming: Incoming
    snapshot: SessionSnapshot
    degraded: list[str]
    forward_body: dict[str, Any]
    context_patch: dict[str, Any]
    idempotency_key: str | None
    # When the request arrived (see ``Question.asked_at``).
    received_at: str = field(default_factory=utc_now_iso)
    user_id: str | None = None

    @property
    def question(self) -> Question:
        return Question(
            self.key,
            self.incoming.query,
            self.context_patch,
            self.idempotency_key,
            self.received_at,
            self.user_id,
        )


class Preparer:
    """Identity → load → context → inject, for one route's adapter."""

    def __init__(
        self,
        adapter: Adapter,
        config: Config,
        sessions: SessionService,
        extractor: Extractor | None,
    ) -> None:
        self.adapter = adapter
        self.config = config
        self.sessions = sessions
        self.extractor = extractor

    async def prepare(
        self, identity: Identity, incoming: Incoming, idempotency_key: str | None
    ) -> Prepared:
        session_id = incoming.session_id or str(uuid.uuid4())
        # A user's sessions are theirs alone: stored under the identity's scope.
        key = SessionKey(identity.scope, session_id)
        # An id the sidecar just made cannot exist anywhere: no need to ask PostgreSQL.
        with tracing.span("load"):
            loaded = await self.sessions.load(key, new=incoming.session_id is None)
        snapshot = loaded.snapshot
        degraded = [loaded.degraded] if loaded.degraded else []

        patch: dict[str, Any] = dict(incoming.request_context)
        completed = None
        if (
            self.extractor is not None
            and self.config.context.extract_entities
            and len(incoming.query) <= MAX_EXTRACTED_CHARS
        ):
            last_assistant = next(
                (m.content for m in reversed(snapshot.window) if m.role == "assistant"), None
            )
            with tracing.span("context"):
                resolution = await self.extractor.resolve(
                    incoming.query,
                    context={**snapshot.context, **incoming.request_context},
                    last_assistant=last_assistant,
                    timezone=self._timezone(incoming.request_context),
                )
            patch = {**resolution.entities, **incoming.request_context}
            completed = resolution.completed_query
        context = {**snapshot.context, **patch}
        session_cfg = self.config.session
        window = history_window(
            snapshot.window, session_cfg.history_limit, session_cfg.history_token_budget
        )
        body = self.adapter.inject(
            incoming,
            Injection(session_id, window, context, completed, self.config.context.rewrite),
        )
        return Prepared(
            key, incoming, snapshot, degraded, body, patch, idempotency_key, user_id=identity.user
        )

    def _timezone(self, request_context: dict[str, Any]) -> str:
        tz = request_context.get("timezone")
        if isinstance(tz, str) and tz:
            try:
                zoneinfo.ZoneInfo(tz)
                return tz
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                pass
        return self.config.context.timezone
