"""Many script calls share the lane's one connection, against a real redis-server: each caller
gets its own answer, an error reply or a cancelled caller touches nobody else, a frozen Redis
times out what is in flight, and a lost connection is replaced."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError

from sidecar.devservices import TemporaryRedis
from sidecar.store.lane import ScriptLane
from tests.harness.waiting import wait_until

# Counts each call that Redis ran (KEYS[1]), fails on request, and answers its argument.
SCRIPT = """
redis.call('INCR', KEYS[1])
if ARGV[1] == 'fail' then return redis.error_reply('OOM command not allowed') end
return ARGV[1]
"""


class Lane:
    """A lane with a count of the connections it opened."""

    def __init__(
        self, client: aioredis.Redis, timeout_s: float, alone: Callable[[], bool] | None = None
    ) -> None:
        self.lane = ScriptLane(client, timeout_s, timeout_s, alone=alone)
        self.opened = 0
        new = self.lane._new

        def counting() -> Any:
            self.opened += 1
            return new()

        self.lane._new = counting  # type: ignore[method-assign]
        self.sha = ""

    async def call(self, arg: str) -> Any:
        return await self.lane.evalsha(self.sha, ["ran"], [arg])

    async def in_flight(self) -> int:
        pipe = self.lane._pipe
        return len(pipe._inflight) if pipe is not None else 0


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@contextlib.asynccontextmanager
async def _lane(
    client: aioredis.Redis, timeout_s: float = 5.0, alone: Callable[[], bool] | None = None
) -> AsyncIterator[Lane]:
    """A lane with the test script loaded, closed at the end."""
    lane = Lane(client, timeout_s, alone)
    lane.sha = await client.script_load(SCRIPT)
    try:
        yield lane
    finally:
        await lane.lane.aclose()


async def _ran(client: aioredis.Redis) -> int:
    return int(await client.get("ran") or 0)


async def test_concurrent_calls_share_one_connection_and_each_gets_its_own_answer(
    client: aioredis.Redis,
) -> None:
    async with _lane(client) as lane:
        before = (await client.info("stats"))["total_connections_received"]
        answers = await asyncio.gather(*(lane.call(str(i)) for i in range(200)))
        assert answers == [str(i).encode() for i in range(200)]
        after = (await client.info("stats"))["total_connections_received"]
        assert after - before == 1
        assert lane.opened == 1
        assert await _ran(client) == 200


async def test_an_error_reply_in_a_batch_fails_only_its_caller(client: aioredis.Redis) -> None:
    async with _lane(client) as lane:
        args = [str(i) for i in range(20)]
        args[7] = "fail"
        outcomes = await asyncio.gather(*(lane.call(a) for a in args), return_exceptions=True)
        assert isinstance(outcomes[7], OutOfMemoryError)
        assert [o for i, o in enumerate(outcomes) if i != 7] == [
            a.encode() for i, a in enumerate(args) if i != 7
        ]
        assert await lane.call("after") == b"after"
        assert lane.opened == 1  # the connection stayed in step and in use


class _CountedWrites:
    """The pipe's transport, counting its writes (each a send system call)."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self._transport.write(data)

    def abort(self) -> None:
        self._transport.abort()


async def test_a_lone_request_is_sent_at_once_and_requests_together_share_a_write(
    client: aioredis.Redis,
) -> None:
    serving = [1]  # requests being served, as the server counts them
    async with _lane(client, alone=lambda: serving[0] <= 1) as lane:
        assert await lane.call("warm") == b"warm"
        pipe = lane.lane._pipe
        assert pipe is not None
        counted = _CountedWrites(pipe._transport)
        pipe._transport = counted  # type: ignore[assignment]
        # One request at a time: its call is on the wire before the caller even waits.
        call = asyncio.ensure_future(lane.call("alone"))
        await asyncio.sleep(0)  # the call is made: it now waits for its answer
        assert counted.writes == 1
        assert await lane.in_flight() == 1
        assert await call == b"alone"
        # Many requests: their calls wait for each other and go out together.
        serving[0] = 30
        answers = await asyncio.gather(*(lane.call(str(i)) for i in range(30)))
        assert answers == [str(i).encode() for i in range(30)]
        assert counted.writes == 2
        # Calls made together by one request: the first is sent, the rest share one write.
        serving[0] = 1
        answers = await asyncio.gather(*(lane.call(str(i)) for i in range(30)))
        assert answers == [str(i).encode() for i in range(30)]
        assert counted.writes == 4


