"""Today's date in the user's time zone: what "明天" and "tomorrow" count from."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from sidecar.context import clock
from sidecar.context.clock import today_in


@pytest.mark.parametrize("zone", ["UTC", "Asia/Shanghai", "Pacific/Kiritimati", "Etc/GMT+12"])
def test_today_is_the_date_on_the_users_wall_clock(zone: str) -> None:
    before = datetime.now(ZoneInfo(zone)).date()
    found = today_in(zone, None)
    after = datetime.now(ZoneInfo(zone)).date()
    assert found in (before, after)


def test_the_date_turns_at_local_midnight_not_at_utc_midnight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Shanghai's midnight is 16:00 UTC: the seconds either side of it are in one UTC hour.
    clock._TODAY.clear()
    seconds = iter(datetime(2026, 3, 4, 15, 59, s, tzinfo=UTC).timestamp() for s in (0, 30, 59))
    monkeypatch.setattr(clock.time, "time", lambda: next(seconds))
    assert [today_in("Asia/Shanghai", None) for _ in range(3)] == [date(2026, 3, 4)] * 3
    later = iter([datetime(2026, 3, 4, 16, 0, 1, tzinfo=UTC).timestamp()])
    monkeypatch.setattr(clock.time, "time", lambda: next(later))
    assert today_in("Asia/Shanghai", None) == date(2026, 3, 5)


def test_a_daylight_saving_change_moves_the_local_date_on_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # New York at 23:30 on the evening before and after the clocks go forward (8 March 2026).
    clock._TODAY.clear()
    for moment, local in [
        (datetime(2026, 3, 8, 4, 30, tzinfo=UTC), date(2026, 3, 7)),  # 23:30 EST
        (datetime(2026, 3, 8, 5, 30, tzinfo=UTC), date(2026, 3, 8)),  # 00:30 EST
        (datetime(2026, 3, 9, 3, 30, tzinfo=UTC), date(2026, 3, 8)),  # 23:30 EDT
        (datetime(2026, 3, 9, 4, 30, tzinfo=UTC), date(2026, 3, 9)),  # 00:30 EDT
    ]:
        monkeypatch.setattr(clock.time, "time", lambda m=moment: m.timestamp())
        assert today_in("America/New_York", None) == local, moment


def test_a_given_moment_wins_and_a_naive_one_is_utc() -> None:
    assert today_in("Asia/Shanghai", datetime(2026, 3, 4, 16, 30)) == date(2026, 3, 5)
    assert today_in("Asia/Shanghai", datetime(2026, 3, 4, 15, 30, tzinfo=UTC)) == date(2026, 3, 4)
    assert today_in("Not/AZone", datetime(2026, 3, 4, 23, 30)) == date(2026, 3, 4)
