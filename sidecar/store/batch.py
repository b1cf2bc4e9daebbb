"""The batch write of outbox events into PostgreSQL, in the caller's transaction: idempotent
(rows keyed by their ids; session counters grow only by what was inserted) and mindful of
sessions deleted meanwhile."""

from __future__ import annotations

import logging
import math
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from ..errors import SidecarError
from ..frozen import frozen
from . import profiles, seqs
from .keys import user_scope
from .schema import Conn

log = logging.getLogger(__name__)


@frozen
class OutboxEvent:
    """One entry of the outbox stream, decoded."""

    stream: str
    entry_id: str
    kind: Literal["turn", "session"]
    seq: int
    data: dict[str, Any]


def _text(value: str) -> str:
    """PostgreSQL text and jsonb cannot hold NUL; a user's stray NUL must not cost the turn."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _clean(value: Any) -> Any:
    """``value`` with every NUL in its text (keys included) made U+FFFD."""
    # Almost nothing holds a NUL, and one look at the JSON (orjson writes NUL as the escape
    # \u0000) costs a fraction of rebuilding every dict to find out.
    if b"\\u0000" not in orjson.dumps(value):
        return value
    return _cleaned(value)


def _cleaned(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(str(k)): _cleaned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cleaned(v) for v in value]
    return value


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


# Rows go to PostgreSQL as one JSON array each (orjson, in C) and are taken apart there: asyncpg's
# array encoding checks every element of every column in Python, which cost about four times as
# much per row. Timestamps stay the ISO text they were written as. ``{rows}``: the parameter.
_MESSAGES = """
INSERT INTO messages (id, tenant, session_id, seq, role, content, tokens, turn_id, partial, created_at)
SELECT (r->>0)::uuid, r->>1, r->>2, (r->>3)::bigint, r->>4, r->>5, (r->>6)::integer, (r->>7)::uuid,
       (r->>8)::boolean, (r->>9)::timestamptz
FROM jsonb_array_elements({rows}::jsonb) AS r
ON CONFLICT DO NOTHING
"""

_USAGE = """
INSERT INTO token_usage (id, tenant, session_id, model, prompt_tokens, completion_tokens,
                         total_tokens, cost, provider, created_at)
SELECT (r->>0)::uuid, r->>1, r->>2, r->>3, (r->>4)::integer, (r->>5)::integer, (r->>6)::integer,
       (r->>7)::float8, r->>8, (r->>9)::timestamptz
FROM jsonb_array_elements({rows}::jsonb) AS r
ON CONFLICT (id) DO NOTHING
"""

# One row per session, in a stable order (see ``_session_rows``), so no row is updated twice.
_SESSIONS = """
INSERT INTO sessions AS s (tenant, session_id, context, tokens_used, message_count,
                           created_at, updated_at, user_id)
SELECT r->>0, r->>1, r->2, (r->>3)::bigint, (r->>4)::integer, (r->>5)::timestamptz,
       (r->>5)::timestamptz, r->>6
FROM jsonb_array_elements({rows}::jsonb) WITH ORDINALITY AS x(r, n)
ORDER BY n
ON CONFLICT (tenant, session_id) DO UPDATE SET
    context = s.context || EXCLUDED.context,
    user_id = coalesce(s.user_id, EXCLUDED.user_id),
    tokens_used = s.tokens_used + EXCLUDED.tokens_used,
    message_count = s.message_count + EXCLUDED.message_count,
    updated_at = GREATEST(s.updated_at, EXCLUDED.updated_at)
"""

# A batch taken for new: everything in one statement (each round trip costs the writer about
# as much CPU as encoding a hundred rows), the sessions' counters grown by every row, and the
# rows really inserted counted for the caller to check. The inserts run in this order, as the
# separate statements do, so two writers take their locks in the same order.
_WRITE_NEW = f"""
WITH m AS ({_MESSAGES.format(rows="$1")} RETURNING 1),
     u AS ({_USAGE.format(rows="$2")} RETURNING 1),
     s AS ({_SESSIONS.format(rows="$3")})
