"""What every fake backend of another vendor shares: serving, recording requests, SSE writing,
and a gate that holds a stream mid-way until the test has seen its first part."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from .upstream import RecordedRequest

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def sse_event(name: str | None, data: Any, event_id: str | int | None = None) -> bytes:
    """One event, LF line endings, JSON data written compactly the way Go and Python servers do."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"id: {event_id}\n" if event_id is not None else ""
    head += f"event: {name}\n" if name else ""
    return f"{head}data: {payload}\n\n".encode()


class FakeBackend:
    """Base of the fakes: ``await start()``, ``url``, ``await stop()``; ``requests`` as received.

    ``hold_streams``: when set, a stream stops after its first piece of text until ``release()``:
    a test that sees that piece before releasing knows the sidecar relayed it as it came.
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.hold_streams = False
        self._release = asyncio.Event()
        self.first_piece_sent = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the fake backend is not started")
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record_middleware])
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def release(self) -> None:
        self._release.set()

    async def piece_sent(self) -> None:
        """Called by a stream after its first piece of text: waits while streams are held."""
        self.first_piece_sent.set()
        if self.hold_streams:
            await self._release.wait()

    def requests_to(self, path: str, method: str = "POST") -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path and r.method == method]

    def bodies(self, path: str) -> list[Any]:
        return [r.json for r in self.requests_to(path)]

    @web.middleware
    async def _record_middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query_string=request.query_string,
                headers=CIMultiDict(request.headers),
                body=body,
                json=parsed,
                received_at=time.monotonic(),
            )
        )
        return await handler(request)


async def open_sse(
    request: web.Request, headers: dict[str, str] | None = None
) -> web.StreamResponse:
    resp = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            **(headers or {}),
        },
    )
    await resp.prepare(request)
    return resp
