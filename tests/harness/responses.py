"""A fake of OpenAI's Responses API (``POST /v1/responses``), JSON and SSE.

Shapes follow the official SDK, openai/openai-python: ``src/openai/types/responses/response.py``
(the Response object), ``response_output_message.py``, ``response_function_tool_call.py``, and
the stream events of ``response_stream_event.py`` (``response.created``, ``response.in_progress``,
``response.output_item.added``, ``response.content_part.added``, ``response.output_text.delta``,
``response.output_text.done``, ``response.content_part.done``, ``response.output_item.done``,
``response.function_call_arguments.delta``/``.done``, ``response.completed``), each with its
``sequence_number``. Like the API, it keeps what it answered: ``previous_response_id`` continues a
stored conversation (unknown ids are a 400 ``previous_response_not_found``).

Answers: ``answer to: <the last user text>``. With ``tools`` and ``use_tools`` set, a question is
first answered with a ``function_call`` item; the answer follows the ``function_call_output``.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from aiohttp import web

from .backend import FakeBackend, open_sse, sse_event
from .upstream import answer_text, count_tokens

RESPONSES = "/v1/responses"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(
        p.get("text", "")
        for p in content or []
        if isinstance(p, dict) and p.get("type") in ("input_text", "output_text")
    )


def _items(value: Any) -> list[dict[str, Any]]:
    return (
        [{"type": "message", "role": "user", "content": value}] if isinstance(value, str) else value
    )


class FakeResponses(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.use_tools = True
        self.stored: dict[str, list[dict[str, Any]]] = {}  # response id -> conversation so far
        self.conversations: list[list[dict[str, Any]]] = []  # what each answer was based on
        self._ids = itertools.count(1)

    def routes(self, app: web.Application) -> None:
        app.router.add_post(RESPONSES, self._create)

    def _respond(self, body: dict[str, Any]) -> dict[str, Any]:
        prior: list[dict[str, Any]] = []
        if body.get("previous_response_id"):
            prior = self.stored[body["previous_response_id"]]
        items = prior + _items(body["input"])
        self.conversations.append(items)
        question = next(
            _text(i.get("content"))
            for i in reversed(items)
            if i.get("role") == "user" and _text(i.get("content"))
        )
        n = next(self._ids)
        tool_turn = (
            body.get("tools") and self.use_tools and items[-1].get("type") != "function_call_output"
        )
        if tool_turn:
            output: list[dict[str, Any]] = [
                {
                    "type": "function_call",
                    "id": f"fc_{n:04d}",
                    "call_id": f"call_{n:04d}",
                    "name": body["tools"][0]["name"],
                    "arguments": '{"city":"Paris"}',
                    "status": "completed",
                }
            ]
            out_tokens = count_tokens(output[0]["arguments"])
        else:
            text = answer_text(question)
            output = [
                {
                    "type": "message",
                    "id": f"msg_{n:04d}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ]
            out_tokens = count_tokens(text)
        in_tokens = 10 + sum(
            count_tokens(_text(i.get("content"))) for i in items if i.get("content")
        )
        in_tokens += count_tokens(body.get("instructions") or "") if body.get("instructions") else 0
        rid = f"resp_{n:04d}"
        self.stored[rid] = items + output
        return {
            "id": rid,
            "object": "response",
            "created_at": 1_760_000_000 + n,
            "status": "completed",
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": None,
            "model": body.get("model") or "gpt-4.1",
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": body.get("tools") or [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": {
                "input_tokens": in_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": out_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": in_tokens + out_tokens,
            },
            "user": None,
            "metadata": {},
        }

    async def _create(self, request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self._error("We could not parse the JSON body of your request.", None, None)
        prev = body.get("previous_response_id")
        if prev and prev not in self.stored:
            return self._error(
                f"Previous response with id '{prev}' not found.",
                "previous_response_id",
                "previous_response_not_found",
            )
        if not isinstance(body.get("input"), str | list):
            return self._error("Missing required parameter: 'input'.", "input", None)
        response = self._respond(body)
        if body.get("stream") is True:
            return await self._stream(request, response)
        return web.json_response(response)

    @staticmethod
    def _error(message: str, param: str | None, code: str | None) -> web.Response:
        error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
        return web.json_response({"error": error}, status=400)

    async def _stream(self, request: web.Request, response: dict[str, Any]) -> web.StreamResponse:
        resp = await open_sse(request)
        seq = itertools.count()

        async def send(kind: str, **fields: Any) -> None:
            await resp.write(
                sse_event(kind, {"type": kind, "sequence_number": next(seq), **fields})
            )

        opening = {**response, "status": "in_progress", "output": [], "usage": None}
        await send("response.created", response=opening)
        await send("response.in_progress", response=opening)
        for index, item in enumerate(response["output"]):
            if item["type"] == "message":
                await send(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "content": []},
                )
                part = item["content"][0]
                empty = {**part, "text": ""}
                ids = {"item_id": item["id"], "output_index": index, "content_index": 0}
                await send("response.content_part.added", **ids, part=empty)
                text = part["text"]
                size = max(1, -(-len(text) // 3))
                for i in range(0, len(text), size):
                    await send(
                        "response.output_text.delta", **ids, delta=text[i : i + size], logprobs=[]
                    )
                    if i == 0:
                        await self.piece_sent()
                await send("response.output_text.done", **ids, text=text, logprobs=[])
                await send("response.content_part.done", **ids, part=part)
            else:
                await send(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "arguments": "", "status": "in_progress"},
                )
                await send(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=item["arguments"],
                )
                await send(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=item["arguments"],
                    name=item["name"],
                )
            await send("response.output_item.done", output_index=index, item=item)
        await send("response.completed", response=response)
        await resp.write_eof()
        return resp
