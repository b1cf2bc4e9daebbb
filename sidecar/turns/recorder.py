"""Recording turns: build the turn from its question and answer, commit it so that nothing
that becomes of the request cuts it in half, and own the commits in flight so a shutdown can
wait for them before the stores close."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from .. import tracing
from ..context import estimate_tokens
from ..errors import StoreUnavailable
from ..inputs import storable_text
from ..metrics import Metrics
from ..session.manager import Recorded, SessionService
from ..session.model import Turn, new_message
from .capture import Answer
from .prepare import Asked, Question

log = logging.getLogger(__name__)

T = TypeVar("T")

# How often a shutdown waiting for commits says it still does.
PROGRESS_EVERY_S = 1.0
# How often it looks again while the commits left are awaited by their requests.
HANDOVER_POLL_S = 0.01


def usage_or_estimate(reported: int | None, text: str) -> int:
    return reported if reported is not None else estimate_tokens(text)


def build_turn(question: Question, answer: Answer) -> Turn:
    """The turn to commit: the question's half (``Asked``, made ahead or now) and the answer's,
    whose texts are made ``storable`` here too, before the commit that acknowledges the turn."""
    asked = question.asked or Asked.of(question)
    text = storable_text(answer.text)
    assistant = new_message(
        "assistant",
        text,
        usage_or_estimate(answer.usage.completion_tokens or None, text),
        message_id=asked.assistant_id,
    )
    usage = answer.usage
    if (model := storable_text(usage.model)) != usage.model:
        usage = dataclasses.replace(usage, model=model)
    return Turn(
        turn_id=asked.turn_id,
        key=question.key,
        user=asked.user,
        assistant=assistant,
        usage=usage,
        context_patch=asked.context_patch,
        idempotency_key=question.idempotency_key,
        partial=answer.partial,
        user_id=question.user_id,
        profile_owner=question.profile_owner,
        profile_patch=question.profile_patch,
    )


class TurnRecorder:
    """Commits turns whatever becomes of the request, and waits for them at shutdown."""

    def __init__(self, sessions: SessionService, metrics: Metrics) -> None:
        self.sessions = sessions
        self.metrics = metrics
        # Work running as tasks of its own; referenced so none is collected mid-way, awaited by
        # ``drain``.
        self._in_flight: set[asyncio.Task[Any]] = set()
        # Commits awaited by their requests themselves (see ``_commit``).
        self._committing = 0
        self._given_up = False  # ``drain`` ran out of time: nothing more is started

    @property
    def in_flight(self) -> int:
        return len(self._in_flight) + self._committing

    async def record(self, question: Question, answer: Answer, degraded: list[str]) -> bool:
        """Record one turn; False when no store took it (``unrecorded`` is added to ``degraded``)."""
        turn = build_turn(question, answer)
        try:
            with tracing.span("commit"):
                result = await self._commit(turn)
        except StoreUnavailable:
            degraded.append("unrecorded")
            return False
        except Exception:
            # The client has its answer already; a failure to remember it must not cost it.
            key = question.key
            log.exception("turn of %s/%s not recorded", key.tenant, key.session_id)
            degraded.append("unrecorded")
            return False
        if result.degraded:
            degraded.append(result.degraded)
            self.metrics.degraded.labels(result.degraded).inc()
        return True

    async def _commit(self, turn: Turn) -> Recorded:
        """Commit ``turn`` in the request's own task, not under a shield: a task and a shield
        for every commit cost about 4 % of a turn's instructions, and a request is rarely
        cancelled (a client going away does not cancel it; a shutdown does, past its grace). If
        it is cancelled mid-commit, the commit is sent again from a task of its own, which
        ``drain`` waits for. A commit is idempotent (the script keeps a turn once, by its id or the
        client's ``Idempotency-Key``), so the turn is kept once whether the first send went
        through or not."""
        counted = asyncio.current_task() not in self._in_flight  # (an owned task is counted)
        self._committing += counted
        try:
            return await self.sessions.commit(turn)
        except asyncio.CancelledError:
            if not self._given_up:
                self.own(self.sessions.commit(turn))
            raise
        finally:
            self._committing -= counted

    def start(self, question: Question, answer: Answer, degraded: list[str]) -> asyncio.Task[bool]:
        """Begin recording a turn now, from code that cannot wait (a stream's reader); the task
        is owned here (``drain`` waits for it) and may be awaited later."""
        return self.own(self.record(question, answer, degraded))

    def own(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` as a task of its own that ``drain`` waits for at shutdown."""
        task = asyncio.get_running_loop().create_task(coro)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return task

    async def shielded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to its end even if the caller is cancelled; ``drain`` waits for it."""
        return await asyncio.shield(self.own(coro))

    async def drain(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) for the work in flight, saying so every second; what is
        left then is cancelled."""
        if not self.in_flight:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        log.info("waiting for %d commit(s) in flight", self.in_flight)
        while self.in_flight and (left := deadline - loop.time()) > 0:
            if self._in_flight:
                await asyncio.wait(set(self._in_flight), timeout=min(left, PROGRESS_EVERY_S))
            else:
                # Awaited by requests: they end, or, cancelled, hand their commits over to tasks.
                await asyncio.sleep(min(left, HANDOVER_POLL_S))
                continue
            if self.in_flight and loop.time() < deadline:
                log.info("still waiting for %d commit(s) in flight", self.in_flight)
        self._given_up = True
        pending = set(self._in_flight)
        if pending:
            log.warning("%d commit(s) still in flight at shutdown: cancelled", len(pending))
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)
