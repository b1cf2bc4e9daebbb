"""``/_sidecar/healthz``, ``/_sidecar/readyz`` and ``/_sidecar/metrics``."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from aiohttp import web

from .errors import StoreError
from .lifecycle import Lifecycle
from .metrics import Metrics
from .store.client import REDIS_ERRORS
from .store.postgres import PostgresSessionStore
from .store.redis import RedisSessionStore
from .writer import OutboxWriter

PING_TIMEOUT_S = 1.0


class Health:
    """Liveness, readiness and metrics.

    Readiness answers "can this process serve requests", not "are the shared stores up": the
    sidecar serves through a Redis or PostgreSQL outage (degraded), and it runs in every agent
    pod, so tying readiness to a shared store would take every pod out of its Service at once.
    Only the stores named in ``readiness.require`` make it 503; the body always says what is
    degraded, how far PostgreSQL lags behind and whether the writer is failing.
    """

    def __init__(
        self,
        lifecycle: Lifecycle,
        redis: RedisSessionStore,
        pg: PostgresSessionStore,
        writer: OutboxWriter,
        metrics: Metrics,
        *,
        require: tuple[str, ...] = (),
        lag_warning: int = 0,
    ) -> None:
        self.lifecycle = lifecycle
        self.redis = redis
        self.pg = pg
        self.writer = writer
        self.metrics = metrics
        self.require = require
        self.lag_warning = lag_warning

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
        # The writer may be stuck retrying a write; ask Redis for the current figure. A failed
        # measurement is recorded by the writer (lag unknown), never shown as a stale number.
        with contextlib.suppress(*REDIS_ERRORS, TimeoutError):
            await asyncio.wait_for(self.writer.measure_lag(), PING_TIMEOUT_S)

    async def readyz(self, request: web.Request) -> web.Response:
        problems: list[str] = []
        fatal = False
        if not self.lifecycle.started:
            problems.append("starting")
            fatal = True
        if self.lifecycle.shutting_down:
            problems.append("shutting down")
            fatal = True
        await self._refresh_lag()
        checks = dict(
            zip(
                ("redis", "postgres"),
                await asyncio.gather(self._check_redis(), self._check_postgres()),
                strict=True,
            )
        )
        degraded = [store for store, problem in checks.items() if problem]
        problems += [p for p in checks.values() if p]
        fatal = fatal or any(store in self.require for store in degraded)
        writer = self.writer.health()
        if writer.failing:
            degraded.append("writer")
            problems.append(f"writer: {writer.error}")
        lag = writer.lag
        body: dict[str, object] = {"outbox_lag": lag}
        if lag is None:
            body["outbox_lag_error"] = writer.lag_error
            problems.append(f"outbox lag unknown: {writer.lag_error}")
        elif self.lag_warning and lag > self.lag_warning:
            problems.append(f"writer: {lag} turns waiting for PostgreSQL")
        body = {
            "status": "not ready" if fatal else "ready",
            "degraded": degraded,
            **body,
            "writer": {
                "failing": writer.failing,
                "error": writer.error,
                "failing_for_s": writer.failing_for_s,
            },
            "require": list(self.require),
            "problems": problems,
        }
        return web.Response(
            status=503 if fatal else 200,
            body=orjson.dumps(body),
            content_type="application/json",
        )

    async def metrics_view(self, request: web.Request) -> web.Response:
        await self._refresh_lag()
        return web.Response(
            body=self.metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )
