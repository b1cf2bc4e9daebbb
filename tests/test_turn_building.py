"""The turn a route records: its question's half (ids, the user's message, the context patch) is
made while the upstream answers when it can be, and the turn must come out the same either way."""

from __future__ import annotations

import dataclasses

from sidecar.session.model import SessionKey, Turn, Usage
from sidecar.turns.capture import Answer
from sidecar.turns.prepare import Asked, Question
from sidecar.turns.recorder import build_turn

KEY = SessionKey("tenant-a", "s-1")
ANSWER = Answer("Sunny, 22 degrees.", Usage(9, 7, 16, "gpt-x"))


def question(query: str, idempotency_key: str | None = "retry-1") -> Question:
    return Question(
        KEY,
        query,
        {"location": "Paris", "note\x00": "a\x00b"},
        idempotency_key,
        "2026-11-30T09:00:00.000Z",
    )


def recorded(turn: Turn) -> tuple[object, ...]:
    """What a turn stores, but the answer's own timestamp (the moment it is built)."""
    return (
        turn.turn_id,
        turn.user,
        (turn.assistant.id, turn.assistant.content, turn.assistant.tokens),
        turn.context_patch,
        turn.usage,
    )


def test_a_turn_built_with_its_half_made_ahead_is_the_turn_built_without() -> None:
    asked = question("and tomorrow?\x00")
    ahead = dataclasses.replace(asked, asked=Asked.of(asked))
    assert recorded(build_turn(ahead, ANSWER)) == recorded(build_turn(asked, ANSWER))


def test_the_half_made_ahead_is_storable_and_keyed_by_the_idempotency_key() -> None:
    half = Asked.of(question("what about\x00 Lyon?"))
    # A NUL would be taken by Redis and refused later by PostgreSQL: replaced before the commit.
    assert half.user.content == "what about\ufffd Lyon?"
    assert half.context_patch == {"location": "Paris", "note\ufffd": "a\ufffdb"}
    assert half.user.timestamp == "2026-11-30T09:00:00.000Z"
    # A retry with the same key makes the same ids, so the turn is stored once.
    again = Asked.of(question("what about\x00 Lyon?"))
    assert (again.turn_id, again.user.id, again.assistant_id) == (
        half.turn_id,
        half.user.id,
        half.assistant_id,
    )
    assert build_turn(dataclasses.replace(question("x"), asked=half), ANSWER).assistant.id == (
        half.assistant_id
    )


def test_without_an_idempotency_key_each_question_gets_its_own_ids() -> None:
    first, second = Asked.of(question("hi", None)), Asked.of(question("hi", None))
    assert len({first.turn_id, first.user.id, first.assistant_id}) == 3
    assert first.turn_id != second.turn_id
