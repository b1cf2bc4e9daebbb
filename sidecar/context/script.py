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


@functools.cache
def _converter(config: str) -> opencc.OpenCC:
    return opencc.OpenCC(config)


def to_simplified(text: str) -> str:
    """``text`` with Traditional characters replaced by Simplified ones, same length."""
    if text.isascii() or not _HAN.search(text):
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
