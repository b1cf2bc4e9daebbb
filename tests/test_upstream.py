"""The upstream client against real local servers: aiohttp ones for ordinary HTTP, scripted raw
TCP ones for what a framework would not send (1xx, bodies until close, an idle close)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from aiohttp import StreamReader, web
from aiohttp.base_protocol import BaseProtocol
from multidict import CIMultiDict
from yarl import URL

from sidecar.devservices import free_port
from sidecar.errors import SidecarError, UpstreamTimeout, UpstreamUnavailable
from sidecar.proxy import open_upstream, read_whole
from sidecar.upstream import UpstreamBroke, UpstreamClient
from sidecar.upstream.client import request_head


class _Protocol(BaseProtocol):
    """What an aiohttp ``StreamReader`` needs of its protocol, for a body fed by hand."""

    def __init__(self) -> None:
        super().__init__(asyncio.get_running_loop())
        self.transport = asyncio.Transport()  # "connected": the reader waits rather than fails


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Scripted:
    """A raw TCP server running ``script`` on each connection; counts the connections."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> URL:
        assert self.server is not None
        return URL(f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/x")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(raw)
    await writer.drain()


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient(connect_timeout_s=2.0, read_timeout_s=0.3, pool_size=4)
    yield c
    await c.close()


@dataclass
class AppServer:
    """An aiohttp upstream: ``seen`` records (path, client port) of every request; ``/sse``
    holds its second event until ``release`` is set."""

    base: URL
    seen: list[tuple[str, int]]
    release: asyncio.Event


@pytest.fixture
async def app_server() -> AsyncIterator[AppServer]:
    seen: list[tuple[str, int]] = []
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        seen.append((request.path, request.transport.get_extra_info("peername")[1]))
        if request.path == "/empty":
            return web.Response(status=204)
        if request.path == "/cookies":
            resp = web.Response(text="c")
            resp.headers.add("Set-Cookie", "a=1")
            resp.headers.add("Set-Cookie", "b=2")
            return resp
        if request.path == "/sse":
            stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await stream.prepare(request)
            await stream.write(b"data: one\n\n")
            await release.wait()
            await stream.write(b"data: two\n\n")
            return stream
        return web.Response(body=b"body of " + request.path.encode())

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield AppServer(URL(f"http://127.0.0.1:{port}"), seen, release)
    release.set()
    await runner.cleanup()


async def fetch(client: UpstreamClient, url: URL, method: str = "GET") -> tuple[int, bytes]:
    resp = await client.request(method, url, CIMultiDict(), None)
    try:
        return resp.status, await resp.read()
    finally:
        resp.close()


async def test_keep_alive_connection_is_reused(
    client: UpstreamClient, app_server: AppServer
) -> None:
    base, seen = app_server.base, app_server.seen
    assert await fetch(client, base / "a") == (200, b"body of /a")
    assert await fetch(client, base / "b") == (200, b"body of /b")
    assert seen[0][1] == seen[1][1]  # the same client port: one connection


async def test_head_and_204_leave_the_connection_reusable(
    client: UpstreamClient, app_server: AppServer
) -> None:
    base, seen = app_server.base, app_server.seen
    assert await fetch(client, base / "h", "HEAD") == (200, b"")
    assert await fetch(client, base / "empty") == (204, b"")
    assert await fetch(client, base / "after") == (200, b"body of /after")
    assert len({port for _, port in seen}) == 1


async def test_duplicate_headers_keep_their_order(
    client: UpstreamClient, app_server: AppServer
) -> None:
    base = app_server.base
    resp = await client.request("GET", base / "cookies", CIMultiDict(), None)
    resp.close()
    assert resp.headers.getall("Set-Cookie") == ["a=1", "b=2"]


async def test_event_stream_chunks_arrive_as_sent(
    client: UpstreamClient, app_server: AppServer
) -> None:
    base = app_server.base
    resp = await client.request("GET", base / "sse", CIMultiDict(), None)
    chunks = resp.iter_any()
    # The server holds the second event back until the first was read here: not buffered.
    assert await anext(chunks) == b"data: one\n\n"
    app_server.release.set()
    assert b"".join([chunk async for chunk in chunks]) == b"data: two\n\n"
    assert resp.complete
    assert client.in_use == 0


async def test_large_bodies_read_whole_and_streamed(client: UpstreamClient) -> None:
    # Far more than the client buffers before it stops reading from the upstream.
    body = bytes(range(256)) * 8192  # 2 MiB
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await answer(r, w, head + body)
        await answer(r, w, head + body)

    async with Scripted(script) as server:
        assert await fetch(client, server.url) == (200, body)
        resp = await client.request("GET", server.url, CIMultiDict(), None)
        got = bytearray()
        async for chunk in resp.iter_any():
            got += chunk
            await asyncio.sleep(0)  # a reader slower than the socket
        assert got == body
        assert server.connections == 1


async def test_server_closing_an_idle_connection_is_not_reused(client: UpstreamClient) -> None:
    async def once_then_close(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await answer(r, w, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async with Scripted(once_then_close) as server:
        assert await fetch(client, server.url) == (200, b"ok")
        [pool] = client.pools.values()
        await wait_for(lambda: pool.idle[0].closed, "the client to see the close")
        assert await fetch(client, server.url) == (200, b"ok")
        assert server.connections == 2


async def test_a_kept_alive_connection_closed_unanswered_is_retried_when_safe(
    client: UpstreamClient,
) -> None:
    # The upstream's idle timeout striking just as a request goes out: the second request on
    # each connection finds it closed without an answer.
    async def one_answer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await answer(r, w, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await r.readuntil(b"\r\n\r\n")

    async with Scripted(one_answer) as server:
        assert await fetch(client, server.url) == (200, b"ok")
        assert await fetch(client, server.url) == (200, b"ok")  # sent again, answered
        assert server.connections == 2
        # A POST is not sent twice: the upstream may have acted on it.
        with pytest.raises(UpstreamBroke, match="without answering"):
            await fetch(client, server.url, "POST")
        assert server.connections == 2


async def test_connection_close_answer_is_not_pooled(client: UpstreamClient) -> None:
    async def keep_open(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await answer(r, w, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await r.read()  # the connection stays open: the client must close it on its own

    async with Scripted(keep_open) as server:
        assert await fetch(client, server.url) == (200, b"ok")
        [pool] = client.pools.values()
        assert pool.idle == []
        assert pool.in_use == 0


async def test_chunked_and_until_close_bodies(client: UpstreamClient) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    until_close = b"HTTP/1.1 200 OK\r\n\r\nall of it"

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await answer(r, w, chunked)
        await answer(r, w, until_close)

    async with Scripted(script) as server:
        assert await fetch(client, server.url) == (200, b"abcde")
        assert await fetch(client, server.url) == (200, b"all of it")
        assert server.connections == 1  # the chunked answer left the connection reusable


async def test_informational_answers_are_skipped(client: UpstreamClient) -> None:
    raw = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone"
    )
    async with Scripted(lambda r, w: answer(r, w, raw)) as server:
        resp = await client.request("POST", server.url, CIMultiDict(), b"x")
        assert (resp.status, resp.reason, await resp.read()) == (201, "Created", b"done")
        assert "Link" not in resp.headers


async def test_slow_headers_are_a_timeout(client: UpstreamClient) -> None:
    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read()

    async with Scripted(silent) as server:
        with pytest.raises(UpstreamTimeout):
            async with open_upstream(client, "GET", server.url, CIMultiDict(), None):
                pass
        assert client.in_use == 0


async def test_slow_body_is_a_timeout_and_drops_the_connection(client: UpstreamClient) -> None:
    async def stall(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await answer(r, w, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await r.read()

    async with Scripted(stall) as server:
        async with open_upstream(client, "GET", server.url, CIMultiDict(), None) as up:
            with pytest.raises(UpstreamTimeout):
                await read_whole(up)
        [pool] = client.pools.values()
        assert pool.idle == []
        assert pool.in_use == 0


async def test_refused_connection_is_unavailable(client: UpstreamClient) -> None:
    url = URL(f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(UpstreamUnavailable):
        async with open_upstream(client, "GET", url, CIMultiDict(), None):
            pass
    assert client.in_use == 0


async def test_cut_mid_body_is_unavailable(client: UpstreamClient) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"
    async with Scripted(lambda r, w: answer(r, w, raw)) as server:
        resp = await client.request("GET", server.url, CIMultiDict(), None)
        with pytest.raises(UpstreamBroke):
            await resp.read()


async def test_pool_limit_makes_callers_wait(app_server: AppServer) -> None:
    base, seen = app_server.base, app_server.seen
    client = UpstreamClient(connect_timeout_s=2.0, read_timeout_s=5.0, pool_size=1)
    try:
        first = await client.request("GET", base / "sse", CIMultiDict(), None)
        second = asyncio.ensure_future(fetch(client, base / "next"))
        await wait_for(
            lambda: len(client.pools[("http", base.raw_authority)].waiters) == 1, "a waiter"
        )
        assert not second.done()
        assert len(seen) == 1
        first.close()  # abandoned mid-body: its connection is closed, its place handed on
        assert await second == (200, b"body of /next")
    finally:
        await client.close()


async def test_waiting_for_a_free_connection_is_bounded_by_the_connect_timeout(
    app_server: AppServer,
) -> None:
    client = UpstreamClient(connect_timeout_s=0.2, read_timeout_s=5.0, pool_size=1)
    try:
        first = await client.request("GET", app_server.base / "sse", CIMultiDict(), None)
        with pytest.raises(UpstreamUnavailable, match="connect timed out"):
            await fetch(client, app_server.base / "next")
        assert len(app_server.seen) == 1
        first.close()
        assert await fetch(client, app_server.base / "next") == (200, b"body of /next")
    finally:
        await client.close()


async def test_cancelled_request_drops_its_connection(client: UpstreamClient) -> None:
    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        await r.read()

    async with Scripted(silent) as server:
        task = asyncio.ensure_future(fetch(client, server.url))
        await wait_for(lambda: client.in_use == 1, "the request to be sent")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        [pool] = client.pools.values()
        assert pool.idle == []
        assert pool.in_use == 0


def test_request_head_matches_what_aiohttp_sent() -> None:
    head, chunked = request_head("POST", "/p?q=1", "up:81", CIMultiDict(X="1"), None)
    assert (
        head
        == b"POST /p?q=1 HTTP/1.1\r\nHost: up:81\r\nX: 1\r\nAccept: */*\r\nContent-Length: 0\r\n\r\n"
    )
    assert not chunked
    head, _ = request_head("GET", "/", "up", CIMultiDict(Accept="a/b"), b"abc")
    assert head.endswith(b"Accept: a/b\r\nContent-Length: 3\r\n\r\n")


def test_a_line_break_in_a_header_is_refused() -> None:
    with pytest.raises(SidecarError):
        request_head("GET", "/", "up", CIMultiDict(X="a\r\nInjected: 1"), None)


def test_keep_alive_and_streams_under_uvloop() -> None:
    # Production runs on uvloop, whose transports are not asyncio's classes: the same exchange
    # there, on a loop of its own (the other tests share the suite's default loop).
    import uvloop

    async def exchange() -> list[bytes]:
        async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await answer(r, w, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await answer(r, w, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            w.write(b"3\r\nabc\r\n0\r\n\r\n")

        client = UpstreamClient(connect_timeout_s=2.0, read_timeout_s=2.0, pool_size=2)
        try:
            async with Scripted(script) as server:
                bodies = [(await fetch(client, server.url))[1] for _ in range(2)]
                assert server.connections == 1
                return bodies
        finally:
            await client.close()

    assert uvloop.run(exchange()) == [b"ok", b"abc"]


async def test_https_upstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = trustme.CA()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(served)
    # The client trusts what the system does; here the system's store is this test's CA.
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=b"secret " + await request.read())

    app = web.Application()
    app.router.add_post("/s", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=served).start()
    client = UpstreamClient(connect_timeout_s=2.0, read_timeout_s=2.0, pool_size=2)
    try:
        url = URL(f"https://127.0.0.1:{port}/s")
        for _ in range(2):
            resp = await client.request("POST", url, CIMultiDict(), b"hi")
            assert (resp.status, await resp.read()) == (200, b"secret hi")
            resp.close()
        assert client.pools[("https", f"127.0.0.1:{port}")].open == 1
    finally:
        await client.close()
        await runner.cleanup()


async def test_slow_upload_is_not_a_read_timeout(client: UpstreamClient) -> None:
    # The read timeout (0.3 s here) counts from the end of the request, as aiohttp's did.
    stream = StreamReader(_Protocol(), 2**16, loop=asyncio.get_running_loop())
    got: list[bytes] = []

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        got.append(await r.readexactly(len(b"3\r\nabc\r\n0\r\n\r\n")))
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    async with Scripted(script) as server:
        sending = asyncio.ensure_future(client.request("PUT", server.url, CIMultiDict(), stream))
        await asyncio.sleep(0.5)  # longer than the read timeout: the upload is slow on purpose
        stream.feed_data(b"abc")
        stream.feed_eof()
        resp = await sending
        assert resp.status == 200
    assert got == [b"3\r\nabc\r\n0\r\n\r\n"]
