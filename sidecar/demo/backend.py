"""A stand-in agent backend: stateless, it answers from what the request carries.

It shows what the sidecar adds: without ``history`` and ``context`` it could not know which city
"那明天呢" is about. Answers carry token usage like a real LLM backend's would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from ..context import estimate_tokens

RECEIVED = web.AppKey("received", list)


@dataclass
class DemoBackend:
    received: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/tasks", self.tasks)
        app.router.add_post("/api/v1/tasks", self.tasks)
        app.router.add_get("/health", self.health)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def tasks(self, request: web.Request) -> web.Response:
        body = await request.json(loads=orjson.loads)
        self.received.append(body)
        answer = reply(body)
        prompt = estimate_tokens(orjson.dumps(body).decode())
        completion = estimate_tokens(answer)
        return web.json_response(
            {
                "result": answer,
                "model": "demo-weather-1",
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            },
            dumps=lambda o: orjson.dumps(o).decode(),
        )


def reply(body: dict[str, Any]) -> str:
    context = body.get("context") or {}
    chinese = any("\u4e00" <= ch <= "\u9fff" for ch in body.get("query", ""))
    place, date = context.get("location"), context.get("date")
    if context.get("topic") != "weather":
        return "好的。" if chinese else "Sure."
    if not place:
        return "您想查询哪个城市？" if chinese else "Which city are you interested in?"
    when = context.get("time_expression") or date or ""
    if chinese:
        return f"{place}{when}（{date}）：晴，12 到 18 摄氏度。"
    return f"{place}, {when} ({date}): sunny, 12 to 18 degrees Celsius."
