"""Running the sidecar under test: in-process (``running_sidecar``) or as a real process
(``SidecarProcess``), plus ``base_config`` for a complete config in the contract's shape."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from sidecar.devservices import free_port

__all__ = [
    "ADMIN_TOKEN",
    "DEFAULT_ROUTES",
    "RunningSidecar",
    "SidecarProcess",
    "base_config",
    "deep_merge",
    "running_sidecar",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token"
DEFAULT_ROUTES: list[dict[str, Any]] = [
    {"path": "/api/tasks", "adapter": "tasks"},
    {"path": "/api/v1/tasks", "adapter": "tasks"},
    {"path": "/v1/chat/completions", "adapter": "openai"},
    {"path": "/v1/messages", "adapter": "anthropic"},
    {"path": "/v1/responses", "adapter": "responses"},
]


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``overrides`` merged in: mappings recursively, the rest replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def base_config(upstream_url: str, redis_url: str, pg_dsn: str, **overrides: Any) -> dict[str, Any]:
    """A full config dict for one test: its own port and Redis key prefix; admin token
    ``ADMIN_TOKEN``. Keyword arguments are top-level sections deep-merged over the defaults, e.g.
    ``base_config(u, r, p, session={"history_limit": 3})``."""
    config: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": free_port()},
        "upstream": {"url": upstream_url, "connect_timeout_s": 2, "read_timeout_s": 30},
        "redis": {
            "url": redis_url,
            "key_prefix": f"sct{uuid.uuid4().hex[:10]}",
            "session_ttl_s": 3600,
        },
        "postgres": {"dsn": pg_dsn, "migrate_on_start": True},
        "session": {
            "history_limit": 50,
            "max_stored_messages": 1000,
            "history_token_budget": None,
            "local_cache_size": 1000,
        },
        "routes": copy.deepcopy(DEFAULT_ROUTES),
        "context": {"extract_entities": True, "rewrite": "replace", "timezone": "UTC"},
        "identity": {"trust_headers": False},
        "admin": {"token": ADMIN_TOKEN},
        # Never the working directory: a test that takes both stores down writes here.
        "writer": {
            "journal_path": os.path.join(
                tempfile.gettempdir(), f"sidecar-journal-{uuid.uuid4().hex}.jsonl"
            )
        },
    }
    return deep_merge(config, overrides)


@dataclass
class RunningSidecar:
    """An in-process sidecar: ``url`` to send requests to, ``app`` to look inside."""

    url: str
    app: web.Application
    runner: web.AppRunner
    config: Any


@contextlib.asynccontextmanager
async def running_sidecar(
    config: Mapping[str, Any] | Any, *, shutdown_timeout: float = 5.0
) -> AsyncIterator[RunningSidecar]:
    """Serve ``create_app(config)`` on 127.0.0.1 (the config's listen port, or a free one).

    ``config`` is a config dict (as from ``base_config``) or an already built ``Config``.
    """
    from sidecar import app as sidecar_app
    from sidecar.config import Config
    from sidecar.middleware import Runner

    if isinstance(config, Mapping) and not config.get("writer", {}).get("consumer"):
        # Every app in this process would otherwise be "<hostname>-<pid>": one name for several
        # replicas, which the writer's lease refuses (as it should between real processes).
        config = deep_merge(config, {"writer": {"consumer": f"in-process-{uuid.uuid4().hex[:8]}"}})
    cfg = Config.from_mapping(config) if isinstance(config, Mapping) else config
    port = int(getattr(getattr(cfg, "listen", None), "port", 0) or 0)
    app = sidecar_app.create_app(cfg)
    runner = Runner(
        app,
        on_unhandled=app[sidecar_app.OBSERVER].unhandled,
        access_log=None,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
        except OSError as e:
            # The port was free when the config was written; another process on this machine
            # may have taken it since. Any free port serves: callers use ``url``.
            if e.errno != errno.EADDRINUSE or port == 0:
                raise
            await web.TCPSite(runner, "127.0.0.1", 0).start()
        bound = int(runner.addresses[0][1])
        yield RunningSidecar(url=f"http://127.0.0.1:{bound}", app=app, runner=runner, config=cfg)
    finally:
        await runner.cleanup()


class SidecarProcess:
    """``python -m sidecar serve -c FILE`` as a child process, config written from a dict.

    ``start()``, ``await wait_ready()``, then ``terminate()``/``kill()`` and ``await wait()``.
    Its working directory is a temporary directory that ``close()`` removes; its output goes to
    a log file (``log_text()``). Usable as ``async with SidecarProcess(cfg) as proc:``, which
    starts it, waits until it is ready and kills it on the way out if it still runs.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        env: Mapping[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.config = dict(config)
        self.dir = Path(tempfile.mkdtemp(prefix="sidecar-proc-"))
        self.config_path = self.dir / "sidecar.yaml"
        self.log_path = self.dir / "sidecar.log"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.env = dict(env or {})
        self.args = list(args or [])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.config["listen"]["port"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def argv(self) -> list[str]:
        """The command line that starts the sidecar."""
        return [sys.executable, "-m", "sidecar", "serve", "-c", str(self.config_path), *self.args]

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=env,
            )

    async def wait_ready(self, timeout_s: float = 20.0, path: str = "/_sidecar/healthz") -> None:
        """Poll ``path`` until it answers 200; fail with the log's tail when it does not."""
        assert self.proc is not None, "not started"
        deadline = time.monotonic() + timeout_s
        client_timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=client_timeout) as http:
            while True:
                code = self.proc.poll()
                if code is not None:
                    raise AssertionError(
                        f"sidecar exited with code {code} before it was ready:\n{self.log_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with http.get(self.url + path) as resp:
                        if resp.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"sidecar not ready on {self.url} within {timeout_s}s:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.05)

    def send_signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self, timeout_s: float = 30.0) -> int:
        """Wait for the process to exit and return its exit code."""
        assert self.proc is not None, "not started"
        deadline = time.monotonic() + timeout_s
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"sidecar still running after {timeout_s}s:\n{self.log_tail()}"
                )
            await asyncio.sleep(0.02)
        return code

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(log is empty)"

    def close(self) -> None:
        """Kill the process if it still runs and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    async def __aenter__(self) -> SidecarProcess:
        self.start()
        try:
            await self.wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
