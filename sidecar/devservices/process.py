"""Supervise one throw-away server process and everything it starts.

``ChildServer`` starts the server with ``asyncio.create_subprocess_exec`` in its own process group
and temporary directory, waits until a subclass's ``probe()`` answers, and stops, kills, pauses
(SIGSTOP) and resumes it without blocking the event loop. Signals that must reach the whole server
go to the process *and every descendant psutil finds*: PostgreSQL's backends each call ``setsid``,
so a process-group signal would miss them.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psutil

__all__ = ["ChildServer", "DevServiceError", "free_port", "log_tail"]

_LOG_TAIL_LINES = 30
_POLL_FIRST_S = 0.01
_POLL_MAX_S = 0.1


class DevServiceError(RuntimeError):
    """A throw-away server could not be found, started or stopped."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last lines of a server's log, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and its live descendants (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _send(procs: list[psutil.Process], sig: signal.Signals) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(sig)


def _settled(proc: psutil.Process, wanted: set[str]) -> bool:
    try:
        return proc.status() in wanted
    except psutil.NoSuchProcess:
        return True


async def _wait_until(procs: list[psutil.Process], wanted: set[str], within_s: float) -> bool:
    """Wait until every process is in one of the ``wanted`` states (or gone)."""
    deadline = time.monotonic() + within_s
    delay = _POLL_FIRST_S
    while not all(_settled(p, wanted) for p in procs):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, _POLL_MAX_S)
    return True


_STOPPED = {psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP, psutil.STATUS_ZOMBIE}
_GONE = {psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD}


class Started:
    """``async with``: ``start()`` on the way in (``close()`` if it fails half-way), ``close()``
    on the way out."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class ChildServer(Started):
    """A server process on 127.0.0.1 with its port, data, socket and log in a temporary directory.

    Subclasses give the command line (``command()``) and the readiness check (``probe()``).
    Every lifecycle method is a coroutine; ``close()`` also removes the directory, and an
    interpreter that exits without ``close()`` kills the server anyway (atexit).
    """

    name = "server"
    ready_within_s = 30.0  # start() gives up (kills the server, raises) after this
    stop_within_s = 30.0  # stop() kills a server that has not exited after this

    def __init__(self, port: int | None) -> None:
        self.port = port if port is not None else free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"sidecar-{self.name}-"))
        self.log_path = self.dir / f"{self.name}.log"
        self._proc: asyncio.subprocess.Process | None = None
        self._paused = False
        self._closed = False
        atexit.register(self._atexit)

    # -- to be provided by subclasses -------------------------------------------------------

    def command(self) -> list[str]:
        raise NotImplementedError

    def spawn_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for the child (env, user, group)."""
        return {}

    async def probe(self) -> bool:
        """True when the server answers; returns within about a second."""
        raise NotImplementedError

    stop_signal = signal.SIGTERM

    def after_kill(self) -> None:
        """Clean up what a killed server leaves behind."""

    # -- state -------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """True while the server process exists (it may be paused)."""
        return self._proc is not None and self._proc.returncode is None

    @property
    def is_paused(self) -> bool:
        return self.is_running and self._paused

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.is_running and self._proc is not None else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the server (only resume it when it runs) and wait until it answers."""
        if self._closed:
            raise DevServiceError(f"{self.name}: already closed")
        if self.is_running:
            await self.resume()
            return
        with self.log_path.open("ab") as log:
            log.write(f"--- starting {self.name} on port {self.port}\n".encode())
            log.flush()
            self._proc = await asyncio.create_subprocess_exec(
                *self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                # Its own group: a Ctrl-C meant for the demo does not reach the server first.
                process_group=0,
                **self.spawn_kwargs(),
            )
        self._paused = False
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_within_s
        delay = _POLL_FIRST_S
        while True:
            proc = self._proc
            assert proc is not None
            if proc.returncode is not None:
                self._proc = None
                raise DevServiceError(
                    f"{self.name} exited with code {proc.returncode} while starting on port "
                    f"{self.port}; log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if await self.probe():
                return
            if time.monotonic() > deadline:
                await self.kill()
                raise DevServiceError(
                    f"{self.name} did not answer within {self.ready_within_s:.0f}s on port {self.port}; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, _POLL_MAX_S)

    async def _freeze(self, *, strict: bool = True) -> list[psutil.Process]:
        """SIGSTOP the server, then its descendants, and return them all once they are stopped.

        The server is stopped first so it cannot start a new child after the list is taken.
        """
        if self._proc is None or self._proc.returncode is not None:
            return []
        root = _tree(self._proc.pid)[:1]
        _send(root, signal.SIGSTOP)
        await _wait_until(root, _STOPPED, 5.0)
        procs = _tree(self._proc.pid)
        _send(procs[1:], signal.SIGSTOP)
        if not await _wait_until(procs, _STOPPED, 5.0) and strict:
            raise DevServiceError(f"{self.name}: its processes did not stop on SIGSTOP")
        return procs

    async def stop(self) -> None:
        """Shut the server down cleanly (it keeps its data) and wait for it to exit."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            await self.resume()
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self.stop_signal)
            try:
                await asyncio.wait_for(proc.wait(), self.stop_within_s)
            except TimeoutError:
                await self.kill()
                return
        self._proc = None
        self._paused = False

    async def kill(self) -> None:
        """SIGKILL the server and everything it started, as a crash would."""
        proc = self._proc
        if proc is None:
            return
        procs = await self._freeze(strict=False)
        _send(procs, signal.SIGKILL)
        await proc.wait()
        # Descendants are reparented; wait until none still runs, so a restart never races them.
        await _wait_until(procs[1:], _GONE, 10.0)
        self._proc = None
        self._paused = False
        self.after_kill()

    async def pause(self) -> None:
        """SIGSTOP the server and its children: connections stay open but nothing answers.

        Returns once every process is actually stopped.
        """
        if not self.is_running:
            raise DevServiceError(f"{self.name}: cannot pause, it is not running")
        await self._freeze()
        self._paused = True

    async def resume(self) -> None:
        """SIGCONT a paused server and its children (no-op otherwise)."""
        if self._paused and self._proc is not None:
            _send(_tree(self._proc.pid), signal.SIGCONT)
            self._paused = False

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Paused for the block, resumed after it however the block ends."""
        await self.pause()
        try:
            yield
        finally:
            await self.resume()

    async def restart(self) -> None:
        """Stop (or, when it is already gone, clean up after) and start on the same port."""
        await self.stop()
        await self.start()

    async def ensure_running(self) -> None:
        """Make sure the server runs and is not paused, whatever a previous test did to it."""
        if self.is_running:
            await self.resume()
            return
        if self._proc is not None:
            # It died behind our back: treat it like a crash.
            self._proc = None
            self.after_kill()
        await self.start()

    async def close(self) -> None:
        """Stop the server and remove its directory."""
        if self._closed:
            return
        try:
            await self.stop()
        finally:
            self._closed = True
            atexit.unregister(self._atexit)
            shutil.rmtree(self.dir, ignore_errors=True)

    def _atexit(self) -> None:
        # The interpreter is exiting without close(): never leave a server behind.
        if self._proc is not None and self._proc.returncode is None:
            _send(_tree(self._proc.pid), signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)
