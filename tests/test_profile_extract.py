"""What a user says about themselves is taken only when it is an explicit statement about them now."""

from __future__ import annotations

import pytest

from sidecar.profile.extract import ProfileExtractor

STATEMENTS: list[tuple[str, dict[str, str]]] = [
    # where the user lives or is staying
    ("我住在北京", {"home_location": "北京"}),
    ("我家在上海。", {"home_location": "上海"}),
    ("我现在在上海出差", {"home_location": "上海"}),
    ("我目前住在深圳", {"home_location": "深圳"}),
    ("我搬到杭州了", {"home_location": "杭州"}),
    ("我常驻广州", {"home_location": "广州"}),
    ("我在成都工作", {"home_location": "成都"}),
    ("我现在人在东京", {"home_location": "东京"}),
    ("现在住在深圳", {"home_location": "深圳"}),
    ("我住在北京的朝阳区", {"home_location": "北京"}),
    ("I live in Berlin", {"home_location": "Berlin"}),
    ("I'm based in London.", {"home_location": "London"}),
    ("I moved to Tokyo", {"home_location": "Tokyo"}),
    ("I just moved to San Francisco.", {"home_location": "San Francisco"}),
    ("I am currently living in Paris", {"home_location": "Paris"}),
    ("I'm in Tokyo for work", {"home_location": "Tokyo"}),
    ("I am in New York right now", {"home_location": "New York"}),
    ("I'm staying in Rome this week", {"home_location": "Rome"}),
    ("I recently relocated to Madrid", {"home_location": "Madrid"}),
    ("My home is in Chicago", {"home_location": "Chicago"}),
    ("I live in Smallville", {"home_location": "Smallville"}),
    ("I live in St. Louis", {"home_location": "St. Louis"}),
    ("Im based in Paris", {"home_location": "Paris"}),
    ("I'm currently in Shanghai", {"home_location": "Shanghai"}),
    ("What should I wear? I live in Oslo.", {"home_location": "Oslo"}),
    ("我目前在深圳工作", {"home_location": "深圳"}),
    ("Hi! I live in Boston, what's the weather?", {"home_location": "Boston"}),
    # units
    ("请用华氏度", {"units": "imperial"}),
    ("以后用摄氏度", {"units": "metric"}),
    ("温度用华氏", {"units": "imperial"}),
    ("我习惯用公制", {"units": "metric"}),
    ("能不能用华氏度？", {"units": "imperial"}),
    ("use Fahrenheit", {"units": "imperial"}),
    ("metric please", {"units": "metric"}),
    ("Please use Celsius.", {"units": "metric"}),
    ("Could you use Fahrenheit please?", {"units": "imperial"}),
    ("I prefer miles", {"units": "imperial"}),
    ("Fahrenheit please", {"units": "imperial"}),
    ("give me temperatures in Fahrenheit", {"units": "imperial"}),
    ("switch to metric", {"units": "metric"}),
    ("Set units to metric", {"units": "metric"}),
    ("Temperatures in Celsius please", {"units": "metric"}),
    ("I'd prefer Celsius", {"units": "metric"}),
    ("Use km please", {"units": "metric"}),
    # the name to use
    ("叫我小王", {"name": "小王"}),
    ("你可以叫我老李", {"name": "老李"}),
    ("我叫张伟", {"name": "张伟"}),
    ("我的名字是李娜", {"name": "李娜"}),
    ("我的名字叫王小明", {"name": "王小明"}),
    ("我是小王", {"name": "小王"}),
    ("以后请叫我Sam", {"name": "Sam"}),
    ("call me Sam", {"name": "Sam"}),
    ("My name is Alice.", {"name": "Alice"}),
    ("You can call me Bob", {"name": "Bob"}),
    ("I go by Jim", {"name": "Jim"}),
    ("Please call me Dr. Smith", {"name": "Dr. Smith"}),
    ("你好，我叫李雷", {"name": "李雷"}),
    # language
    ("请用中文回答", {"language": "zh"}),
    ("用英文回复我", {"language": "en"}),
    ("以后说中文吧", {"language": "zh"}),
    ("answer in English", {"language": "en"}),
    ("please reply in Chinese", {"language": "zh"}),
    ("Can you answer in English?", {"language": "en"}),
    ("I prefer English", {"language": "en"}),
    ("Speak Chinese please", {"language": "zh"}),
    ("Please answer in English from now on", {"language": "en"}),
    ("请讲中文", {"language": "zh"}),
    ("以后都用英文回答我", {"language": "en"}),
    ("answer me in Chinese", {"language": "zh"}),
    ("I'd like answers in English", {"language": "en"}),
    ("Reply in Spanish please", {"language": "es"}),
    # several in one message
    ("我住在北京，请用华氏度", {"home_location": "北京", "units": "imperial"}),
    ("I live in Berlin. Call me Max.", {"home_location": "Berlin", "name": "Max"}),
]

