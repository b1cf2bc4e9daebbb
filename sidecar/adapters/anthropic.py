"""The ``anthropic`` adapter: Anthropic's Messages API, ``POST /v1/messages``.

The session is named by ``X-Session-ID`` (or ``metadata.user_id`` when configured). Stored history
goes before the request's own ``messages``, minus what the client re-sent itself; the top-level
``system`` is left as sent. The API wants roles to alternate, so where the join would put two
messages of one role side by side they become one message with both contents. The answer's text
is its ``text`` blocks; ``tool_use`` blocks pass through and are never stored as text: an answer
that stops for tools is recorded with the answer that follows the tools' results.

Shapes follow the API reference and the official SDK (anthropic-sdk-python:
``src/anthropic/types/message.py``, ``raw_message_stream_event.py``,
``lib/streaming/_messages.py`` ``accumulate_event``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ..errors import BadRequest
from ..session.model import Message, Usage
from .answers import read_usage
from .base import Incoming, Injection, StreamReader
from .openai import content_text, missing_history
from .sse import EventReader
from .tasks import parse_json_object, validate_session_id

# ``stop_reason`` of an answer that waits for the client to run tools.
TOOL_USE = "tool_use"


def _is_question(message: Any) -> bool:
    """A user message that holds words (not only the results of tools)."""
    return (
        isinstance(message, dict)
        and message.get("role") == "user"
        and content_text(message.get("content")) != ""
    )


def _blocks(content: Any) -> list[Any]:
    if isinstance(content, list):
        return list(content)
    return [{"type": "text", "text": content if isinstance(content, str) else ""}]


def alternate(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same messages with neighbours of one role joined into one message (their content
    blocks in order): the Messages API rejects two user or two assistant messages in a row."""
    joined: list[dict[str, Any]] = []
    for message in messages:
        if joined and joined[-1].get("role") == message.get("role"):
            last = joined[-1]
            joined[-1] = {
                **last,
                "content": _blocks(last.get("content")) + _blocks(message.get("content")),
            }
        else:
            joined.append(message)
    return joined


def answer_text(message: Any) -> str:
    """The concatenated ``text`` blocks of a Messages API answer."""
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return ""
    return "".join(
        block["text"]
        for block in content
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    )


def with_note(system: Any, note: str) -> Any:
    """The request's ``system`` with a note after the client's own: appended to its text, or as
    one more text block (a ``system`` of another shape is left as sent)."""
    if system is None or system == "":
        return note
    if isinstance(system, str):
        return f"{system}\n\n{note}"
    if isinstance(system, list):
        return [*system, {"type": "text", "text": note}]
    return system


class AnthropicAdapter:
    name = "anthropic"
    async_tasks = False

    def __init__(self, *, session_from_user: bool = False) -> None:
        self.session_from_user = session_from_user

    def parse(self, raw: bytes, headers: Any) -> Incoming:
        body = parse_json_object(raw)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty list", code="invalid_messages")
        if not all(isinstance(m, dict) for m in messages):
            raise BadRequest("every message must be a JSON object", code="invalid_messages")
        # After tool results (a user message of tool_result blocks) the turn is still the
        # user's last question; its answer is recorded with it once the model answers in text.
        question = next((m for m in reversed(messages) if _is_question(m)), None)
        if question is None:
            raise BadRequest("the messages hold no user message", code="invalid_messages")
        session_id = headers.get("X-Session-ID") or None
        metadata = body.get("metadata")
        if session_id is None and self.session_from_user and isinstance(metadata, dict):
            user_id = metadata.get("user_id")
            session_id = user_id if isinstance(user_id, str) and user_id else None
        if session_id is not None:
            session_id = validate_session_id(session_id)
        return Incoming(
            body=body,
            query=content_text(question.get("content")),
            session_id=session_id,
            stream=body.get("stream") is True,
        )

    def inject(self, incoming: Incoming, injection: Injection) -> dict[str, Any]:
        body = dict(incoming.body)
        own: list[dict[str, Any]] = body["messages"]
        history: Sequence[Message] = missing_history(injection.history, own[:-1])
        # The API refuses empty text blocks: a stored message without words (a question that
        # was only an image, say) is left out rather than spoil every later request.
        stored = [{"role": m.role, "content": m.content} for m in history if m.content.strip()]
        # The conversation opens with the user: a window cut inside a turn loses its answer half.
        while stored and stored[0]["role"] != "user":
            stored.pop(0)
        if injection.system_note:
            body["system"] = with_note(body.get("system"), injection.system_note)
        if not stored:
            return body
        body["messages"] = [*alternate([*stored, own[0]]), *own[1:]]
        return body

    def answer(self, body: Any) -> tuple[str | None, Usage]:
        """The answer's text, or None while the model waits for tool results."""
        if not isinstance(body, dict) or body.get("type") != "message":
            return None, Usage()
        if body.get("stop_reason") == TOOL_USE:
            return None, read_usage(body)
        return answer_text(body), read_usage(body)

    def prepare_stream(self, body: dict[str, Any]) -> bool:
        return False  # the stream always reports usage (message_start, message_delta)

    def continuation_id(self, answer: Any) -> str | None:
        return None

    def stream_reader(self) -> StreamReader:
        return AnthropicStream()


def _tokens(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class AnthropicStream(EventReader):
    """Reads a Messages API stream: ``message_start`` (model, input tokens),
    ``content_block_start``/``content_block_delta`` (text of ``text`` blocks only),
    ``message_delta`` (stop reason, cumulative output tokens), ``message_stop``."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[str] = []
        self._text_blocks: set[int] = set()
        self.model = ""
        self.input_tokens = 0
        self.output_tokens = 0
        self.stop_reason: str | None = None
        self.stopped = False
        self.tool_calls = False

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def finished(self) -> bool:
        return self.stopped or self.stop_reason is not None

    @property
    def complete(self) -> bool:
        return self.stopped

    @property
    def whole(self) -> Any:
        return None

    def on_event(self, name: str, data: bytes) -> None:
        try:
            event: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type") or name
        if kind == "message_start" and isinstance(message := event.get("message"), dict):
            if isinstance(message.get("model"), str):
                self.model = message["model"]
            self._usage(message.get("usage"))
        elif kind == "content_block_start" and isinstance(
            block := event.get("content_block"), dict
        ):
            if block.get("type") == "text" and isinstance(event.get("index"), int):
                self._text_blocks.add(event["index"])
                if isinstance(block.get("text"), str):
                    self._parts.append(block["text"])
        elif kind == "content_block_delta" and isinstance(delta := event.get("delta"), dict):
            if (
                delta.get("type") == "text_delta"
                and event.get("index") in self._text_blocks
                and isinstance(delta.get("text"), str)
            ):
                self._parts.append(delta["text"])
        elif kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self.stop_reason = delta["stop_reason"]
                self.tool_calls = self.stop_reason == TOOL_USE
            self._usage(event.get("usage"))
        elif kind == "message_stop":
            self.stopped = True

    def _usage(self, usage: Any) -> None:
        # Counts in message_delta are cumulative: the latest figure is the whole.
        if not isinstance(usage, dict):
            return
        if (n := _tokens(usage.get("input_tokens"))) is not None:
            self.input_tokens = n
        if (n := _tokens(usage.get("output_tokens"))) is not None:
            self.output_tokens = n

    def result_usage(self) -> Usage:
        return read_usage(
            {
                "model": self.model,
                "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
            }
        )
