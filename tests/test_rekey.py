"""``sidecar migrate --rekey-from plain-sha256``: sessions stored under the old plain-hash tenants
move to the keyed tenants, and their clients find their history again."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml

from sidecar.identity import credential_tenant
from tests.harness import FakeUpstream
from tests.harness.waiting import pg_fetch

SECRET = "rekey-secret"


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")},
            **(env or {}),
        },
    )
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode()


def old_tenant(credential: str) -> str:
    return "key-" + hashlib.sha256(credential.encode()).hexdigest()[:32]


async def store_old_session(dsn: str, tenant: str, session_id: str, texts: list[str]) -> None:
    """Rows as the sidecar wrote them before ``identity.secret`` existed."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO sessions (tenant, session_id, message_count) VALUES ($1, $2, $3)",
            tenant,
            session_id,
            len(texts),
        )
        turn = uuid.uuid4()
        for seq, text in enumerate(texts, start=1):
            await conn.execute(
                "INSERT INTO messages (id, tenant, session_id, seq, role, content, turn_id,"
                " created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now())",
                uuid.uuid4(),
                tenant,
                session_id,
                seq,
                "user" if seq % 2 else "assistant",
                text,
                turn,
            )
        await conn.execute(
            "INSERT INTO token_usage (id, tenant, session_id, total_tokens, created_at)"
            " VALUES ($1, $2, $3, 7, now())",
            turn,
            tenant,
            session_id,
        )
    finally:
        await conn.close()


async def test_rekey_moves_old_tenants_and_their_clients_find_their_history(
    sidecar_config: dict[str, Any],
    pg_dsn: str,
    tmp_path: Path,
    start_sidecar: Any,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
) -> None:
    config = tmp_path / "sidecar.yaml"
    config.write_text(yaml.safe_dump(sidecar_config))
    code, out = await run_cli("migrate", "-c", str(config))
    assert code == 0, out

    alice, bob = "Bearer sk-alice", "Bearer sk-bob"
    await store_old_session(pg_dsn, old_tenant(alice), "trip", ["I am going to Rome", "Noted."])
    await store_old_session(pg_dsn, old_tenant(bob), "notes", ["bob's note", "ok"])
    # Alice already used the new scheme with another session id, and once with "dup" on both.
    await store_old_session(pg_dsn, old_tenant(alice), "dup", ["old dup"])
    await store_old_session(pg_dsn, credential_tenant(alice, SECRET), "dup", ["new dup"])

    credentials = tmp_path / "credentials.txt"
    credentials.write_text(f"{alice}\n\n{bob}\n")
    env = {"SIDECAR_IDENTITY_SECRET": SECRET}
    args = ("migrate", "-c", str(config), "--rekey-from", "plain-sha256")
    code, out = await run_cli(*args, "--credentials", str(credentials), env=env)
    assert code == 0, out
    assert (
        f"re-keyed {old_tenant(alice)} -> {credential_tenant(alice, SECRET)}: 1 session(s), 1 left"
        in out
    )
    assert f"re-keyed {old_tenant(bob)} -> {credential_tenant(bob, SECRET)}: 1 session(s)" in out

    rows = await pg_fetch(pg_dsn, "SELECT tenant, session_id FROM sessions ORDER BY 2, 1")
    assert {(r["tenant"], r["session_id"]) for r in rows} == {
        (credential_tenant(alice, SECRET), "trip"),
        (credential_tenant(bob, SECRET), "notes"),
        (credential_tenant(alice, SECRET), "dup"),
        (old_tenant(alice), "dup"),  # its id was taken under the new tenant: left, reported
    }
    moved = await pg_fetch(
        pg_dsn,
        "SELECT tenant FROM messages WHERE session_id = 'trip' UNION SELECT tenant FROM token_usage WHERE session_id = 'trip'",
    )
    assert [r["tenant"] for r in moved] == [credential_tenant(alice, SECRET)]

    # Run again: nothing left to move, nothing broken.
    code, out = await run_cli(*args, "--credentials", str(credentials), env=env)
    assert code == 0, out
    assert "0 session(s)" in out

    # Alice's client, unchanged, talks to a sidecar with the secret: her trip is remembered.
    sc = await start_sidecar(identity={"secret": SECRET})
    async with http.post(
        f"{sc.url}/api/tasks",
        json={"query": "what about the weather?", "session_id": "trip"},
        headers={"Authorization": alice},
    ) as r:
        assert r.status == 200
    history = upstream.requests_to("/api/tasks")[-1].json["history"]
    assert [m["content"] for m in history] == ["I am going to Rome", "Noted."]


async def test_rekey_needs_its_credentials(sidecar_config: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "sidecar.yaml"
    config.write_text(yaml.safe_dump(sidecar_config))
    code, out = await run_cli("migrate", "-c", str(config), "--rekey-from", "plain-sha256")
    assert code == 1
    assert "--credentials" in out
