"""The HTTP extractor: answers from the service, the rules' answer when the service fails."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sidecar.context import HttpExtractor, Resolution, RulesExtractor

NOW = datetime(2025, 6, 4, 4, 0, tzinfo=UTC)
ARGS: dict[str, Any] = {
    "context": {"topic": "weather", "location": "巴黎"},
    "last_assistant": "晴。",
    "timezone": "Asia/Shanghai",
    "now": NOW,
}


class Service:
    def __init__(self) -> None:
        self.mode = "ok"
        self.seen: list[Any] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(await request.json())
        if self.mode == "slow":
            await asyncio.sleep(2)
        if self.mode == "error":
            return web.Response(status=500, text="boom")
        if self.mode == "garbage":
            return web.Response(text="not json", content_type="application/json")
        if self.mode == "shape":
            return web.json_response({"entities": ["location"], "completed_query": 3})
        return web.json_response(
            {"entities": {"date": "2030-01-01", "extra": "x"}, "completed_query": "服务的答案"}
        )


@pytest.fixture
async def service() -> AsyncIterator[tuple[Service, str]]:
    svc = Service()
    app = web.Application()
    app.router.add_post("/extract", svc.handle)
    server = TestServer(app)
    await server.start_server()
    try:
        yield svc, str(server.make_url("/extract"))
    finally:
        await server.close()


async def test_uses_the_service_answer(service: tuple[Service, str]) -> None:
    svc, url = service
    async with aiohttp.ClientSession() as http:
        ext = HttpExtractor(url, http, timeout_s=1.0, fallback=RulesExtractor())
        res = await ext.resolve("那明天呢", **ARGS)
    assert res == Resolution({"date": "2030-01-01"}, "服务的答案")
    assert svc.seen[0]["query"] == "那明天呢"
    assert svc.seen[0]["context"] == {"topic": "weather", "location": "巴黎"}
    assert svc.seen[0]["timezone"] == "Asia/Shanghai"


@pytest.mark.parametrize("mode", ["slow", "error", "garbage", "shape"])
async def test_falls_back_to_rules(
    service: tuple[Service, str], mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    svc, url = service
    svc.mode = mode
    caplog.set_level(logging.WARNING)
    async with aiohttp.ClientSession() as http:
        ext = HttpExtractor(url, http, timeout_s=0.3, fallback=RulesExtractor())
        res = await ext.resolve("那明天呢", **ARGS)
    assert res.completed_query == "明天巴黎的天气"
    assert res.entities["date"] == "2025-06-05"
    assert any("using rules" in r.getMessage() for r in caplog.records)


async def test_unreachable_service_falls_back() -> None:
    async with aiohttp.ClientSession() as http:
        ext = HttpExtractor(
            "http://127.0.0.1:9/extract", http, timeout_s=0.5, fallback=RulesExtractor()
        )
        res = await ext.resolve("那明天呢", **ARGS)
    assert res.completed_query == "明天巴黎的天气"
