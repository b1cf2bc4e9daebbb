"""Load and its bookkeeping for the side-by-side benchmark: the minimal forwarder it compares
against, the load client (wrk when installed, else a Python process), and CPU time and memory
of a process read from ``/proc``.

Run as a process of its own:

- ``python -m bench.loadgen forwarder PORT UPSTREAM_URL``: the minimal aiohttp forwarder (on
  uvloop when installed): read the body, send it upstream, relay the answer;
- ``python -m bench.loadgen client URL BODIES_JSON --connections N (--seconds S | --requests N)``:
  the Python load client; prints one ``BENCH {...}`` line, the same wrk's script prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of every thread of ``pid`` so far (``/proc/<pid>/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: the fields follow the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` (``/proc/<pid>/statm``)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


def use_uvloop() -> bool:
    """Run asyncio on uvloop when it is installed; True when it is."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One run of the load client."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @classmethod
    def from_line(cls, output: str) -> LoadResult:
        line = next(x for x in output.splitlines() if x.startswith("BENCH "))
        d = orjson.loads(line.removeprefix("BENCH "))
        return cls(
            d["requests"],
            d["errors"],
            d["duration_us"] / 1e6,
            d["p50_us"] / 1000,
            d["p99_us"] / 1000,
        )


# --- wrk ------------------------------------------------------------------------------------------

_WRK_SCRIPT = """
local bodies = {%s}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i + 1
  return wrk.format(nil, nil, nil, bodies[(i - 1) %% #bodies + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nBENCH {"requests": %%d, "errors": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def _lua_string(body: bytes) -> str:
    text = body.decode()
    level = "=" * 4
    assert f"]{level}]" not in text
    return f"[{level}[{text}]{level}]"


async def run_load(
    url: str, bodies: list[bytes], *, connections: int, seconds: float, prefer_wrk: bool = True
) -> LoadResult:
    """POST ``bodies`` in turn to ``url`` from ``connections`` connections for ``seconds``, from a
    process of its own (wrk when installed and ``prefer_wrk``, else the Python client)."""
    with tempfile.TemporaryDirectory(prefix="sidecar-load-") as tmp:
        if prefer_wrk and wrk_available():
            script = Path(tmp) / "bodies.lua"
            script.write_text(_WRK_SCRIPT % ",".join(_lua_string(b) for b in bodies))
            argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
            argv += ["--timeout", "30s", "-s", str(script), url]
        else:
            argv = _client_argv(tmp, url, bodies, connections, seconds=seconds)
        return LoadResult.from_line(await _run(argv))


async def run_requests(
    url: str, bodies: list[bytes], *, connections: int, requests: int
) -> LoadResult:
    """Exactly ``requests`` POSTs from the Python client process (wrk cannot count requests)."""
    with tempfile.TemporaryDirectory(prefix="sidecar-load-") as tmp:
        argv = _client_argv(tmp, url, bodies, connections, requests=requests)
        return LoadResult.from_line(await _run(argv))


def _client_argv(
    tmp: str,
    url: str,
    bodies: list[bytes],
    connections: int,
    *,
    seconds: float | None = None,
    requests: int | None = None,
) -> list[str]:
    path = Path(tmp) / "bodies.json"
    path.write_bytes(orjson.dumps([b.decode() for b in bodies]))
    argv = [sys.executable, "-m", "bench.loadgen", "client", url, str(path)]
    argv += ["--connections", str(connections)]
    if requests is not None:
        return [*argv, "--requests", str(requests)]
    return [*argv, "--seconds", str(seconds)]


async def _run(argv: list[str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if proc.returncode != 0 or "BENCH " not in text:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}):\n{text[-2000:]}")
    return text


# --- the Python client ------------------------------------------------------------------------------


async def _client(
    url: str, bodies: list[bytes], connections: int, seconds: float | None, requests: int | None
) -> dict[str, Any]:
    counter = itertools.count()
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds if seconds is not None else float("inf")
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                n = next(counter)
                if requests is not None and n >= requests:
                    return
                t0 = time.perf_counter()
                async with http.post(url, data=bodies[n % len(bodies)], headers=headers) as r:
                    await r.read()
                latencies.append(time.perf_counter() - t0)
                errors += r.status >= 400

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> int:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6)

    return {
        "requests": len(latencies),
        "errors": errors,
        "duration_us": round(elapsed * 1e6),
        "p50_us": pct(0.5) if latencies else 0,
        "p99_us": pct(0.99) if latencies else 0,
    }


# --- the minimal forwarder -------------------------------------------------------------------------


def serve_forwarder(port: int, upstream: str) -> None:
    """The least a forwarder can do with aiohttp: what the sidecar is measured against."""
    use_uvloop()
    app = web.Application()

    async def start(app: web.Application) -> Any:
        app["client"] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app["client"].close()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        client: aiohttp.ClientSession = app["client"]
        async with client.request(
            request.method, upstream + request.path_qs, data=body, headers=headers
        ) as up:
            data = await up.read()
            content_type = up.headers.get("Content-Type", "application/octet-stream")
            return web.Response(status=up.status, body=data, headers={"Content-Type": content_type})

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.cleanup_ctx.append(start)
    app.router.add_get("/bench/ready", ready)
    app.router.add_route("*", "/{tail:.*}", forward)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fwd = sub.add_parser("forwarder")
    fwd.add_argument("port", type=int)
    fwd.add_argument("upstream")
    cl = sub.add_parser("client")
    cl.add_argument("url")
    cl.add_argument("bodies", type=Path, help="a JSON list of request bodies (strings)")
    cl.add_argument("--connections", type=int, default=16)
    cl.add_argument("--seconds", type=float)
    cl.add_argument("--requests", type=int)
    args = parser.parse_args(argv)
    if args.command == "forwarder":
        serve_forwarder(args.port, args.upstream)
        return
    bodies = [s.encode() for s in orjson.loads(args.bodies.read_bytes())]
    use_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        result = asyncio.run(
            _client(args.url, bodies, args.connections, args.seconds, args.requests)
        )
        print("BENCH " + orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
