"""Hostile property test: no fill breaks a configured limit, whatever the model or market.

Hypothesis draws a market (2-4 assets, gaps, 1000x one-bar spikes, opens that gap far
from the last close, zero- and thin-volume bars, listings that start late), a policy
whose targets are hostile (NaN, inf, 1e300, negatives, huge weights, flips between all
in and all out) and a set of limits (``max_order_notional``, ``max_asset_weight``,
``min_cash``, ``max_daily_turnover``). The real ``Backtest`` runs it with a
``SafetyLayer``; then every fill in ``trades`` is checked independently, replaying the
ledger from the trades alone:

* its notional is at most ``max_order_notional``;
* the UTC day's turnover, this fill included, is at most ``max_daily_turnover`` times the
  equity at that moment;
* a buy leaves its asset's weight, the invested share (gross) and the cash share within
  the larger of their limit and their value before the fill (it creates or worsens no
  breach; prices move the book between bars, which is drift, not a fill).

"At that moment" means: cash and holdings as booked so far, the fill's asset at its fill
price, every other holding at the bar's open (the last close on a bar without trading).
Tolerance: relative 1e-9 (float rounding between the check and the booking; fees and
slippage are part of the check, not of the tolerance). Forced closes of delisted assets
count in the day's turnover but are not themselves checked: no limit can refuse them.
``bench/soak_fill_limits.py`` runs the same check over >= 10,000 sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trimtab.data.panel import Panel
from trimtab.domain import spot
from trimtab.domain.decisions import Decision, Reason
from trimtab.engine.backtest import Backtest, BacktestConfig, BacktestResult
from trimtab.engine.context import MarketContext
from trimtab.execution.costs import CostModel
from trimtab.execution.market import MarketArrays
from trimtab.guard.limits import Limits
from trimtab.guard.safety import SafetyLayer
from trimtab.policy.policies import StatelessPolicy

REL_TOL = 1e-9
INITIAL_CASH = 100_000.0
NAN, INF = float("nan"), float("inf")


@dataclass(frozen=True)
class Scenario:
    """One hostile sequence: a panel, targets per step, limits, costs, the lot size."""

    panel: Panel
    targets: tuple[tuple[float, ...], ...]
    limits: Limits
    costs: CostModel
    lot_size: float


@dataclass
class Checked:
    fills: int = 0
    breaches: list[str] = field(default_factory=list)


class ScriptedPolicy(StatelessPolicy):
    """Returns the scenario's targets step by step, whatever they are."""

    name = "hostile-script"

    def __init__(self, targets: tuple[tuple[float, ...], ...]) -> None:
        self.targets = targets

    def decide(self, obs, assessment) -> Decision:
        row = self.targets[obs.step % len(self.targets)]
        return Decision.rebalance(np.array(row, dtype=float), Reason("test", "hostile"))


HOSTILE_WEIGHT = st.one_of(
    st.floats(0, 1),
    st.sampled_from([0.0, 1.0, 0.5, NAN, INF, -INF, 1e300, -0.3, 1e6, 5.0, 5e-324]),
)


EVENTS = ("normal",) * 6 + ("gap", "spike", "gap_open", "zero_volume", "thin")


