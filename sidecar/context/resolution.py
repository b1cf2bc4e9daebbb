"""The context engine's seam: what an extractor returns and the protocol it implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from datetime import datetime
from typing import Any, Protocol

from ..frozen import frozen


@frozen
class Resolution:
    """What one user query contributes to the session's context.

    ``entities`` holds only this query's own slots, among ``location``, ``date`` (ISO
    ``YYYY-MM-DD``), ``time_expression`` (the user's words) and ``topic``; the caller merges them
    into the stored context, new values replacing old. ``completed_query`` is the self-contained
    question when the query was an elliptical follow-up, otherwise None.
    """

    entities: Mapping[str, str] = field(default_factory=dict)
    completed_query: str | None = None


class Extractor(Protocol):
    async def resolve(
        self,
        query: str,
        *,
        context: Mapping[str, Any],
        last_assistant: str | None,
        timezone: str,
        now: datetime | None = None,
    ) -> Resolution: ...