NOT_STATEMENTS: list[str] = [
    # questions
    "do you live in Paris?",
    "Where do I live?",
    "Do I live in Berlin?",
    "你住在哪里？",
    "你住在北京吗？",
    "北京天气怎么样",
    "北京天气怎么样？",
    "明天上海会下雨吗",
    "What's the weather in Tokyo tomorrow?",
    "what is my name?",
    "我叫什么名字？",
    "do you use metric?",
    "华氏度和摄氏度怎么换算？",
    "how do you say hello in Chinese?",
    "你会说中文吗？",
    "搬到上海要多少钱？",
    # other people
    "my friend lives in Rome",
    "我朋友住在罗马",
    "My sister is based in Madrid",
    "He moved to Tokyo",
    "他搬到上海了",
    "住在上海的人很多",
    "my friend's name is Tom",
    "his name is Bob",
    "他叫我小王",
    "我朋友叫小李",
    "Americans use Fahrenheit",
    "my mother speaks French",
    # the past, negations, wishes and hypotheses
    "I was in Berlin last year",
    "I was living in Berlin in 2019",
    "I used to live in Paris",
    "我去年住在柏林",
    "我以前在上海工作",
    "我在北京的时候很开心",
    "I don't live in Berlin",
    "我不住在北京",
    "我不喜欢用华氏度",
    "If I lived in Oslo, would it be cold?",
    "如果我住在北京会怎样",
    "I want to travel to Paris",
    "我想去北京旅游",
    # words that look like a fact and are not
    "I'm in a meeting",
    "I'm in love",
    "I'm in trouble",
    "what is 30 Celsius in Fahrenheit?",
    "convert 100 Fahrenheit to Celsius",
    "华氏度是多少",
    "北京现在多少华氏度",
    "call me tomorrow",
    "call me back later",
    "我叫外卖",
    "我是学生",
    "translate this into English",
    "中文怎么说",
    "我在想北京的天气",
    "Tell me about London",
    "set the alarm to 7",
    "temperatures in Beijing?",
    "Do you speak Chinese?",
    "Is it cold in Berlin where I live?",
    "I'm heading to Paris tomorrow",
    "I will move to Berlin next year",
    "I'm going to live in Rome",
    "I am in the office",
    "我老家是湖南的",
]


@pytest.fixture(scope="module")
def extractor() -> ProfileExtractor:
    return ProfileExtractor()


@pytest.mark.parametrize(("text", "facts"), STATEMENTS)
def test_explicit_statement_is_taken(
    extractor: ProfileExtractor, text: str, facts: dict[str, str]
) -> None:
    assert extractor.extract(text) == facts


@pytest.mark.parametrize("text", NOT_STATEMENTS)
def test_non_statement_gives_nothing(extractor: ProfileExtractor, text: str) -> None:
    assert extractor.extract(text) == {}


def test_the_phrasings_cover_both_languages() -> None:
    han = [t for t, _ in STATEMENTS if not t.isascii()]
    latin = [t for t, _ in STATEMENTS if t.isascii()]
    assert len(STATEMENTS) >= 40
    assert len(han) >= 20
    assert len(latin) >= 20
    assert {fact for _, facts in STATEMENTS for fact in facts} == {
        "home_location",
        "units",
        "language",
        "name",
    }


def test_a_later_statement_in_one_message_wins(extractor: ProfileExtractor) -> None:
    assert extractor.extract("I live in Berlin. Actually I moved to Paris.") == {
        "home_location": "Paris"
    }
    assert extractor.extract("我住在北京。现在搬到上海了") == {"home_location": "上海"}
    assert extractor.extract("use Celsius. No wait, use Fahrenheit") == {"units": "imperial"}
