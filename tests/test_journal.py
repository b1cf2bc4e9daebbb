"""The local journal: bounded on disk (a turn past the bound is reported unrecorded), replayed
as a stream (memory does not grow with the file), and only ever holding whole lines: a write the
disk refuses half-way is cut off again, and a line torn by a crash is skipped, not merged."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
import pytest

from sidecar import journal as journal_module
from sidecar.devservices import TemporaryPostgres, TemporaryRedis
from sidecar.journal import Journal, JournalFull, JournalUnwritable
from tests.harness.waiting import pg_fetch, pg_value, wait_outbox_empty, wait_until

MiB = 1024 * 1024


def _payload(i: int, text: str) -> dict[str, Any]:
    return {
        "tenant": "t",
        "session_id": f"s{i % 100}",
        "turn_id": str(uuid.uuid4()),
        "messages": [
            [str(uuid.uuid4()), "user", text, "2026-01-01T00:00:00Z", 10],
            [str(uuid.uuid4()), "assistant", text, "2026-01-01T00:00:01Z", 10],
        ],
        "usage": ["m", 10, 10, 20],
        "context": {},
        "at": "2026-01-01T00:00:01Z",
    }


async def wait_replayed(path: Path, sc: Any) -> None:
    """Until the journal at ``path`` is replayed whole and the outbox drained: counts taken
    afterwards see every turn, and any turn written twice."""
    replaying = path.with_name(path.name + ".replaying")
    await wait_until(
        lambda: _value(path.exists() or replaying.exists()),
        lambda pending: not pending,
        timeout_s=30,
        what="the journal replayed",
    )
    await wait_outbox_empty(sc.config.redis.url, sc.config.redis.key_prefix)


async def _value(value: Any) -> Any:
    return value


async def test_turns_past_the_bound_are_unrecorded_and_the_file_stays_within_it(
    start_sidecar: Any,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_server: TemporaryRedis,
    postgres_server: TemporaryPostgres,
    tmp_path: Path,
) -> None:
    journal = tmp_path / "journal.jsonl"
    bound = 8 * 1024
    sc = await start_sidecar(
        writer={"journal_path": str(journal), "journal_max_bytes": bound},
        redis={"breaker_reset_s": 0.5},
    )
    await redis_server.stop()
    await postgres_server.stop()
    headers: list[str] = []
    try:
        for i in range(30):
            async with http.post(
                f"{sc.url}/api/tasks",
                json={"query": f"question {i} " + "x" * 400, "session_id": "bounded"},
            ) as r:
                await r.read()
                assert r.status == 200  # the client is served either way
                headers.append(r.headers["X-Sidecar-Degraded"])
            assert journal.stat().st_size <= bound
    finally:
        await postgres_server.start()
        await redis_server.start()
    kept = [h for h in headers if "unrecorded" not in h]
    refused = [h for h in headers if "unrecorded" in h]
    assert kept, headers
    assert refused, headers
    assert headers == kept + refused  # once full, every later turn is refused
    assert all(h == "postgres,redis,unrecorded" for h in refused)
    # What was kept is replayed (once); what was refused never reaches PostgreSQL.
    await wait_replayed(journal, sc)
    assert await pg_value(pg_dsn, "SELECT count(*) FROM token_usage") == len(kept)
    assert await pg_value(pg_dsn, "SELECT count(*) FROM messages") == 2 * len(kept)


async def test_append_refuses_past_the_bound(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl", max_bytes=4096)
    written = 0
    while True:
        turn = _payload(written, "y" * 300)
        size = len(orjson.dumps({"tenant": "t", "session_id": "s", "turn": turn})) + 1
        if journal.size() + size > 4096:
            break
        await journal.append("t", "s", turn)
        written += 1
    with pytest.raises(JournalFull, match=r"writer\.journal_max_bytes"):
        await journal.append("t", "s", turn)
    assert written > 0
    assert journal.size() <= 4096


async def test_replay_of_a_bound_sized_file_keeps_memory_flat(tmp_path: Path) -> None:
    """A 64 MiB journal (the default bound) is replayed with RSS within 50 MB of idle."""
    path = tmp_path / "big.jsonl"
    bound = 64 * MiB
    line_count = 0
    with path.open("wb") as f:
        # Lines of about 4 KiB, as turns with a pasted paragraph would be.
        text = "the weather in Paris tomorrow " * 130
        while f.tell() < bound - 8 * 1024:
            f.write(
                orjson.dumps({"tenant": "t", "session_id": "s", "turn": _payload(line_count, text)})
                + b"\n"
            )
            line_count += 1
    os.replace(path, tmp_path / "j.jsonl")
    journal = Journal(tmp_path / "j.jsonl", max_bytes=bound)
    process = psutil.Process()
    idle = process.memory_info().rss
    peak = idle
    seen = 0

    async def write(tenant: str, session_id: str, payload: dict[str, Any]) -> None:
        nonlocal peak, seen
        seen += 1
        if seen % 500 == 0:
            peak = max(peak, process.memory_info().rss)

    assert await journal.replay(write) == line_count
    peak = max(peak, process.memory_info().rss)
    assert seen == line_count
    assert not journal.pending()
    assert peak - idle < 50 * 1_000_000, f"RSS grew by {(peak - idle) / 1e6:.1f} MB"


def _line(i: int, text: str = "z" * 200) -> tuple[dict[str, Any], bytes]:
    turn = _payload(i, text)
    return turn, orjson.dumps({"tenant": "t", "session_id": f"s{i}", "turn": turn}) + b"\n"


def _failing_disk(
    monkeypatch: pytest.MonkeyPatch, path: Path, *, max_chunk: int, fail: bool
) -> list[int]:
    """Make ``os.write`` to ``path`` (and only there) write at most ``max_chunk`` bytes a call
    and, with ``fail``, raise ENOSPC once it wrote a part, as a full disk does; returns the
    sizes written."""
    real_write = os.write
    written: list[int] = []

    def write(fd: int, data: bytes | memoryview) -> int:
        if os.readlink(f"/proc/self/fd/{fd}") != str(path):
            return real_write(fd, data)
        if fail and written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real_write(fd, memoryview(data)[:max_chunk])
        written.append(n)
        return n

    monkeypatch.setattr(journal_module.os, "write", write)
    return written


async def _replayed(journal: Journal) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []

    async def write(tenant: str, session_id: str, payload: dict[str, Any]) -> None:
        turns.append(payload)

    assert await journal.replay(write) == len(turns)
    return turns


async def test_a_write_the_disk_refuses_half_way_leaves_only_whole_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    first, _ = _line(1)
    await journal.append("t", "s1", first)
    before = path.read_bytes()

    refused, line = _line(2)
    written = _failing_disk(monkeypatch, path, max_chunk=len(line) // 2, fail=True)
    with pytest.raises(JournalUnwritable, match="No space left"):
        await journal.append("t", "s2", refused)
    assert written == [len(line) // 2]  # half of it had reached the file
    assert path.read_bytes() == before  # and was cut off again

    monkeypatch.undo()
    third, _ = _line(3)
    await journal.append("t", "s3", third)
    assert path.read_bytes().count(b"\n") == 2
    assert await _replayed(journal) == [first, third]


async def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    turn, line = _line(1)
    written = _failing_disk(monkeypatch, path, max_chunk=100, fail=False)
    await journal.append("t", "s1", turn)
    assert len(written) > 2
    assert path.read_bytes() == line
    assert await _replayed(journal) == [turn]


async def test_a_line_torn_by_a_crash_is_skipped_and_never_joins_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "j.jsonl"
    turns, lines = zip(*(_line(i) for i in range(3)), strict=True)
    # A process killed mid-write leaves the start of a line and nothing to cut it off.
    torn = _line(3)[1]
    path.write_bytes(b"".join(lines) + torn[: len(torn) // 2])
    journal = Journal(path)
    with caplog.at_level(logging.WARNING, logger="sidecar.journal"):
        assert await _replayed(journal) == list(turns)
    assert [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()] == [
        f"journal: skipping unfinished last line 4 of {journal.replaying}"
    ]

    # The same torn tail, and the restarted process appends after it.
    path.write_bytes(b"".join(lines) + torn[: len(torn) // 2])
    after, _ = _line(4)
    await journal.append("t", "s4", after)
    assert await _replayed(journal) == [*turns, after]
    # A complete line whose newline never reached the disk is not a turn that was kept.
    path.write_bytes(b"".join(lines) + torn[:-1])
    assert await _replayed(journal) == list(turns)


async def test_a_turn_the_full_disk_refuses_is_reported_unrecorded_and_the_rest_replayed(
    start_sidecar: Any,
    http: aiohttp.ClientSession,
    pg_dsn: str,
    redis_server: TemporaryRedis,
    postgres_server: TemporaryPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    journal = tmp_path / "journal.jsonl"
    sc = await start_sidecar(writer={"journal_path": str(journal)}, redis={"breaker_reset_s": 0.5})

    async def ask(query: str) -> str:
        async with http.post(
            f"{sc.url}/api/tasks", json={"query": query, "session_id": "enospc"}
        ) as r:
            await r.read()
            assert r.status == 200  # the client has its answer either way
            return r.headers["X-Sidecar-Degraded"]

    await redis_server.stop()
    await postgres_server.stop()
    try:
        assert await ask("kept before") == "postgres,redis"
        size = journal.stat().st_size
        _failing_disk(monkeypatch, journal, max_chunk=size // 3, fail=True)
        assert await ask("refused by the disk") == "postgres,redis,unrecorded"
        assert journal.stat().st_size == size
        monkeypatch.undo()
        assert await ask("kept after") == "postgres,redis"
    finally:
        await postgres_server.start()
        await redis_server.start()
    await wait_replayed(journal, sc)
    assert await pg_value(pg_dsn, "SELECT count(*) FROM token_usage") == 2
    rows = await pg_fetch(pg_dsn, "SELECT content FROM messages WHERE role = 'user' ORDER BY seq")
    assert [r["content"] for r in rows] == ["kept before", "kept after"]


async def test_a_cancelled_append_failing_late_never_cuts_off_the_next_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The caller of an append goes away (its request was cancelled) while the write still runs
    # in its thread; that write then fails and is cut off. The next turn's line, acknowledged
    # meanwhile, must not go with it.
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    real_write = os.write
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def write(fd: int, data: bytes | memoryview) -> int:
        if os.readlink(f"/proc/self/fd/{fd}") != str(path):
            return real_write(fd, data)
        calls.append(len(data))
        if len(calls) == 1:  # the first append: stuck on the disk, then refused
            entered.set()
            release.wait(10)
            real_write(fd, memoryview(data)[:10])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(journal_module.os, "write", write)
    doomed, _ = _line(1)
    kept, line = _line(2)
    first = asyncio.create_task(journal.append("t", "s1", doomed))
    assert await asyncio.to_thread(entered.wait, 10)
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError, JournalUnwritable):
        await first
    second = asyncio.create_task(journal.append("t", "s2", kept))
    # Room for the second write to go ahead while the first is still stuck, if it could.
    await asyncio.wait({second}, timeout=0.5)
    release.set()
    await second
    monkeypatch.undo()
    assert path.read_bytes() == line
    assert await _replayed(journal) == [kept]
