"""The in-process cache (L1): bounded, least recently used, every entry tagged with its version.

An entry is only ever used after Redis confirmed, in the same round trip as the load, that its
version is still current, so a write made through another replica is seen on the next read.
"""

from __future__ import annotations

from collections import OrderedDict

from .model import Message, SessionKey, SessionSnapshot, Turn

# A rough per-message overhead (the Message object, its id and timestamp strings).
MESSAGE_OVERHEAD_BYTES = 200

# A copy grown ahead of a commit's reply (``SessionCache.grow_ahead``): the cached copy it grew
# from and that copy's size; the grown copy and its size.
Ahead = tuple[SessionSnapshot, int, SessionSnapshot, int]


def message_bytes(message: Message) -> int:
    """About what one message of a cached window holds: its text, its encoded history entry,
    overhead."""
    return len(message.content) + len(message.history_json) + MESSAGE_OVERHEAD_BYTES


def snapshot_bytes(snapshot: SessionSnapshot) -> int:
    """About what the window holds."""
    return sum(map(message_bytes, snapshot.window))


def grown(
    cached: SessionSnapshot,
    size: int,
    turn: Turn,
    version: str,
    first_seq: int,
    history_limit: int,
) -> tuple[SessionSnapshot, int]:
    """``cached`` (counted as ``size``) with ``turn`` committed as ``version`` from
    ``first_seq`` on, as Redis then holds it when nothing else was written in between; and its
    size, counted by difference (counting its 50 messages again cost more than the rest)."""
    user = turn.user.with_seq(first_seq)
    assistant = turn.assistant.with_seq(first_seq + 1)
    grown = (*cached.window, user, assistant)
    window = grown[-history_limit:] if history_limit > 0 else ()
    dropped = grown[: len(grown) - len(window)]
    size += message_bytes(user) + message_bytes(assistant) - sum(map(message_bytes, dropped))
    # Built whole rather than by ``dataclasses.replace``, which walks the fields per call.
    snapshot = SessionSnapshot(
        key=cached.key,
        version=version,
        window=window,
        context={**cached.context, **turn.context_patch},
        tokens_used=cached.tokens_used + turn.usage.total_tokens,
        message_count=cached.message_count + 2,
        last_seq=first_seq + 1,
        created_at=cached.created_at,
        updated_at=turn.assistant.timestamp,
    )
    return snapshot, size


class SessionCache:
    """At most ``max_entries`` sessions and about ``max_bytes`` of their message text."""

    def __init__(self, max_entries: int, max_bytes: int = 0) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes  # 0: no byte bound
        self.bytes = 0
        self._entries: OrderedDict[SessionKey, tuple[SessionSnapshot, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: SessionKey) -> SessionSnapshot | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def entry(self, key: SessionKey) -> tuple[SessionSnapshot, int] | None:
        """The cached snapshot of ``key`` and its counted size, left where it is in the order."""
        return self._entries.get(key)

    def grow_ahead(self, turn: Turn, history_limit: int) -> Ahead | None:
        """The cached copy of ``turn``'s session grown by it as its commit will leave it if
        nothing else is written in between: the next version, seqs on from the copy's last."""
        entry = self._entries.get(turn.key)
        if entry is None:
            return None
        cached, size = entry
        epoch, _, n = cached.version.rpartition(":")
        version, first_seq = f"{epoch}:{int(n) + 1}", cached.last_seq + 1
        return cached, size, *grown(cached, size, turn, version, first_seq, history_limit)

    def size_of(self, key: SessionKey) -> int | None:
        """The size counted for the cached entry of ``key`` (``snapshot_bytes``)."""
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def put(self, snapshot: SessionSnapshot, size: int | None = None) -> None:
        """Cache ``snapshot``; ``size``: its ``snapshot_bytes`` when the caller knows it (a window
        grown by a turn: counting its 50 messages again cost more than the rest of the update)."""
        if self.max_entries <= 0 or not snapshot.version:
            return
        if size is None:
            size = snapshot_bytes(snapshot)
        if self.max_bytes and size > self.max_bytes:
            self.discard(snapshot.key)  # too large to keep; Redis serves it
            return
        self.discard(snapshot.key)
        self._entries[snapshot.key] = (snapshot, size)
        self.bytes += size
        while len(self._entries) > self.max_entries or (
            self.max_bytes and self.bytes > self.max_bytes
        ):
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted

    def discard(self, key: SessionKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[1]

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0
