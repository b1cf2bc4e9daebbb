"""Shannon-style asynchronous tasks: remembering a submitted task, and reading its polls until
the result shows, when its turn is recorded.

A tasks route may answer a submission with a ``task_id`` and no result yet. The sidecar then
keeps what it needs to record the turn later (tenant, session, the user's query, the context
patch, the idempotency key) in Redis under ``KeySpace.task``, with a TTL. When the client reads
``GET <route>/{task_id}`` through the sidecar and the task shows its result, the turn pipeline
records the turn once and forgets the task.
"""

from __future__ import annotations

import logging
from dataclasses import field
from typing import Any

import orjson
from aiohttp import web
from yarl import URL

from ..adapters.base import Adapter
from ..errors import InvalidToken, StoreUnavailable
from ..frozen import frozen
from ..identity import IdentityResolver
from ..metrics import Metrics
from ..proxy import (
    client_response_headers,
    open_upstream,
    read_whole,
    relay_response,
    upstream_request_headers,
    upstream_url,
)
from ..session.model import SessionKey, utc_now_iso
from ..store.redis import RedisSessionStore
from ..store.redis_tasks import RedisTaskStore
from ..upstream import UpstreamClient
from .capture import Answer, too_large
from .prepare import Prepared, Question
from .recorder import TurnRecorder

log = logging.getLogger(__name__)

# How long a submitted task is remembered: longer than any task should run, short enough that
# tasks whose results are never read do not pile up.
TASK_TTL_S = 24 * 3600
# Statuses after which a task will never show a result: it is forgotten.
FAILED_STATUSES = frozenset({"failed", "error", "cancelled", "canceled", "timeout", "timed_out"})
# A task that is not done yet; a result text next to one of these is a partial preview.
RUNNING_STATUSES = frozenset({"queued", "pending", "running", "in_progress", "processing"})


def task_id_of(body: Any) -> str | None:
    """The ``task_id`` of an upstream answer (a string, or a number written as one)."""
    if not isinstance(body, dict):
        return None
    value = body.get("task_id")
    if isinstance(value, str) and 0 < len(value) <= 256:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def task_status(body: Any) -> str:
    """The task's status, normalised: ``TASK_STATUS_COMPLETED`` and ``Completed`` → ``completed``."""
    status = body.get("status") if isinstance(body, dict) else None
    if not isinstance(status, str):
        return ""
    return status.strip().lower().removeprefix("task_status_")


@frozen
class PendingTask:
    """What the turn of a task needs once its result is known."""

    tenant: str
    session_id: str
    query: str
    context_patch: dict[str, Any]
    idempotency_key: str
    submitted_at: str = field(default_factory=utc_now_iso)
    user_id: str | None = None

    # The scope a poll of the task resolves to, when the session's differs from it (a user
    # named by the submission's body, which a poll does not carry).
    poll_tenant: str | None = None
    profile_owner: tuple[str, str] | None = None
    profile_patch: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, prepared: Prepared, fallback_key: str) -> PendingTask:
        """What ``prepared``'s turn needs later; ``fallback_key`` records it once when the client
        gave no ``Idempotency-Key`` of its own."""
        return cls(
            tenant=prepared.key.tenant,
            session_id=prepared.key.session_id,
            query=prepared.incoming.query,
            context_patch=prepared.context_patch,
            idempotency_key=prepared.idempotency_key or fallback_key,
            user_id=prepared.user_id,
            poll_tenant=prepared.poll_tenant,
            profile_owner=prepared.profile_owner,
            profile_patch=prepared.profile_patch,
        )

    @property
    def key(self) -> SessionKey:
        return SessionKey(self.tenant, self.session_id)

    @property
    def registry_tenant(self) -> str:
        return self.poll_tenant or self.tenant

    @property
    def question(self) -> Question:
        return Question(
            self.key,
            self.query,
            self.context_patch,
            self.idempotency_key,
            self.submitted_at,
            self.user_id,
            self.profile_owner,
            self.profile_patch,
        )

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "tenant": self.tenant,
                "session_id": self.session_id,
                "query": self.query,
                "context": self.context_patch,
                "idempotency_key": self.idempotency_key,
                "submitted_at": self.submitted_at,
                "user_id": self.user_id,
                "poll_tenant": self.poll_tenant,
                "profile_owner": self.profile_owner,
                "profile": self.profile_patch,
            }
        )

    @classmethod
    def decode(cls, raw: bytes | str) -> PendingTask:
        d = orjson.loads(raw)
        return cls(
            tenant=d["tenant"],
            session_id=d["session_id"],
            query=d["query"],
            context_patch=d.get("context") or {},
            idempotency_key=d["idempotency_key"],
            submitted_at=d.get("submitted_at") or utc_now_iso(),
            user_id=d.get("user_id"),
            poll_tenant=d.get("poll_tenant"),
            profile_owner=(owner[0], owner[1]) if (owner := d.get("profile_owner")) else None,
            profile_patch=d.get("profile") or {},
        )


