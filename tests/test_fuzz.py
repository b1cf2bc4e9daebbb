"""Random hostile traffic against a live sidecar (real Redis and PostgreSQL behind it).

A hypothesis property test of the intercept path, and a seeded 4,000-request fuzz over every
kind of route: whatever arrives, the sidecar never answers 5xx, never logs a traceback, and every
turn it acknowledged (2xx) reaches PostgreSQL, with nothing dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import random
import traceback
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from sidecar.devservices import TemporaryPostgres, TemporaryRedis
from tests.harness import ADMIN_TOKEN, FakeUpstream, RunningSidecar, base_config, running_sidecar
from tests.harness.waiting import pg_value, wait_until

FUZZ_REQUESTS = 4000
FUZZ_SEED = 20261129
CONCURRENCY = 16
INTERCEPTED = ("/api/tasks", "/v1/chat/completions")

# Strings that have broken parsers, encoders and databases before.
EDGE_TEXT = [
    "",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\ud83d",
    "\ufeff",
    "\uffff",
    "\U0001f600",
    "e\u0301",
    "\u202eevil",
    "明天巴黎的天气",
    "那明天呢",
    "\x7f\x01\x1f",
    "\n\r\t",
    '"\\',
    "\u2028\u2029",
    "A" * 3000,
    "x" * 129,
    "ok",
]
# Texts a JSON parser accepts: a lone surrogate makes the whole body a 400, so those are rare.
PARSABLE_TEXT = [t for t in EDGE_TEXT if not any(0xD800 <= ord(c) <= 0xDFFF for c in t)]


def some_text(rng: random.Random) -> str:
    return rng.choice(EDGE_TEXT if rng.random() < 0.03 else PARSABLE_TEXT)


class CollectErrors(logging.Handler):
    """Every record with a traceback, or at ERROR and above, the fake upstream's own left out."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is None and record.levelno < logging.ERROR:
            return
        frames = traceback.format_exception(*record.exc_info) if record.exc_info else []
        if any("tests/harness/upstream.py" in f for f in frames):
            return
        self.found.append(f"{record.name}: {record.getMessage()}\n{''.join(frames)[-2000:]}")


@dataclass
class Live:
    sidecar: RunningSidecar
    upstream: FakeUpstream
    dsn: str
    redis_url: str
    prefix: str
    errors: CollectErrors
    acknowledged: int = 0  # intercepted turns answered 2xx (each is two stored messages)
    statuses: dict[int, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
async def live(
    redis_server: TemporaryRedis, postgres_server: TemporaryPostgres
) -> AsyncIterator[Live]:
    await redis_server.ensure_running()
    await postgres_server.ensure_running()
    name = f"t_{uuid.uuid4().hex}"
    dsn = await postgres_server.create_database(name)
    errors = CollectErrors()
    logging.getLogger().addHandler(errors)
    try:
        async with FakeUpstream() as upstream:
            cfg = base_config(
                upstream.url,
                redis_server.url,
                dsn,
                identity={"mode": "headers", "secret": "fuzz-secret"},
            )
            async with running_sidecar(cfg) as sc:
                yield Live(sc, upstream, dsn, redis_server.url, cfg["redis"]["key_prefix"], errors)
    finally:
        logging.getLogger().removeHandler(errors)
        with contextlib.suppress(Exception):
            await postgres_server.drop_database(name)


# --- JSON text that an encoder would refuse to write ---------------------------------------------


def to_json(value: Any) -> str:
    """JSON text of ``value``; strings with lone surrogates written as ``\\udXXX`` escapes."""
    return json.dumps(value, ensure_ascii=True)


def deep_text(depth: int, leaf: str = '"x"') -> str:
    opens = "".join("[" if i % 2 else '{"k":' for i in range(depth))
    closes = "".join("]" if i % 2 else "}" for i in reversed(range(depth)))
    return opens + leaf + closes


def random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 6 or roll < 0.45:
        return rng.choice(
            [
                some_text(rng),
                rng.randint(-(2**70), 2**70),
                rng.random() * 10 ** rng.randint(-300, 300),
                True,
                None,
                some_text(rng) * rng.randint(1, 3),
            ]
        )
    if roll < 0.75:
        return {
            some_text(rng) + str(i): random_json(rng, depth + 1) for i in range(rng.randint(0, 6))
        }
    return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 6))]


def context_text(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.08:
        return deep_text(rng.choice([60, 125, 127, 129, 200, 260, 1100, 5000]))
    if roll < 0.12:
        return to_json({"wide": [rng.random() for _ in range(rng.randint(500, 3000))]})
    if roll < 0.16:
        return to_json(random_json(rng))  # often not an object: a 400
    return to_json({some_text(rng): random_json(rng) for _ in range(rng.randint(0, 4))})


@dataclass
class FuzzRequest:
    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]
    turn: bool = False  # an intercepted turn that, answered 2xx, must be stored

    def describe(self) -> str:
        return f"{self.method} {self.path} {self.headers} {self.body[:300] if self.body else b''!r}"


