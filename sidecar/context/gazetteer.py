"""The world-cities gazetteer: place names in Chinese and English, loaded once, lazily."""

from __future__ import annotations

import dataclasses
import gzip
import logging
import threading
import time
import unicodedata
from importlib import resources
from pathlib import Path

import orjson

from sidecar.context.script import to_simplified

from ..frozen import frozen

log = logging.getLogger(__name__)

DATA_FILE = "gazetteer.json.gz"


def fold_latin(name: str) -> str:
    """The lookup key of a Latin-script name: accents removed, lowercase, no periods.

    Must agree with the folding in ``scripts/build_gazetteer.py``.
    """
    if name.isascii():
        return " ".join(name.replace(".", " ").lower().split())
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.replace(".", " ").replace("’", "'").lower().split())


def _reach(latin: dict[str, str]) -> tuple[dict[str, int], dict[str, int]]:
    """For multi-word names: the most words of a name by its first word, and by its first two."""
    by_first: dict[str, int] = {}
    by_pair: dict[str, int] = {}
    for name in latin:
        if " " in name:
            words = name.split(" ")
            pair = f"{words[0]} {words[1]}"
            by_first[words[0]] = max(by_first.get(words[0], 1), len(words))
            by_pair[pair] = max(by_pair.get(pair, 2), len(words))
    return by_first, by_pair


@frozen
class Gazetteer:
    """Place names → canonical English name, split by script for cheap lookups."""

    latin: dict[str, str]
    han: dict[str, str]
    major: frozenset[str]  # Latin keys of countries, regions and cities of 100,000 or more
    max_latin_words: int
    max_han_chars: int
    load_ms: float
    han_major: frozenset[str] = frozenset()  # Chinese names of major places
    han_regions: frozenset[str] = frozenset()  # Chinese names of countries and regions
    region_keys: frozenset[str] = frozenset()  # folded English names of those regions
    # first word of a multi-word Latin name → most words of a name starting with it; a word
    # missing here starts no longer name, so the matcher looks it up alone
    latin_reach: dict[str, int] = dataclasses.field(default_factory=dict)
    # the same by the first two words ("san jose"); most pairs of words start no name
    latin_reach2: dict[str, int] = dataclasses.field(default_factory=dict)
    # first two characters of a Chinese name → length of the longest name starting with them;
    # most pairs of characters in a message start no name and are passed over at once
    han_reach: dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.latin_reach and self.latin:
            by_first, by_pair = _reach(self.latin)
            object.__setattr__(self, "latin_reach", by_first)
            object.__setattr__(self, "latin_reach2", by_pair)
        if not self.han_reach and self.han:
            han_reach: dict[str, int] = {}
            for name in self.han:
                if len(name) > han_reach.get(name[:2], 0):
                    han_reach[name[:2]] = len(name)
            object.__setattr__(self, "han_reach", han_reach)

    def __len__(self) -> int:
        return len(self.latin) + len(self.han)

    @classmethod
    def from_lines(cls, lines: list[str], load_ms: float = 0.0) -> Gazetteer:
        latin: dict[str, str] = {}
        han: dict[str, str] = {}
        major: set[str] = set()
        han_major: set[str] = set()
        han_regions: set[str] = set()
        region_keys: set[str] = set()
        max_words = 1
        max_chars = 2
        han_lines: list[tuple[str, list[str]]] = []
        for line in lines:
            name, _, rest = line.partition("\t")
            if not name:
                continue
            fields = rest.split("\t")
            canon = fields[0]
            if name.isascii():
                latin[name] = canon
                if len(fields) > 2 and fields[2].strip() == "1":
                    major.add(name)
                max_words = max(max_words, name.count(" ") + 1)
            else:
                han_lines.append((name, fields))
        # Messages are matched in Simplified characters, and GeoNames has many Chinese names
        # only in Traditional (麗江) or only with 市 (花蓮市): index those forms too. One OpenCC
        # call for all names keeps the load fast.
        simple_names = to_simplified("\n".join(n for n, _ in han_lines)).split("\n")
        if len(simple_names) != len(han_lines):
            simple_names = [to_simplified(n) for n, _ in han_lines]
        extra: list[tuple[str, list[str]]] = []
        for (name, fields), simple in zip(han_lines, simple_names, strict=True):
            forms = [name, simple]
            if len(name) >= 3 and name.endswith(("市", "县", "縣")):
                forms += [name[:-1], simple[:-1]]
            for form in forms:
                extra.append((form, fields))
        for name, fields in extra:
            if name in han:
                continue  # the name as GeoNames spells it wins over a derived form
            han[name] = fields[0]
            max_chars = max(max_chars, len(name))
            if len(fields) > 2 and fields[2].strip() == "1":
                han_major.add(name)
            if len(fields) > 1 and not fields[1].strip():
                # countries and regions carry no country code
                han_regions.add(name)
                region_keys.add(fold_latin(fields[0]))
        return cls(
            latin,
            han,
            frozenset(major),
            min(max_words, 6),
            max_chars,
            load_ms,
            frozenset(han_major),
            frozenset(han_regions),
            frozenset(region_keys),
        )

    def to_json(self) -> bytes:
        """The compiled form that ``load_gazetteer`` reads (sorted, so rebuilds are stable)."""
        return orjson.dumps(
            {
                "latin": self.latin,
                "han": self.han,
                "major": sorted(self.major),
                "han_major": sorted(self.han_major),
                "han_regions": sorted(self.han_regions),
                "region_keys": sorted(self.region_keys),
                "max_latin_words": self.max_latin_words,
                "max_han_chars": self.max_han_chars,
            },
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def from_json(cls, raw: bytes, load_ms: float = 0.0) -> Gazetteer:
        data = orjson.loads(raw)
        return cls(
            data["latin"],
            data["han"],
            frozenset(data["major"]),
            int(data["max_latin_words"]),
            int(data["max_han_chars"]),
            load_ms,
            frozenset(data["han_major"]),
            frozenset(data["han_regions"]),
            frozenset(data["region_keys"]),
        )


_lock = threading.Lock()
_cached: Gazetteer | None = None


def load_gazetteer(path: Path | None = None) -> Gazetteer:
    """Load the bundled gazetteer (or the file at ``path``); the bundled one is loaded once.

    The bundled file is the compiled JSON (a few times faster to read than parsing lines); a
    ``.tsv.gz`` at ``path`` is read line by line.
    """
    global _cached
    if path is None and _cached is not None:
        return _cached
    with _lock:
        if path is None and _cached is not None:
            return _cached
        started = time.perf_counter()
        if path is None:
            raw = resources.files(__package__).joinpath("data", DATA_FILE).read_bytes()
        else:
            raw = path.read_bytes()
        text = gzip.decompress(raw)
        if path is not None and path.name.endswith(".tsv.gz"):
            gaz = Gazetteer.from_lines(text.decode("utf-8").splitlines())
        else:
            gaz = Gazetteer.from_json(text)
        load_ms = (time.perf_counter() - started) * 1000
        gaz = dataclasses.replace(gaz, load_ms=load_ms)
        log.debug("gazetteer loaded: %d names in %.1f ms", len(gaz), load_ms)
        if path is None:
            _cached = gaz
        return gaz
