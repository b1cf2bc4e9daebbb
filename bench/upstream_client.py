"""CPU per upstream request: the sidecar's upstream client against the aiohttp ``ClientSession``
it replaced, configured as the sidecar had it, taking turns in one process.

A scripted upstream in a process of its own answers every request with the same small JSON
body; the two clients send ``--requests`` POSTs each round, ``--concurrency`` at a time, through
``proxy.open_upstream`` and ``proxy.read_whole`` (what the forwarder does with a small answer).
The figure is this process's CPU time (``time.process_time``) per request, the median over
rounds; the ratio is what to read on a shared machine.

    python -m bench.upstream_client [--requests 20000] [--rounds 5] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from sidecar.devservices import free_port
from sidecar.proxy import make_client_session, open_upstream, read_whole

BODY = b'{"id":"x","status":"completed","result":"' + b"a" * 400 + b'"}'
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    b"Date: Mon, 30 Nov 2026 00:00:00 GMT\r\nServer: bench\r\n\r\n%b" % (len(BODY), BODY)
)
REQUEST_BODY = b'{"query":"' + b"q" * 200 + b'"}'


def _serve(port: int) -> None:
    """An upstream that answers each request head (and its Content-Length body) at once."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":", 1)[1]))
                writer.write(ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        await server.serve_forever()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def _aiohttp_session() -> aiohttp.ClientSession:
    """The client the sidecar used before, as ``proxy.make_client_session`` built it."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=30, ttl_dns_cache=60),
        timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=60),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        raise_for_status=False,
    )


async def _via_aiohttp(session: Any, url: URL, headers: CIMultiDict[str]) -> None:
    async with session.request(
        "POST", url, headers=headers, data=REQUEST_BODY, allow_redirects=False
    ) as resp:
        await resp.read()


async def _via_ours(client: Any, url: URL, headers: CIMultiDict[str]) -> None:
    async with open_upstream(client, "POST", url, headers, REQUEST_BODY) as up:
        await read_whole(up)


async def _round(
    send: Callable[[Any, URL, CIMultiDict[str]], Awaitable[None]],
    client: Any,
    url: URL,
    requests: int,
    concurrency: int,
) -> float:
    headers = CIMultiDict(
        {"Content-Type": "application/json", "Authorization": "Bearer x", "X-Request-ID": "r"}
    )

    async def worker(n: int) -> None:
        for _ in range(n):
            await send(client, url, headers.copy())

    started = time.process_time()
    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    return (time.process_time() - started) / (requests // concurrency * concurrency) * 1e6


async def run(requests: int, rounds: int, concurrency: int) -> dict[str, float]:
    port = free_port()
    server = multiprocessing.Process(target=_serve, args=(port,), daemon=True)
    server.start()
    url = URL(f"http://127.0.0.1:{port}/v1/tasks")
    ours = make_client_session(5, 60, 100)
    theirs = _aiohttp_session()
    try:
        for _ in range(100):  # the upstream process is up once it answers
            try:
                await _via_ours(ours, url, CIMultiDict())
                break
            except Exception:
                await asyncio.sleep(0.05)
        figures: dict[str, list[float]] = {"aiohttp": [], "sidecar": []}
        for _ in range(rounds):
            figures["aiohttp"].append(
                await _round(_via_aiohttp, theirs, url, requests, concurrency)
            )
            figures["sidecar"].append(await _round(_via_ours, ours, url, requests, concurrency))
        return {name: statistics.median(values) for name, values in figures.items()}
    finally:
        await theirs.close()
        await ours.close()
        server.kill()


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    try:
        import uvloop

        result = uvloop.run(run(args.requests, args.rounds, args.concurrency))
    except ImportError:
        result = asyncio.run(run(args.requests, args.rounds, args.concurrency))
    print("client CPU µs per upstream request (median of rounds)")
    for name, value in result.items():
        print(f"  {name:8} {value:7.1f}")
    result["ratio"] = result["sidecar"] / result["aiohttp"]
    print(f"  ratio    {result['ratio']:7.2f}")
    return result


if __name__ == "__main__":
    main()
