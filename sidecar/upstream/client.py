"""The upstream HTTP/1.1 client: one request out (headers and a small body in one write, a large
one streamed), its answer's status and headers back, the body left for the caller to read.

It does only what the forwarder needs, which is why it is not ``aiohttp.ClientSession``: that
client's general machinery (request and response objects, per-call timeout tasks, tracing
hooks, cookie and redirect handling) cost about a third of the CPU of every forwarded request.
Nothing here follows redirects, decompresses, keeps cookies or retries; headers go out as given
(the callers filtered them already) plus the ``Host``, ``Accept`` and framing headers aiohttp
added, so the upstream sees what it saw before.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from aiohttp import StreamReader
from multidict import CIMultiDict
from yarl import URL

from ..errors import SidecarError
from .pool import Connection, Pool
from .response import Response, Unanswered, UpstreamBroke

log = logging.getLogger(__name__)

Body = bytes | StreamReader | None

# Methods aiohttp sends without ``Content-Length: 0`` when they have no body.
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"})
# What aiohttp sends again when a kept-alive connection turns out closed.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# A streamed upload is read from the client in pieces of at most this size.
_UPLOAD_CHUNK = 64 * 1024


def request_head(
    method: str, path: str, host: str, headers: CIMultiDict[str], body: Body
) -> tuple[bytes, bool]:
    """The request line and headers, encoded; and whether the body goes chunked."""
    lines = [f"{method} {path} HTTP/1.1"]
    if "Host" not in headers:
        lines.append("Host: " + host)
    lines.extend(map(": ".join, headers.items()))
    if "Accept" not in headers:
        lines.append("Accept: */*")
    chunked = False
    if "Content-Length" not in headers:
        if isinstance(body, bytes):
            lines.append(f"Content-Length: {len(body)}")
        elif body is not None:
            lines.append("Transfer-Encoding: chunked")
            chunked = True
        elif method not in _BODILESS:
            lines.append("Content-Length: 0")
    lines.append("\r\n")
    text = "\r\n".join(lines)
    # Line breaks inside a name or value would split the request (header injection): the
    # block has exactly one CR and one LF per line otherwise, so counting them checks all.
    breaks = len(lines)
    if text.count("\r") != breaks or text.count("\n") != breaks:
        raise SidecarError("a header for the upstream holds a line break")
    # Bytes that came in outside UTF-8 were kept as surrogates: they go out as they came.
    return text.encode("utf-8", "surrogateescape"), chunked


class UpstreamClient:
    """Pools per origin, and the one way to send a request through them."""

    def __init__(
        self,
        connect_timeout_s: float,
        read_timeout_s: float,
        pool_size: int,
        *,
        keepalive_s: float = 30.0,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.pool_size = pool_size
        self.keepalive_s = keepalive_s
        self.pools: dict[tuple[str, str], Pool] = {}
        self._hosts: dict[tuple[str, str], str] = {}
        self._tls: ssl.SSLContext | None = None

    def _pool(self, url: URL) -> tuple[Pool, str]:
        key = (url.scheme, url.raw_authority)
        pool = self.pools.get(key)
        if pool is None:
            if url.scheme not in ("http", "https") or not url.raw_host:
                raise UpstreamBroke(f"not an http(s) upstream: {url.scheme}://{url.raw_authority}")
            tls = None
            if url.scheme == "https":
                if self._tls is None:
                    self._tls = ssl.create_default_context()
                tls = self._tls
            pool = Pool(
                asyncio.get_running_loop(),
                url.raw_host,
                url.port or (443 if tls else 80),
                tls,
                self.pool_size,
                self.connect_timeout_s,
                self.keepalive_s,
            )
            self.pools[key] = pool
            self._hosts[key] = url.host_port_subcomponent or url.raw_host
        return pool, self._hosts[key]

    @property
    def in_use(self) -> int:
        """Connections carrying a request now, over all origins."""
        return sum(pool.in_use for pool in self.pools.values())

    async def request(
        self, method: str, url: URL, headers: CIMultiDict[str], body: Body
    ) -> Response:
        """Send a request; its answer once the status and headers are in.

        Raises ``UpstreamUnavailable`` (and its ``ConnectTimedOut``, ``UpstreamBroke``),
        ``OSError`` when connecting fails, ``TimeoutError`` when the headers are late.
        """
        pool, host = self._pool(url)
        head, chunked = request_head(method, url.raw_path_qs, host, headers, body)
        try:
            return await self._send(pool, head, method, body, chunked)
        except Unanswered:
            # A kept-alive connection the upstream closed just as the request went out (its
            # idle timeout): as aiohttp did, an idempotent request whose body is still at hand
            # is sent once more.
            if method not in _IDEMPOTENT or not (body is None or isinstance(body, bytes)):
                raise
            return await self._send(pool, head, method, body, chunked)

    async def _send(
        self, pool: Pool, head: bytes, method: str, body: Body, chunked: bool
    ) -> Response:
        conn = await pool.acquire()
        transport = conn.transport
        assert transport is not None
        response = Response(
            pool.loop, transport, self.read_timeout_s, method == "HEAD", conn.finished
        )
        conn.response = response
        try:
            if body is None:
                transport.write(head)
            elif isinstance(body, bytes):
                transport.write(head + body)  # one write: one system call, one packet
            else:
                transport.write(head)
                response.sending()
                conn.sender = asyncio.create_task(_send(conn, response, body, chunked))
            await response.start()
        except Unanswered:
            response.close()
            if not conn.reused:
                raise UpstreamBroke(
                    "the upstream closed the connection without answering"
                ) from None
            raise
        except BaseException:
            response.close()
            raise
        return response

    async def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()


async def _send(conn: Connection, response: Response, body: StreamReader, chunked: bool) -> None:
    """Stream a request body upstream as the client sends it; a body that breaks off (the
    client went away, or framed it wrong) fails the exchange, which drops the connection."""
    transport = conn.transport
    assert transport is not None
    try:
        async for data in body.iter_chunked(_UPLOAD_CHUNK):
            if chunked:
                transport.write(b"%x\r\n%b\r\n" % (len(data), data))
            else:
                transport.write(data)
            await conn.drain()
        if chunked:
            transport.write(b"0\r\n\r\n")
        response.sent()
    except asyncio.CancelledError:
        raise
    except Exception as e:  # whatever broke the upload, the exchange cannot go on
        log.debug("request body to the upstream broke off: %r", e)
        response.fail(UpstreamBroke(f"the request body broke off: {type(e).__name__}"))
