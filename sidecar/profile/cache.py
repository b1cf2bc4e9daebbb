"""Profiles held in process: bounded, least recently used, each tagged with its Redis version.

Like the session cache, an entry is used only after Redis confirmed its version in the load's
own round trip, so a fact stated through another replica is seen on the next turn.
"""

from __future__ import annotations

from collections import OrderedDict

Owner = tuple[str, str]  # (bare tenant, user)


class ProfileCache:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Owner, tuple[str, dict[str, str]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def version(self, owner: Owner) -> str:
        entry = self._entries.get(owner)
        return entry[0] if entry else ""

    def facts(self, owner: Owner) -> dict[str, str] | None:
        entry = self._entries.get(owner)
        if entry is None:
            return None
        self._entries.move_to_end(owner)
        return entry[1]

    def put(self, owner: Owner, version: str, facts: dict[str, str]) -> None:
        if self.max_entries <= 0 or not version:
            return
        self._entries[owner] = (version, facts)
        self._entries.move_to_end(owner)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def discard(self, owner: Owner) -> None:
        self._entries.pop(owner, None)
