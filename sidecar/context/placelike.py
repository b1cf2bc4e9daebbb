"""Evidence against a place: names that contain a place name but are something else.

Two bundled lists, both data with their provenance in the files:

* ``placelike.tsv``: brands, companies, foods, products, people and titles that contain a place
  name ("巴黎世家", "China Mobile", "Buffalo wings"). A gazetteer hit inside one is no place.
* ``common_place_words.txt``: small places whose one-word name is an everyday English word
  ("airport", "hope"); such a name needs a capital inside a sentence to count.

Also the regions a place can be qualified by ("Paris, Texas", "美国的巴黎").
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import field
from importlib import resources

from sidecar.context.lexicon import REGIONS_EN
from sidecar.context.script import to_simplified

from ..frozen import frozen

Span = tuple[int, int]

_WORD = re.compile(r"[A-Za-z\u00c0-\u024f0-9]+(?:['’\-+][A-Za-z\u00c0-\u024f0-9]+)*|\+")
# What _WORD takes into a word and the place matcher's words do not (see ascii_spans).
_DIGIT_OR_PLUS = re.compile(r"[0-9+]")
# A one-word "exact" name still names the place right after one of these ("flights to Nokia").
_PLACE_LEAD = frozenset(["in", "to", "from", "at", "near", "visiting", "around"])


@frozen
class PlaceLike:
    han: frozenset[str]
    han_first: frozenset[str]
    han_max: int
    latin_any: frozenset[str]  # lowercase, words joined by one space
    latin_exact: frozenset[str]  # as written
    latin_first: frozenset[str]  # lowercase first words of either kind
    latin_max: int
    common_words: frozenset[str]
    # A search in C for the characters a listed Chinese name can start with: most messages
    # hold none, and the per-character loop below then has nothing to do. Where one is, the
    # longest name starting with its two characters bounds the lengths tried.
    _han_start: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _han_reach: dict[str, int] = field(init=False, repr=False, compare=False)
    # The first two words (as _WORD cuts them, lowercase) of every listed name of two or more:
    # a phrase longer than one word is tried only where its first two words are such a pair.
    _latin_pairs: frozenset[tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _exact_lower: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        han_start = "[" + "".join(re.escape(c) for c in sorted(self.han_first)) + "]"
        object.__setattr__(self, "_han_start", re.compile(han_start if self.han_first else "(?!)"))
        reach: dict[str, int] = {}
        for name in self.han:
            if len(name) > reach.get(name[:2], 0):
                reach[name[:2]] = len(name)
        object.__setattr__(self, "_han_reach", reach)
        pairs = (tuple(_WORD.findall(n.lower())[:2]) for n in self.latin_any | self.latin_exact)
        object.__setattr__(self, "_latin_pairs", frozenset(p for p in pairs if len(p) == 2))
        object.__setattr__(self, "_exact_lower", frozenset(n.lower() for n in self.latin_exact))

    def spans(self, text: str, simple: str | None = None) -> list[Span]:
        """Where ``text`` names one of the listed things; Chinese matched in Simplified
        (``simple``: ``text`` already through ``to_simplified``)."""
        out: list[Span] = []
        if not text.isascii():
            if simple is None:
                simple = to_simplified(text)
            for start in self._han_start.finditer(simple):
                i = start.start()
                reach = self._han_reach.get(simple[i : i + 2])
                if reach is None:
                    continue  # most characters start a listed name, few pairs of them do
                for size in range(min(reach, self.han_max, len(simple) - i), 1, -1):
                    if simple[i : i + size] in self.han:
                        out.append((i, i + size))
                        break
            if _WORD.search(text) is None:
                return out  # no word for a Latin name to start at (most Chinese messages)
        out.extend(self._latin_spans(text))
        return out

    def ascii_spans(self, text: str, words: list[re.Match[str]], lowered: list[str]) -> list[Span]:
        """``spans`` of an ASCII message whose words the caller has already cut as the place
        matcher does (``entities._LATIN_WORD``: letters joined by apostrophes or hyphens), with
        their lowercase forms. Without a digit or "+" in the message, this module's own cut
        gives the same words, and the message is not cut again."""
        if _DIGIT_OR_PLUS.search(text) is not None:
            return list(self._latin_spans(text))
        return list(self._latin_spans(text, words, lowered))

    def _latin_spans(
        self,
        text: str,
        words: list[re.Match[str]] | None = None,
        lowered: list[str] | None = None,
    ) -> Iterator[Span]:
        # One lower() for a whole ASCII message (the same words); the words that start a
        # listed name, usually none, picked out in one pass before any match object is made.
        if lowered is not None:
            pass  # cut by the caller, the same words
        elif text.isascii():
            words = None
            lowered = _WORD.findall(text.lower())
        else:
            words = list(_WORD.finditer(text))
            lowered = [w.group(0).lower() for w in words]
        # A start needs its own word listed (a one-word phrase is the word) or, for a longer
        # phrase, its first two words a listed pair: "the" or "in" before an unlisted word
        # start nothing. Judged on the lowercase words first, so that most messages end here
        # without match objects; a name listed as written is then checked as written.
        pairs = self._latin_pairs
        starts = [
            i
            for i, w in enumerate(lowered)
            if w in self.latin_first
            and (
                w in self.latin_any or w in self._exact_lower or tuple(lowered[i : i + 2]) in pairs
            )
        ]
        if not starts:
            return
        if words is None:
            words = list(_WORD.finditer(text))
        starts = [
            i
            for i in starts
            if lowered[i] in self.latin_any
            or words[i].group(0) in self.latin_exact
            or tuple(lowered[i : i + 2]) in pairs
        ]
        for i in starts:
            w = words[i]
            longest = min(self.latin_max, len(words) - i)
            if longest > 1 and tuple(lowered[i : i + 2]) not in self._latin_pairs:
                longest = 1
            for size in range(longest, 0, -1):
                start, end = w.start(), words[i + size - 1].end()
                phrase = text[start:end]
                if " ".join(phrase.lower().split()) in self.latin_any:
                    yield start, end
                    break
                if phrase in self.latin_exact:
                    before = words[i - 1].group(0).lower() if i else ""
                    if size > 1 or before not in _PLACE_LEAD:
                        yield start, end
                    break


def _read(name: str) -> list[str]:
    raw = resources.files(__package__).joinpath("data", name).read_text(encoding="utf-8")
    return [line for line in raw.splitlines() if line.strip() and not line.startswith("#")]


def _build() -> PlaceLike:
    han: set[str] = set()
    latin_any: set[str] = set()
    latin_exact: set[str] = set()
    for line in _read("placelike.tsv"):
        name, _kind, match, *_source = line.split("\t")
        if not name.isascii():
            han.add(to_simplified(name))
        elif match == "exact":
            latin_exact.add(name)
        else:
            latin_any.add(" ".join(name.lower().split()))
    first = {n.split()[0].lower() for n in latin_any | latin_exact}
    words = [len(n.split()) for n in latin_any | latin_exact]
    common = frozenset(w.strip() for w in _read("common_place_words.txt"))
    return PlaceLike(
        frozenset(han),
        frozenset(n[0] for n in han),
        max((len(n) for n in han), default=2),
        frozenset(latin_any),
        frozenset(latin_exact),
        frozenset(first),
        max(words, default=1),
        common,
    )


_lock = threading.Lock()
_cached: PlaceLike | None = None


def load_placelike() -> PlaceLike:
    """The bundled lists, read once."""
    global _cached
    if _cached is None:
        with _lock:
            if _cached is None:
                _cached = _build()
    return _cached


def is_region_en(key: str, han_region_canon: frozenset[str]) -> bool:
    """Whether a folded Latin name is a country or first-level region ("texas", "france")."""
    return key in REGIONS_EN or key in han_region_canon
