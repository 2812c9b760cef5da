"""Buffered universes (issue 13, part 5): enter at rank N, leave past rank M or after a
minimum stay; hand-worked rank tables, causality, delisting, the text syntax, and the
membership changes it saves on the real daily file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trimtab.data import DataError, load_panel, parse_universe, select_universe
from trimtab.data.universe import UniverseSpec, buffered_membership, rebalance_mask

from ._support import REAL_DATA

NAN = np.nan


def table(rows: list[list[float]], columns: str = "ABC") -> pd.DataFrame:
    index = pd.date_range("2021-01-01", periods=len(rows), freq="D", tz="UTC")
    return pd.DataFrame(rows, index=index, columns=list(columns[: len(rows[0])]))


def members(u: pd.DataFrame) -> list[str]:
    """Each bar's members as a string, e.g. ['A', 'AB', '']."""
    return ["".join(c for c in u.columns if u.loc[t, c]) for t in u.index]


def test_exit_rank_keeps_a_member_until_past_it():
    ranks = table([[1, 2, 3], [2, 1, 3], [3, 1, 2], [1, 3, 2]])
    # by hand, enter at 1, leave past 2:
    # bar 0: A (rank 1) enters. bar 1: A at 2 stays, B at 1 enters.
    # bar 2: A at 3 leaves; C at 2 may not enter. bar 3: B at 3 leaves, A at 1 enters.
    assert members(buffered_membership(ranks, 1, 2)) == ["A", "AB", "B", "A"]
    # no buffer: the plain top 1
    assert members(buffered_membership(ranks, 1, 1)) == ["A", "B", "B", "A"]
    # the buffer as wide as the universe: nobody ever leaves
    assert members(buffered_membership(ranks, 1, 3)) == ["A", "AB", "AB", "AB"]


def test_min_stay_holds_a_member_that_fell_out():
    ranks = table([[1, 2], [2, 1], [2, 1], [1, 2], [2, 1]])
    # enter and leave at 1, stay at least 2 bars:
    # bar 0: A enters (bar 0). bar 1: A at 2 but a member for 1 bar only: stays; B enters.
    # bar 2: A a member for 2 bars, at 2: leaves. bar 3: B (2 bars) at 2 leaves, A enters.
    # bar 4: A a member for 1 bar stays, B enters again.
    got = buffered_membership(ranks, 1, 1, min_stay=2)
    assert members(got) == ["A", "AB", "B", "A", "AB"]
    # a long stay holds both from their entry on
    assert members(buffered_membership(ranks, 1, 1, min_stay=10)) == ["A", "AB", "AB", "AB", "AB"]


def test_exit_and_stay_must_both_allow_leaving():
    ranks = table([[1, 2, 3], [3, 1, 2], [3, 1, 2], [3, 1, 2]])
    # enter 1, exit 2, stay 2: A falls to 3 at bar 1 (a member 1 bar: stays), leaves at bar 2
    assert members(buffered_membership(ranks, 1, 2, min_stay=2)) == ["A", "AB", "B", "B"]
    # A at rank 2 instead never passes the exit rank: it stays whatever its stay
    ranks2 = table([[1, 2, 3], [2, 1, 3], [2, 1, 3], [2, 1, 3]])
    assert members(buffered_membership(ranks2, 1, 2, min_stay=2)) == ["A", "AB", "AB", "AB"]


def test_ranks_are_read_only_at_reselection_bars():
    ranks = table([[1, 2], [2, 1], [2, 1], [2, 1], [1, 2]])
    at = np.array([True, False, False, True, False])
    # top 1 re-ranked on bars 0 and 3 only: A held through bar 2, B from bar 3 on
    assert members(buffered_membership(ranks, 1, 1, reselect=at)) == ["A", "A", "A", "B", "B"]


def test_a_delisted_member_leaves_at_once_and_counts_as_new():
    ranks = table([[1, 2], [2, 1], [NAN, 1], [2, 1], [1, 2]])
    # enter 1, exit 2, stay 100: A would stay forever, but it is unlisted on bar 2.
    # On bar 3 it is back at rank 2: not good enough to enter again; at 1 on bar 4 it is.
    got = buffered_membership(ranks, 1, 2, min_stay=100)
    assert members(got) == ["A", "AB", "B", "B", "AB"]
    # the same with an explicit live mask and no reselection on the bar it died
    live = ranks.notna()
    at = np.array([True, True, False, True, True])
    got = buffered_membership(ranks.fillna(1), 1, 2, min_stay=100, live=live, reselect=at)
    assert members(got) == ["A", "AB", "B", "B", "AB"]


