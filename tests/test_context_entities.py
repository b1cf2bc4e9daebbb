"""Places, dates and topics found in single messages."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from sidecar.context import RulesExtractor, load_gazetteer
from sidecar.context.timeexpr import find_times

NOW = datetime(2025, 6, 4, 4, 0, tzinfo=UTC)  # Wednesday; 12:00 in Shanghai, Tuesday 21:00 in LA
TODAY = date(2025, 6, 4)
EXTRACTOR = RulesExtractor(extra_topics={"traffic": ["路况", "traffic"]})


def entities(
    query: str, last_assistant: str | None = None, tz: str = "Asia/Shanghai"
) -> dict[str, Any]:
    res = EXTRACTOR.resolve_sync(
        query, context={}, last_assistant=last_assistant, timezone=tz, now=NOW
    )
    return dict(res.entities)


def test_gazetteer_size_and_key_names() -> None:
    gaz = load_gazetteer()
    assert len(gaz) > 50_000
    assert gaz.han["巴黎"] == "Paris"
    assert gaz.han["门洛帕克"] == "Menlo Park"
    assert gaz.han["阿罕布拉"] == "Alhambra"
    assert gaz.latin["alhambra"] == "Alhambra"
    assert gaz.latin["menlo park"] == "Menlo Park"
    assert gaz.han["法国"] == "France"
    assert load_gazetteer() is gaz  # loaded once


@pytest.mark.parametrize(
    ("query", "place"),
    [
        ("今天巴黎天气怎么样", "巴黎"),
        ("明天门洛帕克会下雨吗", "门洛帕克"),
        ("weather in San Francisco", "San Francisco"),
        ("is it cold in new york today", "new york"),
        ("will it snow in Menlo Park?", "Menlo Park"),
        ("forecast for alhambra", "alhambra"),
        ("I'm flying to Nice on Friday", "Nice"),
        ("Is it sunny in Reading?", "Reading"),
        ("what's it like in downtown chicago", "downtown chicago"),
        ("how hot is Zürich this week", "Zürich"),
        ("法国下周天气", "法国"),
        ("北京市明天气温", "北京市"),
    ],
)
def test_places(query: str, place: str) -> None:
    assert entities(query).get("location") == place


@pytest.mark.parametrize(
    "query",
    [
        "nice weather today",
        "that was a nice reading of the poem",
        "my mobile is broken, why?",
        "there is hope, of course",
        "we visited a temple and saw the police",
        "split the list in two",
        "it is normal to feel cold in march",
        "may I ask something",
        "the best of most things goes to man",
        "明天开会",
        "后天见",
        "我们明天去公园",
        "东方的天空很美",
        "世界和平",
        "以前天气很好",
        "今天心情不错",
        "给我讲个笑话",
        "write a function that sorts a list",
    ],
)
def test_no_place_in_ordinary_text(query: str) -> None:
    assert "location" not in entities(query)


def test_ambiguous_chinese_name_with_cue_counts() -> None:
    assert entities("大同明天天气怎么样")["location"] == "大同"
    assert "location" not in entities("大同小异")


def test_common_word_city_as_answer_to_which_city() -> None:
    assert entities("Nice.", last_assistant="Which city?")["location"] == "Nice"
    assert "location" not in entities("Nice.", last_assistant="Anything else?")


@pytest.mark.parametrize(
    ("reply", "question", "place"),
    [
        ("巴黎", "您想查询哪个城市？", "巴黎"),
        ("我在乌镇", "请问您在哪里？", "乌镇"),
        (
            "Seatlle, will it be windy?",
            "What city are you wanting to know the weather for?",
            "Seatlle",
        ),
        ("San Mateo.", "What city are you interested in?", "San Mateo"),
        ("Please check for Boston.", "What city would you like today's forecast for?", "Boston"),
        (
            "I need it for New York.",
            "What city would you like weather information about?",
            "New York",
        ),
    ],
)
def test_clarification_answers(reply: str, question: str, place: str) -> None:
    assert entities(reply, last_assistant=question)["location"] == place


@pytest.mark.parametrize("reply", ["不知道", "随便", "thanks", "no idea", "yes"])
def test_refusals_are_not_places(reply: str) -> None:
    assert "location" not in entities(reply, last_assistant="哪个城市? / Which city?")


@pytest.mark.parametrize(
    ("text", "expr", "iso"),
    [
        ("今天", "今天", "2025-06-04"),
        ("明天呢", "明天", "2025-06-05"),
        ("后天", "后天", "2025-06-06"),
        ("大后天", "大后天", "2025-06-07"),
        ("昨天", "昨天", "2025-06-03"),
        ("今晚", "今晚", "2025-06-04"),
        ("明早", "明早", "2025-06-05"),
        ("周五", "周五", "2025-06-06"),
        ("周一", "周一", "2025-06-09"),
        ("星期三", "星期三", "2025-06-04"),
        ("礼拜天", "礼拜天", "2025-06-08"),
        ("下周三", "下周三", "2025-06-11"),
        ("这周一", "这周一", "2025-06-09"),  # this week's Monday is past: the coming one
        ("这周末", "这周末", "2025-06-07"),
        ("周末", "周末", "2025-06-07"),
        ("下周末", "下周末", "2025-06-14"),
        ("下周", "下周", "2025-06-09"),
        ("6月10日", "6月10日", "2025-06-10"),
        ("三月三日", "三月三日", "2026-03-03"),
        ("15号", "15号", "2025-06-15"),
        ("3号", "3号", "2025-07-03"),
        ("today", "today", "2025-06-04"),
        ("tomorrow", "tomorrow", "2025-06-05"),
        ("tonight", "tonight", "2025-06-04"),
        ("the day after tomorrow", "the day after tomorrow", "2025-06-06"),
        ("yesterday", "yesterday", "2025-06-03"),
        ("on Tuesday", "Tuesday", "2025-06-10"),
        ("next Monday", "next Monday", "2025-06-09"),
        ("this Friday", "this Friday", "2025-06-06"),
        ("this weekend", "this weekend", "2025-06-07"),
        ("next week", "next week", "2025-06-09"),
        ("this week", "this week", "2025-06-04"),
        ("right now", "right now", "2025-06-04"),
        ("March 3", "March 3", "2026-03-03"),
        ("June 10th", "June 10th", "2025-06-10"),
        ("3/14", "3/14", "2026-03-14"),
        ("2026-05-01", "2026-05-01", "2026-05-01"),
        ("today's forecast", "today", "2025-06-04"),
        ("today and tomorrow", "today and tomorrow", "2025-06-04"),
    ],
)
def test_time_expressions(text: str, expr: str, iso: str) -> None:
    found = find_times(text, TODAY)
    assert found, text
    assert found[0].expression == expr
    assert found[0].date.isoformat() == iso


def test_weekend_on_a_sunday_is_today() -> None:
    sunday = date(2025, 6, 8)
    assert find_times("this weekend", sunday)[0].date == sunday
    assert find_times("这周末", sunday)[0].date == sunday


@pytest.mark.parametrize(
    "text", ["the sun is out", "I sat down", "一周", "我们以前天天见", "may I"]
)
def test_words_that_are_not_times(text: str) -> None:
    assert find_times(text, TODAY) == []


def test_timezone_changes_the_date() -> None:
    shanghai = entities("明天天气", tz="Asia/Shanghai")
    los_angeles = entities("明天天气", tz="America/Los_Angeles")
    assert shanghai["date"] == "2025-06-05"
    assert los_angeles["date"] == "2025-06-04"
    assert shanghai["time_expression"] == los_angeles["time_expression"] == "明天"


def test_naive_now_is_utc() -> None:
    res = EXTRACTOR.resolve_sync(
        "today",
        context={},
        last_assistant=None,
        timezone="Asia/Tokyo",
        now=datetime(2025, 6, 4, 20, 0),
    )
    assert res.entities["date"] == "2025-06-05"


@pytest.mark.parametrize(
    "query",
    [
        "天气怎么样",
        "明天气温多少度",
        "会下雨吗",
        "今天冷不冷",
        "weather please",
        "will it snow",
        "is it humid",
        "do I need an umbrella",
        "temperature tomorrow",
        "how many degrees",
    ],
)
def test_weather_topic(query: str) -> None:
    assert entities(query).get("topic") == "weather"


@pytest.mark.parametrize("query", ["热门电影推荐", "他很冷静", "这个风格不错", "tell me a joke"])
def test_not_weather(query: str) -> None:
    assert "topic" not in entities(query)


def test_extra_topics_from_config() -> None:
    assert entities("明天深圳路况")["topic"] == "traffic"
    assert entities("traffic in Boston")["topic"] == "traffic"
    plain = RulesExtractor()
    res = plain.resolve_sync(
        "明天深圳路况", context={}, last_assistant=None, timezone="UTC", now=NOW
    )
    assert "topic" not in res.entities


@pytest.mark.parametrize(("keyword", "text"), [("ſun", "sun in Oslo"), ("sun", "ſun in Oslo")])
def test_a_configured_keyword_matched_under_another_case_spelling_names_its_topic(
    keyword: str, text: str
) -> None:
    # Case-insensitive matching pairs spellings .lower() does not (the long s): the turn
    # must still resolve, and the topic is the keyword's.
    extractor = RulesExtractor(extra_topics={"road": [keyword]})
    res = extractor.resolve_sync(text, context={}, last_assistant=None, timezone="UTC", now=NOW)
    assert res.entities.get("topic") == "road"