@st.composite
def scenarios(draw) -> Scenario:
    """Hypothesis draws the structure (events, targets, limits, costs); a seeded NumPy
    generator draws the returns and sizes, which keeps each example cheap."""
    n = draw(st.integers(2, 4))
    steps = draw(st.integers(6, 16))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (steps, n)
    o, h, lo, c = (np.full(shape, np.nan) for _ in range(4))
    qv = np.full(shape, np.nan)
    has_bar = np.zeros(shape, dtype=bool)
    for j in range(n):
        # The first asset trades from the start; the others may list later.
        start = 0 if j == 0 else draw(st.integers(0, steps // 2))
        events = draw(st.lists(st.sampled_from(EVENTS), min_size=steps, max_size=steps))
        price = float(rng.choice([0.0001, 0.5, 30.0, 2_000.0, 60_000.0]))
        prev = None
        for t in range(start, steps):
            event = events[t]
            if event == "gap" and j > 0 and prev is not None:
                # No bar: a flat, zero-volume, untradable bar at the last close.
                o[t, j] = h[t, j] = lo[t, j] = c[t, j] = prev
                qv[t, j] = 0.0
                continue
            price = max(price * (1 + rng.uniform(-0.3, 0.3)), 1e-6)
            close = price * 1000 if event == "spike" else price
            if prev is None:
                open_ = close
            elif event == "gap_open":
                open_ = prev * float(rng.choice([0.01, 0.2, 5.0, 1000.0]))
            else:
                open_ = prev
            volume = {"zero_volume": 0.0, "thin": 5_000.0}.get(
                event, float(rng.choice([1e5, 1e6, 1e8]))
            )
            o[t, j], c[t, j], qv[t, j] = open_, close, volume
            h[t, j], lo[t, j] = max(open_, close) * 1.01, min(open_, close) * 0.99
            has_bar[t, j] = True
            prev = close
    index = pd.date_range("2024-01-01", periods=steps, freq="1D", tz="UTC", name="timestamp")
    cols = [f"S{k}USDT" for k in range(n)]
    frame = lambda a: pd.DataFrame(a, index=index, columns=cols)  # noqa: E731
    panel = Panel(
        open=frame(o),
        high=frame(h),
        low=frame(lo),
        close=frame(c),
        volume=frame(qv / c),
        quote_volume=frame(qv),
        has_bar=frame(has_bar),
        timeframe="1d",
    )
    targets = tuple(
        tuple(draw(HOSTILE_WEIGHT) for _ in range(n)) for _ in range(draw(st.integers(1, 5)))
    )
    limits = Limits(
        max_order_notional=draw(st.one_of(st.none(), st.floats(500, 60_000))),
        max_asset_weight=draw(st.floats(0.05, 1.0)),
        min_cash=draw(st.floats(0.0, 0.6)),
        max_daily_turnover=draw(st.one_of(st.none(), st.floats(0.05, 3.0))),
        max_drawdown=0.99,
    )
    costs = CostModel(
        taker_fee_bps=draw(st.sampled_from([0.0, 10.0, 100.0])),
        half_spread_bps=draw(st.sampled_from([0.0, 5.0])),
        impact_bps_at_1pct=draw(st.sampled_from([0.0, 10.0])),
        fee_currency=draw(st.sampled_from(["quote", "received"])),
    )
    return Scenario(panel, targets, limits, costs, draw(st.sampled_from([0.0, 0.001, 1.0])))


def run_scenario(scenario: Scenario) -> tuple[BacktestResult, pd.DataFrame]:
    """The real backtest over the scenario, with the limits in a SafetyLayer."""
    panel = scenario.panel
    market = MarketArrays.from_panel(panel)
    # Features are not used by a scripted policy: skip computing them.
    ctx = MarketContext(panel, market, {}, market.live.copy(), 0, len(panel.index) - 1)
    instruments = {s: spot(s, lot_size=scenario.lot_size, min_notional=5.0) for s in panel.symbols}
    backtest = Backtest(
        ctx,
        ScriptedPolicy(scenario.targets),
        BacktestConfig(initial_cash=INITIAL_CASH, costs=scenario.costs),
        instruments=instruments,
        safety=SafetyLayer(limits=scenario.limits),
    )
    return backtest.run(), panel.open


def check_fills(result: BacktestResult, opens: pd.DataFrame, limits: Limits) -> Checked:
    """Every fill against the limits at its price, replaying the ledger from the trades."""
    out = Checked()
    cash = INITIAL_CASH
    held: dict[str, float] = {}
    day, traded = None, 0.0
    for row in result.trades.itertuples(index=False):
        ts, symbol, qty, price = row.timestamp, row.symbol, float(row.quantity), float(row.price)
        notional = qty * price
        marks = {s: float(opens.at[ts, s]) for s in held}
        marks[symbol] = price
        equity = cash + sum(q * marks[s] for s, q in held.items())
        if ts.normalize() != day:
            day, traded = ts.normalize(), 0.0
        traded += notional
        forced = str(row.reason).startswith("delisted")
        if not forced:
            out.fills += 1
            where = f"{ts:%Y-%m-%d} {row.side} {qty:g} {symbol} at {price:g}"
            cap = limits.max_order_notional
            if cap is not None and notional > cap * (1 + REL_TOL):
                out.breaches.append(f"{where}: notional {notional:,.2f} > {cap:,.2f}")
            t_cap = limits.max_daily_turnover
            if t_cap is not None and traded > t_cap * equity * (1 + REL_TOL) + 1e-9:
                out.breaches.append(
                    f"{where}: day's turnover {traded:,.2f} > {t_cap:.4f} x {equity:,.2f}"
                )
        base_fee = row.fee_currency != "USDT"
        own_before = held.get(symbol, 0.0) * price
        invested_before = equity - cash
        if row.side == "buy":
            cash -= notional + (0.0 if base_fee else float(row.fee))
            held[symbol] = held.get(symbol, 0.0) + qty - (float(row.fee) if base_fee else 0.0)
        else:
            cash += notional - float(row.fee)
            held[symbol] = held.get(symbol, 0.0) - qty
        if row.side == "buy" and not forced:
            after = equity - float(row.fee_quote)
            checks = (
                (
                    "max_asset_weight",
                    held[symbol] * price / after,
                    own_before / equity,
                    limits.max_asset_weight,
                ),
                (
                    "max_gross_leverage",
                    (after - cash) / after,
                    invested_before / equity,
                    limits.max_gross_leverage,
                ),
                ("min_cash", 1 - cash / after, invested_before / equity, 1 - limits.min_cash),
            )
            for rule, value, before, cap in checks:
                if value > max(cap, before) * (1 + REL_TOL) + 1e-12:
                    out.breaches.append(
                        f"{where}: {rule} measure {value:.6f} > max(limit {cap:.6f}, "
                        f"before {before:.6f})"
                    )
        if cash < -1e-6:
            out.breaches.append(f"{ts:%Y-%m-%d}: cash {cash:,.2f} < 0")
    return out


SUITE = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@SUITE
@given(scenarios())
def test_no_fill_breaks_a_configured_limit(scenario):
    result, opens = run_scenario(scenario)
    checked = check_fills(result, opens, scenario.limits)
    assert not checked.breaches, "\n".join(checked.breaches[:5])


def test_the_spot_fast_path_allows_exactly_what_the_full_check_allows(daily_panel, monkeypatch):
    # Default limits on a spot book: the fill guard skips its search, because the ledger
    # bounds gross at 1x. The full search must allow the same fills, to the bit.
    from trimtab.engine.backtest import Backtest, BacktestConfig
    from trimtab.engine.context import MarketContext
    from trimtab.execution.costs import CostModel
    from trimtab.guard import limits as limits_module
    from trimtab.policy import make_policy

    panel = daily_panel.select(["BTCUSDT", "ETHUSDT", "XRPUSDT", "ADAUSDT"])
    ctx = MarketContext.build(panel, start="2021-01-01", end="2021-12-31")

    def run():
        policy = make_policy("equal-weight", rebalance="threshold:0.02")
        return Backtest(ctx, policy, BacktestConfig(costs=CostModel(taker_fee_bps=25))).run()

    fast = run()
    monkeypatch.setattr(limits_module, "_only_ledger_bounds", lambda lim: False)
    full = run()
    assert len(fast.trades) > 20
    pd.testing.assert_frame_equal(fast.trades, full.trades)
    pd.testing.assert_series_equal(fast.equity, full.equity)
    assert fast.rejections.equals(full.rejections)
