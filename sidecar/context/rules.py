"""The rule-based context engine: entities of one query plus follow-up completion.

A query is completed only when it leans on the session: at least one slot of the finished
question (place, time, topic) comes from the stored context rather than from the query itself.

* Elliptical follow-ups ("那明天呢", "上海呢", "And in Berlin?", "what about tomorrow?", a bare
  place or time, the short answer to "which city?") become a fresh question built from the frame:
  Chinese ``<time><place>的<topic>`` ("明天巴黎的天气"), English ``<topic> in <place> <time>``
  ("weather in Paris tomorrow").
* A full question that names its topic but no place ("what's the weather tomorrow?", "会下雨吗")
  gets the stored place (and the stored time when it names none) inserted, provided the stored
  topic is the same; everything else the user wrote is kept.
* Anything else, including a question that names its own topic and place, is left alone.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sidecar.context.entities import (
    WEATHER_KEYWORDS,
    PlaceMatch,
    TopicMatch,
    TopicMatcher,
    answer_place,
    find_places,
)
from sidecar.context.frame import Frame, substitute
from sidecar.context.gazetteer import Gazetteer, load_gazetteer
from sidecar.context.lexicon import (
    ANSWER_FILLERS_EN,
    CORRECTION_EN,
    CORRECTION_ZH,
    NEGATION_BEFORE_EN,
    NEGATION_BEFORE_ZH,
    words,
)
from sidecar.context.resolution import Resolution
from sidecar.context.script import to_simplified, to_traditional
from sidecar.context.timeexpr import TimeMatch, find_times, render_date

_LOCATION_QUESTION = re.compile(
    r"哪个城市|哪座城市|哪个地方|什么地方|什么城市|哪个地区|哪里|哪儿|在哪|城市是|"
    r"\b(?:which|what)\s+(?:city|town|location|place|area)\b|\bwhere\b|\blocation\b|\blocated\b",
    re.IGNORECASE,
)
_TIME_QUESTION = re.compile(
    r"哪天|哪一天|什么时候|什么时间|几号|哪个日期|"
    r"\b(?:which|what)\s+(?:day|days|date)\b|\bwhen\b|\bspecific\s+day\b",
    re.IGNORECASE,
)
_HAN = re.compile(r"[\u4e00-\u9fff]")
_ZH_FILLERS = re.compile(
    r"那么|那边|那里|那儿|这边|这里|不对|不是|搞错了|错了|我是说|我说的是|应该是|抱歉|对不起|"
    r"那|呢|的|吧|呀|啊|嘛|哦|在|是|查一下|查查|查|看一下|看看|一下|还有|换成|改成|换到|到|要|"
    r"也|又|再|和|怎么样|怎样|如何|咋样|情况|我想知道|我想|我|想|知道|请|帮我|问|一样|呢|咁|喺|嘅"
)
_EN_FILLERS = words(
    """
    and in at for on the what what's whats about how how's hows then please ok okay so instead
    too also of there is it like with same check again city well but or look yes yeah hmm um
    maybe just over question thing let's lets try do does it's that sorry i meant mean no not
    wait actually oops rather to
    """
)
# A request longer than this is not kept as the frame of follow-ups (pasted documents).
_MAX_FRAME_CHARS = 240
_FRAME_CACHE = 1024
_EN_ANSWER_FILLERS = (
    _EN_FILLERS
    | ANSWER_FILLERS_EN
    | words("i would like want to know need me give info information am asking interested wanna")
)
_WORD = re.compile(r"[A-Za-z\u00c0-\u024f0-9]+(?:['’][A-Za-z]+)?")
_PUNCT = " \t\r\n,.;:!?，。；：！？、\"'“”‘’()（）…~～"

_NOUN_TOPIC_WORDS = {
    "zh": words("天气 气温 温度 湿度 预报 紫外线 雾霾"),
    "en": words("weather forecast temperature humidity wind rain snow"),
}
_DEFAULT_TOPIC_WORDS = {"weather": {"zh": "天气", "en": "weather"}}
_EN_DATE_LEAD = re.compile(
    r"^(?:(?:this|next|coming)\s+)?(?:mon|tues|wednes|thurs|fri|satur|sun)day|^\d|"
    r"^(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\s+\d",
    re.IGNORECASE,
)


def today_in(timezone: str, now: datetime | None) -> date:
    """The calendar date in ``timezone`` at ``now`` (naive ``now`` is taken as UTC)."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).date()


def _asks(last_assistant: str | None, pattern: re.Pattern[str]) -> bool:
    if not last_assistant:
        return False
    tail = last_assistant[-240:]
    return ("?" in tail or "？" in tail or tail.rstrip().endswith(("吗", "呢"))) and bool(
        pattern.search(tail)
    )


def _stored_str(context: Mapping[str, Any], key: str) -> str | None:
    value = context.get(key)
    return value.strip() or None if isinstance(value, str) else None


def _stored_date(context: Mapping[str, Any]) -> date | None:
    value = context.get("date")
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def _lang_of(text: str) -> str:
    return "zh" if _HAN.search(text) else "en"


class RulesExtractor:
    """Deterministic extraction and completion; synchronous inside, no I/O after first load."""

    def __init__(
        self,
        *,
        extra_topics: Mapping[str, Sequence[str]] | None = None,
        gazetteer: Gazetteer | None = None,
    ) -> None:
        topics: dict[str, list[str]] = {"weather": list(WEATHER_KEYWORDS)}
        for name, keywords in (extra_topics or {}).items():
            topics.setdefault(name, []).extend(w for w in keywords if w and w.strip())
        self._topics = TopicMatcher(topics)
        self._gazetteer = gazetteer
        # The same frame is read again by each follow-up; requests are few per session.
        self._frames: dict[tuple[str, date], Frame] = {}

    @property
    def gazetteer(self) -> Gazetteer:
        if self._gazetteer is None:
            self._gazetteer = load_gazetteer()
        return self._gazetteer

    async def resolve(
        self,
        query: str,
        *,
        context: Mapping[str, Any],
        last_assistant: str | None,
        timezone: str,
        now: datetime | None = None,
    ) -> Resolution:
        return self.resolve_sync(
            query, context=context, last_assistant=last_assistant, timezone=timezone, now=now
        )

    def resolve_sync(
        self,
        query: str,
        *,
        context: Mapping[str, Any],
        last_assistant: str | None,
        timezone: str,
        now: datetime | None = None,
    ) -> Resolution:
        """Entities this query contributes and, for a follow-up, the completed query."""
        text = query.strip()
        if not text:
            return Resolution({}, None)
        today = today_in(timezone, now)
        asked_place = _asks(last_assistant, _LOCATION_QUESTION)
        asked_time = _asks(last_assistant, _TIME_QUESTION)
        simple = to_simplified(text)
        places, times, topics = self._analyse(
            text, simple, today, _stored_date(context), answering=asked_place
        )
        blocked = [(t.start, t.end) for t in times] + [(t.start, t.end) for t in topics]
        place = _chosen_place(simple, places)
        if place is None and asked_place:
            place = answer_place(text, blocked)
            places = [place] if place is not None else []
        time = times[0] if times else None
        topic = topics[0] if topics else None

        entities: dict[str, str] = {}
        if place is not None:
            entities["location"] = place.text.strip(_PUNCT)
        if time is not None:
            entities["date"] = time.date.isoformat()
            entities["time_expression"] = time.expression
        if topic is not None:
            entities["topic"] = topic.topic
        spans: list[PlaceMatch | TimeMatch | TopicMatch] = [*places, *times[:1], *topics[:1]]
        elliptical = bool(spans) and self._is_elliptical(
            simple, spans, _lang_of(text), answering=asked_place or asked_time
        )
        completed = self._complete(
            text,
            place,
            time,
            topic,
            context,
            today,
            answering=asked_place or asked_time,
            answering_place=asked_place,
            elliptical=elliptical,
            traditional=simple != text or _traditional_context(context),
        )
        if len(text) <= _MAX_FRAME_CHARS:
            if completed is not None:
                entities["frame"] = completed
            elif not elliptical and spans:
                entities["frame"] = text
        return Resolution(entities, completed)

    def _analyse(
        self, text: str, simple: str, today: date, anchor: date | None, *, answering: bool
    ) -> tuple[list[PlaceMatch], list[TimeMatch], list[TopicMatch]]:
        """Places, times and topics of ``text``, matched on ``simple`` (its Simplified form),
        reported with the user's own characters."""
        times = find_times(simple, today, anchor)
        if times and not simple.isascii():
            times = [t for t in times if not self._inside_place_name(simple, t)]
        topics = self._topics.find(simple)
        if simple != text:
            times = [dataclasses.replace(t, expression=text[t.start : t.end]) for t in times]
            topics = [dataclasses.replace(t, keyword=text[t.start : t.end]) for t in topics]
        blocked = [(t.start, t.end) for t in times] + [(t.start, t.end) for t in topics]
        places = find_places(text, self.gazetteer, blocked, answering=answering, simple=simple)
        return places, times, topics

    def _inside_place_name(self, simple: str, time: TimeMatch) -> bool:
        """"昆明天气": the 明 of 明天 ends a place name, so 明天 is no time here."""
        if time.lang != "zh" or time.start == 0 or simple[time.start] not in "今明后昨前":
            return False
        han = self.gazetteer.han_major
        return any(
            simple[time.start - k : time.start + 1] in han for k in range(1, min(4, time.start) + 1)
        )

    def _frame(self, context: Mapping[str, Any], today: date) -> Frame | None:
        text = _stored_str(context, "frame")
        if text is None:
            return None
        key = (text, today)
        cached = self._frames.get(key)
        if cached is None:
            if len(self._frames) >= _FRAME_CACHE:
                self._frames.clear()
            cached = self._frames[key] = self._read_frame(text, today)
        return cached

    def _read_frame(self, text: str, today: date) -> Frame:
        simple = to_simplified(text)
        places, times, topics = self._analyse(text, simple, today, None, answering=False)
        return Frame(
            text,
            _lang_of(text),
            tuple(places),
            times[0] if times else None,
            topics[0] if topics else None,
        )

    def _complete(
        self,
        text: str,
        place: PlaceMatch | None,
        time: TimeMatch | None,
        topic: TopicMatch | None,
        context: Mapping[str, Any],
        today: date,
        *,
        answering: bool,
        answering_place: bool,
        elliptical: bool,
        traditional: bool,
    ) -> str | None:
        stored_topic = _stored_str(context, "topic")
        stored_place = _stored_str(context, "location")
        stored_date = _stored_date(context)
        stored_expr = _stored_str(context, "time_expression")
        lang = _lang_of(text)
        frame = self._frame(context, today) if elliptical and topic is None else None
        if frame is not None and frame.topic is None:
            # A time alone after a request without one ("杭州哪里有兰州拉面" then "大后天呢")
            # goes back to the topic under discussion, if there is one.
            if not (place is None and time is not None and frame.time is None and stored_topic):
                where = place.text.strip(_PUNCT) if place is not None else None
                when = None
                if time is not None:
                    when = time.expression
                    if time.anchored or time.lang != frame.lang:
                        when = render_date(time.date, today, frame.lang)
                        when = to_traditional(when) if traditional else when
                return substitute(frame, where, when, stored_place)
        topic_name = topic.topic if topic is not None else stored_topic
        if topic_name is None:
            return None
        spans = [m for m in (place, time, topic) if m is not None]

        specific = (
            topic is not None
            and topic.topic == "weather"
            and topic.keyword.lower() not in _NOUN_TOPIC_WORDS[lang]
        )
        if spans and not (specific and _is_question(text, lang)) and elliptical:
            carried = (
                (place is None and stored_place is not None)
                or (time is None and stored_date is not None)
                or topic is None
            )
            if not carried:
                return None
            where = place.text.strip(_PUNCT) if place is not None else stored_place
            when = self._time_words(time, stored_date, stored_expr, today, lang, traditional)
            if where is None and when is None:
                return None
            word = self._topic_word(topic_name, topic, lang)
            if traditional and lang == "zh" and topic is None:
                word = to_traditional(word)
            if lang == "zh":
                return f"{when or ''}{where or ''}的{word}"
            parts = [word]
            if where:
                parts.append(f"in {where}")
            if when:
                parts.append(when)
            return " ".join(parts)

        if not _is_question(text, lang):
            return None
        if topic is not None and place is None and stored_place and stored_topic == topic.topic:
            when = None
            if time is None and stored_date is not None:
                when = self._time_words(None, stored_date, stored_expr, today, lang, traditional)
            return _insert_place(text, stored_place, time, when, lang)
        if answering_place and place is not None and time is None and stored_date is not None:
            # "Will it drizzle in Menlo Park?" answering "For what location do you want
            # tomorrow's forecast?": the question was asked for the stored time.
            when = self._time_words(None, stored_date, stored_expr, today, lang, traditional)
            return _insert_time(text, when, lang) if when else None
        return None

    @staticmethod
    def _is_elliptical(
        text: str,
        spans: Sequence[PlaceMatch | TimeMatch | TopicMatch],
        lang: str,
        *,
        answering: bool,
    ) -> bool:
        rest = text
        for m in sorted(spans, key=lambda s: s.start, reverse=True):
            rest = rest[: m.start] + " " + rest[m.end :]
        if lang == "zh":
            rest = _ZH_FILLERS.sub(" ", rest)
            rest = re.sub(
                r"[A-Za-z]+", lambda w: " " if w.group(0).lower() in _EN_FILLERS else "x", rest
            )
            return not rest.strip(_PUNCT + " ")
        fillers = _EN_ANSWER_FILLERS if answering else _EN_FILLERS
        words = [w.lower() for w in _WORD.findall(rest)]
        return all(w in fillers for w in words)

    def _topic_word(self, topic_name: str, topic: TopicMatch | None, lang: str) -> str:
        if topic is not None:
            word = topic.keyword if lang == "zh" else topic.keyword.lower()
            if topic_name != "weather" or word in _NOUN_TOPIC_WORDS[lang]:
                return word
        default = _DEFAULT_TOPIC_WORDS.get(topic_name, {}).get(lang)
        if default:
            return default
        for word in self._topics.topics.get(topic_name, ()):
            if (lang == "zh") == bool(_HAN.search(word)):
                return word
        return topic_name

    @staticmethod
    def _time_words(
        time: TimeMatch | None,
        stored_date: date | None,
        stored_expr: str | None,
        today: date,
        lang: str,
        traditional: bool = False,
    ) -> str | None:
        if time is not None and time.lang == lang and not time.anchored:
            expr = time.expression
        elif stored_expr and time is None and _lang_of(stored_expr) == lang:
            expr = stored_expr
        elif time is not None or stored_date is not None:
            day = time.date if time is not None else stored_date
            assert day is not None
            expr = render_date(day, today, lang)
            if traditional and lang == "zh":
                expr = to_traditional(expr)
        else:
            return None
        if lang == "en" and _EN_DATE_LEAD.match(expr):
            expr = f"on {expr}"
        return expr