def random_headers(rng: random.Random) -> dict[str, str]:
    headers: dict[str, str] = {}
    if rng.random() < 0.3:
        headers["X-Tenant-ID"] = rng.choice(["acme", "globex", "t:1.2_3-4", "acme", "a b"])
    if rng.random() < 0.2:
        headers["X-User-ID"] = rng.choice(["sam", "kim", "sam", "kim", "bad/user", "u" * 200])
    if rng.random() < 0.2:
        headers["Authorization"] = rng.choice(["Bearer k1", "Bearer k2", "Basic Zm9v", "Bearer"])
    if rng.random() < 0.15:
        headers["X-Sidecar-Degraded"] = "redis"
    if rng.random() < 0.1:
        headers["X-Session-ID"] = rng.choice(["s-1", "bad id", "x" * 200, ""])
    if rng.random() < 0.1:
        headers["Idempotency-Key"] = rng.choice([uuid.uuid4().hex, "k" * 300, "é"])
    return headers


def encode(rng: random.Random, body: bytes, headers: dict[str, str]) -> bytes:
    roll = rng.random()
    if roll < 0.08:
        headers["Content-Encoding"] = "gzip"
        return gzip.compress(body)
    if roll < 0.12:
        headers["Content-Encoding"] = "deflate"
        return zlib.compress(body)
    if roll < 0.14:
        headers["Content-Encoding"] = rng.choice(["gzip", "br", "bogus"])
        return body  # not what it says it is
    return body


def tasks_request(rng: random.Random) -> FuzzRequest:
    headers = random_headers(rng)
    session = rng.choice([f"fz-{rng.randint(0, 60)}"] * 6 + [None, "bad id!", "x" * 129])
    parts = [f'"query": {to_json(some_text(rng) + rng.choice(["", "weather in Paris"]))}']
    if session is not None:
        parts.append(f'"session_id": {to_json(session)}')
    if rng.random() < 0.7:
        parts.append(f'"context": {context_text(rng)}')
    if rng.random() < 0.3:
        parts.append(f"{to_json(some_text(rng) + '_x')}: {to_json(random_json(rng))}")
    body = ("{" + ", ".join(parts) + "}").encode()
    return FuzzRequest("POST", "/api/tasks", encode(rng, body, headers), headers, turn=True)


def chat_request(rng: random.Random) -> FuzzRequest:
    headers = random_headers(rng)
    stream = rng.random() < 0.3
    messages = [{"role": "user", "content": some_text(rng) + "hello"}]
    if rng.random() < 0.3:
        messages.insert(0, {"role": "system", "content": some_text(rng)})
    body: dict[str, Any] = {
        # The fake upstream writes the model raw into its SSE lines, where a control character
        # would make its own answer unreadable; plain names there.
        "model": rng.choice(["m", "gpt-x"]) if stream else some_text(rng),
        "messages": messages,
        "stream": stream,
    }
    if rng.random() < 0.2:
        body["metadata"] = random_json(rng)
    raw = to_json(body).encode()
    return FuzzRequest(
        "POST", "/v1/chat/completions", encode(rng, raw, headers), headers, turn=True
    )


def garbage_request(rng: random.Random) -> FuzzRequest:
    body = rng.choice(
        [
            b"",
            b"{",
            b"[1, 2]",
            b'{"query": 1}',
            b'{"query": "x", "context": [1]}',
            b"\xff\xfe\x00garbage",
            b'{"query": "\xff"}',
            b'{"query": "a", "session_id": "s"' + b" " * 2000,
            b'{"query": "1e400", "n": 1e400}',
            bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400))),
        ]
    )
    headers = random_headers(rng)
    return FuzzRequest("POST", rng.choice(INTERCEPTED), encode(rng, body, headers), headers)


def other_request(rng: random.Random) -> FuzzRequest:
    headers = random_headers(rng)
    roll = rng.random()
    if roll < 0.4:
        path = rng.choice(
            [
                "/echo/a",
                "/echo/%00",
                "/foo%0Abar",
                "/echo/%FF",
                "/status/404",
                "/nowhere",
                "/echo/%2F",
            ]
        )
        method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH"])
        body = None if method == "GET" else rng.choice(EDGE_TEXT).encode("utf-8", "surrogatepass")
        return FuzzRequest(method, path, body, headers)
    if roll < 0.8:
        headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        tenant = rng.choice(["anonymous", "acme", "%00", "a%2Fb", "x" * 300, "%ED%A0%80"])
        # Never a session the turns use: a deletion would rightly take acknowledged turns along.
        sid = rng.choice(["admin-1", "%00", "bad%20id", "y" * 200])
        user = rng.choice(["", "?user=sam", "?user=%00", "?user="])
        return FuzzRequest(
            rng.choice(["GET", "DELETE"]), f"/_sidecar/sessions/{tenant}/{sid}{user}", None, headers
        )
    return FuzzRequest(
        "GET", rng.choice(["/api/tasks/task-1", "/api/tasks/%00", "/_sidecar/nope"]), None, headers
    )


