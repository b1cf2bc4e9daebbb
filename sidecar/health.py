"""``/_sidecar/healthz``, ``/_sidecar/readyz`` and ``/_sidecar/metrics``."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from aiohttp import web
from redis.exceptions import RedisError

from .errors import StoreError
from .lifecycle import Lifecycle
from .metrics import Metrics
from .store.postgres import PostgresSessionStore
from .store.redis import RedisSessionStore
from .writer import OutboxWriter

PING_TIMEOUT_S = 1.0


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
        except (StoreError, TimeoutError) as e:
            return f"redis: {e or 'no answer'}"
        return None

    async def _check_postgres(self) -> str | None:
        try:
            await asyncio.wait_for(self.pg.ping(), PING_TIMEOUT_S)
        except StoreError as e:
            return f"postgres: {e}"
        except TimeoutError:
            return "postgres: no answer"
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