_EN_QUESTION_START = re.compile(
    r"^(?:what|what's|whats|how|how's|hows|will|is|are|does|do|did|can|could|should|would|"
    r"when|which|where|any|tell|show|check|give|get|find|"
    r"i\s*(?:want|wanna|would\s+like|'d\s+like|need)\s+(?:to\s+)?(?:know|find\s+out|check))\b",
    re.IGNORECASE,
)
_ZH_QUESTION = re.compile(r"吗|呢|怎么样|怎样|如何|多少|几度|是否|有没有|会不会|要不要|查|[?？]")


def _traditional_context(context: Mapping[str, Any]) -> bool:
    """Whether the session's recent words are in Traditional characters."""
    for key in ("time_expression", "location", "frame"):
        value = context.get(key)
        if isinstance(value, str) and not value.isascii() and to_simplified(value) != value:
            return True
    return False


_CORRECTION_ZH = re.compile("|".join(CORRECTION_ZH))
_NEGATED_ZH = tuple(NEGATION_BEFORE_ZH)


def _chosen_place(simple: str, places: list[PlaceMatch]) -> PlaceMatch | None:
    """The place the query is about: the first, or in a correction ("不是厦门，是福州",
    "sorry, I meant Lyon, not Lille") the last one not negated."""
    if len(places) < 2:
        return places[0] if places else None
    lowered = simple.lower()
    correcting = bool(_CORRECTION_ZH.search(simple)) or any(
        w in CORRECTION_EN for w in re.findall(r"[a-z]+", lowered)
    )
    if not correcting:
        return places[0]
    kept = [
        p
        for p in places
        if not simple[: p.start].rstrip().endswith(_NEGATED_ZH)
        and not lowered[: p.start].rstrip().endswith(tuple(f" {w}" for w in NEGATION_BEFORE_EN))
    ]
    return (kept or places)[-1]


def _is_question(text: str, lang: str) -> bool:
    if lang == "zh":
        return bool(_ZH_QUESTION.search(text))
    return text.rstrip().endswith("?") or bool(_EN_QUESTION_START.match(text.lstrip()))


def _insert_time(text: str, when: str, lang: str) -> str:
    if lang == "zh":
        lead = re.match(r"^(?:那么|那)", text)
        cut = lead.end() if lead else 0
        return f"{text[:cut]}{when}{text[cut:]}"
    body = text.rstrip(_PUNCT)
    return f"{body} {when}{text[len(body) :]}"


def _insert_place(
    text: str, place: str, time: TimeMatch | None, when: str | None, lang: str
) -> str:
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
