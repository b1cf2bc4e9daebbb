"""The request path's script calls on a connection of their own, past the client's pool.

A warm turn makes two Redis calls, and through ``redis.asyncio.Redis.execute_command`` each
one also takes a connection from the pool (a lock, a readiness probe of the socket, telemetry
hooks, a deprecation check of its arguments), wraps the call in the retry helper, and gives the
connection back (the lock again, an event dispatch): together about as much CPU as the call's
own send and receive. The lane sends its calls on a redis-py connection of its own (the same
class, options and parser as the client's, so connecting, the handshake and error replies
behave alike), shared by all of them: the calls of one loop iteration go out in one send
(``store.pipe``: a send system call costs tens of microseconds on loopback).

What the pool's retry did is kept: a call that fails on a connection that had served before
(Redis restarted, or a firewall cut an idle connection) is sent once more on a fresh one; a
timeout is not retried. Connecting is bounded by the connect timeout, each call by
``redis.socket_timeout_s``, as they were on the client's own connections.

Commands are packed by hiredis's C ``pack_command`` (the bytes are the same as redis-py's
encoder, which runs per argument in Python).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from .pipe import Pipe

# Whether one request at a time is being served (see ``Pipe``).
Alone = Callable[[], bool] | None
# Work to run while a call's answer is out (see ``ScriptLane.evalsha``).
Meanwhile = Callable[[], None] | None

# At most this many calls in flight at once; more wait for one to end, within the caller's
# bound. As many as the client's own pool allows connections.
MAX_OPEN = 256


def pack_evalsha(conn: AbstractConnection, sha: str, keys: list[str], args: list[Any]) -> bytes:
    """The ``EVALSHA`` command as RESP bytes, encoded in C by hiredis (str as UTF-8, int and
    float as their digits: what redis-py's encoder sends). What hiredis refuses (None, bool)
    goes to redis-py's encoder, so it fails with redis-py's ``DataError`` as it always did."""
    try:
        packed: bytes = hiredis.pack_command(("EVALSHA", sha, len(keys), *keys, *args))
    except TypeError:
        return b"".join(conn.pack_command("EVALSHA", sha, len(keys), *keys, *args))
    return packed


class ScriptLane:
    """``EVALSHA`` on one connection held here, for a single-node client."""

    def __init__(
        self,
        client: aioredis.Redis,
        timeout_s: float,
        connect_timeout_s: float,
        max_open: int = MAX_OPEN,
        alone: Alone = None,
    ) -> None:
        self._pool = client.connection_pool
        self._alone = alone  # see ``Pipe``: one request at a time is being served
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._pipe: Pipe | None = None
        self._slots = asyncio.Semaphore(max_open)
        self._closed = False

    async def evalsha(
        self,
        sha: str,
        keys: list[str],
        args: list[Any],
        meanwhile: Meanwhile = None,
    ) -> Any:
        """The script's reply. ``meanwhile`` (which must not raise) is run once the call is on
        the wire, while its answer is awaited: work the caller can do before it needs the
        reply. It is not run when the call waits to share a write with others, nor on a retry."""
        # (acquire/release rather than ``async with``: two coroutines fewer per call.)
        await self._slots.acquire()
        try:
            pipe = self._live()
            command = pack_evalsha(pipe.conn, sha, keys, args)
            served_before = pipe.ready
            try:
                answer = pipe.submit(command)
                if meanwhile is not None and pipe.ready and not pipe.waiting:
                    meanwhile()
                return await answer
            except (RedisConnectionError, OSError) as e:
                # (TimeoutError is an OSError: a Redis that does not answer is not resent to.)
                if not served_before or isinstance(e, TimeoutError) or self._closed:
                    raise
                # Lost after it had served: one more try on a fresh connection (every script
                # call is safe to send twice, see ``store.client.connection_retry``).
                return await self._live().submit(command)
            finally:
                if self._closed and not pipe.busy:
                    await pipe.aclose()  # a call after ``aclose`` leaves nothing open
        finally:
            self._slots.release()

    def _live(self) -> Pipe:
        pipe = self._pipe
        if pipe is None or pipe.dead:
            pipe = self._pipe = Pipe(
                self._new(), self._timeout_s, self._connect_timeout_s, self._alone
            )
        return pipe

    def _new(self) -> AbstractConnection:
        conn: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        return conn

    async def aclose(self) -> None:
        """Close the connection; calls in flight on it fail as a lost connection would."""
        self._closed = True
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            await pipe.aclose()
