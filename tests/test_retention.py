"""Retention: ``sidecar prune`` and the background pruner remove old rows, in batches, and keep
everything younger than ``postgres.retention_days``."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from sidecar.config import PostgresConfig
from sidecar.store.postgres import create_pool, migrate
from sidecar.store.retention import Pruner, prune
from tests.harness import deep_merge
from tests.harness.waiting import pg_fetch, wait_until

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=40)
RECENT = NOW - timedelta(days=2)


async def seed(dsn: str) -> None:
    """Sessions: 'old' (only old messages), 'mixed' (old and recent), 'fresh' (no messages yet,
    its first turn still on its way); tombstones of sessions and of users: one old, one recent."""
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        for sid, updated in (("old", OLD), ("mixed", RECENT), ("fresh", NOW)):
            await conn.execute(
                "INSERT INTO sessions (tenant, session_id, created_at, updated_at)"
                " VALUES ('t', $1, $2, $2)",
                sid,
                updated,
            )
        rows = [("old", seq, OLD) for seq in range(1, 6)]
        rows += [("mixed", seq, OLD) for seq in range(1, 4)]
        rows += [("mixed", seq, RECENT) for seq in range(4, 8)]
        for sid, seq, at in rows:
            turn = uuid.uuid4()
            await conn.execute(
                "INSERT INTO messages (id, tenant, session_id, seq, role, content, turn_id,"
                " created_at) VALUES ($1, 't', $2, $3, 'user', $4, $5, $6)",
                uuid.uuid4(),
                sid,
                seq,
                f"{sid} {seq}",
                turn,
                at,
            )
            await conn.execute(
                "INSERT INTO token_usage (id, tenant, session_id, total_tokens, created_at)"
                " VALUES ($1, 't', $2, 3, $3)",
                turn,
                sid,
                at,
            )
        for sid, at in (("gone-long-ago", OLD), ("gone-lately", RECENT)):
            await conn.execute(
                "INSERT INTO deleted_sessions (tenant, session_id, deleted_at) VALUES ('t', $1, $2)",
                sid,
                at,
            )
        for user, at in (("forgotten-long-ago", OLD), ("forgotten-lately", RECENT)):
            await conn.execute(
                "INSERT INTO deleted_users (tenant, user_id, scope, deleted_at)"
                " VALUES ('t', $1, 't/' || $1, $2)",
                user,
                at,
            )
    finally:
        await conn.close()


async def assert_only_recent_rows_left(dsn: str) -> None:
    messages = await pg_fetch(dsn, "SELECT content FROM messages ORDER BY session_id, seq")
    assert [r["content"] for r in messages] == [f"mixed {seq}" for seq in range(4, 8)]
    usage = await pg_fetch(dsn, "SELECT session_id, created_at FROM token_usage")
    assert len(usage) == 4
    assert all(r["created_at"] > NOW - timedelta(days=30) for r in usage)
    sessions = await pg_fetch(dsn, "SELECT session_id FROM sessions ORDER BY session_id")
    assert [r["session_id"] for r in sessions] == ["fresh", "mixed"]
    tombstones = await pg_fetch(dsn, "SELECT session_id FROM deleted_sessions")
    assert [r["session_id"] for r in tombstones] == ["gone-lately"]
    users = await pg_fetch(dsn, "SELECT user_id FROM deleted_users")
    assert [r["user_id"] for r in users] == ["forgotten-lately"]


async def run_cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode()


async def test_prune_command_removes_old_rows_in_batches(
    sidecar_config: dict[str, Any], pg_dsn: str, tmp_path: Path
) -> None:
    await seed(pg_dsn)
    path = tmp_path / "sidecar.yaml"
    path.write_text(
        yaml.safe_dump(deep_merge(sidecar_config, {"postgres": {"retention_days": 30}}))
    )
    # Batches of two: eight old messages take several transactions.
    code, out = await run_cli("prune", "-c", str(path), "--batch-size", "2")
    assert code == 0, out
    assert "messages: 8, usage rows: 8, tombstones: 2, sessions: 1" in out
    await assert_only_recent_rows_left(pg_dsn)
    # Nothing more to do the second time.
    code, out = await run_cli("prune", "-c", str(path))
    assert code == 0, out
    assert "messages: 0, usage rows: 0, tombstones: 0, sessions: 0" in out


async def test_prune_without_retention_days_says_so(
    sidecar_config: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump(sidecar_config))
    code, out = await run_cli("prune", "-c", str(path))
    assert code == 1
    assert "postgres.retention_days is not set" in out


async def test_background_pruner_and_one_pruner_at_a_time(pg_dsn: str) -> None:
    await seed(pg_dsn)
    pool = await create_pool(PostgresConfig(dsn=pg_dsn))
    try:
        # While another replica holds the pruning lock, a round is skipped, not doubled.
        holder = await asyncpg.connect(pg_dsn)
        try:
            await holder.execute("SELECT pg_advisory_lock($1)", 0x5E5510C6)
            assert (await prune(pool, 30)).skipped
        finally:
            await holder.close()
        pruner = Pruner(pool, 30, every_s=0.05)
        pruner.start()
        try:

            async def sessions_left() -> int:
                rows = await pg_fetch(pg_dsn, "SELECT count(*) AS n FROM sessions")
                return int(rows[0]["n"])

            # Sessions left without messages go last: their pruning ends a pass.
            await wait_until(sessions_left, lambda n: n == 2, what="a pruning pass")
        finally:
            await pruner.close()
        await assert_only_recent_rows_left(pg_dsn)
    finally:
        await pool.close()
