"""The writer's batch write against a real PostgreSQL: a batch is taken for new and written in one
go, and when part of it was stored before (delivered again) or its seqs are taken, it is written
again row by row in their truth: every message once, counters grown only by what is new, a
clashing message renumbered and never lost, NULs made storable."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from sidecar.config import PostgresConfig
from sidecar.session.model import SessionKey, Turn, Usage, new_message
from sidecar.store.batch import OutboxEvent
from sidecar.store.postgres import PostgresSessionStore, create_pool
from tests.harness.waiting import pg_fetch, pg_value


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[PostgresSessionStore]:
    pool = await create_pool(PostgresConfig(dsn=pg_dsn))
    store = PostgresSessionStore(pool)
    await store.migrate()
    yield store
    await store.close()


def turn(
    sid: str,
    seq: int,
    text: str = "Paris tomorrow?",
    context: dict[str, str] | None = None,
    tenant: str = "t",
) -> OutboxEvent:
    made = Turn(
        key=SessionKey(tenant, sid),
        user=new_message("user", text, 5),
        assistant=new_message("assistant", "Mild, some rain.", 4),
        usage=Usage(5, 4, 9, "fake-1"),
        context_patch=context or {},
    )
    return OutboxEvent("s", f"{seq}-0", "turn", seq, orjson.loads(made.outbox_payload()))


async def counters(dsn: str, sid: str) -> tuple[int, int]:
    row = (
        await pg_fetch(
            dsn, "SELECT message_count, tokens_used FROM sessions WHERE session_id = $1", sid
        )
    )[0]
    return row["message_count"], row["tokens_used"]


async def seqs_of(dsn: str, sid: str) -> list[int]:
    rows = await pg_fetch(dsn, "SELECT seq FROM messages WHERE session_id = $1 ORDER BY seq", sid)
    return [r["seq"] for r in rows]


async def test_a_batch_delivered_again_with_new_turns_counts_only_the_new(
    store: PostgresSessionStore, pg_dsn: str
) -> None:
    a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    first = [turn(a, 1), turn(b, 1)]
    await store.write(first)
    assert await counters(pg_dsn, a) == (2, 9)
    # Delivered again (a crash between commit and acknowledgement), behind new turns.
    later = [turn(a, 3), turn(b, 3)]
    await store.write([*first, *later])
    assert await counters(pg_dsn, a) == (4, 18)
    assert await counters(pg_dsn, b) == (4, 18)
    assert await seqs_of(pg_dsn, a) == [1, 2, 3, 4]
    assert await pg_value(pg_dsn, "SELECT count(*) FROM token_usage WHERE session_id = $1", a) == 2
    # And once more, whole: nothing changes.
    await store.write([*first, *later])
    assert await counters(pg_dsn, a) == (4, 18)


async def test_a_turn_whose_seq_is_taken_is_renumbered_and_counted(
    store: PostgresSessionStore, pg_dsn: str
) -> None:
    sid = f"c-{uuid.uuid4().hex[:8]}"
    await store.write([turn(sid, 1, "first")])
    # Another copy of the session (a stale Redis) gave its next turn seqs 1 and 2 again.
    clashing = turn(sid, 1, "second")
    await store.write([clashing, turn(f"d-{uuid.uuid4().hex[:8]}", 1)])
    rows = await pg_fetch(
        pg_dsn, "SELECT seq, content FROM messages WHERE session_id = $1 ORDER BY seq", sid
    )
    assert [(r["seq"], r["content"]) for r in rows] == [
        (1, "first"),
        (2, "Mild, some rain."),
        (3, "second"),
        (4, "Mild, some rain."),
    ]
    assert await counters(pg_dsn, sid) == (4, 18)
    stale = await pg_value(pg_dsn, "SELECT count(*) FROM redis_stale WHERE session_id = $1", sid)
    assert stale == 1


async def test_nul_in_text_and_context_is_stored_as_a_replacement_character(
    store: PostgresSessionStore, pg_dsn: str
) -> None:
    sid = f"n-{uuid.uuid4().hex[:8]}"
    event = turn(sid, 1, "a\x00b", {"place\x00": "Par\x00is", "plain": "ok"})
    await store.write([event])
    content = await pg_value(
        pg_dsn, "SELECT content FROM messages WHERE session_id = $1 AND seq = 1", sid
    )
    assert content == "a\ufffdb"
    context = await pg_value(pg_dsn, "SELECT context FROM sessions WHERE session_id = $1", sid)
    assert orjson.loads(context) == {"place\ufffd": "Par\ufffdis", "plain": "ok"}


async def test_turns_of_deleted_users_and_sessions_stay_out_and_the_rest_land(
    store: PostgresSessionStore, pg_dsn: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    gone_user, kept_user = f"t/gone-{tag}", f"t/kept-{tag}"
    later = datetime.now(UTC) + timedelta(hours=1)  # deleted after these turns were asked
    async with store.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO deleted_users (tenant, user_id, scope, deleted_at) VALUES ($1, $2, $3, $4)",
            "t",
            f"gone-{tag}",
            gone_user,
            later,
        )
        await conn.execute(
            "INSERT INTO deleted_sessions (tenant, session_id, deleted_at) VALUES ($1, $2, $3)",
            kept_user,
            "erased",
            later,
        )
    await store.write(
        [
            turn("a", 1, tenant=gone_user),
            turn("erased", 1, tenant=kept_user),
            turn("b", 1, tenant=kept_user),
        ]
    )
    rows = await pg_fetch(
        pg_dsn,
        "SELECT tenant, session_id, message_count FROM sessions WHERE tenant = ANY($1::text[])",
        [gone_user, kept_user],
    )
    assert [tuple(r) for r in rows] == [(kept_user, "b", 2)]
    stored = await pg_value(
        pg_dsn,
        "SELECT count(*) FROM messages WHERE tenant = ANY($1::text[])",
        [gone_user, kept_user],
    )
    assert stored == 2
