"""Sleeve subaccounts in a portfolio run: strategies simulated on their own clock (an
imported return stream, market making, copy trading) beside the bar strategies, their
equity from the simulation's returns between bar closes, under the allocator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import HAVE_REAL_DATA, SHARED_DATA, synthetic_bars
from tests.engine._resume import assert_same_result
from trimtab.cli import app
from trimtab.config import ConfigError
from trimtab.data import panel_from_long
from trimtab.engine import sleeve_run
from trimtab.engine.backtest import BarRecord
from trimtab.engine.portfolio_file import load_portfolio, parse_portfolio
from trimtab.engine.portfolio_run import ALLOCATOR, PortfolioOptions, run_portfolio
from trimtab.engine.recording import RunRecorder
from trimtab.execution.costs import CostModel
from trimtab.journal.store import Store
from trimtab.strategies.sleeve import SleeveRun

ROOT = Path(__file__).resolve().parents[2]
DAY = pd.Timedelta(days=1)
COSTS = PortfolioOptions(costs=CostModel(taker_fee_bps=10, half_spread_bps=0))


def _panel(n: int = 240, seed: int = 3):
    rng = np.random.default_rng(seed)
    closes = {
        "AAAUSDT": list(100 * np.cumprod(1 + rng.normal(0.001, 0.02, n))),
        "BBBUSDT": list(50 * np.cumprod(1 + rng.normal(0.0, 0.02, n))),
    }
    return panel_from_long(synthetic_bars(closes, start="2021-01-01"))


def _equity_file(path: Path, stamps: pd.DatetimeIndex, values: np.ndarray) -> None:
    frame = pd.DataFrame({"timestamp": [t.isoformat() for t in stamps], "equity": values})
    frame.to_csv(path, index=False)


def _intraday_path(n_days: int, seed: int, start: str = "2021-01-01") -> pd.Series:
    """An equity path with points at random times of day (several a day)."""
    rng = np.random.default_rng(seed)
    base = pd.Timestamp(start, tz="UTC")
    offsets = np.sort(rng.uniform(0, n_days * 86400, 4 * n_days)).round()
    stamps = pd.DatetimeIndex(base + pd.to_timedelta(offsets, unit="s")).unique()
    values = 10_000 * np.cumprod(1 + rng.normal(0.0005, 0.004, len(stamps)))
    return pd.Series(values, index=stamps)


PORTFOLIO = """
backtest: {{start: 2021-01-10}}
account:
  limits: {{max_drawdown: {account_dd}}}
  transfers: {{max_transfer: 1000000, min_transfer: 1}}
subaccounts:
  hold:
    strategy: fixed
    weights: {{AAAUSDT: 0.5}}
    capital: 50000
    breakers: {{daily_loss_limit: null, loss_streak: null}}
  ext:
    strategy: returns
    capital: {ext_capital}
    params: {{file: ext.csv}}
    limits: {{max_drawdown: 0.99}}
    breakers: {{daily_loss_limit: null, loss_streak: null}}
{extra}
"""


def _portfolio(folder: Path, extra: str = "", account_dd: float = 0.95, ext_capital: int = 10000):
    text = PORTFOLIO.format(extra=extra, account_dd=account_dd, ext_capital=ext_capital)
    return parse_portfolio(text, str(folder / "p.yaml"), folder)


TRANSFERS = """
transfers:
  - {at: 2021-02-01, from: hold, to: ext, amount: 5000, reason: "top up"}
  - {at: 2021-03-15, from: ext, to: hold, amount: 2500, reason: "take back"}
