"""The transparent forwarder: every request no route intercepts goes upstream as it came.

Bodies stream both ways (only small ones of declared length are read whole, to go out with their
headers in one write), hop-by-hop headers are dropped in each direction,
redirects are passed back rather than followed, and upstream failures become 502/504 JSON errors.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Protocol

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .errors import NotFound, UpstreamTimeout, UpstreamUnavailable
from .observe import upstream_call
from .upstream import Response, UpstreamClient

log = logging.getLogger(__name__)

# RFC 9110 section 7.6.1, plus the legacy Proxy-Connection and Keep-Alive.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Trailers",
        "Transfer-Encoding",
        "Upgrade",
    )
)

# Bodies up to this size with a declared length are read whole and sent with their headers in
# one write (two system calls fewer per request); larger, unknown-length and event-stream ones
# stream as they come.
SMALL_BODY = 64 * 1024

# The sidecar's own endpoints live under this prefix; nothing under it is ever forwarded.
SIDECAR_PREFIX = "/_sidecar"
# Headers the sidecar speaks: a client's are never forwarded nor trusted (the upstream might
# believe a client-made ``X-Sidecar-Degraded``), and the upstream's never reach a client of an
# intercepted route, where the sidecar sets its own.
SIDECAR_HEADER_PREFIX = "x-sidecar-"
# Identity headers mean something only in ``identity.mode: headers``; otherwise a client could
# use them to speak for another tenant to an upstream that trusts them.
IDENTITY_HEADERS = frozenset({"x-tenant-id", "x-user-id"})


def _connection_listed(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    """Headers named by ``Connection`` are hop-by-hop too."""
    listed: set[str] = set()
    for value in headers.getall("Connection", ()):
        listed.update(token.strip().lower() for token in value.split(",") if token.strip())
    return listed


def _end_to_end(
    headers: CIMultiDictProxy[str] | CIMultiDict[str],
    drop: frozenset[str],
    *,
    drop_sidecar: bool = False,
) -> CIMultiDict[str]:
    """``headers`` without the hop-by-hop ones and ``drop`` (lower-case names), in one pass: this
    runs twice on every request, pass-through included."""
    if "Connection" in headers:
        drop = drop | _connection_listed(headers)
        verdicts: dict[str, bool] = {}  # this request's own drop set: nothing kept for later
    else:
        verdicts = _VERDICTS.setdefault((drop, drop_sidecar), {})
    kept = []
    for k, v in headers.items():
        keep = verdicts.get(k)
        if keep is None:
            name = k.lower()
            keep = not (name in drop or (drop_sidecar and name.startswith(SIDECAR_HEADER_PREFIX)))
            if len(verdicts) < _VERDICTS_KEPT:
                verdicts[k] = keep
        if keep:
            kept.append((k, v))
    return CIMultiDict(kept)


# Whether a header name is kept, per drop set, as the name came: the same few names arrive with
# every request, and a lookup costs less than lowering and testing each again. Bounded, as the
# names are the client's (and the upstream's) to choose.
_VERDICTS: dict[tuple[frozenset[str], bool], dict[str, bool]] = {}
_VERDICTS_KEPT = 256


def _drop_set(*names: Iterable[str]) -> frozenset[str]:
    return HOP_BY_HOP | {n.lower() for group in names for n in group}


# What each direction drops besides the hop-by-hop headers, made once.
_UPSTREAM_DROP = {
    (body_changed, keep_identity): _drop_set(
        ["Host"],
        ["Content-Length", "Content-Encoding"] if body_changed else [],
        [] if keep_identity else IDENTITY_HEADERS,
    )
    for body_changed in (False, True)
    for keep_identity in (False, True)
}
_CLIENT_DROP = {False: _drop_set(), True: _drop_set(["Content-Length"])}


def upstream_request_headers(
    request: web.Request, *, body_changed: bool = False, keep_identity: bool = False
) -> CIMultiDict[str]:
    """Headers to send upstream: end-to-end ones, ``Host`` for the upstream, ``X-Forwarded-*``
    added; the client's ``X-Sidecar-*`` dropped, and ``X-Tenant-ID``/``X-User-ID`` too unless
    ``keep_identity`` (headers mode, where a trusted gateway set them)."""
    given = request.headers
    headers = _end_to_end(given, _UPSTREAM_DROP[body_changed, keep_identity], drop_sidecar=True)
    peer = request.remote or ""
    prior = given.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers.setdefault("X-Forwarded-Proto", request.scheme)
    host = given.get("Host")
    if host is not None:
        headers.setdefault("X-Forwarded-Host", host)
    return headers


def client_response_headers(
    upstream: Response, *, body_changed: bool = False, ours: bool = False
) -> CIMultiDict[str]:
    """The upstream's end-to-end headers for the client. ``ours``: an intercepted route, where
    ``X-Sidecar-*`` are the sidecar's to set, so the upstream's are dropped."""
    return _end_to_end(upstream.headers, _CLIENT_DROP[body_changed], drop_sidecar=ours)


def upstream_url(base: URL, request: web.Request) -> URL:
    """The upstream URL: the upstream's origin and base path joined with the raw path and query."""
    return URL(_base_prefix(base) + request.raw_path, encoded=True)


@functools.cache
def _base_prefix(base: URL) -> str:
    """The upstream's origin and base path as text, made once per upstream (of a few)."""
    return str(base.origin()) + base.raw_path.rstrip("/")


def make_client_session(
    connect_timeout_s: float, read_timeout_s: float, pool_size: int
) -> UpstreamClient:
    """The one upstream client: pooled keep-alive connections, explicit timeouts; it keeps no
    cookies, follows no redirects and never decompresses (bodies stay byte-identical)."""
    return UpstreamClient(connect_timeout_s, read_timeout_s, pool_size)


