"""Commands packed in C (hiredis) reach a real redis-server exactly as redis-py's own encoder
sent them: every argument type the stores use comes back as it went, and what redis-py refuses
is still refused the same way."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.exceptions import DataError

from sidecar.config import Config
from sidecar.store.client import make_client
from sidecar.store.lane import ScriptLane

ECHO = "local out = {} for i, v in ipairs(ARGV) do out[i] = v end return out"
ARGS = ["text", "ünïcödé ✓", b"\x00raw\xffbytes", 0, -17, 2**62, 0.1, 1e20, "", b"", "x" * 70_000]


def _client(url: str) -> aioredis.Redis:
    cfg = Config.from_mapping(
        {"upstream": {"url": "http://127.0.0.1:1"}, "redis": {"url": url}}
    ).redis
    client = make_client(cfg, cluster=False)
    assert isinstance(client, aioredis.Redis)
    return client


async def test_every_argument_arrives_as_redis_py_would_have_sent_it(redis_url: str) -> None:
    plain = aioredis.Redis.from_url(redis_url)
    packed = _client(redis_url)
    lane = ScriptLane(packed, 5.0, 5.0)
    try:
        sha = await plain.script_load(ECHO)
        expected = await plain.evalsha(sha, 0, *ARGS)
        assert expected[2] == b"\x00raw\xffbytes"
        assert expected[6] == b"0.1"
        assert await packed.evalsha(sha, 0, *ARGS) == expected
        assert await lane.evalsha(sha, [], ARGS) == expected
        # A command name of two words is split as redis-py splits it.
        assert await packed.execute_command("CONFIG GET", "port") == await plain.execute_command(
            "CONFIG GET", "port"
        )
    finally:
        await lane.aclose()
        await packed.aclose()
        await plain.aclose()


@pytest.mark.parametrize("bad", [True, None, object()])
async def test_an_argument_redis_py_refuses_is_still_refused(redis_url: str, bad: object) -> None:
    packed = _client(redis_url)
    lane = ScriptLane(packed, 5.0, 5.0)
    try:
        sha = await packed.script_load(ECHO)
        with pytest.raises(DataError):
            await packed.evalsha(sha, 0, "ok", bad)  # type: ignore[arg-type]
        with pytest.raises(DataError):
            await lane.evalsha(sha, [], ["ok", bad])
        assert await lane.evalsha(sha, [], ["still fine"]) == [b"still fine"]
    finally:
        await lane.aclose()
        await packed.aclose()
