"""The servers the side-by-side benchmark compares, each started as a process of its own whose
pid is handed back (its CPU time is read from ``/proc``)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from bench.stack import child_process
from sidecar.devservices import free_port

Server = tuple[str, int]  # URL, pid


@contextlib.asynccontextmanager
async def forwarder_process(upstream_url: str) -> AsyncIterator[Server]:
    """``python -m bench.loadgen forwarder``: the minimal forwarder in front of ``upstream_url``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "bench.loadgen", "forwarder", str(port), upstream_url]
    async with child_process(argv, url + "/bench/ready") as proc:
        yield url, proc.pid


@contextlib.asynccontextmanager
async def sidecar_with_pid(config: Mapping[str, Any]) -> AsyncIterator[Server]:
    """``python -m sidecar serve`` with ``config``."""
    workdir = Path(tempfile.mkdtemp(prefix="sidecar-bench-config-"))
    try:
        path = workdir / "sidecar.yaml"
        await asyncio.to_thread(path.write_text, yaml.safe_dump(dict(config)))
        url = f"http://127.0.0.1:{config['listen']['port']}"
        argv = [sys.executable, "-m", "sidecar", "serve", "-c", str(path)]
        async with child_process(argv, url + "/_sidecar/readyz") as proc:
            yield url, proc.pid
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)


@contextlib.asynccontextmanager
async def litellm_process(upstream_url: str) -> AsyncIterator[Server | None]:
    """LiteLLM's proxy passing ``/bench/tasks`` through to the upstream, when ``litellm`` is on
    PATH (it is never installed for this); else ``None``.

    Uses the proxy's ``general_settings.pass_through_endpoints`` (LiteLLM docs, "Pass-through
    endpoints"), so it does what the sidecar's pass-through does.
    """
    binary = shutil.which("litellm")
    if binary is None:
        yield None
        return
    workdir = Path(tempfile.mkdtemp(prefix="sidecar-bench-litellm-"))
    try:
        path = workdir / "litellm.yaml"
        settings = {
            "model_list": [],
            "general_settings": {
                "pass_through_endpoints": [
                    {"path": "/bench/tasks", "target": upstream_url + "/bench/tasks"}
                ]
            },
        }
        await asyncio.to_thread(path.write_text, yaml.safe_dump(settings))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [binary, "--config", str(path), "--host", "127.0.0.1", "--port", str(port)]
        async with child_process(argv, url + "/health/liveliness", timeout_s=120) as proc:
            yield url, proc.pid
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)
