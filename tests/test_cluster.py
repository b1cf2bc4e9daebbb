"""Against a real local Redis Cluster (3 masters): turns are served without degradation, the
writer drains every partition to PostgreSQL, admin deletion works, and sessions spread evenly
over the masters. Also: a change of ``redis.partitions`` orphans no outbox entry."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp

from sidecar.devservices import TemporaryPostgres, TemporaryRedisCluster
from tests.harness import ADMIN_TOKEN, FakeUpstream, answer_text, deep_merge
from tests.harness.waiting import pg_value, wait_for_rows

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SESSIONS = 1000


async def turn(
    http: aiohttp.ClientSession, url: str, sid: str, query: str
) -> tuple[int, str | None]:
    async with http.post(f"{url}/api/tasks", json={"query": query, "session_id": sid}) as r:
        await r.read()
        return r.status, r.headers.get("X-Sidecar-Degraded")


async def test_a_thousand_sessions_on_a_three_master_cluster(
    start_sidecar: Any,
    sidecar_config: dict[str, Any],
    redis_cluster: TemporaryRedisCluster,
    redis_cluster_url: str,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
) -> None:
    # redis.cluster is left out: the node says it is a cluster node (INFO cluster).
    sc = await start_sidecar(deep_merge(sidecar_config, {"redis": {"url": redis_cluster_url}}))
    sessions = [f"c-{i}" for i in range(SESSIONS)]
    gate = asyncio.Semaphore(16)

    async def one(sid: str, query: str) -> tuple[int, str | None]:
        async with gate:
            return await turn(http, sc.url, sid, query)

    answers = await asyncio.gather(*(one(sid, "first") for sid in sessions))
    assert Counter(answers) == Counter({(200, None): SESSIONS})
    # A second turn sees the first: history is read back from the cluster.
    for sid in sessions[:5]:
        assert await turn(http, sc.url, sid, "second") == (200, None)
        sent = upstream.requests_to("/api/tasks")[-1].json["history"]
        assert [m["content"] for m in sent] == ["first", answer_text("first")]

    # The writer drains every partition (each read on its own slot) into PostgreSQL.
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM token_usage", SESSIONS + 5, timeout_s=60)
    async with http.get(f"{sc.url}/_sidecar/readyz") as r:
        body = await r.json()
    assert r.status == 200
    assert body["degraded"] == []
    assert body["outbox_lag"] == 0

    # No master holds more than 40 % of the sessions.
    prefix = sidecar_config["redis"]["key_prefix"]
    per_master = []
    for node in redis_cluster.nodes:
        client = node.client()
        try:
            per_master.append(
                len([k async for k in client.scan_iter(match=f"{prefix}:*:meta", count=1000)])
            )
        finally:
            await client.aclose()
    assert sum(per_master) == SESSIONS
    assert max(per_master) <= 0.40 * SESSIONS, per_master

    # Admin deletion: gone from the cluster and PostgreSQL, and a new turn starts afresh.
    url = f"{sc.url}/_sidecar/sessions/anonymous/c-1"
    async with http.delete(url, headers=AUTH) as r:
        assert r.status == 204
    async with http.get(url, headers=AUTH) as r:
        assert r.status == 404
    assert await pg_value(pg_dsn, "SELECT count(*) FROM messages WHERE session_id = 'c-1'") == 0
    assert await turn(http, sc.url, "c-1", "again") == (200, None)
    assert upstream.requests_to("/api/tasks")[-1].json["history"] == []


async def test_changing_the_partition_count_orphans_no_entry(
    start_sidecar: Any,
    sidecar_config: dict[str, Any],
    postgres_server: TemporaryPostgres,
    http: aiohttp.ClientSession,
    pg_dsn: str,
) -> None:
    """Turns waiting in the outbox under 8 partitions reach PostgreSQL from a writer configured
    with 64: it reads every outbox stream it finds, not only those its count names."""
    await postgres_server.stop()
    try:
        before = await start_sidecar(deep_merge(sidecar_config, {"redis": {"partitions": 8}}))
        for i in range(40):
            status, _ = await turn(http, before.url, f"p-{i}", "waiting")
            assert status == 200
        await before.runner.cleanup()  # stops it; its turns stay in its 8 streams
    finally:
        await postgres_server.start()
    # The first writer held some entries when it stopped; another name claims them once idle.
    await start_sidecar(
        deep_merge(sidecar_config, {"redis": {"partitions": 64}, "writer": {"claim_idle_ms": 500}})
    )
    await wait_for_rows(pg_dsn, "SELECT count(*) FROM token_usage", 40, timeout_s=30)
    assert await pg_value(pg_dsn, "SELECT count(DISTINCT session_id) FROM messages") == 40


async def test_user_memory_and_a_users_deletion_on_a_cluster(
    start_sidecar: Any,
    sidecar_config: dict[str, Any],
    redis_cluster_url: str,
    upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    pg_dsn: str,
) -> None:
    # A user's sessions and profile share one slot: the load reads both in one script, and the
    # deletion's transaction (tombstone and profile) and key walk work across the masters.
    config = {"redis": {"url": redis_cluster_url}, "memory": {"profile": True}}
    sc = await start_sidecar(deep_merge(sidecar_config, config))

    async def ask(sid: str, query: str, user: str) -> dict[str, Any]:
        body = {"query": query, "session_id": sid, "user_id": user}
        async with http.post(f"{sc.url}/api/tasks", json=body) as r:
            assert r.status == 200, await r.text()
            assert r.headers.get("X-Sidecar-Degraded") is None
        forwarded: dict[str, Any] = upstream.requests_to("/api/tasks")[-1].json
        return forwarded

    for i in range(6):  # sessions spread over partitions if they were not the user's
        await ask(f"u-{i}", "I live in Oslo" if i == 0 else "hello", "nomad")
    await ask("k-1", "I live in Lima", "stays")
    assert (await ask("u-9", "weather?", "nomad"))["context"]["profile"] == {
        "home_location": "Oslo"
    }

    url = f"{sc.url}/_sidecar/users/anonymous/nomad"
    async with http.get(url, headers=AUTH) as r:
        assert r.status == 200
        assert len((await r.json())["sessions"]) == 7
    async with http.delete(url, headers=AUTH) as r:
        assert r.status == 204, await r.text()
    async with http.get(url, headers=AUTH) as r:
        assert r.status == 404
    fresh = await ask("u-1", "weather?", "nomad")
    assert fresh["history"] == []
    assert "profile" not in fresh["context"]
    assert (await ask("k-2", "weather?", "stays"))["context"]["profile"] == {
        "home_location": "Lima"
    }
    await wait_for_rows(
        pg_dsn, "SELECT count(*) FROM sessions WHERE tenant = 'anonymous/stays'", 2, timeout_s=30
    )
