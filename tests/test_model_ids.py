"""Ids and timestamps the session model makes for every turn: what PostgreSQL's ``uuid`` and
``timestamptz`` columns, and clients reading the history, expect of them."""

from __future__ import annotations

import dataclasses
import multiprocessing
import random
import time
import uuid
from datetime import UTC, datetime

import orjson

from sidecar.session.model import (
    Message,
    SessionKey,
    new_message,
    random_uuid4,
    turn_ids,
    utc_now_iso,
)


def test_random_ids_are_version_4_uuids_and_never_repeat() -> None:
    made = [random_uuid4() for _ in range(20_000)]
    assert len(set(made)) == len(made)
    for text in made:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # canonical form: lower-case, hyphens in place
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_a_turn_without_idempotency_key_gets_three_distinct_ids() -> None:
    ids = turn_ids(SessionKey("t", "s"), None)
    assert len(set(ids)) == 3
    assert ids != turn_ids(SessionKey("t", "s"), None)


def test_ids_do_not_repeat_when_the_process_seeds_random_or_forks() -> None:
    # Another library seeding the global generator must not make two processes draw the same
    # row ids (they are primary keys in PostgreSQL).
    random.seed(7)
    first = random_uuid4()
    random.seed(7)
    assert random_uuid4() != first
    # Nor may a forked worker draw its parent's ids.
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        in_child = pool.apply(_ids_drawn)
    assert set(in_child).isdisjoint(_ids_drawn())


def _ids_drawn() -> list[str]:
    return [random_uuid4() for _ in range(100)]


def test_timestamps_are_utc_iso_with_milliseconds_and_the_current_time() -> None:
    before = datetime.now(UTC)
    stamp = utc_now_iso()
    after = datetime.now(UTC)
    assert len(stamp) == len("2026-11-29T23:58:28.123Z")
    assert stamp.endswith("Z")
    parsed = datetime.fromisoformat(stamp)
    # Milliseconds are truncated, as isoformat(timespec="milliseconds") does.
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= parsed <= after
    time.sleep(0.002)
    assert utc_now_iso() > stamp  # the cached second is not reused for a later moment


def test_a_message_renumbered_is_the_message_made_with_that_seq() -> None:
    made = new_message("assistant", "Sunny in Paris tomorrow", 5)
    moved = made.with_seq(41)
    assert moved == Message(41, made.id, made.role, made.content, made.timestamp, made.tokens)
    # The history entry the window splices into the forwarded body is the same bytes.
    assert (
        moved.history_json
        == Message(41, made.id, "assistant", made.content, made.timestamp, 5).history_json
    )
    assert made.seq != 41  # the original is untouched


def test_a_message_changed_by_replace_carries_its_own_history_entry() -> None:
    made = new_message("user", "Paris?", 2)
    changed = dataclasses.replace(made, content="Berlin?")
    assert orjson.loads(changed.history_json)["content"] == "Berlin?"