SELECT (SELECT count(*) FROM m) AS messages, (SELECT count(*) FROM u) AS usage
"""


class RowsNotNew(SidecarError):
    """Some row of a batch written with ``assume_new`` was stored already (the batch was written
    before) or its seq is taken; the caller rolls the transaction back and writes the batch again
    without ``assume_new``."""


_USAGE_ROW = uuid.UUID("0b7c4e52-93d1-5a8f-b6e2-4c1d9f3a7e60")


def usage_row_id(turn_id: str, index: int) -> str:
    """The id of a turn's ``index``-th usage row. The first is the turn's own id (the row that
    tells a replay the turn is stored already); the others follow from it, so a replay writes
    the very same rows."""
    return turn_id if index == 0 else str(uuid.uuid5(_USAGE_ROW, f"{turn_id}:{index}"))


def _usage_rows(d: dict[str, Any]) -> list[list[Any]]:
    """``[model, prompt, completion, total, cost, provider]`` per row; entries written before
    rows had cost and provider carry only the turn's totals."""
    rows = d.get("usage_rows")
    if isinstance(rows, list) and rows:
        return rows
    return [[*d["usage"], None, None]]


def _cost(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value) if math.isfinite(value) else None
    return None


async def write_events(conn: Conn, events: list[OutboxEvent], *, assume_new: bool = False) -> None:
    """Write a batch in the caller's transaction. Idempotent: messages and usage rows are keyed by
    their ids, and session counters grow only by what this call actually inserted.

    ``assume_new``: take every row for new and write the batch in one statement, without asking
    PostgreSQL which ids it inserted (a UUID decoded per row); when one was not inserted after
    all, ``RowsNotNew`` is raised for the caller to roll back and write the batch again without
    it. Nearly every batch is all new: a replay or a taken seq is the exception.
    """
    events = await _drop_deleted(conn, events)
    if not events:
        return
    turns = [e for e in events if e.kind == "turn"]
    msg_rows: list[list[Any]] = []
    use_rows: list[list[Any]] = []
    for e in turns:
        d = e.data
        tenant, sid, turn_id = d["tenant"], d["session_id"], d["turn_id"]
        partial = bool(d.get("partial"))
        seq = e.seq
        for mid, role, content, ts, tokens in d["messages"]:
            # (the question itself was whole: only the answer can be partial)
            msg_rows.append(
                [mid, tenant, sid, seq, role, _text(content), tokens, turn_id,
                 partial and role == "assistant", ts]
            )  # fmt: skip
            seq += 1
        at = d["at"]
        for index, (model, prompt, completion, total, cost, provider) in enumerate(_usage_rows(d)):
            use_rows.append(
                [usage_row_id(turn_id, index), tenant, sid, _text(model), prompt, completion,
                 total, _cost(cost), _text(provider) if isinstance(provider, str) and provider
                 else None, at]
            )  # fmt: skip

    if assume_new:
        counts = Counter((row[1], row[2]) for row in msg_rows)
        sessions = _session_rows(events, {e.data["turn_id"] for e in turns}, counts)
        written = await conn.fetchrow(_WRITE_NEW, msg_rows, use_rows, sessions)
        if written is None or tuple(written) != (len(msg_rows), len(use_rows)):
            raise RowsNotNew("rows stored already or seqs taken")
    else:
        await _write_exactly(conn, events, turns, msg_rows, use_rows)
    stated = [
        (p["tenant"], p["user_id"], _ts(e.data["messages"][0][3]), p["facts"])
        for e in turns
        if isinstance(p := e.data.get("profile"), dict)
    ]
    if stated:
        await profiles.merge_facts(conn, stated)


async def _write_exactly(
    conn: Conn,
    events: list[OutboxEvent],
    turns: list[OutboxEvent],
    msg_rows: list[list[Any]],
    use_rows: list[list[Any]],
) -> None:
    """The rows, asking PostgreSQL which it inserted; then the sessions grown by those."""
    inserted_msgs: Counter[tuple[str, str]] = Counter()
    new_turns: set[str] = set()
    if turns:
        returning = " RETURNING id::text"
        inserted = {
            r[0] for r in await conn.fetch(_MESSAGES.format(rows="$1") + returning, msg_rows)
        }
        left = [row for row in msg_rows if row[0] not in inserted]
        if left:
            # Not inserted: stored already (a batch written twice), or its seq is taken.
            inserted |= await seqs.renumber_clashes(conn, left)
        for row in msg_rows:
            if row[0] in inserted:
                inserted_msgs[(row[1], row[2])] += 1
        new_turns = {r[0] for r in await conn.fetch(_USAGE.format(rows="$1") + returning, use_rows)}
    sessions = _session_rows(events, new_turns, inserted_msgs)
    if sessions:
        await conn.execute(_SESSIONS.format(rows="$1"), sessions)


