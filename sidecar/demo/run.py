"""``sidecar demo``: throw-away Redis and PostgreSQL, the demo backend and the sidecar, the
weather conversation played through it over HTTP, and what each part saw and stored."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from ..app import create_app
from ..config import Config
from ..devservices import DevServiceError, TemporaryPostgres, TemporaryRedis, free_port
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
    runner = web.AppRunner(create_app(config), access_log=None)
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
    conn = await asyncpg.connect(pg_dsn)
    try:
        # The writer drains the outbox off the request path; give it a moment.
        for _ in range(100):
            count = await conn.fetchval(
                "SELECT count(*) FROM messages WHERE session_id = $1", session_id
            )
            if count == 2 * len(CONVERSATION):
                break
            await asyncio.sleep(0.1)
        say("\n── stored in PostgreSQL ─────────────────────────────────")
        row = await conn.fetchrow(
            "SELECT tenant, tokens_used, message_count, context::text FROM sessions"
            " WHERE session_id = $1",
            session_id,
        )
        if row is None:
            say("(no session row: the writer did not catch up)")
            return
        say(
            f"sessions     tenant={row['tenant']} tokens_used={row['tokens_used']}"
            f" message_count={row['message_count']}"
        )
        say(f"             context={row['context']}")
        for m in await conn.fetch(
            "SELECT seq, role, content FROM messages WHERE session_id = $1 ORDER BY seq",
            session_id,
        ):
            say(f"messages     #{m['seq']} {m['role']:>9}: {m['content']}")
        usage = await conn.fetch(
            "SELECT model, total_tokens FROM token_usage WHERE session_id = $1 ORDER BY created_at",
            session_id,
        )
        say("token_usage  " + ", ".join(f"{u['model']}:{u['total_tokens']}" for u in usage))
    finally:
        await conn.close()


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
