"""The ``openai`` adapter: ``POST /v1/chat/completions``.

The session is named by ``X-Session-ID`` (or the body's ``user`` field when configured). Stored
history goes after the leading system messages and before the request's own messages, minus what
the client already re-sent. Only the new user message and the answer are recorded. Streams ask the
upstream for usage (``stream_options.include_usage``); the turn pipeline hides the extra usage chunk
from a client that did not ask for it. Tool calls and multi-part contents are forwarded untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import BadRequest
from ..session.model import Message, Usage
from .answers import answer_text, dig, read_usage
from .base import Incoming, Injection, StreamReader
from .sse import SSEAccumulator
from .tasks import parse_json_object, validate_session_id

SYSTEM_ROLES = ("system", "developer")
# Roles a request may end with: a new question, or the results of the tools the model called.
TURN_ENDS = ("user", "tool", "function")


# Parts that hold text: chat completions and Anthropic say ``text``, the Responses API
# ``input_text`` (what the user wrote) and ``output_text`` (what the model answered).
TEXT_PARTS = ("text", "input_text", "output_text")


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a multi-part list
    (tool calls, tool results, images and the like are not text)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict)
            and part.get("type") in TEXT_PARTS
            and isinstance(part.get("text"), str)
        )
    return ""


def _same(stored: Message, sent: Any) -> bool:
    return (
        isinstance(sent, dict)
        and sent.get("role") == stored.role
        and content_text(sent.get("content")) == stored.content
    )


def missing_history(stored: Sequence[Message], sent_prior: Sequence[Any]) -> Sequence[Message]:
    """The stored messages the client did not re-send itself.

    Clients of chat APIs often re-send the conversation; when the request's earlier messages
    overlap the end of the stored history, only the part before the overlap is added.
    """
    if not sent_prior or not stored:
        return stored
    for k in range(min(len(stored), len(sent_prior)), 0, -1):
        if all(_same(s, m) for s, m in zip(stored[-k:], sent_prior[:k], strict=True)):
            return stored[:-k]
    if _same(stored[-1], sent_prior[-1]):
        return []  # the client holds the whole conversation up to now
    return stored


class OpenAIAdapter:
    name = "openai"
    async_tasks = False

    def __init__(self, *, session_from_user: bool = False) -> None:
        self.session_from_user = session_from_user

    def parse(self, raw: bytes, headers: Any) -> Incoming:
        body = parse_json_object(raw)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty list", code="invalid_messages")
        last = messages[-1]
        if not isinstance(last, dict) or last.get("role") not in TURN_ENDS:
            raise BadRequest(
                "the last message must be the user's or a tool's result", code="invalid_messages"
            )
        # After tool results the turn is still the user's last question; its answer is recorded
        # with it once the model answers in text.
        question = next(
            (m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"),
            None,
        )
        if question is None:
            raise BadRequest("the messages hold no user message", code="invalid_messages")
        session_id = headers.get("X-Session-ID") or None
        if session_id is None and self.session_from_user and isinstance(body.get("user"), str):
            session_id = body["user"] or None
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
        messages: list[Any] = body["messages"]
        n_system = 0
        while (
            n_system < len(messages)
            and isinstance(messages[n_system], dict)
            and messages[n_system].get("role") in SYSTEM_ROLES
        ):
            n_system += 1
        own = messages[n_system:]
        history = missing_history(injection.history, own[:-1])
        note = (
            [{"role": "system", "content": injection.system_note}] if injection.system_note else []
        )
        body["messages"] = [
            *messages[:n_system],
            *note,
            *({"role": m.role, "content": m.content} for m in history),
            *own,
        ]
        return body

    def answer(self, body: Any) -> tuple[str | None, Usage]:
        """The answer's text, or None while the model is asking for tool calls: the turn is
        recorded when the answer that follows the tools' results arrives."""
        message = dig(body, "choices.0.message")
        if isinstance(message, dict) and (
            message.get("tool_calls") or message.get("function_call")
        ):
            return None, read_usage(body)
        return answer_text(body, ("choices.0.message.content",)), read_usage(body)

    def prepare_stream(self, body: dict[str, Any]) -> bool:
        options = body.get("stream_options")
        asked = isinstance(options, dict) and options.get("include_usage") is True
        body["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
        return not asked

    def continuation_id(self, answer: Any) -> str | None:
        return None

    def stream_reader(self) -> StreamReader:
        return SSEAccumulator()
