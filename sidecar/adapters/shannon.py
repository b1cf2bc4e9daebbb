"""What Shannon's gateway (v0.5) says, read for memory: task results with a per-model usage
breakdown, and its Server-Sent Events stream.

Field names, statuses and event names are those of Kocoro-lab/Shannon's
``go/orchestrator/cmd/gateway/internal/handlers/task.go`` (``TaskStatusResponse``,
``buildModelBreakdown``, ``SubmitTaskAndGetStreamURL``, ``StreamTask``) and
``go/orchestrator/internal/httpapi/streaming.go`` (``handleSSE``: ``LLM_PARTIAL`` is sent as
``thread.message.delta``, ``LLM_OUTPUT`` as ``thread.message.completed`` with the usage in
``metadata``, ``STREAM_END`` as ``done`` with ``[DONE]``; other events under their own type,
``WORKFLOW_COMPLETED`` among them). Several agents may each send a ``thread.message.completed``;
the canonical answer is the one of the agent ``final_output``.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..session.model import Usage
from .answers import cost_of, dig, read_usage_details, token_count
from .sse import EventReader

# The agent whose completed message is the task's answer (its workflows' convention).
FINAL_AGENT = "final_output"
DELTA_EVENTS = frozenset({"thread.message.delta", "LLM_PARTIAL"})
MESSAGE_EVENTS = frozenset({"thread.message.completed", "LLM_OUTPUT"})
WORKFLOW_DONE_EVENTS = frozenset({"WORKFLOW_COMPLETED"})
END_EVENTS = frozenset({"done", "STREAM_END"})
FAILED_EVENTS = frozenset({"error", "ERROR_OCCURRED", "WORKFLOW_FAILED", "workflow.cancelled"})


def sse_path(route_path: str) -> str:
    """The gateway's stream endpoint beside a tasks route: ``/api/v1/tasks`` → ``/api/v1/stream/sse``."""
    parent = route_path.rstrip("/").rsplit("/", 1)[0]
    return f"{parent}/stream/sse"


def read_task_usage(body: Any) -> Usage:
    """A task's usage: ``usage.{input,output,total}_tokens`` and ``usage.estimated_cost``,
    ``model_used`` and ``provider``; with ``metadata.model_breakdown`` naming two or more models,
    one usage row per model (``model``, ``provider``, ``tokens``, ``cost_usd``)."""
    usage = read_usage_details(body, cost_key="estimated_cost")
    entries = dig(body, "metadata.model_breakdown")
    if not isinstance(entries, list):
        return usage
    rows = tuple(
        Usage(
            total_tokens=token_count(e.get("tokens")),
            model=e["model"] if isinstance(e.get("model"), str) else "",
            cost=cost_of(e.get("cost_usd")),
            provider=e["provider"] if isinstance(e.get("provider"), str) else "",
        )
        for e in entries
        if isinstance(e, dict)
    )
    if len(rows) < 2:
        return usage  # one model: the top-level figures say more (input and output apart)
    total = usage.total_tokens or sum(r.total_tokens for r in rows)
    costs = [r.cost for r in rows if r.cost is not None]
    cost = usage.cost if usage.cost is not None else (sum(costs) if costs else None)
    return Usage(
        usage.prompt_tokens,
        usage.completion_tokens,
        total,
        usage.model,
        cost,
        usage.provider,
        breakdown=rows,
    )


def _message_usage(metadata: Any) -> Usage:
    """The usage an ``LLM_OUTPUT`` event carries in its payload (``metadata`` on the wire)."""
    if not isinstance(metadata, dict):
        return Usage()
    prompt = token_count(metadata.get("input_tokens"))
    completion = token_count(metadata.get("output_tokens"))
    model = metadata.get("model_used")
    provider = metadata.get("provider")
    return Usage(
        prompt,
        completion,
        token_count(metadata.get("tokens_used")) or prompt + completion,
        model if isinstance(model, str) else "",
        cost_of(metadata.get("cost_usd")),
        provider if isinstance(provider, str) else "",
    )


class ShannonStream(EventReader):
    """Reads the gateway's task stream. The turn is complete when the final agent's message
    arrives, or the stream ends (``done``), or the workflow says it completed with only deltas
    seen — the gateway keeps the connection open for a while after that, so the turn must not
    wait for the connection to close. After other agents' messages, ``WORKFLOW_COMPLETED`` is
    not enough: some workflows send it before the final agent's message (Shannon's own
    OpenAI-compatible streamer waits for that message too)."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[str] = []
        self._message: tuple[str, Usage] | None = None  # the last completed message
        self._final: tuple[str, Usage] | None = None  # the final agent's
        self.workflow_done = False
        self.ended = False
        self.failed = False
        self.tool_calls = False

    @property
    def text(self) -> str:
        chosen = self._final or self._message
        return chosen[0] if chosen is not None else "".join(self._parts)

    @property
    def complete(self) -> bool:
        if self.failed:
            return False
        return (
            self._final is not None
            or self.ended
            or (self.workflow_done and self._message is None and bool(self._parts))
        )

    @property
    def finished(self) -> bool:
        return self.complete

    @property
    def whole(self) -> Any:
        return None

    def on_event(self, name: str, data: bytes) -> None:
        if data.strip() == b"[DONE]":
            self.ended = True
            return
        try:
            event: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict):
            return
        kind = name or (event["type"] if isinstance(event.get("type"), str) else "")
        if kind in DELTA_EVENTS and isinstance(event.get("delta"), str):
            self._parts.append(event["delta"])
        elif kind in MESSAGE_EVENTS:
            text = event.get("response")
            if not isinstance(text, str):
                text = event.get("message") if isinstance(event.get("message"), str) else None
            if text is None:
                return
            message = (text, _message_usage(event.get("metadata") or event.get("payload")))
            self._message = message
            if event.get("agent_id") == FINAL_AGENT:
                self._final = message
        elif kind in WORKFLOW_DONE_EVENTS:
            self.workflow_done = True
        elif kind in END_EVENTS:
            self.ended = True
        elif kind in FAILED_EVENTS:
            self.failed = True

    def result_usage(self) -> Usage:
        chosen = self._final or self._message
        return chosen[1] if chosen is not None else Usage()