class TaskRegistry:
    """Submitted tasks in Redis, through the store's guarded calls. Best effort: with Redis away
    a task is not remembered (its turn is then not recorded) but the client is served as usual."""

    def __init__(self, store: RedisSessionStore, ttl_s: int = TASK_TTL_S) -> None:
        self.store = RedisTaskStore(store)
        self.ttl_s = ttl_s

    async def remember(self, route: str, task_id: str, task: PendingTask) -> bool:
        try:
            await self.store.put_task(
                task.registry_tenant, route, task_id, task.encode(), self.ttl_s
            )
        except StoreUnavailable as e:
            log.warning("task %s of session %s not remembered: %s", task_id, task.session_id, e)
            return False
        return True

    async def lookup(self, tenant: str, route: str, task_id: str) -> PendingTask | None:
        try:
            raw = await self.store.get_task(tenant, route, task_id)
        except StoreUnavailable as e:
            log.warning("task %s not looked up, passed through: %s", task_id, e)
            return None
        if raw is None:
            return None
        try:
            return PendingTask.decode(raw)
        except (orjson.JSONDecodeError, KeyError, TypeError) as e:
            log.error("task %s: unreadable entry dropped: %s", task_id, e)
            await self.forget(tenant, route, task_id)
            return None

    async def forget(self, tenant: str, route: str, task_id: str) -> None:
        try:
            await self.store.delete_task(tenant, route, task_id)
        except StoreUnavailable as e:
            # Harmless: a later poll records nothing twice (the idempotency key) and the TTL ends it.
            log.warning("task %s not forgotten: %s", task_id, e)


class TaskPolls:
    """Remembers the tasks a route's submissions answer with, and handles their polls."""

    def __init__(
        self,
        adapter: Adapter,
        base: URL,
        identity: IdentityResolver,
        client: UpstreamClient,
        registry: TaskRegistry,
        recorder: TurnRecorder,
        metrics: Metrics,
        route: str,
    ) -> None:
        self.adapter = adapter
        # The configured path: a task is remembered under it whichever of the route's paths
        # (``<route>``, ``<route>/stream``) submitted it and whichever reads it.
        self.route = route.rstrip("/")
        self.base = base
        self.identity = identity
        self.client = client
        self.registry = registry
        self.recorder = recorder
        self.metrics = metrics

    async def remember(self, request: web.Request, task_id: str, prepared: Prepared) -> None:
        """Keep what the task's turn needs until the client reads its result."""
        # The client's key when it gave one (a resubmission is then one turn too), else one per
        # task: however often the task is read, its turn is recorded once.
        task = PendingTask.of(prepared, f"task:{task_id}")
        remembered = self.registry.remember(self.route, task_id, task)
        if not await self.recorder.shielded(remembered):
            prepared.degraded.append("unrecorded")

    async def poll(self, request: web.Request) -> web.StreamResponse:
        """``GET <route>/{task_id}``: passed through; the answer of a task the sidecar remembers
        is read, and once it shows the result the turn is recorded (once) and the task forgotten.
        """
        task_id = request.match_info["task_id"]
        route = self.route
        identity = await self.identity.resolve(request.headers)
        if identity.invalid and self.identity.rejects_invalid:
            raise InvalidToken("the bearer token failed verification")
        # A token that failed verification has no tasks here: its poll just passes through.
        pending = (
            None if identity.invalid else await self.registry.lookup(identity.scope, route, task_id)
        )
        url = upstream_url(self.base, request)
        headers = upstream_request_headers(request, keep_identity=self.identity.trusts_headers)
        data = request.content if request.body_exists else None
        if pending is None:
            async with open_upstream(self.client, request.method, url, headers, data) as up:
                out = client_response_headers(up, ours=True)
                if identity.invalid:
                    out["X-Sidecar-Degraded"] = "identity"
                resp, _ = await relay_response(request, up, out)
                return resp

        headers.popall("Accept-Encoding", None)
        async with open_upstream(self.client, request.method, url, headers, data) as up:
            if up.content_type == "text/event-stream" or too_large(up):
                resp, _ = await relay_response(request, up, client_response_headers(up, ours=True))
                return resp
            body = await read_whole(up)
            out_headers = client_response_headers(up, body_changed=True, ours=True)
            out_headers["X-Session-ID"] = pending.session_id
            degraded: list[str] = []
            if 200 <= up.status < 300:
                await self._answered(route, task_id, pending, body, degraded)
            if degraded:
                out_headers["X-Sidecar-Degraded"] = ",".join(sorted(set(degraded)))
            return web.Response(status=up.status, reason=up.reason, body=body, headers=out_headers)

    async def _answered(
        self, route: str, task_id: str, pending: PendingTask, body: bytes, degraded: list[str]
    ) -> None:
        try:
            parsed: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        status = task_status(parsed)
        if status in FAILED_STATUSES:
            await self.registry.forget(pending.registry_tenant, route, task_id)
            return
        text, usage = self.adapter.answer(parsed)
        if text is None or status in RUNNING_STATUSES:
            return
        if await self.recorder.record(pending.question, Answer(text, usage), degraded):
            await self.recorder.shielded(
                self.registry.forget(pending.registry_tenant, route, task_id)
            )