@asynccontextmanager
async def open_upstream(
    client: UpstreamClient,
    method: str,
    url: URL,
    headers: CIMultiDict[str],
    data: bytes | aiohttp.StreamReader | None,
) -> AsyncIterator[Response]:
    """Send one request upstream; connection errors become 502 and timeouts 504. The request id
    and trace context go with it (``observe.upstream_call``).

    The response is closed on exit (its connection is dropped, not pooled, when the body was not
    read to the end), so a client that goes away leaves nothing open upstream.
    """
    with upstream_call(headers) as answered:
        try:
            resp = await client.request(method, url, headers, data)
        except UpstreamUnavailable:
            raise  # a connect timeout or a broken connection, worded already
        except TimeoutError as e:
            raise UpstreamTimeout("the upstream did not answer in time") from e
        except OSError as e:
            raise UpstreamUnavailable(f"the upstream is unreachable: {type(e).__name__}") from e
        answered(resp.status)
        try:
            yield resp
        finally:
            resp.close()


ChunkObserver = Callable[[bytes], None]


class ChunkFilter(Protocol):
    """Rewrites a streamed body on its way to the client, holding back as little as it can."""

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to send now for ``chunk`` (possibly empty, held until more arrives)."""
        ...

    def flush(self) -> bytes:
        """What is still held back once the upstream body has ended."""
        ...


async def relay_response(
    request: web.Request,
    upstream: Response,
    headers: CIMultiDict[str],
    *,
    observe: ChunkObserver | None = None,
    transform: ChunkFilter | None = None,
    before_start: Callable[[web.StreamResponse], Awaitable[None]] | None = None,
) -> tuple[web.StreamResponse, bool]:
    """Stream the upstream's answer to the client as it arrives.

    Returns the response and whether the upstream body was relayed to its end. A client that goes
    away, or an upstream that stops mid-body, ends the relay early (``False``). ``observe`` sees
    every chunk as the upstream sent it; ``transform`` may change what the client is sent.
    """
    resp = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    if before_start is not None:
        await before_start(resp)
    await resp.prepare(request)
    try:
        async for chunk in upstream.iter_any():
            if observe is not None:
                observe(chunk)
            if transform is not None:
                chunk = transform.feed(chunk)
                if not chunk:
                    continue
            await resp.write(chunk)
        if transform is not None and (rest := transform.flush()):
            await resp.write(rest)
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        log.debug("client went away mid-response: %s %s", request.method, request.path)
        return resp, False
    except (UpstreamUnavailable, TimeoutError) as e:
        log.warning("upstream stopped mid-response on %s %s: %s", request.method, request.path, e)
        # Headers are gone already; the only honest signal left is to cut the connection.
        if request.transport is not None:
            request.transport.close()
        return resp, False
    try:
        await resp.write_eof()
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        return resp, False
    return resp, True


class Forwarder:
    """The catch-all handler: passes a request through untouched."""

    def __init__(
        self, client: UpstreamClient, base_url: str, *, keep_identity: bool = False
    ) -> None:
        self.client = client
        self.base = URL(base_url)
        self.keep_identity = keep_identity

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == SIDECAR_PREFIX or path.startswith(SIDECAR_PREFIX + "/"):
            raise NotFound(f"no such sidecar endpoint: {path}")
        url = upstream_url(self.base, request)
        # The server does not decode request bodies (see create_app), so a compressed upload
        # goes upstream as the very bytes the client sent, under its own headers.
        data = await request_data(request)
        headers = upstream_request_headers(request, keep_identity=self.keep_identity)
        try:
            async with open_upstream(self.client, request.method, url, headers, data) as up:
                if small_answer(request, up):
                    body = await read_whole(up)
                    out = client_response_headers(up, body_changed=True)
                    return web.Response(status=up.status, reason=up.reason, body=body, headers=out)
                resp, _ = await relay_response(request, up, client_response_headers(up))
                return resp
        except (UpstreamUnavailable, UpstreamTimeout) as e:
            raise_client_fault(request, e)
            raise


def raise_client_fault(request: web.Request, error: Exception) -> None:
    """When forwarding failed because the client's own body broke (malformed framing, or the
    client went away mid-body), raise that instead: it is the client's doing, not a 502."""
    fault = request.content.exception()
    if isinstance(fault, (HttpProcessingError, ConnectionResetError)):
        raise fault from error


async def request_data(request: web.Request) -> bytes | aiohttp.StreamReader | None:
    """What to send upstream as the body: a small one whole (it goes out with the headers in
    one write), anything larger or of unknown length as a stream."""
    if not request.body_exists:
        return None
    length = request.content_length
    if length is not None and length <= SMALL_BODY:
        return await request.read()
    return request.content


def small_answer(request: web.Request, up: Response) -> bool:
    """An answer small enough to read whole and send with its headers in one write: a declared
    length of at most ``SMALL_BODY``, not an event stream, and a body there is to send."""
    length = up.content_length
    return (
        length is not None
        and length <= SMALL_BODY
        and up.content_type != "text/event-stream"
        and request.method != "HEAD"
        and up.status >= 200
        and up.status not in (204, 304)
    )


async def read_whole(up: Response) -> bytes:
    """The upstream's whole answer; a stall or a cut while reading it is a 504 or a 502."""
    try:
        return await up.read()
    except TimeoutError as e:
        raise UpstreamTimeout("the upstream stopped sending its answer") from e
    except UpstreamUnavailable as e:
        raise UpstreamUnavailable(f"the upstream's answer broke off: {e}") from e
