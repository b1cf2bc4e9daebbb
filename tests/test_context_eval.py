"""The evaluation replay holds its floors, played through the running sidecar over HTTP (the
forwarded body is what is scored) and, for comparison, through the engine alone."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from bench.context_eval import (
    DIALOGUES,
    EVAL_TOPICS,
    HELD_OUT,
    WRITTEN,
    EvalReport,
    extractor_with_topics,
    load_cqr,
    run_eval_async,
    run_eval_through_sidecar,
)
from bench.stack import Stores
from sidecar.context.script import to_simplified
from sidecar.devservices import TemporaryPostgres, TemporaryRedis

CQR_LOCATION_FLOOR = 0.98
OWN_FLOOR = 0.98
HELD_OUT_FLOOR = 0.95


@pytest.fixture(scope="module")
async def sidecar_report(
    redis_server: TemporaryRedis, postgres_server: TemporaryPostgres
) -> AsyncIterator[EvalReport]:
    """One replay through the sidecar for the whole module (its keys are under their own prefix)."""
    await redis_server.ensure_running()
    await postgres_server.ensure_running()
    name = f"t_{uuid.uuid4().hex}"
    dsn = await postgres_server.create_database(name)
    try:
        yield await run_eval_through_sidecar(Stores(redis_server.url, dsn))
    finally:
        await postgres_server.drop_database(name)


def test_the_written_set_is_large_and_varied() -> None:
    """At least 150 user turns written for the second edition, 40 of them kept aside, in
    Simplified and Traditional Chinese, English and mixed messages."""
    turns = [q for d in WRITTEN + HELD_OUT for q, _, _ in d.turns]
    assert len(turns) >= 150
    assert sum(len(d.turns) for d in HELD_OUT) >= 40
    han = [q for q in turns if any("\u4e00" <= ch <= "\u9fff" for ch in q)]
    traditional = [q for q in han if to_simplified(q) != q]
    mixed = [q for q in han if any(ch.isascii() and ch.isalpha() for ch in q)]
    assert len(traditional) >= 20
    assert len(mixed) >= 5
    assert len(turns) - len(han) >= 50


def _assert_floors(report: EvalReport) -> None:
    score = report.cqr_followup_location
    assert score.total >= 150  # every user turn from the one that names the place
    assert score.accuracy >= CQR_LOCATION_FLOOR, "\n".join(score.misses)
    assert report.cqr_rewrite_location.accuracy >= CQR_LOCATION_FLOOR
    assert report.cqr_rewrite_date.accuracy >= 0.85, "\n".join(report.cqr_rewrite_date.misses)
    assert report.cqr_completion.total == 23
    assert report.cqr_completion.accuracy >= OWN_FLOOR, "\n".join(report.cqr_completion.misses)
    assert report.own_slots.total >= 300
    assert report.own_checks.accuracy >= OWN_FLOOR, "\n".join(report.own_checks.misses)
    assert report.held_out_checks.total >= 100
    assert report.held_out_checks.accuracy >= HELD_OUT_FLOOR, "\n".join(
        report.held_out_checks.misses
    )


async def test_floors_through_the_sidecar(sidecar_report: EvalReport) -> None:
    assert "through the sidecar" in sidecar_report.mode
    _assert_floors(sidecar_report)


async def test_floors_in_process() -> None:
    _assert_floors(await run_eval_async(extractor_with_topics(EVAL_TOPICS)))


async def test_sidecar_and_engine_agree(sidecar_report: EvalReport) -> None:
    """What the backend receives is what the engine decides: the sidecar loses nothing between."""
    alone = await run_eval_async(extractor_with_topics(EVAL_TOPICS))
    for (label, through), (_, engine) in zip(sidecar_report.scores(), alone.scores(), strict=True):
        assert through.misses == engine.misses, label


async def test_annotate_mode_reports_the_completion(redis_url: str, pg_dsn: str) -> None:
    # A few dialogues are enough to see ``context.resolved_query`` scored like ``query``.
    report = await run_eval_through_sidecar(
        Stores(redis_url, pg_dsn), rewrite="annotate", cqr=load_cqr()[:10], dialogues=DIALOGUES[:8]
    )
    assert "annotate" in report.mode
    assert report.own_completion.total > 0
    assert report.own_completion.accuracy == 1.0, "\n".join(report.own_completion.misses)


def test_report_renders_the_key_figure_and_misses(sidecar_report: EvalReport) -> None:
    text = sidecar_report.render()
    assert "CQR follow-up turns: location kept" in text
    assert "the forwarded context has the right location in" in text
    assert ("misses:" in text) == any(score.misses for _, score in sidecar_report.scores())
