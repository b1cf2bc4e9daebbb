"""Does restoring a session stay an index scan when ``messages`` holds millions of rows, and what
does retention's batched pruning cost?

First 200 probe sessions of 100 messages each are loaded and their restore is timed (the
baseline, 20,000 rows); then ``--rows`` more messages (default 2,000,000: ``--sessions``
sessions, spread over 120 days) are loaded server-side with ``generate_series`` and the same
probe sessions' restore is timed again: same query, same result, a table 100 times larger. The restore queries are those of
``PostgresSessionStore.fetch_session`` (the session row with its highest seq, the last N messages);
their plans are shown (``EXPLAIN (ANALYZE, BUFFERS)``) and must be index scans. Then one pruning
pass (``postgres.retention_days`` cutting off the oldest ~2 % of messages) is timed per batch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.stack import Stores, median, ratio, stores_or_temporary
from sidecar.store.postgres import migrate
from sidecar.store.retention import BATCH_SIZE, BATCHES

SESSION_ROW = (
    "SELECT context, tokens_used, message_count, created_at, updated_at,"
    " (SELECT max(seq) FROM messages m WHERE m.tenant = s.tenant"
    "   AND m.session_id = s.session_id) AS last_seq"
    " FROM sessions s WHERE tenant = $1 AND session_id = $2"
)
WINDOW = (
    "SELECT id, seq, role, content, tokens, created_at FROM ("
    " SELECT * FROM messages WHERE tenant = $1 AND session_id = $2"
    " ORDER BY seq DESC LIMIT $3) last ORDER BY seq"
)
DAYS = 120

# Sessions s0..s{n-1}, each with messages seq 1..per_session; message i of the table is written
# at a time spread evenly over DAYS days, oldest first.
_LOAD_MESSAGES = """
INSERT INTO messages (id, tenant, session_id, seq, role, content, tokens, turn_id, created_at)
SELECT gen_random_uuid(), 'bench', $6 || (i % $3), i / $3 + 1,
       CASE WHEN i % 2 = 0 THEN 'user' ELSE 'assistant' END,
       'message ' || i || ' of a conversation about the weather in Paris tomorrow', 12,
       gen_random_uuid(), $4::timestamptz + (i * $5::float8) * interval '1 second'
FROM generate_series($1::bigint, $2::bigint - 1) AS i
"""
_LOAD_SESSIONS = """
INSERT INTO sessions (tenant, session_id, tokens_used, message_count, created_at, updated_at)
SELECT 'bench', $2 || i, 0, 0, now(), now() FROM generate_series(0, $1 - 1) AS i
ON CONFLICT DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class PlanReport:
    rows: int
    baseline_rows: int
    window: int
    small_ms: float
    large_ms: float
    plans: dict[str, list[str]]
    load_s: float
    prune_batches: int
    prune_rows: int
    prune_batch_ms: float

    @property
    def ratio(self) -> float:
        return ratio(self.large_ms, self.small_ms)

    @property
    def index_scans(self) -> bool:
        return all(
            any("Index" in node for node in nodes) and not any("Seq Scan" in n for n in nodes)
            for nodes in self.plans.values()
        )

    def render(self) -> str:
        lines = [
            f"restore of one session (row + last {self.window} messages), median of timed runs:",
            f"  {self.baseline_rows:,} rows: {self.small_ms:.3f} ms;"
            f" {self.baseline_rows + self.rows:,} rows: {self.large_ms:.3f} ms;"
            f" ratio to baseline {self.ratio:.2f}",
            f"  plans are index scans only: {self.index_scans}",
        ]
        for name, nodes in self.plans.items():
            lines.append(f"  {name}: {' > '.join(nodes)}")
        lines.append(f"loading {self.rows:,} rows took {self.load_s:.1f} s")
        lines.append(
            f"pruning: {self.prune_rows:,} messages in {self.prune_batches} batches of"
            f" {BATCH_SIZE:,}, median {self.prune_batch_ms:.1f} ms per batch"
        )
        return "\n".join(lines)


