"""An extractor that asks an external service, falling back to the rules when it cannot."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiohttp
import orjson

from sidecar.config import redact_url
from sidecar.context.resolution import Resolution
from sidecar.context.rules import RulesExtractor

log = logging.getLogger(__name__)

_ENTITY_KEYS = frozenset({"location", "date", "time_expression", "topic"})


class HttpExtractor:
    """POSTs ``{query, context, last_assistant, timezone}`` as JSON to ``url``.

    The service answers ``{"entities": {...}, "completed_query": str | null}``. On a timeout, a
    transport error, a non-2xx status or an answer of the wrong shape, the rules' answer is used
    and a warning logged, so a sick extraction service never fails a user's request.
    """

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float,
        fallback: RulesExtractor,
    ) -> None:
        self._url = url
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._fallback = fallback

    async def resolve(
        self,
        query: str,
        *,
        context: Mapping[str, Any],
        last_assistant: str | None,
        timezone: str,
        now: datetime | None = None,
    ) -> Resolution:
        body = {
            "query": query,
            "context": dict(context),
            "last_assistant": last_assistant,
            "timezone": timezone,
        }
        try:
            async with self._session.post(
                self._url,
                data=orjson.dumps(body, default=str),
                headers={"Content-Type": "application/json"},
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                resp.raise_for_status()
                payload = orjson.loads(await resp.read())
            return _parse(payload)
        except (TimeoutError, aiohttp.ClientError) as e:
            log.warning(
                "context extractor %s unavailable, using rules: %r", redact_url(self._url), e
            )
        except (orjson.JSONDecodeError, ValueError) as e:
            log.warning(
                "context extractor %s answered badly, using rules: %s", redact_url(self._url), e
            )
        return self._fallback.resolve_sync(
            query, context=context, last_assistant=last_assistant, timezone=timezone, now=now
        )


def _parse(payload: object) -> Resolution:
    if not isinstance(payload, dict):
        raise ValueError("answer is not a JSON object")
    entities = payload.get("entities", {})
    completed = payload.get("completed_query")
    if not isinstance(entities, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in entities.items()
    ):
        raise ValueError("'entities' must be an object of strings")
    if completed is not None and not isinstance(completed, str):
        raise ValueError("'completed_query' must be a string or null")
    kept = {k: v for k, v in entities.items() if k in _ENTITY_KEYS and v.strip()}
    return Resolution(kept, completed or None)
