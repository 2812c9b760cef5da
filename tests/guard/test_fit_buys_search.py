"""The guard's post-trade buy search gives, to the bit, the factor of a plain bisection.

``LimitGuard._fit_buys`` bisects for the largest factor on the buys that keeps every
weight measure within its cap. It asks each measure once at f = 1 and, on a long book
(weights >= 0 that only grow with f), settles most steps from two answers either side of
a linear estimate. This test restates the plain search (every measure at every one of
the 60 steps) and compares scales and actions on random plans: spot and perpetual books,
clusters, tight and loose caps, a missing price.
"""

import numpy as np
import pandas as pd

from trimtab.domain import Order, Side
from trimtab.domain.decisions import Observation, PortfolioState
from trimtab.guard.limits import _TOL, LimitGuard, Limits


def plain_factor(guard, kept, values, cols, scale, obs, prices):
    """The factor on the buys by the plain 60-step bisection (1.0: nothing breaks, None:
    the book cannot be valued)."""
    lim = guard.limits
    n = len(obs.symbols)
    is_buy = np.array([o.side is Side.BUY for o in kept]) & (scale > 0)
    px = np.where(np.isfinite(prices) & (prices > 0), prices, 0.0)
    pre = obs.portfolio.quantities * px
    cash = float(obs.portfolio.cash)
    equity = cash + float(pre.sum())
    if not (np.all(np.isfinite(pre)) and np.isfinite(equity) and equity > 0):
        return None
    signed = np.array([v if o.side is Side.BUY else -v for o, v in zip(kept, values, strict=True)])
    amounts = signed * scale
    sells = np.bincount(cols, weights=np.where(is_buy, 0.0, amounts), minlength=n)
    buys = np.bincount(cols, weights=np.where(is_buy, amounts, 0.0), minlength=n)
    if guard.spot:
        sells = np.maximum(sells, -np.maximum(pre, 0.0))
    w0 = pre / equity
    measures = [
        (lambda w: w, lim.max_asset_weight),
        (lambda w: guard._cluster_sums(obs.symbols, w), lim.max_cluster_weight),
        (lambda w: np.array([np.abs(w).sum()]), lim.max_gross_leverage),
        (lambda w: np.array([abs(w.sum())]), lim.max_net_exposure),
    ]
    if guard.spot:
        measures.append(
            (
                lambda w: np.array([1.0 - (cash - (w * equity - pre).sum()) / equity]),
                1.0 - lim.min_cash,
            )
        )
    caps = [(m, np.maximum(cap, m(w0))) for m, cap in measures]

    def breaks(f, slack):
        w = (pre + sells + f * buys) / equity
        return any(not np.all(m(w) <= cap * slack) for m, cap in caps)

    if not breaks(1.0, 1 + _TOL):
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if not breaks(mid, 1.0) else (lo, mid)
    return lo


def random_case(rng):
    n = int(rng.integers(2, 30))
    symbols = tuple(f"S{j}USDT" for j in range(n))
    spot = bool(rng.random() < 0.75)
    quantities = rng.uniform(0, 10, n) * (rng.random(n) < 0.6)
    if not spot:
        quantities = quantities * rng.choice([-1.0, 1.0], n)
    prices = rng.uniform(0.5, 100, n)
    if rng.random() < 0.05:
        prices[rng.integers(n)] = np.nan
    cash = float(rng.uniform(0, 500)) if spot else float(rng.uniform(-50, 500))
    equity = cash + float(np.nansum(quantities * prices))
    portfolio = PortfolioState(equity, cash, quantities, prices, equity)
    obs = Observation(
        0,
        pd.Timestamp("2021-01-01", tz="UTC"),
        symbols,
        {"close": prices[None, :]},
        {},
        np.ones(n, bool),
        np.ones(n, bool),
        portfolio,
        0,
    )
    kept, values, cols = [], [], []
    for _ in range(int(rng.integers(1, 2 * n))):
        j = int(rng.integers(n))
        side = Side.BUY if rng.random() < 0.6 else Side.SELL
        qty = float(rng.uniform(0.01, 5))
        kept.append(Order(symbols[j], side, quantity=qty))
        values.append(qty * (prices[j] if np.isfinite(prices[j]) else 1.0))
        cols.append(j)
    scale = np.where(rng.random(len(kept)) < 0.1, rng.uniform(0, 1, len(kept)), 1.0)
    limits = Limits(
        max_asset_weight=float(rng.choice([1.0, 0.3, 0.1])),
        max_cluster_weight=float(rng.choice([1.0, 0.4])),
        max_gross_leverage=float(rng.choice([1.0, 2.0, 0.8])),
        max_net_exposure=float(rng.choice([1.0, 0.9])),
        min_cash=float(rng.choice([0.0, 0.05])),
    )
    clusters = {s: f"c{j % 3}" for j, s in enumerate(symbols) if rng.random() < 0.7}
    guard = LimitGuard(limits, clusters, spot=spot)
    return guard, kept, values, cols, scale, obs, prices


def test_the_search_gives_the_plain_bisections_factor_to_the_bit():
    rng = np.random.default_rng(20261202)
    searched = 0
    for _ in range(1500):
        guard, kept, values, cols, scale, obs, prices = random_case(rng)
        want = plain_factor(guard, kept, values, cols, scale, obs, prices)
        got, actions = scale.copy(), []
        guard._fit_buys(kept, values, cols, got, obs, prices, actions)
        is_buy = np.array([o.side is Side.BUY for o in kept]) & (scale > 0)
        if not is_buy.any():
            assert np.array_equal(got, scale) and not actions
            continue
        expected = scale.copy()
        expected[is_buy] *= 0.0 if want is None else want
        assert np.array_equal(got, expected)
        if want is not None and want < 1.0:
            searched += 1
            assert f"buys scaled by {want:.4f}" in actions[0].message
    assert searched > 500  # the search ran, on both kinds of book