def _session_rows(
    events: list[OutboxEvent], new_turns: set[str], inserted_msgs: Counter[tuple[str, str]]
) -> list[list[Any]]:
    """Per session: counters from what was inserted now, context patches applied in order."""
    sessions: dict[tuple[str, str], list[Any]] = {}
    for e in events:
        d = e.data
        key = (d["tenant"], d["session_id"])
        at = _ts(d["at"])
        entry = sessions.setdefault(key, [{}, 0, at, None])
        if d.get("user_id"):
            entry[3] = _text(str(d["user_id"]))
        if e.kind == "session":
            entry[0] = {**_clean(d.get("context") or {}), **entry[0]}
            entry[2] = min(entry[2], at)
        elif d["turn_id"] in new_turns:
            entry[0].update(_clean(d.get("context") or {}))
            entry[1] += d["usage"][3]
            entry[2] = max(entry[2], at)
    # A stable order, so two writers never lock the same rows in opposite orders.
    return [
        [tenant, sid, ctx, tokens, inserted_msgs[(tenant, sid)], at, user_id]
        for (tenant, sid), (ctx, tokens, at, user_id) in sorted(sessions.items())
    ]


def _scopes(event: OutboxEvent) -> list[str]:
    """The session scope of an event and, when it states facts, its user's scope."""
    found = [event.data["tenant"]]
    profile = event.data.get("profile")
    if isinstance(profile, dict):
        found.append(user_scope(profile["tenant"], profile["user_id"]))
    return found


def _asked_before(event: OutboxEvent, gone: dict[str, datetime]) -> bool:
    asked = _ts(event.data["messages"][0][3] if event.kind == "turn" else event.data["at"])
    for scope in _scopes(event):
        when = gone.get(scope)
        if when is not None and asked <= when:
            log.info("dropping a write for deleted user scope %s", scope)
            return True
    return False


# The tombstones of a batch's sessions and of its users' scopes, in one round trip.
_DELETED = """
SELECT d.tenant, d.session_id, d.deleted_at FROM deleted_sessions d
JOIN jsonb_array_elements($1::jsonb) AS k ON d.tenant = k->>0 AND d.session_id = k->>1
UNION ALL
SELECT scope, NULL, deleted_at FROM deleted_users WHERE scope = ANY($2::text[])
"""


async def _drop_deleted(conn: Conn, events: list[OutboxEvent]) -> list[OutboxEvent]:
    """Leave out events of sessions (or users) deleted after the event happened."""
    keys = {(e.data["tenant"], e.data["session_id"]) for e in events}
    if not keys:
        return events
    # Only a user's scope (``tenant/user``) can have a user's tombstone.
    scopes = [s for s in {s for e in events for s in _scopes(e)} if "/" in s]
    rows = await conn.fetch(_DELETED, list(keys), scopes)
    if not rows:
        return events
    gone_users = {r["tenant"]: r["deleted_at"] for r in rows if r["session_id"] is None}
    if gone_users:
        events = [e for e in events if not _asked_before(e, gone_users)]
    deleted = {
        (r["tenant"], r["session_id"]): r["deleted_at"] for r in rows if r["session_id"] is not None
    }
    kept = []
    for e in events:
        when = deleted.get((e.data["tenant"], e.data["session_id"]))
        # A turn belongs to the moment it was asked: one asked before the deletion stays out even
        # when its answer came after. Both times are Redis's clock (``asked_ms``); entries of
        # older versions carry only their replica's time.
        if "asked_ms" in e.data:
            asked = datetime.fromtimestamp(e.data["asked_ms"] / 1000, UTC)
        else:
            asked = _ts(e.data["messages"][0][3] if e.kind == "turn" else e.data["at"])
        if when is None or asked > when:
            kept.append(e)
        else:
            log.info(
                "dropping a write for deleted session %s/%s", e.data["tenant"], e.data["session_id"]
            )
    return kept
