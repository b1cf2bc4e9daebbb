"""Hostile input made harmless: JSON nesting bounded before it is parsed, and text the stores
would refuse cleaned before a turn is acknowledged.

The nesting limit: a request body nested deeper than ``MAX_JSON_DEPTH`` (arrays and objects)
is answered 400 ``json_too_deep`` before the parser sees it. The parser accepts 1023 levels but
the encoder stops near 254, so without a limit such a body would be parsed, then fail on its way
upstream; 128 leaves room for what the sidecar adds and is far beyond any real request.

Stored text: PostgreSQL's ``text`` and ``jsonb`` refuse NUL, and UTF-8 cannot carry lone
surrogates; a turn holding either would be answered 200 and then refused by the writer. Every
stored string (query, answer, model, context keys and values, tool names) goes through
``storable`` first, which replaces each such character with U+FFFD.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from .errors import BadRequest

MAX_JSON_DEPTH = 128

# A JSON string literal, written so the regex engine never backtracks inside it.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def json_depth_exceeds(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``raw`` nests arrays/objects deeper than ``limit`` (exact for valid JSON).

    A body with at most ``limit`` opening brackets cannot be deeper, which settles nearly every
    request with one ``count``; otherwise string literals are dropped, the brackets kept, and
    the running depth computed in C (``accumulate`` over signed bytes).
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return False
    steps = memoryview(brackets.translate(_STEPS)).cast("b")
    return max(itertools.accumulate(steps)) > limit


def check_json_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    if json_depth_exceeds(raw, limit):
        raise BadRequest(
            f"the body nests arrays or objects more than {limit} levels deep",
            code="json_too_deep",
        )


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def storable_text(value: str) -> str:
    """``value`` with NUL and lone surrogates replaced by U+FFFD (other text unchanged)."""
    if value.isascii() and "\x00" not in value:
        return value
    return _UNSTORABLE.sub(REPLACEMENT, value)


def storable(value: Any) -> Any:
    """``value`` (JSON-like) with every string, mapping keys included, made ``storable_text``."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(v) for v in value]
    return value


def is_visible_ascii(value: str, max_len: int) -> bool:
    """1 to ``max_len`` printable ASCII characters (for header values used as keys)."""
    return 0 < len(value) <= max_len and value.isascii() and value.isprintable()
