"""How a message reads: a question, a follow-up, a correction; and how words are put into it."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any

from sidecar.context.lexicon import (
    ANSWER_FILLERS_EN,
    COMMON_WORDS,
    CORRECTION_EN,
    CORRECTION_ZH,
    NEGATION_BEFORE_EN,
    NEGATION_BEFORE_ZH,
    words,
)
from sidecar.context.placelike import load_placelike
from sidecar.context.script import to_simplified
from sidecar.context.spans import PlaceMatch, TopicMatch
from sidecar.context.timeexpr import TimeMatch
from sidecar.context.trie import longest_first

# Each question pattern opens with a lookahead on the characters its alternatives start
# with: one test at most characters of the assistant's message instead of every alternative.
LOCATION_QUESTION = re.compile(
    r"(?=[哪什在城wl])(?:哪个城市|哪座城市|哪个地方|什么地方|什么城市|哪个地区|哪里|哪儿|在哪|城市是|"
    r"\b(?:which|what)\s+(?:city|town|location|place|area)\b|\bwhere\b|\blocation\b|\blocated\b)",
    re.IGNORECASE,
)
TIME_QUESTION = re.compile(
    r"(?=[哪什几ws])(?:哪天|哪一天|什么时候|什么时间|几号|哪个日期|"
    r"\b(?:which|what)\s+(?:day|days|date)\b|\bwhen\b|\bspecific\s+day\b)",
    re.IGNORECASE,
)
_ZH_FILLERS = re.compile(
    r"那么|那边|那里|那儿|这边|这里|不对|不是|搞错了|错了|我是说|我说的是|应该是|抱歉|对不起|"
    r"那|呢|的|吧|呀|啊|嘛|哦|在|是|查一下|查查|查|看一下|看看|一下|还有|换成|改成|换到|到|要|"
    r"也|又|再|和|怎么样|怎样|如何|咋样|情况|我想知道|我想|我|想|知道|请|帮我|问|一样|呢|咁|喺|嘅|"
    r"如果|要是|假如|换|改|就|去|飞|来"
)
_EN_FILLERS = words(
    """
    and in at for on the what what's whats about how how's hows then please ok okay so instead
    too also of there is it like with same check again city well but or look yes yeah hmm um
    maybe just over question thing let's lets try do does it's that sorry i meant mean no not
    wait actually oops rather to make change switch swap move could can you would if any
    following show me same said say told
    """
)
_EN_ANSWER_FILLERS = (
    _EN_FILLERS
    | ANSWER_FILLERS_EN
    | words("i would like want to know need me give info information am asking interested wanna")
)
_WORD = re.compile(r"[A-Za-z\u00c0-\u024f0-9]+(?:['’][A-Za-z]+)?")
_WORD = re.compile(r"[A-Za-z\u00c0-\u024f0-9]+(?:['’][A-Za-z]+)?")
_PUNCT = " \t\r\n,.;:!?，。；：！？、\"'“”‘’()（）…~～"
_LATIN_RUN = re.compile(r"[A-Za-z]+")


def asked(last_assistant: str | None) -> tuple[bool, bool]:
    """Whether the assistant's last message asked where, and whether it asked when (its end
    reads as a question, which is looked at once for both)."""
    if not last_assistant:
        return False, False
    tail = last_assistant[-240:]
    if not ("?" in tail or "？" in tail or tail.rstrip().endswith(("吗", "呢"))):
        return False, False
    if tail.isascii():
        # The patterns try their alternatives at every character of a long reply; the words
        # their English alternatives need, looked for first (one pass in C each), rule most
        # replies out. Lowercasing is exact on ASCII, so none that matches is ruled out.
        low = tail.lower()
        which = "which" in low or "what" in low
        where = ("where" in low or "locat" in low) or (
            which and ("city" in low or "town" in low or "place" in low or "area" in low)
        )
        when = "when" in low or (("day" in low or "date" in low) and (which or "specific" in low))
        return (
            where and LOCATION_QUESTION.search(tail) is not None,
            when and TIME_QUESTION.search(tail) is not None,
        )
    return bool(LOCATION_QUESTION.search(tail)), bool(TIME_QUESTION.search(tail))


def is_elliptical(
    text: str,
    spans: Sequence[PlaceMatch | TimeMatch | TopicMatch],
    lang: str,
    *,
    answering: bool,
) -> bool:
    if len(spans) == 1:  # most often: one place, time or topic
        rest = text[: spans[0].start] + " " + text[spans[0].end :]
    else:
        rest = text
        for m in sorted(spans, key=attrgetter("start"), reverse=True):
            rest = rest[: m.start] + " " + rest[m.end :]
    if lang == "zh":
        rest = _ZH_FILLERS.sub(" ", rest)
        rest = _LATIN_RUN.sub(lambda w: " " if w.group(0).lower() in _EN_FILLERS else "x", rest)
        return not rest.strip(_PUNCT + " ")
    fillers = _EN_ANSWER_FILLERS if answering else _EN_FILLERS
    if rest.isascii():  # one lower() for the whole text: the same words
        return fillers.issuperset(_WORD.findall(rest.lower()))
    return fillers.issuperset(w.lower() for w in _WORD.findall(rest))


_EN_QUESTION_START = re.compile(
    r"^(?:what|what's|whats|how|how's|hows|will|is|are|does|do|did|can|could|should|would|"
    r"when|which|where|any|tell|show|check|give|get|find|"
    r"i\s*(?:want|wanna|would\s+like|'d\s+like|need)\s+(?:to\s+)?(?:know|find\s+out|check))\b",
    re.IGNORECASE,
)
_ZH_QUESTION = re.compile(r"吗|呢|怎么样|怎样|如何|多少|几度|是否|有没有|会不会|要不要|查|[?？]")


def traditional_context(context: Mapping[str, Any]) -> bool:
    """Whether the session's recent words are in Traditional characters."""
    for key in ("time_expression", "location", "frame"):
        value = context.get(key)
        if isinstance(value, str) and not value.isascii() and _traditional(value):
            return True
    return False