async def test_work_given_with_a_lone_call_runs_while_its_answer_is_out(
    client: aioredis.Redis,
) -> None:
    serving = [1]
    async with _lane(client, alone=lambda: serving[0] <= 1) as lane:
        assert await lane.call("warm") == b"warm"
        pipe = lane.lane._pipe
        assert pipe is not None
        seen: list[int] = []

        def meanwhile() -> None:
            seen.append(len(pipe._inflight))  # sent, and not answered yet

        answer = await lane.lane.evalsha(lane.sha, ["ran"], ["lone"], meanwhile)
        assert answer == b"lone"
        assert seen == [1]
        # A call that waits to share a write is not out yet: the work is left to the caller.
        serving[0] = 2
        answer = await lane.lane.evalsha(lane.sha, ["ran"], ["crowd"], meanwhile)
        assert answer == b"crowd"
        assert seen == [1]


async def test_a_caller_cancelled_before_its_batch_is_written_is_never_sent(
    client: aioredis.Redis,
) -> None:
    async with _lane(client) as lane:
        assert await lane.call("warm") == b"warm"  # connected: calls now wait only for the write
        calls = [asyncio.create_task(lane.call(a)) for a in ("a", "b", "c")]
        await asyncio.sleep(0)  # each is queued; the batch goes out on the next loop turn
        calls[1].cancel()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert outcomes[0] == b"a"
        assert outcomes[2] == b"c"
        assert isinstance(outcomes[1], asyncio.CancelledError)
        assert await _ran(client) == 3  # warm, a, c: b never reached Redis
        assert await lane.call("d") == b"d"
        assert lane.opened == 1


async def test_a_caller_cancelled_in_flight_leaves_the_others_answers_right(
    redis_server: TemporaryRedis, client: aioredis.Redis
) -> None:
    async with _lane(client) as lane:
        assert await lane.call("warm") == b"warm"
        async with redis_server.paused():
            calls = [asyncio.create_task(lane.call(a)) for a in ("a", "b", "c")]

            await wait_until(lane.in_flight, lambda n: n == 3, what="three calls in flight")
            calls[1].cancel()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert outcomes[0] == b"a"
        assert outcomes[2] == b"c"
        assert isinstance(outcomes[1], asyncio.CancelledError)
        # b's reply was read and dropped, so the next caller gets its own.
        assert await lane.call("d") == b"d"
        assert await _ran(client) == 5  # b had been sent, and ran
        assert lane.opened == 1


async def test_a_frozen_redis_times_out_every_call_in_flight_then_a_fresh_connection_serves(
    redis_server: TemporaryRedis, client: aioredis.Redis
) -> None:
    async with _lane(client, timeout_s=0.3) as lane:
        assert await lane.call("warm") == b"warm"
        async with redis_server.paused():
            async with asyncio.timeout(10):  # a call that hangs fails the test here
                outcomes = await asyncio.gather(
                    *(lane.call(str(i)) for i in range(50)), return_exceptions=True
                )
        assert all(isinstance(o, TimeoutError) for o in outcomes), outcomes
        assert len({str(o) for o in outcomes}) == 1
        assert "did not answer within 0.3s" in str(outcomes[0])
        assert await lane.call("back") == b"back"
        assert lane.opened == 2


async def test_redis_restarted_between_calls_the_next_call_succeeds(
    redis_server: TemporaryRedis, client: aioredis.Redis
) -> None:
    async with _lane(client) as lane:
        assert await lane.call("before") == b"before"
        await redis_server.restart()
        await client.connection_pool.disconnect()  # the test's own connection died too
        lane.sha = await client.script_load(SCRIPT)  # a restart empties the script cache
        assert await lane.call("after") == b"after"
        assert lane.opened == 2


async def test_a_call_whose_served_connection_is_lost_in_flight_is_sent_once_more(
    redis_server: TemporaryRedis, client: aioredis.Redis
) -> None:
    async with _lane(client) as lane:
        assert await lane.call("warm") == b"warm"
        async with redis_server.paused():
            call = asyncio.create_task(lane.call("again"))

            await wait_until(lane.in_flight, lambda n: n == 1, what="the call in flight")
            # What a firewall cutting the connection does: the socket is reset under the call.
            pipe = lane.lane._pipe
            assert pipe is not None
            assert pipe.conn._writer is not None
            pipe.conn._writer.transport.abort()
            await wait_until(lambda: _is(lane.opened), lambda n: n == 2, what="a fresh connection")
        assert await call == b"again"


async def test_calls_in_flight_when_the_lane_closes_fail_as_on_a_lost_connection(
    redis_server: TemporaryRedis, client: aioredis.Redis
) -> None:
    async with _lane(client) as lane:
        assert await lane.call("warm") == b"warm"
        async with redis_server.paused():
            calls = [asyncio.create_task(lane.call(str(i))) for i in range(3)]
            await wait_until(lane.in_flight, lambda n: n == 3, what="three calls in flight")
            await lane.lane.aclose()
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, RedisConnectionError) for o in outcomes), outcomes
        assert lane.opened == 1  # not sent again after the close


async def _is(value: int) -> int:
    return value