def test_unranked_but_listed_counts_as_past_the_exit():
    inf = np.inf
    ranks = table([[1, 2], [inf, 1], [inf, 1]])
    assert members(buffered_membership(ranks, 1, 2)) == ["A", "B", "B"]
    assert members(buffered_membership(ranks, 1, 2, min_stay=2)) == ["A", "AB", "B"]


def test_buffered_membership_is_causal():
    rng = np.random.default_rng(7)
    n, k = 120, 12
    ranks = np.argsort(rng.normal(size=(n, k)).cumsum(axis=0), axis=1).argsort(axis=1) + 1.0
    ranks[rng.random((n, k)) < 0.03] = np.nan  # a few bars unlisted
    frame = pd.DataFrame(ranks, index=pd.date_range("2021-01-01", periods=n, tz="UTC"))
    at = rebalance_mask(frame.index, "weekly")
    full = buffered_membership(frame, 3, 6, min_stay=10, reselect=at)
    for cut in (5, 40, 77, 119):
        part = buffered_membership(frame.iloc[:cut], 3, 6, min_stay=10, reselect=at[:cut])
        pd.testing.assert_frame_equal(part, full.iloc[:cut])
    assert full.to_numpy().sum() > 0
    # never a member on an unlisted bar
    assert not (full & frame.isna()).any().any()


def test_buffered_membership_rejects_bad_ranks_arguments():
    ranks = table([[1, 2]])
    with pytest.raises(DataError, match="exit rank 1 is below the entry rank 2"):
        buffered_membership(ranks, 2, 1)
    with pytest.raises(DataError, match="entry rank must be a whole number >= 1"):
        buffered_membership(ranks, 0, 1)
    with pytest.raises(DataError, match="minimum stay must be a whole number of bars"):
        buffered_membership(ranks, 1, 1, min_stay=-1)
    with pytest.raises(DataError, match="reselect has 2 bars, ranks 1"):
        buffered_membership(ranks, 1, 1, reselect=np.array([True, False]))


def _reference(panel, top: int, exit_rank: int, min_stay: int, lookback: int = 30):
    """A second, per-symbol implementation (sets, dates) of select_universe's buffer."""
    score = panel.quote_volume.rolling(lookback, min_periods=1).mean()
    live = panel.live
    at = set(panel.index[rebalance_mask(panel.index, "monthly")])
    held: dict[str, int] = {}  # member -> bar of entry
    out = pd.DataFrame(False, index=panel.index, columns=panel.symbols)
    for i, t in enumerate(panel.index):
        held = {s: e for s, e in held.items() if live.loc[t, s]}
        if t in at:
            ok = score.loc[t][live.loc[t] & score.loc[t].notna()]
            # highest score first, ties to the alphabetically first symbol
            order = sorted(ok.index, key=lambda s: (-ok[s], s))
            rank = {s: r + 1 for r, s in enumerate(order)}
            held = {
                s: e for s, e in held.items() if rank.get(s, 10**9) <= exit_rank or i - e < min_stay
            }
            for s in order[:top]:
                held.setdefault(s, i)
        out.loc[t, list(held)] = True
    return out


@pytest.mark.parametrize(("top", "exit_rank", "min_stay"), [(5, 8, 0), (4, 4, 45), (3, 6, 40)])
def test_select_universe_buffer_matches_a_reference(daily_panel, top, exit_rank, min_stay):
    panel = daily_panel.slice(start="2020-06-01", end="2021-12-31")
    got = select_universe(panel, top=top, exit_rank=exit_rank, min_stay=min_stay)
    pd.testing.assert_frame_equal(got, _reference(panel, top, exit_rank, min_stay))
    at = rebalance_mask(panel.index, "monthly")
    count = got.sum(axis=1)[at]
    assert (count >= top).all()  # the top N are always members after a reselection
    if not min_stay:
        assert (count <= exit_rank).all()


def test_plain_top_is_unchanged_and_equals_a_buffer_of_zero(daily_panel):
    plain = select_universe(daily_panel, top=6)
    pd.testing.assert_frame_equal(select_universe(daily_panel, top=6, exit_rank=6), plain)
    pd.testing.assert_frame_equal(
        select_universe(daily_panel, **parse_universe("top:6/6,stay:0").kwargs()), plain
    )