@functools.lru_cache(maxsize=1024)
def _traditional(value: str) -> bool:
    # A session's stored words come back with every turn: each is converted once.
    return to_simplified(value) != value


_CORRECTION_ZH = re.compile("|".join(CORRECTION_ZH))
# A correction word as a whole run of letters a-z ("no", not the "no" of "nope" or "know"):
# one search, where listing the message's words and intersecting them cost a list and a set.
_RUN_WORDS = sorted(w for w in CORRECTION_EN if re.fullmatch("[a-z]+", w))  # all, as it is
_CORRECTION_EN = re.compile(rf"(?<![a-z])(?:{longest_first(_RUN_WORDS)})(?![a-z])")
_NEGATED_ZH = tuple(NEGATION_BEFORE_ZH)


_EN_FOLLOWUP_NAME = re.compile(
    r"^\s*(?:(?:and|or|but|ok|okay|so)[\s,]+)?"
    r"(?:(?:(?:what|how)\s+about|check)(?:\s+(?:in|at|for))?\s+|(?:in|at|for)\s+|(?<=and\s))"
    r"(?:the\s+)?"
    r"(?P<name>[A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*){0,2})"
    r"(?:\s+(?:then|instead|too))?\s*[?.!]*\s*$"
)


def followup_name(text: str, blocked: Sequence[tuple[int, int]]) -> PlaceMatch | None:
    """A capitalised name the gazetteer lacks in a follow-up's place slot ("and in Ginza?",
    "what about Shimokitazawa?"): in that shape it can only be a place."""
    m = _EN_FOLLOWUP_NAME.match(text)
    if m is None:
        return None
    start, end = m.span("name")
    if any(s < end and start < e for s, e in [*blocked, *load_placelike().spans(text)]):
        return None
    if any(w.lower() in COMMON_WORDS or w.lower() in _EN_FILLERS for w in m.group("name").split()):
        return None
    return PlaceMatch(m.group("name"), None, start, end, "en")


