"""Topics of a user's message: the first topic keyword (weather built in, more from config)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from sidecar.context.spans import Span, TopicMatch
from sidecar.context.trie import longest_first

WEATHER_KEYWORDS: tuple[str, ...] = (
    "天气", "气温", "温度", "下雨", "下雪", "多少度", "几度", "刮风", "湿度", "预报", "降雨",
    "降温", "雾霾", "晴天", "阴天", "雷阵雨", "台风", "紫外线", "冷", "热", "晴", "雨", "雪",
    "风", "雾",
    "weather", "forecast", "temperature", "temperatures", "rain", "rainy", "raining", "rains",
    "snow", "snowy", "snowing", "umbrella", "sunny", "cloudy", "clouds", "humid", "humidity",
    "wind", "windy", "hot", "cold", "degrees", "drizzle", "fog", "foggy", "storm", "stormy",
    "hail", "blizzard", "frost", "frosty", "overcast", "clear skies", "misty", "mist", "dew",
    "warm", "chilly", "freezing", "sunshine", "heat", "dry",
)  # fmt: skip

# Everyday compounds in which a one-character weather word means something else.
_ZH_NOT_WEATHER = re.compile(
    r"热门|热情|热点|热心|热爱|热闹|热线|热搜|加热|发热|亲热|冷静|冷门|冷漠|冷笑|风格|风景|风险|"
    r"风扇|作风|风俗|风采|威风|风度|兜风|风味|风水|雪碧|雨果|晴雯"
)


class TopicMatcher:
    """Finds the first topic keyword; weather is built in, more come from config."""

    def __init__(self, topics: Mapping[str, Sequence[str]]) -> None:
        self._keywords: dict[str, str] = {}
        latin: list[str] = []
        han: list[str] = []
        for topic, words in topics.items():
            for word in words:
                # casefold, not lower: IGNORECASE matches "sun" for a keyword "ſun" (long s),
                # and the match must find its keyword back.
                self._keywords.setdefault(word.casefold(), topic)
                (latin if word.isascii() else han).append(word)
        parts = []
        if han:
            parts.append(longest_first(han))
        if latin:
            parts.append(rf"\b(?:{longest_first(latin)})\b")
        self._re = re.compile("|".join(parts) or r"(?!)", re.IGNORECASE)
        # An ASCII message needs only the Latin keywords when no other keyword can match ASCII
        # text: each holds a non-ASCII character without case (a Chinese one), which matches
        # only itself. It is matched lowercased, without IGNORECASE (the trie's letters are
        # lowercase), so the engine skips the branches that cannot fit in one test each.
        self._lower: re.Pattern[str] | None = None
        if all(any(not c.isascii() and c.lower() == c == c.upper() for c in w) for w in han):
            self._lower = re.compile(rf"\b(?:{longest_first(latin)})\b" if latin else r"(?!)")
        self.topics: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in topics.items()}

    def find(self, text: str) -> list[TopicMatch]:
        found = []
        blocked: list[Span] = []
        if not text.isascii():
            if _ZH_NOT_WEATHER.search(text) is not None:  # seldom: no list to build then
                blocked = [m.span() for m in _ZH_NOT_WEATHER.finditer(text)]
            matches = self._re.finditer(text)
        elif self._lower is not None:
            matches = self._lower.finditer(text.lower())
        else:
            matches = self._re.finditer(text)
        for m in matches:
            if blocked and any(s <= m.start() < e for s, e in blocked):
                continue
            word = text[m.start() : m.end()]
            topic = self._keywords.get(word.casefold())
            if topic is None:  # a case pairing casefold does not make: not worth a failed turn
                continue
            found.append(TopicMatch(topic, word, m.start(), m.end()))
        return found
