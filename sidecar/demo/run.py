"""``sidecar demo``: throw-away Redis and PostgreSQL, the demo backend and the sidecar, the
weather conversation played through it over HTTP, and what each part saw and stored."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import aiohttp
from aiohttp import web

from ..app import OBSERVER, create_app
from ..config import Config
from ..devservices import DevServiceError, TemporaryPostgres, TemporaryRedis, free_port
from ..middleware import Runner
from ..store.readback import count_messages, read_stored
from .backend import DemoBackend

CONVERSATION = ("今天天气怎么样", "巴黎", "那明天呢")


def say(text: str = "") -> None:
    print(text, flush=True)


async def play(redis_url: str, pg_dsn: str) -> None:
    backend = DemoBackend()
    backend_runner = web.AppRunner(backend.app(), access_log=None)
    await backend_runner.setup()
    backend_port = free_port()
    await web.TCPSite(backend_runner, "127.0.0.1", backend_port).start()

    sidecar_port = free_port()
    config = Config.from_mapping(
        {
            "listen": {"host": "127.0.0.1", "port": sidecar_port},
            "upstream": {"url": f"http://127.0.0.1:{backend_port}"},
            "redis": {"url": redis_url, "key_prefix": "demo"},
            "postgres": {"dsn": pg_dsn},
            "context": {"timezone": "Asia/Shanghai"},
            "writer": {"block_ms": 100},
        },
        env={},
    )
    app = create_app(config)
    runner = Runner(app, on_unhandled=app[OBSERVER].unhandled, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", sidecar_port).start()
    base = f"http://127.0.0.1:{sidecar_port}"
    say(f"sidecar on {base} -> demo backend on http://127.0.0.1:{backend_port}")
    try:
        async with aiohttp.ClientSession() as http:
            await show_passthrough(http, base)
            session_id = await show_conversation(http, base, backend)
            await show_stored(http, base, pg_dsn, session_id)
    finally:
        await runner.cleanup()
        await backend_runner.cleanup()


async def show_passthrough(http: aiohttp.ClientSession, base: str) -> None:
    async with http.get(f"{base}/health") as r:
        say(f"\nGET /health passes through untouched: {r.status} {await r.text()}")


async def show_conversation(http: aiohttp.ClientSession, base: str, backend: DemoBackend) -> str:
    session_id = ""
    for n, query in enumerate(CONVERSATION, 1):
        body: dict[str, Any] = {"query": query}
        if session_id:
            body["session_id"] = session_id
        async with http.post(f"{base}/api/tasks", json=body) as r:
            answer = await r.json()
            session_id = r.headers["X-Session-ID"]
            timing = r.headers.get("Server-Timing", "")
        seen = backend.received[-1]
        say(f"\n── turn {n} ─────────────────────────────────────────────")
        say(f"client sent        query={query!r}" + ("" if n > 1 else "  (no session_id)"))
        say(
            f"backend received   query={seen['query']!r}"
            + (f"  original_query={seen['original_query']!r}" if "original_query" in seen else "")
        )
        say(f"                   session_id={seen['session_id']}")
        say("                   history=" + ("[]" if not seen["history"] else ""))
        for m in seen["history"]:
            say(f"                     {m['role']:>9}: {m['content']}")
        say(f"                   context={seen['context']}")
        say(f"backend answered   {answer['result']}   ({answer['usage']['total_tokens']} tokens)")
        say(f"sidecar overhead   {timing}")
    return session_id


async def show_stored(http: aiohttp.ClientSession, base: str, pg_dsn: str, session_id: str) -> None:
    # The writer drains the outbox off the request path; give it a moment.
    for _ in range(100):
        if await count_messages(pg_dsn, session_id) == 2 * len(CONVERSATION):
            break
        await asyncio.sleep(0.1)
    say("\n── stored in PostgreSQL ─────────────────────────────────")
    stored = await read_stored(pg_dsn, session_id)
    if stored is None:
        say("(no session row: the writer did not catch up)")
        return
    say(
        f"sessions     tenant={stored.tenant} tokens_used={stored.tokens_used}"
        f" message_count={stored.message_count}"
    )
    say(f"             context={stored.context}")
    for seq, role, content in stored.messages:
        say(f"messages     #{seq} {role:>9}: {content}")
    say("token_usage  " + ", ".join(f"{model}:{tokens}" for model, tokens in stored.usage))


async def run_with_servers() -> None:
    """Start throw-away Redis and PostgreSQL, play the demo, stop and remove them."""
    async with TemporaryRedis(persistent=False) as redis, TemporaryPostgres() as postgres:
        await play(redis.url, await postgres.create_database("demo"))


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    say("Session Sidecar demo: starting throw-away Redis and PostgreSQL ...")
    try:
        asyncio.run(run_with_servers())
    except DevServiceError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    say("\nDone: the servers are stopped and their files removed.")
    return 0
