"""The forwarded request built while the load's round trip is out, from the copy this process
holds: used when the load confirms that copy, built again after the load when it does not or
when building ahead failed (real Redis, PostgreSQL, an in-process sidecar)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from sidecar.context import RulesExtractor
from sidecar.turns.prepare import Asked, Question
from tests.harness import FakeUpstream, answer_text
from tests.turns import post_turn


class Counted:
    """``RulesExtractor.resolve_sync`` counted, failing the calls listed in ``fail``."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail: set[int] = set()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = RulesExtractor.resolve_sync

        def resolve_sync(extractor: RulesExtractor, query: str, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls in self.fail:
                raise RuntimeError("the context engine failed on this call")
            return real(extractor, query, **kwargs)

        monkeypatch.setattr(RulesExtractor, "resolve_sync", resolve_sync)


async def test_a_warm_turn_is_resolved_once_and_a_failed_build_ahead_is_built_again(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolve = Counted()
    resolve.install(monkeypatch)
    sidecar = await start_sidecar()
    sid = "ahead"
    assert (await post_turn(http, sidecar.url, "weather in Paris today?", sid)).status == 200

    # Warm: the copy held here is current, so the request built ahead from it is the one sent
    # (the query is resolved once, not again after the load).
    before = resolve.calls
    assert (await post_turn(http, sidecar.url, "and in Lyon?", sid)).status == 200
    assert resolve.calls == before + 1
    sent = upstream.requests_to("/api/tasks")[-1].json
    assert [m["content"] for m in sent["history"]] == [
        "weather in Paris today?",
        answer_text("weather in Paris today?"),
    ]

    # Building ahead fails: the turn goes on, built again after the load, whole.
    resolve.fail = {resolve.calls + 1}
    answered = await post_turn(http, sidecar.url, "what about tomorrow?", sid)
    assert answered.status == 200
    assert resolve.calls == before + 3
    sent = upstream.requests_to("/api/tasks")[-1].json
    history = sent["history"]
    assert [m["role"] for m in history] == ["user", "assistant"] * 2
    assert [m["content"] for m in history][::2] == ["weather in Paris today?", "and in Lyon?"]
    assert sent["context"]["location"] == "Lyon"


async def test_a_question_half_that_fails_while_the_upstream_answers_is_made_again(
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The user's half of the turn (ids, the stored message) is made while the upstream answers;
    # when that fails, it is made again as the turn is built, and the turn is recorded whole.
    real = Asked.of.__func__  # type: ignore[attr-defined]
    calls: list[str] = []

    def of(cls: type[Asked], question: Question) -> Asked:
        calls.append(question.query)
        if len(calls) == 1:
            raise RuntimeError("making the question's half failed")
        return real(cls, question)  # type: ignore[no-any-return]

    monkeypatch.setattr(Asked, "of", classmethod(of))
    sidecar = await start_sidecar()
    sid = "half-again"
    assert (await post_turn(http, sidecar.url, "weather in Paris today?", sid)).status == 200
    assert calls == ["weather in Paris today?"] * 2
    assert (await post_turn(http, sidecar.url, "and tomorrow?", sid)).status == 200
    history = upstream.requests_to("/api/tasks")[-1].json["history"]
    assert [m["content"] for m in history] == [
        "weather in Paris today?",
        answer_text("weather in Paris today?"),
    ]