def fuzz_requests(seed: int, n: int) -> Iterator[FuzzRequest]:
    rng = random.Random(seed)
    makers = [tasks_request] * 5 + [chat_request] * 2 + [garbage_request] * 2 + [other_request] * 3
    for _ in range(n):
        yield rng.choice(makers)(rng)


# --- sending and checking -----------------------------------------------------------------------


async def send(http: aiohttp.ClientSession, live: Live, req: FuzzRequest) -> int:
    # Raw paths: the percent-escapes are the point, not something to normalise.
    url = URL(live.sidecar.url + req.path, encoded=True)
    async with http.request(
        req.method, url, data=req.body, headers=req.headers, skip_auto_headers=["Content-Type"]
    ) as r:
        await r.read()
        degraded = r.headers.get("X-Sidecar-Degraded", "")
        assert r.status < 500, f"{r.status} for {req.describe()}"
        if req.turn and 200 <= r.status < 300 and "unrecorded" not in degraded:
            live.acknowledged += 1
        live.statuses[r.status] = live.statuses.get(r.status, 0) + 1
        return r.status


async def stored_messages(live: Live) -> int:
    return int(await pg_value(live.dsn, "SELECT count(*) FROM messages"))


async def dead_letters(live: Live) -> int:
    client = aioredis.Redis.from_url(live.redis_url)
    try:
        return int(await client.xlen(f"{live.prefix}:dead-letters"))
    finally:
        await client.aclose()


async def assert_everything_acknowledged_is_stored(live: Live) -> None:
    expected = 2 * live.acknowledged
    await wait_until(
        lambda: stored_messages(live),
        lambda n: n >= expected,
        timeout_s=60,
        what=f"{expected} stored messages",
    )
    assert await stored_messages(live) == expected
    assert await dead_letters(live) == 0
    assert live.errors.found == []


# --- the property -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec=None, blacklist_categories=()), max_size=30)
    | st.sampled_from(EDGE_TEXT),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(EDGE_TEXT), children, max_size=5)
    ),
    max_leaves=30,
)
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    query=st.text(max_size=50) | st.sampled_from(EDGE_TEXT),
    context=json_values,
    nesting=st.integers(min_value=0, max_value=300),
    headers=st.dictionaries(
        st.sampled_from(
            ["X-Tenant-ID", "X-User-ID", "X-Sidecar-Degraded", "Idempotency-Key", "X-Custom"]
        ),
        header_values,
        max_size=4,
    ),
    compress=st.sampled_from(["", "gzip", "deflate"]),
)
async def test_the_intercept_path_never_fails_and_never_loses_an_acknowledged_turn(
    live: Live,
    query: str,
    context: Any,
    nesting: int,
    headers: dict[str, str],
    compress: str,
) -> None:
    session = f"prop-{uuid.uuid4().hex}"
    body = (
        f'{{"query": {to_json(query)}, "session_id": "{session}",'
        f' "context": {{"c": {to_json(context)}, "n": {deep_text(nesting)}}}}}'
    ).encode()
    headers = {k: v for k, v in headers.items() if v.strip()}
    if compress:
        headers["Content-Encoding"] = compress
        body = gzip.compress(body) if compress == "gzip" else zlib.compress(body)
    async with aiohttp.ClientSession() as http:
        before = live.acknowledged
        status = await send(http, live, FuzzRequest("POST", "/api/tasks", body, headers, turn=True))
    if live.acknowledged > before:
        count = f"SELECT count(*) FROM messages WHERE session_id = '{session}'"
        await wait_until(lambda: pg_value(live.dsn, count), lambda n: n == 2, what=count)
    else:
        assert 400 <= status < 500
    assert await dead_letters(live) == 0
    assert live.errors.found == []


# --- the fuzz -----------------------------------------------------------------------------------


async def test_4000_seeded_hostile_requests(live: Live) -> None:
    sem = asyncio.Semaphore(CONCURRENCY)
    before = await stored_messages(live)
    live.acknowledged = before // 2

    async def one(req: FuzzRequest, http: aiohttp.ClientSession) -> None:
        async with sem:
            await send(http, live, req)

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(one(r, http) for r in fuzz_requests(FUZZ_SEED, FUZZ_REQUESTS)))
    print(f"fuzz: statuses {sorted(live.statuses.items())}, turns {live.acknowledged}")
    assert sum(live.statuses.values()) >= FUZZ_REQUESTS
    # The mix reached every kind of answer it was meant to: turns, refusals, pass-through.
    assert live.acknowledged - before // 2 > 1000
    assert live.statuses.get(400, 0) > 300
    assert live.statuses.get(404, 0) > 50
    await assert_everything_acknowledged_is_stored(live)
