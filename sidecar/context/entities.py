"""Places in a user's message (Chinese and English)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

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
from sidecar.context.placelike import PlaceLike, load_placelike
from sidecar.context.places_zh import find_han
from sidecar.context.spans import PlaceMatch as PlaceMatch
from sidecar.context.spans import Span, overlaps
from sidecar.context.spans import TopicMatch as TopicMatch

_HAN_RUN = re.compile(r"[\u4e00-\u9fff]+")
_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+(?:['’\-][A-Za-z\u00c0-\u024f]+)*")
# A letter _LATIN_WORD starts with: a Chinese message without one has no Latin place.
_LATIN_LETTER = re.compile(r"[A-Za-z\u00c0-\u024f]")
_SENTENCE_END = frozenset(".!?。！？;；\n")


def _sentence_initial(text: str, start: int) -> bool:
    i = start - 1
    while i >= 0 and text[i] in " \t\"'(“‘":
        i -= 1
    return i < 0 or text[i] in _SENTENCE_END


def _previous_word(words: list[re.Match[str]], index: int) -> str:
    return words[index - 1].group(0).lower() if index > 0 else ""


def _find_latin(
    text: str,
    gaz: Gazetteer,
    blocked: Sequence[Span],
    answering: bool,
    listed: PlaceLike | None = None,
) -> list[PlaceMatch]:
    """Latin-script places; ``listed``: brand/product names to block, looked for only when a
    name that reads as a place was found (most messages have none)."""
    # One lower() for a whole ASCII message: the same words (the same list without capitals).
    words: list[re.Match[str]] = []
    if text.isascii():
        lowered_text = text.lower()
        lowered = _LATIN_WORD.findall(lowered_text)
        originals = lowered if lowered_text == text else _LATIN_WORD.findall(text)
    else:
        words = list(_LATIN_WORD.finditer(text))
        originals = [w.group(0) for w in words]
        lowered = [w.lower() for w in originals]
    starts = _latin_starts(lowered, originals, gaz, answering, text.isascii())
    if not starts:
        return []
    listed_spans: list[Span] | None = None if listed is not None else []

    def is_listed(start: int, end: int) -> bool:
        # looked for once, when a name passed every other test (most words fail one)
        nonlocal listed_spans
        if listed_spans is None:
            assert listed is not None
            listed_spans = listed.ascii_spans(text, words, lowered)
        return bool(listed_spans) and overlaps(start, end, listed_spans)

    words = words or list(_LATIN_WORD.finditer(text))
    first_clause_end = _first_clause_end(text) if answering else 0
    found: list[PlaceMatch] = []
    i = 0
    for k in starts:
        if k < i:
            continue  # inside the place found before
        i = k
        best = _place_at(
            text, words, lowered, i, gaz, blocked, answering, first_clause_end, is_listed
        )
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


def _latin_starts(
    lowered: list[str], originals: list[str], gaz: Gazetteer, answering: bool, ascii_text: bool
) -> list[int]:
    """The words a place can start at, judged by the words alone, before any match object.

    A word with a non-ASCII letter is looked up folded: always kept. Another is kept if it is
    a name that can read as a place (a lower-case everyday word such as "rain" or "to" cannot,
    unless it answers "which city?": ``_has_evidence`` refuses it), or if it and the next word
    start a longer name ("san jose").
    """
    latin, reach, pairs = gaz.latin, gaz.latin_reach, gaz.latin_reach2
    last = len(lowered) - 1
    # one comprehension (a word is one word: _is_common(w) is len(w) <= 3 or a common word);
    # the words of an ASCII message are not asked one by one whether they are ASCII
    return [
        k
        for k, w in enumerate(lowered)
        if (not ascii_text and not w.isascii())
        or (
            w in latin
            and (answering or originals[k][:1].isupper() or not (len(w) <= 3 or w in COMMON_WORDS))
        )
        or (
            w in reach
            and k < last
            and (
                (not ascii_text and not lowered[k + 1].isascii())
                or f"{w} {lowered[k + 1]}" in pairs
            )
        )
    ]


def _place_at(
    text: str,
    words: list[re.Match[str]],
    lowered: list[str],
    i: int,
    gaz: Gazetteer,
    blocked: Sequence[Span],
    answering: bool,
    first_clause_end: int,
    is_listed: Callable[[int, int], bool],
) -> tuple[int, str] | None:
    """The longest name starting at ``words[i]`` that reads as a place and is not inside a
    listed name (``is_listed``): (words, canonical)."""
    n = len(words)
    word = words[i].group(0)
    head = lowered[i] if word.isascii() else _head(word)
    # Longer names are tried only where the first two words start one, as far as such a name
    # reaches and the words are joined by single spaces (most words start no longer name).
    longest = 1
    if head in gaz.latin_reach and i + 1 < n and _joined_by_spaces(text, words, i, 2):
        second = words[i + 1].group(0)
        pair = f"{head} {lowered[i + 1] if second.isascii() else _head(second)}"
        reach = gaz.latin_reach2.get(pair)
        if reach is not None:
            reach = min(reach, gaz.max_latin_words)
            longest = 2
            while (
                longest < reach
                and i + longest < n
                and _joined_by_spaces(text, words, i + longest - 1, 2)
            ):
                longest += 1
    for size in range(longest, 0, -1):
        start, end = words[i].start(), words[i + size - 1].end()
        key = fold_latin(text[start:end]) if size > 1 else lowered[i]
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
        if is_listed(start, end):
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
        # folded only when something follows that could qualify it (seldom)
        key = fold_latin(place.text) if m is not None else ""
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
    if text.isascii():
        return _find_latin(text, gaz, blocked, answering, load_placelike())
    blocked = [*blocked, *load_placelike().spans(text, simple or None)]
    found = find_han(simple or text, gaz, blocked, answering)
    if simple and simple != text:  # found in Simplified: the places keep the user's characters
        found = [
            PlaceMatch(text[p.start : p.end], p.canonical, p.start, p.end, "zh") for p in found
        ]
    if _LATIN_LETTER.search(text) is None:
        return found  # no Latin word, no Latin place: found is in order already
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
