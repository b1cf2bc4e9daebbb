"""The writer's consumer-name lease against a real Redis (one node and a Redis Cluster): a process
whose lease lapsed and was taken by another never extends nor deletes the new holder's lease, even
when the takeover falls between its read of the lease and its write."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from sidecar.lease import LEASE_TTL_MS, ConsumerLease
from sidecar.store.client import RedisClient
from tests.harness.waiting import wait_until

# The new holder's lease is given a TTL far above LEASE_TTL_MS, so that an extension by the old
# holder (which sets LEASE_TTL_MS) shows.
LONG_MS = 600_000


@pytest.fixture
async def single(redis_url: str) -> AsyncIterator[RedisClient]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def cluster(redis_cluster_url: str) -> AsyncIterator[RedisClient]:
    client = RedisCluster.from_url(redis_cluster_url)
    try:
        yield client
    finally:
        await client.aclose()


class TakeoverAfterFirstCall:
    """A client that, right after the first command of the lease it serves, lets another
    process take the lease over (its own lapsed, the other took it): the takeover lands between
    the old holder's read and its write if those are two commands."""

    def __init__(self, client: RedisClient, takeover: Callable[[], Awaitable[None]]) -> None:
        self._client = client
        self._takeover: Callable[[], Awaitable[None]] | None = takeover

    def __getattr__(self, name: str) -> Any:
        command = getattr(self._client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = await command(*args, **kwargs)
            if self._takeover is not None:
                takeover, self._takeover = self._takeover, None
                await takeover()
            return result

        return call


async def pttl(client: RedisClient, key: str) -> int:
    return int(await client.pttl(key))


async def test_a_lapsed_lease_taken_by_another_is_not_extended_by_its_old_holder(
    single: RedisClient,
) -> None:
    await lapsed_lease_taken_over(single)


async def test_on_a_cluster_a_lapsed_lease_taken_by_another_is_not_extended(
    cluster: RedisClient,
) -> None:
    await lapsed_lease_taken_over(cluster)


async def test_a_takeover_between_read_and_write_is_neither_extended_nor_deleted(
    single: RedisClient,
) -> None:
    await takeover_between_read_and_write(single)


async def test_on_a_cluster_a_takeover_between_read_and_write_changes_nothing(
    cluster: RedisClient,
) -> None:
    await takeover_between_read_and_write(cluster)


async def lapsed_lease_taken_over(client: RedisClient) -> None:
    old = ConsumerLease(client, "lease-test", "pod-a")
    await old.acquire()
    assert await old.renew()
    # The old holder stalls past its TTL (shortened here): the lease lapses in Redis.
    await client.pexpire(old.key, 1)
    await wait_until(lambda: client.exists(old.key), lambda n: n == 0, what="the lease to lapse")
    new = ConsumerLease(client, "lease-test", "pod-a")
    await new.acquire(wait_s=0)
    await client.pexpire(new.key, LONG_MS)

    assert not await old.renew()
    assert not old.held
    assert await client.get(new.key) == new.token.encode()
    assert await pttl(client, new.key) > LEASE_TTL_MS
    await old.release()
    assert await client.get(new.key) == new.token.encode()
    assert await new.renew()


async def takeover_between_read_and_write(client: RedisClient) -> None:
    async def take_over() -> None:
        # The old holder's lease lapses and another process takes the name.
        await client.delete(new.key)
        await new.acquire(wait_s=0)
        await client.pexpire(new.key, LONG_MS)

    for action in ("renew", "release"):
        new = ConsumerLease(client, "lease-test", f"pod-{action}")
        old = ConsumerLease(client, "lease-test", f"pod-{action}")
        await old.acquire()
        old.client = TakeoverAfterFirstCall(client, take_over)  # type: ignore[assignment]
        if action == "renew":
            await old.renew()
            assert await pttl(client, new.key) > LEASE_TTL_MS, "the old holder extended it"
            assert not await old.renew()
        else:
            await old.release()
        assert await client.get(new.key) == new.token.encode(), action
        assert new.held
        assert await new.renew()
