"""The evaluation replay holds its floors (CQR follow-ups and the hand-written dialogues)."""

from __future__ import annotations

from bench.context_eval import EVAL_TOPICS, EvalReport, extractor_with_topics, run_eval_async

CQR_LOCATION_FLOOR = 0.90
OWN_FLOOR = 0.95


async def _report() -> EvalReport:
    return await run_eval_async(extractor_with_topics(EVAL_TOPICS))


async def test_cqr_followups_keep_the_location() -> None:
    report = await _report()
    score = report.cqr_followup_location
    assert score.total >= 150  # every user turn from the one that names the place
    assert score.accuracy >= CQR_LOCATION_FLOOR, "\n".join(score.misses)
    assert report.cqr_rewrite_location.accuracy >= CQR_LOCATION_FLOOR
    assert report.cqr_rewrite_date.accuracy >= 0.85, "\n".join(report.cqr_rewrite_date.misses)
    assert report.cqr_completion.total == 23


async def test_own_dialogues() -> None:
    report = await _report()
    assert report.own_slots.total >= 100
    assert report.own_slots.accuracy >= OWN_FLOOR, "\n".join(report.own_slots.misses)
    assert report.own_completion.accuracy >= OWN_FLOOR, "\n".join(report.own_completion.misses)


async def test_report_renders_misses() -> None:
    report = await _report()
    text = report.render()
    assert "CQR follow-up turns: location kept" in text
    assert ("misses:" in text) == any(score.misses for _, score in report.scores())