"""


def test_sleeve_equity_is_the_hand_computation_from_its_returns_and_transfers(tmp_path):
    path = _intraday_path(240, seed=5)
    _equity_file(tmp_path / "ext.csv", path.index, path.to_numpy())
    run = run_portfolio(_portfolio(tmp_path, TRANSFERS), COSTS, panel=_panel())
    ext = run.subaccounts["ext"]
    opens = ext.equity.index
    closes = opens + DAY  # daily bars are stamped with their open
    # The equity last known at or before each close, by hand (searchsorted, not pandas).
    stamps, values = path.index.asi8, path.to_numpy()
    at = np.searchsorted(stamps, closes.as_unit(path.index.unit).asi8, side="right") - 1
    sampled = np.where(at >= 0, values[np.maximum(at, 0)], values[0])
    flows = np.zeros(len(opens))
    for t in run.transfers:
        k = opens.get_loc(pd.Timestamp(t["timestamp"]))
        flows[k] += t["moved"] if t["to"] == "ext" else -t["moved"]
    assert [t["status"] for t in run.transfers] == ["done", "done"]
    want = np.empty(len(opens))
    want[0] = 10_000 + flows[0]
    for k in range(1, len(opens)):
        want[k] = want[k - 1] * (sampled[k] / sampled[k - 1]) + flows[k]
    np.testing.assert_allclose(ext.equity.to_numpy(), want, rtol=1e-12)
    assert ext.flows.to_numpy() == pytest.approx(flows)
    # It holds no bar position; the account's total is the sum of the subaccounts.
    assert (ext.weights.to_numpy() == 0).all() and ext.trades.empty
    total = run.subaccounts["hold"].equity + ext.equity
    np.testing.assert_allclose(run.equity.to_numpy(), total.to_numpy(), rtol=1e-13)
    # Its decision at each close says what the bar did.
    codes = [d["reasons"][0]["code"] for d in ext.decisions]
    assert codes[0] == "sleeve_start" and set(codes[1:]) == {"sleeve_active"}
    doc = run.to_json()["subaccounts"]["ext"]
    assert doc["sleeve"]["bars_covered"] == len(opens)
    assert doc["metrics"]["end_equity"] == pytest.approx(want[-1])


def test_a_sleeve_that_loses_everything_leaves_the_others_untouched(tmp_path):
    stamps = pd.date_range("2021-01-01", periods=240, freq="1D", tz="UTC") + pd.Timedelta(hours=7)
    flat = np.full(len(stamps), 10_000.0)
    crash = flat.copy()
    crash[60:] = 1e-6  # all but nothing left, on 2021-03-02 07:00
    runs = {}
    for name, values in (("flat", flat), ("crash", crash)):
        folder = tmp_path / name
        folder.mkdir()
        _equity_file(folder / "ext.csv", stamps, values)
        runs[name] = run_portfolio(_portfolio(folder), COSTS, panel=_panel())
    a, b = runs["crash"].subaccounts, runs["flat"].subaccounts
    assert a["hold"].equity.equals(b["hold"].equity)
    assert a["hold"].trades.equals(b["hold"].trades)
    assert a["hold"].account.subaccount("hold").cash == b["hold"].account.subaccount("hold").cash
    ext = a["ext"]
    assert float(ext.equity.iloc[-1]) == pytest.approx(1e-6, abs=1e-9)
    # Its own guard halted it (drawdown past 99 %); the account breaker (95 %) did not
    # trip: the total fell by less, so the other subaccount stays active.
    assert ext.states["state"].iloc[-1] == "halted"
    assert a["hold"].states["state"].iloc[-1] == "active"


def test_the_account_breaker_sees_the_sleeves_equity(tmp_path):
    stamps = pd.date_range("2021-01-01", periods=240, freq="1D", tz="UTC") + pd.Timedelta(hours=7)
    values = np.full(len(stamps), 10_000.0)
    values[60:] = 1_000.0  # the sleeve loses 90 % of 50,000 USDT: the total about 45 %
    _equity_file(tmp_path / "ext.csv", stamps, values)
    run = run_portfolio(
        _portfolio(tmp_path, account_dd=0.30, ext_capital=50000), COSTS, panel=_panel()
    )
    crash = run.equity.index.get_loc(stamps[60].normalize())
    assert run.account_state.iloc[crash - 1] == "active"
    assert run.account_state.iloc[crash] == "halted"
    # The account halted every subaccount, the bar one too.
    assert run.subaccounts["hold"].states["state"].iloc[crash] == "halted"


def _json(value) -> str:
    from trimtab.domain.decisions import json_ready

    return json.dumps(json_ready(value), sort_keys=True)


ALLOCATED = """
allocator: {every: monthly, lookback: 60, min_history: 20, band: 0.02, max_share: 0.9}
"""


def test_changing_the_sleeve_after_bar_k_changes_nothing_at_or_before_k(tmp_path):
    path = _intraday_path(240, seed=9)
    panel = _panel()
    k_open = pd.Timestamp("2021-04-10", tz="UTC")
    cut = k_open + DAY  # the close of bar k
    later = path.copy()
    later[later.index > cut] *= np.linspace(0.5, 2.0, int((later.index > cut).sum()))
    later[later.index == cut] *= 1.0  # a point at the close itself is bar k's: unchanged
    runs = []
    for name, series in (("a", path), ("b", later)):
        folder = tmp_path / name
        folder.mkdir()
        _equity_file(folder / "ext.csv", series.index, series.to_numpy())
        runs.append(run_portfolio(_portfolio(folder, ALLOCATED), COSTS, panel=panel))
    a, b = runs
    k = a.equity.index.get_loc(k_open)
    assert not a.equity.iloc[k + 1 :].equals(b.equity.iloc[k + 1 :])  # it did change later
    assert a.equity.iloc[: k + 1].equals(b.equity.iloc[: k + 1])
    for name in ("hold", "ext"):
        ra, rb = a.subaccounts[name], b.subaccounts[name]
        assert ra.equity.iloc[: k + 1].equals(rb.equity.iloc[: k + 1])
        upto = [d for d in ra.decisions if pd.Timestamp(d["timestamp"]) <= k_open]
        assert upto == rb.decisions[: len(upto)]
    until = [t for t in a.transfers if pd.Timestamp(t["timestamp"]) <= k_open]
    assert until and until == b.transfers[: len(until)]
    early = [r for r in a.allocations if pd.Timestamp(r["timestamp"]) <= k_open]
    assert early and _json(early) == _json(b.allocations[: len(early)])  # NaN as null


def _fading_files(folder: Path, n: int = 300, switch: int = 150) -> pd.Timestamp:
    """fade: a steady edge for ``switch`` days, then none (choppy losses); keep: steady."""
    rng = np.random.default_rng(7)
    fade = np.concatenate([rng.normal(0.004, 0.01, switch), rng.normal(-0.004, 0.03, n - switch)])
    keep = rng.normal(0.0015, 0.01, n)
    stamps = pd.date_range("2021-01-02", periods=n, freq="1D", tz="UTC")  # known at 00:00
    for name, r in (("fade", fade), ("keep", keep)):
        frame = pd.DataFrame({"timestamp": [t.isoformat() for t in stamps], "return": r})
        frame.to_csv(folder / f"{name}.csv", index=False)
    return stamps[switch]


FADING = """
backtest: {start: 2021-01-05}
account:
  limits: {max_drawdown: 0.95}
  transfers: {max_transfer: 1000000, min_transfer: 10}
