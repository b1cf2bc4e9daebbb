"""Preparing one turn before it is forwarded: load the session (and its user's profile), resolve
the context (entities, follow-up completion, facts the user states about themselves), cut the
history window and inject it into the request body.

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
from ..profile.extract import ProfileExtractor
from ..profile.inject import profile_note, with_profile
from ..profile.owner import owner_of
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
    # The user whose profile the facts the question stated go to (bare tenant, user).
    profile_owner: tuple[str, str] | None = None
    profile_patch: dict[str, str] = field(default_factory=dict)


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
    profile_owner: tuple[str, str] | None = None
    profile_patch: dict[str, str] = field(default_factory=dict)
    # The scope a later poll of this request's task resolves to, when not the session's.
    poll_tenant: str | None = None

    @property
    def question(self) -> Question:
        return Question(
            self.key,
            self.incoming.query,
            self.context_patch,
            self.idempotency_key,
            self.received_at,
            self.user_id,
            self.profile_owner,
            self.profile_patch,
        )


class Preparer:
    """Identity → load → context → inject, for one route's adapter."""

    def __init__(
        self,
        adapter: Adapter,
        config: Config,
        sessions: SessionService,
        extractor: Extractor | None,
        profiles: ProfileExtractor | None = None,
    ) -> None:
        self.adapter = adapter
        self.config = config
        self.sessions = sessions
        self.extractor = extractor
        # None unless ``memory.profile``: then nothing about users is read, taken or injected.
        self.profiles = profiles if config.memory.profile else None

    async def prepare(
        self, identity: Identity, incoming: Incoming, idempotency_key: str | None
    ) -> Prepared:
        session_id = incoming.session_id or str(uuid.uuid4())
        # A user's sessions are theirs alone: stored under the identity's scope.
        key = SessionKey(identity.scope, session_id)
        # With ``memory.profile``, the identity's user reads and adds to their profile.
        owner = owner_of(identity) if self.profiles is not None else None
        # An id the sidecar just made cannot exist anywhere: no need to ask PostgreSQL.
        with tracing.span("load"):
            loaded = await self.sessions.load(key, new=incoming.session_id is None, owner=owner)
        snapshot = loaded.snapshot
        degraded = [loaded.degraded] if loaded.degraded else []
        stated: dict[str, str] = {}
        if (
            self.profiles is not None
            and owner is not None
            and len(incoming.query) <= MAX_EXTRACTED_CHARS
        ):
            stated = self.profiles.extract(incoming.query)
        facts = {**(loaded.profile or {}), **stated}
        # The home stands in for a place only where none was said in the session.
        home = facts.get("home_location") if "location" not in snapshot.context else None

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
            known = {**snapshot.context, **incoming.request_context}
            if home and "location" not in known:
                # So that a follow-up ("那明天呢") completes with the user's home.
                known["location"] = home
            with tracing.span("context"):
                resolution = await self.extractor.resolve(
                    incoming.query,
                    context=known,
                    last_assistant=last_assistant,
                    timezone=self._timezone(incoming.request_context),
                )
            patch = {**resolution.entities, **incoming.request_context}
            completed = resolution.completed_query
        context = with_profile({**snapshot.context, **patch}, facts)
        note = None
        if self.config.memory.profile_note:
            note = profile_note(facts, incoming.query)
        session_cfg = self.config.session
        window = history_window(
            snapshot.window, session_cfg.history_limit, session_cfg.history_token_budget
        )
        body = self.adapter.inject(
            incoming,
            Injection(session_id, window, context, completed, self.config.context.rewrite, note),
        )
        return Prepared(
            key,
            incoming,
            snapshot,
            degraded,
            body,
            patch,
            idempotency_key,
            user_id=identity.user,
            profile_owner=owner,
            profile_patch=stated,
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
