"""The cost-aware rule applied bar by bar, as policies use it.

``CostAwareTrader`` turns an observation into the rule's inputs (covariance, expected
costs per asset, volatility regime, trailing trend) and keeps the momentum-delay
counters between bars. Everything it reads is at or before the decision bar.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trimtab.domain.decisions import Assessment, Decision, Observation, Reason
from trimtab.execution.costs import BPS, CostModel
from trimtab.policy.rebalance import (
    CostAwareSettings,
    MarketInputs,
    RebalanceDecision,
    SampleCovariance,
    _covariance,
    cost_aware_rule,
)

# Trailing window of the momentum trend, in days.
TREND_DAYS = 30.0


def expected_costs(
    costs: CostModel,
    notional: np.ndarray,
    quote_volume: np.ndarray,
    half_spread_bps: np.ndarray | None = None,
) -> np.ndarray:
    """Expected cost of market orders per unit traded (fraction of notional): taker fee,
    half-spread and square-root impact at the order's share of the bar's volume
    (``CostModel.slippage``, vectorised)."""
    notional = np.asarray(notional, dtype=float)
    volume = np.asarray(quote_volume, dtype=float)
    # Without estimates every asset has the model's spread: the scalar, broadcast below.
    spread: float | np.ndarray = costs.half_spread_bps
    if half_spread_bps is not None:
        given = np.asarray(half_spread_bps, dtype=float)
        spread = np.where(np.isfinite(given), given, spread)
    # volume > 0 is False for NaN: only +inf needs the isfinite.
    known = (volume > 0) & (volume < np.inf)
    # Divided by a positive finite volume or 1: no division warning to silence. The
    # square root is taken of the positive part (a negative notional's impact is 0
    # below, whatever its root): the same values where they are used, no invalid warning.
    participation = np.where(known, notional / np.where(known, volume, 1.0), 1.0)
    impact = np.where(
        notional > 0,
        costs.impact_bps_at_1pct * np.sqrt(np.fmax(participation, 0.0) / 0.01),
        0.0,
    )
    return costs.fee_rate(maker=False) + (spread + impact) * BPS


def trailing_return(close: np.ndarray, periods_per_year: float, days: float) -> np.ndarray:
    """Return over the last ``days`` of a (time x asset) close history ending now
    (fraction; NaN without that much history)."""
    lag = max(1, round(days * periods_per_year / 365.0))
    if len(close) <= lag:
        return np.full(close.shape[1], np.nan)
    # Closes are validated positive (NaN where not listed): no warning to silence.
    return close[-1] / close[-1 - lag] - 1.0


def window_returns(close: np.ndarray, window: int) -> np.ndarray:
    """Simple returns of the last ``window`` bars of a (time x asset) close history (NaN
    where a close is missing): a new array the caller may change."""
    closes = close[-(window + 1) :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return closes[1:] / closes[:-1] - 1.0


# Up to this many assets the trader builds the N x N matrix: as cheap as the factored
# form at that size, and the arithmetic every pinned backtest figure was made with.
DENSE_MAX_ASSETS = 64

# Returns beyond this size (a broken price) could overflow the factored sums; such a
# window takes the matrix path, whose non-finite entries count as 0.
_SAFE_RETURN = 1e100


def window_covariance(
    returns: np.ndarray, dense_max_assets: int = DENSE_MAX_ASSETS, finite: bool = False
) -> SampleCovariance | np.ndarray:
    """Per-bar covariance of a (bars x assets) window of returns, missing returns already
    0 (zeros under 3 bars). Above ``dense_max_assets`` a ``SampleCovariance`` (linear in
    assets: the matrix is never built); up to it, or for a window with infinite or absurd
    returns, the matrix of ``np.cov``. ``finite``: the window is known finite."""
    n = returns.shape[1]
    if len(returns) <= 2:
        return np.zeros((n, n))
    if n <= dense_max_assets or not float(np.abs(returns).max()) <= _SAFE_RETURN:
        if not (finite or np.isfinite(returns).all()):
            returns = np.nan_to_num(returns)
        cov = _cov_columns(returns)
        return cov if cov.ndim == 2 else np.atleast_2d(cov)
    return SampleCovariance(returns)


def _cov_columns(returns: np.ndarray) -> np.ndarray:
    """``np.cov(returns, rowvar=False)`` of a (bars x assets) window of at least 3 bars,
    the same operations in the same order (so the same bits) without its argument
    handling, which cost more than the arithmetic on a few dozen assets."""
    r = np.array(returns, ndmin=2, dtype=np.float64)
    x = r.T
    if x.shape[0] == 0:
        return np.array([]).reshape(0, 0)
    # x.mean((1,)) is this sum divided by the count (numpy's _mean), without its layers;
    # the sum runs over the same memory in the same order, and the means are taken off
    # r (whose transpose x is) along its contiguous rows. x.T.conj() of reals is x.T.
    r -= np.add.reduce(r, 0) / x.shape[1]
    c = np.dot(x, x.T)
    c *= np.true_divide(1, x.shape[1] - 1)
    return c.squeeze() if x.shape[0] == 1 else c


class CostAwareTrader:
    """Decides, at each bar, whether and how far to trade toward the target weights.

    ``cov_window`` is in bars; ``trend_days`` is the trailing window of the momentum
    trend (converted to bars with the data's bar length).
    """

    def __init__(
        self,
        costs: CostModel | None = None,
        settings: CostAwareSettings | None = None,
        cov_window: int = 60,
        trend_days: float = TREND_DAYS,
    ) -> None:
        if cov_window < 3 or trend_days <= 0:
            raise ValueError("cov_window must be >= 3 bars and trend_days > 0")
        self.costs = costs or CostModel()
        self.settings = settings or CostAwareSettings()
        self.cov_window = cov_window
        self.trend_days = trend_days
        self.periods_per_year = 365.0
        self._delayed: np.ndarray | None = None

    def reset(self, periods_per_year: float) -> None:
        self.periods_per_year = periods_per_year
        self._delayed = None

    def state(self) -> dict[str, Any]:
        """The momentum-delay counters (bars per asset; None before the first bar)."""
        return {"delayed": None if self._delayed is None else self._delayed.tolist()}

    def restore(self, state: dict[str, Any]) -> None:
        delayed = state["delayed"]
        self._delayed = None if delayed is None else np.asarray(delayed, dtype=float)

    def inputs(
        self,
        obs: Observation,
        assessment: Assessment,
        current: np.ndarray,
        target: np.ndarray,
        returns: np.ndarray | None = None,
        clean: bool = False,
    ) -> MarketInputs:
        """The rule's view of the market at ``obs``. ``returns``: the bar's window of
        returns (``window_returns(obs, cov_window)``) when the caller has it already; it
        is changed in place (missing returns set to 0). ``clean``: ``returns`` has no NaN
        and no infinity already (missing returns 0, infinities as ``nan_to_num`` makes
        them)."""
        n = len(target)
        close = obs.history("close")
        if returns is None:
            returns = window_returns(close, self.cov_window)
            clean = False
        if not clean:
            returns[np.isnan(returns)] = 0.0
        # A matrix is wrapped (and checked finite) here, once: the rule uses it as it is.
        cov = _covariance(window_covariance(returns, finite=clean))
        volume = obs.history("quote_volume")[-1]
        spreads = None
        if self.costs.spread == "bars":
            estimate = assessment.values.get("half_spread_bps")
            if estimate is not None:
                spreads = np.fmax(estimate, self.costs.half_spread_bps)
        unit = expected_costs(
            self.costs, np.abs(current - target) * obs.portfolio.equity, volume, spreads
        )
        trend = trailing_return(close, self.periods_per_year, self.trend_days)
        if self._delayed is None or len(self._delayed) != n:
            self._delayed = np.zeros(n)
        return MarketInputs(
            costs=unit,
            cov=cov,
            periods_per_year=self.periods_per_year,
            vol_ratio=assessment.values.get("vol_ratio"),
            trend=trend,
            delayed=self._delayed.copy(),
        )

    def choose(
        self,
        obs: Observation,
        assessment: Assessment,
        target: np.ndarray,
        returns: np.ndarray | None = None,
        clean: bool = False,
    ) -> RebalanceDecision:
        """The rule's choice for ``target``; updates the momentum-delay counters.
        ``returns``, ``clean``: as for ``inputs``."""
        current = obs.portfolio.weights
        market = self.inputs(obs, assessment, current, target, returns, clean)
        choice = cost_aware_rule(current, target, market, self.settings)
        assert self._delayed is not None and choice.bands is not None
        # A trim's wait counts bars delayed by momentum in one excursion outside the
        # band; it ends when the asset is traded or drifts back inside.
        settled = np.abs(current - target) <= choice.bands
        if choice.weights is not None:
            settled[list(choice.traded)] = True
        waited = self._delayed
        if choice.delayed:
            waited = waited.copy()
            waited[list(choice.delayed)] += 1.0  # as adding the bool mask of the waiting
        self._delayed = np.where(settled, 0.0, waited)
        return choice

    def decide(
        self,
        obs: Observation,
        assessment: Assessment,
        target: np.ndarray,
        reasons: list[Reason],
        kind: str = "cost_aware",
        returns: np.ndarray | None = None,
        clean: bool = False,
    ) -> Decision:
        """A hold or a rebalance ``Decision`` with the rule's benefit and cost.
        ``returns``, ``clean``: as for ``inputs``."""
        choice = self.choose(obs, assessment, target, returns, clean)
        values: dict[str, object] = {
            "benefit_bps": choice.benefit * 1e4,
            "cost_bps": choice.cost * 1e4,
        }
        if choice.delayed:
            values["delayed"] = [obs.symbols[j] for j in choice.delayed]
        if choice.weights is None:
            return Decision.hold(*reasons, Reason(kind, choice.reason, values))
        values["assets"] = [obs.symbols[j] for j in choice.traded]
        return Decision.rebalance(choice.weights, *reasons, Reason(kind, choice.reason, values))
