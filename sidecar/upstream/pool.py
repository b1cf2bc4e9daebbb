"""Keep-alive connections to one upstream origin: at most ``size`` open, idle ones reused last-in
first-out and closed after ``keepalive_s``, callers beyond the limit waiting their turn.

A connection goes back to the pool only when its answer ended and the upstream did not say
close; one the upstream closed while idle is noticed (EOF) and never used again.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import cast

from ..errors import UpstreamUnavailable
from .response import Response, UpstreamBroke


class ConnectTimedOut(UpstreamUnavailable):
    """No connection within ``connect_timeout_s``: as unreachable as a refused one."""


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to the upstream; feeds the bytes it receives to the
    response it is carrying, and notices EOF both while busy and while idle."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        # A streamed request body still being sent; the connection cannot be reused before
        # it has gone out whole.
        self.sender: asyncio.Task[None] | None = None
        self.closed = False
        self.reused = False  # carried a request before this one
        self.idle_since = 0.0
        self._drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's, only alike: no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            # Bytes nobody asked for: the connection is out of step with its requests.
            self.close()
            return
        response.feed(data)

    def eof_received(self) -> bool:
        self.closed = True
        if self.response is not None:
            self.response.eof()
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.response is not None:
            self.response.eof()
        self._wake_writer()

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = self.pool.loop.create_future()

    def resume_writing(self) -> None:
        self._wake_writer()

    async def drain(self) -> None:
        """Wait while the transport's write buffer is full (a streamed upload)."""
        if self._drained is not None:
            await self._drained
        if self.closed:
            raise UpstreamBroke("the upstream closed the connection during the upload")

    def finished(self, reusable: bool) -> None:
        """The response's message ended (or failed): back to the pool, or closed."""
        self.response = None
        sender = self.sender
        if sender is not None:
            self.sender = None
            if not sender.done():
                # The upstream answered before taking the whole upload: this connection's
                # request stream is unfinished, so it cannot carry another request.
                reusable = False
                sender.cancel()
        if not reusable or self.closed:
            self.close()
        self.pool.release(self)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def usable(self) -> bool:
        transport = self.transport
        return not self.closed and transport is not None and not transport.is_closing()

    def _wake_writer(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)


class Pool:
    """The connections to one origin."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        size: int,
        connect_timeout_s: float,
        keepalive_s: float,
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.tls = tls
        self.size = size
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self.open = 0  # connections open or being opened, idle ones included
        self.idle: list[Connection] = []
        self.waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def in_use(self) -> int:
        """Connections carrying a request (or being opened for one) now."""
        return self.open - len(self.idle)

    async def acquire(self) -> Connection:
        """A connection for one request: the idle one used last, else a new one if there is
        room, else the next one released."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.usable():
                conn.reused = True
                return conn
            conn.close()
            self.open -= 1
        if self.open < self.size:
            self.open += 1
            return await self._connect()
        waiter: asyncio.Future[Connection | None] = self.loop.create_future()
        self.waiters.append(waiter)
        try:
            # As with aiohttp's connector, waiting for a free connection counts as connecting.
            async with asyncio.timeout(self.connect_timeout_s):
                given = await self._wait(waiter)
        except TimeoutError as e:
            raise ConnectTimedOut("the upstream is unreachable: connect timed out") from e
        if given is not None:
            given.reused = True
            return given
        return await self._connect()  # handed the place of a connection that was closed

    async def _wait(self, waiter: asyncio.Future[Connection | None]) -> Connection | None:
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed a connection (or a free place) just as the wait was cancelled: pass it on.
                handed = waiter.result()
                if handed is not None:
                    self.release(handed)
                else:
                    self._free_place()
            elif waiter in self.waiters:  # a release may have passed over it already
                self.waiters.remove(waiter)
            raise

    async def _connect(self) -> Connection:
        """A new connection, in a place already counted in ``open``."""
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await self.loop.create_connection(
                    lambda: Connection(self), self.host, self.port, ssl=self.tls
                )
        except TimeoutError as e:
            self._free_place()
            raise ConnectTimedOut("the upstream is unreachable: connect timed out") from e
        except BaseException:
            self._free_place()
            raise
        return conn

    def release(self, conn: Connection) -> None:
        """A connection done with its request: given to a waiter, kept idle, or (closed) its
        place freed."""
        if conn.closed:
            self._free_place()
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_at(conn.idle_since + self.keepalive_s, self._sweep)

    def _free_place(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the waiter opens a connection in this place
                return
        self.open -= 1

    def _sweep(self) -> None:
        """Close connections idle for ``keepalive_s``: one timer per pool rather than one per
        connection, set again for the oldest survivor."""
        self._sweeper = None
        now = self.loop.time()
        kept = []
        for conn in self.idle:
            if conn.usable() and now - conn.idle_since < self.keepalive_s:
                kept.append(conn)
            else:
                conn.close()
                self.open -= 1
        self.idle = kept
        if kept:
            oldest = min(conn.idle_since for conn in kept)
            self._sweeper = self.loop.call_at(oldest + self.keepalive_s, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in self.idle:
            conn.close()
        self.open -= len(self.idle)
        self.idle = []
