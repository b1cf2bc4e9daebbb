"""Usage rows in PostgreSQL: one per model of a turn's breakdown, with cost and provider kept,
written once however often the turn's outbox entry is delivered; entries written before rows had
cost and provider still land."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson

from sidecar.session.model import SessionKey, Turn, Usage, new_message
from sidecar.store.batch import OutboxEvent, write_events
from sidecar.store.postgres import _init_connection
from sidecar.store.schema import migrate
from tests.harness.waiting import pg_fetch, pg_value


def turn_event(sid: str, usage: Usage, seq: int = 1) -> OutboxEvent:
    turn = Turn(
        key=SessionKey("t", sid),
        user=new_message("user", "Research Paris weather", 5),
        assistant=new_message("assistant", "Mild, some rain.", 4),
        usage=usage,
        context_patch={},
    )
    return OutboxEvent("s", "1-0", "turn", seq, orjson.loads(turn.outbox_payload()))


async def write(dsn: str, events: list[OutboxEvent]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await _init_connection(conn)
        await migrate(conn)
        async with conn.transaction():
            await write_events(conn, events)
    finally:
        await conn.close()


async def test_a_breakdown_gives_one_row_per_model_once(pg_dsn: str) -> None:
    sid = f"u-{uuid.uuid4().hex[:8]}"
    usage = Usage(
        0,
        0,
        2100,
        "",
        0.015,
        "",
        breakdown=(
            Usage(total_tokens=1200, model="gpt-5", cost=0.012, provider="openai"),
            Usage(total_tokens=900, model="claude-haiku-4-5", cost=0.003, provider="anthropic"),
        ),
    )
    event = turn_event(sid, usage)
    await write(pg_dsn, [event])
    await write(pg_dsn, [event])  # delivered again: a crash between commit and acknowledgement
    rows = await pg_fetch(
        pg_dsn,
        "SELECT model, provider, cost, total_tokens FROM token_usage WHERE session_id = $1"
        " ORDER BY model",
        sid,
    )
    assert [tuple(r) for r in rows] == [
        ("claude-haiku-4-5", "anthropic", 0.003, 900),
        ("gpt-5", "openai", 0.012, 1200),
    ]
    tokens = await pg_value(pg_dsn, "SELECT tokens_used FROM sessions WHERE session_id = $1", sid)
    assert tokens == 2100


async def test_an_entry_without_rows_still_lands(pg_dsn: str) -> None:
    sid = f"u-{uuid.uuid4().hex[:8]}"
    event = turn_event(sid, Usage(10, 5, 15, "fake-1"))
    data: dict[str, Any] = dict(event.data)
    del data["usage_rows"]  # as an older sidecar wrote it
    await write(pg_dsn, [OutboxEvent("s", "1-0", "turn", 1, data)])
    rows = await pg_fetch(
        pg_dsn,
        "SELECT model, cost, provider, total_tokens FROM token_usage WHERE session_id = $1",
        sid,
    )
    assert [tuple(r) for r in rows] == [("fake-1", None, None, 15)]
