"""The sleeve protocol (a strategy simulated on its own clock), the imported return
stream (``strategy: returns``) and how the allocator sees a sleeve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trimtab.strategies.allocator import Allocator, AllocatorSettings, MarketState, Sleeve
from trimtab.strategies.external import (
    check_returns_params,
    read_returns_file,
    returns_from_settings,
)
from trimtab.strategies.sleeve import SleeveRun, bar_closes, covered

UTC = "UTC"


def _ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=UTC)


def test_equity_is_sampled_at_each_bar_close_from_the_last_point_at_or_before_it():
    # Hourly bars stamped with their open: the bar opening 00:00 closes at 01:00.
    opens = pd.date_range("2021-01-08 00:00", periods=4, freq="1h", tz=UTC)
    closes = bar_closes(opens, pd.Timedelta(hours=1))
    assert list(closes) == list(opens + pd.Timedelta(hours=1))
    equity = pd.Series(
        [100.0, 101.0, 99.0, 104.0, 110.0],
        index=pd.DatetimeIndex(
            [
                _ts("2021-01-08 00:30"),
                _ts("2021-01-08 01:00"),  # two points at one time: the last counts
                _ts("2021-01-08 01:00"),
                _ts("2021-01-08 02:10"),
                _ts("2021-01-08 04:00:01"),  # after the last close: never seen
            ]
        ),
    )
    run = SleeveRun(equity)
    sampled = run.equity_at(closes).to_numpy()
    assert sampled.tolist() == [99.0, 99.0, 104.0, 104.0]
    r = run.returns_at(closes).to_numpy()
    assert r == pytest.approx([0.0, 0.0, 104 / 99 - 1, 0.0], abs=1e-15)
    # Before the first point: its first value (no return).
    early = bar_closes(
        pd.date_range("2021-01-07 20:00", periods=2, freq="1h", tz=UTC), pd.Timedelta(hours=1)
    )
    assert run.equity_at(early).tolist() == [100.0, 100.0]


def test_a_bar_is_covered_when_the_data_overlaps_it():
    opens = pd.date_range("2021-01-07", periods=3, freq="1D", tz=UTC)
    day = pd.Timedelta(days=1)
    span = (_ts("2021-01-08 00:00:01"), _ts("2021-01-08 00:00:46"))
    assert covered(opens, day, span).tolist() == [False, True, False]
    assert covered(opens, day, (_ts("2021-01-07 23:00"), _ts("2021-01-09 00:00"))).tolist() == [
        True,
        True,
        True,
    ]
    assert covered(opens, day, None).tolist() == [False, False, False]


def test_an_equity_file_and_a_returns_file_give_the_same_path(tmp_path):
    (tmp_path / "eq.csv").write_text(
        "timestamp,equity\n2021-01-01,200\n2021-01-02,210\n2021-01-03,199.5\n"
    )
    (tmp_path / "r.csv").write_text("timestamp,return\n2021-01-02,0.05\n2021-01-03,-0.05\n")
    eq = read_returns_file(tmp_path / "eq.csv")
    from_returns = read_returns_file(tmp_path / "r.csv")
    # The returns file's first period starts one spacing before its first row.
    assert list(from_returns.index) == list(eq.index)
    assert (eq / eq.iloc[0]).to_numpy() == pytest.approx(from_returns.to_numpy(), rel=1e-15)
    sleeve = returns_from_settings({"file": "eq.csv", "capacity": 5e4}, tmp_path)
    run = sleeve.simulate(1000.0)
    assert run.equity.tolist() == pytest.approx([1000.0, 1050.0, 997.5])
    assert run.capacity == 5e4 and sleeve.coverage() == (eq.index[0], eq.index[-1])


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("timestamp,equity\n2021-01-01,1\n2021-01-0x,2\n", "row 3, timestamp"),
        ("timestamp,equity\n2021-01-01,1\n2021-01-02,0\n", "row 3, equity: must be a number > 0"),
        (
            "timestamp,return\n2021-01-01,0.1\n2021-01-02,-1\n",
            "row 3, return: must be a fraction > -1",
        ),
        ("timestamp,equity\n2021-01-02,1\n2021-01-01,2\n", "row 3, timestamp"),
        ("timestamp,equity,return\n2021-01-01,1,0\n", "exactly one of the columns"),
        ("time,equity\n2021-01-01,1\n", "needs a timestamp column"),
    ],
)
def test_a_bad_returns_file_names_the_row_and_column(tmp_path, text, where):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=where):
        read_returns_file(path)
    with pytest.raises(ValueError, match=r"^params\.file: .*bad\.csv"):
        returns_from_settings({"file": "bad.csv"}, tmp_path)


def test_returns_params_are_checked_by_key():
    check_returns_params({"file": "x.csv", "capacity": 10, "regimes": ["calm"]})
    for params, key in (
        ({}, "params.file: required"),
        ({"file": "x.csv", "capacity": -1}, "params.capacity"),
        ({"file": "x.csv", "regimes": ["sunny"]}, "params.regimes"),
        ({"file": "x.csv", "lever": 2}, "params.lever: not a parameter"),
    ):
        with pytest.raises(ValueError, match=key):
            check_returns_params(params)


def _market(n: int) -> MarketState:
    index = pd.date_range("2021-01-01", periods=n, freq="1D", tz=UTC)
    close = np.cumprod(np.full((n, 1), 1.001), axis=0) * 100
    return MarketState(index, close, np.full((n, 1), 1e9), np.ones((n, 1), bool), np.zeros(n), 1.0)


def test_a_sleeve_with_too_little_covered_history_keeps_its_share_and_says_why():
    n = 100
    rng = np.random.default_rng(1)
    market = _market(n)
    # "mm" has data on one bar only (like the book sample); "a" and "b" trade every bar.
    mm_cover = np.zeros(n, bool)
    mm_cover[5] = True
    sleeves = [
        Sleeve("a"),
        Sleeve("b"),
        Sleeve("mm", capacity_usdt=1e6, covered=mm_cover, history_name="bars with book data"),
    ]
    settings = AllocatorSettings(lookback=60, min_history=30, min_share=0.05, max_share=0.9)
    alloc = Allocator(settings, sleeves, market)
    k = 80
    eq = {
        "a": 40000 * np.cumprod(1 + rng.normal(0.001, 0.01, k)),
        "b": 40000 * np.cumprod(1 + rng.normal(0.0005, 0.01, k)),
        "mm": np.full(k, 20000.0),
    }
    history = {name: (e, np.zeros(k)) for name, e in eq.items()}
    now = {name: float(e[-1]) for name, e in eq.items()}
    record = alloc.allocate(market.index[k], now, history)
    mm = record["strategies"]["mm"]
    # Only the one covered bar counts: it keeps its share; no data at this bar, where it
    # holds cash, cuts it toward capacity 0, never under min_share.
    assert mm["why"].startswith("held: 1 of 30 bars with book data")
    assert "cut toward capacity 0" in mm["why"]
    total = sum(now.values())
    assert mm["share_target"] == pytest.approx(0.05)
    assert record["targets"]["mm"] == pytest.approx(0.05)
    assert sum(record["targets"].values()) == pytest.approx(1.0)
    # The excess went to the two that are ready, by their scores.
    assert record["targets"]["a"] + record["targets"]["b"] == pytest.approx(0.95)
    assert "mm " in record["summary"] and "bars with book data" in record["summary"]
    # Covered at this bar: its share is kept as it is (capacity is far above it).
    mm_cover[:] = True
    mm_cover[: k - 10] = False
    record = alloc.allocate(market.index[k], now, history)
    assert record["strategies"]["mm"]["why"] == "held: 11 of 30 bars with book data"
    assert record["targets"]["mm"] == pytest.approx(now["mm"] / total)
