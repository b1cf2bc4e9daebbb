"""Places and topics in a user's message (Chinese and English)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from sidecar.context.gazetteer import Gazetteer, fold_latin
from sidecar.context.lexicon import (
    ANSWER_FILLERS_EN,
    COMMON_WORDS,
    NOT_AN_ANSWER_EN,
    NOT_AN_ANSWER_ZH,
    PLACE_MODIFIERS,
    PLACE_PREPOSITIONS,
    REGIONS_EN,
)
from sidecar.context.placelike import load_placelike
from sidecar.context.places_zh import find_han
from sidecar.context.spans import PlaceMatch as PlaceMatch
from sidecar.context.spans import Span, overlaps
from sidecar.context.spans import TopicMatch as TopicMatch
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

_HAN_RUN = re.compile(r"[\u4e00-\u9fff]+")
_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+(?:['’\-][A-Za-z\u00c0-\u024f]+)*")
_SENTENCE_END = frozenset(".!?。！？;；\n")


class TopicMatcher:
    """Finds the first topic keyword; weather is built in, more come from config."""

    def __init__(self, topics: Mapping[str, Sequence[str]]) -> None:
        self._keywords: dict[str, str] = {}
        latin: list[str] = []
        han: list[str] = []
        for topic, words in topics.items():
            for word in words:
                key = word.lower()
                self._keywords.setdefault(key, topic)
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
            found.append(TopicMatch(self._keywords[word.lower()], word, m.start(), m.end()))
        return found


def _sentence_initial(text: str, start: int) -> bool:
    i = start - 1
    while i >= 0 and text[i] in " \t\"'(“‘":
        i -= 1
    return i < 0 or text[i] in _SENTENCE_END


def _previous_word(words: list[re.Match[str]], index: int) -> str:
    return words[index - 1].group(0).lower() if index > 0 else ""


def _find_latin(
    text: str, gaz: Gazetteer, blocked: Sequence[Span], answering: bool
) -> list[PlaceMatch]:
    # One lower() for a whole ASCII message: the same words.
    words: list[re.Match[str]] = []
    if text.isascii():
        originals = _LATIN_WORD.findall(text)
        lowered = _LATIN_WORD.findall(text.lower())
    else:
        words = list(_LATIN_WORD.finditer(text))
        originals = [w.group(0) for w in words]
        lowered = [w.lower() for w in originals]
    # Only a word that is a name or starts one can begin a place (a word with a non-ASCII
    # letter is looked up folded, so always tried): most words are skipped in this one pass,
    # before any match object is made.
    latin, reach = gaz.latin, gaz.latin_reach
    starts = [k for k, w in enumerate(lowered) if w in latin or w in reach or not w.isascii()]
    if starts and not answering:
        # An everyday word in lower case ("rain", "to") names no place unless a longer name
        # starts with it (_has_evidence would refuse it): dropped before any further work.
        starts = [
            k
            for k in starts
            if lowered[k] in reach
            or originals[k][:1].isupper()
            or not lowered[k].isascii()
            or not _is_common(lowered[k])
        ]
    if not starts:
        return []
    words = words or list(_LATIN_WORD.finditer(text))
    first_clause_end = _first_clause_end(text) if answering else 0
    found: list[PlaceMatch] = []
    i = 0
    for k in starts:
        if k < i:
            continue  # inside the place found before
        i = k
        best = _place_at(text, words, lowered[i], i, gaz, blocked, answering, first_clause_end)
        if best is None:
            i += 1
            continue
        size, canon = best
        first = i
        if i > 0 and lowered[i - 1] in PLACE_MODIFIERS and _joined_by_spaces(text, words, i - 1, 2):
            first = i - 1
        start, end = words[first].start(), words[i + size - 1].end()
        found.append(PlaceMatch(text[start:end], canon, start, end, "en"))
        i += size
    return _qualify_latin(text, found, gaz)


def _place_at(
    text: str,
    words: list[re.Match[str]],
    lowered: str,
    i: int,
    gaz: Gazetteer,
    blocked: Sequence[Span],
    answering: bool,
    first_clause_end: int,
) -> tuple[int, str] | None:
    """The longest name starting at ``words[i]`` that reads as a place: (words, canonical)."""
    n = len(words)
    word = words[i].group(0)
    # Longer names are tried only as far as a name starting with this word reaches and the
    # words are joined by single spaces (most words start no multi-word name).
    reach = gaz.latin_reach.get(lowered if word.isascii() else _head(word))
    longest = 1
    if reach is not None:
        reach = min(reach, gaz.max_latin_words)
        while (
            longest < reach
            and i + longest < n
            and _joined_by_spaces(text, words, i + longest - 1, 2)
        ):
            longest += 1
    for size in range(longest, 0, -1):
        start, end = words[i].start(), words[i + size - 1].end()
        key = fold_latin(text[start:end]) if size > 1 else lowered
        if not key.isascii():
            key = fold_latin(key)
        canon = gaz.latin.get(key)
        if canon is None or (size == 1 and key in PLACE_MODIFIERS):
            continue
        if blocked and overlaps(start, end, blocked):
            continue
        in_answer = answering and (n <= 4 or (end <= first_clause_end and not _is_common(key)))
        if not in_answer and not _has_evidence(text, words, i, key, gaz):
            continue
        return size, canon
    return None


def _head(word: str) -> str:
    """The first word of the lookup key of a name that starts with ``word`` (folded as the
    whole name is: a word's folding never yields a space or a period)."""
    key = fold_latin(word)
    return key if key.isascii() else fold_latin(key)


# "Paris, Texas", "Portland, Maine", and after a correction "Paris in Texas"
_QUALIFIER = re.compile(r"(?:,\s*|\s+in\s+)([A-Za-z]+(?:\s[A-Za-z]+)?)")


def _qualify_latin(text: str, found: list[PlaceMatch], gaz: Gazetteer) -> list[PlaceMatch]:
    """ "Paris, Texas" is one place: a city, a comma and a region (a short code only in capitals)."""
    out: list[PlaceMatch] = []
    for place in found:
        m = _QUALIFIER.match(text, place.end)
        key = fold_latin(place.text)
        if m is not None and key not in REGIONS_EN and key not in gaz.region_keys:
            for size in (2, 1):
                words = m.group(1).split()[:size]
                if len(words) < size:
                    continue
                region = " ".join(words).lower()
                if region in REGIONS_EN or region in gaz.region_keys:
                    if len(region) <= 3 and not "".join(words).isupper():
                        continue
                    end = m.start(1) + len(" ".join(words))
                    whole = text[place.start : end]
                    place = PlaceMatch(whole, place.canonical, place.start, end, "en")
                    break
        out.append(place)
    # drop a region swallowed by the place before it
    return [p for k, p in enumerate(out) if not (k and p.start < out[k - 1].end)]


_CLAUSE_END = re.compile(r"[,，:：;；.。!！?？]")


def _first_clause_end(text: str) -> int:
    m = _CLAUSE_END.search(text.strip())
    return len(text) if m is None else m.start() + (len(text) - len(text.lstrip()))


def _joined_by_spaces(text: str, words: list[re.Match[str]], i: int, size: int) -> bool:
    for k in range(i, i + size - 1):
        gap = text[words[k].end() : words[k + 1].start()]
        if gap.strip(". ") or not gap:
            return False
    return True


def _is_common(key: str) -> bool:
    parts = key.split()
    if len(parts) == 1:
        return len(key) <= 3 or key in COMMON_WORDS
    return all(p in COMMON_WORDS for p in parts)


def _has_evidence(text: str, words: list[re.Match[str]], i: int, key: str, gaz: Gazetteer) -> bool:
    """Whether the name at ``words[i]`` reads as a place rather than an ordinary word.

    Multi-word names ("san mateo") and major cities ("chicago") count as they are; a small
    town's name needs a capital inside a sentence or a place preposition before it; a name that
    is also a common word ("Nice", "Reading") needs a capital and one of those.
    """
    word = words[i].group(0)
    capital = word[:1].isupper()
    after_preposition = _previous_word(words, i) in PLACE_PREPOSITIONS
    if _is_common(key):
        return capital and (after_preposition or not _sentence_initial(text, words[i].start()))
    if " " in key or key in gaz.major:
        return True
    if key in load_placelike().common_words:
        # a small town named like an everyday word ("airport"): a capital inside a sentence
        return capital and not _sentence_initial(text, words[i].start())
    return after_preposition or (capital and not _sentence_initial(text, words[i].start()))


def find_places(
    text: str, gaz: Gazetteer, blocked: Sequence[Span], *, answering: bool, simple: str = ""
) -> list[PlaceMatch]:
    """Every gazetteer place in ``text`` (longest name at each position), in order.

    ``blocked`` spans (time words, topic words) are never part of a place, nor is a name inside
    a listed brand, food or product name. ``answering`` is true when the assistant just asked
    where, which makes a bare common-word name count. ``simple`` is ``text`` in Simplified
    characters (same length), for matching Chinese; places keep the user's characters.
    """
    blocked = [*blocked, *load_placelike().spans(text, simple or None)]
    found: list[PlaceMatch] = []
    if not text.isascii():
        for p in find_han(simple or text, gaz, blocked, answering):
            found.append(PlaceMatch(text[p.start : p.end], p.canonical, p.start, p.end, "zh"))
    found.extend(_find_latin(text, gaz, blocked, answering))
    found.sort(key=lambda p: p.start)
    return found


def find_place(
    text: str, gaz: Gazetteer, blocked: Sequence[Span], *, answering: bool
) -> PlaceMatch | None:
    """The first place of ``find_places``, or None."""
    found = find_places(text, gaz, blocked, answering=answering)
    return found[0] if found else None


_ZH_ANSWER_PREFIX = re.compile(
    r"^(?:我(?:现在)?(?:在|住在|想查|要查|想知道|问的是)|查一下|查查|查|看看|在|是|去|就)+"
)
_ZH_ANSWER_SUFFIX = re.compile(r"(?:的天气|天气|吧|的|呀|啊|啦|呢|哦|嗯|谢谢|市)+$")
_STRIP = " \t\r\n,.;:!?，。；：！？、\"'“”‘’()（）"


def answer_place(text: str, blocked: Sequence[Span]) -> PlaceMatch | None:
    """A place the gazetteer does not know, given as the answer to "which city?".

    Takes the first clause ("Seatlle, will it be windy?" → "Seatlle"), drops polite words around
    it, and accepts one to three words (or two to ten Chinese characters) that are not a time,
    a topic or a refusal.
    """
    clause_match = re.match(r"[^,，:：;；.。!！?？\n]+", text.strip(_STRIP))
    if clause_match is None:
        return None
    offset = len(text) - len(text.lstrip(_STRIP))
    clause = clause_match.group(0)
    start = offset + (len(clause) - len(clause.lstrip()))
    clause = clause.strip()
    end = start + len(clause)
    if blocked and overlaps(start, end, blocked):
        return None
    if clause.isascii():
        words = list(_LATIN_WORD.finditer(clause))
        if not words or len(words) > 6 or len(words) != len(clause.split()):
            return None
        lo, hi = 0, len(words)
        while lo < hi and words[lo].group(0).lower() in ANSWER_FILLERS_EN:
            lo += 1
        while hi > lo and words[hi - 1].group(0).lower() in ANSWER_FILLERS_EN:
            hi -= 1
        core_words = [w.group(0).lower() for w in words[lo:hi]]
        if not 1 <= len(core_words) <= 3:
            return None
        if " ".join(core_words) in NOT_AN_ANSWER_EN or any(
            w in NOT_AN_ANSWER_EN or (w in COMMON_WORDS and w not in PLACE_MODIFIERS)
            for w in core_words
        ):
            return None
        s, e = start + words[lo].start(), start + words[hi - 1].end()
        return PlaceMatch(text[s:e], None, s, e, "en")
    core = _ZH_ANSWER_PREFIX.sub("", clause)
    core = _ZH_ANSWER_SUFFIX.sub("", core)
    if not 2 <= len(core) <= 10 or not _HAN_RUN.fullmatch(core) or core in NOT_AN_ANSWER_ZH:
        return None
    s = text.find(core, start)
    return PlaceMatch(core, None, s, s + len(core), "zh")
