"""Reading the upstream's answer for memory: a JSON body or a Server-Sent Events stream → the
assistant's text and the token usage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from ..adapters.base import Adapter
from ..adapters.sse import SSEAccumulator, UsageChunkFilter
from ..errors import UpstreamTimeout, UpstreamUnavailable
from ..proxy import ChunkFilter
from ..session.model import Usage

# Answers larger than this are relayed but not parsed for memory.
MAX_PARSED_ANSWER = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Answer:
    """What the assistant answered, as far as it got."""

    text: str
    usage: Usage
    partial: bool = False


def too_large(up: aiohttp.ClientResponse) -> bool:
    """An answer announced larger than the sidecar reads: relayed as it comes, not remembered."""
    return up.content_length is not None and up.content_length > MAX_PARSED_ANSWER


async def read_answer(up: aiohttp.ClientResponse) -> bytes:
    """The upstream's whole answer; a stall or a cut while reading it is a 504 or a 502."""
    try:
        return await up.read()
    except TimeoutError as e:
        raise UpstreamTimeout("the upstream stopped sending its answer") from e
    except aiohttp.ClientError as e:
        raise UpstreamUnavailable(f"the upstream's answer broke off: {type(e).__name__}") from e


@dataclass(frozen=True, slots=True)
class JsonCapture:
    """A successful JSON answer: the parsed body (``None`` if unreadable) and its answer, if any."""

    parsed: Any
    answer: Answer | None


def capture_json(adapter: Adapter, status: int, body: bytes) -> JsonCapture | None:
    """The answer in a JSON body; ``None`` for an error status or a body too large to read."""
    if not 200 <= status < 300 or len(body) > MAX_PARSED_ANSWER:
        return None
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    text, usage = adapter.answer(parsed)
    return JsonCapture(parsed, Answer(text, usage) if text is not None else None)


class StreamCapture:
    """Reads a copy of an SSE stream as it is relayed (and hides a usage chunk the client did
    not ask for)."""

    def __init__(self, hide_usage: bool) -> None:
        self.acc = SSEAccumulator()
        self.transform: ChunkFilter | None = UsageChunkFilter() if hide_usage else None

    def feed(self, chunk: bytes) -> None:
        self.acc.feed(chunk)

    def answer(self, status: int, complete: bool) -> Answer | None:
        """The streamed answer, or ``None`` when there is none to remember (an error status, no
        text, or tool calls).

        A stream cut short (the client went away, or the upstream stopped) is an answer as far
        as it got, marked ``partial``: that text was generated and shown to the user, and the
        next turn ("go on", "that is not what I asked") refers to it. A stream whose events said
        the answer was whole (``[DONE]``, a final event with the full result, a
        ``finish_reason``) is not partial even if its connection ended early.
        """
        acc = self.acc
        if not 200 <= status < 300 or not acc.text or acc.tool_calls:
            return None
        return Answer(acc.text, acc.result_usage(), partial=not (complete or acc.finished))
