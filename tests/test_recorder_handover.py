"""A turn's commit runs in its request's own task. If that task is cancelled mid-commit (a
shutdown past its grace), the commit is sent again from a task the recorder owns, and the
shutdown's ``drain`` waits for it; once ``drain`` has given up, nothing more is started.

A pure unit: the session service is a stand-in whose commit waits until the test lets it end,
and counts the commits sent. What stores do with a commit sent twice (keep the turn once) is
shown against real servers by the SIGTERM test in ``test_faults.py``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from sidecar.metrics import Metrics
from sidecar.session.manager import Recorded
from sidecar.session.model import SessionKey, Turn, Usage
from sidecar.turns.capture import Answer
from sidecar.turns.prepare import Question
from sidecar.turns.recorder import TurnRecorder

KEY = SessionKey("tenant-a", "s-1")


class HeldCommits:
    """Commits that end when ``release`` is set; ``sent`` counts the commits begun."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.sent: list[Turn] = []
        self.kept: list[Turn] = []

    async def commit(self, turn: Turn) -> Recorded:
        self.sent.append(turn)
        await self.release.wait()
        self.kept.append(turn)
        return Recorded(True)


def recorder_with(commits: HeldCommits) -> TurnRecorder:
    return TurnRecorder(commits, Metrics())  # type: ignore[arg-type]


def question() -> Question:
    return Question(KEY, "and tomorrow?", {}, None, "2026-11-30T09:00:00.000Z")


ANSWER = Answer("Sunny.", Usage(3, 2, 5, "m"))


async def until(condition: Any) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_a_request_cancelled_mid_commit_hands_the_same_turn_to_an_owned_commit() -> None:
    commits = HeldCommits()
    recorder = recorder_with(commits)
    request = asyncio.create_task(recorder.record(question(), ANSWER, []))
    await until(lambda: len(commits.sent) == 1)
    assert recorder.in_flight == 1  # awaited by its request

    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    # Sent again, the same turn (so the store keeps it once), by a task the recorder owns.
    assert len(commits.sent) == 2
    assert commits.sent[1] is commits.sent[0]
    assert recorder.in_flight == 1

    draining = asyncio.create_task(recorder.drain(5.0))
    await until(lambda: recorder.in_flight == 1 and not draining.done())
    commits.release.set()
    await asyncio.wait_for(draining, 5)
    assert recorder.in_flight == 0
    assert commits.kept == [commits.sent[0]]  # the cancelled send never ended; the other did


async def test_drain_waits_for_a_commit_its_request_still_awaits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The request is still running (not cancelled yet) when the shutdown begins to wait."""
    commits = HeldCommits()
    recorder = recorder_with(commits)
    request = asyncio.create_task(recorder.record(question(), ANSWER, []))
    await until(lambda: len(commits.sent) == 1)
    caplog.set_level(logging.INFO, logger="sidecar.turns.recorder")
    draining = asyncio.create_task(recorder.drain(5.0))
    await until(lambda: "waiting for 1 commit(s) in flight" in caplog.text or draining.done())
    assert not draining.done(), "drain returned with a commit in flight"
    commits.release.set()
    assert await request is True
    await asyncio.wait_for(draining, 5)
    assert len(commits.sent) == 1


async def test_a_recording_task_counts_its_commit_once(caplog: pytest.LogCaptureFixture) -> None:
    commits = HeldCommits()
    recorder = recorder_with(commits)
    recording = recorder.start(question(), ANSWER, [])
    await until(lambda: len(commits.sent) == 1)
    assert recorder.in_flight == 1
    caplog.set_level(logging.INFO, logger="sidecar.turns.recorder")
    draining = asyncio.create_task(recorder.drain(5.0))
    await until(lambda: "waiting for" in caplog.text)
    assert "waiting for 1 commit(s) in flight" in caplog.text
    commits.release.set()
    await asyncio.wait_for(draining, 5)
    assert await recording is True


async def test_once_drain_has_given_up_a_cancelled_commit_is_not_sent_again() -> None:
    """A recording task outlasting the drain is cancelled mid-commit: nothing takes its place
    (the stores are about to close)."""
    commits = HeldCommits()
    recorder = recorder_with(commits)
    recording = recorder.start(question(), ANSWER, [])
    await until(lambda: len(commits.sent) == 1)
    await asyncio.wait_for(recorder.drain(0.05), 5)
    assert recording.cancelled()
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(commits.sent) == 1
    assert recorder.in_flight == 0
    assert commits.kept == []
