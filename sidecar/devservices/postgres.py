"""A throw-away PostgreSQL cluster: ``initdb`` once, a child ``postgres``, readiness via asyncpg.

PostgreSQL refuses to run as root, so when we are root ``initdb`` and ``postgres`` run as the
system user ``postgres`` (or ``nobody`` when that user does not exist).
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg

from .process import ChildServer, DevServiceError, log_tail

__all__ = ["TemporaryPostgres", "find_postgres_bindir"]

_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_INITDB_TIMEOUT_S = 120.0


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


class TemporaryPostgres(ChildServer):
    """A PostgreSQL cluster (``initdb`` once) served by a child ``postgres`` process.

    ``fsync`` and ``full_page_writes`` are off: the cluster is for tests and demos. Commits stay
    synchronous, so what was committed survives ``kill()`` as it would a real crash. The superuser
    is ``postgres`` with ``trust`` authentication on 127.0.0.1.
    """

    name = "postgres"
    ready_within_s = 60.0  # recovery after kill() replays the WAL
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back open transactions, no waiting

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

    def spawn_kwargs(self) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        kwargs: dict[str, Any] = {"env": env}
        if self._user is not None:
            env.update(HOME=str(self.dir), USER=self._user.pw_name, LOGNAME=self._user.pw_name)
            kwargs.update(user=self._user.pw_uid, group=self._user.pw_gid, extra_groups=[])
        return kwargs

    async def initdb(self) -> None:
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
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                **self.spawn_kwargs(),  # as the unprivileged user when we are root
            )
        try:
            code = await asyncio.wait_for(proc.wait(), _INITDB_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise DevServiceError(
                f"initdb did not finish within {_INITDB_TIMEOUT_S:.0f}s"
            ) from None
        if code != 0:
            raise DevServiceError(
                f"initdb failed with code {code}; log {self.log_path}:\n{log_tail(self.log_path)}"
            )

    async def start(self) -> None:
        if not self.is_running:
            await self.initdb()
        await super().start()

    def command(self) -> list[str]:
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

    def after_kill(self) -> None:
        # Every process of the cluster is gone, so its lock file is stale.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)

    async def probe(self) -> bool:
        # Ready once a session can be opened, as asyncpg's own test cluster checks
        # (asyncpg/cluster.py, Cluster._test_connection): while starting, recovering or shutting
        # down the server refuses the connection or answers CannotConnectNowError.
        try:
            conn = await asyncpg.connect(self.dsn, timeout=1.0)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        await conn.close(timeout=1.0)
        return True

    # -- databases ---------------------------------------------------------------------------

    @staticmethod
    def _check_name(name: str) -> str:
        if not _DB_NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        return name

    async def create_database(self, name: str) -> str:
        """Create an empty database and return its DSN."""
        self._check_name(name)
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.dsn_for(name)

    async def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever still uses it; no error when it is absent."""
        self._check_name(name)
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
