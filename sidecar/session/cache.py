"""The in-process cache (L1): bounded, least recently used, every entry tagged with its version.

An entry is only ever used after Redis confirmed, in the same round trip as the load, that its
version is still current, so a write made through another replica is seen on the next read.
"""

from __future__ import annotations

from collections import OrderedDict

from .model import SessionKey, SessionSnapshot


class SessionCache:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[SessionKey, SessionSnapshot] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: SessionKey) -> SessionSnapshot | None:
        snapshot = self._entries.get(key)
        if snapshot is not None:
            self._entries.move_to_end(key)
        return snapshot

    def put(self, snapshot: SessionSnapshot) -> None:
        if self.max_entries <= 0 or not snapshot.version:
            return
        self._entries[snapshot.key] = snapshot
        self._entries.move_to_end(snapshot.key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def discard(self, key: SessionKey) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
