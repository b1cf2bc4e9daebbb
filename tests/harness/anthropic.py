"""A fake of Anthropic's Messages API (``POST /v1/messages``), JSON and SSE.

Shapes follow the API reference and the official SDK, anthropics/anthropic-sdk-python:
``src/anthropic/types/message.py`` (the answer), ``raw_message_start_event.py``,
``raw_content_block_start_event.py``, ``raw_content_block_delta_event.py`` (``text_delta``,
``input_json_delta``), ``raw_message_delta_event.py`` (``message_delta`` with cumulative
``usage.output_tokens``), ``raw_message_stop_event.py``; errors are
``{"type": "error", "error": {"type": "invalid_request_error", "message": ...}}``. Like the API
has long done, it refuses a conversation that does not open with the user or whose roles do not
alternate, so a sidecar that joins history badly is caught.

Answers: ``answer to: <the last user text>``. With ``tools`` in the request and ``use_tools`` set,
a question is first answered with a text block and a ``tool_use`` block (``stop_reason:
tool_use``); the final answer follows the ``tool_result``.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from aiohttp import web

from .backend import FakeBackend, open_sse, sse_event
from .upstream import answer_text, count_tokens

MESSAGES = "/v1/messages"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(
        b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text"
    )


def _error(message: str, status: int = 400) -> web.Response:
    return web.json_response(
        {"type": "error", "error": {"type": "invalid_request_error", "message": message}},
        status=status,
    )


class FakeAnthropic(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.use_tools = True
        self.model = "claude-fake-1"
        self.answers: list[dict[str, Any]] = []  # every message answered, as sent
        self._ids = itertools.count(1)

    def routes(self, app: web.Application) -> None:
        app.router.add_post(MESSAGES, self._messages)

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body["messages"]
        last = messages[-1]
        question = next(
            _text(m["content"])
            for m in reversed(messages)
            if m["role"] == "user" and _text(m["content"])
        )
        blocks = last["content"] if isinstance(last["content"], list) else []
        after_tool = any(b.get("type") == "tool_result" for b in blocks if isinstance(b, dict))
        n = next(self._ids)
        if body.get("tools") and self.use_tools and not after_tool:
            content: list[dict[str, Any]] = [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": f"toolu_{n:04d}",
                    "name": body["tools"][0]["name"],
                    "input": {"city": "Paris"},
                },
            ]
            stop = "tool_use"
        else:
            content = [{"type": "text", "text": answer_text(question)}]
            stop = "end_turn"
        prompt = [_text(body.get("system") or "")] + [_text(m["content"]) for m in messages]
        input_tokens = 10 + sum(count_tokens(t) for t in prompt if t)
        output_tokens = sum(
            count_tokens(json.dumps(b)) if b["type"] == "tool_use" else count_tokens(b["text"])
            for b in content
        )
        answer = {
            "id": f"msg_{n:04d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model") or self.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": output_tokens,
                "service_tier": "standard",
            },
        }
        self.answers.append(answer)
        return answer

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error("Invalid JSON body")
        if not isinstance(body.get("max_tokens"), int):
            return _error("max_tokens: Field required")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error("messages: at least one message is required")
        if messages[0].get("role") != "user":
            return _error('messages: first message must use the "user" role')
        for a, b in itertools.pairwise(messages):
            if a.get("role") == b.get("role"):
                return _error(
                    'messages: roles must alternate between "user" and "assistant", '
                    f'but found multiple "{a.get("role")}" roles in a row'
                )
        answer = self._answer(body)
        if body.get("stream") is True:
            return await self._stream(request, answer)
        return web.json_response(answer, headers={"request-id": f"req_{answer['id']}"})

    async def _stream(self, request: web.Request, answer: dict[str, Any]) -> web.StreamResponse:
        resp = await open_sse(request, {"request-id": f"req_{answer['id']}"})
        usage = answer["usage"]
        start = {
            **answer,
            "content": [],
            "stop_reason": None,
            "usage": {**usage, "output_tokens": 1},
        }
        await resp.write(sse_event("message_start", {"type": "message_start", "message": start}))
        await resp.write(sse_event("ping", {"type": "ping"}))
        first = True
        for index, block in enumerate(answer["content"]):
            opening = {**block, "text": ""} if block["type"] == "text" else {**block, "input": {}}
            await resp.write(
                sse_event(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": opening},
                )
            )
            if block["type"] == "text":
                text = block["text"]
                size = max(1, -(-len(text) // 3))
                for i in range(0, len(text), size):
                    delta = {"type": "text_delta", "text": text[i : i + size]}
                    await resp.write(
                        sse_event(
                            "content_block_delta",
                            {"type": "content_block_delta", "index": index, "delta": delta},
                        )
                    )
                    if first:
                        first = False
                        await self.piece_sent()
            else:
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
                await resp.write(
                    sse_event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
                )
            await resp.write(
                sse_event("content_block_stop", {"type": "content_block_stop", "index": index})
            )
        await resp.write(
            sse_event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": answer["stop_reason"], "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            )
        )
        await resp.write(sse_event("message_stop", {"type": "message_stop"}))
        await resp.write_eof()
        return resp
