"""The outbox writer's retry policies (tenacity) and what each retry reports.

A failing cycle and a PostgreSQL outage are retried with backoff until they pass or the writer
stops (the entries are safe in Redis meanwhile); an entry that fails for a data reason is retried
a bounded number of times, at once, before it is dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
    wait_none,
)

from ..errors import StoreError, StoreUnavailable
from ..lease import ConsumerNameInUse
from ..metrics import Metrics
from ..store.client import REDIS_ERRORS
from .status import WriterStatus

log = logging.getLogger(__package__)  # one logger for the whole writer

# Failures of either store: the writer backs off and tries again.
STORE_ERRORS: tuple[type[BaseException], ...] = (*REDIS_ERRORS, StoreError)


class WriterRetries:
    def __init__(
        self,
        stop: asyncio.Event,
        sleep: Callable[[float], Awaitable[None]],
        status: WriterStatus,
        metrics: Metrics,
        max_data_attempts: int,
    ) -> None:
        self._stop = stop
        self._sleep = sleep
        self.status = status
        self.metrics = metrics
        self.max_data_attempts = max_data_attempts

    def _stopping(self, _state: RetryCallState | None = None) -> bool:
        return self._stop.is_set()

    def cycle(self) -> AsyncRetrying:
        """One read-and-write cycle: retried with backoff until one succeeds (which resets the
        backoff) or the writer is stopped, when it ends without raising."""
        return AsyncRetrying(
            stop=self._stopping,
            wait=wait_exponential_jitter(multiplier=0.1, max=5.0, jitter=0.1),
            retry=retry_if_exception_type(Exception),
            before_sleep=self._log_cycle_failure,
            sleep=self._sleep,
            retry_error_callback=lambda _state: None,
        )

    def _log_cycle_failure(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.upcoming_sleep
        if exc is not None:
            self.status.failed(exc)
        if isinstance(exc, ConsumerNameInUse):
            log.error("writer: %s; not consuming, retrying in %.1fs", exc, wait)
        elif isinstance(exc, STORE_ERRORS):
            log.warning("writer: %s: %s; retrying in %.1fs", type(exc).__name__, exc, wait)
        else:
            # A bug must not silently end the only thing that moves turns to PostgreSQL:
            # the entries stay pending in Redis, so log loudly and keep going.
            log.error("writer: unexpected error; retrying in %.1fs", wait, exc_info=exc)

    def outage(self) -> AsyncRetrying:
        """A PostgreSQL write while PostgreSQL is unavailable: retried until it answers or the
        writer stops (then the outage is raised)."""
        return AsyncRetrying(
            stop=self._stopping,
            wait=wait_exponential_jitter(multiplier=0.1, max=5.0, jitter=0.5),
            retry=retry_if_exception_type(StoreUnavailable),
            before_sleep=self._log_retry,
            reraise=True,
        )

    def _log_retry(self, state: RetryCallState) -> None:
        self.metrics.writer_retries.labels("postgres").inc()
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None:
            self.status.failed(exc)
        log.warning(
            "writer: PostgreSQL write failed (%s), attempt %d; retrying",
            type(exc).__name__,
            state.attempt_number,
        )

    def data_errors(self) -> AsyncRetrying:
        """Whatever is not a passing outage is about the entry: a bounded number of attempts."""
        return AsyncRetrying(
            # Not cut short by a shutdown: the attempts follow each other at once, and stopping
            # early would dead-letter an entry that was never given its chances.
            stop=stop_after_attempt(self.max_data_attempts),
            wait=wait_none(),
            retry=retry_if_not_exception_type(StoreUnavailable),
            reraise=True,
        )
