"""The circuit breaker in front of Redis: after repeated failures, callers skip Redis without
waiting, and one probe at a time finds out whether it is back."""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    """Counts consecutive Redis failures; while open, callers skip Redis without waiting.

    Closed: every call goes through. Open (after ``failures`` in a row, or one timeout): calls
    are skipped for ``reset_s``. Half-open (after that): exactly one caller goes through as the
    probe while the others keep skipping; its success closes the breaker, its failure opens it
    for another ``reset_s``.
    """

    def __init__(
        self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = failures
        self.reset_s = reset_s
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False
        self.on_close: list[Callable[[], None]] = []

    @property
    def is_open(self) -> bool:
        """Open or half-open: Redis is being skipped (all but one probe)."""
        return self.opened_at is not None

    def allow(self) -> bool:
        """Whether this call may go to Redis; in the half-open state, True for one caller only."""
        if self.opened_at is None:
            return True
        if self.probing or self.clock() - self.opened_at < self.reset_s:
            return False
        self.probing = True
        return True

    def success(self) -> bool:
        """Record a success; returns True when this closed a breaker that had opened."""
        was_open = self.opened_at is not None
        self.failures = 0
        self.opened_at = None
        self.probing = False
        return was_open

    def failure(self, *, timed_out: bool = False) -> None:
        """A timeout opens the breaker at once: a hung Redis must cost a request one timeout,
        not one per call. A failed probe opens it again for a full ``reset_s``."""
        self.failures += 1
        if timed_out or self.failures >= self.threshold or self.opened_at is not None:
            self.opened_at = self.clock()
        self.probing = False

    def release(self) -> None:
        """The probe ended without telling whether Redis is healthy (Redis refused the call,
        or the caller was cancelled): the next caller probes instead."""
        self.probing = False
