"""Shannon-style asynchronous tasks: remembering a submitted task until its result is read.

A tasks route may answer a submission with a ``task_id`` and no result yet. The sidecar then
keeps what it needs to record the turn later (tenant, session, the user's query, the context
patch, the idempotency key) in Redis under ``KeySpace.task``, with a TTL. When the client reads
``GET <route>/{task_id}`` through the sidecar and the task shows its result, the turn pipeline
records the turn once and forgets the task.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import RedisError

from .session.model import SessionKey, utc_now_iso
from .store.redis import RedisSessionStore

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


@dataclass(frozen=True, slots=True)
class PendingTask:
    """What the turn of a task needs once its result is known."""

    tenant: str
    session_id: str
    query: str
    context_patch: dict[str, Any]
    idempotency_key: str
    submitted_at: str = field(default_factory=utc_now_iso)

    @property
    def key(self) -> SessionKey:
        return SessionKey(self.tenant, self.session_id)

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "tenant": self.tenant,
                "session_id": self.session_id,
                "query": self.query,
                "context": self.context_patch,
                "idempotency_key": self.idempotency_key,
                "submitted_at": self.submitted_at,
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
        )


class TaskRegistry:
    """Submitted tasks in Redis. Best effort: with Redis away a task is not remembered (its turn
    is then not recorded) but the client is served as usual."""

    def __init__(self, store: RedisSessionStore, ttl_s: int = TASK_TTL_S) -> None:
        self.client = store.client
        self.keys = store.keys
        self.breaker = store.breaker
        self.ttl_s = ttl_s

    async def remember(self, route: str, task_id: str, task: PendingTask) -> bool:
        key = self.keys.task(task.tenant, route, task_id)
        if self.breaker.is_open:
            log.warning(
                "task %s of session %s not remembered: Redis circuit open", task_id, task.session_id
            )
            return False
        try:
            await self.client.set(key, task.encode(), ex=self.ttl_s)
        except (RedisError, OSError, TimeoutError) as e:
            log.warning("task %s of session %s not remembered: %s", task_id, task.session_id, e)
            return False
        return True

    async def lookup(self, tenant: str, route: str, task_id: str) -> PendingTask | None:
        if self.breaker.is_open:
            return None
        try:
            raw = await self.client.get(self.keys.task(tenant, route, task_id))
        except (RedisError, OSError, TimeoutError) as e:
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
            await self.client.delete(self.keys.task(tenant, route, task_id))
        except (RedisError, OSError, TimeoutError) as e:
            # Harmless: a later poll records nothing twice (the idempotency key) and the TTL ends it.
            log.warning("task %s not forgotten: %s", task_id, e)
