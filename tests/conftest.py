"""Shared fixtures: one real Redis and one real PostgreSQL per test run, isolated per test.

- ``redis_server`` / ``postgres_server`` (session): the servers themselves, for tests that stop,
  kill or pause them (``await redis_server.stop()`` ...; see ``sidecar.devservices``). The
  function fixtures below bring them back before each test.
- ``redis_url``: the server running and resumed, every key flushed.
- ``pg_dsn``: a fresh database for this test (dropped afterwards).
- ``redis_cluster`` (session, started on first use): a ``TemporaryRedisCluster`` of 3 masters.
- ``redis_cluster_url``: that cluster healthy (every node back and ``cluster_state:ok``), every
  key flushed; the URL of its first node.
- ``upstream``: a started ``FakeUpstream``.
- ``sidecar_config``: ``base_config(upstream.url, redis_url, pg_dsn)``.
- ``start_sidecar``: ``await start_sidecar(config=None, **overrides)`` serves the sidecar in
  process and closes it at the end of the test.
- ``http``: an ``aiohttp.ClientSession`` closed at the end of the test.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from sidecar.devservices import (
    TemporaryPostgres,
    TemporaryRedis,
    TemporaryRedisCluster,
    free_port,
)
from tests.harness import (
    FakeUpstream,
    RunningSidecar,
    base_config,
    deep_merge,
    running_sidecar,
)

StartSidecar = Callable[..., Awaitable[RunningSidecar]]


@pytest.fixture(scope="session")
async def redis_server() -> AsyncIterator[TemporaryRedis]:
    async with TemporaryRedis(persistent=True) as server:
        yield server


@pytest.fixture(scope="session")
async def postgres_server() -> AsyncIterator[TemporaryPostgres]:
    async with TemporaryPostgres() as server:
        yield server


@pytest.fixture(scope="session")
async def redis_cluster() -> AsyncIterator[TemporaryRedisCluster]:
    async with TemporaryRedisCluster(masters=3) as cluster:
        yield cluster


@pytest.fixture
async def redis_url(redis_server: TemporaryRedis) -> str:
    # A previous test may have stopped, killed or paused the server.
    await redis_server.ensure_running()
    await redis_server.flushall()
    return redis_server.url


@pytest.fixture
async def redis_cluster_url(redis_cluster: TemporaryRedisCluster) -> str:
    await redis_cluster.ensure_running()
    await redis_cluster.flushall()
    return redis_cluster.url


@pytest.fixture
async def pg_dsn(postgres_server: TemporaryPostgres) -> AsyncIterator[str]:
    await postgres_server.ensure_running()
    name = f"t_{uuid.uuid4().hex}"
    dsn = await postgres_server.create_database(name)
    yield dsn
    # Best effort: the server may be down or paused at the end of a fault test.
    if postgres_server.is_running and not postgres_server.is_paused:
        with contextlib.suppress(Exception):
            await postgres_server.drop_database(name)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def sidecar_config(upstream: FakeUpstream, redis_url: str, pg_dsn: str) -> dict[str, Any]:
    return base_config(upstream.url, redis_url, pg_dsn)


@pytest.fixture
async def start_sidecar(sidecar_config: dict[str, Any]) -> AsyncIterator[StartSidecar]:
    """Factory: ``await start_sidecar()`` or ``await start_sidecar(config, session={...})``."""
    used_ports: set[int] = set()
    async with contextlib.AsyncExitStack() as stack:

        async def start(config: dict[str, Any] | None = None, **overrides: Any) -> RunningSidecar:
            cfg = deep_merge(config if config is not None else sidecar_config, overrides)
            # Several sidecars in one test (replicas) each need their own port.
            if cfg["listen"]["port"] in used_ports:
                cfg["listen"]["port"] = free_port()
            used_ports.add(cfg["listen"]["port"])
            return await stack.enter_async_context(running_sidecar(cfg))

        yield start


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session
