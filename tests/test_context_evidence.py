"""Places by evidence, Traditional Chinese, relative dates and follow-ups outside weather."""

from __future__ import annotations

from datetime import UTC, date, datetime
from importlib import resources
from typing import Any

import pytest

from sidecar.context import RulesExtractor, load_gazetteer
from sidecar.context.entities import _LATIN_WORD
from sidecar.context.placelike import load_placelike
from sidecar.context.script import to_simplified
from sidecar.context.timeexpr import find_times

NOW = datetime(2025, 6, 4, 4, 0, tzinfo=UTC)  # Wednesday, 12:00 in Shanghai
SATURDAY = datetime(2025, 6, 7, 4, 0, tzinfo=UTC)
TODAY = date(2025, 6, 4)
EXTRACTOR = RulesExtractor()


def play(*turns: str, now: datetime = NOW) -> list[tuple[dict[str, Any], str | None]]:
    """Each turn's stored context after it, and its completed query."""
    context: dict[str, Any] = {}
    out = []
    for query in turns:
        res = EXTRACTOR.resolve_sync(
            query, context=context, last_assistant="OK.", timezone="Asia/Shanghai", now=now
        )
        context.update(res.entities)
        out.append((dict(context), res.completed_query))
    return out


def _listed_names() -> list[str]:
    raw = resources.files("sidecar.context").joinpath("data", "placelike.tsv").read_text("utf-8")
    rows = [line.split("\t") for line in raw.splitlines() if line and not line.startswith("#")]
    return [name for name, *_ in rows]


def test_every_listed_name_has_a_kind_and_a_source() -> None:
    raw = resources.files("sidecar.context").joinpath("data", "placelike.tsv").read_text("utf-8")
    for line in raw.splitlines():
        if line and not line.startswith("#"):
            name, kind, match, source = line.split("\t")
            assert name, line
            assert kind, line
            assert match in ("any", "exact"), line
            assert source.startswith("Wikipedia"), line


@pytest.mark.parametrize("name", _listed_names())
def test_no_listed_brand_food_or_product_becomes_a_location(name: str) -> None:
    sentence = f"我喜欢{name}" if not name.isascii() else f"I really like {name} a lot"
    ((ctx, _),) = play(sentence)
    assert "location" not in ctx, f"{sentence!r} gave {ctx.get('location')!r}"


@pytest.mark.parametrize(
    ("turns", "location"),
    [
        (("明天广州天气怎么样", "我想吃北京烤鸭"), "广州"),
        (("明天广州天气怎么样", "中国移动的客服电话是多少"), "广州"),
        (("明天广州天气怎么样", "韩国化妆品哪个牌子好"), "广州"),
        (("weather in Chicago today", "how long do I roast a turkey?"), "Chicago"),
        (("weather in Chicago today", "should I buy a Canada Goose jacket?"), "Chicago"),
        (("weather in Chicago today", "I need a taxi to the airport"), "Chicago"),
    ],
)
def test_place_like_words_never_replace_the_city(turns: tuple[str, ...], location: str) -> None:
    *_, (ctx, _) = play(*turns)
    assert ctx["location"] == location


def test_a_capitalised_country_is_still_a_place() -> None:
    ((ctx, _),) = play("what's the weather in Turkey next week?")
    assert ctx["location"] == "Turkey"


def test_everyday_words_that_name_small_towns_need_a_capital() -> None:
    common = load_placelike().common_words
    assert {"airport", "hope"} <= common
    assert "boston" not in common  # a major city stays a place even in lowercase
    ((ctx, _),) = play("is it raining in boston")
    assert ctx["location"] == "boston"


@pytest.mark.parametrize(
    ("query", "location"),
    [
        ("what's the weather like in Paris, Texas tomorrow?", "Paris, Texas"),
        ("apartments for rent in Portland, Maine", "Portland, Maine"),
        ("美国的巴黎明天天气怎么样", "美国的巴黎"),
        ("德州巴黎明天热吗", "德州巴黎"),
        ("美国的阿罕布拉明天热吗", "美国的阿罕布拉"),  # a small place: the region is its evidence
    ],
)
def test_qualified_places_are_kept_whole(query: str, location: str) -> None:
    ((ctx, _),) = play(query)
    assert ctx["location"] == location


def test_a_list_of_places_is_not_a_qualified_place() -> None:
    ((ctx, _),) = play("flights to Portland, or Seattle?")
    assert ctx["location"] == "Portland"


def test_traditional_chinese_is_matched_and_kept_in_its_script() -> None:
    (first, _), (second, completed) = play("下週三臺中會下雨嗎", "那高雄呢")
    assert first["location"] == "臺中"
    assert first["date"] == "2025-06-11"
    assert first["time_expression"] == "下週三"
    assert second["location"] == "高雄"
    assert completed == "下週三高雄的天氣"


