"""The ``responses`` adapter: OpenAI's Responses API, ``POST /v1/responses``.

The session is named by ``X-Session-ID``. ``input`` (a string, or a list of items) gets the stored
history prepended as message items, minus what the client re-sent itself; ``instructions`` are
left as sent. A request with ``previous_response_id`` has its history on the backend already:
nothing is injected, and its turn is still recorded (likewise with ``conversation``, a
conversation the backend stores). The answer's text is the ``output_text``
content of the ``output`` message items; streams are read from ``response.output_text.delta``
and ``response.completed``. An answer that only calls tools is recorded with the answer that
follows the tools' results.

Shapes follow the official SDK (openai-python: ``src/openai/types/responses/response.py``,
``response_stream_event.py``, ``response_text_delta_event.py``, ``response_completed_event.py``).
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import BadRequest
from ..session.model import Usage
from .answers import read_usage
from .base import Incoming, Injection, StreamReader
from .openai import content_text, missing_history
from .sse import EventReader
from .tasks import parse_json_object, validate_session_id

# Statuses of a response whose answer is not there yet (``background: true``).
PENDING = ("queued", "in_progress")


def _is_question(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and item.get("role") == "user"
        and item.get("type", "message") == "message"
    )


def output_text(response: Any) -> str:
    """The ``output_text`` parts of a response's ``output`` message items."""
    output = response.get("output") if isinstance(response, dict) else None
    if not isinstance(output, list):
        return ""
    return "".join(
        content_text(item.get("content"))
        for item in output
        if isinstance(item, dict) and item.get("type") == "message"
    )


# Output items that ask the client to run something; the backend's own tools (web search, file
# search, code interpreter, ...) run there and end in a message.
CLIENT_CALLS = frozenset(
    {
        "function_call",
        "custom_tool_call",
        "computer_call",
        "local_shell_call",
        "shell_call",
        "apply_patch_call",
        "mcp_approval_request",
    }
)


def calls_tools(response: Any) -> bool:
    """The response's output asks the client to run a tool before the answer can go on."""
    output = response.get("output") if isinstance(response, dict) else None
    return isinstance(output, list) and any(
        isinstance(item, dict) and item.get("type") in CLIENT_CALLS for item in output
    )


def read_answer(response: Any) -> tuple[str | None, Usage]:
    if not isinstance(response, dict) or response.get("object") != "response":
        return None, Usage()
    if response.get("status") in PENDING:
        return None, read_usage(response)
    text = output_text(response)
    if not text and calls_tools(response):
        return None, read_usage(response)
    return text, read_usage(response)


SYSTEM = ("system", "developer")


class ResponsesAdapter:
    name = "responses"
    async_tasks = False

    def parse(self, raw: bytes, headers: Any) -> Incoming:
        body = parse_json_object(raw)
        items = body.get("input")
        if isinstance(items, str):
            query = items
        elif isinstance(items, list) and items:
            # After tool results (function_call_output items) the turn is still the user's
            # last question. A request continuing a stored response may carry none.
            question = next((i for i in reversed(items) if _is_question(i)), None)
            query = content_text(question.get("content")) if question is not None else ""
        else:
            raise BadRequest(
                "input must be a string or a non-empty list of items", code="invalid_input"
            )
        session_id = headers.get("X-Session-ID") or None
        if session_id is not None:
            session_id = validate_session_id(session_id)
        previous = body.get("previous_response_id")
        return Incoming(
            body=body,
            query=query,
            session_id=session_id,
            stream=body.get("stream") is True,
            continues=previous if isinstance(previous, str) and previous else None,
        )

    def inject(self, incoming: Incoming, injection: Injection) -> dict[str, Any]:
        body = dict(incoming.body)
        if body.get("previous_response_id") or body.get("conversation"):
            return body  # the backend holds this conversation already
        items = body["input"]
        own: list[Any] = [{"role": "user", "content": items}] if isinstance(items, str) else items
        history = missing_history(injection.history, own[:-1])
        stored = [{"type": "message", "role": m.role, "content": m.content} for m in history]
        if injection.system_note:
            # After the client's own instructions: its leading system (or developer) items in
            # ``input`` when it has some, else ``instructions``, which come before all input.
            n = 0
            while n < len(own) and isinstance(own[n], dict) and own[n].get("role") in SYSTEM:
                n += 1
            note = {"type": "message", "role": "system", "content": injection.system_note}
            if n:
                own = [*own[:n], note, *own[n:]]
            else:
                stored = [note, *stored]
        elif not history:
            return body
        body["input"] = [*stored, *own]
        return body

    def answer(self, body: Any) -> tuple[str | None, Usage]:
        """The answer's text, or None while it is pending or only calls tools."""
        return read_answer(body)

    def prepare_stream(self, body: dict[str, Any]) -> bool:
        return False  # response.completed always carries the usage

    def continuation_id(self, answer: Any) -> str | None:
        rid = answer.get("id") if isinstance(answer, dict) else None
        return rid if isinstance(rid, str) and 0 < len(rid) <= 256 else None

    def stream_reader(self) -> StreamReader:
        return ResponsesStream()


class ResponsesStream(EventReader):
    """Reads a Responses API stream: text from ``response.output_text.delta``; usage, model and
    the whole output from ``response.completed`` (or ``response.incomplete``)."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[str] = []
        self.final: dict[str, Any] | None = None
        self.model = ""
        self.tool_calls = False

    @property
    def text(self) -> str:
        streamed = "".join(self._parts)
        if not streamed and self.final is not None:
            return output_text(self.final)
        return streamed

    @property
    def finished(self) -> bool:
        return self.final is not None

    @property
    def whole(self) -> Any:
        return self.final

    @property
    def complete(self) -> bool:
        return self.final is not None

    def on_event(self, name: str, data: bytes) -> None:
        try:
            event: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type") or name
        if kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
            self._parts.append(event["delta"])
        elif kind in ("response.created", "response.in_progress"):
            response = event.get("response")
            if isinstance(response, dict) and isinstance(response.get("model"), str):
                self.model = response["model"]
        elif kind in ("response.completed", "response.incomplete") and isinstance(
            response := event.get("response"), dict
        ):
            self.final = response
            self.tool_calls = not output_text(response) and calls_tools(response)

    def result_usage(self) -> Usage:
        usage = read_usage(self.final) if self.final is not None else Usage()
        if not usage.model and self.model:
            usage = Usage(
                usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, self.model
            )
        return usage
