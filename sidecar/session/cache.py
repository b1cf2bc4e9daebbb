"""The in-process cache (L1): bounded, least recently used, every entry tagged with its version.

An entry is only ever used after Redis confirmed, in the same round trip as the load, that its
version is still current, so a write made through another replica is seen on the next read.
"""

from __future__ import annotations

from collections import OrderedDict

from .model import Message, SessionKey, SessionSnapshot

# A rough per-message overhead (the Message object, its id and timestamp strings).
MESSAGE_OVERHEAD_BYTES = 200


def message_bytes(message: Message) -> int:
    """About what one message of a cached window holds: its text, its encoded history entry,
    overhead."""
    return len(message.content) + len(message.history_json) + MESSAGE_OVERHEAD_BYTES


def snapshot_bytes(snapshot: SessionSnapshot) -> int:
    """About what the window holds."""
    return sum(map(message_bytes, snapshot.window))


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