subaccounts:
  fade:
    strategy: returns
    capital: 50000
    params: {file: fade.csv}
    limits: {max_drawdown: 0.95}
    breakers: {daily_loss_limit: null, loss_streak: null}
  keep:
    strategy: returns
    capital: 50000
    params: {file: keep.csv, capacity: 10000000}
    limits: {max_drawdown: 0.95}
    breakers: {daily_loss_limit: null, loss_streak: null}
allocator: {every: monthly, lookback: 90, min_history: 45, band: 0.03, max_share: 0.95}
"""


def test_the_allocator_moves_capital_away_from_a_sleeve_whose_edge_disappears(tmp_path):
    switch = _fading_files(tmp_path)
    portfolio = parse_portfolio(FADING, str(tmp_path / "fading.yaml"), tmp_path)
    clock = _panel(305)  # the bars only give the clock: both subaccounts are sleeves
    url = f"sqlite:///{tmp_path / 'fading.db'}"
    with Store.open(url) as store:
        run = run_portfolio(portfolio, COSTS, panel=clock, recorder=RunRecorder(store, "f", {}))
    records = [r for r in run.allocations if r["strategies"]]
    before = [r for r in records if pd.Timestamp(r["timestamp"]) <= switch]
    after = [r for r in records if pd.Timestamp(r["timestamp"]) > switch + pd.Timedelta(days=75)]
    assert before and after
    assert after[-1]["targets"]["fade"] < 0.5 * before[-1]["targets"]["fade"]
    moved_out = sum(
        t["moved"]
        for t in run.transfers
        if t["from"] == "fade" and pd.Timestamp(t["timestamp"]) > switch
    )
    assert moved_out > 20_000
    # In the journal: every allocation a decision of *allocator with its reasons, the
    # fall of fade's share among them, and the transfers it asked for.
    with Store.open(url) as store:
        decisions = store.decisions("f", subaccount=ALLOCATOR)
        transfers = store.transfers("f", floats=True)
    assert len(decisions) == len(run.allocations)
    assert [d["id"] for d in decisions] == list(range(len(decisions)))
    late = [d for d in decisions if pd.Timestamp(d["timestamp"]) > switch]
    fell = [
        r["message"]
        for d in late
        for r in d["reasons"]
        if r["code"] == "allocation_share" and r["message"].startswith("fade: fell")
    ]
    assert fell, [r["message"] for d in late for r in d["reasons"]]
    assert all(d["reasons"][0]["code"] == "allocation" for d in decisions)
    out = [d for d in late if any(t["from"] == "fade" for t in d["transfers"])]
    assert out and all(t["origin"] == "allocator" for d in out for t in d["transfers"])
    assert [t["guard"] for t in transfers] == run.transfers


class _Killed(Exception):
    pass


class _DyingRecorder(RunRecorder):
    """Dies just after recording bar ``at`` (its batch may be written)."""

    def __init__(self, *args, at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.at = at

    def record(self, bar: BarRecord, states) -> None:
        super().record(bar, states)
        if bar.bar == self.at:
            raise _Killed


def test_a_sleeve_subaccount_resumes_exactly_and_refuses_a_changed_simulation(tmp_path):
    path = _intraday_path(120, seed=11)
    _equity_file(tmp_path / "ext.csv", path.index, path.to_numpy())
    portfolio = _portfolio(tmp_path, TRANSFERS + ALLOCATED)
    panel = _panel(120)
    plain = run_portfolio(portfolio, COSTS, panel=panel)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with Store.open(url) as store:
        with pytest.raises(_Killed):
            run_portfolio(
                portfolio,
                COSTS,
                panel=panel,
                recorder=_DyingRecorder(store, "r", {}, at=70, commit_bars=4),
            )
    with Store.open(url) as store:
        recorder = RunRecorder(store, "r", {})
        resumed = run_portfolio(portfolio, COSTS, panel=panel, recorder=recorder)
        assert recorder.resumed_after is not None and 60 < recorder.resumed_after < 100
    assert resumed.equity.equals(plain.equity)
    assert resumed.transfers == plain.transfers
    for name, r in plain.subaccounts.items():
        assert_same_result(resumed.subaccounts[name], r)
    assert _json(resumed.allocations) == _json(plain.allocations)
    # The sleeve's data changed since the run was recorded: resuming it is refused.
    with Store.open(url) as store:
        with pytest.raises(_Killed):
            run_portfolio(
                portfolio,
                COSTS,
                panel=panel,
                recorder=_DyingRecorder(store, "s", {}, at=30, commit_bars=4),
            )
    _equity_file(tmp_path / "ext.csv", path.index, path.to_numpy() * np.linspace(1, 1.1, len(path)))
    with Store.open(url) as store:
        with pytest.raises(ValueError, match="'ext' \\(returns\\): its simulation differs"):
            run_portfolio(portfolio, COSTS, panel=panel, recorder=RunRecorder(store, "s", {}))


class _Scripted:
    """A sleeve with a scripted equity path, fills and a stop (a test's own strategy,
    implementing the protocol as market making or copy trading would)."""

    kind = "copy"

    def __init__(self) -> None:
        days = pd.date_range("2021-01-10", periods=120, freq="1D", tz="UTC")
        self.equity = pd.Series(
            10_000 * 1.002 ** np.arange(120), index=days + pd.Timedelta(hours=12)
        )

    def coverage(self):
        return self.equity.index[0], self.equity.index[-1]

    def simulate(self, capital: float) -> SleeveRun:
        fill_at = pd.Timestamp("2021-02-20 13:00", tz="UTC")
        records = [
            {
                "ts": fill_at,
                "kind": "fill",
                "symbol": "XYZUSDT",
                "side": "buy",
                "quantity": 2.0,
                "price": 100.0,
                "fee": 0.2,
                "reason": "copy T7: leader buy 20 XYZUSDT",
            },
            {"ts": fill_at, "kind": "stop", "reason": "leader drawdown 31% >= 30%: unfollowed"},
        ]
        return SleeveRun(self.equity * (capital / 10_000), records, capacity=1e9)


def test_sleeve_fills_and_stops_reach_its_trades_and_decisions_scaled_to_its_capital(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(sleeve_run, "sleeve_strategy", lambda *a: _Scripted())
    text = PORTFOLIO.replace("strategy: returns", "strategy: copy").replace(
        "{file: ext.csv}", "{leader: x.csv}"
    )
    text = text.format(extra=TRANSFERS, account_dd=0.95, ext_capital=10000)
    run = run_portfolio(parse_portfolio(text, "p.yaml", tmp_path), COSTS, panel=_panel())
    ext = run.subaccounts["ext"]
    (row,) = ext.trades.itertuples()
    bar = pd.Timestamp("2021-02-20", tz="UTC")
    k = ext.equity.index.get_loc(bar)
    # Scaled by the subaccount's equity over the simulation's at the close before.
    # The close before is 2021-02-20 00:00: the simulation's point of 2021-02-19 12:00.
    sim_before = 10_000 * 1.002 ** ((bar - pd.Timestamp("2021-01-10", tz="UTC")).days - 1)
    scale = float(ext.equity.iloc[k - 1]) / sim_before
    # 5,000 USDT moved in at the close of 2021-02-01 (the simulation's equity there: its
    # point of 2021-02-01 12:00), none out since: the scale is constant after it.
    assert scale == pytest.approx(1 + 5000 / (10_000 * 1.002**22), rel=1e-12)
    assert row.quantity == pytest.approx(2.0 * scale, rel=1e-12)
    assert row.fee == pytest.approx(0.2 * scale, rel=1e-12) and row.price == 100.0
    assert row.reason == "copy T7: leader buy 20 XYZUSDT (x1.478 of the simulation's size)"
    decision = next(d for d in ext.decisions if d["timestamp"] == bar.isoformat())
    codes = [r["code"] for r in decision["reasons"]]
    assert codes == ["sleeve_active", "sleeve_stop"]
    assert decision["reasons"][1]["message"].startswith("leader drawdown 31%")
    # Before its data, it holds cash and says so.
    first = ext.decisions[1]
    assert first["reasons"][0]["code"] == "sleeve_active"  # 2021-01-11: covered
    assert ext.decisions[0]["reasons"][0]["code"] == "sleeve_start"
    after = next(d for d in ext.decisions if d["timestamp"] == "2021-06-01T00:00:00+00:00")
    assert after["reasons"][0]["code"] == "sleeve_no_data"
    assert "leader trades from 2021-01-10 12:00:00" in after["reasons"][0]["message"]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            "params: {file: ext.csv}\n    symbols: [AAAUSDT]",
            "subaccounts.ext.symbols: strategy returns",
        ),
        ("params: {}", "subaccounts.ext.params.file: required"),
        ("params: {file: ext.csv, capacity: 0}", "subaccounts.ext.params.capacity"),
        ("params: {file: ext.csv}\n    walk_forward: {}", "subaccounts.ext.walk_forward"),
    ],
)
def test_sleeve_keys_are_checked_with_the_key_named(tmp_path, change, error):
    text = PORTFOLIO.format(extra="", account_dd=0.95, ext_capital=1000)
    with pytest.raises(ConfigError, match=error.replace(".", r"\.")):
        parse_portfolio(text.replace("params: {file: ext.csv}", change), "p.yaml", tmp_path)


def test_sleeve_constructor_errors_name_the_subaccounts_params(tmp_path):
    base = PORTFOLIO.format(extra="", account_dd=0.95, ext_capital=1000)
    cases = [
        ("strategy: returns", "{file: nope.csv}", "subaccounts.ext.params.file: .*nope.csv"),
        (
            "strategy: market-making",
            "{half_spread_bps: -3}",
            "subaccounts.ext.params: market-making params: half_spread_bps",
        ),
        (
            "strategy: copy",
            "{leader: nope.csv}",
            "subaccounts.ext.params.leader: .*nope.csv: no such file",
        ),
    ]
    for strategy, params, error in cases:
        text = base.replace("strategy: returns", strategy).replace("{file: ext.csv}", params)
        with pytest.raises(ConfigError, match=error):
            run_portfolio(parse_portfolio(text, "p.yaml", tmp_path), COSTS, panel=_panel(40))


def test_trimtab_run_refuses_sleeve_subaccounts(tmp_path):
    from trimtab.app.run import RunOptions, build_run

    portfolio = load_portfolio(ROOT / "examples" / "portfolio_sleeves.yaml")
    options = RunOptions(db=f"sqlite:///{tmp_path / 'x.db'}", replay=str(SHARED_DATA))
    with pytest.raises(ConfigError) as exc:
        build_run(portfolio, options)
    text = str(exc.value)
    assert "subaccounts.mm.strategy: market-making" in text and "not run by trimtab run" in text
    assert "subaccounts.copy.strategy: copy" in text and "core" not in text.split("\n")[0][:20]


def test_the_example_backtested_end_to_end_with_allocator_decisions_in_the_journal(tmp_path):
    db = f"sqlite:///{tmp_path / 'sleeves.db'}"
    out = tmp_path / "run"
    done = CliRunner().invoke(
        app,
        [
            "backtest",
            "--portfolio",
            str(ROOT / "examples" / "portfolio_sleeves.yaml"),
            "--data",
            str(SHARED_DATA),
            "--db",
            db,
            "--run-id",
            "ex",
            "--out",
            str(out),
        ],
        env={"COLUMNS": "200"},
    )
    assert done.exit_code == 0, done.output
    doc = json.loads((out / "result.json").read_text())
    assert set(doc["subaccounts"]) == {"core", "trend", "mm", "copy"}
    with Store.open(db) as store:
        decisions = store.decisions("ex", subaccount=ALLOCATOR)
        fills = store.fills("ex")
    # 2021-02-01 to 2021-06-01: five allocation dates, each a decision with its reasons.
    assert len(decisions) == len(doc["allocations"]) == 5
    assert all(
        d["reasons"] and d["reasons"][0]["message"].startswith("allocator") for d in decisions
    )
    mm = doc["subaccounts"]["mm"]["sleeve"]
    mm_decisions = [
        json.loads(x) for x in (out / "subaccounts/mm/decisions.jsonl").read_text().splitlines()
    ]
    on_day = next(d for d in mm_decisions if d["timestamp"].startswith("2021-01-08"))
    mm_trades = pd.read_csv(out / "subaccounts" / "mm" / "trades.csv")
    copy_trades = pd.read_csv(out / "subaccounts" / "copy" / "trades.csv")
    if HAVE_REAL_DATA:
        # The book sample: about 46 seconds of 2021-01-08, the only bar it is active on.
        assert mm["bars_covered"] == 1 and mm["coverage"][0].startswith("2021-01-08T00:00")
        assert on_day["reasons"][0]["code"] == "sleeve_active"
        assert len(mm_trades) == mm["records_in_run"]["fill"] > 0
        assert mm_trades["reason"].str.startswith("trade ").all()
        assert pd.to_datetime(mm_trades["timestamp"]).dt.date.astype(str).eq("2021-01-08").all()
        assert "active on 1 of 181 bars" in done.output
        others = [d for d in mm_decisions if not d["timestamp"].startswith("2021-01-08")]
        assert {d["reasons"][0]["code"] for d in others[1:]} == {"sleeve_no_data"}
        first = next(d for d in decisions if d["allocation"]["strategies"])
        held = first["allocation"]["strategies"]["mm"]["why"]
        assert held.startswith("held: 1 of 60 bars with book data"), held
    else:
        # The synthetic sample has no book data: the market maker holds cash, and says so.
        assert mm["bars_covered"] == 0 and "order-book" in mm["missing"]
        assert on_day["reasons"][0]["code"] == "sleeve_no_data" and mm_trades.empty
        assert "mm (market-making): no book data" in done.output
    # Each copy fill names the leader trade it copies (or the stop it unfollowed on).
    named = copy_trades["reason"].str.startswith("copy L0") | copy_trades["reason"].str.contains(
        "unfollow"
    )
    assert len(copy_trades) > 0 and named.all()
    assert len(fills) >= len(copy_trades) + len(mm_trades)
