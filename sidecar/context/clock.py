"""Today's date in a user's time zone, worked out once a minute per zone rather than per turn."""

from __future__ import annotations

import functools
import time
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# zone name -> (the UTC minute the date was worked out in, that date). Zone offsets and their
# changes (daylight saving) fall on whole minutes, so a local date cannot change inside one
# UTC minute: every turn of that minute shares one conversion.
_TODAY: dict[str, tuple[int, date]] = {}
_ZONES = 256  # names kept at most; a deployment serves a few
_AT: dict[tuple[str, datetime], date] = {}  # (zone, given moment) -> its date, as many at most


def today_in(timezone: str, now: datetime | None) -> date:
    """The calendar date in ``timezone`` at ``now`` (naive ``now`` is taken as UTC; none: the
    current time)."""
    if now is not None:
        # A moment given by the caller (a pinned clock, a replay) recurs turn after turn: the
        # date of each (zone, moment) is worked out once. Equal moments are the same instant
        # (an aware and a naive one are never equal), so they share a local date.
        key = (timezone, now)
        day = _AT.get(key)
        if day is None:
            moment = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
            day = moment.astimezone(_zone(timezone)).date()
            if len(_AT) >= _ZONES:
                _AT.clear()
            _AT[key] = day
        return day
    stamp = time.time()  # the clock datetime.now() reads
    minute = int(stamp // 60)
    cached = _TODAY.get(timezone)
    if cached is not None and cached[0] == minute:
        return cached[1]
    day = datetime.fromtimestamp(stamp, _zone(timezone)).date()
    if len(_TODAY) >= _ZONES:
        _TODAY.clear()
    _TODAY[timezone] = (minute, day)
    return day


@functools.lru_cache(maxsize=64)
def _zone(timezone: str) -> ZoneInfo:
    # A deployment serves a few time zones: each name is resolved once.
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")
