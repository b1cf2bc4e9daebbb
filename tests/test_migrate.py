"""``sidecar migrate``: the schema, applied once however many replicas run it at the same time."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.harness.waiting import pg_fetch, pg_value

MIGRATIONS = sorted((Path(__file__).parents[1] / "sidecar" / "store" / "migrations").glob("*.sql"))


async def run_migrate(config_path: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        "migrate",
        "-c",
        str(config_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode()


async def test_concurrent_migrations_apply_each_file_once(
    sidecar_config: dict[str, Any], pg_dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump(sidecar_config))
    results = await asyncio.gather(*(run_migrate(path) for _ in range(4)))
    assert [code for code, _ in results] == [0] * 4, results
    outputs = [out for _, out in results]
    # Exactly one of them applied the migrations; the others found the schema up to date.
    assert sum("applied:" in out for out in outputs) == 1, outputs
    assert sum("schema is up to date" in out for out in outputs) == 3, outputs
    versions = [
        r["version"]
        for r in await pg_fetch(pg_dsn, "SELECT version FROM schema_migrations ORDER BY 1")
    ]
    assert versions == [int(p.name.split("_")[0]) for p in MIGRATIONS]
    for table in ("sessions", "messages", "token_usage", "deleted_sessions"):
        assert await pg_value(pg_dsn, "SELECT to_regclass($1) IS NOT NULL", table)

    code, out = await run_migrate(path)
    assert (code, out.strip()) == (0, "schema is up to date")


async def test_migrate_reports_an_unreachable_database(
    tmp_path: Path, sidecar_config: dict[str, Any]
) -> None:
    from sidecar.devservices import free_port

    config = {
        **sidecar_config,
        "postgres": {"dsn": f"postgresql://postgres@127.0.0.1:{free_port()}/x"},
    }
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump(config))
    code, out = await run_migrate(path)
    assert code == 1
    assert out.startswith("migrate failed:")
