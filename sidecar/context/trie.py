"""Keyword alternations written as tries, which the regex engine walks one character at a time."""

from __future__ import annotations

import re

_Trie = dict[str, "_Trie"]


def longest_first(words: list[str]) -> str:
    """A pattern for the longest of ``words`` that fits at a position (also under IGNORECASE).

    The regex engine tries the alternatives of "a|b|c" one by one at every position of a
    message; a trie tries only the branch of the next character, several times faster for
    dozens of keywords. It finds what the alternatives sorted longest first find: the words
    that fit at a position are prefixes of one another, so they lie on one path of the trie,
    and its greedy optional groups try the deepest first (backtracking when what follows the
    pattern fails). Branches are keyed by ASCII-lowercased characters, which IGNORECASE
    matches alike; a word with any other cased character keeps the plain alternation.
    """
    if any(not c.isascii() and c.lower() + c.upper() != c + c for w in words for c in w):
        return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    root: _Trie = {}
    for word in words:
        node = root
        for ch in word.lower():
            node = node.setdefault(ch, {})
        node[""] = {}  # a word ends here

    def branch(node: _Trie) -> str:
        alts = [re.escape(ch) + branch(sub) for ch, sub in node.items() if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if "" in node else body

    return branch(root)
