"""The in-process copy a commit leaves behind, grown while the commit's round trip is out: it
matches what Redis holds when the commit went as expected, and is not kept when another
replica wrote the session in between (real Redis, PostgreSQL, two in-process replicas)."""

from __future__ import annotations

from typing import Any

import aiohttp

from sidecar.app import REDIS_STORE, SESSIONS
from sidecar.session.cache import Ahead
from sidecar.session.model import SessionKey, SessionSnapshot, Turn, Usage, new_message, turn_ids
from tests.harness import answer_text
from tests.turns import post_turn


def as_stored(snapshot: SessionSnapshot) -> tuple[Any, ...]:
    """What a reader of the copy sees: its version, counters, context and window."""
    window = [(m.seq, m.id, m.role, m.content, m.history_json) for m in snapshot.window]
    return (
        snapshot.version,
        snapshot.last_seq,
        snapshot.message_count,
        snapshot.tokens_used,
        snapshot.context,
        window,
    )


async def test_a_commit_grown_ahead_caches_what_redis_holds_and_a_mispredicted_one_nothing(
    start_sidecar: Any, http: aiohttp.ClientSession
) -> None:
    one, two = await start_sidecar(), await start_sidecar()
    sessions = one.app[SESSIONS]
    store = one.app[REDIS_STORE]
    key = SessionKey("anonymous", "grown-ahead")
    predicted: list[Ahead | None] = []
    grow_ahead = sessions.cache.grow_ahead

    def spy(turn: Turn, history_limit: int) -> Ahead | None:
        predicted.append(ahead := grow_ahead(turn, history_limit))
        return ahead

    sessions.cache.grow_ahead = spy  # type: ignore[method-assign]

    async def in_redis() -> tuple[Any, ...]:
        found = await store.load(key, "", sessions.cfg.history_limit)
        assert found.snapshot is not None
        return as_stored(found.snapshot)

    for query in ("first", "second"):
        assert (await post_turn(http, one.url, query, key.session_id)).status == 200
    # The second commit found the first's copy cached, grew it ahead, and kept that copy.
    assert predicted
    assert predicted[-1] is not None
    entry = sessions.cache.entry(key)
    assert entry is not None
    assert entry[0] is predicted[-1][2]
    assert as_stored(entry[0]) == await in_redis()

    # Another replica records a turn between this one's load and its commit: the commit lands
    # one version later than the copy held here was grown to, which must not be kept.
    assert (await post_turn(http, two.url, "from elsewhere", key.session_id)).status == 200
    behind = sessions.cache.entry(key)
    assert behind is not None
    predicted.clear()
    recorded = await sessions.commit(third(key))
    assert recorded.recorded
    assert predicted
    assert predicted[0] is not None
    assert predicted[0][0] is behind[0]  # grown from the copy held, now one turn behind
    assert sessions.cache.entry(key) is None
    stored = await in_redis()
    assert [m[3] for m in stored[5]] == [
        "first", answer_text("first"),
        "second", answer_text("second"),
        "from elsewhere", answer_text("from elsewhere"),
        "third", "answer to third",
    ]  # fmt: skip
    assert [m[0] for m in stored[5]] == list(range(1, 9))

    # The next turn reads the real window again, and the copy it leaves is Redis's.
    assert (await post_turn(http, one.url, "fourth", key.session_id)).status == 200
    entry = sessions.cache.entry(key)
    assert entry is not None
    assert as_stored(entry[0]) == await in_redis()


def third(key: SessionKey) -> Turn:
    turn_id, user_id, assistant_id = turn_ids(key, None)
    return Turn(
        key=key,
        user=new_message("user", "third", 2, None, user_id),
        assistant=new_message("assistant", "answer to third", 4, None, assistant_id),
        usage=Usage(prompt_tokens=10, completion_tokens=4, total_tokens=14, model="m-1"),
        context_patch={"mood": "curious"},
        turn_id=turn_id,
    )
