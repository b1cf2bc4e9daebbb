"""Reading an upstream's answer: the assistant's text, token usage and model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..session.model import Usage

# Each path's parts, split once: the paths are a few fixed ones (the code's and the config's).
_PARTS: dict[str, tuple[str, ...]] = {}


def dig(obj: Any, path: str) -> Any:
    """Follow a dotted path (``choices.0.message.content``) through dicts and lists."""
    parts = _PARTS.get(path)
    if parts is None:
        parts = tuple(path.split("."))
        if len(_PARTS) < 1024:  # bounded, should a caller ever pass paths it made up
            _PARTS[path] = parts
    for part in parts:
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


def token_count(value: Any) -> int:
    """A token count as reported, or 0 when it is not a sane one."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return min(value, MAX_TOKENS)
    return 0


def read_usage(body: Any) -> Usage:
    """``usage.{prompt,completion,total}_tokens``, ``usage.{input,output}_tokens`` or ``tokens_used``."""
    return _read_usage(body, None, None)


def _read_usage(body: Any, cost_key: str | None, provider_key: str | None) -> Usage:
    """``read_usage``, with the cost and the provider when their keys are given (one ``Usage``
    built: ``dataclasses.replace`` of a first one cost more than reading the body)."""
    if not isinstance(body, dict):
        return Usage()
    model = body.get("model") or body.get("model_used") or ""
    model = model if isinstance(model, str) else ""
    provider = ""
    if provider_key is not None:
        named = body.get(provider_key)
        provider = named if isinstance(named, str) else ""
    usage = body.get("usage")
    if isinstance(usage, dict):
        prompt = token_count(usage.get("prompt_tokens", usage.get("input_tokens")))
        completion = token_count(usage.get("completion_tokens", usage.get("output_tokens")))
        total = token_count(usage.get("total_tokens")) or min(prompt + completion, MAX_TOKENS)
        cost = cost_of(usage.get(cost_key)) if cost_key is not None else None
        return Usage(prompt, completion, total, model, cost, provider)
    total = token_count(body.get("tokens_used"))
    return Usage(0, 0, total, model, None, provider)


def cost_of(value: Any) -> float | None:
    """A reported cost (a non-negative finite number), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value) if math.isfinite(value) else None
    return None


def read_usage_details(body: Any, cost_key: str = "cost", provider_key: str = "provider") -> Usage:
    """``read_usage`` plus the cost (``usage.<cost_key>``) and the provider (``<provider_key>``)."""
    return _read_usage(body, cost_key, provider_key)
