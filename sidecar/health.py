"""``/_sidecar/healthz``, ``/_sidecar/readyz`` and ``/_sidecar/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web
from redis.exceptions import RedisError

from .errors import StoreUnavailable
from .metrics import Metrics
from .store.postgres import PG_ERRORS, PostgresSessionStore
from .store.redis import RedisSessionStore
from .writer import OutboxWriter

PING_TIMEOUT_S = 1.0


@dataclass(slots=True)
class Lifecycle:
    shutting_down: bool = False
    in_flight: int = 0  # requests being handled, counted by ``track``
    shutdown_deadline: float | None = None  # monotonic time by which everything must be done

    def begin_shutdown(self, budget_s: float) -> None:
        self.shutting_down = True
        self.shutdown_deadline = time.monotonic() + budget_s

    def remaining_s(self, default: float, floor: float = 1.0) -> float:
        """What is left of the shutdown budget (at least ``floor``)."""
        if self.shutdown_deadline is None:
            return default
        return max(self.shutdown_deadline - time.monotonic(), floor)

    @web.middleware
    async def track(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Middleware counting requests in flight, so a shutdown can wait for them."""
        self.in_flight += 1
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1


class Health:
    def __init__(
        self,
        lifecycle: Lifecycle,
        redis: RedisSessionStore,
        pg: PostgresSessionStore,
        writer: OutboxWriter,
        metrics: Metrics,
        max_lag: int,
    ) -> None:
        self.lifecycle = lifecycle
        self.redis = redis
        self.pg = pg
        self.writer = writer
        self.metrics = metrics
        self.max_lag = max_lag

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, dumps=lambda o: orjson.dumps(o).decode())

    async def _check_redis(self) -> str | None:
        try:
            await asyncio.wait_for(self.redis.ping(), PING_TIMEOUT_S)
        except (StoreUnavailable, TimeoutError) as e:
            return f"redis: {e or 'no answer'}"
        return None

    async def _check_postgres(self) -> str | None:
        try:
            await asyncio.wait_for(self.pg.ping(), PING_TIMEOUT_S)
        except PG_ERRORS as e:
            return f"postgres: {type(e).__name__}: {e}".rstrip(": ")
        return None

    async def _refresh_lag(self) -> None:
        # The writer may be stuck retrying a write; ask Redis for the current figure.
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self.writer.measure_lag(), PING_TIMEOUT_S)

    async def readyz(self, request: web.Request) -> web.Response:
        problems: list[str] = []
        await self._refresh_lag()
        if self.lifecycle.shutting_down:
            problems.append("shutting down")
        checks = await asyncio.gather(self._check_redis(), self._check_postgres())
        problems += [p for p in checks if p]
        if self.max_lag and self.writer.lag > self.max_lag:
            problems.append(f"writer: {self.writer.lag} turns waiting for PostgreSQL")
        status = 503 if problems else 200
        body = {
            "status": "not ready" if problems else "ready",
            "problems": problems,
            "outbox_lag": self.writer.lag,
        }
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")

    async def metrics_view(self, request: web.Request) -> web.Response:
        await self._refresh_lag()
        return web.Response(
            body=self.metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )
