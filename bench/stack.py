"""What the benchmarks run against, all on 127.0.0.1: throw-away Redis and PostgreSQL, a scripted
upstream, and the sidecar (in this process, or as its own ``python -m sidecar serve`` process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiohttp import web

from sidecar.app import create_app
from sidecar.config import Config
from sidecar.devservices import TemporaryPostgres, TemporaryRedis, free_port, in_background

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ANSWER = "Sunny all day, 22 degrees, light wind from the west. Enjoy your afternoon!"


@dataclass(frozen=True, slots=True)
class Stores:
    redis_url: str
    pg_dsn: str


@contextlib.asynccontextmanager
async def _started_stores() -> AsyncIterator[Stores]:
    async with TemporaryRedis(persistent=False) as redis, TemporaryPostgres() as postgres:
        yield Stores(redis.url, await postgres.create_database("bench"))


@contextlib.contextmanager
def temporary_stores() -> Iterator[Stores]:
    """Throw-away Redis and PostgreSQL (a fresh database), removed on the way out.

    The servers live on a loop thread of their own, since the benchmarks call ``asyncio.run``
    once per measurement and a server's child process belongs to the loop that started it.
    """
    with in_background(_started_stores()) as stores:
        yield stores


@contextlib.contextmanager
def stores_or_temporary(stores: Stores | None) -> Iterator[Stores]:
    if stores is not None:
        yield stores
        return
    with temporary_stores() as made:
        yield made


def sidecar_config(
    upstream_url: str, stores: Stores, port: int = 0, **sections: Mapping[str, Any]
) -> dict[str, Any]:
    """A complete sidecar config for a benchmark; ``sections`` are merged over the defaults."""
    config: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": port or free_port()},
        "upstream": {"url": upstream_url, "connect_timeout_s": 5, "read_timeout_s": 60},
        "redis": {"url": stores.redis_url, "key_prefix": f"bench{uuid.uuid4().hex[:8]}"},
        "postgres": {"dsn": stores.pg_dsn, "migrate_on_start": True},
        "context": {"extract_entities": True, "rewrite": "replace", "timezone": "UTC"},
        "writer": {
            "block_ms": 100,
            "journal_path": str(Path(tempfile.gettempdir()) / f"bench-{uuid.uuid4().hex}.jsonl"),
        },
        "logging": {"level": "WARNING"},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


# --- the upstream ------------------------------------------------------------------------------


class ScriptedUpstream:
    """A backend for the tasks protocol: ``POST /api/tasks`` (and ``POST /bench/tasks``, a path
    the sidecar does not intercept) answers with the next reply scripted for the request's
    ``session_id``, or a fixed text when none is; ``record=True`` keeps every body received."""

    def __init__(self, *, record: bool = False, answer: str = DEFAULT_ANSWER) -> None:
        self.record = record
        self.answer = answer
        self.replies: dict[str, deque[str]] = defaultdict(deque)
        self.received: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, session_id: str, reply: str) -> None:
        self.replies[session_id].append(reply)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/tasks", self._tasks)
        app.router.add_post("/bench/tasks", self._tasks)
        return app

    async def _tasks(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        session_id = str(body.get("session_id") or "")
        if self.record:
            self.received[session_id].append(body)
        queue = self.replies.get(session_id)
        text = queue.popleft() if queue else self.answer
        history = body.get("history") or ()
        prompt = (len(body.get("query", "")) + sum(len(m["content"]) for m in history)) // 4
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": len(text) // 4,
            "total_tokens": prompt + len(text) // 4,
        }
        return web.Response(
            body=orjson.dumps({"result": text, "usage": usage, "model": "bench"}),
            content_type="application/json",
        )

    async def start(self, port: int = 0) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@contextlib.asynccontextmanager
async def scripted_upstream(*, record: bool = False) -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream(record=record)
    await upstream.start()
    try:
        yield upstream
    finally:
        await upstream.stop()


# --- the sidecar ---------------------------------------------------------------------------------


@dataclass
class InProcessSidecar:
    url: str
    app: web.Application


@contextlib.asynccontextmanager
async def sidecar_in_process(config: Mapping[str, Any]) -> AsyncIterator[InProcessSidecar]:
    """``create_app(config)`` served on 127.0.0.1 in this event loop."""
    cfg = Config.from_mapping(config, env={})
    app = create_app(cfg)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", cfg.listen.port).start()
        yield InProcessSidecar(f"http://127.0.0.1:{cfg.listen.port}", app)
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def child_process(
    argv: list[str], ready_url: str, *, timeout_s: float = 30.0
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``argv`` (output to a temporary log) until the block ends; wait for ``ready_url``."""
    workdir = Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    log_path = workdir / "out.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    with open(log_path, "ab") as log:  # noqa: ASYNC230 - a local file, opened once
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
        )

    def log_tail() -> str:
        return log_path.read_text(errors="replace")[-2000:]

    try:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
            while True:
                if proc.returncode is not None:
                    raise RuntimeError(f"{argv[2:]} exited early:\n{log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with http.get(ready_url) as resp:
                        if resp.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{argv[2:]} not ready in {timeout_s} s:\n{log_tail()}")
                await asyncio.sleep(0.05)
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await asyncio.to_thread(shutil.rmtree, workdir, True)


@contextlib.asynccontextmanager
async def sidecar_process(config: Mapping[str, Any]) -> AsyncIterator[str]:
    """``python -m sidecar serve`` with ``config``, in its own process; yields its URL."""
    workdir = Path(tempfile.mkdtemp(prefix="sidecar-bench-config-"))
    try:
        path = workdir / "sidecar.yaml"
        await asyncio.to_thread(path.write_text, yaml.safe_dump(dict(config)))
        url = f"http://127.0.0.1:{config['listen']['port']}"
        argv = [sys.executable, "-m", "sidecar", "serve", "-c", str(path)]
        async with child_process(argv, url + "/_sidecar/readyz"):
            yield url
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)


@contextlib.asynccontextmanager
async def upstream_process() -> AsyncIterator[str]:
    """``python -m bench.stack PORT``: the scripted upstream as its own process; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "bench.stack", str(port)]
    async with child_process(argv, url + "/bench/ready"):
        yield url


# --- figures ---------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline > 0 else float("nan")


def _serve_upstream(port: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    upstream = ScriptedUpstream()
    app = upstream.app()

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/bench/ready", ready)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    _serve_upstream(int(sys.argv[1]))
