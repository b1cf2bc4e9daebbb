"""``python -m bench``: every benchmark in sequence, one report on stdout and in
``bench/results/latest.md``.

Order: context engine speed, user memory speed, context evaluation (through the sidecar),
history load, overhead, side by side. One throw-away Redis and PostgreSQL serve all of them but
the last, which starts its own (it freezes PostgreSQL and reads redis-server's CPU time).
``--quick`` runs tiny sizes (a smoke run;
its figures mean little).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

from bench import context_eval, context_speed, history_load, overhead, profile_speed, sidebyside
from bench.stack import Stores, stores_or_temporary

RESULTS = Path(__file__).resolve().parent / "results" / "latest.md"


@dataclass(frozen=True, slots=True)
class Sizes:
    speed_rounds: int = 20
    profile_loads: int = 2000
    load_sizes: tuple[int, ...] = history_load.SIZES
    loads: int = 300
    load_http: int = 100
    requests: int = 2000
    concurrency: int = 16
    warmup: int = 200
    sidebyside: sidebyside.Sizes = field(default_factory=sidebyside.Sizes)


QUICK = Sizes(
    speed_rounds=1,
    profile_loads=50,
    load_sizes=(50, 500),
    loads=10,
    load_http=5,
    requests=60,
    concurrency=4,
    warmup=10,
    sidebyside=sidebyside.QUICK,
)


class Renders(Protocol):
    def render(self) -> str: ...


R = TypeVar("R", bound=Renders)


@dataclass
class Section:
    title: str
    text: str
    seconds: float


def _machine() -> str:
    return (
        f"{os.cpu_count()} CPU cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}"
    )


def run_all(
    stores: Stores, sizes: Sizes, progress: Callable[[str], None]
) -> tuple[str, dict[str, float]]:
    """Run every benchmark; return the Markdown report and the headline figures."""
    sections: list[Section] = []

    def timed(title: str, fn: Callable[[], R]) -> R:
        progress(f"running {title} ...")
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        sections.append(Section(title, result.render(), seconds))
        progress(f"  done in {seconds:.0f} s")
        return result

    speed = timed("context engine speed", lambda: context_speed.measure(sizes.speed_rounds))
    profile = timed(
        "user memory speed",
        lambda: profile_speed.measure(stores, sizes.speed_rounds, sizes.profile_loads),
    )
    evaluation = timed(
        "context evaluation (through the sidecar)",
        lambda: asyncio.run(context_eval.run_eval_through_sidecar(stores)),
    )
    loads = timed(
        "history load against session length",
        lambda: asyncio.run(
            history_load.measure(
                stores, sizes=sizes.load_sizes, loads=sizes.loads, http_requests=sizes.load_http
            )
        ),
    )
    cost = timed(
        "sidecar overhead",
        lambda: asyncio.run(
            overhead.measure(
                stores,
                requests=sizes.requests,
                concurrency=sizes.concurrency,
                warmup=sizes.warmup,
            )
        ),
    )
    side = timed("side by side", lambda: asyncio.run(sidebyside.measure(sizes.sidebyside)))

    ratios = loads.ratios()
    costs = cost.fields()
    headline = {
        "context engine median per query (ms)": speed.median_ms,
        "context engine / baseline (x)": speed.ratio,
        "user memory: extraction + lookup median per turn (ms)": profile.turn_median_ms,
        "user memory: load with profile / without (x)": profile.load_ratio,
        "CQR follow-ups: location kept (%)": 100 * evaluation.cqr_followup_location.accuracy,
        "own dialogues: slots (%)": 100 * evaluation.own_slots.accuracy,
        "own dialogues: completion (%)": 100 * evaluation.own_completion.accuracy,
        f"cold load, {loads.largest.messages}/{loads.smallest.messages} messages (x)": ratios[
            "cold_load"
        ],
        f"HTTP turn, {loads.largest.messages}/{loads.smallest.messages} messages (x)": ratios[
            "http"
        ],
        "cold load median (ms)": loads.smallest.cold_ms,
        "Redis bytes per cold load": loads.smallest.cold_bytes,
        "pass-through p50 / direct p50 (x)": costs["passthrough_to_direct_p50"],
        "memory path p50 / direct p50 (x)": costs["memory_to_direct_p50"],
        "memory path req/s / direct req/s (x)": costs["memory_to_direct_rps"],
        "memory path Server-Timing median (ms)": costs["memory_sidecar_dur_median_ms"],
        **side.headline(),
    }
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Session Sidecar benchmarks",
        "",
        f"{stamp}; {_machine()}. Speed figures are ratios against a baseline measured in the",
        "same run; absolute figures depend on the machine and what else it was doing.",
        "",
        "| figure | value |",
        "| --- | ---: |",
    ]
    lines += [f"| {name} | {value:.2f} |" for name, value in headline.items()]
    for section in sections:
        lines += ["", f"## {section.title} ({section.seconds:.0f} s)", "", "```", section.text]
        lines += ["```"]
    return "\n".join(lines) + "\n", headline


def main(
    argv: list[str] | None = None, stores: Stores | None = None, output: Path | None = None
) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--output", type=Path, default=output or RESULTS)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    with stores_or_temporary(stores) as made:
        report, headline = run_all(made, sizes, progress)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report, encoding="utf-8")
    print(report)
    print(f"written to {args.output}", file=sys.stderr)
    return headline


if __name__ == "__main__":
    main()
