"""Server-Sent Events as they stream past: reading a copy for the answer's text and usage, and
taking out of a stream the usage a client did not ask for."""

from __future__ import annotations

import re
from typing import Any

import orjson

from ..session.model import Usage
from .answers import dig, read_usage

# Where a streamed event carries a piece of the answer, first match wins.
DELTA_PATHS = ("choices.0.delta.content", "delta.content", "delta", "content", "text", "token")
# Keys of an event that carries the whole answer at once (a final "done" event).
FINAL_TEXT_KEYS = ("result", "response", "answer")

# The specification's line endings: CRLF, a lone CR, or a lone LF.
_LINE_END = re.compile(rb"\r\n|\r|\n")


def split_event(buffer: bytes, *, final: bool = False) -> tuple[bytes, bytes, bytes] | None:
    """The first complete event of ``buffer``: ``(event, separator, rest)``, or None when the
    buffer holds no complete event yet. An event ends with a blank line; lines end with CRLF,
    CR or LF, mixed as they come. A CR at the very end of the buffer may be the first half of
    a CRLF, so it ends nothing until the next byte (or ``final``: the stream is over)."""
    line_start = 0
    term_start = 0
    for m in _LINE_END.finditer(buffer):
        if m.end() == len(buffer) and m.group() == b"\r" and not final:
            return None
        if m.start() == line_start:  # an empty line
            cut = term_start if line_start > 0 else 0
            return buffer[:cut], buffer[cut : m.end()], buffer[m.end() :]
        term_start, line_start = m.start(), m.end()
    return None


def _field(line: bytes, name: bytes) -> bytes | None:
    """The value of a ``name:`` line (one optional space after the colon), else None."""
    if line == name:
        return b""
    if line.startswith(name + b":"):
        return line[len(name) + 1 :].removeprefix(b" ")
    return None


def event_data(raw: bytes) -> bytes:
    """The ``data:`` lines of one event, joined as the SSE specification says."""
    return b"\n".join(
        value for line in _LINE_END.split(raw) if (value := _field(line, b"data")) is not None
    )


def event_name(raw: bytes) -> str:
    """The event's ``event:`` field ("" when it has none: a plain ``message``)."""
    name = b""
    for line in _LINE_END.split(raw):
        if (value := _field(line, b"event")) is not None:
            name = value
    return name.decode("utf-8", "replace")


class EventReader:
    """Feed it raw chunks as they pass; it calls ``on_event(name, data)`` for each complete event
    that carries data. ``end()`` reads what the stream left in the buffer when it closed."""

    def __init__(self) -> None:
        self._buffer = b""
        self.events = 0

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        while (found := split_event(self._buffer)) is not None:
            event, _, self._buffer = found
            self._dispatch(event)

    def end(self) -> None:
        while (found := split_event(self._buffer, final=True)) is not None:
            event, _, self._buffer = found
            self._dispatch(event)
        # A last event the stream did not close with a blank line is not an event (the spec).
        self._buffer = b""

    def _dispatch(self, raw: bytes) -> None:
        data = event_data(raw)
        if data:
            self.events += 1
            self.on_event(event_name(raw), data)

    def on_event(self, name: str, data: bytes) -> None:
        raise NotImplementedError


class SSEAccumulator(EventReader):
    """Assembles the ``data:`` events' text of an OpenAI-style (or plain) stream and remembers
    the usage."""

    def __init__(self, delta_paths: tuple[str, ...] = DELTA_PATHS) -> None:
        super().__init__()
        self.delta_paths = delta_paths
        self._parts: list[str] = []
        self.usage: Usage | None = None
        self.model = ""
        self.done = False  # a ``[DONE]`` line
        self.final_text: str | None = None  # an event that carries the whole answer
        self.finish_reason: str | None = None
        self.tool_calls = False  # the answer asks the client to call tools

    @property
    def text(self) -> str:
        return self.final_text if self.final_text is not None else "".join(self._parts)

    @property
    def finished(self) -> bool:
        """The stream said its answer is whole, even if the connection ended before its last byte."""
        return self.done or self.final_text is not None or self.finish_reason is not None

    @property
    def complete(self) -> bool:
        return self.done

    @property
    def whole(self) -> Any:
        return None

    def on_event(self, name: str, data: bytes) -> None:
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


def _empty(value: Any) -> bool:
    return value is None or value in ("", [], {})


def _carries_nothing(choice: Any) -> bool:
    """A choice with no content, role, tool call, finish reason or log probabilities."""
    if not isinstance(choice, dict):
        return False
    delta = choice.get("delta")
    if not (_empty(delta) or (isinstance(delta, dict) and all(map(_empty, delta.values())))):
        return False
    return all(_empty(v) for k, v in choice.items() if k not in ("index", "delta"))


def without_usage(data: bytes) -> bytes | None:
    """An OpenAI-style chunk with its ``usage`` field taken out: ``data`` itself when it has none,
    the chunk re-encoded without it, or None when nothing else was in it (OpenAI's
    ``choices: []``, LiteLLM's ``choices: [{"index": 0, "delta": {}}]``): drop the event."""
    if b'"usage"' not in data:
        return data  # the common case, decided without parsing
    try:
        obj: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    if not isinstance(obj, dict) or "usage" not in obj:
        return data
    del obj["usage"]
    choices = obj.get("choices")
    if isinstance(choices, list) and all(_carries_nothing(c) for c in choices):
        return None
    return orjson.dumps(obj)


class UsageChunkFilter:
    """Takes out of an OpenAI-style stream the usage that ``stream_options.include_usage`` adds.

    The sidecar asks for usage to learn the token counts; a client that did not ask must see no
    ``usage`` field, and no chunk that carried only that. Events without one go on byte for byte,
    as they arrive; only the incomplete tail of the event being received is held until its end
    arrives, so at most one event is ever buffered.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> bytes:
        self._buffer += chunk
        out = bytearray()
        while (found := split_event(self._buffer)) is not None:
            event, separator, self._buffer = found
            out += self._filtered(event, separator)
        return bytes(out)

    def flush(self) -> bytes:
        out = bytearray()
        while (found := split_event(self._buffer, final=True)) is not None:
            event, separator, self._buffer = found
            out += self._filtered(event, separator)
        rest, self._buffer = self._buffer, b""
        return bytes(out) + self._filtered(rest, b"") if rest else bytes(out)

    @staticmethod
    def _filtered(event: bytes, separator: bytes) -> bytes:
        data = event_data(event)
        kept = without_usage(data)
        if kept is None:
            return b""
        if kept is data:
            return event + separator
        eol = m.group() if (m := _LINE_END.search(separator)) is not None else b"\n"
        lines = [line for line in _LINE_END.split(event) if _field(line, b"data") is None]
        return eol.join([*lines, b"data: " + kept]) + separator
