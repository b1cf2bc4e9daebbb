"""The local journal: bounded on disk (a turn past the bound is reported unrecorded), replayed
as a stream (memory does not grow with the file)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
import pytest

from sidecar.devservices import TemporaryPostgres, TemporaryRedis
from sidecar.journal import Journal, JournalFull
from tests.harness.waiting import pg_value, wait_for_rows

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
    # What was kept is replayed; what was refused never reaches PostgreSQL.
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM token_usage", len(kept), timeout_s=30)
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
