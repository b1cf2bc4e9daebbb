"""One Redis connection that carries many calls at once: the calls made within two turns of the
event loop go out in one write, and their replies are handed back in order (auto-pipelining,
as ioredis and StackExchange.Redis do it). While one request at a time is served (``alone``,
a hint from the server), a call made with nothing else in flight or waiting goes out at once:
nobody is coming to share its write, and waiting would only add to that request's time.

Why: on loopback a send system call runs the receiving side's TCP processing too, so each one
costs tens of microseconds whatever its size. With a connection per call, the sends of a warm
turn's two script calls were the largest single cost of the turn (``StreamWriter.write``, 21.6 %
of the sidecar's samples at 16 concurrent connections). Redis answers a connection's commands
in the order they were sent, so the replies resolve the callers' futures first in, first out,
as they arrive (parsed by hiredis in the transport's callback). Measured with 16 callers
looping EVALSHA under uvloop, alternating with the connection-per-call lane: 25 -> 10 us of
CPU per call; one caller alone: 41 -> 24 us.

What each caller can rely on:

- its call is bounded by ``timeout_s`` from when it was sent (the batch's write); a call that
  runs out of time cuts the connection, and every call in flight on it (all behind it, in order)
  fails with the same ``TimeoutError``;
- connecting, with the handshake redis-py's connection class does (AUTH, SELECT, HELLO), is
  bounded by ``connect_timeout_s``; calls waiting for it fail with what it failed with;
- an error reply (NOSCRIPT, OOM, READONLY) fails only its own call; the connection is in step;
- a caller that is cancelled is never sent if its batch was not written yet; if it was, its
  reply is read and dropped. Nobody else notices;
- a lost connection fails every call in flight and waiting with the loss (a ``ConnectionError``
  reply, such as LOADING, counts as a loss, as redis-py raises it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError

# A loop may run a timer up to its clock's resolution early (uvloop: a millisecond): what falls
# due within that is due now, or the timer would be re-armed in a spin.
TIMER_SLACK_S = 0.001

_Call = tuple[bytes, "asyncio.Future[Any]"]


class Pipe:
    """A redis-py connection (connected here) shared by every call sent while it lives."""

    def __init__(
        self,
        conn: AbstractConnection,
        timeout_s: float,
        connect_timeout_s: float,
        alone: Callable[[], bool] | None = None,
    ) -> None:
        self.conn = conn
        self._alone = alone
        self._timeout_s = timeout_s
        self._loop = asyncio.get_running_loop()
        self._pending: list[_Call] = []
        # Calls written and not answered yet, in the order sent, each with its deadline.
        self._inflight: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._flush_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.WriteTransport | None = None
        self._replies: Any = None
        # Connected and through the handshake: a call sent now goes on a connection that served.
        self.ready = False
        self.dead = False
        self._connecting = self._loop.create_task(self._connect(connect_timeout_s))

    @property
    def busy(self) -> bool:
        return bool(self._pending or self._inflight)

    @property
    def waiting(self) -> bool:
        """Calls are queued for the next write (not sent yet)."""
        return bool(self._pending)

    def submit(self, command: bytes) -> asyncio.Future[Any]:
        """Queue a packed command; its reply (or failure) arrives on the returned future."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        if self.dead:
            fut.set_exception(RedisConnectionError("Connection closed"))
            return fut
        self._pending.append((command, fut))
        if self.ready and self._flush_handle is None:
            if len(self._pending) == 1 and not self._inflight and self._alone and self._alone():
                self._flush()  # one request at a time: no other call is coming to share it
            else:
                self._flush_handle = self._loop.call_soon(self._flush_next)
        return fut

    def _flush_next(self) -> None:
        # One loop turn later than the first call of a batch: the requests woken by the same
        # poll of the sockets run in the turn after it, so their calls join this write too
        # (about twice the calls per send under load; alone, a turn of an idle loop is ~µs).
        self._flush_handle = self._loop.call_soon(self._flush)

    async def _connect(self, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await self.conn.connect()  # type: ignore[no-untyped-call]
        except BaseException as e:
            self._die(e)
            await self.conn.disconnect(nowait=True)
            if isinstance(e, asyncio.CancelledError):
                raise
            return
        writer = self.conn._writer
        assert writer is not None
        self._transport = writer.transport
        # Replies are parsed as they arrive, in the transport's own callback: a stream and a
        # reader task would add a task step (and a loop turn) between a reply and its caller.
        # The connection's parser made the handshake's replies; this reader makes the same
        # exceptions of error replies, with the same decoding.
        encoder = self.conn.encoder
        decoding: dict[str, str] = (
            {"encoding": encoder.encoding, "errors": encoder.encoding_errors}
            if encoder.decode_responses
            else {}
        )
        self._replies = hiredis.Reader(
            protocolError=InvalidResponse,
            replyError=BaseParser.parse_error,
            notEnoughData=NOT_ENOUGH_DATA,
            **decoding,
        )
        self._transport.set_protocol(_Replies(self))
        self.ready = True
        if self._pending and self._flush_handle is None:
            self._flush()

    def _flush(self) -> None:
        """Write every call queued since the last flush in one send."""
        self._flush_handle = None
        pending, self._pending = self._pending, []
        if self.dead:
            return
        # A caller cancelled before its batch went out is never sent.
        calls = [call for call in pending if not call[1].done()]
        if not calls:
            return
        transport = self._transport
        assert transport is not None
        deadline = self._loop.time() + self._timeout_s
        try:
            transport.write(b"".join([command for command, _ in calls]))
        except Exception as e:  # a transport already closing may refuse (uvloop)
            self._fail(calls, e)
            self._die(e)
            return
        inflight = self._inflight
        for _, fut in calls:
            inflight.append((fut, deadline))
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._check)

    def _received(self, data: bytes) -> None:
        """Hand each whole reply to the oldest call in flight (replies come in order)."""
        replies = self._replies
        replies.feed(data)
        inflight = self._inflight
        while (reply := replies.gets()) is not NOT_ENOUGH_DATA:
            # What redis-py's read_response raises rather than returns: the connection is lost.
            if isinstance(reply, RedisConnectionError):
                self._die(reply)
                return
            if isinstance(reply, list) and reply and isinstance(reply[0], RedisConnectionError):
                self._die(reply[0])
                return
            if not inflight:
                self._die(RedisConnectionError("Redis answered a call that was not sent"))
                return
            fut, _ = inflight.popleft()
            if fut.done():  # its caller was cancelled: the reply is dropped
                continue
            if isinstance(reply, ResponseError):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def _check(self) -> None:
        """The oldest call in flight has the earliest deadline: past it, cut the connection."""
        self._timer = None
        if self.dead or not self._inflight:
            return
        deadline = self._inflight[0][1]
        if deadline > self._loop.time() + TIMER_SLACK_S:
            self._timer = self._loop.call_at(deadline, self._check)
            return
        self._die(TimeoutError(f"Redis did not answer within {self._timeout_s}s"))

    @staticmethod
    def _fail(calls: list[_Call], error: BaseException) -> None:
        for _, fut in calls:
            if not fut.done():
                fut.set_exception(error)

    def _die(self, error: BaseException) -> None:
        """End the connection: every call in flight or waiting fails with ``error``."""
        if self.dead:
            return
        self.dead = True
        self.ready = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not isinstance(error, Exception):  # cancelled: the calls saw a lost connection
            error = RedisConnectionError("Connection closed")
        inflight, self._inflight = self._inflight, deque()
        for fut, _ in inflight:
            if not fut.done():
                fut.set_exception(error)
        pending, self._pending = self._pending, []
        self._fail(pending, error)
        if self._transport is not None:
            # Abort, not close: a write still buffered must not reach Redis after its caller
            # was told it failed (a timeout is never sent, nor resent).
            self._transport.abort()

    async def aclose(self) -> None:
        """Close the connection; calls in flight fail as a lost connection would."""
        self._die(RedisConnectionError("Connection closed by the client"))
        if not self._connecting.done():
            self._connecting.cancel()
        await asyncio.gather(self._connecting, return_exceptions=True)
        # (nowait: the stream the connection made no longer hears of the transport closing.)
        await self.conn.disconnect(nowait=True)


class _Replies(asyncio.Protocol):
    """The transport's protocol once connected: bytes in to the pipe, a loss as a loss."""

    def __init__(self, pipe: Pipe) -> None:
        self._pipe = pipe

    def data_received(self, data: bytes) -> None:
        self._pipe._received(data)

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        # As redis-py words a lost connection, so the store's handling of it applies.
        reason = f"Error while reading from Redis: {exc}" if exc else "Connection closed by server."
        self._pipe._die(RedisConnectionError(reason))
