"""The history window forwarded with a request: the last messages, cut to a token budget."""

from __future__ import annotations

from collections.abc import Sequence

from ..context import estimate_tokens
from .model import Message


def message_tokens(message: Message) -> int:
    """Tokens the upstream reported for the message, else an estimate."""
    return message.tokens if message.tokens is not None else estimate_tokens(message.content)


def history_window(
    messages: Sequence[Message], limit: int, token_budget: int | None = None
) -> list[Message]:
    """The newest ``limit`` messages (oldest first); with a budget, as many of the newest as fit."""
    window = list(messages[-limit:]) if limit > 0 else []
    if token_budget is None:
        return window
    kept: list[Message] = []
    used = 0
    for message in reversed(window):
        cost = message_tokens(message)
        if used + cost > token_budget:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    return kept
