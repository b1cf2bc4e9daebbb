"""The request path's script calls on connections of their own, past the client's pool.

A warm turn makes two Redis calls, and through ``redis.asyncio.Redis.execute_command`` each
one also takes a connection from the pool (a lock, a readiness probe of the socket, telemetry
hooks, a deprecation check of its arguments), wraps the call in the retry helper, and gives the
connection back (the lock again, an event dispatch): together about as much CPU as the call's
own send and receive. The lane keeps a stack of redis-py connections (the same class, options
and parser as the client's, so connecting, the handshake and error replies behave alike) and
sends each call on an idle one.

What the pool's retry did is kept: a call that fails on a connection that had served before
(Redis restarted, or a firewall cut an idle connection) is sent once more on a fresh one; a
timeout is not retried. Connecting is bounded by the connect timeout, each exchange by
``redis.socket_timeout_s``, as they were on the client's own connections. An error reply (NOSCRIPT, OOM, READONLY) leaves its connection usable;
any other failure, cancellation included, drops it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

# Idle connections kept beyond this are closed: a burst does not leave sockets open for good.
MAX_IDLE = 64
# At most this many calls (and so connections) at once; more wait for one to end, within the
# caller's bound. As many as the client's own pool allows.
MAX_OPEN = 256


class ScriptLane:
    """``EVALSHA`` on connections held here, for a single-node client."""

    def __init__(
        self,
        client: aioredis.Redis,
        timeout_s: float,
        connect_timeout_s: float,
        max_idle: int = MAX_IDLE,
        max_open: int = MAX_OPEN,
    ) -> None:
        self._pool = client.connection_pool
        # Each exchange (send and reply) is bounded by this; connecting (and the handshake),
        # when a call needs a connection first, by the connect timeout apart.
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._idle: list[AbstractConnection] = []
        self._max_idle = max_idle
        self._slots = asyncio.Semaphore(max_open)
        self._closed = False

    async def evalsha(self, sha: str, keys: list[str], args: list[Any]) -> Any:
        async with self._slots:
            return await self._evalsha(sha, keys, args)

    async def _evalsha(self, sha: str, keys: list[str], args: list[Any]) -> Any:
        conn = self._idle.pop() if self._idle else self._new()
        command = conn.pack_command("EVALSHA", sha, len(keys), *keys, *args)
        served_before = conn.is_connected
        try:
            try:
                reply = await self._send(conn, command)
            except (RedisConnectionError, OSError) as e:
                # (TimeoutError is an OSError: a Redis that does not answer is not resent to.)
                if not served_before or isinstance(e, TimeoutError):
                    raise
                # Dead while idle: one more try on a fresh connection (every script call is
                # safe to send twice, see ``store.client.connection_retry``).
                await conn.disconnect(nowait=True)
                reply = await self._send(conn, command)
        except ResponseError:
            await self._keep(conn)  # Redis answered: the connection is in step
            raise
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        await self._keep(conn)
        return reply

    def _new(self) -> AbstractConnection:
        conn: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        return conn

    async def _send(self, conn: AbstractConnection, command: Any) -> Any:
        if not conn.is_connected:
            async with asyncio.timeout(self._connect_timeout_s):
                await conn.connect()  # type: ignore[no-untyped-call]
        async with asyncio.timeout(self._timeout_s):
            await conn.send_packed_command(command, check_health=False)
            return await conn.read_response()

    async def _keep(self, conn: AbstractConnection) -> None:
        if not self._closed and len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            await conn.disconnect(nowait=True)

    async def aclose(self) -> None:
        """Close the idle connections; those of calls still running close as the calls end."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect(nowait=True)
