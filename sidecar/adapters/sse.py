"""Server-Sent Events as they stream past: reading a copy for the answer's text and usage, and
dropping the usage-only event a client did not ask for."""

from __future__ import annotations

from typing import Any

import orjson

from ..session.model import Usage
from .answers import dig, read_usage

# Where a streamed event carries a piece of the answer, first match wins.
DELTA_PATHS = ("choices.0.delta.content", "delta.content", "delta", "content", "text", "token")
# Keys of an event that carries the whole answer at once (a final "done" event).
FINAL_TEXT_KEYS = ("result", "response", "answer")


def split_event(buffer: bytes) -> tuple[bytes, bytes, bytes] | None:
    """The first complete event of ``buffer``: ``(event, separator, rest)``, or None when the
    buffer holds no complete event yet. Events end with a blank line (``\\n\\n`` or ``\\r\\n\\r\\n``)."""
    idx = buffer.find(b"\n\n")
    idx_crlf = buffer.find(b"\r\n\r\n")
    if idx_crlf != -1 and (idx == -1 or idx_crlf < idx):
        return buffer[:idx_crlf], b"\r\n\r\n", buffer[idx_crlf + 4 :]
    if idx != -1:
        return buffer[:idx], b"\n\n", buffer[idx + 2 :]
    return None


def event_data(raw: bytes) -> bytes:
    """The ``data:`` lines of one event, joined as the SSE specification says."""
    return b"\n".join(
        line[5:].removeprefix(b" ") for line in raw.splitlines() if line.startswith(b"data:")
    )


class SSEAccumulator:
    """Feed it raw chunks; it assembles the ``data:`` events' text and remembers the usage."""

    def __init__(self, delta_paths: tuple[str, ...] = DELTA_PATHS) -> None:
        self.delta_paths = delta_paths
        self._buffer = b""
        self._parts: list[str] = []
        self.usage: Usage | None = None
        self.model = ""
        self.done = False  # a ``[DONE]`` line
        self.final_text: str | None = None  # an event that carries the whole answer
        self.finish_reason: str | None = None
        self.tool_calls = False  # the answer asks the client to call tools
        self.events = 0

    @property
    def text(self) -> str:
        return self.final_text if self.final_text is not None else "".join(self._parts)

    @property
    def finished(self) -> bool:
        """The stream said its answer is whole, even if the connection ended before its last byte."""
        return self.done or self.final_text is not None or self.finish_reason is not None

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        while (found := split_event(self._buffer)) is not None:
            event, _, self._buffer = found
            self._event(event)

    def _event(self, raw: bytes) -> None:
        data = event_data(raw)
        if not data:
            return
        self.events += 1
        if data.strip() == b"[DONE]":
            self.done = True
            return
        try:
            obj: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._parts.append(data.decode("utf-8", "replace"))
            return
        if not isinstance(obj, dict):
            return
        if isinstance(obj.get("usage"), dict) or "tokens_used" in obj:
            self.usage = read_usage(obj)
        if isinstance(obj.get("model"), str):
            self.model = obj["model"]
        choice = dig(obj, "choices.0")
        if isinstance(choice, dict):
            if isinstance(choice.get("finish_reason"), str):
                self.finish_reason = choice["finish_reason"]
            if dig(choice, "delta.tool_calls") or dig(choice, "delta.function_call"):
                self.tool_calls = True
        for key in FINAL_TEXT_KEYS:
            if isinstance(obj.get(key), str):
                self.final_text = obj[key]
                return
        for path in self.delta_paths:
            value = dig(obj, path)
            if isinstance(value, str):
                self._parts.append(value)
                return

    def result_usage(self) -> Usage:
        usage = self.usage or Usage()
        if not usage.model and self.model:
            usage = Usage(
                usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, self.model
            )
        return usage


def is_usage_only(data: bytes) -> bool:
    """An OpenAI chunk that only reports usage: ``{"choices": [], "usage": {...}}``."""
    if b'"usage"' not in data:
        return False  # the common case, decided without parsing
    try:
        obj: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(obj, dict) and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)


class UsageChunkFilter:
    """Drops the usage-only chunk that ``stream_options.include_usage`` adds to an OpenAI stream.

    The sidecar asks for it to learn the token usage; a client that did not ask must not see it.
    Complete events go on as they arrive, byte for byte; only the incomplete tail of the event
    being received is held until its end arrives, so at most one event is ever buffered.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> bytes:
        self._buffer += chunk
        out = bytearray()
        while (found := split_event(self._buffer)) is not None:
            event, separator, self._buffer = found
            if not is_usage_only(event_data(event)):
                out += event + separator
        return bytes(out)

    def flush(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return b"" if is_usage_only(event_data(rest)) else rest
