"""A fake of Shannon's gateway (v0.5.1), the task flows a client uses.

It copies the field names, status strings, event names and status codes of Kocoro-lab/Shannon:

- ``go/orchestrator/cmd/gateway/internal/handlers/task.go``: ``TaskRequest`` (decoded with
  ``json.NewDecoder``: unknown top-level fields such as ``history`` vanish), ``SubmitTask``
  (200 ``TaskResponse{task_id, status: "STATUS_CODE_OK", message, created_at}``, headers
  ``X-Workflow-ID``, ``X-Session-ID``), ``SubmitTaskAndGetStreamURL`` (201 ``{workflow_id,
  task_id, stream_url}`` and a ``Link`` header), ``GetTaskStatus`` (``TaskStatusResponse`` with
  ``TASK_STATUS_*``, ``result``, ``usage{total_tokens, input_tokens, output_tokens,
  estimated_cost}``, ``model_used``, ``provider``, ``metadata.model_breakdown`` built as in
  ``buildModelBreakdown``: ``model, provider, executions, tokens, cost_usd, percentage``),
  ``StreamTask`` (307 to ``/api/v1/stream/sse?workflow_id=<id>``), ``sendError`` (``{"error"}``);
- ``go/orchestrator/internal/httpapi/streaming.go`` ``handleSSE``: the ``: connected to workflow``
  comment, ``id:`` lines, ``thread.message.delta`` (``delta``), ``thread.message.completed``
  (``response``, ``metadata`` = the ``LLM_OUTPUT`` payload of ``activities/agent.go``: tokens_used,
  model_used, provider, input_tokens, output_tokens, cost_usd), ``WORKFLOW_COMPLETED`` (the
  event marshalled whole), ``done`` with ``[DONE]``, then the connection closes.

Not copied: authentication (the real gateway wants an API key) and the orchestrator behind it.
A task's answer is ``answer to: <query>``. Knobs: ``polls_until_done`` (polls that see
``TASK_STATUS_RUNNING`` first), ``breakdown`` (the per-model rows), ``linger`` (after
``WORKFLOW_COMPLETED`` the stream stays open until ``end_streams()``).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .backend import FakeBackend, open_sse, sse_event
from .upstream import answer_text, count_tokens

TASKS = "/api/v1/tasks"
SSE = "/api/v1/stream/sse"
# The fields of TaskRequest: everything else in a submitted body is dropped by the decoder.
TASK_REQUEST_FIELDS = (
    "query",
    "session_id",
    "context",
    "mode",
    "skill",
    "model_tier",
    "model_override",
    "provider_override",
    "research_strategy",
    "max_iterations",
    "max_concurrent_agents",
    "enable_verification",
)
MODEL = "gpt-5-mini-2025-08-07"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class ShannonTask:
    task_id: str
    request: dict[str, Any]  # as the gateway decoded it
    result: str
    input_tokens: int
    output_tokens: int
    polls: int = 0
    streams: int = 0
    created_at: str = field(default_factory=_now)


class FakeShannon(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.polls_until_done = 2
        self.breakdown: list[dict[str, Any]] | None = None
        self.linger = False
        self._end = asyncio.Event()
        self.tasks: dict[str, ShannonTask] = {}
        self.decoded: list[dict[str, Any]] = []  # what the gateway kept of each submission

    def routes(self, app: web.Application) -> None:
        app.router.add_post(TASKS, self._submit)
        app.router.add_post(TASKS + "/stream", self._submit_stream)
        app.router.add_get(TASKS + "/{id}", self._status)
        app.router.add_get(TASKS + "/{id}/stream", self._redirect)
        app.router.add_get(SSE, self._sse)

    def end_streams(self) -> None:
        self._end.set()

    async def stop(self) -> None:
        self.end_streams()
        await super().stop()

    def model_rows(self, task: ShannonTask | None = None) -> list[dict[str, Any]]:
        if self.breakdown is not None:
            return self.breakdown
        tokens = task.input_tokens + task.output_tokens if task else 0
        return [
            {
                "model": MODEL,
                "provider": "openai",
                "executions": 1,
                "tokens": tokens,
                "cost_usd": 0.0004,
                "percentage": 100,
            }
        ]

    @staticmethod
    def _error(message: str, status: int) -> web.Response:
        return web.json_response({"error": message}, status=status)

    async def _decode(self, request: web.Request) -> ShannonTask | web.Response:
        try:
            raw = await request.json()
        except ValueError as e:
            return self._error(f"Invalid request body: {e}", 400)
        decoded = {k: raw[k] for k in TASK_REQUEST_FIELDS if isinstance(raw, dict) and k in raw}
        if not decoded.get("query"):
            return self._error("Query is required", 400)
        decoded["session_id"] = decoded.get("session_id") or str(uuid.uuid4())
        self.decoded.append(decoded)
        query = decoded["query"]
        history = (decoded.get("context") or {}).get("history") or []
        prompt = 10 + count_tokens(query) + sum(count_tokens(h["content"]) for h in history)
        result = answer_text(query)
        task = ShannonTask(f"task-{uuid.uuid4()}", decoded, result, prompt, count_tokens(result))
        self.tasks[task.task_id] = task
        return task

    async def _submit(self, request: web.Request) -> web.Response:
        task = await self._decode(request)
        if isinstance(task, web.Response):
            return task
        body = {
            "task_id": task.task_id,
            "status": "STATUS_CODE_OK",
            "message": "Task submitted successfully",
            "created_at": task.created_at,
        }
        return web.json_response(
            body,
            headers={"X-Workflow-ID": task.task_id, "X-Session-ID": task.request["session_id"]},
        )

    async def _submit_stream(self, request: web.Request) -> web.Response:
        task = await self._decode(request)
        if isinstance(task, web.Response):
            return task
        stream_url = f"{SSE}?workflow_id={task.task_id}"
        return web.json_response(
            {"workflow_id": task.task_id, "task_id": task.task_id, "stream_url": stream_url},
            status=201,
            headers={
                "X-Workflow-ID": task.task_id,
                "X-Session-ID": task.request["session_id"],
                "Link": f"<{stream_url}>; rel=stream",
            },
        )

    async def _status(self, request: web.Request) -> web.Response:
        task = self.tasks.get(request.match_info["id"])
        if task is None:
            return self._error("Task not found", 404)
        task.polls += 1
        body: dict[str, Any] = {
            "task_id": task.task_id,
            "workflow_id": task.task_id,
            "created_at": _now(),
            "updated_at": _now(),
            "query": task.request["query"],
            "session_id": task.request["session_id"],
            "mode": "simple",
        }
        if task.polls < self.polls_until_done:
            body["status"] = "TASK_STATUS_RUNNING"
        else:
            rows = self.model_rows(task)
            total = sum(r["tokens"] for r in rows)  # token_usage rows of the task, summed
            body |= {
                "status": "TASK_STATUS_COMPLETED",
                "result": task.result,
                "model_used": MODEL,
                "provider": "openai",
                "usage": {
                    "total_tokens": total,
                    "input_tokens": task.input_tokens,
                    "output_tokens": task.output_tokens,
                    "estimated_cost": round(sum(r["cost_usd"] for r in rows), 6),
                },
                "metadata": {"model_breakdown": rows},
            }
        return web.json_response(body, headers={"X-Workflow-ID": task.task_id})

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"{SSE}?workflow_id={request.match_info['id']}")

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        wf = request.query.get("workflow_id", "")
        if not wf:
            return web.Response(status=400, text='{"error":"workflow_id required"}\n')
        resp = await open_sse(
            request, {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
        )
        await resp.write(f": connected to workflow {wf}\n\n".encode())
        task = self.tasks.get(wf)
        if task is None:
            await resp.write(
                sse_event(
                    "ERROR_OCCURRED",
                    {"workflow_id": wf, "type": "ERROR_OCCURRED", "message": "Workflow not found"},
                )
            )
            return resp
        task.streams += 1
        seq = 1
        text = task.result
        size = max(1, -(-len(text) // 3))
        for i in range(0, len(text), size):
            seq += 1
            await resp.write(
                sse_event(
                    "thread.message.delta",
                    {
                        "delta": text[i : i + size],
                        "workflow_id": wf,
                        "agent_id": "simple-agent",
                        "seq": seq,
                        "stream_id": "",
                    },
                    seq,
                )
            )
            if i == 0:
                await self.piece_sent()
        total = task.input_tokens + task.output_tokens
        metadata = {
            "tokens_used": total,
            "model_used": MODEL,
            "provider": "openai",
            "input_tokens": task.input_tokens,
            "output_tokens": task.output_tokens,
            "cost_usd": 0.0004,
            "duration_ms": 812,
            "role": "generalist",
        }
        for agent in ("simple-agent", "final_output"):
            seq += 1
            await resp.write(
                sse_event(
                    "thread.message.completed",
                    {
                        "response": text,
                        "workflow_id": wf,
                        "agent_id": agent,
                        "seq": seq,
                        "stream_id": "",
                        "metadata": metadata,
                    },
                    seq,
                )
            )
        seq += 1
        await resp.write(
            sse_event(
                "WORKFLOW_COMPLETED",
                {
                    "workflow_id": wf,
                    "type": "WORKFLOW_COMPLETED",
                    "agent_id": "simple",
                    "message": "All done",
                    "timestamp": _now(),
                    "seq": seq,
                },
                seq,
            )
        )
        if self.linger:
            await self._end.wait()
        seq += 1
        await resp.write(sse_event("done", "[DONE]", seq))
        await resp.write_eof()
        return resp
