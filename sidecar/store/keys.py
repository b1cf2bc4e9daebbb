"""Every Redis key the sidecar writes, in one place.

All keys of one session share a hash tag with the outbox partition its turns go to, so every
script touches a single slot and the same code runs on one Redis or on a Redis Cluster:
``<prefix>:{<tag>}:s:<len(tenant)>:<tenant>:<session_id>:meta``.
The tenant is length-prefixed because both it and the session id may contain ``:``.

A session that belongs to a user (its tenant is the user's scope ``<tenant>/<user>``) takes its
user's hash tag instead, shared with the user's profile
(``<prefix>:{<prefix>:<partition>}:u:<len(tenant)>:<tenant>:<user>:profile``): the load and commit
scripts then read and write the profile in the same round trip as the session.

A partition's tag is chosen so that the partitions' slots are spread evenly over the 16384 slots
of a cluster (partition p gets a slot in the p-th of N equal ranges). A cluster's masters own
ranges of slots, so sessions spread over them as evenly as the partitions do: with 64 partitions
on 3 masters each holds 21 or 22 of them. (Tags named after the partition number alone landed
anywhere: 8 partitions on 3 masters left one master with half of them.)
"""

from __future__ import annotations

import itertools
import zlib

from redis.crc import key_slot

from ..frozen import frozen
from ..session.model import SessionKey

SLOTS = 16384


def spread_tags(prefix: str, partitions: int) -> list[str]:
    """One hash tag per partition, partition p's slot in the p-th of ``partitions`` equal slot
    ranges. Deterministic: every replica with the same prefix and count finds the same tags."""
    if not 0 < partitions <= SLOTS:
        raise ValueError(f"partitions must be between 1 and {SLOTS}, got {partitions}")
    tags: list[str | None] = [None] * partitions
    missing = partitions
    for salt in itertools.count():
        tag = f"{prefix}:{salt}"
        p = key_slot(tag.encode()) * partitions // SLOTS
        if tags[p] is None:
            tags[p] = tag
            missing -= 1
            if not missing:
                return [t for t in tags if t is not None]
    raise AssertionError("unreachable")


@frozen
class SessionKeys:
    meta: str
    messages: str
    context: str
    outbox: str
    idempotency_prefix: str
    tombstone: str  # set when the session is deleted: turns asked before then are dropped
    floor: str  # the highest seq of a dropped stale copy: a restored copy numbers after it

    def idempotency(self, key: str | None) -> str:
        return self.idempotency_prefix + (key or "")


@frozen
class UserKeys:
    profile: str
    tombstone: str  # set when the user is deleted: turns asked before then are dropped


def user_scope(tenant: str, user: str) -> str:
    """What a user's sessions are stored under (section 9's ``<tenant>/<user>``)."""
    return f"{tenant}/{user}"


# Sessions whose keys are kept built (a turn needs them twice, its next turn again); past this
# many the lot is dropped and rebuilt as used, so memory stays bounded without an LRU's upkeep.
SESSION_KEYS_KEPT = 4096


class KeySpace:
    def __init__(self, prefix: str, partitions: int) -> None:
        self.prefix = prefix
        self.partitions = partitions
        self._tags = spread_tags(prefix, partitions)
        self._sessions: dict[SessionKey, SessionKeys] = {}

    def partition(self, key: SessionKey) -> int:
        if "/" in key.tenant:
            # A user's sessions share the user's slot (see the module's docstring).
            return self._scope_partition(key.tenant)
        return zlib.crc32(f"{key.tenant}\x00{key.session_id}".encode()) % self.partitions

    def _scope_partition(self, scope: str) -> int:
        return zlib.crc32(scope.encode()) % self.partitions

    def tag(self, partition: int) -> str:
        return f"{self.prefix}:{{{self._tags[partition]}}}"

    def outbox(self, partition: int) -> str:
        return f"{self.tag(partition)}:outbox"

    def outboxes(self) -> list[str]:
        return [self.outbox(p) for p in range(self.partitions)]

    def outbox_pattern(self) -> str:
        """Matches the outbox stream of any partition count (and of the older tag naming), so
        a writer finds entries left in streams that its own partition count does not name."""
        return f"{self.prefix}:{{*}}:outbox"

    def dead_letters(self) -> str:
        return f"{self.prefix}:dead-letters"

    def task(self, tenant: str, route: str, task_id: str) -> str:
        return f"{self.prefix}:task:{len(tenant)}:{tenant}:{route}:{task_id}"

    def user(self, tenant: str, user: str) -> UserKeys:
        scope = user_scope(tenant, user)
        base = f"{self.tag(self._scope_partition(scope))}:u:{len(tenant)}:{tenant}:{user}"
        return UserKeys(profile=f"{base}:profile", tombstone=f"{base}:deleted")

    def user_sessions_prefix(self, tenant: str, user: str) -> str:
        """What the keys of every session of a user begin with (then ``<session_id>:meta``...)."""
        scope = user_scope(tenant, user)
        return f"{self.tag(self._scope_partition(scope))}:s:{len(scope)}:{scope}:"

    def session(self, key: SessionKey) -> SessionKeys:
        found = self._sessions.get(key)
        if found is None:
            if len(self._sessions) >= SESSION_KEYS_KEPT:
                self._sessions.clear()
            found = self._sessions[key] = self._session(key)
        return found

    def _session(self, key: SessionKey) -> SessionKeys:
        tag = self.tag(self.partition(key))
        base = f"{tag}:s:{len(key.tenant)}:{key.tenant}:{key.session_id}"
        return SessionKeys(
            meta=f"{base}:meta",
            messages=f"{base}:msgs",
            context=f"{base}:ctx",
            outbox=f"{tag}:outbox",
            idempotency_prefix=f"{base}:idem:",
            tombstone=f"{base}:deleted",
            floor=f"{base}:floor",
        )


def glob_escape(text: str) -> str:
    """``text`` as a literal in a SCAN MATCH pattern."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
