"""Traditional Chinese is matched as Simplified; what the user reads stays in their script.

OpenCC's ``t2s`` conversion is phrase-based and almost always keeps the length of the text;
the matchers rely on that (a span found in the converted text is the same span in the user's
text), so when a phrase conversion would change the length the text is converted one character
at a time instead.
"""

from __future__ import annotations

import functools
import re

import opencc

_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_HAN_RANGES = ((0x3400, 0xA000), (0xF900, 0xFB00))  # the characters _HAN finds
# Characters t2s changes only inside a phrase of its dictionary (TSPhrases: "深沈" → "深沉",
# while 沈 alone is a surname and stays); every other phrase that converts holds a character
# that converts on its own. tests/test_context_script.py checks this against the dictionary.
_PHRASE_ONLY = "哩坏沈甦瞭藉衹覆"


@functools.cache
def _converter(config: str) -> opencc.OpenCC:
    return opencc.OpenCC(config)


@functools.cache
def _convertible() -> re.Pattern[str]:
    """Any character t2s may change: each Han character it converts on its own (all of them
    probed once, in one call, a line each), the phrase-only ones, and any character beyond the
    Basic Multilingual Plane (rare; such a text takes the full conversion)."""
    probe = [chr(c) for start, end in _HAN_RANGES for c in range(start, end)]
    converted = _converter("t2s").convert("\n".join(probe)).split("\n")
    if len(converted) != len(probe):  # cannot line the probe up: convert every Han text
        return _HAN
    changed = {c for c, out in zip(probe, converted, strict=True) if out != c}
    chars = "".join(re.escape(c) for c in sorted(changed | set(_PHRASE_ONLY)))
    return re.compile(f"[{chars}\U00010000-\U0010ffff]")


def to_simplified(text: str) -> str:
    """``text`` with Traditional characters replaced by Simplified ones, same length."""
    if text.isascii() or not _HAN.search(text):
        return text
    # Most Chinese messages are Simplified already: without a character t2s could change,
    # its conversion would give the text back as it is (a phrase converts only where one of
    # its characters is such a character), so the call is skipped.
    if not _convertible().search(text):
        return text
    converted: str = _converter("t2s").convert(text)
    if len(converted) == len(text):
        return converted
    convert = _converter("t2s").convert
    return "".join(ch if len(c := convert(ch)) != 1 else c for ch in text)


@functools.lru_cache(maxsize=256)
def to_traditional(text: str) -> str:
    """Simplified words the engine adds to a completion, in Traditional characters.

    Those are a few topic words and dates ("天气", "明天"): each is converted once.
    """
    if text.isascii():
        return text
    return str(_converter("s2t").convert(text))
