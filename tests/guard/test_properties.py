"""Property tests: hostile targets, random order plans and random paths never get past guard.

A "weight measure" is an asset weight, a cluster's weight, gross, net, or the invested
share of a spot book. The claims:

* ``LimitGuard.check`` either rejects a decision with a broken target, or returns finite,
  non-negative targets no higher than asked that satisfy every weight limit; a second
  pass changes nothing; no decision changes a limit.
* Targets -> ``plan_orders`` -> ``check_orders`` -> fills at the prices: no order above
  ``max_order_notional``, the day's turnover within ``max_daily_turnover``, and after the
  trades no weight measure above the larger of its cap and its value before (orders never
  create or worsen a breach); nothing bought that is not allowed.
* REDUCING never lets a position grow or flip; HALTED lets only full closes out.
* On random equity paths, an ACTIVE breaker never sits past any of its trigger levels.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trimtab.domain import Order, Side, spot
from trimtab.guard.breakers import (
    BreakerConfig,
    CircuitBreaker,
    TradingState,
    filter_orders,
    restrict_targets,
)
from trimtab.guard.limits import ABSURD_WEIGHT, DailyTurnover, LimitGuard, Limits
from trimtab.policy.orders import plan_orders

from ._support import decide, make_obs

TOL = 1e-9
FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

NAN, INF = float("nan"), float("inf")
HOSTILE = st.sampled_from(
    [NAN, INF, -INF, 1e308, -1e308, -1.0, -1e-300, ABSURD_WEIGHT * 1.01, 5e-324, 0.0, 1.0, 50.0]
)
WEIGHT = st.one_of(
    st.floats(0, 1.2),
    st.floats(0, 1.2),
    HOSTILE,
    st.floats(allow_nan=True, allow_infinity=True),
)


@st.composite
def books(draw, min_n: int = 1, max_n: int = 6):
    """A universe, a portfolio on it, clusters, and limits drawn from wide ranges."""
    n = draw(st.integers(min_n, max_n))
    symbols = tuple(f"S{k}USDT" for k in range(n))
    closes = [draw(st.one_of(st.floats(0.01, 1e5), st.just(NAN))) for _ in range(n)]
    qty = [draw(st.one_of(st.just(0.0), st.floats(0, 50))) for _ in range(n)]
    cash = draw(st.floats(0, 2e5))
    marks = np.nan_to_num(np.array(closes))
    if cash + float(np.dot(qty, marks)) <= 1.0:
        cash = 10_000.0
    obs = make_obs(symbols, closes, quantities=qty, cash=cash)
    clusters = {s: draw(st.sampled_from(["a", "b", "c"])) for s in symbols if draw(st.booleans())}
    allowed = draw(st.one_of(st.none(), st.lists(st.sampled_from(symbols), unique=True)))
    limits = Limits(
        max_gross_leverage=draw(st.floats(0.05, 3)),
        max_net_exposure=draw(st.floats(0.05, 3)),
        max_asset_weight=draw(st.floats(0.01, 2)),
        max_cluster_weight=draw(st.floats(0.01, 2)),
        max_order_notional=draw(st.one_of(st.none(), st.floats(1, 1e5))),
        max_daily_turnover=draw(st.one_of(st.none(), st.floats(0.01, 4))),
        min_cash=draw(st.floats(0, 0.9)),
        allowed_symbols=allowed,
    )
    return obs, clusters, limits


def measures(weights: np.ndarray, guard: LimitGuard, obs) -> dict[str, np.ndarray]:
    """Every weight measure, next to the cap it must respect."""
    groups = guard._groups(obs.symbols)
    return {
        "max_asset_weight": weights,
        "max_cluster_weight": np.array([weights[ix].sum() for _, ix in groups]),
        "max_gross_leverage": np.array([np.abs(weights).sum()]),
        "max_net_exposure": np.array([abs(weights.sum())]),
        "invested": np.array([np.abs(weights).sum()]),
    }


def caps(limits: Limits) -> dict[str, float]:
    return {
        "max_asset_weight": limits.max_asset_weight,
        "max_cluster_weight": limits.max_cluster_weight,
        "max_gross_leverage": limits.max_gross_leverage,
        "max_net_exposure": limits.max_net_exposure,
        "invested": 1.0 - limits.min_cash,
    }


def broken(targets: np.ndarray) -> bool:
    return bool((~np.isfinite(targets) | (targets < 0) | (targets > ABSURD_WEIGHT)).any())


@FAST
@given(books(), st.data())
def test_hostile_target_sequences_never_break_a_weight_limit(book, data):
    obs, clusters, limits = book
    guard = LimitGuard(limits, clusters)
    n = len(obs.symbols)
    sequence = data.draw(st.lists(st.lists(WEIGHT, min_size=n, max_size=n), min_size=1, max_size=6))
    for raw in sequence:
        asked = np.array(raw)
        out = guard.check(decide(*raw), obs)
        assert guard.limits == limits  # no decision changes a limit
        if broken(asked):
            assert out.targets is None and out.action == "rejected"
            assert out.guard[-1].rule in {"non_finite", "negative", "absurd"}
            continue
        t = out.targets
        assert np.isfinite(t).all() and (t >= 0).all()
        assert (t <= asked * (1 + TOL) + 1e-15).all()  # never raised
        assert (t[np.isnan(obs.close)] == 0).all()
        for j, s in enumerate(obs.symbols):
            if not limits.symbol_allowed(s):
                assert t[j] == 0
        cap = caps(limits)
        for name, values in measures(t, guard, obs).items():
            assert (values <= cap[name] * (1 + TOL)).all(), (name, values, cap[name])
        assert guard.check(out, obs) is out  # idempotent


def fill(qty: np.ndarray, cash: float, orders: list[Order], prices, symbols):
    """Positions and cash after the orders fill at ``prices`` with no costs."""
    qty = qty.copy()
    col = {s: j for j, s in enumerate(symbols)}
    for o in orders:
        j = col[o.symbol]
        base = o.quantity if o.quantity is not None else o.quote_quantity / prices[j]
        qty[j] += o.side.sign * base
        cash -= o.side.sign * base * prices[j]
    return qty, cash


def order_value(o: Order, prices, symbols) -> float:
    if o.quote_quantity is not None:
        return o.quote_quantity
    return o.quantity * prices[symbols.index(o.symbol)]


@FAST
@given(books(), st.data())
def test_targets_to_orders_to_fills_never_create_or_worsen_a_breach(book, data):
    obs, clusters, limits = book
    guard = LimitGuard(limits, clusters)
    n = len(obs.symbols)
    # Mostly sane targets, so that the order-level limits get work; hostile ones are
    # rejected before any order (the test above).
    raw = data.draw(st.lists(st.one_of(st.floats(0, 1.5), WEIGHT), min_size=n, max_size=n))
    traded_today = data.draw(st.one_of(st.just(0.0), st.floats(0, 3e5)))
    decision = guard.check(decide(*raw), obs)
    if decision.targets is None:
        return
    prices = obs.close
    orders, _ = plan_orders(
        decision.targets, obs.portfolio, prices, obs.symbols, spot, reason="test"
    )
    # The planner may skip trades (here: drop a random subset) and the order limits cut
    # others: what goes out must still fit.
    keep = data.draw(st.lists(st.booleans(), min_size=len(orders), max_size=len(orders)))
    orders = [o for o, k in zip(orders, keep, strict=True) if k]
    out, _ = guard.check_orders(orders, obs, prices, traded_today)
    symbols = list(obs.symbols)
    values = [order_value(o, prices, symbols) for o in out]
    if limits.max_order_notional is not None:
        assert all(v <= limits.max_order_notional * (1 + TOL) for v in values)
    if limits.max_daily_turnover is not None:
        budget = limits.max_daily_turnover * obs.portfolio.equity
        assert traded_today + sum(values) <= max(budget, traded_today) * (1 + TOL) + 1e-6
    for o in out:
        if o.side is Side.BUY:
            assert limits.symbol_allowed(o.symbol)
    px = np.nan_to_num(prices)
    equity = obs.portfolio.cash + float(obs.portfolio.quantities @ px)
    qty, cash = fill(obs.portfolio.quantities, obs.portfolio.cash, out, px, obs.symbols)
    assert cash >= -1e-6 * equity  # a spot book never spends cash it does not have
    before = measures(obs.portfolio.quantities * px / equity, guard, obs)
    after = measures(qty * px / equity, guard, obs)
    cap = caps(limits)
    for name in before:
        bound = np.maximum(cap[name], before[name]) * (1 + TOL) + 1e-12
        assert (after[name] <= bound).all(), (name, before[name], after[name], cap[name])


@FAST
@given(books(min_n=2), st.data())
def test_turnover_over_a_day_of_batches_and_a_price_path(book, data):
    obs0, clusters, limits = book
    limits = limits.model_copy(update={"max_daily_turnover": data.draw(st.floats(0.01, 2))})
    guard = LimitGuard(limits, clusters)
    symbols = obs0.symbols
    prices = np.where(np.isnan(obs0.close), 1.0, obs0.close)
    qty = obs0.portfolio.quantities.copy()
    cash = obs0.portfolio.cash
    day = DailyTurnover()
    t = pd.Timestamp("2024-03-01 00:00", tz="UTC")
    for _ in range(data.draw(st.integers(1, 8))):
        prices = prices * np.exp(
            data.draw(st.lists(st.floats(-0.3, 0.3), min_size=len(symbols), max_size=len(symbols)))
        )
        obs = make_obs(symbols, prices, quantities=qty, cash=cash, ts=t)
        raw_orders = data.draw(
            st.lists(
                st.tuples(st.integers(0, len(symbols) - 1), st.booleans(), st.floats(0.001, 1.0)),
                max_size=6,
            )
        )
        orders = []
        for j, is_buy, share in raw_orders:
            if is_buy:
                orders.append(Order(symbols[j], Side.BUY, quote_quantity=share * 5e4))
            elif qty[j] > 1e-9:
                orders.append(Order(symbols[j], Side.SELL, quantity=share * qty[j]))
        before = day.today(t)
        out, _ = guard.check_orders(orders, obs, prices, before)
        for o in out:
            v = order_value(o, prices, list(symbols))
            if limits.max_order_notional is not None:
                assert v <= limits.max_order_notional * (1 + TOL)
            day.record(t, v)
        budget = limits.max_daily_turnover * obs.portfolio.equity
        assert day.today(t) <= max(budget, before) * (1 + TOL) + 1e-6
        qty, cash = fill(qty, cash, out, prices, symbols)
        t += pd.Timedelta("2h")


ORDERS = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.sampled_from([Side.BUY, Side.SELL]),
        st.booleans(),
        st.floats(1e-6, 20),
    ),
    max_size=10,
)


def make_orders(raw, symbols, positions):
    out = []
    for j, side, exact, amount in raw:
        s = symbols[j]
        if exact and positions[s] != 0:
            amount = abs(positions[s])  # a full close (or, on the wrong side, a flip)
        if side is Side.BUY and not exact:
            out.append(Order(s, side, quote_quantity=amount * 100))
        else:
            out.append(Order(s, side, quantity=amount))
    return out


POSITIONS = st.lists(
    st.one_of(st.just(0.0), st.floats(-20, 20, allow_subnormal=False)), min_size=4, max_size=4
)
PRICES = st.lists(st.floats(0.5, 500), min_size=4, max_size=4)


@FAST
@given(POSITIONS, PRICES, ORDERS)
def test_reducing_never_grows_or_flips_a_position(pos, px, raw):
    symbols = ("AUSDT", "BUSDT", "CUSDT", "DUSDT")
    positions = dict(zip(symbols, pos, strict=True))
    prices = dict(zip(symbols, px, strict=True))
    allowed, blocked = filter_orders(
        TradingState.REDUCING, make_orders(raw, symbols, positions), positions, prices
    )
    assert len(allowed) + len(blocked) == len(raw)
    now = dict(positions)
    for o in allowed:
        old = now[o.symbol]
        base = o.quantity if o.quantity is not None else o.quote_quantity / prices[o.symbol]
        new = old + o.side.sign * base
        assert abs(new) <= abs(old) * (1 + TOL)
        assert new * old >= -((TOL * old) ** 2) - 1e-300  # never past zero beyond float noise
        now[o.symbol] = new
    for s in symbols:
        assert abs(now[s]) <= abs(positions[s]) * (1 + TOL)


@FAST
@given(POSITIONS, PRICES, ORDERS)
def test_halted_lets_out_only_full_closes(pos, px, raw):
    symbols = ("AUSDT", "BUSDT", "CUSDT", "DUSDT")
    positions = dict(zip(symbols, pos, strict=True))
    prices = dict(zip(symbols, px, strict=True))
    allowed, _ = filter_orders(
        TradingState.HALTED, make_orders(raw, symbols, positions), positions, prices
    )
    closed = set()
    for o in allowed:
        p = positions[o.symbol]
        assert o.symbol not in closed  # one close per position
        assert p != 0 and o.quantity is not None
        assert abs(o.quantity - abs(p)) <= TOL * abs(p)  # equal up to float noise
        assert o.side is (Side.SELL if p > 0 else Side.BUY)
        closed.add(o.symbol)


@FAST
@given(books(), st.data())
def test_breaker_targets_never_add_exposure(book, data):
    obs, _, _ = book
    n = len(obs.symbols)
    raw = data.draw(st.lists(WEIGHT, min_size=n, max_size=n))
    current = obs.portfolio.weights
    reducing = restrict_targets(TradingState.REDUCING, decide(*raw), obs).targets
    assert (reducing >= 0).all() and (reducing <= current + 1e-15).all()
    halted = restrict_targets(TradingState.HALTED, decide(*raw), obs).targets
    assert ((halted == 0) | (halted == current)).all()


@settings(max_examples=80, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(st.floats(-0.25, 0.25), st.booleans(), st.booleans(), st.integers(0, 4)),
        min_size=1,
        max_size=80,
    ),
    st.floats(0.05, 0.6),
    st.integers(0, 6),
    st.booleans(),
)
def test_an_active_breaker_is_never_past_a_trigger(path, kill, cooldown, auto):
    cfg = BreakerConfig(
        daily_loss_limit=0.08,
        loss_streak=4,
        stale_data_bars=2,
        max_exchange_errors=3,
        cooldown=cooldown,
        auto_resume=auto,
    )
    b = CircuitBreaker(cfg, Limits(max_drawdown=kill))
    t = pd.Timestamp("2024-03-01", tz="UTC")
    equity = peak = day_start = 100.0
    day = t.normalize()
    last = TradingState.ACTIVE
    for k, (ret, stale, error, n_errors) in enumerate(path):
        if k:
            equity *= 1 + ret
        if t.normalize() != day:
            day, day_start = t.normalize(), equity
        peak = max(peak, equity)
        errors = n_errors if error else 0
        changes = b.update(t, equity, peak, day_start, not stale, errors)
        for c in changes:
            assert c.old is last
            last = c.new
        assert b.state is last
        m = b.metrics
        if b.state is TradingState.ACTIVE:
            assert m["drawdown"] < kill - 1e-12
            assert m["daily_loss"] < 0.08 - 1e-12
            assert m["loss_streak"] < 4 and m["stale_bars"] < 2 and errors < 3
        if not auto and any(c.new is TradingState.HALTED for c in b.changes):
            assert b.state is TradingState.HALTED  # only a person lifts a halt
        t += pd.Timedelta("6h")
    assert math.isfinite(b.metrics["drawdown"])
