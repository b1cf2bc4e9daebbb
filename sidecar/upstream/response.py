"""One upstream answer as it arrives on a connection: parsed by llhttp (through ``httptools``),
its body buffered chunk by chunk for whoever reads it, every wait for bytes bounded.

The connection (``connection.Connection``) feeds it bytes and tells it of EOF; the response
tells the connection, through ``finished``, once its message has ended and whether the
connection may carry another.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from ..errors import UpstreamUnavailable

# Reading from the upstream pauses while this much of a body waits for its reader (a slow
# client must not make the sidecar buffer a whole large answer), and resumes below the low mark.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024

_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


class UpstreamBroke(UpstreamUnavailable):
    """The upstream's connection broke, or it sent something that is not HTTP/1.1."""


class Unanswered(UpstreamBroke):
    """The upstream closed the connection before a byte of its answer came."""


def _mime(content_type: str | None) -> str:
    """The media type alone, lower-cased, as ``aiohttp.ClientResponse.content_type`` gives it."""
    if not content_type:
        return "application/octet-stream"
    return content_type.split(";", 1)[0].strip().lower()


class Response:
    """The status, headers and body of one upstream answer.

    The body is read either whole (``read``) or as it comes (``iter_any``); ``close`` gives up
    on it (the connection is then dropped, not reused, unless the body had ended already).
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_error",
        "_finished",
        "_handle",
        "_head_only",
        "_informational",
        "_loop",
        "_mark",
        "_paused",
        "_raw",
        "_reason",
        "_sending",
        "_timeout",
        "_transport",
        "_until_close",
        "_waiter",
        "_whole",
        "complete",
        "content_length",
        "content_type",
        "headers",
        "parser",
        "reason",
        "status",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.Transport,
        read_timeout_s: float,
        head_only: bool,
        finished: Callable[[bool], None],
    ) -> None:
        self._loop = loop
        self._transport = transport
        self._timeout = read_timeout_s
        self._head_only = head_only
        self._finished = finished
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.status = 0
        self.reason = ""
        self.headers = _NO_HEADERS
        self.content_length: int | None = None
        self.content_type = "application/octet-stream"
        self.complete = False  # the body ended (or there is none): nothing more will come
        self._raw: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._informational = False
        self._until_close = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._whole = False  # read whole: no point pausing the upstream, it is all wanted
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._mark = 0.0
        # While a streamed request body is still going out, no answer is due yet: as aiohttp
        # did, the read timeout starts once the request has been sent whole.
        self._sending = False

    # --- llhttp callbacks (called from inside ``parser.feed_data``) ---------------------------

    def on_message_begin(self) -> None:
        if self.status and not self._informational:
            # A second answer to one request: the connection is out of step with its requests.
            raise UpstreamBroke("the upstream sent more than one answer")
        self._raw = []
        self._reason = b""

    def on_status(self, reason: bytes) -> None:
        self._reason += reason  # may come in pieces when a packet splits the status line

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        status = self.parser.get_status_code()
        self.status = status
        # 1xx answers (100 Continue, 103 Early Hints) come before the real one: skipped.
        self._informational = 100 <= status < 200 and status != 101
        if self._informational:
            return
        # As aiohttp decodes them: names and values are text, bytes outside UTF-8 kept as
        # surrogates so that they go out again unchanged.
        headers = CIMultiDict(
            [
                (n.decode("latin-1"), v.decode("utf-8", "surrogateescape").rstrip(" \t"))
                for n, v in self._raw
            ]
        )
        self.headers = CIMultiDictProxy(headers)
        self.reason = self._reason.decode("utf-8", "surrogateescape")
        length = headers.get("Content-Length")
        if length is not None and length.isdigit():
            self.content_length = int(length)
        self.content_type = _mime(headers.get("Content-Type"))
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self._until_close = length is None and not chunked
        if self._head_only:
            # llhttp cannot be told an answer is to HEAD (it would wait for the announced body);
            # the answer ends here, and this parser is not used again.
            self._end(self.parser.should_keep_alive())
        else:
            self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return  # the announced length of a HEAD answer: no body follows it
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and not self._whole:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            self.status = 0
            return
        if not self.complete and self.parser is not None:
            self._end(self.parser.should_keep_alive())

    # --- from the connection ------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:
            return
        self._mark = self._loop.time()
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(UpstreamBroke("the upstream switched protocols"))
        except httptools.HttpParserError as e:
            if self.complete:
                # Bytes after the end of the answer: the connection (back in its pool already)
                # is out of step with its requests; closing it keeps it from being used again.
                self._transport.close()
                return
            cause = e.__context__ if isinstance(e.__context__, UpstreamBroke) else e
            self.fail(UpstreamBroke(f"malformed answer from the upstream: {cause}"))

    def eof(self) -> None:
        """The upstream closed the connection."""
        if self.complete:
            return
        if self.status and self._until_close and not self._informational:
            self._end(False)  # a body without length or chunks ends where the connection does
        elif self.status and not self._informational:
            self.fail(UpstreamBroke("the upstream closed the connection mid-answer"))
        else:
            self.fail(Unanswered("the upstream closed the connection without answering"))

    def fail(self, error: BaseException) -> None:
        if self.complete or self._error is not None:
            return
        self._error = error
        self.parser = None
        self._stop_timer()
        self._wake()
        self._finished(False)

    def sending(self) -> None:
        """A streamed request body starts going out."""
        self._sending = True

    def sent(self) -> None:
        """The request went out whole: from now on the answer is due."""
        self._sending = False
        self._mark = self._loop.time()
        if self._waiter is not None and self._handle is None:
            self._handle = self._loop.call_at(self._mark + self._timeout, self._check_timeout)

    # --- for the reader -----------------------------------------------------------------------

    async def start(self) -> None:
        """Wait for the status and headers (1xx answers skipped)."""
        while self.headers is _NO_HEADERS and self._error is None:
            await self._wait()
        if self.headers is _NO_HEADERS:
            assert self._error is not None
            raise self._error

    async def read(self) -> bytes:
        """The whole body."""
        self._whole = True
        if self._paused:
            self._paused = False
            self._transport.resume_reading()
        while not self.complete and self._error is None:
            await self._wait()
        if self._error is not None:
            raise self._error
        body = b"".join(self._chunks)
        self._chunks.clear()
        return body

    def iter_any(self) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive, as many as have arrived joined into one. (The
        response is its own iterator: an async generator left unfinished, as a relay to a
        client that went away leaves it, would cost a finalizer task.)"""
        return self

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        chunks = self._chunks
        while not chunks:
            if self.complete:
                raise StopAsyncIteration
            if self._error is not None:
                raise self._error
            await self._wait()
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._paused:
            self._paused = False
            self._transport.resume_reading()
        return data

    def close(self) -> None:
        """Give up on the rest of the body: a connection still carrying it is closed."""
        if not self.complete:
            self.fail(UpstreamBroke("the answer was abandoned"))
        self._chunks.clear()

    # --- waiting, bounded by the read timeout -------------------------------------------------

    async def _wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        self._mark = self._loop.time()
        if self._handle is None and not self._sending:
            self._handle = self._loop.call_at(self._mark + self._timeout, self._check_timeout)
        try:
            await waiter
        finally:
            self._waiter = None

    def _check_timeout(self) -> None:
        """One timer serves every wait: arriving bytes only move ``_mark`` (cheaper than a timer
        re-armed per packet); when it fires early for the latest mark it is set again."""
        self._handle = None
        if self._waiter is None or self._sending or self.complete or self._error is not None:
            return
        due = self._mark + self._timeout
        if self._loop.time() < due:
            self._handle = self._loop.call_at(due, self._check_timeout)
            return
        self.fail(TimeoutError(f"no bytes from the upstream in {self._timeout} s"))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _stop_timer(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _end(self, reusable: bool) -> None:
        if self._error is not None:
            return
        self.complete = True
        # The parser refers back to this response (its callbacks): let go of it now rather
        # than leave a reference cycle per request for the garbage collector.
        self.parser = None
        self._stop_timer()
        if self._paused:
            self._paused = False
            self._transport.resume_reading()
        self._wake()
        self._finished(reusable)
