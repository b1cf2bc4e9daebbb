"""Pass-through: what a client of the upstream sees when the sidecar sits in between."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from yarl import URL

from sidecar.app import HTTP
from sidecar.devservices import TemporaryPostgres, TemporaryRedis, free_port
from tests.harness import (
    FakeUpstream,
    RunningSidecar,
    base_config,
    deterministic_bytes,
    running_sidecar,
)

StartSidecar = Callable[..., Awaitable[RunningSidecar]]

MB3 = 3 * 1024 * 1024


# --- helpers ------------------------------------------------------------------------------------


async def wait_for(
    condition: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, list[tuple[str, str]], bytes]:
    """One HTTP/1.1 message head and body (Content-Length, chunked, or until EOF)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    first = lines[0].encode("latin-1")
    headers = [
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)
    ]
    names = {k.lower(): v for k, v in headers}
    if "content-length" in names:
        body = await reader.readexactly(int(names["content-length"]))
    elif "chunked" in names.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += await reader.readexactly(size)
            await reader.readuntil(b"\r\n")
            if size == 0:
                break
    elif first.startswith(b"HTTP/"):
        body = await reader.read()
    else:
        body = b""
    return first, headers, body


class RawUpstream:
    """A bare TCP upstream: records each request exactly as received and answers with fixed
    bytes, so tests control headers that an HTTP framework would add, fix or hide."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.received: list[tuple[bytes, list[tuple[str, str]], bytes]] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.received.append(await read_message(reader))
            writer.write(self.response)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the sidecar went away; nothing to answer
        finally:
            writer.close()

    async def __aenter__(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


def canned(status: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("latin-1") + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


async def raw_exchange(base_url: str, request: bytes) -> tuple[bytes, list[tuple[str, str]], bytes]:
    """Send raw request bytes to ``base_url`` and read one response."""
    url = URL(base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(read_message(reader), 10)
    finally:
        writer.close()


def names(headers: list[tuple[str, str]]) -> set[str]:
    return {k.lower() for k, _ in headers}


def echoed_headers(body: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in body["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


def assert_error_body(body: Any, code: str) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


@pytest.fixture(scope="module")
async def proxy_upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
async def shared_sidecar(
    proxy_upstream: FakeUpstream, redis_server: TemporaryRedis, postgres_server: TemporaryPostgres
) -> AsyncIterator[RunningSidecar]:
    """One sidecar for the pass-through tests that need no special config (starting one per
    test would cost most of this module's run time)."""
    await redis_server.ensure_running()
    await postgres_server.ensure_running()
    name = f"t_{uuid.uuid4().hex}"
    dsn = await postgres_server.create_database(name)
    try:
        async with running_sidecar(base_config(proxy_upstream.url, redis_server.url, dsn)) as sc:
            yield sc
    finally:
        if postgres_server.is_running:
            with contextlib.suppress(Exception):
                await postgres_server.drop_database(name)


@pytest.fixture
def sidecar(shared_sidecar: RunningSidecar, proxy_upstream: FakeUpstream) -> RunningSidecar:
    proxy_upstream.reset()
    return shared_sidecar


# --- bodies -------------------------------------------------------------------------------------


async def test_3mb_request_and_response_bodies_are_byte_identical(
    sidecar: RunningSidecar, proxy_upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    payload = deterministic_bytes(MB3, seed=7)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 64 * 1024):
            yield payload[i : i + 64 * 1024]

    async with http.post(sidecar.url + "/bytes", data=chunks()) as resp:
        assert resp.status == 200
        echoed = await resp.read()
    assert hashlib.sha256(echoed).hexdigest() == hashlib.sha256(payload).hexdigest()
    [seen] = proxy_upstream.requests_to("/bytes", "POST")
    assert hashlib.sha256(seen.body).hexdigest() == hashlib.sha256(payload).hexdigest()

    async with http.get(sidecar.url + f"/bytes/{MB3}") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/octet-stream"
        got = await resp.read()
    assert len(got) == MB3
    assert hashlib.sha256(got).digest() == hashlib.sha256(deterministic_bytes(MB3)).digest()


async def test_content_length_of_a_sized_response_is_kept(
    sidecar: RunningSidecar, http: aiohttp.ClientSession
) -> None:
    async with http.get(sidecar.url + "/bytes/100000?content_length=1") as resp:
        assert resp.headers.get("Content-Length") == "100000"
        assert "Transfer-Encoding" not in resp.headers
        assert await resp.read() == deterministic_bytes(100000)


async def test_gzip_response_arrives_still_compressed_and_identical(
    start_sidecar: StartSidecar,
) -> None:
    original = json.dumps({"text": "hello " * 2000}).encode()
    compressed = gzip.compress(original, mtime=0)
    response = canned(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
        compressed,
    )
    async with RawUpstream(response) as raw:
        sidecar = await start_sidecar(upstream={"url": raw.url})
        async with (
            aiohttp.ClientSession(auto_decompress=False) as client,
            client.get(sidecar.url + "/data", headers={"Accept-Encoding": "gzip"}) as resp,
        ):
            assert resp.status == 200
            assert resp.headers["Content-Encoding"] == "gzip"
            body = await resp.read()
    assert body == compressed
    assert gzip.decompress(body) == original


async def test_gzip_request_body_reaches_upstream_intact(start_sidecar: StartSidecar) -> None:
    original = b'{"q": "' + b"x" * 5000 + b'"}'
    compressed = gzip.compress(original, mtime=0)
    async with RawUpstream(canned("204 No Content", [], b"")) as raw:
        sidecar = await start_sidecar(upstream={"url": raw.url})
        async with (
            aiohttp.ClientSession() as client,
            client.post(
                sidecar.url + "/upload",
                data=compressed,
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
            ) as resp,
        ):
            assert resp.status == 204
    [(_, headers, body)] = raw.received
    sent = {k.lower(): v for k, v in headers}
    # The very bytes the client sent, under the headers that describe them.
    assert sent["content-encoding"] == "gzip"
    assert body == compressed
    assert int(sent["content-length"]) == len(compressed)


# --- request line and headers -------------------------------------------------------------------


async def test_method_path_query_and_headers_preserved(
    sidecar: RunningSidecar, http: aiohttp.ClientSession
) -> None:
    url = URL(sidecar.url + "/echo/some/path?b=2&a=1&b=3&a=&c=%20x", encoded=True)
    headers = {"X-Custom": "value 1", "Authorization": "Bearer abc", "Accept": "text/plain"}
    async with http.post(url, data=b"hello body", headers=headers) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["method"] == "POST"
    assert body["path"] == "/echo/some/path"
    assert body["query"] == [["b", "2"], ["a", "1"], ["b", "3"], ["a", ""], ["c", " x"]]
    assert body["body"] == "hello body"
    seen = echoed_headers(body)
    assert seen["x-custom"] == ["value 1"]
    assert seen["authorization"] == ["Bearer abc"]
    assert seen["accept"] == ["text/plain"]


async def test_percent_encoded_path_and_query_reach_upstream_verbatim(
    start_sidecar: StartSidecar,
) -> None:
    target = "/files/a%20b/%2Fslash/caf%C3%A9/%7Euser?q=a%26b&q=c%3Dd&empty=&flag"
    async with RawUpstream(canned("200 OK", [], b"ok")) as raw:
        sidecar = await start_sidecar(upstream={"url": raw.url})
        async with (
            aiohttp.ClientSession() as client,
            client.get(URL(sidecar.url + target, encoded=True)) as resp,
        ):
            assert resp.status == 200
            assert await resp.read() == b"ok"
    [(request_line, _, _)] = raw.received
    assert request_line == f"GET {target} HTTP/1.1".encode()


async def test_upstream_base_path_is_prefixed(start_sidecar: StartSidecar) -> None:
    async with RawUpstream(canned("200 OK", [], b"ok")) as raw:
        sidecar = await start_sidecar(upstream={"url": raw.url + "/base/"})
        async with aiohttp.ClientSession() as client, client.get(sidecar.url + "/x?y=1") as resp:
            assert resp.status == 200
    [(request_line, _, _)] = raw.received
    assert request_line == b"GET /base/x?y=1 HTTP/1.1"


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_other_methods_pass_through(
    method: str, sidecar: RunningSidecar, proxy_upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    async with http.request(method, sidecar.url + "/echo/m?k=v", data=b"payload") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["method"] == method
    assert body["body"] == "payload"
    assert [r.method for r in proxy_upstream.requests_to("/echo/m")] == [method]


async def test_head_passes_through_without_body(
    sidecar: RunningSidecar, proxy_upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    async with http.get(sidecar.url + "/status/200") as resp:
        get_length = resp.headers["Content-Length"]
    async with http.head(sidecar.url + "/status/200") as resp:
        assert resp.status == 200
        assert resp.headers["X-Upstream"] == "yes"
        assert resp.headers.get("Content-Length") == get_length
        assert await resp.read() == b""
    assert [r.method for r in proxy_upstream.requests_to("/status/200")] == ["GET", "HEAD"]


async def test_hop_by_hop_request_headers_dropped_and_forwarded_headers_added(
    sidecar: RunningSidecar,
) -> None:
    request = (
        b"GET /echo/hop HTTP/1.1\r\n"
        b"Host: public.example:8443\r\n"
        b"Connection: close, X-Foo\r\n"
        b"X-Foo: only-for-the-next-hop\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"TE: trailers\r\n"
        b"Trailer: X-Checksum\r\n"
        b"Upgrade: h2c\r\n"
        b"Proxy-Authorization: Basic c2VjcmV0\r\n"
        b"X-Forwarded-For: 203.0.113.7\r\n"
        b"X-End-To-End: kept\r\n"
        b"\r\n"
    )
    status, _, raw_body = await raw_exchange(sidecar.url, request)
    assert status.startswith(b"HTTP/1.1 200")
    seen = echoed_headers(json.loads(raw_body))
    for dropped in ("x-foo", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization"):
        assert dropped not in seen, f"{dropped} was forwarded"
    assert all("x-foo" not in v.lower() for v in seen.get("connection", []))
    assert seen["x-end-to-end"] == ["kept"]
    assert seen["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == ["public.example:8443"]


async def test_a_header_named_by_connection_is_dropped_from_that_request_only(
    sidecar: RunningSidecar,
) -> None:
    """Whether a header is forwarded is remembered per name; ``Connection`` changes it for the
    one request that lists the name, before and after requests that do not."""

    async def forwarded(extra: bytes) -> dict[str, list[str]]:
        request = b"GET /echo/conn HTTP/1.1\r\nHost: a\r\n" + extra + b"X-Foo: 1\r\n\r\n"
        status, _, raw_body = await raw_exchange(sidecar.url, request)
        assert status.startswith(b"HTTP/1.1 200")
        return echoed_headers(json.loads(raw_body))

    assert (await forwarded(b""))["x-foo"] == ["1"]
    assert "x-foo" not in await forwarded(b"Connection: close, X-Foo\r\n")
    assert (await forwarded(b""))["x-foo"] == ["1"]


async def test_forwarded_for_is_added_when_absent(
    sidecar: RunningSidecar, http: aiohttp.ClientSession
) -> None:
    async with http.get(sidecar.url + "/echo/xff") as resp:
        seen = echoed_headers(await resp.json())
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == [URL(sidecar.url).raw_authority]


async def test_hop_by_hop_response_headers_dropped(start_sidecar: StartSidecar) -> None:
    response = canned(
        "200 OK",
        [
            ("Connection", "close, X-Foo"),
            ("X-Foo", "only-for-the-next-hop"),
            ("Keep-Alive", "timeout=5"),
            ("Trailer", "X-Checksum"),
            ("Upgrade", "h2c"),
            ("Proxy-Authenticate", "Basic"),
            ("X-End-To-End", "kept"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
        ],
        b"hello",
    )
    async with RawUpstream(response) as raw:
        sidecar = await start_sidecar(upstream={"url": raw.url})
        status, headers, body = await raw_exchange(
            sidecar.url, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
    assert status.startswith(b"HTTP/1.1 200")
    assert body == b"hello"
    got = names(headers)
    for dropped in ("x-foo", "keep-alive", "trailer", "upgrade", "proxy-authenticate"):
        assert dropped not in got, f"{dropped} reached the client"
    assert all("x-foo" not in v.lower() for k, v in headers if k.lower() == "connection")
    assert ("X-End-To-End", "kept") in headers
    assert [v for k, v in headers if k.lower() == "set-cookie"] == ["a=1", "b=2"]


# --- statuses -----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [400, 404, 418, 500, 503])
async def test_upstream_error_statuses_pass_through(
    code: int, sidecar: RunningSidecar, http: aiohttp.ClientSession
) -> None:
    async with http.get(sidecar.url + f"/status/{code}") as resp:
        assert resp.status == code
        assert resp.headers["X-Upstream"] == "yes"
        assert await resp.json() == {"status": code}


async def test_redirect_is_returned_not_followed(
    sidecar: RunningSidecar, proxy_upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    async with http.get(sidecar.url + "/redirect", allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "/echo/x"
    assert proxy_upstream.requests_to("/echo/x") == []


# --- streaming ----------------------------------------------------------------------------------


async def test_sse_events_arrive_as_the_upstream_writes_them(
    sidecar: RunningSidecar, proxy_upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    received: list[tuple[int, float]] = []
    async with http.get(sidecar.url + "/sse?n=20&interval=0.05") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        async for line in resp.content:
            if line.startswith(b"data: "):
                received.append((json.loads(line[6:])["i"], time.monotonic()))
    assert [i for i, _ in received] == list(range(20))
    last_sent = proxy_upstream.sse_last_sent_at
    assert last_sent is not None
    first_at = received[0][1]
    assert first_at < last_sent - 0.5, "the first event waited for the end of the stream"
    early = sum(1 for _, at in received if at < last_sent)
    assert early >= 15, f"only {early} of 20 events reached the client before the last was sent"


async def test_client_disconnect_mid_stream_releases_everything(
    start_sidecar: StartSidecar, upstream: FakeUpstream
) -> None:
    sidecar = await start_sidecar()
    before = asyncio.all_tasks()
    url = URL(sidecar.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(b"GET /sse?n=500&interval=0.02 HTTP/1.1\r\nHost: a\r\n\r\n")
    await writer.drain()
    await asyncio.wait_for(reader.readuntil(b"data: "), 5)
    assert upstream.open_streams == 1
    writer.close()
    await writer.wait_closed()

    await wait_for(lambda: upstream.open_streams == 0, what="the upstream stream to close")
    await wait_for(upstream.sse_client_gone.is_set, what="the upstream to see the client gone")
    assert upstream.sse.completed == 0
    client = sidecar.app[HTTP]
    await wait_for(lambda: client.in_use == 0, what="the upstream connection to be released")
    current = asyncio.current_task()

    def stray() -> set[asyncio.Task[Any]]:
        return {t for t in asyncio.all_tasks() - before if t is not current and not t.done()}

    try:
        await wait_for(lambda: not stray(), what="request tasks to finish")
    except AssertionError as e:
        raise AssertionError(f"{e}: {stray()}") from None


# --- failures -----------------------------------------------------------------------------------


async def test_unreachable_upstream_is_502_json(
    start_sidecar: StartSidecar, http: aiohttp.ClientSession
) -> None:
    sidecar = await start_sidecar(upstream={"url": f"http://127.0.0.1:{free_port()}"})
    async with http.get(sidecar.url + "/anything") as resp:
        assert resp.status == 502
        assert resp.content_type == "application/json"
        assert_error_body(await resp.json(), "upstream_unavailable")


async def test_small_answer_cut_short_by_the_upstream_is_502_json(
    start_sidecar: StartSidecar, http: aiohttp.ClientSession
) -> None:
    # A small answer is read whole before anything is sent, so a cut is still a clean error.
    cut = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    async with RawUpstream(cut) as upstream:
        sidecar = await start_sidecar(upstream={"url": upstream.url})
        async with http.post(sidecar.url + "/small", data=b'{"q": 1}') as resp:
            assert resp.status == 502
            assert_error_body(await resp.json(), "upstream_unavailable")
        assert upstream.received[0][2] == b'{"q": 1}'


async def test_slow_upstream_is_504_json(
    start_sidecar: StartSidecar, http: aiohttp.ClientSession
) -> None:
    sidecar = await start_sidecar(upstream={"read_timeout_s": 0.3})
    started = time.monotonic()
    async with http.get(sidecar.url + "/delay?s=5") as resp:
        assert resp.status == 504
        assert resp.content_type == "application/json"
        assert_error_body(await resp.json(), "upstream_timeout")
    assert time.monotonic() - started < 3


# --- the sidecar's own prefix -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_sidecar/nope"),
        ("POST", "/_sidecar/nope"),
        ("GET", "/_sidecar/"),
        ("GET", "/_sidecar/healthz/extra"),
        ("DELETE", "/_sidecar/healthz"),
        ("GET", "/_sidecar"),
    ],
)
async def test_sidecar_paths_are_never_forwarded(
    method: str,
    path: str,
    sidecar: RunningSidecar,
    proxy_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
) -> None:
    async with http.request(method, sidecar.url + path) as resp:
        assert resp.status == 404
        assert resp.content_type == "application/json"
        assert_error_body(await resp.json(), "not_found")
    assert proxy_upstream.requests == []


async def test_healthz(sidecar: RunningSidecar, http: aiohttp.ClientSession) -> None:
    async with http.get(sidecar.url + "/_sidecar/healthz") as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "ok"
