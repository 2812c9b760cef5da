"""Each named strategy's backtest against an independent NumPy reimplementation.

The reference below is written from the docstrings of ``trimtab.strategies`` (parts,
library) and of ``plan_orders``/``SimulatedBroker``, not from their code, and calls none
of the strategy's parts:

* target weights per bar from the closes (and quote volumes, and the risk engine's
  ``risk_score`` for core's risk cut) of bars ``0..t`` only;
* the drift band (trade when the holdings are more than ``band`` away from the target,
  when a held asset's target is 0, or on the first bar of a calendar period);
* a plain execution model: decided at the close of t, filled at the open of t+1, 10 bps
  fee on traded notional, no lot rounding, no slippage. Orders are sized as
  ``plan_orders`` documents: sells in base units, buys as quote to spend (fee included),
  both from the close of t; buys beyond the cash there are scaled pro rata.

Then the engine's ``Backtest`` of ``build_strategy(...)`` with the same costs must record
the same targets on every bar and the same equity curve (see ``EQUITY_RTOL``). Also: no
lookahead (a run on data cut after t decides as the full run up to t) and what the
strategy that trades most often pays for its trading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DAILY_FILE
from trimtab.data import load_panel, select_universe
from trimtab.data.panel import Panel
from trimtab.domain.instruments import spot
from trimtab.engine.backtest import Backtest, BacktestConfig, BacktestResult
from trimtab.engine.context import MarketContext
from trimtab.execution.costs import CostModel
from trimtab.strategies import BarView, build_strategy

# Figures of the real daily file: skipped without ../shared/data (see tests/conftest.py).
real_data = pytest.mark.real_data

START, END = "2019-01-01", "2023-12-31"
FEE = 10e-4  # 10 bps taker fee on traded notional
CASH = 100_000.0
PPY = 365.0  # daily bars, 365-day years
EXIT_WEIGHT = 0.005  # DriftBand.exit_weight's default: a held weight above it must go
TARGET_ATOL = 1e-9
# The reference sizes and fills orders by the engine's documented convention with no lots
# and no minimums, so only float rounding (and the engine's skip of trades below 1e-9 of
# equity) separates the two equity curves: 1e-9 relative leaves room for that over five
# years of compounding and nothing for a modelling difference (one day's fee on a 10 %
# trade is 1e-4 of equity). Observed on 2019-2023: at most 1.3e-14 (core).
EQUITY_RTOL = 1e-9


# --- the market as plain arrays ------------------------------------------------------------


@dataclass
class Market:
    """The panel's fields as (bars x assets) arrays, the run's bars and its members."""

    index: pd.DatetimeIndex
    symbols: list[str]
    close: np.ndarray
    open: np.ndarray
    quote_volume: np.ndarray
    live: np.ndarray
    members: np.ndarray  # universe & listed & a real bar, before the strategy's instruments
    risk: np.ndarray
    start: int
    end: int


def market_of(ctx: MarketContext, panel: Panel, universe: pd.DataFrame | None) -> Market:
    live = panel.close.notna().to_numpy()
    members = live & panel.has_bar.to_numpy()
    if universe is not None:
        members &= (
            universe.reindex(index=panel.index, columns=panel.symbols).fillna(False).to_numpy(bool)
        )
    index = panel.index
    return Market(
        index=index,
        symbols=list(panel.symbols),
        close=panel.close.to_numpy(float),
        open=panel.open.to_numpy(float),
        quote_volume=panel.quote_volume.to_numpy(float),
        live=live,
        members=members,
        # The risk engine's score is an input here, as the brief of RiskCut says.
        risk=ctx.features["risk_score"],
        start=int(index.searchsorted(pd.Timestamp(START, tz="UTC"))),
        end=int(index.searchsorted(pd.Timestamp(END, tz="UTC"), side="right")) - 1,
    )


# --- reference targets, from the docstrings -----------------------------------------------


def trailing_returns(close: np.ndarray, i: int, window: int) -> np.ndarray:
    """The last ``window`` simple returns ending at bar i (fewer near the start)."""
    c = close[max(0, i - window) : i + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return c[1:] / c[:-1] - 1.0


def annual_vol(returns: np.ndarray, window: int) -> np.ndarray:
    """Per asset: sample std of the finite returns among the last ``window``, annualised;
    NaN with fewer than half of them."""
    r = returns[-window:]
    out = np.full(r.shape[1], np.nan)
    for j in range(r.shape[1]):
        x = r[:, j][np.isfinite(r[:, j])]
        if len(x) >= 2 and len(x) >= window / 2:
            out[j] = np.std(x, ddof=1) * np.sqrt(PPY)
    return out


def inverse_vol(scores: np.ndarray, returns: np.ndarray, window: int, gross: float) -> np.ndarray:
    """score x (1/vol) / sum of 1/vol over the assets with a score and a volatility."""
    vol = annual_vol(returns, window)
    ok = np.isfinite(scores) & np.isfinite(vol) & (vol > 0)
    if not ok.any():
        return np.zeros(len(scores))
    inv = np.zeros(len(scores))
    inv[ok] = 1.0 / vol[ok]
    out = np.zeros(len(scores))
    out[ok] = gross * inv[ok] / inv.sum() * np.maximum(scores[ok], 0.0)
    return out


def vol_target(
    w: np.ndarray, returns: np.ndarray, window: int, target: float, max_gross: float, up: bool
) -> np.ndarray:
    """Scale to ``target`` forecast volatility: sqrt(w' C w) with C the sample covariance of
    the last ``window`` returns (a missing return counts as 0); gross <= ``max_gross``."""
    gross = np.abs(w).sum()
    if gross <= 0:
        return w
    r = np.nan_to_num(returns[-window:])
    if len(r) < 2:
        return w * 0.0
    vol = float(np.sqrt(w @ np.cov(r, rowvar=False, ddof=1) @ w * PPY))
    if not (np.isfinite(vol) and vol > 0):
        return w * 0.0
    scale = target / vol
    if not up:
        scale = min(scale, 1.0)
    return w * min(scale, max_gross / gross)


@dataclass(frozen=True)
class TrendRef:
    """trend: time-series momentum votes, inverse vol, vol target (no scale-up), cap."""

    lookbacks: tuple[int, ...] = (20, 60, 120, 250)
    vol_window: int = 60
    target_vol: float = 0.40
    max_gross: float = 1.0
    max_weight: float = 0.6
    band: float = 0.15
    calendar: str | None = None

    @property
    def warmup(self) -> int:
        return min(self.lookbacks)

    @property
    def window(self) -> int:
        return max(max(self.lookbacks), self.vol_window, 2)

    def target(self, m: Market, i: int, members: np.ndarray) -> np.ndarray:
        now = m.close[i]
        up = np.zeros(len(now))
        down = np.zeros(len(now))
        counted = np.zeros(len(now))
        for lag in self.lookbacks:
            if i - lag < 0:
                continue  # not that much history: vote over the lookbacks there are
            past = m.close[i - lag]
            ok = np.isfinite(past) & np.isfinite(now) & (past > 0)
            up += ok & (now > past)
            down += ok & (now < past)
            counted += ok
        with np.errstate(invalid="ignore", divide="ignore"):
            scores = np.where(counted > 0, (up - down) / counted, np.nan)
        scores = np.where(members & np.isfinite(scores), np.maximum(scores, 0.0), np.nan)
        returns = trailing_returns(m.close, i, self.window)
        w = inverse_vol(scores, returns, self.vol_window, 1.0)
        w = vol_target(w, returns, self.vol_window, self.target_vol, self.max_gross, up=False)
        return np.minimum(w, self.max_weight)


@dataclass(frozen=True)
class CoreRef:
    """core: top members by median volume, inverse vol, risk cut, vol target, cap."""

    top: int = 10
    volume_window: int = 30
    vol_window: int = 60
    no_cut: float = 15.0
    full_cut: float = 50.0
    target_vol: float = 0.45
    max_gross: float = 1.0
    max_weight: float = 0.4
    band: float = 0.15
    calendar: str | None = "monthly"

    @property
    def warmup(self) -> int:
        return self.vol_window

    @property
    def window(self) -> int:
        return max(self.volume_window, self.vol_window, 2)

    def target(self, m: Market, i: int, members: np.ndarray) -> np.ndarray:
        cols = np.flatnonzero(members)
        if len(cols) > self.top:
            vol = m.quote_volume[max(0, i - self.volume_window + 1) : i + 1]
            med = {}
            for j in cols:
                x = vol[:, j][np.isfinite(vol[:, j])]
                med[j] = np.median(x) if len(x) else -np.inf
            # Highest median first; ties to the earlier column.
            cols = np.array(sorted(cols, key=lambda j: (-med[j], j))[: self.top])
        scores = np.full(len(members), np.nan)
        scores[cols] = 1.0
        returns = trailing_returns(m.close, i, self.window)
        w = inverse_vol(scores, returns, self.vol_window, 1.0)
        # The uncut book is scaled to the volatility target first, then cut.
        w = vol_target(w, returns, self.vol_window, self.target_vol, self.max_gross, up=True)
        # Full weight at or below no_cut, none at or above full_cut, linear between; an
        # unknown score (NaN) is unknown risk: no weight (``risk_multiplier``).
        risk = m.risk[i]
        with np.errstate(invalid="ignore"):
            cut = np.where(
                risk <= self.no_cut,
                1.0,
                np.where(
                    risk >= self.full_cut,
                    0.0,
                    (self.full_cut - risk) / (self.full_cut - self.no_cut),
                ),
            )
        w = w * np.where(np.isnan(risk), 0.0, cut)
        return np.minimum(w, self.max_weight)


@dataclass(frozen=True)
class ReversionRef:
    """mean-reversion: the largest recent losers while the members' index ranges."""

    horizon: int = 5
    top: int = 3
    regime_window: int = 30
    max_efficiency: float = 0.25
    vol_window: int = 30
    gross: float = 0.5
    band: float = 0.10
    calendar: str | None = None

    @property
    def warmup(self) -> int:
        return max(self.regime_window, self.vol_window)

    @property
    def window(self) -> int:
        return max(self.horizon, self.regime_window, self.vol_window, 2)

    def efficiency(self, m: Market, i: int, members: np.ndarray) -> float:
        """|net move| / path of the equal-weight index (log) of the members with every
        return in the window; NaN without the history."""
        n = self.regime_window
        if i < n or not members.any():
            return float("nan")
        c = m.close[i - n : i + 1][:, members]
        r = c[1:] / c[:-1] - 1.0
        full = np.isfinite(r).all(axis=0)
        if not full.any():
            return float("nan")
        steps = np.log(1.0 + r[:, full].mean(axis=1))
        path = np.abs(steps).sum()
        return abs(steps.sum()) / path if path > 0 else 0.0

    def target(self, m: Market, i: int, members: np.ndarray) -> np.ndarray:
        n = len(members)
        er = self.efficiency(m, i, members)
        if not (np.isfinite(er) and er <= self.max_efficiency) or i < self.horizon:
            return np.zeros(n)
        with np.errstate(invalid="ignore", divide="ignore"):
            move = m.close[i] / m.close[i - self.horizon] - 1.0
        fell = [j for j in np.flatnonzero(members) if np.isfinite(move[j]) and move[j] < 0]
        losers = sorted(fell, key=lambda j: (move[j], j))[: self.top]
        scores = np.full(n, np.nan)
        scores[losers] = 1.0  # a full share each
        return inverse_vol(
            scores, trailing_returns(m.close, i, self.window), self.vol_window, self.gross
        )


Ref = TrendRef | CoreRef | ReversionRef


# --- reference run: band rule and execution --------------------------------------------


@dataclass
class RefRun:
    equity: np.ndarray  # at each run bar's close (quote)
    target: np.ndarray  # the strategy's target at each deciding bar (NaN: none)
    traded: dict[int, np.ndarray] = field(default_factory=dict)  # bar -> weights traded to
    fees: float = 0.0
    notional: float = 0.0  # traded notional (quote), both sides


def month_starts(index: pd.DatetimeIndex, i: int) -> bool:
    return i == 0 or (index[i].year, index[i].month) != (index[i - 1].year, index[i - 1].month)


def reference_run(
    ref: Ref, m: Market, instruments: tuple[str, ...] | None, fee: float = FEE
) -> RefRun:
    n_bars, n = m.end - m.start + 1, len(m.symbols)
    allowed = np.ones(n, bool) if instruments is None else np.isin(m.symbols, instruments)
    out = RefRun(np.empty(n_bars), np.full((n_bars, n), np.nan))
    cash, q = CASH, np.zeros(n)
    invested = False
    sells: dict[int, float] = {}  # asset -> base units to sell at the next open
    buys: dict[int, float] = {}  # asset -> quote to spend at the next open, fee included
    for k, i in enumerate(range(m.start, m.end + 1)):
        if k:
            # A delisted holding is sold at its last close (fee charged), its orders dropped.
            for j in np.flatnonzero(m.live[i - 1] & ~m.live[i] & (q != 0)):
                value = q[j] * m.close[i - 1, j]
                cash += value * (1 - fee)
                out.fees += value * fee
                out.notional += value
                q[j] = 0.0
                sells.pop(j, None)
                buys.pop(j, None)
            for j, qty in sells.items():  # sells first: their proceeds fund the buys
                value = qty * m.open[i, j]
                cash += value * (1 - fee)
                out.fees += value * fee
                out.notional += value
                q[j] -= qty
            total = sum(buys.values())
            scale = min(1.0, cash / total) if total > 0 else 1.0
            for j, spend in buys.items():
                qty = spend * scale / (m.open[i, j] * (1 + fee))
                q[j] += qty
                cash -= spend * scale
                out.fees += qty * m.open[i, j] * fee
                out.notional += qty * m.open[i, j]
            sells, buys = {}, {}
        marks = np.nan_to_num(m.close[i])
        equity = cash + float(q @ marks)
        out.equity[k] = equity
        if i == m.end or i < ref.warmup:
            continue
        members = m.members[i] & allowed
        if not members.any() and not q.any():
            continue
        target = np.where(members, ref.target(m, i, members), 0.0)
        out.target[k] = target
        current = q * marks / equity
        goal = target
        if not invested:
            if not target.any():
                continue
            invested = True
        elif not (
            (ref.calendar == "monthly" and month_starts(m.index, i))
            or np.abs(target - current).sum() > ref.band
        ):
            # Within the band: only the assets leaving the target are sold.
            leaving = (target == 0) & (np.abs(current) > EXIT_WEIGHT)
            if not leaving.any():
                continue
            goal = np.where(leaving, 0.0, current)
        out.traded[k] = goal
        target = goal
        delta = target * equity - q * marks
        for j in np.flatnonzero(delta):
            if delta[j] < 0 and q[j] > 0:
                sells[j] = q[j] if target[j] <= 0 else min(-delta[j] / m.close[i, j], q[j])
            elif delta[j] > 0:
                buys[j] = delta[j]
    return out


# --- the engine's runs ---------------------------------------------------------------------


@cache
def panel() -> Panel:
    return load_panel(DAILY_FILE)


@cache
def top10() -> pd.DataFrame:
    return select_universe(panel(), top=10)


CASES: dict[str, dict[str, Any]] = {
    "trend-btc-eth": {
        "kind": "trend",
        "ref": TrendRef(),
        "instruments": ("BTCUSDT", "ETHUSDT"),
        "universe": None,
    },
    "trend-top10": {"kind": "trend", "ref": TrendRef(), "instruments": None, "universe": top10},
    "core": {"kind": "core", "ref": CoreRef(), "instruments": None, "universe": None},
    "mean-reversion": {
        "kind": "mean-reversion",
        "ref": ReversionRef(),
        "instruments": None,
        "universe": None,
    },
}


def costs(fee_bps: float = 10.0) -> CostModel:
    """The fee alone: no spread, no impact, no volume cap."""
    return CostModel(
        taker_fee_bps=fee_bps, half_spread_bps=0.0, impact_bps_at_1pct=0.0, max_volume_share=None
    )


@cache
def context(case: str, end: str = END) -> MarketContext:
    make = CASES[case]["universe"]
    p = panel() if end == END else panel().slice(end=end)
    return MarketContext.build(p, start=START, end=end, universe=None if make is None else make())


def engine_run(
    case: str, params: dict[str, Any] | None = None, fee_bps: float = 10.0, end: str = END
) -> BacktestResult:
    c = CASES[case]
    ctx = context(case, end)
    strategy = build_strategy(c["kind"], params, instruments=c["instruments"])
    # Instruments without lot sizes or minimum notionals (the default has a 5 USDT minimum).
    instruments = {s: spot(s) for s in ctx.market.symbols}
    config = BacktestConfig(initial_cash=CASH, costs=costs(fee_bps))
    return Backtest(ctx, strategy, config, instruments=instruments).run()


@cache
def default_run(case: str) -> BacktestResult:
    return engine_run(case)


def record_targets(record: dict[str, Any], symbols: list[str]) -> np.ndarray:
    out = np.zeros(len(symbols))
    for s, w in record["targets"].items():
        out[symbols.index(s)] = w
    return out


# --- 1. the engine against the reference ------------------------------------------------


@real_data
@pytest.mark.parametrize("case", list(CASES))
def test_backtest_matches_the_numpy_reference(case: str) -> None:
    c = CASES[case]
    res = default_run(case)
    ctx = context(case)
    universe = None if c["universe"] is None else c["universe"]()
    m = market_of(ctx, panel(), universe)
    ref = reference_run(c["ref"], m, c["instruments"])
    symbols = m.symbols
    index = list(res.equity.index)
    assert index == list(m.index[m.start : m.end + 1])

    # The strategy's target on every bar that decides, traded or not (its telemetry).
    assert res.target_weights is not None
    engine_target = res.target_weights.to_numpy()
    decided = np.isfinite(ref.target).any(axis=1)
    assert (np.isfinite(engine_target).any(axis=1) == decided).all()
    assert np.abs(engine_target[decided] - ref.target[decided]).max() <= TARGET_ATOL

    # (a) every decision record that trades: the bar the band rule says, to its targets.
    trading = [d for d in res.decisions if "targets" in d]
    at = {index.index(pd.Timestamp(d["timestamp"])): d for d in trading}
    assert sorted(at) == sorted(ref.traded)
    worst = max(np.abs(record_targets(d, symbols) - ref.traded[k]).max() for k, d in at.items())
    assert worst <= TARGET_ATOL
    assert not any("guard" in d for d in res.decisions)  # the default limits changed nothing

    # (b) the daily equity curve and the end equity.
    rel = np.abs(res.equity.to_numpy() / ref.equity - 1.0)
    assert rel.max() <= EQUITY_RTOL, (
        f"{case}: equity off by {rel.max():.2e} at {index[rel.argmax()]}"
    )
    assert res.fees_paid == pytest.approx(ref.fees, rel=EQUITY_RTOL)
    # Not a vacuous match: every case trades at least 20 times in the five years.
    assert len(ref.traded) >= 20


# --- 2. no lookahead -------------------------------------------------------------------


@real_data
@pytest.mark.parametrize(
    ("case", "cut"),
    [("trend-top10", "2021-05-19"), ("mean-reversion", "2022-06-15"), ("core", "2021-11-10")],
)
def test_decisions_do_not_change_when_later_data_is_cut(case: str, cut: str) -> None:
    full = default_run(case)
    short = engine_run(case, end=cut)
    # Cut after every listing, so both runs have the same columns: a column fewer changes
    # the float sums of every bar (by 1e-16, not a decision), which the exact comparison
    # of the records below would flag.
    assert context(case, cut).market.symbols == context(case).market.symbols
    cut_at = pd.Timestamp(cut, tz="UTC")
    before = [d for d in full.decisions if pd.Timestamp(d["timestamp"]) < cut_at]
    # The cut run's last bar is marked but decides nothing.
    assert short.decisions == before
    assert len([d for d in before if "targets" in d]) >= 5
    n = len(short.equity)
    assert short.equity.to_numpy().tolist() == full.equity.to_numpy()[:n].tolist()


# --- 3. the strategy that trades most often pays for it ----------------------------------


def fills_per_bar(res: BacktestResult) -> float:
    return len(res.trades) / len(res.equity)


def figures(res: BacktestResult) -> dict[str, float]:
    traded = float((res.trades["quantity"] * res.trades["price"]).sum())
    years = (len(res.equity) - 1) / PPY
    return {
        "return": float(res.equity.iloc[-1] / CASH - 1.0),
        "fees": res.fees_paid,
        # One-way turnover per year: traded notional over mean equity, halved.
        "turnover": traded / 2 / float(res.equity.mean()) / years,
        "fills_per_bar": fills_per_bar(res),
    }


@real_data
def test_the_busiest_strategy_of_the_default_portfolio_pays_for_its_trading() -> None:
    """Of the strategies the default portfolio runs (core and trend, here on the top 10 as
    well), the one that trades most earns more than its fees, and its band pays for itself. Mean reversion trades
    more still and does not pay on this data (its gross return is negative): the
    allocator starves it and the default portfolio leaves it out."""
    rates = {case: fills_per_bar(default_run(case)) for case in CASES}
    busiest = max((c for c in rates if not c.startswith("mean")), key=rates.get)
    net = figures(default_run(busiest))
    gross = figures(engine_run(busiest, fee_bps=0.0))
    no_band = figures(engine_run(busiest, {"band": 0.0}))
    wide = figures(engine_run(busiest, {"band": 0.3}))
    reversion_gross = figures(engine_run("mean-reversion", fee_bps=0.0))
    gross_pnl = gross["return"] * CASH
    # The figures, shown with ``pytest -s`` (and on a failure).
    print(f"\nfills per bar: {', '.join(f'{c} {r:.2f}' for c, r in rates.items())}")
    for name, f in (("net", net), ("gross", gross), ("band 0", no_band), ("band 0.3", wide)):
        print(
            f"{busiest} {name}: return {f['return']:.2%}, fees {f['fees']:,.0f} USDT, "
            f"turnover {f['turnover']:.2f}/yr, {f['fills_per_bar']:.2f} fills/bar"
        )
    print(f"mean-reversion gross of fees: return {reversion_gross['return']:.2%}")
    lost = (gross["return"] - net["return"]) * CASH / gross_pnl
    print(f"fees / gross PnL: {net['fees'] / gross_pnl:.2%}; gross PnL lost to fees: {lost:.2%}")
    assert gross_pnl > 0
    assert net["return"] < gross["return"]
    assert net["fees"] < 0.15 * gross_pnl
    # The band pays for itself: trading to the target on every bar (band 0) turns over
    # more and ends lower than the default band; a wider band turns over less still.
    assert no_band["turnover"] > net["turnover"] > wide["turnover"]
    assert net["return"] > no_band["return"]
    assert reversion_gross["return"] < 0


# --- a part against its docstring, on a hand-made window ----------------------------------


def test_volatility_of_the_returns_there_are() -> None:
    returns = np.full((6, 1), np.nan)
    returns[:3, 0] = [0.01, -0.02, 0.03]  # 3 of a 6-bar window: half of them
    vol = BarView(None, None, None, returns, PPY).volatility(6)  # type: ignore[arg-type]
    assert vol[0] == pytest.approx(np.std([0.01, -0.02, 0.03], ddof=1) * np.sqrt(PPY), rel=1e-12)


def test_volatility_is_nan_with_fewer_than_half_the_window() -> None:
    returns = np.full((5, 1), np.nan)
    returns[:2, 0] = [0.01, -0.02]
    vol = BarView(None, None, None, returns, PPY).volatility(5)  # type: ignore[arg-type]
    assert np.isnan(vol[0])
