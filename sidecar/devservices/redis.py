"""A throw-away ``redis-server``: its command line, and readiness probed with redis-py."""

from __future__ import annotations

import shutil
from typing import Any, Literal

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .process import ChildServer, DevServiceError

__all__ = ["TemporaryRedis", "find_redis_server"]


def find_redis_server(binary: str | None = None) -> str:
    """The ``redis-server`` to run: ``binary`` when given, else the one on PATH."""
    found = binary or shutil.which("redis-server")
    if not found:
        raise DevServiceError(
            "redis-server was not found on PATH: install it "
            "(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)"
        )
    return found


class TemporaryRedis(ChildServer):
    """A ``redis-server`` on 127.0.0.1 in a temporary directory.

    With ``persistent=True`` (the default) it runs with ``appendonly yes`` so its data survives
    ``stop()``/``start()`` and ``restart()``; after ``kill()`` up to the last second of writes may
    be lost, as with a real deployment (``appendfsync everysec``). ``extra_args`` are appended to
    the command line (the cluster uses them for ``--cluster-enabled yes``).
    """

    name = "redis"

    def __init__(
        self,
        *,
        persistent: bool = True,
        appendfsync: Literal["always", "everysec", "no"] = "everysec",
        port: int | None = None,
        binary: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = find_redis_server(binary)
        self.persistent = persistent
        self.appendfsync = appendfsync
        self.extra_args = extra_args
        super().__init__(port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", self.appendfsync,
            "--daemonize", "no",
            "--protected-mode", "no",
            "--databases", "16",
            *self.extra_args,
        ]  # fmt: skip

    def client(self, socket_timeout: float = 5.0, **kwargs: Any) -> aioredis.Redis:
        """A redis-py asyncio client for this server that fails at once instead of retrying."""
        return aioredis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
            **kwargs,
        )

    async def execute(self, *args: str | int, socket_timeout: float = 5.0) -> Any:
        """Send one command on a fresh connection and return redis-py's parsed reply."""
        client = self.client(socket_timeout)
        try:
            return await client.execute_command(*args)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        finally:
            await client.aclose()

    async def probe(self) -> bool:
        # A server still loading its append-only file answers LOADING (a ConnectionError).
        try:
            return bool(await self.execute("PING", socket_timeout=0.5))
        except (redis.exceptions.RedisError, OSError):
            return False

    async def flushall(self) -> None:
        """Remove every key of every database."""
        await self.execute("FLUSHALL")