def _nodes(plan: dict[str, Any]) -> list[str]:
    name = plan["Node Type"]
    if "Index Name" in plan:
        name += f" ({plan['Index Name']})"
    out = [name]
    for child in plan.get("Plans", []):
        out += _nodes(child)
    return out


PROBES = 200
PROBE_MESSAGES = 100


async def _timed_restore(conn: asyncpg.Connection, window: int, runs: int) -> float:
    """Median time of ``runs`` restores, after as many untimed ones (a warm cache both times)."""
    times = []
    for i in range(-runs, runs):
        sid = f"p{(i * 7919) % PROBES}"
        start = time.perf_counter()
        await conn.fetchrow(SESSION_ROW, "bench", sid)
        await conn.fetch(WINDOW, "bench", sid, window)
        if i >= 0:
            times.append((time.perf_counter() - start) * 1000)
    return median(times)


async def measure(
    stores: Stores, *, rows: int, sessions: int, window: int, runs: int
) -> PlanReport:
    conn = await asyncpg.connect(stores.pg_dsn)
    try:
        await migrate(conn)
        await conn.execute("SET synchronous_commit = off")
        start_at = datetime.now(UTC) - timedelta(days=DAYS)
        step_s = DAYS * 86400 / rows
        baseline_rows = PROBES * PROBE_MESSAGES
        await conn.execute(_LOAD_SESSIONS, PROBES, "p")
        recent = datetime.now(UTC) - timedelta(days=1)
        await conn.execute(_LOAD_MESSAGES, 0, baseline_rows, PROBES, recent, 0.1, "p")
        await conn.execute("ANALYZE")
        small_ms = await _timed_restore(conn, window, runs)
        load_start = time.perf_counter()
        await conn.execute(_LOAD_SESSIONS, sessions, "s")
        chunk = 250_000
        for lo in range(0, rows, chunk):
            await conn.execute(
                _LOAD_MESSAGES, lo, min(lo + chunk, rows), sessions, start_at, step_s, "s"
            )
        await conn.execute("ANALYZE")
        load_s = time.perf_counter() - load_start
        large_ms = await _timed_restore(conn, window, runs)
        plans = {}
        for name, sql, args in (
            ("session row", SESSION_ROW, ("bench", "p42")),
            ("window", WINDOW, ("bench", "p42", window)),
        ):
            explained = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
            doc = json.loads(explained) if isinstance(explained, str) else explained
            plans[name] = _nodes(doc[0]["Plan"])
        # Retention cutting off the oldest ~2 % of messages: one pass, timed per batch.
        cutoff = start_at + timedelta(days=DAYS * 0.02)
        batch_ms, pruned = [], 0
        while True:
            t0 = time.perf_counter()
            status = await conn.execute(BATCHES["messages"], cutoff, BATCH_SIZE)
            batch_ms.append((time.perf_counter() - t0) * 1000)
            deleted = int(status.rsplit(" ", 1)[1])
            pruned += deleted
            if deleted < BATCH_SIZE:
                break
    finally:
        await conn.close()
    return PlanReport(
        rows=rows,
        baseline_rows=baseline_rows,
        window=window,
        small_ms=small_ms,
        large_ms=large_ms,
        plans=plans,
        load_s=load_s,
        prune_batches=len(batch_ms),
        prune_rows=pruned,
        prune_batch_ms=median(batch_ms),
    )


def main(argv: list[str] | None = None, stores: Stores | None = None) -> PlanReport:
    parser = argparse.ArgumentParser(prog="python -m bench.restore_plan", description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=50, help="messages restored per session")
    parser.add_argument("--runs", type=int, default=200, help="timed restores per size")
    args = parser.parse_args(argv)
    with stores_or_temporary(stores) as made:
        report = asyncio.run(
            measure(
                made, rows=args.rows, sessions=args.sessions, window=args.window, runs=args.runs
            )
        )
    print(report.render())
    sys.stdout.flush()
    return report


if __name__ == "__main__":
    main()
