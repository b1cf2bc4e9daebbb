"""A cheap token estimate for trimming the history window to a budget."""

from __future__ import annotations

import re

# One token per CJK ideograph, kana or hangul syllable; Latin words cost about one token per
# four characters (rounded up); digits group by three; each other symbol is one token.
_PIECES = re.compile(
    r"(?P<cjk>[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\u3131-\u318e])"
    r"|(?P<word>[^\W\d_]+)"
    r"|(?P<num>\d+)"
    r"|(?P<sym>[^\s\w])"
)
# The same count for ASCII text, without a Python step per piece: a run of letters costs one
# token per started four (``[A-Za-z]{1,4}`` matches it in that many pieces), a run of digits
# one per started three, a symbol one. (Only for ASCII: elsewhere ``\w`` and ``\d`` are wider
# and a word may run into CJK characters.)
_ASCII_TOKENS = re.compile(r"[A-Za-z]{1,4}|[0-9]{1,3}|[^\s\w]")


def estimate_tokens(text: str) -> int:
    """Roughly how many tokens ``text`` costs a typical LLM tokenizer; at least 1 if non-empty."""
    if not text:
        return 0
    if text.isascii():
        return max(len(_ASCII_TOKENS.findall(text)), 1)
    total = 0
    for m in _PIECES.finditer(text):
        kind = m.lastgroup
        if kind == "cjk" or kind == "sym":
            total += 1
        elif kind == "word":
            total += -(-len(m.group(0)) // 4)
        else:
            total += -(-len(m.group(0)) // 3)
    return max(total, 1)
