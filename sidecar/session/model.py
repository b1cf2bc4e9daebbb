"""What a session is made of: messages, the loaded snapshot, and the turn to record."""

from __future__ import annotations

import os
import random
import time
import uuid
from dataclasses import field, fields
from typing import Any, Literal, NamedTuple

import orjson

from ..frozen import frozen

Role = Literal["user", "assistant"]

# The formatted date and time of the current second (a turn stamps several things with the time,
# and formatting a datetime each time cost more than the rest of those lines).
_second: tuple[int, str] = (-1, "")


def utc_now_iso() -> str:
    """Now, as ``2026-11-29T23:58:28.123Z`` (UTC, milliseconds)."""
    global _second
    now_ms = time.time_ns() // 1_000_000
    second, ms = divmod(now_ms, 1000)
    if second != _second[0]:
        _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second[1]}.{ms:03d}Z"


# Row ids need to be unique, not secret: a generator of the process's own (seeded from the
# system's randomness, and again in a forked child) gives that without the system call
# ``os.urandom`` costs on every turn. Its own, so that no ``random.seed(n)`` elsewhere in the
# process can make two processes draw the same ids.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)
_random_bits = _ids.getrandbits

# A version 4 UUID is 122 random bits with the version (4) and the variant (binary 10) set.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def _uuid4_text(bits: int) -> str:
    """128 random bits as a version 4 UUID's text."""
    h = f"{bits & _UUID4_CLEAR | _UUID4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def random_uuid4() -> str:
    """``str(uuid.uuid4())`` without building a UUID object (nor a system call: see ``_ids``)."""
    return _uuid4_text(_random_bits(128))


class SessionKey(NamedTuple):
    """A session is named by its tenant and its id: the same id under another tenant is another
    session. (A tuple: it keys the caches, looked up several times a turn, and a tuple hashes
    and compares in C.)"""

    tenant: str
    session_id: str


@frozen
class Message:
    seq: int
    id: str
    role: Role
    content: str
    timestamp: str
    tokens: int | None = None
    # ``as_history()`` encoded once, when the message is made: a cached window is spliced into
    # every body it is forwarded in as these bytes, never rebuilt message by message.
    # (Not an argument: ``dataclasses.replace`` with another content would carry it over.)
    history_json: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Copied: orjson's result keeps the 4 KiB buffer it was written into, which a cache of
        # many short messages cannot afford.
        encoded = bytes(memoryview(orjson.dumps(self.as_history())))
        object.__setattr__(self, "history_json", encoded)

    def with_seq(self, seq: int) -> Message:
        """This message under another seq, its encoded history entry reused (the seq is not in
        it): ``dataclasses.replace`` would run ``__post_init__`` and encode it again."""
        clone = object.__new__(Message)
        for name in _MESSAGE_FIELDS:
            object.__setattr__(clone, name, getattr(self, name))
        object.__setattr__(clone, "seq", seq)
        return clone

    def as_history(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content, "timestamp": self.timestamp}

    def encode_without_seq(self) -> bytes:
        """The stored form is a JSON array ``[seq, id, role, content, timestamp, tokens]``; this is
        it without the seq, which the commit script inserts after the ``[`` once it assigned it."""
        return orjson.dumps([self.id, self.role, self.content, self.timestamp, self.tokens])

    def encode(self) -> bytes:
        return orjson.dumps(
            [self.seq, self.id, self.role, self.content, self.timestamp, self.tokens]
        )

    @classmethod
    def decode(cls, raw: bytes | str) -> Message:
        seq, mid, role, content, ts, tokens = orjson.loads(raw)
        return cls(seq=seq, id=mid, role=role, content=content, timestamp=ts, tokens=tokens)


_MESSAGE_FIELDS = tuple(f.name for f in fields(Message))


@frozen
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    model: str = ""
    cost: float | None = None  # what the backend says the turn cost (USD), when it says
    provider: str = ""
    # One entry per model when the backend reports a per-model breakdown (several models answered
    # one task); this Usage then holds their totals, and each entry becomes its own usage row.
    breakdown: tuple[Usage, ...] = ()

    def rows(self) -> tuple[Usage, ...]:
        """The usage rows to store for a turn: one per model of the breakdown, else this one."""
        return self.breakdown or (self,)

    def encode_row(self) -> list[Any]:
        return [
            self.model,
            self.prompt_tokens,
            self.completion_tokens,
            self.total_tokens,
            self.cost,
            self.provider,
        ]


