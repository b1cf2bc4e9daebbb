"""Time per query of the context engine (extraction + completion), against a trivial baseline.

The mix is every user turn of the CQR weather dialogues, replayed with its dialogue's context and
the assistant's previous message, plus the hand-written Chinese/English dialogues of
``bench.context_eval``. The baseline does what any interception costs at least: lowercase the
query and look it up in a dict. ``python -m bench.context_speed`` prints the figures.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bench.context_eval import ALL_DIALOGUES, EVAL_TOPICS, HELD_OUT, NOW, load_cqr
from sidecar.context import RulesExtractor, load_gazetteer
from sidecar.context.placelike import load_placelike
from sidecar.context.script import to_simplified

Case = tuple[str, dict[str, Any], str | None, str, datetime]


@dataclass(frozen=True, slots=True)
class SpeedReport:
    queries: int
    rounds: int
    median_ms: float
    p99_ms: float
    baseline_median_ms: float
    gazetteer_names: int
    gazetteer_load_ms: float
    lists_load_ms: float = 0.0  # brand/food/product names and common-word towns, and OpenCC

    @property
    def ratio(self) -> float:
        return self.median_ms / self.baseline_median_ms if self.baseline_median_ms else 0.0

    def render(self) -> str:
        return "\n".join(
            [
                "context engine speed (extraction + completion, per query)",
                f"  queries in the mix      {self.queries} x {self.rounds} rounds",
                f"  median                  {self.median_ms:.4f} ms",
                f"  p99                     {self.p99_ms:.4f} ms",
                f"  baseline median         {self.baseline_median_ms:.5f} ms"
                "  (lower() + dict lookup)",
                f"  ratio to baseline       {self.ratio:.0f}x",
                f"  gazetteer               {self.gazetteer_names} names, "
                f"loaded once in {self.gazetteer_load_ms:.0f} ms",
                f"  word lists and OpenCC   loaded once in {self.lists_load_ms:.0f} ms",
            ]
        )


def build_mix() -> list[Case]:
    """Every user turn with the context the sidecar would hold when it arrives."""
    extractor = RulesExtractor(extra_topics=EVAL_TOPICS)
    cases: list[Case] = []

    def play(turns: list[tuple[str, str | None]], tz: str, now: datetime) -> None:
        context: dict[str, Any] = {}
        last: str | None = None
        for query, reply in turns:
            cases.append((query, dict(context), last, tz, now))
            res = extractor.resolve_sync(
                query, context=context, last_assistant=last, timezone=tz, now=now
            )
            context.update(res.entities)
            last = reply

    for dialogue in load_cqr():
        turns = dialogue["turns"]
        pairs = [
            (t["text"], turns[i + 1]["text"] if i + 1 < len(turns) else None)
            for i, t in enumerate(turns)
            if t["role"] == "user"
        ]
        play(pairs, "UTC", NOW)
    for own in ALL_DIALOGUES + HELD_OUT:
        play([(q, a) for q, a, _ in own.turns], own.timezone, own.now)
    return cases


def measure(rounds: int = 20) -> SpeedReport:
    started = time.perf_counter()
    gaz = load_gazetteer()
    load_ms = gaz.load_ms or (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    load_placelike()
    to_simplified("臺北")
    lists_ms = (time.perf_counter() - started) * 1000
    extractor = RulesExtractor(extra_topics=EVAL_TOPICS, gazetteer=gaz)
    cases = build_mix()
    lookup = {q.lower(): i for i, (q, *_rest) in enumerate(cases)}

    for query, context, last, tz, now in cases:  # warm-up: regex caches, zoneinfo
        extractor.resolve_sync(query, context=context, last_assistant=last, timezone=tz, now=now)

    samples: list[float] = []
    baseline: list[float] = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for _ in range(rounds):
            for query, context, last, tz, now in cases:
                t0 = clock()
                extractor.resolve_sync(
                    query, context=context, last_assistant=last, timezone=tz, now=now
                )
                samples.append((clock() - t0) / 1e6)
                t0 = clock()
                lookup.get(query.lower())
                baseline.append((clock() - t0) / 1e6)
    finally:
        gc.enable()
    samples.sort()
    return SpeedReport(
        queries=len(cases),
        rounds=rounds,
        median_ms=statistics.median(samples),
        p99_ms=samples[int(len(samples) * 0.99) - 1],
        baseline_median_ms=statistics.median(baseline),
        gazetteer_names=len(gaz),
        gazetteer_load_ms=load_ms,
        lists_load_ms=lists_ms,
    )


def main(argv: list[str] | None = None) -> SpeedReport:
    parser = argparse.ArgumentParser(prog="python -m bench.context_speed", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="passes over the mix")
    args = parser.parse_args(argv)
    report = measure(args.rounds)
    print(report.render())
    return report


if __name__ == "__main__":
    main()
