"""Throw-away Redis and PostgreSQL servers for the test suite and ``sidecar demo``.

Each server runs as a child process on 127.0.0.1 with a free port and keeps its data, socket and
log in a temporary directory. Both can be stopped, killed, paused (SIGSTOP) and restarted on the
same port with the same data, which is what the fault-injection tests need.

PostgreSQL refuses to run as root, so when we are root it runs as the system user ``postgres``
(or ``nobody`` when that user does not exist).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

__all__ = [
    "DevServiceError",
    "TemporaryPostgres",
    "TemporaryRedis",
    "find_postgres_bindir",
    "free_port",
]

_LOG_TAIL_LINES = 30
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class DevServiceError(RuntimeError):
    """A throw-away server could not be found, started or stopped."""


def _descendants(root: int) -> list[int]:
    """Every live descendant of ``root`` (from /proc; empty where there is no /proc)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces; the fields after its closing parenthesis do not.
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


class _ChildServer:
    """A server process in its own process group, so signals reach its workers too."""

    name = "server"

    def __init__(self, port: int | None) -> None:
        self.port = port if port is not None else free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"sidecar-{self.name}-"))
        self.log_path = self.dir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._closed = False
        atexit.register(self._atexit)

    # -- to be provided by subclasses -------------------------------------------------------

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _popen_kwargs(self) -> dict[str, Any]:
        return {}

    def _probe(self) -> bool:
        """True when the server answers; must not block for long."""
        raise NotImplementedError

    def _stop_signal(self) -> signal.Signals:
        return signal.SIGTERM

    def _after_kill(self) -> None:
        """Clean up what a killed server leaves behind."""

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """True while the server process exists (it may be paused)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def is_paused(self) -> bool:
        return self.is_running and self._paused

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.is_running and self._proc is not None else None

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (no-op when it runs) and wait until it answers."""
        if self._closed:
            raise DevServiceError(f"{self.name}: already closed")
        if self.is_running:
            self.resume()
            return
        with self.log_path.open("ab") as log:
            log.write(f"--- starting {self.name} on port {self.port}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                process_group=0,
                **self._popen_kwargs(),
            )
        self._paused = False
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            proc = self._proc
            assert proc is not None
            code = proc.poll()
            if code is not None:
                self._proc = None
                raise DevServiceError(
                    f"{self.name} exited with code {code} while starting on port {self.port}; "
                    f"log {self.log_path}:\n{_log_tail(self.log_path)}"
                )
            if self._probe():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise DevServiceError(
                    f"{self.name} did not answer within {timeout:.0f}s on port {self.port}; "
                    f"log {self.log_path}:\n{_log_tail(self.log_path)}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.1)

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)
            # PostgreSQL's backends each start a session of their own (setsid), so the group
            # signal misses them: signal every descendant too.
            for pid in _descendants(self._proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the server down cleanly (it keeps its data) and wait for it to exit."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self.resume()
            proc.send_signal(self._stop_signal())
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._proc = None
        self._paused = False

    def kill(self) -> None:
        """SIGKILL the server and everything it started, as a crash would."""
        proc = self._proc
        if proc is None:
            return
        self._signal_group(signal.SIGKILL)
        proc.wait()
        self._proc = None
        self._paused = False
        self._after_kill()

    def pause(self) -> None:
        """SIGSTOP the server: connections still open but nothing answers."""
        if not self.is_running:
            raise DevServiceError(f"{self.name}: cannot pause, it is not running")
        self._signal_group(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused server (no-op otherwise)."""
        if self._paused:
            self._signal_group(signal.SIGCONT)
            self._paused = False

    def restart(self, timeout: float = 30.0) -> None:
        """Stop (or, when it is already gone, clean up after) and start on the same port."""
        self.stop()
        self.start(timeout)

    def ensure_running(self, timeout: float = 30.0) -> None:
        """Make sure the server runs and is not paused, whatever a previous test did to it."""
        if self.is_running:
            self.resume()
            return
        if self._proc is not None:
            # It died behind our back: treat it like a crash.
            self._proc = None
            self._after_kill()
        self.start(timeout)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        if self._closed:
            return
        try:
            self.stop()
        finally:
            self._closed = True
            atexit.unregister(self._atexit)
            shutil.rmtree(self.dir, ignore_errors=True)

    def _atexit(self) -> None:
        # The interpreter is exiting without close(): never leave a server behind.
        if self._proc is not None:
            self._signal_group(signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------


def _resp_command(*args: str) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        raw = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


class TemporaryRedis(_ChildServer):
    """A ``redis-server`` on 127.0.0.1 in a temporary directory.

    With ``persistent=True`` (the default) it runs with ``appendonly yes`` so its data survives
    ``stop()``/``start()`` and ``restart()``; after ``kill()`` up to the last second of writes may
    be lost, as with a real deployment (``appendfsync everysec``).
    """

    name = "redis"

    def __init__(
        self,
        *,
        persistent: bool = True,
        appendfsync: Literal["always", "everysec", "no"] = "everysec",
        port: int | None = None,
        binary: str | None = None,
    ) -> None:
        found = binary or shutil.which("redis-server")
        if not found:
            raise DevServiceError(
                "redis-server was not found on PATH: install it "
                "(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)"
            )
        self.binary = found
        self.persistent = persistent
        self.appendfsync = appendfsync
        super().__init__(port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", self.appendfsync,
            "--daemonize", "no",
            "--protected-mode", "no",
            "--databases", "16",
        ]  # fmt: skip

    def command(self, *args: str, timeout: float = 5.0) -> bytes:
        """Send one command and return the first line of the reply (enough for PING, FLUSHALL)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(_resp_command(*args))
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply.split(b"\r\n", 1)[0]

    def _probe(self) -> bool:
        try:
            return self.command("PING", timeout=0.5) == b"+PONG"
        except OSError:
            return False

    def flushall(self) -> None:
        """Remove every key of every database."""
        reply = self.command("FLUSHALL")
        if not reply.startswith(b"+OK"):
            raise DevServiceError(f"redis FLUSHALL failed: {reply.decode(errors='replace')}")


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


def find_postgres_bindir() -> Path:
    """The directory holding ``postgres`` and ``initdb``: pg_config's, else the newest Debian's."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    candidates += [
        Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    ]
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if (bindir / "postgres").is_file() and (bindir / "initdb").is_file():
            return bindir
    raise DevServiceError(
        "PostgreSQL server binaries (postgres, initdb) were not found: install them "
        "(Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql)"
    )


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise DevServiceError(
        "running as root, but neither the user 'postgres' nor 'nobody' exists to run PostgreSQL"
    )


def _run_coroutine_blocking(factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine to completion from sync code, even when an event loop runs in this thread."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


class TemporaryPostgres(_ChildServer):
    """A PostgreSQL cluster (``initdb`` once) served by a child ``postgres`` process.

    ``fsync`` and ``full_page_writes`` are off: the cluster is for tests and demos. Commits stay
    synchronous, so what was committed survives ``kill()`` as it would a real crash. The superuser
    is ``postgres`` with ``trust`` authentication on 127.0.0.1.
    """

    name = "postgres"

    def __init__(
        self,
        *,
        port: int | None = None,
        bindir: str | Path | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.bindir = Path(bindir) if bindir is not None else find_postgres_bindir()
        self.settings: dict[str, str] = {
            # No fsync (the OS may lose data, a killed server may not), but every commit reaches
            # the OS before it returns: asynchronous commit would lose acknowledged rows on kill().
            "fsync": "off",
            "synchronous_commit": "on",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "64MB",
            "log_min_messages": "warning",
        }
        self.settings.update(settings or {})
        self._user = _unprivileged_user()
        super().__init__(port)
        self.data_dir = self.dir / "data"
        self.socket_dir = self.dir / "sock"
        self.socket_dir.mkdir()
        if self._user is not None:
            for path in (self.dir, self.socket_dir):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _popen_kwargs(self) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        kwargs: dict[str, Any] = {"env": env}
        if self._user is not None:
            env.update(HOME=str(self.dir), USER=self._user.pw_name, LOGNAME=self._user.pw_name)
            kwargs.update(user=self._user.pw_uid, group=self._user.pw_gid, extra_groups=[])
        return kwargs

    def initdb(self) -> None:
        """Create the cluster (done by ``start()`` when needed)."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        cmd = [
            str(self.bindir / "initdb"),
            "-D", str(self.data_dir),
            "-A", "trust",
            "-U", "postgres",
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            log.write(b"--- initdb\n")
            log.flush()
            result = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                check=False,
                timeout=120,
                **self._popen_kwargs(),
            )
        if result.returncode != 0:
            raise DevServiceError(
                f"initdb failed with code {result.returncode}; log {self.log_path}:\n"
                f"{_log_tail(self.log_path)}"
            )

    def start(self, timeout: float = 60.0) -> None:
        if not self.is_running:
            self.initdb()
        super().start(timeout)

    def _command(self) -> list[str]:
        cmd = [
            str(self.bindir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-k", str(self.socket_dir),
            "-c", "listen_addresses=127.0.0.1",
        ]  # fmt: skip
        for key, value in self.settings.items():
            cmd += ["-c", f"{key}={value}"]
        return cmd

    def _stop_signal(self) -> signal.Signals:
        return signal.SIGINT  # "fast" shutdown: roll back open transactions, no waiting

    def _after_kill(self) -> None:
        # Every process of the cluster is gone, so its lock file is stale.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)

    def _probe(self) -> bool:
        """Speak the start-up protocol: ready once a session reaches ReadyForQuery."""
        startup = b"user\0postgres\0database\0postgres\0\0"
        packet = struct.pack("!ii", 8 + len(startup), 196608) + startup
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.settimeout(2.0)
                sock.sendall(packet)
                buf = b""
                while True:
                    while len(buf) < 5:
                        chunk = sock.recv(4096)
                        if not chunk:
                            return False
                        buf += chunk
                    kind = buf[:1]
                    (length,) = struct.unpack("!i", buf[1:5])
                    if kind == b"Z":
                        sock.sendall(b"X" + struct.pack("!i", 4))
                        return True
                    if kind not in (b"R", b"S", b"K", b"N"):
                        return False  # "E": starting up, in recovery or shutting down
                    while len(buf) < 1 + length:
                        chunk = sock.recv(4096)
                        if not chunk:
                            return False
                        buf += chunk
                    buf = buf[1 + length :]
        except OSError:
            return False

    # -- databases ---------------------------------------------------------------------------

    @staticmethod
    def _check_name(name: str) -> str:
        if not _DB_NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        return name

    async def acreate_database(self, name: str) -> str:
        """Create an empty database and return its DSN."""
        import asyncpg

        self._check_name(name)
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.dsn_for(name)

    async def adrop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever still uses it; no error when it is absent."""
        import asyncpg

        self._check_name(name)
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    def create_database(self, name: str) -> str:
        """Blocking ``acreate_database``; safe to call while an event loop runs in this thread."""
        dsn: str = _run_coroutine_blocking(lambda: self.acreate_database(name))
        return dsn

    def drop_database(self, name: str) -> None:
        """Blocking ``adrop_database``."""
        _run_coroutine_blocking(lambda: self.adrop_database(name))
