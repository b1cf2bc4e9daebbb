"""Follow-up completion over whole conversations, replayed the way the sidecar keeps context."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bench.context_eval import DIALOGUES, EVAL_TOPICS, Dialogue, InProcessSender
from sidecar.context import RulesExtractor

NOW = datetime(2025, 6, 4, 4, 0, tzinfo=UTC)
EXTRACTOR = RulesExtractor(extra_topics=EVAL_TOPICS)


def test_there_are_enough_dialogues() -> None:
    assert len(DIALOGUES) >= 40
    zh = [d for d in DIALOGUES if any("\u4e00" <= ch <= "\u9fff" for ch in d.turns[0][0])]
    assert len(zh) >= 15
    assert len(DIALOGUES) - len(zh) >= 15


@pytest.mark.parametrize("dialogue", DIALOGUES, ids=[d.name for d in DIALOGUES])
async def test_dialogue(dialogue: Dialogue) -> None:
    sender = InProcessSender(dialogue.timezone, dialogue.now, EXTRACTOR)
    last: str | None = None
    for query, reply, expect in dialogue.turns:
        forwarded = await sender.send(query, last)
        last = reply
        for key, want in expect.items():
            got = forwarded.get("resolved_query" if key == "completed" else key)
            assert got == want, f"{query!r}: {key} is {got!r}, expected {want!r}"


def _play(turns: list[tuple[str, str | None]], tz: str = "Asia/Shanghai") -> list[Any]:
    """Play (user, assistant reply) pairs; return each turn's Resolution."""
    context: dict[str, Any] = {}
    last: str | None = None
    out = []
    for query, reply in turns:
        res = EXTRACTOR.resolve_sync(
            query, context=context, last_assistant=last, timezone=tz, now=NOW
        )
        context.update(res.entities)
        out.append(res)
        last = reply
    return out


def _slots(res: Any) -> dict[str, str]:
    """A resolution's entities without the frame (the request follow-ups refer to)."""
    return {k: v for k, v in res.entities.items() if k != "frame"}


def test_seed_conversation() -> None:
    first, second, third = _play(
        [("今天天气怎么样", "您想查询哪个城市？"), ("巴黎", "巴黎今天晴。"), ("那明天呢", None)]
    )
    assert first.completed_query is None
    assert first.entities == {"date": "2025-06-04", "time_expression": "今天", "topic": "weather"}
    assert _slots(second) == {"location": "巴黎"}
    assert second.completed_query == "今天巴黎的天气"
    assert _slots(third) == {"date": "2025-06-05", "time_expression": "明天"}
    assert third.completed_query == "明天巴黎的天气"


def test_entities_hold_only_what_the_query_contributes() -> None:
    _, switch = _play([("明天北京天气怎么样", "晴"), ("上海呢", None)])
    assert switch.entities == {"location": "上海", "frame": "明天上海的天气"}
    assert switch.completed_query == "明天上海的天气"


def test_the_frame_is_the_last_request_and_carries_its_task_words() -> None:
    first, second, chat, third = _play(
        [
            ("帮我查一下明天从北京飞上海的机票", "有十几个航班。"),
            ("后天呢", "也有。"),
            ("谢谢", "不客气。"),
            ("那大后天呢", None),
        ]
    )
    assert first.entities["frame"] == "帮我查一下明天从北京飞上海的机票"
    assert second.completed_query == "帮我查一下后天从北京飞上海的机票"
    assert "frame" not in chat.entities  # chit-chat is no request
    assert third.completed_query == "帮我查一下大后天从北京飞上海的机票"


def test_a_pasted_document_is_not_kept_as_a_frame() -> None:
    (res,) = _play([("明天北京" + "天气很好。" * 100, None)])
    assert "frame" not in res.entities


def test_place_without_a_topic_frame_is_not_completed() -> None:
    (res,) = _play([("巴黎", None)])
    assert _slots(res) == {"location": "巴黎"}
    assert res.completed_query is None


@pytest.mark.parametrize(
    "query",
    ["给我讲个笑话", "write a function that sorts a list", "thanks", "谢谢你", "ok"],
)
def test_non_followups_after_a_weather_frame_are_untouched(query: str) -> None:
    *_, res = _play([("what's the weather in Paris tomorrow?", "Sunny."), (query, None)])
    assert res.completed_query is None


def test_standalone_question_with_own_place_is_untouched() -> None:
    *_, res = _play(
        [("weather in Paris tomorrow", "Sunny."), ("will it rain in Rome today?", None)]
    )
    assert res.completed_query is None
    assert res.entities["location"] == "Rome"


def test_full_question_without_place_gets_the_stored_place() -> None:
    *_, res = _play([("今天西安天气怎么样", "晴"), ("那后天会下雨吗", None)])
    assert res.completed_query == "那后天西安会下雨吗"


def test_stored_context_from_another_topic_is_not_used_for_weather_words() -> None:
    ctx = {"location": "Paris", "topic": "traffic"}
    res = EXTRACTOR.resolve_sync(
        "will it rain tomorrow?", context=ctx, last_assistant=None, timezone="UTC", now=NOW
    )
    assert res.completed_query is None
    assert res.entities["topic"] == "weather"


def test_client_context_keys_are_ignored_and_not_returned() -> None:
    ctx = {"user_tier": "gold", "location": 42, "topic": "weather", "date": "not a date"}
    res = EXTRACTOR.resolve_sync(
        "那明天呢", context=ctx, last_assistant=None, timezone="UTC", now=NOW
    )
    assert set(_slots(res)) == {"date", "time_expression"}
    assert res.completed_query == "明天的天气"


def test_stale_or_bad_timezone_falls_back_to_utc() -> None:
    res = EXTRACTOR.resolve_sync(
        "tomorrow", context={}, last_assistant=None, timezone="Mars/Olympus", now=NOW
    )
    assert res.entities["date"] == "2025-06-05"


async def test_async_resolve_matches_sync() -> None:
    kwargs: dict[str, Any] = {
        "context": {"topic": "weather", "location": "Berlin"},
        "last_assistant": None,
        "timezone": "Europe/Berlin",
        "now": NOW,
    }
    assert await EXTRACTOR.resolve("and tomorrow?", **kwargs) == EXTRACTOR.resolve_sync(
        "and tomorrow?", **kwargs
    )
