"""Every benchmark runs end to end with tiny sizes and reports what it should.

No timing is asserted (the machine is shared): only that the reports hold their fields and that
every ratio is a finite positive number.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import bench.__main__ as bench_all
from bench import (
    context_eval,
    context_speed,
    history_load,
    overhead,
    restore_plan,
    sidebyside,
    upstream_client,
)
from bench.loadgen import LoadResult
from bench.stack import Stores


@pytest.fixture
def stores(redis_url: str, pg_dsn: str) -> Stores:
    return Stores(redis_url, pg_dsn)


def _finite_positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def test_context_speed(capsys: pytest.CaptureFixture[str]) -> None:
    report = context_speed.main(["--rounds", "1"])
    assert report.queries > 300
    assert _finite_positive(report.median_ms)
    assert _finite_positive(report.ratio)
    assert "ratio to baseline" in capsys.readouterr().out


def test_context_speed_against_a_git_revision(capsys: pytest.CaptureFixture[str]) -> None:
    report = context_speed.main(["--compare", "HEAD", "--rounds", "1"])
    assert isinstance(report, context_speed.CompareReport)
    assert report.queries > 300
    # the REF side really ran its own unpacked copy, not this tree
    assert "context-speed-" in report.ref_package
    assert all(
        _finite_positive(r) for r in (report.median_ratio, report.p99_ratio, report.query_p99_ratio)
    )
    assert "HEAD / this tree" in capsys.readouterr().out


def test_context_eval_through_the_sidecar(
    stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    report = context_eval.main([], stores=stores)
    assert "through the sidecar" in report.mode
    assert report.cqr_followup_location.total >= 150
    out = capsys.readouterr().out
    assert "the forwarded context has the right location in" in out


def test_context_eval_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    report = context_eval.main(["--in-process"])
    assert report.mode.startswith("in process")
    assert report.own_slots.total >= 100


def test_history_load(stores: Stores, capsys: pytest.CaptureFixture[str]) -> None:
    report = history_load.main(
        ["--sizes", "50", "500", "--loads", "5", "--http-requests", "3"], stores=stores
    )
    assert [r.messages for r in report.results] == [50, 500]
    fields = report.fields()
    for name in (
        "load_cold_ms_50",
        "load_warm_ms_500",
        "http_ms_500",
        "redis_bytes_per_cold_load_500",
        "ratio_500_to_50_cold_load",
        "ratio_500_to_50_http",
    ):
        assert _finite_positive(fields[name]), (name, fields[name])
    for value in report.ratios().values():
        assert _finite_positive(value)
    # The window is 50 messages: a load of either session sends about the same bytes.
    assert report.results[0].cold_bytes > 1000
    assert "ratio 500/50" in capsys.readouterr().out


def test_overhead(stores: Stores, capsys: pytest.CaptureFixture[str]) -> None:
    report = overhead.main(
        ["--requests", "40", "--concurrency", "4", "--warmup", "8"], stores=stores
    )
    for mode in (report.direct, report.passthrough, report.memory):
        assert mode.requests == 40
        assert mode.errors == 0, mode.name
        assert _finite_positive(mode.rps)
        assert _finite_positive(mode.p50_ms)
        assert mode.p99_ms >= mode.p50_ms
    for mode in (report.passthrough, report.memory):
        for value in report.ratios(mode).values():
            assert _finite_positive(value)
    # Only the memory path answers with the sidecar's Server-Timing header.
    assert report.direct.sidecar_median_ms is None
    assert report.memory.sidecar_median_ms is not None
    assert len(report.memory.sidecar_ms) == 40
    assert report.memory_alone.sidecar_median_ms is not None
    fields = report.fields()
    for name in ("memory_to_direct_p50", "passthrough_to_direct_rps", "memory_alone_p50_ms"):
        assert _finite_positive(fields[name]), name
    assert "c/a" in capsys.readouterr().out


def test_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    # The Python load client, as on a machine without wrk (``make bench`` prefers wrk).
    report = sidebyside.main(["--quick", "--python-client"])
    for name in sidebyside.MODES:
        mode = report.modes[name]
        assert mode.errors == 0, name
        assert _finite_positive(mode.cpu_us), name
        assert _finite_positive(mode.seq_p50_ms), name
    for name, value in report.fields().items():
        if name != "turn_seq_p50_minus_forwarder_ms":
            assert _finite_positive(value), name
    # A warm turn is one script call to load and one to commit; nothing else on its way.
    assert report.script_calls_per_turn == 2
    assert report.other_request_path_per_turn == 0
    # The turns made while PostgreSQL was frozen all waited in the outbox and were written.
    assert report.drain_messages > 0
    assert report.rss_sessions >= sidebyside.QUICK.rss_sessions
    assert "x fwd" in capsys.readouterr().out


def test_side_by_side_sets_each_run_against_the_forwarder_at_that_moment() -> None:
    # The machine slows down over a round: the forwarder's runs cost 100 µs per request, then
    # 200. A turn run at 450 µs between them is 3x the forwarder of its moment, not the 4.5x
    # (or 2.25x) the forwarder's first (or last) run alone would make it.
    def run(cpu_us: float, at: float) -> sidebyside.Run:
        return sidebyside.Run(LoadResult(1000, 0, 1.0, 1.0, 2.0), cpu_us / 1000, 0.0, at=at)

    modes = {name: sidebyside.Mode(name) for name in sidebyside.MODES}
    modes["forwarder"].loaded = [run(100, 0.0), run(200, 10.0)]
    modes["passthrough"].loaded = [run(110, 2.0)]
    modes["turn"].loaded = [run(450, 5.0)]
    report = sidebyside.SideBySide(modes, "wrk", 16, {}, {}, {}, 0, 0.0, 0.0, 0.0, 0)
    assert report.round_ratios("turn") == pytest.approx([3.0])
    assert report.ratio("passthrough") == pytest.approx(110 / 120)
    # the unpaired figure is still told: median over median
    assert report.medians_ratio("turn") == pytest.approx(450 / 150)


def test_upstream_client(capsys: pytest.CaptureFixture[str]) -> None:
    result = upstream_client.main(["--requests", "200", "--rounds", "1", "--concurrency", "4"])
    assert all(_finite_positive(result[name]) for name in ("aiohttp", "sidecar", "ratio"))
    assert "ratio" in capsys.readouterr().out


def test_restore_plan(stores: Stores, capsys: pytest.CaptureFixture[str]) -> None:
    report = restore_plan.main(
        ["--rows", "30000", "--sessions", "300", "--runs", "5"], stores=stores
    )
    assert _finite_positive(report.ratio)
    # The plan's shape (not its speed) is what the index decides: no sequential scan.
    assert report.index_scans, report.plans
    assert report.prune_rows > 0
    assert "ratio to baseline" in capsys.readouterr().out


def test_all_in_sequence_writes_the_report(stores: Stores, tmp_path: Path) -> None:
    output = tmp_path / "latest.md"
    headline = bench_all.main(["--quick"], stores=stores, output=output)
    text = output.read_text(encoding="utf-8")
    for title in (
        "context engine speed",
        "context evaluation (through the sidecar)",
        "history load against session length",
        "sidecar overhead",
        "side by side",
    ):
        assert f"## {title}" in text
    assert "CPU cores" in text
    for name, value in headline.items():
        assert _finite_positive(value), name
