"""The process's shutdown state: requests in flight (counted by the observer's middleware), the
shutdown budget, and the drain that waits for requests before the listener closes."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

DRAIN_POLL_S = 0.05


@dataclass(slots=True)
class Lifecycle:
    started: bool = False  # routes added, gazetteer loaded: requests can be served
    shutting_down: bool = False
    in_flight: int = 0  # requests being handled, counted by the observer's middleware
    shutdown_deadline: float | None = None  # monotonic time by which everything must be done

    def begin_shutdown(self, budget_s: float) -> None:
        self.shutting_down = True
        self.shutdown_deadline = time.monotonic() + budget_s

    def remaining_s(self, default: float, floor: float = 1.0) -> float:
        """What is left of the shutdown budget (at least ``floor``)."""
        if self.shutdown_deadline is None:
            return default
        return max(self.shutdown_deadline - time.monotonic(), floor)


async def drain(lifecycle: Lifecycle, timeout_s: float) -> None:
    """Keep listening until no request is in flight, or for ``timeout_s``.

    Meanwhile a load balancer probing readiness gets its 503 (and a request it still sends is
    served) rather than a refused connection.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while lifecycle.in_flight:
        if loop.time() >= deadline:
            log.warning("drain timed out with %d request(s) in flight", lifecycle.in_flight)
            return
        await asyncio.sleep(DRAIN_POLL_S)
