"""What readiness and metrics show of the outbox writer: how many turns wait for PostgreSQL, and
whether (and since when) its attempts to move them fail."""

from __future__ import annotations

import time

from ..frozen import frozen


@frozen
class WriterHealth:
    """What readiness and metrics show of the writer."""

    lag: int | None  # turns waiting for PostgreSQL; None when it could not be measured
    lag_error: str | None
    failing: bool  # the last attempt to move turns failed (and is being retried)
    error: str | None
    failing_for_s: float | None


class WriterStatus:
    """The writer's figures as they change; ``health()`` is their snapshot."""

    def __init__(self) -> None:
        self.lag: int | None = 0
        self.lag_error: str | None = None
        self.error: str | None = None
        self._failing_since: float | None = None

    def health(self) -> WriterHealth:
        since = self._failing_since
        return WriterHealth(
            lag=self.lag,
            lag_error=self.lag_error,
            failing=since is not None,
            error=self.error,
            failing_for_s=None if since is None else round(time.monotonic() - since, 3),
        )

    def failed(self, e: BaseException) -> None:
        self.error = f"{type(e).__name__}: {e}"
        if self._failing_since is None:
            self._failing_since = time.monotonic()

    def succeeded(self) -> None:
        self.error = None
        self._failing_since = None
