"""Reading the upstream's answer for memory: a JSON body or a Server-Sent Events stream → the
assistant's text and the token usage."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from ..adapters.base import Adapter, StreamReader
from ..adapters.sse import UsageChunkFilter
from ..frozen import frozen
from ..proxy import ChunkFilter
from ..session.model import Usage
from ..upstream import Response

# Answers larger than this are relayed but not parsed for memory.
MAX_PARSED_ANSWER = 32 * 1024 * 1024


@frozen
class Answer:
    """What the assistant answered, as far as it got."""

    text: str
    usage: Usage
    partial: bool = False


def too_large(up: Response) -> bool:
    """An answer announced larger than the sidecar reads: relayed as it comes, not remembered."""
    return up.content_length is not None and up.content_length > MAX_PARSED_ANSWER


@frozen
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
    """Reads a copy of an SSE stream as it is relayed, with the adapter's reader (and takes out
    the usage the client did not ask for). ``on_complete`` is called once, as soon as the
    stream says nothing more of the turn will come: a backend may keep the connection open
    after that, and the turn must not wait for it to close."""

    def __init__(self, reader: StreamReader, hide_usage: bool) -> None:
        self.reader = reader
        self.transform: ChunkFilter | None = UsageChunkFilter() if hide_usage else None
        self.on_complete: Callable[[], None] | None = None
        self._completed = False

    def feed(self, chunk: bytes) -> None:
        self.reader.feed(chunk)
        self._check_complete()

    def end(self) -> None:
        """The relay is over: read what the stream left unterminated."""
        self.reader.end()
        self._check_complete()

    def _check_complete(self) -> None:
        if not self._completed and self.reader.complete:
            self._completed = True
            if self.on_complete is not None:
                self.on_complete()

    def answer(self, status: int, complete: bool) -> Answer | None:
        """The streamed answer, or ``None`` when there is none to remember (an error status, no
        text, or tool calls).

        A stream cut short (the client went away, or the upstream stopped) is an answer as far
        as it got, marked ``partial``: that text was generated and shown to the user, and the
        next turn ("go on", "that is not what I asked") refers to it. A stream whose events said
        the answer was whole (``[DONE]``, a final event with the full result, a
        ``finish_reason``, ``message_stop``, ``response.completed``) is not partial even if its
        connection ended early.
        """
        reader = self.reader
        if not 200 <= status < 300 or not reader.text or reader.tool_calls:
            return None
        return Answer(reader.text, reader.result_usage(), partial=not (complete or reader.finished))
