"""Reading an upstream's answer: the assistant's text, token usage and model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..session.model import Usage


def dig(obj: Any, path: str) -> Any:
    """Follow a dotted path (``choices.0.message.content``) through dicts and lists."""
    for part in path.split("."):
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return None
    return obj


def answer_text(body: Any, paths: Sequence[str]) -> str | None:
    for path in paths:
        value = dig(body, path)
        if isinstance(value, str):
            return value
    return None


# Token columns are 32-bit integers; an absurd count from an upstream must not cost the turn.
MAX_TOKENS = 2**31 - 1


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return min(value, MAX_TOKENS)
    return 0


def read_usage(body: Any) -> Usage:
    """``usage.{prompt,completion,total}_tokens``, ``usage.{input,output}_tokens`` or ``tokens_used``."""
    if not isinstance(body, dict):
        return Usage()
    model = body.get("model") or body.get("model_used") or ""
    model = model if isinstance(model, str) else ""
    usage = body.get("usage")
    if isinstance(usage, dict):
        prompt = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
        completion = _int(usage.get("completion_tokens", usage.get("output_tokens")))
        total = _int(usage.get("total_tokens")) or min(prompt + completion, MAX_TOKENS)
        return Usage(prompt, completion, total, model)
    total = _int(body.get("tokens_used"))
    return Usage(0, 0, total, model)
