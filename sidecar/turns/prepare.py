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
from ..context import Extractor, Resolution, RulesExtractor, estimate_tokens
from ..frozen import frozen
from ..identity import Identity
from ..inputs import storable, storable_text
from ..profile.extract import ProfileExtractor
from ..profile.inject import profile_note, with_profile
from ..profile.owner import owner_of
from ..session.manager import SessionService
from ..session.model import Message, SessionKey, SessionSnapshot, new_message, turn_ids, utc_now_iso
from ..session.window import history_window

# Follow-ups are short; the engine's cost grows faster than the text, so a pasted document is
# forwarded without entity extraction rather than holding up the event loop.
MAX_EXTRACTED_CHARS = 2000


@frozen
class Asked:
    """The question's half of the turn to record: what the answer does not change. Made while
    the upstream answers (``Prepared.make_asked``), it is off the path between the answer and
    the commit; made when the turn is built otherwise.

    Every stored text is made ``storable`` here, before the commit that acknowledges the turn:
    a NUL in a query or a context key would otherwise be taken by Redis and refused later by
    PostgreSQL.
    """

    turn_id: str
    user: Message
    assistant_id: str
    context_patch: dict[str, Any]

    @classmethod
    def of(cls, question: Question) -> Asked:
        # With an Idempotency-Key the ids follow from it: a retry makes the same ids, so it is
        # recorded once.
        turn_id, user_id, assistant_id = turn_ids(question.key, question.idempotency_key)
        query = storable_text(question.query)
        user = new_message("user", query, estimate_tokens(query), question.asked_at, user_id)
        return cls(turn_id, user, assistant_id, storable(question.context_patch))


@frozen
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
    # Its half of the turn, when made ahead (see ``Asked``).
    asked: Asked | None = None


@frozen
class _Built:
    """What the loaded session makes of the request: the forwarded body, this query's context
    patch, the facts the user stated."""

    body: dict[str, Any]
    patch: dict[str, Any]
    stated: dict[str, str]


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
    asked: Asked | None = None

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
            self.asked,
        )

    def make_asked(self) -> None:
        """Make the question's half of the turn now (see ``Asked``): called while the upstream
        answers, it must not raise (an error is met again when the turn is built)."""
        try:
            self.asked = Asked.of(self.question)
        except Exception:
            self.asked = None


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
        ahead: list[tuple[SessionSnapshot, _Built]] = []

        def meanwhile(held: SessionSnapshot) -> None:
            # While the load's round trip is out: build the request from the copy this process
            # holds, which the load mostly confirms is current. Used only when it does.
            try:
                built = self._build_now(session_id, incoming, held)
            except Exception:  # built again after the load, where the error belongs
                return
            if built is not None:
                ahead.append((held, built))

        # Only with the copy alone to go by: a user's profile comes with the load.
        guess = meanwhile if owner is None else None
        # An id the sidecar just made cannot exist anywhere: no need to ask PostgreSQL.
        with tracing.span("load"):
            loaded = await self.sessions.load(
                key, new=incoming.session_id is None, owner=owner, meanwhile=guess
            )
        snapshot = loaded.snapshot
        if ahead and ahead[0][0] is snapshot:
            built = ahead[0][1]
        else:
            built = await self._build(session_id, incoming, snapshot, owner, loaded.profile)
        return Prepared(
            key,
            incoming,
            snapshot,
            [loaded.degraded] if loaded.degraded else [],
            built.body,
            built.patch,
            idempotency_key,
            user_id=identity.user,
            profile_owner=owner,
            profile_patch=built.stated,
        )

    async def _build(
        self,
        session_id: str,
        incoming: Incoming,
        snapshot: SessionSnapshot,
        owner: tuple[str, str] | None,
        profile: dict[str, str] | None,
    ) -> _Built:
        """The forwarded body and the context patch, from the loaded session."""
        stated: dict[str, str] = {}
        if (
            self.profiles is not None
            and owner is not None
            and len(incoming.query) <= MAX_EXTRACTED_CHARS
        ):
            stated = self.profiles.extract(incoming.query)
        facts = {**(profile or {}), **stated}
        asked = self._question(incoming, snapshot, facts)
        resolution = None
        if asked is not None and self.extractor is not None:
            with tracing.span("context"):
                resolution = await self.extractor.resolve(**asked)
        return self._assemble(session_id, incoming, snapshot, facts, stated, resolution)

    def _build_now(
        self, session_id: str, incoming: Incoming, snapshot: SessionSnapshot
    ) -> _Built | None:
        """``_build`` without a profile, at once: None when the context engine is not the
        in-process one (another answers over the network)."""
        asked = self._question(incoming, snapshot, {})
        resolution = None
        if asked is not None:
            if not isinstance(self.extractor, RulesExtractor):
                return None
            with tracing.span("context"):
                resolution = self.extractor.resolve_sync(**asked)
        return self._assemble(session_id, incoming, snapshot, {}, {}, resolution)

    def _question(
        self, incoming: Incoming, snapshot: SessionSnapshot, facts: dict[str, str]
    ) -> dict[str, Any] | None:
        """What the context engine is asked about this query, or None when it is not asked."""
        if (
            self.extractor is None
            or not self.config.context.extract_entities
            or len(incoming.query) > MAX_EXTRACTED_CHARS
        ):
            return None
        last_assistant = next(
            (m.content for m in reversed(snapshot.window) if m.role == "assistant"), None
        )
        known = {**snapshot.context, **incoming.request_context}
        # The home stands in for a place only where none was said in the session.
        home = facts.get("home_location") if "location" not in snapshot.context else None
        if home and "location" not in known:
            # So that a follow-up ("那明天呢") completes with the user's home.
            known["location"] = home
        return {
            "query": incoming.query,
            "context": known,
            "last_assistant": last_assistant,
            "timezone": self._timezone(incoming.request_context),
        }

    def _assemble(
        self,
        session_id: str,
        incoming: Incoming,
        snapshot: SessionSnapshot,
        facts: dict[str, str],
        stated: dict[str, str],
        resolution: Resolution | None,
    ) -> _Built:
        patch: dict[str, Any] = dict(incoming.request_context)
        completed = None
        if resolution is not None:
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
        return _Built(body, patch, stated)

    def _timezone(self, request_context: dict[str, Any]) -> str:
        tz = request_context.get("timezone")
        if isinstance(tz, str) and tz:
            try:
                zoneinfo.ZoneInfo(tz)
                return tz
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                pass
        return self.config.context.timezone
