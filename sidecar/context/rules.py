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
import functools
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sidecar.context.clock import today_in
from sidecar.context.entities import answer_place, find_places
from sidecar.context.frame import Frame, complete_from_frame
from sidecar.context.gazetteer import Gazetteer, load_gazetteer
from sidecar.context.lexicon import (
    words,
)
from sidecar.context.phrasing import (
    asked,
    chosen_place,
    chosen_time,
    followup_name,
    insert_place,
    insert_time,
    is_correction,
    is_elliptical,
    is_question,
    is_request,
    traditional_context,
)
from sidecar.context.resolution import Resolution
from sidecar.context.script import to_simplified, to_traditional
from sidecar.context.spans import PlaceMatch, TopicMatch
from sidecar.context.timeexpr import TimeMatch, find_times, render_date
from sidecar.context.topics import WEATHER_KEYWORDS, TopicMatcher

_HAN = re.compile(r"[\u4e00-\u9fff]")
# A request longer than this is not kept as the frame of follow-ups (pasted documents).
_MAX_FRAME_CHARS = 240
_FRAME_CACHE = 1024
_PUNCT = " \t\r\n,.;:!?，。；：！？、\"'“”‘’()（）…~～"

_NOUN_TOPIC_WORDS = {
    "zh": words("天气 气温 温度 湿度 预报 紫外线 雾霾"),
    "en": words("weather forecast temperature humidity wind rain snow"),
}
_DEFAULT_TOPIC_WORDS = {"weather": {"zh": "天气", "en": "weather"}}
_EN_DATE_LEAD = re.compile(
    r"^(?:(?:this|next|coming)\s+)?(?:mon|tues|wednes|thurs|fri|satur|sun)day|^\d|^the\s+\d|"
    r"^(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\s+\d",
    re.IGNORECASE,
)


def _stored_str(context: Mapping[str, Any], key: str) -> str | None:
    value = context.get(key)
    return value.strip() or None if isinstance(value, str) else None


def _stored_date(context: Mapping[str, Any]) -> date | None:
    value = context.get("date")
    return _iso_date(value[:10]) if isinstance(value, str) else None


@functools.lru_cache(maxsize=256)
def _iso_date(value: str) -> date | None:
    # A session's stored date comes back with every turn: each is parsed once.
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _lang_of(text: str) -> str:
    return "zh" if not text.isascii() and _HAN.search(text) else "en"


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
        asked_place, asked_time = asked(last_assistant)
        simple = text if text.isascii() else to_simplified(text)  # (the call is the cost)
        stored_date = _stored_date(context)
        places, times, topics, blocked = self._analyse(
            text, simple, today, stored_date, answering=asked_place
        )
        # one place or time is the one (chosen_* only weighs two or more)
        place = chosen_place(simple, places) if len(places) > 1 else places[0] if places else None
        if place is None and asked_place:
            place = answer_place(text, blocked)
            places = [place] if place is not None else []
        elif place is None and (context.get("frame") or context.get("topic")):
            place = followup_name(text, blocked)
            places = [place] if place is not None else []
        time = chosen_time(simple, times) if len(times) > 1 else times[0] if times else None
        topic = topics[0] if topics else None

        entities: dict[str, str] = {}
        if place is not None:
            entities["location"] = place.text.strip(_PUNCT)
        if time is not None:
            entities["date"] = time.date.isoformat()
            entities["time_expression"] = time.expression
        if topic is not None:
            entities["topic"] = topic.topic
        spans: list[PlaceMatch | TimeMatch | TopicMatch] = [*places, *times, *topics[:1]]
        lang = _lang_of(text)
        elliptical = bool(spans) and is_elliptical(
            simple, spans, lang, answering=asked_place or asked_time
        )
        completed = self._complete(
            text,
            place,
            time,
            topic,
            context,
            today,
            lang=lang,
            stored_date=stored_date,
            answering=asked_place or asked_time,
            answering_place=asked_place,
            elliptical=elliptical,
            traditional=simple != text or traditional_context(context),
            # a route is two places or more: only then is a correction looked for
            route=() if len(places) >= 2 and is_correction(simple) else places,
        )
        if len(text) <= _MAX_FRAME_CHARS:
            if completed is not None:
                entities["frame"] = completed
            elif not elliptical and (place is not None or (spans and is_request(simple, lang))):
                entities["frame"] = text
        return Resolution(entities, completed)

    def _analyse(
        self, text: str, simple: str, today: date, anchor: date | None, *, answering: bool
    ) -> tuple[list[PlaceMatch], list[TimeMatch], list[TopicMatch], list[tuple[int, int]]]:
        """Places, times and topics of ``text``, matched on ``simple`` (its Simplified form),
        reported with the user's own characters; and the spans of the times and topics."""
        times = find_times(simple, today, anchor)
        if times and not simple.isascii():
            times = [t for t in times if not self._inside_place_name(simple, t)]
        topics = self._topics.find(simple)
        if simple != text:
            times = [dataclasses.replace(t, expression=text[t.start : t.end]) for t in times]
            topics = [dataclasses.replace(t, keyword=text[t.start : t.end]) for t in topics]
        # (most messages have neither: no comprehension to run then)
        blocked = (
            [(t.start, t.end) for t in times] + [(t.start, t.end) for t in topics]
            if times or topics
            else []
        )
        places = find_places(text, self.gazetteer, blocked, answering=answering, simple=simple)
        return places, times, topics, blocked

    def _inside_place_name(self, simple: str, time: TimeMatch) -> bool:
        """ "昆明天气": the 明 of 明天 ends a place name, so 明天 is no time here."""
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
        places, times, topics, _ = self._analyse(text, simple, today, None, answering=False)
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
        lang: str,
        stored_date: date | None,
        answering: bool,
        answering_place: bool,
        elliptical: bool,
        traditional: bool,
        route: Sequence[PlaceMatch] = (),
    ) -> str | None:
        stored_topic = _stored_str(context, "topic")
        stored_place = _stored_str(context, "location")
        stored_expr = _stored_str(context, "time_expression")
        frame = self._frame(context, today) if elliptical and topic is None else None
        # A time alone after a request without one ("杭州哪里有兰州拉面" then "大后天呢") goes
        # back to the topic under discussion, if there is one.
        back_to_topic = place is None and time is not None and bool(stored_topic)
        if (
            frame is not None
            and frame.topic is None
            and not (back_to_topic and frame is not None and frame.time is None)
        ):
            return complete_from_frame(
                frame, place, time, today, stored_place, traditional, route=route
            )
        topic_name = topic.topic if topic is not None else stored_topic
        if topic_name is None:
            return None
        has_span = place is not None or time is not None or topic is not None

        specific = (
            topic is not None
            and topic.topic == "weather"
            and topic.keyword.lower() not in _NOUN_TOPIC_WORDS[lang]
        )
        if has_span and not (specific and is_question(text, lang)) and elliptical:
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

        if not is_question(text, lang):
            return None
        if topic is not None and place is None and stored_place and stored_topic == topic.topic:
            when = None
            if time is None and stored_date is not None:
                when = self._time_words(None, stored_date, stored_expr, today, lang, traditional)
            return insert_place(text, stored_place, time, when, lang)
        if answering_place and place is not None and time is None and stored_date is not None:
            # "Will it drizzle in Menlo Park?" answering "For what location do you want
            # tomorrow's forecast?": the question was asked for the stored time.
            when = self._time_words(None, stored_date, stored_expr, today, lang, traditional)
            return insert_time(text, when, lang) if when else None
        return None

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