@frozen
class SessionSnapshot:
    """A session as loaded: the window (oldest first), context and counters, at a version.
    (A new field must also be carried over where a turn grows a cached snapshot:
    ``session.cache.grown`` builds it field by field.)"""

    key: SessionKey
    version: str
    window: tuple[Message, ...] = ()
    context: dict[str, Any] = field(default_factory=dict)
    tokens_used: int = 0
    message_count: int = 0
    last_seq: int = 0
    created_at: str = ""
    updated_at: str = ""


@frozen
class Turn:
    """One exchange to record: the user's message, the assistant's answer, usage, context changes."""

    key: SessionKey
    user: Message
    assistant: Message
    usage: Usage
    context_patch: dict[str, Any]
    turn_id: str = field(default_factory=random_uuid4)
    idempotency_key: str | None = None
    partial: bool = False
    # The identity's user (the key's tenant is then ``<tenant>/<user>``); ``sessions.user_id``.
    user_id: str | None = None
    # The user the session belongs to, as (bare tenant, user), when the user's profile is kept;
    # and the facts the user's message stated (recorded with the turn, atomically).
    profile_owner: tuple[str, str] | None = None
    profile_patch: dict[str, str] = field(default_factory=dict)

    def outbox_payload(self, encoded: tuple[bytes, bytes] | None = None) -> bytes:
        """What the writer needs to persist the turn; the commit script adds the sequence number.

        ``encoded``: both messages' ``encode_without_seq()`` when the caller has them already
        (they are the payload's message entries too), so no message is encoded twice."""
        user_json, assistant_json = encoded or (
            self.user.encode_without_seq(),
            self.assistant.encode_without_seq(),
        )
        payload: dict[str, Any] = {
            "tenant": self.key.tenant,
            "session_id": self.key.session_id,
            "user_id": self.user_id,
            "turn_id": self.turn_id,
            "messages": orjson.Fragment(b"[" + user_json + b"," + assistant_json + b"]"),
            # The turn's totals (the session's counters grow by them) ...
            "usage": [
                self.usage.model,
                self.usage.prompt_tokens,
                self.usage.completion_tokens,
                self.usage.total_tokens,
            ],
            # ... and its usage rows: [model, prompt, completion, total, cost, provider].
            "usage_rows": [row.encode_row() for row in self.usage.rows()],
            "context": self.context_patch,
            "partial": self.partial,
            "at": self.assistant.timestamp,
        }
        if self.profile_owner is not None and self.profile_patch:
            tenant, user = self.profile_owner
            payload["profile"] = {"tenant": tenant, "user_id": user, "facts": self.profile_patch}
        return orjson.dumps(payload)


_IDEMPOTENT = uuid.UUID("8d5e2c1a-4f0b-5c7e-9a3d-6b1f0e2d4c8a")


def turn_ids(key: SessionKey, idempotency_key: str | None) -> tuple[str, str, str]:
    """Ids of a turn and its two messages. With an ``Idempotency-Key`` they follow from it, so a
    retried request writes the same rows, which PostgreSQL keeps once on every path (the outbox,
    a direct write while Redis is away, a journal replay)."""
    if not idempotency_key:
        return random_uuid4(), random_uuid4(), random_uuid4()
    base = f"{key.tenant}\x00{key.session_id}\x00{idempotency_key}"
    return tuple(  # type: ignore[return-value]
        str(uuid.uuid5(_IDEMPOTENT, f"{base}\x00{part}")) for part in ("turn", "user", "assistant")
    )


def new_message(
    role: Role,
    content: str,
    tokens: int | None,
    timestamp: str | None = None,
    message_id: str | None = None,
) -> Message:
    return Message(
        seq=0,
        id=message_id or random_uuid4(),
        role=role,
        content=content,
        timestamp=timestamp or utc_now_iso(),
        tokens=tokens,
    )
