"""A fake LLM backend served by the tests: it records what it receives and answers predictably.

Routes:

- ``ANY /echo/{tail}``: 200 JSON describing the request (method, path, query, headers, body).
- ``ANY /status/{code}``: that status, body ``{"status": code}``, header ``X-Upstream: yes``.
- ``POST|PUT /bytes``: the request body streamed back as it is read (octet-stream).
- ``GET /bytes/{n}``: ``deterministic_bytes(n)`` in 16 KiB chunks (chunked; ``?content_length=1``
  sends a Content-Length).
- ``GET /sse?n=20&interval=0.05``: ``n`` events ``data: {"i": i}``, ``interval`` seconds apart.
- ``ANY /delay?s=2``: sleeps, then 200 ``{"slept": s}``.
- ``GET /redirect``: 302 to ``/echo/x``.
- ``POST /api/tasks``, ``POST /api/v1/tasks``: the tasks backend (see ``FakeUpstream``).
- ``GET /api/tasks/{task_id}``, ``GET /api/v1/tasks/{task_id}``: status of an async task.
- ``POST /v1/chat/completions``: OpenAI-compatible chat completions, JSON or SSE.

Answers are derived from the input: ``answer_text(q) == "answer to: " + q`` and token counts come
from ``fake_usage()``. Every answer the fake gives is appended to ``reported`` (and its usage to
``reported_usage``), so tests compute expectations from what the fake actually said.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from multidict import CIMultiDict

__all__ = [
    "FakeUpstream",
    "RecordedRequest",
    "ReportedAnswer",
    "answer_text",
    "count_tokens",
    "deterministic_bytes",
    "fake_usage",
]

TasksHandler = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]
ChatHandler = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]

FAKE_MODEL = "fake-1"


def answer_text(query: str) -> str:
    """The fake's answer to a query or a last user message."""
    return f"answer to: {query}"


def count_tokens(text: str) -> int:
    """The fake's tokenizer: one token per started group of 4 characters, at least 1."""
    return max(1, (len(text) + 3) // 4)


def fake_usage(prompt_texts: list[str], completion: str) -> dict[str, int]:
    """Usage the fake reports: 10 tokens of overhead plus ``count_tokens`` of each prompt part."""
    prompt = 10 + sum(count_tokens(t) for t in prompt_texts if t)
    completion_tokens = count_tokens(completion)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }


def deterministic_bytes(n: int, seed: int = 0) -> bytes:
    """``n`` pseudo-random bytes, the same for the same ``(n, seed)``: what ``/bytes/{n}`` sends."""
    return random.Random(f"{seed}:{n}").randbytes(n)


@dataclass
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query_string: str
    headers: CIMultiDict[str]
    body: bytes
    json: Any | None
    received_at: float
    raw_path: str = ""  # the path as it came on the wire, before decoding

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass
class ReportedAnswer:
    """One answer the fake produced: its text and the usage it reported (or would have)."""

    path: str
    text: str
    usage: dict[str, int]
    model: str
    session_id: str | None = None
    usage_sent: bool = True
    task_id: str | None = None


@dataclass
class _AsyncTask:
    task_id: str
    session_id: str | None
    result: str
    usage: dict[str, int]
    polls: int = 0
    reported: bool = False


@dataclass
class _SseStats:
    started: int = 0
    completed: int = 0
    sent_at: list[float] = field(default_factory=list)


