"""Time per query of the context engine (extraction + completion), against a trivial baseline.

The mix is every user turn of the CQR weather dialogues, replayed with its dialogue's context and
the assistant's previous message, plus the hand-written Chinese/English dialogues of
``bench.context_eval``. The baseline does what any interception costs at least: lowercase the
query and look it up in a dict. ``python -m bench.context_speed`` prints the figures.

``--compare REF`` times this tree's engine against the one at git revision ``REF``: each runs in
a process of its own (REF's ``sidecar`` package unpacked with ``git archive``), both replay the
same mix, taking turns round by round, so a change in the machine's load hits both alike; the
report gives each side's median, p90 and p99 and their ratios.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
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


def _timed_round(extractor: RulesExtractor, cases: list[Case]) -> list[float]:
    """One pass over the mix: ms per query, with the garbage collector held off."""
    samples: list[float] = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for query, context, last, tz, now in cases:
            t0 = clock()
            extractor.resolve_sync(
                query, context=context, last_assistant=last, timezone=tz, now=now
            )
            samples.append((clock() - t0) / 1e6)
    finally:
        gc.enable()
    return samples


def _warm(extractor: RulesExtractor, cases: list[Case]) -> None:
    for query, context, last, tz, now in cases:  # regex caches, zoneinfo
        extractor.resolve_sync(query, context=context, last_assistant=last, timezone=tz, now=now)


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
    _warm(extractor, cases)

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
        p99_ms=_p99(samples),
        baseline_median_ms=statistics.median(baseline),
        gazetteer_names=len(gaz),
        gazetteer_load_ms=load_ms,
        lists_load_ms=lists_ms,
    )


def _p99(ordered: list[float]) -> float:
    return ordered[int(len(ordered) * 0.99) - 1]


def _p90(ordered: list[float]) -> float:
    return ordered[int(len(ordered) * 0.9) - 1]


@dataclass(frozen=True, slots=True)
class CompareReport:
    ref: str
    queries: int
    rounds: int
    ref_median_ms: float
    ref_p90_ms: float
    ref_p99_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    # each query's median over the rounds, then the p99 over the queries: the slow queries
    # themselves, with the machine's pauses (which all samples' p99 mostly shows) taken out
    ref_query_p99_ms: float
    query_p99_ms: float
    ref_package: str  # where the REF side imported ``sidecar`` from (a check it is REF's)

    @property
    def median_ratio(self) -> float:
        return self.ref_median_ms / self.median_ms

    @property
    def p90_ratio(self) -> float:
        return self.ref_p90_ms / self.p90_ms

    @property
    def p99_ratio(self) -> float:
        return self.ref_p99_ms / self.p99_ms

    @property
    def query_p99_ratio(self) -> float:
        return self.ref_query_p99_ms / self.query_p99_ms

    def render(self) -> str:
        def row(label: str, median: float, p90: float, p99: float, query_p99: float) -> str:
            return f"  {label:<24}{median:>10.4f}{p90:>10.4f}{p99:>10.4f}{query_p99:>16.4f}"

        return "\n".join(
            [
                f"context engine speed: this tree against {self.ref} (rounds taking turns)",
                f"  queries in the mix      {self.queries} x {self.rounds} rounds each",
                f"  {'ms per query':<24}{'median':>10}{'p90':>10}{'p99':>10}{'p99 of queries':>16}",
                row(
                    self.ref,
                    self.ref_median_ms,
                    self.ref_p90_ms,
                    self.ref_p99_ms,
                    self.ref_query_p99_ms,
                ),
                row("this tree", self.median_ms, self.p90_ms, self.p99_ms, self.query_p99_ms),
                f"  {self.ref + ' / this tree':<24}{self.median_ratio:>9.2f}x"
                f"{self.p90_ratio:>9.2f}x{self.p99_ratio:>9.2f}x{self.query_p99_ratio:>15.2f}x",
                f"  {self.ref} imported from {self.ref_package}",
            ]
        )


def serve() -> None:
    """The child side of ``--compare``: one timed round per line on stdin, answered as JSON."""
    extractor = RulesExtractor(extra_topics=EVAL_TOPICS)
    cases = build_mix()
    _warm(extractor, cases)
    import sidecar

    print(json.dumps({"queries": len(cases), "package": sidecar.__file__}), flush=True)
    for _line in sys.stdin:
        print(json.dumps(_timed_round(extractor, cases)), flush=True)


def compare(ref: str, rounds: int) -> CompareReport:
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", ref, "sidecar"], capture_output=True, check=True
    ).stdout
    with tempfile.TemporaryDirectory(prefix="context-speed-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        # The working directory comes first on sys.path: REF's sidecar in tmp, bench from root.
        env = {**os.environ, "PYTHONPATH": str(root)}
        command = [sys.executable, "-m", "bench.context_speed", "--serve"]
        sides = {
            name: subprocess.Popen(
                command, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            for name, cwd in (("ref", tmp), ("this", str(root)))
        }
        try:
            hello = {name: json.loads(_read_line(p)) for name, p in sides.items()}
            samples: dict[str, list[list[float]]] = {"ref": [], "this": []}
            for k in range(rounds):
                # alternate who goes first, so neither always runs right after the other
                for name in ("ref", "this") if k % 2 == 0 else ("this", "ref"):
                    proc = sides[name]
                    assert proc.stdin is not None
                    proc.stdin.write("round\n")
                    proc.stdin.flush()
                    samples[name].append(json.loads(_read_line(proc)))
        finally:
            for proc in sides.values():
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(timeout=30)
    ref_s, this_s = (sorted(t for r in samples[side] for t in r) for side in ("ref", "this"))
    ref_q, this_q = (
        sorted(statistics.median(per_query) for per_query in zip(*samples[side], strict=True))
        for side in ("ref", "this")
    )
    return CompareReport(
        ref=ref,
        queries=int(hello["this"]["queries"]),
        rounds=rounds,
        ref_median_ms=statistics.median(ref_s),
        ref_p90_ms=_p90(ref_s),
        ref_p99_ms=_p99(ref_s),
        median_ms=statistics.median(this_s),
        p90_ms=_p90(this_s),
        p99_ms=_p99(this_s),
        ref_query_p99_ms=_p99(ref_q),
        query_p99_ms=_p99(this_q),
        ref_package=str(hello["ref"]["package"]),
    )


def _read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the timing process exited ({proc.wait()})")
    return line


def main(argv: list[str] | None = None) -> SpeedReport | CompareReport:
    parser = argparse.ArgumentParser(prog="python -m bench.context_speed", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="passes over the mix")
    parser.add_argument("--compare", metavar="REF", help="time against git revision REF too")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        sys.exit(0)
    report: SpeedReport | CompareReport
    report = compare(args.compare, args.rounds) if args.compare else measure(args.rounds)
    print(report.render())
    return report


if __name__ == "__main__":
    main()
