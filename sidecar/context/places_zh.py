"""Chinese place names in a message, by evidence: a gazetteer name must stand as a word.

Matched on the message in Simplified characters (``script.to_simplified``), same length as the
user's text, so the spans hold for what the user wrote.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sidecar.context.gazetteer import Gazetteer
from sidecar.context.lexicon import CJK_AMBIGUOUS, HAN_FOLLOW, HAN_LEAD, HAN_NAMED_AFTER
from sidecar.context.spans import PlaceMatch, Span, overlaps

_HAN_RUN = re.compile(r"[\u4e00-\u9fff]+")


def find_han(
    text: str, gaz: Gazetteer, blocked: Sequence[Span], answering: bool
) -> list[PlaceMatch]:
    """Chinese places in ``text`` (already in Simplified characters), by evidence."""
    found: list[PlaceMatch] = []
    reach = gaz.han_reach
    for run in _HAN_RUN.finditer(text):
        s, e = run.span()
        # The positions whose two characters start a name, in one pass: most start none.
        starts = [k for k in range(s, e - 1) if text[k : k + 2] in reach]
        after = s  # a position before it is inside the place found last
        for i in starts:
            if i < after:
                continue
            # no name is longer than the longest one starting with these two characters
            for size in range(min(reach[text[i : i + 2]], e - i), 1, -1):
                name = text[i : i + size]
                canon = gaz.han.get(name)
                if canon is None or (blocked and overlaps(i, i + size, blocked)):
                    continue
                if name in CJK_AMBIGUOUS:
                    if not _han_cue(text, i, i + size, blocked, answering):
                        continue
                elif not _han_evidence(text, i, i + size, name, gaz, blocked, answering):
                    continue
                found.append(PlaceMatch(name, canon, i, i + size, "zh"))
                after = i + size
                break
    return _qualify_han(text, found, gaz)


def _han_evidence(
    text: str,
    start: int,
    end: int,
    name: str,
    gaz: Gazetteer,
    blocked: Sequence[Span],
    answering: bool,
) -> bool:
    """Whether a Chinese gazetteer name stands as a word of its own rather than inside one.

    Named-after compounds ("上海菜", "广东话") are never the place. A major place needs a word
    boundary on one side at least ("吃北京烤鸭" has none); a small place needs one on both sides,
    as small places' names are often ordinary words ("三角形").
    """
    if text.startswith(HAN_NAMED_AFTER, end):
        return False
    if name[0] in HAN_LEAD and any(text[start + 1 : start + 1 + k] in gaz.han for k in (2, 3, 4)):
        return False  # "那大阪呢": 那 is "then", the place is 大阪 (not 那大)
    if answering and text.strip(" ，。！？,.!?呢吧啊") == name:
        return True
    before = text[start - 1] if start else ""
    after = text[end] if end < len(text) else ""
    lead = (
        not before
        or not _HAN_RUN.match(before)
        or before in HAN_LEAD
        or any(e == start for _, e in blocked)
    )
    follow = (
        not after
        or not _HAN_RUN.match(after)
        or after in HAN_FOLLOW
        or any(s == end for s, _ in blocked)
    )
    if not lead:
        # "美国的波特兰", "德州巴黎": a place named after its country or region
        head = start - 1 if before == "的" else start
        lead = any(
            text[head - k : head] in gaz.han_regions
            and (before == "的" or text[head - k : head].endswith(("国", "州", "省")))
            for k in (2, 3, 4)
            if head - k >= 0
        )
    if name in gaz.han_regions and not follow:
        # A country or province right before a noun is mostly an adjective ("韩国化妆品"),
        # unless a place in it follows ("美国波特兰").
        return any(text[end : end + k] in gaz.han for k in range(2, 5))
    if name in gaz.han_major:
        return lead or follow
    return lead and follow


def _qualify_han(text: str, found: list[PlaceMatch], gaz: Gazetteer) -> list[PlaceMatch]:
    """ "美国的巴黎", "德州巴黎": a region then a place in it are one place."""
    out: list[PlaceMatch] = []
    for place in found:
        prev = out[-1] if out else None
        if (
            prev is not None
            and prev.text in gaz.han_regions
            and place.text not in gaz.han_regions
            and (
                text[prev.end : place.start] == "的"
                or (prev.end == place.start and prev.text.endswith(("国", "州", "省")))
            )
        ):
            out[-1] = PlaceMatch(
                text[prev.start : place.end], place.canonical, prev.start, place.end, "zh"
            )
            continue
        out.append(place)
    return out


def _han_cue(text: str, start: int, end: int, blocked: Sequence[Span], answering: bool) -> bool:
    if any(s == end for s, _ in blocked):
        return True  # followed by a time or topic word: "大同明天天气"
    after = text[end : end + 3]
    if after.startswith(("市", "的天气", "天气", "的气温", "的温度", "会下", "下雨", "下雪")):
        return True
    core = text.strip(" ，。！？,.!?呢吧啊")
    return answering and core == text[start:end]
