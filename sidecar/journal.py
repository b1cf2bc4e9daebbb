"""The last resort: turns that neither Redis nor PostgreSQL would take, kept in a local
append-only file (fsynced) and replayed into PostgreSQL when it answers again.

Replays are idempotent (message and usage ids are fixed when the turn is made), so a replay cut
short by a crash is simply run again. The files together (the journal, the one being replayed,
the rejected turns) never grow past ``max_bytes``: the disk is usually a small ``emptyDir``, and
filling it would get the pod evicted. A turn that does not fit is refused (``JournalFull``) and
reported unrecorded. A replay streams the file in bounded chunks, never reading it whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from .errors import StoreUnavailable

log = logging.getLogger(__name__)

Replayer = Callable[[str, str, dict[str, Any]], Awaitable[Any]]

CHUNK_BYTES = 1 << 20  # how much of the file a replay reads at a time


class JournalUnwritable(StoreUnavailable):
    """The journal could not take the turn (the disk refused the write): it is kept nowhere."""


class JournalFull(JournalUnwritable):
    """The journal is at its bound: the turn cannot be kept anywhere."""


class Journal:
    def __init__(self, path: str | os.PathLike[str], max_bytes: int = 64 * 1024 * 1024) -> None:
        self.path = Path(path)
        self.replaying = self.path.with_name(self.path.name + ".replaying")
        self.rejected = self.path.with_name(self.path.name + ".rejected")
        self.max_bytes = max_bytes
        self._lock = asyncio.Lock()
        self._file_lock = threading.Lock()

    def pending(self) -> bool:
        return self.path.exists() or self.replaying.exists()

    def size(self) -> int:
        """Bytes on disk, all files together."""
        total = 0
        for p in (self.path, self.replaying, self.rejected):
            with contextlib.suppress(FileNotFoundError):  # absent: nothing in it
                total += p.stat().st_size
        return total

    async def append(self, tenant: str, session_id: str, payload: dict[str, Any]) -> None:
        """Keep a turn; ``JournalFull`` when it would take the files past ``max_bytes``,
        ``JournalUnwritable`` when the disk refuses it (the file is left as it was)."""
        line = orjson.dumps({"tenant": tenant, "session_id": session_id, "turn": payload}) + b"\n"
        async with self._lock:
            if self.size() + len(line) > self.max_bytes:
                raise JournalFull(
                    f"journal {self.path} is full ({self.max_bytes} bytes, writer.journal_max_bytes)"
                )
            try:
                await asyncio.to_thread(self._append, line)
            except OSError as e:
                raise JournalUnwritable(f"journal {self.path} could not be written: {e}") from e

    async def reject(
        self, tenant: str, session_id: str, payload: dict[str, Any], error: str
    ) -> None:
        """Keep a turn PostgreSQL refused for a data reason, for a person to look at (within the
        bound: past it, the turn is only logged, by its ids)."""
        line = orjson.dumps(
            {"tenant": tenant, "session_id": session_id, "turn": payload, "error": error}
        )
        if self.size() + len(line) + 1 > self.max_bytes:
            log.error(
                "journal: no room to keep rejected turn %s of %s/%s",
                payload.get("turn_id"),
                tenant,
                session_id,
            )
            return
        await asyncio.to_thread(self._append, line + b"\n", self.rejected)

    def _append(self, line: bytes, path: Path | None = None) -> None:
        """Append one whole line, or nothing: a short or failed write (ENOSPC, EIO) is cut off
        again, so the file holds only whole lines and the next turn never joins a torn one."""
        path = path or self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        # One write at a time in this process, whatever the event loop does: an append whose
        # caller was cancelled runs on in its thread, and a cut-off must never take another's
        # line with it.
        with self._file_lock:
            self._append_locked(line, path)

    def _append_locked(self, line: bytes, path: Path) -> None:
        # Read-write: the last byte is read to find a torn line.
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A line torn by a crash mid-write (nothing could cut it off then): end it, so it
                # stays one unreadable line that replay skips, apart from this one.
                line = b"\n" + line
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, size)
                except OSError as e:
                    log.error("journal: could not cut a failed write off %s: %s", path, e)
                raise
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
        number = 0
        async for line, whole in _lines(self.replaying):
            number += 1
            if not whole:
                # The last line has no newline: its write never finished (a crash), so its
                # turn was never reported kept. Skipped even if it happens to parse.
                log.warning(
                    "journal: skipping unfinished last line %d of %s", number, self.replaying
                )
                continue
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


async def _lines(path: Path) -> AsyncIterator[tuple[bytes, bool]]:
    """The file's lines, each with whether it ended in a newline (only the last may not), read
    ``CHUNK_BYTES`` at a time (memory stays about one chunk plus the longest line, whatever the
    file's size)."""
    with path.open("rb") as f:
        rest = b""
        while chunk := await asyncio.to_thread(f.read, CHUNK_BYTES):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                if line:
                    yield line, True
        if rest:
            yield rest, False
