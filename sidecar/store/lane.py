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
``redis.socket_timeout_s``, as they were on the client's own connections. An error reply
(NOSCRIPT, OOM, READONLY) leaves its connection usable; any other failure, cancellation
included, drops it.

Per call, the redis-py way cost as much again as the exchange's own I/O: its command encoder
runs per argument in Python, and a timeout context per exchange arms and cancels a loop timer.
Commands are packed by hiredis's C ``pack_command`` (the bytes are the same), each exchange goes
straight to the connection's stream and parser (``_exchange``), and the exchanges share one
watchdog timer (``_Watchdog``) instead of a timer each.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

# Idle connections kept beyond this are closed: a burst does not leave sockets open for good.
MAX_IDLE = 64
# At most this many calls (and so connections) at once; more wait for one to end, within the
# caller's bound. As many as the client's own pool allows.
MAX_OPEN = 256
TIMER_SLACK_S = 0.001


def pack_evalsha(conn: AbstractConnection, sha: str, keys: list[str], args: list[Any]) -> bytes:
    """The ``EVALSHA`` command as RESP bytes, encoded in C by hiredis (str as UTF-8, int and
    float as their digits: what redis-py's encoder sends). What hiredis refuses (None, bool)
    goes to redis-py's encoder, so it fails with redis-py's ``DataError`` as it always did."""
    try:
        packed: bytes = hiredis.pack_command(("EVALSHA", sha, len(keys), *keys, *args))
    except TypeError:
        return b"".join(conn.pack_command("EVALSHA", sha, len(keys), *keys, *args))
    return packed


async def _exchange(conn: AbstractConnection, command: bytes) -> Any:
    """Send a packed command on a connected connection and read its reply, straight on the
    connection's stream and parser: ``send_packed_command`` and ``read_response`` wrap the same
    calls in checks this lane makes once (connected, no health checks, no socket timeout) and
    in error translation it does not need (any failure drops the connection), ~4 us a call.
    An error reply is raised, as redis-py raises it."""
    writer = conn._writer
    assert writer is not None  # connected by the caller
    writer.write(command)
    await writer.drain()
    reply = await conn._parser.read_response()  # type: ignore[attr-defined]
    if isinstance(reply, ResponseError):
        raise reply
    return reply


class _Watchdog:
    """Bounds the exchanges with one loop timer between them, not one timer (and a timeout
    context) each. An exchange past its deadline has its connection cut (the transport aborted),
    so its pending write or read fails at once; ``stop`` then tells that it was the bound."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        # One timeout for all, so deadlines are set in the order they fall due: the first entry
        # (dicts keep insertion order) is always the next to expire.
        # Keyed by identity: a connection class may define equality (redis-py's does not).
        self._due: dict[int, tuple[float, AbstractConnection]] = {}
        self._expired: set[int] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, conn: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        self._due[id(conn)] = (deadline, conn)
        if self._timer is None or self._loop is not loop:
            self._loop, self._timer = loop, loop.call_at(deadline, self._check)

    def stop(self, conn: AbstractConnection) -> bool:
        """End the exchange's bound; True when it ran out (its connection is cut)."""
        self._due.pop(id(conn), None)
        if id(conn) in self._expired:
            self._expired.discard(id(conn))
            return True
        return False

    def _check(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None
        # A loop may run a timer up to its clock's resolution early (uvloop: a millisecond):
        # what falls due within that is due now, or the timer would be re-armed in a spin.
        now = loop.time() + TIMER_SLACK_S
        while self._due:
            key, (deadline, conn) = next(iter(self._due.items()))
            if deadline > now:
                self._timer = loop.call_at(deadline, self._check)
                return
            del self._due[key]
            self._expired.add(key)
            # redis-py has no public way to cut a connection from a loop callback.
            writer = conn._writer
            if writer is not None:
                writer.transport.abort()


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
        self._watch = _Watchdog(timeout_s)
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
        command = pack_evalsha(conn, sha, keys, args)
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

    async def _send(self, conn: AbstractConnection, command: bytes) -> Any:
        if not conn.is_connected:
            async with asyncio.timeout(self._connect_timeout_s):
                await conn.connect()  # type: ignore[no-untyped-call]
        watch = self._watch
        watch.start(conn)
        try:
            reply = await _exchange(conn, command)
        except Exception as e:
            if watch.stop(conn):
                raise TimeoutError(f"Redis did not answer within {self._timeout_s}s") from e
            raise
        except BaseException:  # cancelled: the caller's own bound, or shutting down
            watch.stop(conn)
            raise
        if watch.stop(conn):
            # The answer came just as the time ran out, and the connection is cut already.
            raise TimeoutError(f"Redis did not answer within {self._timeout_s}s")
        return reply

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
