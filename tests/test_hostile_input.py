"""Hostile input, sent for real to a running sidecar: every case is a 4xx JSON answer or passes
through, never a 5xx, never a traceback in the log, never a turn acknowledged and then lost."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from yarl import URL

from sidecar import middleware
from sidecar.inputs import MAX_JSON_DEPTH, json_depth_exceeds, storable
from sidecar.observe import Observer
from sidecar.wire import BURST, WIRE_LOG
from tests.harness import ADMIN_TOKEN, FakeUpstream
from tests.harness.rawhttp import raw
from tests.harness.waiting import pg_fetch, pg_value, wait_for_rows

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything the sidecar (and aiohttp under it) logs during the test."""
    WIRE_LOG.reset()  # lines counted here are this test's
    with caplog.at_level(logging.DEBUG):
        yield caplog


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records with a traceback, the fake upstream's own (same process, same aiohttp
    logger) left out: it is not the sidecar."""
    found = []
    for r in caplog.records:
        if r.exc_info is None and "Traceback" not in r.getMessage():
            continue
        frames = traceback.format_exception(*r.exc_info) if r.exc_info else []
        if any("tests/harness/upstream.py" in f for f in frames):
            continue
        found.append(f"{r.name}: {r.getMessage()}")
    return found


def warnings_of(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.WARNING
    ]


def assert_json_error(
    status: int, body: bytes, expected_status: int | set[int], code: str | None = None
) -> None:
    assert status in (expected_status if isinstance(expected_status, set) else {expected_status}), (
        body
    )
    parsed = orjson.loads(body)
    assert set(parsed) == {"error"}
    if code is not None:
        assert parsed["error"]["code"] == code


def nested(depth: int, leaf: Any = "x") -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


# --- nesting ------------------------------------------------------------------------------------


def test_depth_scan_matches_the_parsed_depth() -> None:
    def depth(v: Any) -> int:
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        return 0

    samples = [nested(n) for n in (0, 1, 5, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1)]
    samples += [{"s": "[[[[{{{{" * 100, "t": ['"\\"]]]', nested(MAX_JSON_DEPTH - 2)]}]
    for sample in samples:
        raw_body = orjson.dumps(sample)
        assert json_depth_exceeds(raw_body) == (depth(sample) > MAX_JSON_DEPTH)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 1000, 5000])
async def test_a_body_nested_too_deep_is_a_400_before_parsing(
    start_sidecar: Any, http: aiohttp.ClientSession, upstream: FakeUpstream, depth: int
) -> None:
    sc = await start_sidecar()
    # Written out, not encoded: the encoder itself stops near 254 levels.
    deep = b"[" * (depth - 2) + b"]" * (depth - 2)
    body = b'{"query": "hi", "context": {"deep": ' + deep + b"}}"
    async with http.post(
        f"{sc.url}/api/tasks", data=body, headers={"Content-Type": "application/json"}
    ) as r:
        assert_json_error(r.status, await r.read(), 400, "json_too_deep")
    assert upstream.requests_to("/api/tasks") == []


async def test_a_body_just_within_the_limit_is_forwarded(
    start_sidecar: Any, http: aiohttp.ClientSession, upstream: FakeUpstream
) -> None:
    sc = await start_sidecar()
    deep = nested(MAX_JSON_DEPTH - 3)
    body = orjson.dumps({"query": "hi", "context": {"deep": deep}})
    async with http.post(f"{sc.url}/api/tasks", data=body) as r:
        assert r.status == 200
    assert upstream.requests_to("/api/tasks")[0].json["context"]["deep"] == deep


# --- admin parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/_sidecar/sessions/anonymous/%00",
        "/_sidecar/sessions/%00/s1",
        "/_sidecar/sessions/anonymous/a%20b",
        "/_sidecar/sessions/anonymous/" + "x" * 129,
        "/_sidecar/sessions/anonymous/s1?user=%00",
        "/_sidecar/sessions/anonymous/s1?user=",
        "/_sidecar/sessions/%ED%A0%80/s1",
    ],
)
async def test_admin_parameters_are_validated_like_session_ids(
    start_sidecar: Any, path: str, server_log: pytest.LogCaptureFixture
) -> None:
    sc = await start_sidecar()
    for method in ("GET", "DELETE"):
        status, _, body = await raw(
            sc.url,
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        # A path that is not UTF-8 stays percent-encoded: a tenant with no sessions (a 404,
        # or for DELETE, nothing to delete).
        if status != 204:
            assert_json_error(status, body, {400, 404})
    assert tracebacks(server_log) == []


# --- the wire -----------------------------------------------------------------------------------

FRAMING = {
    "nul in a header": b"GET /echo/x HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n",
    "content-length with transfer-encoding": (
        b"POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "bad request line": b"GET /x HTTP/1.1 trailing\r\nHost: x\r\n\r\n",
    "two content-lengths": b"POST /echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    # In the same packet as the head, the parser fails before a request exists.
    "bad chunk size": (
        b"POST /api/tasks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    ),
}


@pytest.mark.parametrize("case", sorted(FRAMING))
async def test_malformed_framing_is_a_json_400_and_one_warning_line(
    start_sidecar: Any, case: str, server_log: pytest.LogCaptureFixture
) -> None:
    sc = await start_sidecar()
    status, headers, body = await raw(sc.url, FRAMING[case])
    # aiohttp's parser refuses most of these before a request exists; the answer is still the
    # sidecar's JSON error, with a request id.
    assert_json_error(status, body, 400, "bad_http")
    assert headers["x-request-id"]
    assert tracebacks(server_log) == []
    assert len(warnings_of(server_log, "sidecar.wire")) == 1


async def test_an_aiohttp_whose_server_cannot_be_rebuilt_still_serves(
    start_sidecar: Any,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    server_log: pytest.LogCaptureFixture,
) -> None:
    """The JSON answer to malformed requests rebuilds aiohttp's server from parts that are not
    its public interface; an aiohttp that changed them serves anyway, with its own answers."""

    def changed(*args: Any, **kwargs: Any) -> None:
        raise AttributeError("'Server' object has no attribute '_kwargs'")

    monkeypatch.setattr(middleware._Server, "__init__", changed)
    sc = await start_sidecar()
    async with http.post(sc.url + "/api/tasks", json={"query": "still served?"}) as resp:
        assert resp.status == 200
    status, _, body = await raw(sc.url, FRAMING["bad request line"])
    assert status == 400
    assert not body.startswith(b"{")  # aiohttp's own answer
    assert any("could not be rebuilt" in m for m in warnings_of(server_log, "sidecar.middleware"))


async def wait_for_log(caplog: pytest.LogCaptureFixture, logger: str, needle: str) -> None:
    for _ in range(500):
        if any(needle in m for m in warnings_of(caplog, logger)):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {needle!r} warning from {logger}")


@pytest.mark.parametrize("path", ["/api/tasks", "/echo/chunked"])
async def test_a_bad_chunk_size_mid_body_costs_one_line_and_nothing_else(
    start_sidecar: Any, http: aiohttp.ClientSession, path: str, server_log: pytest.LogCaptureFixture
) -> None:
    """Found once the handler runs (the 100 Continue says it does), aiohttp does not hand the
    error to the request being read, so no answer can be given; the client that gives up is one
    warning line, and the sidecar serves on."""
    sc = await start_sidecar()
    url = URL(sc.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 100")
        writer.write(b'5\r\n{"que\r\nzz\r\nry": "x"}\r\n0\r\n\r\n')
        await writer.drain()
    finally:
        writer.close()
    await wait_for_log(server_log, "sidecar.wire", "went away")
    assert tracebacks(server_log) == []
    async with http.get(f"{sc.url}/_sidecar/healthz") as r:
        assert r.status == 200


async def test_a_flood_of_malformed_requests_is_not_a_flood_of_log_lines(
    start_sidecar: Any, server_log: pytest.LogCaptureFixture
) -> None:
    sc = await start_sidecar()
    for _ in range(40):
        status, _, _ = await raw(sc.url, FRAMING["nul in a header"])
        assert status == 400
    lines = warnings_of(server_log, "sidecar.wire")
    assert 1 <= len(lines) <= 10
    assert tracebacks(server_log) == []


@pytest.mark.parametrize("path", ["/api/tasks", "/echo/slow-body"])
async def test_a_client_gone_mid_body_is_one_warning_line(
    start_sidecar: Any, http: aiohttp.ClientSession, path: str, server_log: pytest.LogCaptureFixture
) -> None:
    sc = await start_sidecar()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n"
    ).encode() + b'{"query": "half'
    await raw(sc.url, request, close_after=True)
    await wait_for_log(server_log, "sidecar.wire", "went away")
    assert tracebacks(server_log) == []
    # The sidecar serves on as before.
    async with http.get(f"{sc.url}/_sidecar/healthz") as r:
        assert r.status == 200


# --- paths and headers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/foo%0Abar", "/echo/a%0Db", "/echo/%00", "/echo/%FF%FE", "/echo/%2F%2F"]
)
async def test_any_path_the_upstream_may_serve_passes_through(
    start_sidecar: Any, upstream: FakeUpstream, path: str
) -> None:
    sc = await start_sidecar()
    status, _, _ = await raw(
        sc.url, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    # The fake upstream knows no /foo...: its own 404 came back, the path reached it.
    assert status in (200, 404)
    assert len(upstream.requests) == 1
    assert upstream.requests[0].raw_path == path  # forwarded as the client wrote it


async def test_client_sidecar_headers_never_reach_the_upstream(
    start_sidecar: Any, http: aiohttp.ClientSession, upstream: FakeUpstream
) -> None:
    sc = await start_sidecar()
    spoofed = {
        "X-Sidecar-Degraded": "redis",
        "X-Sidecar-Anything": "1",
        "X-Tenant-ID": "acme",
        "X-User-ID": "sam",
    }
    async with http.get(f"{sc.url}/echo/x", headers=spoofed) as r:
        assert r.status == 200
        echoed = {k.lower() for k, _ in (await r.json())["headers"]}
        assert not any(name in r.headers for name in spoofed)
    assert not echoed & {k.lower() for k in spoofed}
    async with http.post(f"{sc.url}/api/tasks", json={"query": "hi"}, headers=spoofed) as r:
        assert r.status == 200
        assert "X-Tenant-ID" not in r.headers
        assert "X-User-ID" not in r.headers
    seen = upstream.requests_to("/api/tasks")[0].headers
    assert not any(name in seen for name in spoofed)


async def test_identity_headers_reach_the_upstream_only_in_headers_mode(
    start_sidecar: Any, http: aiohttp.ClientSession, upstream: FakeUpstream
) -> None:
    sc = await start_sidecar(identity={"mode": "headers"})
    sent = {"X-Tenant-ID": "acme", "X-User-ID": "sam", "X-Sidecar-Degraded": "redis"}
    async with http.get(f"{sc.url}/echo/x", headers=sent) as r:
        echoed = dict((k.lower(), v) for k, v in (await r.json())["headers"])
    assert echoed["x-tenant-id"] == "acme"
    assert echoed["x-user-id"] == "sam"
    assert "x-sidecar-degraded" not in echoed
    async with http.post(f"{sc.url}/api/tasks", json={"query": "hi"}, headers=sent) as r:
        assert r.status == 200
    seen = upstream.requests_to("/api/tasks")[0].headers
    assert seen["X-Tenant-ID"] == "acme"
    assert "X-Sidecar-Degraded" not in seen


@pytest.mark.parametrize("value", ["", "a b", "x" * 129, "ü", "a/b"])
async def test_malformed_identity_headers_are_a_400_in_headers_mode(
    start_sidecar: Any, http: aiohttp.ClientSession, upstream: FakeUpstream, value: str
) -> None:
    sc = await start_sidecar(identity={"mode": "headers"})
    for name in ("X-Tenant-ID", "X-User-ID"):
        if value == "":
            continue  # an empty header is no header
        async with http.post(
            f"{sc.url}/api/tasks", json={"query": "hi"}, headers={name: value}
        ) as r:
            assert_json_error(r.status, await r.read(), 400, "invalid_identity_header")
    assert upstream.requests_to("/api/tasks") == []


def test_storable_replaces_what_postgresql_refuses() -> None:
    assert storable({"a\x00": ["\ud800x", "ok", 1, None]}) == {
        "a\ufffd": ["\ufffdx", "ok", 1, None]
    }
    assert storable("plain") == "plain"


# --- stored fields ------------------------------------------------------------------------------


async def test_text_postgresql_refuses_is_cleaned_before_the_turn_is_acknowledged(
    start_sidecar: Any,
    http: aiohttp.ClientSession,
    upstream: FakeUpstream,
    pg_dsn: str,
    redis_url: str,
    sidecar_config: dict[str, Any],
) -> None:
    async def answer_with_nul(request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response(
            {
                "result": "an answer\x00with a NUL",
                "model": "fake\x00model",
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            }
        )

    upstream.tasks_handler = answer_with_nul
    sc = await start_sidecar()
    body = b'{"query": "q\\u0000uery", "session_id": "nul", "context": {"k\\u0000ey": ["v\\u0000", {"n\\u0000": 1}]}}'
    async with http.post(f"{sc.url}/api/tasks", data=body) as r:
        assert r.status == 200
        assert "X-Sidecar-Degraded" not in r.headers
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM messages WHERE session_id = 'nul'", 2)
    contents = [
        r["content"] for r in await pg_fetch(pg_dsn, "SELECT content FROM messages ORDER BY seq")
    ]
    assert contents == ["q\ufffduery", "an answer\ufffdwith a NUL"]
    assert await pg_value(pg_dsn, "SELECT model FROM token_usage") == "fake\ufffdmodel"
    context = await pg_value(pg_dsn, "SELECT context FROM sessions")
    assert orjson.loads(context)["k\ufffdey"] == ["v\ufffd", {"n\ufffd": 1}]
    await assert_no_dead_letters(redis_url, sidecar_config["redis"]["key_prefix"])


async def assert_no_dead_letters(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.xlen(f"{prefix}:dead-letters") == 0
    finally:
        await client.aclose()


async def test_header_values_that_are_not_utf8_are_hashed_or_refused_never_a_5xx(
    start_sidecar: Any, upstream: FakeUpstream, server_log: pytest.LogCaptureFixture
) -> None:
    sc = await start_sidecar()
    body = b'{"query": "hi", "session_id": "bytes"}'

    def post(extra: bytes) -> bytes:
        return (
            b"POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + extra
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )

    status, _, _ = await raw(sc.url, post(b"Authorization: Bearer \xff\xfe-key\r\n"))
    assert status == 200
    status, _, answer = await raw(sc.url, post(b"Idempotency-Key: \xff\xfe\r\n"))
    assert_json_error(status, answer, 400, "invalid_idempotency_key")
    status, _, _ = await raw(sc.url, post(b"X-Custom: \xff\xfe\r\n"))
    assert status < 500
    status, _, _ = await raw(
        sc.url,
        b"GET /echo/x HTTP/1.1\r\nHost: x\r\nX-Custom: \xff\xfe\r\nConnection: close\r\n\r\n",
    )
    assert status < 500
    assert tracebacks(server_log) == []


async def test_a_malformed_request_is_answered_when_recording_it_fails(
    start_sidecar: Any, monkeypatch: pytest.MonkeyPatch, server_log: pytest.LogCaptureFixture
) -> None:
    def broken(self: Observer, request: Any, status: int) -> dict[str, str]:
        raise RuntimeError("the metrics registry refused the count")

    monkeypatch.setattr(Observer, "unhandled", broken)
    sc = await start_sidecar()
    for _ in range(20):
        status, _, body = await raw(sc.url, FRAMING["bad request line"])
        assert_json_error(status, body, 400, "bad_http")
    # Said, but not once per request: a client can send garbage by the thousand.
    unrecorded = [m for m in warnings_of(server_log, "sidecar.wire") if "could not record" in m]
    assert 1 <= len(unrecorded) <= BURST
    assert "the metrics registry refused the count" in unrecorded[0]
