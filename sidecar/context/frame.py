"""Completing a follow-up from the request it follows: the frame, with what changed swapped in.

The frame is the last self-contained request of the session, as the user wrote it (or as it was
completed): "帮我查一下明天从北京飞上海的机票", "car rentals in Lisbon for this Saturday?". A
follow-up that only names a new place or time ("后天呢", "what about Porto?", "不对，是苏州")
becomes the frame with that place or time put where the frame had its own, so the task words
(机票, rentals, showtimes, opening hours...) carry over in any domain, in the user's words and
script. Where the frame has no place or time, the new one is added where a speaker would put it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date

from sidecar.context.script import to_traditional
from sidecar.context.spans import PlaceMatch, TopicMatch
from sidecar.context.timeexpr import TimeMatch, render_date

from ..frozen import frozen

_TAIL = " \t\r\n,.;:!?，。；：！？、\"'“”‘’()（）…~～"


@frozen
class Frame:
    """A request's text and where its slots are."""

    text: str
    lang: str
    places: tuple[PlaceMatch, ...]
    time: TimeMatch | None
    topic: TopicMatch | None

    def place_to_replace(self, stored: str | None) -> PlaceMatch | None:
        """The frame's place that the follow-up's place replaces: the one under discussion
        (the stored location) when the frame names it, else the last one (a destination)."""
        if not self.places:
            return None
        if stored:
            for p in self.places:
                if p.text == stored:
                    return p
        return self.places[-1]


def complete_from_frame(
    frame: Frame,
    place: PlaceMatch | None,
    time: TimeMatch | None,
    today: date,
    stored_place: str | None,
    traditional: bool,
    route: Sequence[PlaceMatch] = (),
) -> str | None:
    """The follow-up's place and time put into ``frame``. The time keeps the user's words unless
    they only make sense next to another date ("the day after", 第二天) or are in the other
    language than the frame: then the date is said in the frame's language and script."""
    where = place.text.strip(_TAIL) if place is not None else None
    when = None
    if time is not None:
        when = time.expression
        if time.anchored or time.lang != frame.lang:
            when = render_date(time.date, today, frame.lang)
            when = to_traditional(when) if traditional else when
    if len(route) >= 2 and len(route) == len(frame.places):
        # "花莲到台东呢" after "从台北到花莲的火车票": the whole route changes, in order
        return substitute_route(frame, [p.text for p in route], when)
    return substitute(frame, where, when, stored_place)


def substitute_route(frame: Frame, places: Sequence[str], when: str | None) -> str:
    text = frame.text
    edits = [(p.start, p.end, new) for p, new in zip(frame.places, places, strict=True)]
    if when is not None and frame.time is not None:
        edits.append((frame.time.start, frame.time.end, when))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def substitute(
    frame: Frame, place: str | None, when: str | None, stored_place: str | None
) -> str | None:
    """The frame with ``place`` and ``when`` (already in words) swapped in; None if neither."""
    if place is None and when is None:
        return None
    text = frame.text
    edits: list[tuple[int, int, str]] = []
    zh = frame.lang == "zh"
    if place is not None and any(p.text == place for p in frame.places):
        place = None  # "那上海后天呢" after "明天北京到上海的高铁": the route stays
        if when is None:
            return None
    target = frame.place_to_replace(stored_place) if place is not None else None
    at_stored = text.rfind(stored_place) if stored_place and target is None else -1
    if place is not None:
        if target is not None:
            edits.append((target.start, target.end, place))
        elif stored_place and at_stored >= 0:
            # a place the gazetteer lacks, taken from an answer or a follow-up ("KL")
            edits.append((at_stored, at_stored + len(stored_place), place))
        elif zh:
            at = frame.time.end if frame.time is not None else _zh_start(text)
            edits.append((at, at, place))
        else:
            at = len(text.rstrip(_TAIL))
            edits.append((at, at, f" in {place}"))
    if when is not None:
        if frame.time is not None:
            start = frame.time.start
            led = _EN_DAY_LEAD.search(text[:start]) is not None
            if not zh and when.startswith("on ") and led:
                when = when[3:]
            elif not zh and _EN_DAY.match(when) and not led:
                when = f"on {when}"  # "tomorrow" → "on Friday"
            edits.append((start, frame.time.end, when))
        elif zh:
            first = frame.places[0].start if frame.places else _zh_start(text)
            edits.append((first, first, when))
        else:
            at = len(text.rstrip(_TAIL))
            edits.append((at, at, f" {when}"))
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        text = text[:start] + new + text[end:]
    return text


_EN_DAY = re.compile(
    r"(?:mon|tues|wednes|thurs|fri|satur|sun)day|\d|the\s+\d|"
    r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\s+\d",
    re.IGNORECASE,
)
_EN_DAY_LEAD = re.compile(r"\b(?:on|for|by|until|till|from|this|next|every)\s+$", re.IGNORECASE)
_ZH_LEAD = re.compile(r"^(?:那么|那|还有|请问|请)")


def _zh_start(text: str) -> int:
    m = _ZH_LEAD.match(text)
    return m.end() if m else 0
