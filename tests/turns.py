"""Posting one turn to a sidecar's tasks route, the way every test that needs one does."""

from __future__ import annotations

from typing import Any, NamedTuple

import aiohttp
import orjson
from multidict import CIMultiDictProxy


class Answered(NamedTuple):
    status: int
    body: Any  # the parsed JSON answer; None when it is not JSON
    headers: CIMultiDictProxy[str]


async def post_turn(
    http: aiohttp.ClientSession,
    url: str,
    query: str,
    session_id: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float = 30.0,
    path: str = "/api/tasks",
    **extra: Any,
) -> Answered:
    """POST ``{"query", "session_id", **extra}`` to ``url + path`` and read the whole answer."""
    body: dict[str, Any] = {"query": query, **extra}
    if session_id is not None:
        body["session_id"] = session_id
    async with http.post(
        url + path,
        json=body,
        headers=headers or {},
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    ) as r:
        raw = await r.read()
        try:
            parsed = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = None
        return Answered(r.status, parsed, r.headers)
