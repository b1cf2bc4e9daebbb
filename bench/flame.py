"""A flame graph of the sidecar serving warm turns (or pass-through requests), recorded by py-spy.

``python -m bench.flame [--mode turn|passthrough] [--seconds 20] [--output flame.svg]`` starts
the same processes as ``bench.sidebyside`` (its own Redis and PostgreSQL, the scripted upstream,
the sidecar), warms the sessions, then records the sidecar process with ``py-spy record`` while
wrk (or the Python client) keeps it busy. An output ending in ``.txt`` gets py-spy's collapsed
stacks instead of an SVG (one line per stack and its sample count, for reading with tools). py-spy is not a dependency: ``pip install py-spy``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.loadgen import run_load, run_requests
from bench.processes import sidecar_with_pid
from bench.sidebyside import _bodies, _partitions, _stores, _until_drained
from bench.stack import sidecar_config, upstream_process
from sidecar.store.keys import KeySpace


def find_py_spy() -> str:
    """py-spy on PATH or beside this interpreter (a virtual environment's ``bin``)."""
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.path.exists(found):
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    return found


async def record(py_spy: str, mode: str, seconds: float, output: Path, sessions: int = 64) -> None:
    async with _stores() as (redis, _, stores), upstream_process() as upstream_url:
        config = sidecar_config(upstream_url, stores)
        keys = KeySpace(config["redis"]["key_prefix"], _partitions(config))
        async with sidecar_with_pid(config) as (url, pid):
            client = redis.client()
            bodies = _bodies(sessions)
            await run_requests(
                url + "/api/tasks", bodies[:sessions] * 25, connections=16, requests=sessions * 25
            )
            await _until_drained(client, keys)
            path = "/api/tasks" if mode == "turn" else "/bench/tasks"
            spy = await asyncio.create_subprocess_exec(
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(round(seconds)),
                "--rate",
                "500",
                "--format",
                "raw" if output.suffix == ".txt" else "flamegraph",
                "--output",
                str(output),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
            await run_load(url + path, bodies, connections=16, seconds=seconds)
            await spy.wait()
            await client.aclose()
    print(f"written to {output}")


def strip_paths(output: Path, py_spy: str) -> None:
    """py-spy titles a graph with its own command line: keep this machine's paths out of it."""
    if output.suffix == ".svg":
        svg = output.read_text()
        svg = svg.replace(py_spy, "py-spy").replace(str(output), f"bench/flames/{output.name}")
        output.write_text(svg)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.flame", description=__doc__)
    parser.add_argument("--mode", choices=("turn", "passthrough"), default="turn")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--output", type=Path, default=Path("flame.svg"))
    args = parser.parse_args(argv)
    py_spy, output = find_py_spy(), args.output.resolve()
    asyncio.run(record(py_spy, args.mode, args.seconds, output))
    strip_paths(output, py_spy)


if __name__ == "__main__":
    main()
