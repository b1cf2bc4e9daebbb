"""What the matchers report: spans of the user's text holding a place, a time or a topic."""

from __future__ import annotations

from collections.abc import Sequence

from ..frozen import frozen

Span = tuple[int, int]


@frozen
class PlaceMatch:
    text: str  # as the user wrote it
    canonical: str | None  # gazetteer's English name; None for an unlisted answer
    start: int
    end: int
    lang: str


@frozen
class TopicMatch:
    topic: str
    keyword: str  # the user's word, e.g. "温度", "temperature"
    start: int
    end: int


def overlaps(start: int, end: int, spans: Sequence[Span]) -> bool:
    # a loop rather than any() over a generator: the lists are short, the set-up is the cost
    for s, e in spans:  # noqa: SIM110
        if s < end and start < e:
            return True
    return False
