"""Redis's clock as seen from this process, the one clock every replica shares."""

from __future__ import annotations

import time


class RedisClock:
    """Redis's clock, as seen from this process: the one clock all replicas share.

    Deletion tombstones are compared with the time a turn was asked; stamped by each replica's
    own clock, two replicas' skew would decide whether a turn resurrects a deleted session. The
    offset to Redis ``TIME`` is measured on every ``sync_clock`` (at start and about once a
    second) and applied to local readings, so times are Redis's within half a round trip; while
    Redis is away the last offset measured is used.
    """

    def __init__(self) -> None:
        self.offset_ms = 0.0

    def observe(self, redis_ms: float, sent_ms: float, received_ms: float) -> None:
        self.offset_ms = redis_ms - (sent_ms + received_ms) / 2

    def now_ms(self) -> int:
        return int(time.time() * 1000 + self.offset_ms)

    def to_redis_ms(self, local_ms: int) -> int:
        return int(local_ms + self.offset_ms)
