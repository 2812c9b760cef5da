"""The daily turnover's day: a UTC day, whatever the timestamp's zone or type."""

from __future__ import annotations

import pandas as pd

from trimtab.guard.limits import DailyTurnover


def test_turnover_restarts_at_each_utc_midnight_only():
    t = DailyTurnover()
    day = pd.Timestamp("2024-03-01", tz="UTC")
    t.record(day, 100.0)
    t.record(day + pd.Timedelta(hours=23, minutes=59, seconds=59, nanoseconds=999), 50.0)
    assert t.today(day + pd.Timedelta(hours=12)) == 150.0
    # The next midnight, given in another zone (01:00 in Paris) or naive: a new day.
    paris = (day + pd.Timedelta(days=1)).tz_convert("Europe/Paris")
    assert t.today(paris) == 0.0
    t.record(paris, 7.0)
    assert t.today(day + pd.Timedelta(days=1, hours=5)) == 7.0
    assert t.today(pd.Timestamp("2024-03-02 23:00")) == 7.0  # naive: taken as UTC
    # 23:30 in Paris on the 2nd is still the 2nd in UTC (22:30).
    assert t.today(pd.Timestamp("2024-03-02 23:30", tz="Europe/Paris")) == 7.0
    assert t.today(pd.Timestamp("2024-03-03", tz="UTC")) == 0.0
    assert t.day == pd.Timestamp("2024-03-03", tz="UTC")


def test_turnover_restored_day_is_read_as_the_same_day():
    t = DailyTurnover()
    t.record(pd.Timestamp("2024-03-01 10:00", tz="UTC"), 40.0)
    u = DailyTurnover()
    u.restore(t.state())
    assert u.today(pd.Timestamp("2024-03-01 20:00", tz="UTC")) == 40.0
    assert u.today(pd.Timestamp("2024-03-02 00:00", tz="UTC")) == 0.0
