"""Per-turn cost of user memory: fact extraction and the profile lookup, and what the profile adds
to the session's load round trip.

The extraction mix is every user turn of the context benchmark (CQR weather dialogues and the
hand-written ones: almost none states a fact, as in real traffic) plus explicit statements in
Chinese and English. The lookup is what a turn of a user whose profile is unchanged does in
process: the cached version for the load script, the cached facts once Redis confirmed them, and
the injection into the context. The load round trip is timed against the real Redis of the run,
with and without the user's profile riding in it. ``python -m bench.profile_speed`` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.context_speed import build_mix
from bench.stack import Stores, stores_or_temporary
from sidecar.config import RedisConfig
from sidecar.context import load_gazetteer
from sidecar.profile.cache import ProfileCache
from sidecar.profile.extract import ProfileExtractor
from sidecar.profile.inject import with_profile
from sidecar.session.model import SessionKey
from sidecar.store.breaker import CircuitBreaker
from sidecar.store.client import make_client
from sidecar.store.redis import RedisSessionStore
from sidecar.store.redis_users import RedisUserStore

STATEMENTS = (
    "我住在北京",
    "我现在在上海出差",
    "请用华氏度",
    "叫我小王",
    "请用中文回答",
    "I live in Berlin",
    "I'm based in London.",
    "metric please",
    "call me Sam",
    "answer in English",
)


@dataclass(frozen=True, slots=True)
class ProfileSpeedReport:
    queries: int
    statements: int
    extract_median_ms: float
    extract_p99_ms: float
    statement_median_ms: float
    lookup_median_ms: float
    turn_median_ms: float  # extraction + lookup, over the mix
    load_ms: float
    load_with_profile_ms: float

    @property
    def load_ratio(self) -> float:
        return self.load_with_profile_ms / self.load_ms if self.load_ms else 0.0

    def render(self) -> str:
        return "\n".join(
            [
                "user memory: per-turn cost (target: extraction + lookup under 0.05 ms median)",
                f"  queries in the mix            {self.queries}",
                f"  extraction median             {self.extract_median_ms:.4f} ms",
                f"  extraction p99                {self.extract_p99_ms:.4f} ms",
                f"  extraction, statements only   {self.statement_median_ms:.4f} ms median"
                f" ({self.statements} statements)",
                f"  lookup median                 {self.lookup_median_ms:.4f} ms"
                "  (cached version, facts, injection)",
                f"  extraction + lookup median    {self.turn_median_ms:.4f} ms",
                f"  load round trip               {self.load_ms:.3f} ms median without a profile,"
                f" {self.load_with_profile_ms:.3f} ms with one ({self.load_ratio:.2f}x):"
                " one round trip either way, the profile rides in the load script",
            ]
        )


def _timed(fn: Callable[[str], object], items: list[str], rounds: int) -> list[float]:
    clock = time.perf_counter_ns
    out: list[float] = []
    for _ in range(rounds):
        for item in items:
            t0 = clock()
            fn(item)
            out.append((clock() - t0) / 1e6)
    return out


async def _load_round_trips(stores: Stores, loads: int) -> tuple[float, float]:
    """Median time of a current-version load, without and with the profile in it."""
    cfg = RedisConfig(url=stores.redis_url, key_prefix="bench-profile")
    client = make_client(cfg, cluster=False)
    store = RedisSessionStore(client, cfg, CircuitBreaker(5, 1.0))
    try:
        owner = ("bench", "user")
        alone = SessionKey("bench", "alone")
        mine = SessionKey("bench/user", "mine")
        for key in (alone, mine):
            await store.seed(
                key,
                last_seq=0,
                tokens_used=0,
                message_count=0,
                created_at="2026-01-01T00:00:00Z",
                updated_at="2026-01-01T00:00:00Z",
                context={},
                messages=[],
                announce=False,
            )
        await RedisUserStore(store).seed_profile(
            owner, {"home_location": "北京", "units": "imperial"}
        )
        first = await store.load(mine, "", 0, owner=owner)
        profile_version = first.profile.version if first.profile else ""
        v_alone = (await store.load(alone, "", 0)).version
        v_mine = first.version

        async def time_loads(with_profile: bool) -> float:
            samples = []
            for _ in range(loads):
                t0 = time.perf_counter_ns()
                if with_profile:
                    await store.load(mine, v_mine, 50, owner=owner, known_profile=profile_version)
                else:
                    await store.load(alone, v_alone, 50)
                samples.append((time.perf_counter_ns() - t0) / 1e6)
            return statistics.median(samples)

        await time_loads(False)  # warm the connection and the scripts
        # Interleaved halves, so that a slow moment of the machine hits both alike.
        a1, b1 = await time_loads(False), await time_loads(True)
        a2, b2 = await time_loads(False), await time_loads(True)
        await client.delete(*[k async for k in client.scan_iter(match="bench-profile*")])
        return (a1 + a2) / 2, (b1 + b2) / 2
    finally:
        await client.aclose()


def measure(stores: Stores, rounds: int = 20, loads: int = 2000) -> ProfileSpeedReport:
    extractor = ProfileExtractor(load_gazetteer())
    mix = [case[0] for case in build_mix()] + list(STATEMENTS)
    for query in mix:  # warm-up: regex caches
        extractor.extract(query)

    cache = ProfileCache(1000)
    owner = ("tenant", "user")
    cache.put(owner, "e:1", {"home_location": "北京", "units": "imperial"})
    context = {"topic": "weather", "date": "2026-01-02"}

    def lookup(_query: str) -> None:
        cache.version(owner)
        facts = cache.facts(owner) or {}
        with_profile(context, facts)

    def turn(query: str) -> None:
        stated = extractor.extract(query)
        cache.version(owner)
        facts = cache.facts(owner) or {}
        with_profile(context, {**facts, **stated})

    gc.disable()
    try:
        extraction = _timed(extractor.extract, mix, rounds)
        statements = _timed(extractor.extract, list(STATEMENTS), rounds)
        lookups = _timed(lookup, mix, rounds)
        turns = _timed(turn, mix, rounds)
    finally:
        gc.enable()
    extraction.sort()
    load_ms, load_with_profile_ms = asyncio.run(_load_round_trips(stores, loads))
    return ProfileSpeedReport(
        queries=len(mix),
        statements=len(STATEMENTS),
        extract_median_ms=statistics.median(extraction),
        extract_p99_ms=extraction[int(len(extraction) * 0.99) - 1],
        statement_median_ms=statistics.median(statements),
        lookup_median_ms=statistics.median(lookups),
        turn_median_ms=statistics.median(turns),
        load_ms=load_ms,
        load_with_profile_ms=load_with_profile_ms,
    )


def main(argv: list[str] | None = None) -> ProfileSpeedReport:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_speed", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="passes over the mix")
    parser.add_argument("--loads", type=int, default=2000, help="load round trips per half")
    args = parser.parse_args(argv)
    with stores_or_temporary(None) as stores:
        report = measure(stores, args.rounds, args.loads)
    print(report.render())
    return report


if __name__ == "__main__":
    main()