def is_correction(simple: str) -> bool:
    """ "不对，是伦敦", "sorry, I meant Lyon": the message corrects the last one."""
    chinese = not simple.isascii() and bool(_CORRECTION_ZH.search(simple))  # words all Chinese
    return chinese or _CORRECTION_EN.search(simple.lower()) is not None


def chosen_place(simple: str, places: list[PlaceMatch]) -> PlaceMatch | None:
    """The place the query is about: the first, or in a correction ("不是厦门，是福州",
    "sorry, I meant Lyon, not Lille") the last one not negated."""
    if len(places) < 2:
        return places[0] if places else None
    lowered = simple.lower()
    if not is_correction(simple):
        # "Is the Prado in Madrid open?": a place after in/at/to/from/在/去/到/从 is the one
        # asked about rather than a name that only contains one.
        # (English only: a Chinese route "北京到上海" names its start first.)
        led = [p for p in places if p.lang == "en" and _led_by_preposition(simple, p)]
        first = places[0]
        return (
            led[0]
            if led and first.lang == "en" and not _led_by_preposition(simple, first)
            else first
        )
    kept = [
        p
        for p in places
        if not simple[: p.start].rstrip().endswith(_NEGATED_ZH)
        and not lowered[: p.start].rstrip().endswith(tuple(f" {w}" for w in NEGATION_BEFORE_EN))
    ]
    return (kept or places)[-1]


_LEAD_EN = re.compile(r"\b(?:in|at|to|from|near|visiting|around)\s+(?:the\s+)?$", re.IGNORECASE)


def _led_by_preposition(simple: str, place: PlaceMatch) -> bool:
    return bool(_LEAD_EN.search(simple[: place.start]))


_REQUEST = re.compile(
    r"帮我|帮忙|请|订|预订|预约|查|找|买|要|想|有没有|多少|几点|推荐|"
    r"\b(?:book|find|get|show|search|reserve|order|buy|need|want|looking|check|tell|give|"
    r"list|recommend|any|how|what|when|where|which|is|are|do|does|can|could|will)\b",
    re.IGNORECASE,
)


def is_request(text: str, lang: str) -> bool:
    """Whether a message asks for something (a frame for follow-ups), not only chats."""
    return is_question(text, lang) or bool(_REQUEST.search(text))


def chosen_time(simple: str, times: list[TimeMatch]) -> TimeMatch | None:
    """The time the query is about: the first, or in a correction ("不是明天，是后天",
    "I said Saturday, not Sunday") the last one not negated."""
    if len(times) < 2 or not is_correction(simple):
        return times[0] if times else None
    lowered = simple.lower()
    kept = [
        t
        for t in times
        if not simple[: t.start].rstrip().endswith(_NEGATED_ZH)
        and not re.search(r"\bnot\s*$", lowered[: t.start])
    ]
    return (kept or times)[-1]


def is_question(text: str, lang: str) -> bool:
    if lang == "zh":
        return bool(_ZH_QUESTION.search(text))
    return text.rstrip().endswith("?") or bool(_EN_QUESTION_START.match(text.lstrip()))


def insert_time(text: str, when: str, lang: str) -> str:
    if lang == "zh":
        lead = re.match(r"^(?:那么|那)", text)
        cut = lead.end() if lead else 0
        return f"{text[:cut]}{when}{text[cut:]}"
    body = text.rstrip(_PUNCT)
    return f"{body} {when}{text[len(body) :]}"


def insert_place(text: str, place: str, time: TimeMatch | None, when: str | None, lang: str) -> str:
    if lang == "zh":
        if time is not None:
            return f"{text[: time.end]}{place}{text[time.end :]}"
        lead = re.match(r"^(?:那么|那)", text)
        cut = lead.end() if lead else 0
        return f"{text[:cut]}{when or ''}{place}{text[cut:]}"
    body = text.rstrip(_PUNCT)
    tail = text[len(body) :]
    addition = f" in {place}" + (f" {when}" if when else "")
    return f"{body}{addition}{tail}"