@pytest.mark.parametrize(
    "frame",
    [
        "I really like {} a lot",
        "{}, in Paris?",
        "Flights to {} from Nokia",
        "the {}'s 2 stores",  # a digit: this module cuts its own words
        "{}+ or c++ in Tel-Aviv",  # a "+": the same
        "in the {}",
    ],
)
def test_listed_names_are_found_alike_in_words_cut_by_the_place_matcher(frame: str) -> None:
    # The place matcher hands its own words over instead of having the message cut again.
    listed = load_placelike()
    for name in [n for n in _listed_names() if n.isascii()]:
        text = frame.format(name)
        words = list(_LATIN_WORD.finditer(text))
        lowered = [w.group(0).lower() for w in words]
        assert listed.ascii_spans(text, words, lowered) == listed.spans(text), text


def test_simplified_matching_keeps_spans() -> None:
    text = "大後天臺北會不會下雨"
    assert len(to_simplified(text)) == len(text)
    gaz = load_gazetteer()
    assert gaz.han["丽江"] == "Lijiang"  # GeoNames spells it 麗江 only


@pytest.mark.parametrize(
    ("text", "expr", "iso"),
    [
        ("三天后去成都", "三天后", "2025-06-07"),
        ("十天以后", "十天以后", "2025-06-14"),
        ("两周后呢", "两周后", "2025-06-18"),
        ("10天以后", "10天以后", "2025-06-14"),
        ("any flights in 3 days?", "in 3 days", "2025-06-07"),
        ("in two weeks", "in two weeks", "2025-06-18"),
        ("5 days from now", "5 days from now", "2025-06-09"),
        ("国庆去哪玩", "国庆", "2025-10-01"),
        ("中秋节回家", "中秋节", "2025-10-06"),
        ("flights for Christmas", "Christmas", "2025-12-25"),
    ],
)
def test_counted_and_named_days(text: str, expr: str, iso: str) -> None:
    (match,) = find_times(text, TODAY)
    assert (match.expression, match.date.isoformat()) == (expr, iso)


@pytest.mark.parametrize(
    ("text", "iso"), [("the day after", "2025-06-12"), ("第二天", "2025-06-12"),
                      ("two days later", "2025-06-13")]
)  # fmt: skip
def test_the_day_after_counts_from_the_date_under_discussion(text: str, iso: str) -> None:
    (match,) = find_times(text, TODAY, anchor=date(2025, 6, 11))
    assert match.date.isoformat() == iso
    assert match.anchored


@pytest.mark.parametrize("text", ["this Friday", "这周五", "本周五", "Friday"])
def test_this_friday_on_a_saturday_is_the_coming_one(text: str) -> None:
    (match,) = find_times(text, date(2025, 6, 7))
    assert match.date.isoformat() == "2025-06-13"


def test_the_day_after_is_completed_with_the_date() -> None:
    *_, (ctx, completed) = play(
        "any cheap flights from Boston to Denver in 3 days?", "what about the day after?"
    )
    assert ctx["date"] == "2025-06-08"
    assert completed == "any cheap flights from Boston to Denver on June 8?"


@pytest.mark.parametrize(
    ("turns", "completed"),
    [
        (("帮我订明天去杭州的酒店", "不对，是苏州"), "帮我订明天去苏州的酒店"),
        (("帮我找一下这周六在厦门的酒店", "不是厦门，是福州"), "帮我找一下这周六在福州的酒店"),
        (("find me a hotel in Lyon for next Friday", "sorry, I meant Lille"),
         "find me a hotel in Lille for next Friday"),
        (("明天苏州博物馆几点开门", "那里后天呢"), "后天苏州博物馆几点开门"),
        (("car rentals in Lisbon for this Saturday?", "what about Porto?"),
         "car rentals in Porto for this Saturday?"),
        (("今晚上海有什么IMAX电影", "杭州呢"), "今晚杭州有什么IMAX电影"),
        (("下周一从台北到花莲的火车票", "花莲到台东呢"), "下周一从花莲到台东的火车票"),
        (("Check gym opening hours in Singapore on Sunday", "what about in KL?"),
         "Check gym opening hours in KL on Sunday"),
    ],
)  # fmt: skip
def test_follow_ups_outside_weather_keep_the_request(
    turns: tuple[str, ...], completed: str
) -> None:
    *_, (_, got) = play(*turns)
    assert got == completed


def test_a_time_alone_after_a_timeless_request_returns_to_the_topic() -> None:
    *_, (_, completed) = play("后天杭州天气怎么样", "杭州哪里有正宗的兰州拉面", "大后天呢")
    assert completed == "大后天杭州的天气"


@pytest.mark.parametrize(
    "query", ["谢谢", "hey, how are you doing today?", "what's 15% of 80?", "今天心情不好"]
)
def test_chit_chat_after_a_request_is_forwarded_unchanged(query: str) -> None:
    *_, (_, completed) = play("帮我查一下明天从北京飞上海的机票", query)
    assert completed is None


def test_a_new_self_contained_question_is_forwarded_unchanged() -> None:
    *_, (ctx, completed) = play("帮我查下周五从广州去深圳的高铁", "深圳有什么好玩的景点")
    assert completed is None
    assert ctx["location"] == "深圳"


def test_this_friday_asked_on_a_saturday_through_the_engine() -> None:
    ((ctx, _),) = play("any concerts in Berlin this Friday?", now=SATURDAY)
    assert ctx["date"] == "2025-06-13"
