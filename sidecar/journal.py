"""The last resort: turns that neither Redis nor PostgreSQL would take, kept in a local
append-only file (fsynced) and replayed into PostgreSQL when it answers again.

Replays are idempotent (message and usage ids are fixed when the turn is made), so a replay cut
short by a crash is simply run again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

Replayer = Callable[[str, str, dict[str, Any]], Awaitable[Any]]


class Journal:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.replaying = self.path.with_name(self.path.name + ".replaying")
        self.rejected = self.path.with_name(self.path.name + ".rejected")
        self._lock = asyncio.Lock()

    def pending(self) -> bool:
        return self.path.exists() or self.replaying.exists()

    async def append(self, tenant: str, session_id: str, payload: dict[str, Any]) -> None:
        line = orjson.dumps({"tenant": tenant, "session_id": session_id, "turn": payload}) + b"\n"
        async with self._lock:
            await asyncio.to_thread(self._append, line)

    async def reject(
        self, tenant: str, session_id: str, payload: dict[str, Any], error: str
    ) -> None:
        """Keep a turn PostgreSQL refused for a data reason, for a person to look at."""
        line = orjson.dumps(
            {"tenant": tenant, "session_id": session_id, "turn": payload, "error": error}
        )
        await asyncio.to_thread(self._append, line + b"\n", self.rejected)

    def _append(self, line: bytes, path: Path | None = None) -> None:
        path = path or self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def replay(self, write: Replayer) -> int:
        """Write every journaled turn with ``write``; returns how many. Raises what ``write``
        raises, leaving the rest for the next attempt."""
        async with self._lock:
            if not self.replaying.exists():
                if not self.path.exists():
                    return 0
                # New appends go to a fresh file while this one is replayed.
                self.path.rename(self.replaying)
        done = 0
        raw = await asyncio.to_thread(self.replaying.read_bytes)
        for number, line in enumerate(raw.splitlines(), 1):
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                # A line cut short by a crash while it was being written; the turn's client
                # never got its answer confirmed by this write.
                log.warning("journal: skipping unreadable line %d of %s", number, self.replaying)
                continue
            await write(entry["tenant"], entry["session_id"], entry["turn"])
            done += 1
        self.replaying.unlink()
        return done