def _message_text(content: Any) -> str:
    """Text of an OpenAI message content: a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _sse(data: Any) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n".encode()


async def _json_body(request: web.Request) -> Any:
    """The request's body as JSON; ``None`` when it is empty or not JSON."""
    raw = await request.read()
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _split_text(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class FakeUpstream:
    """The fake backend. ``await start()``, use ``url``, ``await stop()`` (or ``async with``).

    Tasks backend (``POST /api/tasks``, ``/api/v1/tasks``), by ``tasks_mode``:

    - ``"json"`` (default): ``{"result": answer_text(query), "usage": fake_usage([query, *history
      contents], result), "model": "fake-1", "session_id": <echoed>}``.
    - ``"sse"``: ``text/event-stream`` with ``data: {"delta": "<piece>"}`` events (``tasks_chunks``
      pieces, ``tasks_chunk_interval_s`` apart) and a final event carrying the same object as
      JSON mode (``result``, ``usage``, ``model``, ``session_id``) plus ``"done": true``. No
      ``[DONE]`` line.
    - ``"async"``: 202 ``{"task_id", "status": "queued", "session_id"}``; then
      ``GET <route>/{task_id}`` answers ``{"task_id", "status": "running"}`` for the first
      ``tasks_async_polls - 1`` polls and ``{"task_id", "status": "completed", "result",
      "usage", "model", "session_id"}`` from then on.

    Knobs: ``tasks_status`` (non-2xx: ``{"error": ...}`` with that status, nothing reported),
    ``tasks_delay_s`` (sleep before answering), ``tasks_handler`` (replaces everything:
    ``async (request, parsed_body) -> StreamResponse``). The chat route has ``chat_status``,
    ``chat_delay_s``, ``chat_chunk_interval_s`` and ``chat_handler`` likewise.
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.reported: list[ReportedAnswer] = []
        self.reported_usage: list[dict[str, int]] = []

        self.tasks_mode: Literal["json", "sse", "async"] = "json"
        self.tasks_status = 200
        self.tasks_delay_s = 0.0
        self.tasks_handler: TasksHandler | None = None
        self.tasks_chunks = 3
        self.tasks_chunk_interval_s = 0.0
        self.tasks_async_polls = 3
        self.tasks: dict[str, _AsyncTask] = {}

        self.chat_status = 200
        self.chat_delay_s = 0.0
        self.chat_chunk_interval_s = 0.0
        self.chat_chunks = 3
        self.chat_handler: ChatHandler | None = None
        # How a stream reports usage: OpenAI's (usage null on every chunk, then a chunk with
        # choices []), or LiteLLM's proxy (no nulls; the usage on a chunk whose one choice has
        # an empty delta: litellm_core_utils/streaming_handler.py).
        self.chat_usage_shape: Literal["openai", "litellm"] = "openai"

        self.sse_client_gone = asyncio.Event()
        self.sse_first_sent_at: float | None = None
        self.sse_last_sent_at: float | None = None
        self.sse = _SseStats()
        self.open_streams = 0

        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self.app = self._make_app()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeUpstream is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeUpstream is not started")
        return self._port

    async def start(self, port: int = 0) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests whose path is exactly ``path`` (and method, when given)."""
        return [
            r
            for r in self.requests
            if r.path == path and (method is None or r.method == method.upper())
        ]

    def reset(self) -> None:
        """Forget recorded requests and answers (knobs stay as they are)."""
        self.requests.clear()
        self.reported.clear()
        self.reported_usage.clear()

    # -- plumbing ----------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record_middleware], client_max_size=64 * 2**20)
        app.router.add_route("*", "/echo/{tail:.*}", self._echo)
        app.router.add_route("*", "/status/{code:\\d+}", self._status)
        app.router.add_post("/bytes", self._bytes_echo)
        app.router.add_put("/bytes", self._bytes_echo)
        app.router.add_get("/bytes/{n:\\d+}", self._bytes_n)
        app.router.add_get("/sse", self._sse_stream)
        app.router.add_route("*", "/delay", self._delay)
        app.router.add_get("/redirect", self._redirect)
        for prefix in ("/api/tasks", "/api/v1/tasks"):
            app.router.add_post(prefix, self._tasks)
            app.router.add_get(prefix + "/{task_id}", self._task_status)
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    def _record(self, request: web.Request, body: bytes) -> None:
        parsed: Any | None = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                raw_path=request.raw_path,
                query_string=request.query_string,
                headers=CIMultiDict(request.headers),
                body=body,
                json=parsed,
                received_at=time.monotonic(),
            )
        )

    @web.middleware
    async def _record_middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        # /bytes streams the body back while reading it, so it records itself at the end.
        if not (request.path == "/bytes" and request.method in ("POST", "PUT")):
            self._record(request, await request.read())
        return await handler(request)

    def _report(self, answer: ReportedAnswer) -> None:
        self.reported.append(answer)
        self.reported_usage.append(answer.usage)

    # -- generic routes ----------------------------------------------------------------------

    async def _echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            body_field: dict[str, Any] = {"body": body.decode("utf-8")}
        except UnicodeDecodeError:
            body_field = {"body_base64": base64.b64encode(body).decode()}
        return web.json_response(
            {
                "method": request.method,
                "path": request.path,
                "path_qs": request.path_qs,
                "query_string": request.query_string,
                "query": [[k, v] for k, v in request.query.items()],
                "headers": [[k, v] for k, v in request.headers.items()],
                **body_field,
                "length": len(body),
            }
        )

    async def _status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        headers = {"X-Upstream": "yes"}
        if code in (204, 304):
            return web.Response(status=code, headers=headers)
        return web.json_response({"status": code}, status=code, headers=headers)

    async def _bytes_echo(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        received = bytearray()
        try:
            async for chunk in request.content.iter_any():
                received += chunk
                await response.write(chunk)
            await response.write_eof()
        finally:
            self._record(request, bytes(received))
        return response

    async def _bytes_n(self, request: web.Request) -> web.StreamResponse:
        data = deterministic_bytes(int(request.match_info["n"]))
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if request.query.get("content_length") == "1":
            response.content_length = len(data)
        await response.prepare(request)
        chunk = 16 * 1024
        for i in range(0, len(data), chunk):
            await response.write(data[i : i + chunk])
        await response.write_eof()
        return response

    async def _sse_stream(self, request: web.Request) -> web.StreamResponse:
        n = int(request.query.get("n", "20"))
        interval = float(request.query.get("interval", "0.05"))
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        self.open_streams += 1
        self.sse.started += 1
        finished = False
        try:
            await response.prepare(request)
            for i in range(n):
                if i:
                    await asyncio.sleep(interval)
                await response.write(_sse({"i": i}))
                now = time.monotonic()
                self.sse.sent_at.append(now)
                if i == 0:
                    self.sse_first_sent_at = now
                if i == n - 1:
                    self.sse_last_sent_at = now
            await response.write_eof()
            finished = True
            self.sse.completed += 1
        except ConnectionResetError:
            pass  # the client went away; noted in finally
        finally:
            self.open_streams -= 1
            if not finished:
                self.sse_client_gone.set()
        return response

    async def _delay(self, request: web.Request) -> web.Response:
        seconds = float(request.query.get("s", "2"))
        await asyncio.sleep(seconds)
        return web.json_response({"slept": seconds})

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/echo/x")

    # -- tasks backend -----------------------------------------------------------------------

    async def _tasks(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        if self.tasks_handler is not None:
            return await self.tasks_handler(request, body)
        if self.tasks_delay_s:
            await asyncio.sleep(self.tasks_delay_s)
        if not 200 <= self.tasks_status < 300:
            return web.json_response(
                {"error": f"fake upstream failure {self.tasks_status}"}, status=self.tasks_status
            )
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return web.json_response({"error": "query is required"}, status=400)
        query: str = body["query"]
        session_id = body.get("session_id")
        history = body.get("history") or []
        prompt = [query] + [str(m.get("content", "")) for m in history if isinstance(m, dict)]
        text = answer_text(query)
        usage = fake_usage(prompt, text)

        if self.tasks_mode == "async":
            task_id = f"task-{next(self._ids)}"
            self.tasks[task_id] = _AsyncTask(task_id, session_id, text, usage)
            return web.json_response(
                {"task_id": task_id, "status": "queued", "session_id": session_id}, status=202
            )

        answer = {"result": text, "usage": usage, "model": FAKE_MODEL, "session_id": session_id}
        self._report(ReportedAnswer(request.path, text, usage, FAKE_MODEL, session_id))
        if self.tasks_mode == "json":
            return web.json_response(answer, status=self.tasks_status)

        response = web.StreamResponse(
            status=self.tasks_status, headers={"Content-Type": "text/event-stream"}
        )
        await response.prepare(request)
        for i, piece in enumerate(_split_text(text, self.tasks_chunks)):
            if i and self.tasks_chunk_interval_s:
                await asyncio.sleep(self.tasks_chunk_interval_s)
            await response.write(_sse({"delta": piece}))
        await response.write(_sse({**answer, "done": True}))
        await response.write_eof()
        return response

    async def _task_status(self, request: web.Request) -> web.Response:
        task = self.tasks.get(request.match_info["task_id"])
        if task is None:
            return web.json_response({"error": "task not found"}, status=404)
        task.polls += 1
        if task.polls < self.tasks_async_polls:
            return web.json_response({"task_id": task.task_id, "status": "running"})
        if not task.reported:
            task.reported = True
            self._report(
                ReportedAnswer(
                    request.path,
                    task.result,
                    task.usage,
                    FAKE_MODEL,
                    task.session_id,
                    task_id=task.task_id,
                )
            )
        return web.json_response(
            {
                "task_id": task.task_id,
                "status": "completed",
                "result": task.result,
                "usage": task.usage,
                "model": FAKE_MODEL,
                "session_id": task.session_id,
            }
        )

    # -- OpenAI chat completions -------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        if self.chat_handler is not None:
            return await self.chat_handler(request, body)
        if self.chat_delay_s:
            await asyncio.sleep(self.chat_delay_s)
        if not 200 <= self.chat_status < 300:
            return self._openai_error(
                f"fake upstream failure {self.chat_status}", "server_error", self.chat_status
            )
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._openai_error("'messages' is required", "invalid_request_error", 400)
        messages = [m for m in body["messages"] if isinstance(m, dict)]
        last_user = next(
            (
                _message_text(m.get("content"))
                for m in reversed(messages)
                if m.get("role") == "user"
            ),
            "",
        )
        text = answer_text(last_user)
        usage = fake_usage([_message_text(m.get("content")) for m in messages], text)
        model = str(body.get("model") or FAKE_MODEL)
        completion_id = f"chatcmpl-fake{next(self._ids)}"
        created = int(time.time())
        session_id = request.headers.get("X-Session-ID")

        if not body.get("stream"):
            self._report(ReportedAnswer(request.path, text, usage, model, session_id))
            return web.json_response(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text, "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
                status=self.chat_status,
            )

        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and bool(
            stream_options.get("include_usage")
        )
        self._report(ReportedAnswer(request.path, text, usage, model, session_id, include_usage))

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage and self.chat_usage_shape == "openai":
                out["usage"] = None  # as OpenAI does: null on every chunk but the last
            return out

        response = web.StreamResponse(
            status=self.chat_status,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            },
        )
        await response.prepare(request)
        await response.write(_sse(chunk({"role": "assistant", "content": ""}, None)))
        for piece in _split_text(text, self.chat_chunks):
            if self.chat_chunk_interval_s:
                await asyncio.sleep(self.chat_chunk_interval_s)
            await response.write(_sse(chunk({"content": piece}, None)))
        await response.write(_sse(chunk({}, "stop")))
        if include_usage:
            final = chunk({}, None)
            if self.chat_usage_shape == "openai":
                final["choices"] = []
            else:
                final["choices"] = [{"index": 0, "delta": {}}]
            final["usage"] = usage
            await response.write(_sse(final))
        await response.write(_sse("[DONE]"))
        await response.write_eof()
        return response

    @staticmethod
    def _openai_error(message: str, kind: str, status: int) -> web.Response:
        return web.json_response(
            {"error": {"message": message, "type": kind, "param": None, "code": None}},
            status=status,
        )
