"""Reading a copy of a Server-Sent Events answer as it streams past: text deltas and usage."""

from __future__ import annotations

from typing import Any

import orjson

from ..session.model import Usage
from .answers import dig, read_usage

# Where a streamed event carries a piece of the answer, first match wins.
DELTA_PATHS = ("choices.0.delta.content", "delta.content", "delta", "content", "text", "token")


class SSEAccumulator:
    """Feed it raw chunks; it assembles the ``data:`` events' text and remembers the usage."""

    def __init__(self, delta_paths: tuple[str, ...] = DELTA_PATHS) -> None:
        self.delta_paths = delta_paths
        self._buffer = b""
        self._parts: list[str] = []
        self.usage: Usage | None = None
        self.model = ""
        self.done = False
        self.final_text: str | None = None  # an event that carries the whole answer
        self.events = 0

    @property
    def text(self) -> str:
        return self.final_text if self.final_text is not None else "".join(self._parts)

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        while True:
            # Events end with a blank line; accept \n\n and \r\n\r\n.
            idx = self._buffer.find(b"\n\n")
            idx_crlf = self._buffer.find(b"\r\n\r\n")
            if idx_crlf != -1 and (idx == -1 or idx_crlf < idx):
                event, self._buffer = self._buffer[:idx_crlf], self._buffer[idx_crlf + 4 :]
            elif idx != -1:
                event, self._buffer = self._buffer[:idx], self._buffer[idx + 2 :]
            else:
                return
            self._event(event)

    def _event(self, raw: bytes) -> None:
        data = b"\n".join(
            line[5:].lstrip(b" ") for line in raw.splitlines() if line.startswith(b"data:")
        )
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
        for key in ("result", "response", "answer"):
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