@pytest.mark.parametrize(
    ("kwargs", "panel_name"),
    [
        ({"top": 5, "exit_rank": 9, "rebalance": "monthly"}, "daily_panel"),
        ({"top": 4, "exit_rank": 6, "min_stay": 20, "rebalance": "weekly"}, "daily_panel"),
        ({"top": 2, "exit_rank": 3, "min_stay": 48, "rebalance": "daily"}, "hourly_panel"),
    ],
)
def test_select_universe_buffer_is_causal(kwargs, panel_name, request):
    panel = request.getfixturevalue(panel_name)
    full = select_universe(panel, **kwargs, min_history=30)
    assert not (full & ~panel.live).any().any()
    for t in panel.index[[len(panel.index) // 5, len(panel.index) // 2, -40]]:
        part = select_universe(panel.slice(end=t), **kwargs, min_history=30)
        pd.testing.assert_frame_equal(part, full.loc[:t, part.columns])
        assert not full.loc[:t, full.columns.difference(part.columns)].any().any()


def test_delisting_ends_a_buffered_membership(daily_panel):
    # ARBUSD stops trading after 2023-10-20 (see test_universe.py); a wide buffer and a
    # long stay must not keep it
    u = select_universe(daily_panel, top=34, exit_rank=34, min_stay=1000)
    arb = u["ARBUSD"]
    assert arb.loc["2023-10-01":"2023-10-20"].all()
    assert not arb.loc["2023-10-21":].any()


def test_parse_buffered_universes():
    assert parse_universe("top:20/30") == UniverseSpec(top=20, exit_rank=30)
    assert parse_universe(" top:20/30 , stay:30 ") == UniverseSpec(
        top=20, exit_rank=30, min_stay=30
    )
    assert parse_universe("top:20,stay:30").kwargs() == {
        "by": "quote_volume",
        "top": 20,
        "min_stay": 30,
    }
    assert parse_universe("top:5/8:mcap,stay:10").kwargs() == {
        "by": "market_cap",
        "top": 5,
        "exit_rank": 8,
        "min_stay": 10,
    }
    # plain text keeps its old spec and arguments exactly
    assert parse_universe("top:20") == UniverseSpec(top=20)
    assert parse_universe("top:20").kwargs() == {"by": "quote_volume", "top": 20}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("top:20/10", "exit rank 10 is below the entry rank 20"),
        ("top:20/", "exit rank after '/' must be a whole number, not ''"),
        ("top:20/x", "exit rank after '/' must be a whole number, not 'x'"),
        ("top:20/30,stay:-1", "stay must be a whole number of bars >= 0, not '-1'"),
        ("top:20/30,stay:2.5", "stay must be a whole number of bars >= 0, not '2.5'"),
        ("top:20/30,stay", "unknown option 'stay'"),
        ("top:20/30,hold:3", "unknown option 'hold:3'"),
        ("top:0/30", "expected 'top:N' with N >= 1"),
        ("top:/30", "expected 'top:N' with N >= 1"),
        ("top:20/30:price", "rank by quote_volume, market_cap, not 'price'"),
    ],
)
def test_parse_buffered_universe_errors(text, message):
    with pytest.raises(DataError, match="bad universe") as info:
        parse_universe(text)
    assert message in str(info.value) and repr(text) in str(info.value)


def test_select_universe_rejects_an_exit_above_the_entry(daily_panel):
    with pytest.raises(DataError, match="exit rank 3 is below the entry rank 5"):
        select_universe(daily_panel, top=5, exit_rank=3)
    with pytest.raises(DataError, match="minimum stay must be a whole number"):
        select_universe(daily_panel, top=5, min_stay=-2)


def changes(u: pd.DataFrame) -> tuple[int, int]:
    """Entries and exits: membership switching on / off, counting bar 0's members."""
    x = u.to_numpy().astype(int)
    d = np.diff(np.vstack([np.zeros((1, x.shape[1]), dtype=int), x]), axis=0)
    return int((d == 1).sum()), int((d == -1).sum())


@pytest.mark.real_data
def test_buffer_changes_membership_less_on_the_binance_file():
    path = REAL_DATA / "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz"
    if not path.is_file():
        pytest.skip(f"data not found: {path}")
    panel = load_panel(path)
    plain = select_universe(panel, **parse_universe("top:10").kwargs(), min_history=30)
    buffered = select_universe(panel, **parse_universe("top:10/15").kwargs(), min_history=30)
    # Figures of this file (2017-08 to 2023-12, monthly re-ranking, a 30-bar window)
    assert changes(plain) == (94, 84)
    assert changes(buffered) == (46, 34)
    assert sum(changes(buffered)) <= sum(changes(plain))
    at = rebalance_mask(panel.index, "monthly")
    count = buffered.sum(axis=1)[at].loc["2019":]
    assert count.min() >= 10 and count.max() <= 15
