"""Every Redis key the sidecar writes, in one place.

All keys of one session share a hash tag with the outbox partition its turns go to, so every
script touches a single slot and the same code runs on one Redis or on a Redis Cluster:
``<prefix>:{<prefix>:<partition>}:s:<len(tenant)>:<tenant>:<session_id>:meta``.
The tenant is length-prefixed because both it and the session id may contain ``:``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from ..session.model import SessionKey


@dataclass(frozen=True, slots=True)
class SessionKeys:
    meta: str
    messages: str
    context: str
    outbox: str
    idempotency_prefix: str
    tombstone: str  # set when the session is deleted: turns asked before then are dropped

    def idempotency(self, key: str | None) -> str:
        return self.idempotency_prefix + (key or "")


class KeySpace:
    def __init__(self, prefix: str, partitions: int) -> None:
        self.prefix = prefix
        self.partitions = partitions

    def partition(self, key: SessionKey) -> int:
        return zlib.crc32(f"{key.tenant}\x00{key.session_id}".encode()) % self.partitions

    def tag(self, partition: int) -> str:
        return f"{self.prefix}:{{{self.prefix}:{partition}}}"

    def outbox(self, partition: int) -> str:
        return f"{self.tag(partition)}:outbox"

    def outboxes(self) -> list[str]:
        return [self.outbox(p) for p in range(self.partitions)]

    def dead_letters(self) -> str:
        return f"{self.prefix}:dead-letters"

    def task(self, tenant: str, route: str, task_id: str) -> str:
        return f"{self.prefix}:task:{len(tenant)}:{tenant}:{route}:{task_id}"

    def session(self, key: SessionKey) -> SessionKeys:
        tag = self.tag(self.partition(key))
        base = f"{tag}:s:{len(key.tenant)}:{key.tenant}:{key.session_id}"
        return SessionKeys(
            meta=f"{base}:meta",
            messages=f"{base}:msgs",
            context=f"{base}:ctx",
            outbox=f"{tag}:outbox",
            idempotency_prefix=f"{base}:idem:",
            tombstone=f"{base}:deleted",
        )
