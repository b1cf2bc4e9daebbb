"""The ``tasks`` adapter: Shannon-style ``POST /api/tasks`` with ``query``, ``session_id``, ``context``.

Where the backend reads what is injected is the route's choice: the window and ``original_query``
at the top level (``history_in: body``) or inside ``context`` (``history_in: context``, what
Shannon's gateway reads: its decoder drops unknown top-level fields without a word).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

import orjson

from ..errors import BadRequest
from ..inputs import check_json_depth
from ..session.model import Usage
from .answers import answer_text
from .base import Incoming, Injection, StreamReader
from .shannon import ShannonStream, read_task_usage
from .sse import SSEAccumulator

# What the sidecar injects (top level, or inside ``context`` with ``history_in: context``).
INJECTED_KEYS = ("history", "original_query")
SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def validate_session_id(value: Any) -> str:
    if not isinstance(value, str) or not SESSION_ID.fullmatch(value):
        raise BadRequest(
            "session_id must be 1-128 characters of A-Z a-z 0-9 . _ : -",
            code="invalid_session_id",
        )
    return value


def parse_json_object(raw: bytes) -> dict[str, Any]:
    check_json_depth(raw)  # before parsing: see sidecar.inputs for the limit and why
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"the body is not valid JSON: {e}", code="invalid_json") from e
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_body")
    return body


class TasksAdapter:
    name = "tasks"
    async_tasks = True

    def __init__(
        self,
        answer_paths: Sequence[str],
        *,
        history_in: Literal["body", "context"] = "body",
        preset: Literal["shannon"] | None = None,
    ) -> None:
        self.answer_paths = tuple(answer_paths)
        self.preset = preset
        self.history_in: Literal["body", "context"] = (
            "context" if preset == "shannon" else history_in
        )

    def parse(self, raw: bytes, headers: Any) -> Incoming:
        body = parse_json_object(raw)
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise BadRequest("query must be a non-empty string", code="invalid_query")
        session_id = body.get("session_id")
        if session_id is not None:
            session_id = validate_session_id(session_id)
        context = body.get("context", {})
        if context is None:
            context = {}
        if not isinstance(context, dict):
            raise BadRequest("context must be a JSON object", code="invalid_context")
        if self.history_in == "context":
            # What the sidecar injects there is never the client's to set, nor to store.
            context = {k: v for k, v in context.items() if k not in INJECTED_KEYS}
        return Incoming(
            body=body,
            query=query,
            session_id=session_id,
            request_context=context,
            stream=body.get("stream") is True,
        )

    def inject(self, incoming: Incoming, injection: Injection) -> dict[str, Any]:
        body = dict(incoming.body)
        body["session_id"] = injection.session_id
        # Each message's history entry was encoded when it was made: spliced, not rebuilt (from
        # a list: ``join`` makes one of a generator first, which costs more than building it).
        # The brackets go onto the first and last entries, so the window is copied once, not
        # three times.
        entries = [m.history_json for m in injection.history]
        if entries:
            entries[0] = b"[" + entries[0]
            entries[-1] += b"]"
        history = orjson.Fragment(b",".join(entries) if entries else b"[]")
        context = dict(injection.context)
        # A client's own history is never trusted nor forwarded: the stored window replaces it.
        body.pop("history", None)
        injected: dict[str, Any] = {"history": history}
        if injection.completed_query and injection.completed_query != incoming.query:
            if injection.rewrite == "replace":
                body["query"] = injection.completed_query
                injected["original_query"] = incoming.query
            elif injection.rewrite == "annotate":
                context["resolved_query"] = injection.completed_query
        if self.history_in == "context":
            context.update(injected)
        else:
            body.update(injected)
        body["context"] = context
        return body

    def answer(self, body: Any) -> tuple[str | None, Usage]:
        return answer_text(body, self.answer_paths), read_task_usage(body)

    def prepare_stream(self, body: dict[str, Any]) -> bool:
        return False

    def continuation_id(self, answer: Any) -> str | None:
        return None

    def stream_reader(self) -> StreamReader:
        return ShannonStream() if self.preset == "shannon" else SSEAccumulator()
