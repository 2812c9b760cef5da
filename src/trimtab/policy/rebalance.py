"""Rebalancing rules: when and how far to trade from holdings toward target weights.

All rules see the same inputs (current and target weights; for the cost-aware rule also
the assets' covariance and trading costs) and return the weights to trade to, with the
reasons. Weights are fractions of equity; costs are fractions of traded notional;
covariances are per bar and annualised with ``periods_per_year`` (365-day years).

- ``calendar:F``: trade all the way to target on the first bar of each UTC period F
  (daily, weekly, monthly), never in between.
- ``threshold:X``: trade all the way to target whenever any asset's absolute weight drift
  exceeds X (e.g. 0.05).
- ``cost-aware``: a no-trade band around each target weight, in the spirit of Leland's
  no-trade region: its half-width is ``k * c**(1/3) * w (1 - w) * sigma``, with c the
  asset's cost per unit traded (Leland's cube root), w its target weight and sigma the
  annualised volatility of its return against the rest of the target book.
  ``w (1 - w) * sigma`` is how fast the weight drifts, so the band allows a given time's
  worth of drift whatever the asset's volatility; an asset that moves with the others
  drifts slowly and gets a narrow band, a lone mover a wide one. (Leland's exponent 2/3
  on the drift speed gave high-volatility books too narrow bands: more turnover than a
  monthly calendar for less tracking error; see ``bench/compare_rebalance.py``.) The
  bands tighten in stressed regimes and widen for rising assets in calm ones; trimming
  a strongly trending winner may wait a bounded time. An asset outside its band trades
  to the band's edge, or part of the way to target, and the whole trade is made only if
  the tracking variance it removes, priced at ``risk_aversion`` over ``horizon_days``,
  exceeds its cost. Both numbers are in the decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import isfinite
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from trimtab.data.calendar import FREQUENCIES


@dataclass(frozen=True)
class RebalanceDecision:
    """Weights to trade to (None: no trade) and the numbers behind the choice.

    ``benefit`` and ``cost`` are fractions of equity; ``bands`` the half-widths used
    (weight units) and ``regime_factor`` the regime's multiplier in them; ``traded`` and
    ``delayed`` index the assets traded and the trims left waiting by the momentum delay.
    """

    weights: np.ndarray | None
    reason: str
    benefit: float = 0.0
    cost: float = 0.0
    traded: tuple[int, ...] = ()
    delayed: tuple[int, ...] = ()
    bands: np.ndarray | None = None
    regime_factor: np.ndarray | None = None


class CostAwareSettings(BaseModel):
    """Settings of the cost-aware rule: the ``rebalance:`` section of the configuration.

    ``band_scale`` is the constant k of the band (see the module docstring) and
    ``min_band`` its floor (weight units). ``trade_fraction`` is how far past the band's
    edge toward target a trade goes: 0 stops at the edge, 1 goes all the way.
    ``risk_aversion`` prices a unit of annualised tracking variance held for
    ``horizon_days``.

    Regime: where an asset's short/long volatility ratio is at least ``stressed_ratio``
    its band is multiplied by ``stressed_factor`` (protect capital); where it is at most
    ``calm_ratio`` and the asset's trailing return is positive, by ``calm_trend_factor``
    (let winners run).

    Momentum delay: an overweight asset whose trailing return exceeds
    ``momentum_return`` is not trimmed for up to ``max_delay_bars`` bars in a row, unless
    its drift passes ``max_delay_drift`` times its band.

    A drift beyond ``force_multiple`` times an asset's band is traded even when the
    benefit check says it does not pay: the check prices marginal trades, it must not
    let a book wander arbitrarily far from what the person asked for.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    band_scale: float = 4.0
    min_band: float = 0.002
    trade_fraction: float = 0.0
    risk_aversion: float = 3.0
    horizon_days: float = 30.0
    stressed_ratio: float = 1.5
    stressed_factor: float = 0.5
    calm_ratio: float = 0.9
    calm_trend_factor: float = 1.5
    momentum_return: float = 0.20
    max_delay_bars: int = 10
    max_delay_drift: float = 2.0
    force_multiple: float = 3.0

    @model_validator(mode="after")
    def _in_range(self) -> CostAwareSettings:
        positive = ("band_scale", "risk_aversion", "horizon_days", "stressed_ratio")
        problems = [
            f"{n} must be > 0 (got {getattr(self, n)})"
            for n in positive
            if not getattr(self, n) > 0
        ]
        if not 0 <= self.trade_fraction <= 1:
            problems.append(f"trade_fraction must be in [0, 1] (got {self.trade_fraction})")
        if not 0 <= self.min_band < 1:
            problems.append(f"min_band must be in [0, 1) (got {self.min_band})")
        if not 0 < self.stressed_factor <= 1:
            problems.append(f"stressed_factor must be in (0, 1] (got {self.stressed_factor})")
        if not self.calm_trend_factor >= 1:
            problems.append(f"calm_trend_factor must be >= 1 (got {self.calm_trend_factor})")
        if not self.calm_ratio < self.stressed_ratio:
            problems.append("calm_ratio must be below stressed_ratio")
        if not self.force_multiple >= 1:
            problems.append(f"force_multiple must be >= 1 (got {self.force_multiple})")
        if self.max_delay_bars < 0 or self.max_delay_drift < 1:
            problems.append("max_delay_bars must be >= 0 and max_delay_drift >= 1")
        if problems:
            raise ValueError("cost-aware settings: " + "; ".join(problems))
        return self


class SampleCovariance:
    """The sample covariance of a (bars x assets) window of returns, never built.

    The rule needs only the diagonal, products with a vector and quadratic forms; each
    is computed from the demeaned returns in O(bars x assets), where the N x N matrix
    costs O(bars x assets^2) to build and O(assets^2) to use. The figures are those of
    ``np.cov(returns, rowvar=False)`` (ddof 1) up to float rounding. ``returns`` must be
    finite; with fewer than 3 bars the covariance is zero, as the trader has always
    used. ``matrix()`` builds the full matrix (for tests and small books).
    """

    def __init__(self, returns: np.ndarray) -> None:
        r = np.asarray(returns, dtype=float)
        if r.ndim != 2:
            raise ValueError(f"returns must be (bars x assets), got shape {r.shape}")
        self.n_assets = r.shape[1]
        if len(r) > 2:
            self._x = (r - r.mean(axis=0)) * (1.0 / np.sqrt(len(r) - 1))
        else:
            self._x = np.zeros((0, self.n_assets))

    def diagonal(self) -> np.ndarray:
        return np.einsum("ij,ij->j", self._x, self._x)

    def dot(self, w: np.ndarray) -> np.ndarray:
        """``cov @ w``."""
        return self._x.T @ (self._x @ w)

    def quadratic(self, w: np.ndarray) -> float:
        """``w @ cov @ w``."""
        y = self._x @ w
        return float(y @ y)

    def matrix(self) -> np.ndarray:
        return self._x.T @ self._x


class _DenseCovariance:
    """A given covariance matrix behind the ``SampleCovariance`` interface; entries
    that are NaN or infinite count as 0."""

    def __init__(self, cov: Any) -> None:
        c = np.asarray(cov, dtype=float)
        if c.ndim != 2:
            c = np.atleast_2d(c)
        # A finite sum means every entry is finite (a NaN or an infinity stays in it):
        # one reduction instead of a copy; a sum that overflows takes the copy too.
        self._c = c if isfinite(float(np.add.reduce(c, axis=None))) else _finite(c, 0.0)
        self.n_assets = self._c.shape[1]

    def diagonal(self) -> np.ndarray:
        return self._c.diagonal()

    def dot(self, w: np.ndarray) -> np.ndarray:
        return self._c @ w

    def quadratic(self, w: np.ndarray) -> float:
        return float(w @ self._c @ w)

    def matrix(self) -> np.ndarray:
        return self._c


def _covariance(cov: Any) -> SampleCovariance | _DenseCovariance:
    return cov if isinstance(cov, SampleCovariance | _DenseCovariance) else _DenseCovariance(cov)


@dataclass(frozen=True)
class MarketInputs:
    """What the cost-aware rule knows about the assets at the decision bar.

    ``costs``: expected cost per unit traded (fraction of notional: fee, half-spread,
    impact); ``cov``: per-bar covariance of returns, a matrix or a ``SampleCovariance``
    (which the rule uses without building the matrix; the trader hands its matrix
    already checked, as ``_covariance`` wraps it); ``vol_ratio``: short/long
    volatility (1 = normal); ``trend``: trailing return (fraction); ``delayed``: bars
    each asset's trim has already waited. The last three are optional.
    """

    costs: np.ndarray
    cov: np.ndarray | SampleCovariance
    periods_per_year: float = 365.0
    vol_ratio: np.ndarray | None = None
    trend: np.ndarray | None = None
    delayed: np.ndarray | None = None


def parse_rule(text: str) -> tuple[str, str | float | None]:
    """``calendar:monthly`` -> ("calendar", "monthly"); ``threshold:0.05`` ->
    ("threshold", 0.05); ``cost-aware`` -> ("cost-aware", None)."""
    kind, _, arg = text.strip().partition(":")
    if kind == "calendar" and arg in FREQUENCIES:
        return kind, arg
    if kind == "threshold":
        try:
            x = float(arg)
        except ValueError:
            x = -1.0
        if 0 < x < 1:
            return kind, x
    if kind == "cost-aware" and not arg:
        return kind, None
    raise ValueError(
        f"bad --rebalance {text!r}: use calendar:daily|weekly|monthly|quarterly, "
        "threshold:X with 0 < X < 1 (absolute weight drift), or cost-aware"
    )


def threshold_rule(current: np.ndarray, target: np.ndarray, threshold: float) -> RebalanceDecision:
    drift = np.abs(current - target)
    worst = int(np.argmax(drift)) if len(drift) else 0
    if len(drift) and drift[worst] > threshold:
        return RebalanceDecision(
            target,
            f"drift {drift[worst]:.1%} above the {threshold:.0%} threshold",
            traded=tuple(np.flatnonzero(drift > 1e-12)),
        )
    return RebalanceDecision(
        None, f"largest drift {drift.max(initial=0):.1%} within the {threshold:.0%} threshold"
    )


try:  # np.clip(a, 0.0, 1.0) of a float array is this ufunc, behind two Python layers
    from numpy._core.umath import clip as _clip_ufunc
except ImportError:  # pragma: no cover - another NumPy layout
    _clip_ufunc = None


def _clip01(a: np.ndarray) -> np.ndarray:
    """``np.clip(a, 0.0, 1.0)`` of a float array."""
    return np.clip(a, 0.0, 1.0) if _clip_ufunc is None else _clip_ufunc(a, 0.0, 1.0)


def _finite(values: Any, fill: float) -> np.ndarray:
    """``values`` as floats with NaN and infinities replaced by ``fill`` (one C pass)."""
    a = np.asarray(values, dtype=float)
    return np.where(np.isfinite(a), a, fill)


def relative_volatility(
    cov: np.ndarray | SampleCovariance, target: np.ndarray, periods_per_year: float
) -> np.ndarray:
    """Annualised volatility of each asset's return minus that of the rest of the target
    book (the other weights renormalised, cash earning nothing)."""
    c = _covariance(cov)
    w = np.asarray(target, dtype=float)
    var = c.diagonal()
    sw = c.dot(w)
    rest = 1.0 - w
    if rest.min() > 1e-9:  # every asset has a rest of the book (False on a NaN)
        cross = (sw - w * var) / rest
        rest_var = (w @ sw - 2 * w * sw + w**2 * var) / rest**2
    else:
        some_rest = rest > 1e-9
        safe = np.where(some_rest, rest, 1.0)
        cross = np.where(some_rest, (sw - w * var) / safe, 0.0)
        rest_var = np.where(some_rest, (w @ sw - 2 * w * sw + w**2 * var) / safe**2, 0.0)
    # np.clip(x, 0.0, None) is np.maximum(x, 0.0), through two Python layers.
    rel = np.maximum(var - 2 * cross + rest_var, 0.0)
    return np.sqrt(rel * periods_per_year)


def no_trade_bands(
    target: np.ndarray,
    market: MarketInputs,
    settings: CostAwareSettings,
    finite_costs: np.ndarray | None = None,
) -> np.ndarray:
    """Half-widths of the no-trade bands (weight units), before the regime adjustment.
    ``finite_costs``: ``market.costs`` with NaN and infinities as 0, if already made."""
    w = _clip01(np.asarray(target, dtype=float))
    sigma = relative_volatility(market.cov, w, market.periods_per_year)
    if finite_costs is None:
        finite_costs = _finite(market.costs, 0.0)
    c = np.maximum(finite_costs, 0.0)
    raw = settings.band_scale * np.cbrt(c) * w * (1 - w) * sigma
    floor = settings.min_band
    if floor > 0:
        # np.maximum(_finite(raw, floor), floor): fmax drops NaN and -inf for the floor,
        # and a positive floor leaves no sign of zero to choose; only +inf is left.
        bands = np.fmax(raw, floor)
        if bands.max() == np.inf:
            bands[bands == np.inf] = floor
        return bands
    return np.maximum(_finite(raw, floor), floor)


def regime_bands(
    bands: np.ndarray,
    market: MarketInputs,
    settings: CostAwareSettings,
    finite_trend: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Bands after the regime adjustment, and the factor applied to each.
    ``finite_trend``: ``market.trend`` with NaN and infinities as 0, if already made."""
    factor = np.ones(len(bands))
    if market.vol_ratio is None:
        return bands, factor
    s = settings
    ratio = _finite(market.vol_ratio, 1.0)
    if market.trend is not None and finite_trend is None:
        finite_trend = _finite(market.trend, 0.0)
    rising = finite_trend > 0 if market.trend is not None else np.zeros(len(bands), dtype=bool)
    factor = np.where(ratio >= s.stressed_ratio, s.stressed_factor, 1.0)
    factor = np.where((ratio <= s.calm_ratio) & rising, s.calm_trend_factor, factor)
    return bands * factor, factor


def cost_aware_rule(
    current: np.ndarray,
    target: np.ndarray,
    market: MarketInputs,
    settings: CostAwareSettings | None = None,
) -> RebalanceDecision:
    """Trade the assets outside their bands, if the risk reduction is worth the cost."""
    s = settings or CostAwareSettings()
    current = np.asarray(current, dtype=float)
    target = np.asarray(target, dtype=float)
    if not isinstance(market.cov, SampleCovariance | _DenseCovariance):
        # Validated once here rather than in each product below.
        market = MarketInputs(
            market.costs,
            _covariance(market.cov),
            market.periods_per_year,
            market.vol_ratio,
            market.trend,
            market.delayed,
        )
    finite_costs = _finite(market.costs, 0.0)
    finite_trend = None if market.trend is None else _finite(market.trend, 0.0)
    bands, factor = regime_bands(
        no_trade_bands(target, market, s, finite_costs), market, s, finite_trend
    )
    drift = current - target
    size = np.abs(drift)
    outside = size > bands
    # A change of the universe is a new target, not drift: assets leaving the book close
    # fully and assets entering it are bought to target.
    leaving = (target == 0) & (current != 0)
    entering = (current == 0) & (target > 0)
    changed = leaving | entering
    if market.trend is not None and s.max_delay_bars > 0:
        # The overweight strong trenders outside their band first: most bars have none,
        # and the other conditions need not be made then (the same mask either way).
        waiting = outside & (drift > 0) & (finite_trend > s.momentum_return)
        if waiting.any():
            waited = (
                np.zeros(len(current))
                if market.delayed is None
                else np.asarray(market.delayed, dtype=float)
            )
            waiting &= ~leaving
            waiting &= waited < s.max_delay_bars
            waiting &= size <= s.max_delay_drift * bands
            outside &= ~waiting
            delayed = tuple(waiting.nonzero()[0].tolist())
        else:
            delayed = ()
    else:
        delayed = ()
    outside |= changed
    note = f"; trimming {len(delayed)} trending winner(s) waits" if delayed else ""
    if not outside.any():
        return RebalanceDecision(
            None,
            "every asset within its no-trade band" + note,
            delayed=delayed,
            bands=bands,
            regime_factor=factor,
        )
    edge = target + np.sign(drift) * bands
    goal = edge + s.trade_fraction * (target - edge)
    # Outside: to the goal; leaving: 0; entering: the target (leaving and entering are
    # outside, and never both).
    new = np.where(outside, goal, current)
    if changed.any():
        new[leaving] = 0.0
        new[entering] = target[entering]
    # Buys are paid from sales and cash: when trims wait, the book must not grow past
    # what it holds or what the target asks for (no borrowing in a spot book).
    budget = max(float(current.sum()), float(target.sum()))
    buys = np.maximum(new - current, 0.0)  # np.clip(x, 0.0, None), without its layers
    excess = float(new.sum()) - budget
    if excess > 1e-12 and buys.sum() > 0:
        new -= buys * min(1.0, excess / float(buys.sum()))
    trade = np.abs(new - current)
    cost = float(trade @ finite_costs)
    cov = _covariance(market.cov)
    after = new - target
    if isinstance(cov, SampleCovariance):
        removed = (cov.quadratic(drift) - cov.quadratic(after)) * market.periods_per_year
    else:
        annual = cov.matrix() * market.periods_per_year
        removed = float(drift @ annual @ drift) - float(after @ annual @ after)
    benefit = s.risk_aversion * 0.5 * removed * s.horizon_days / 365.0
    traded = tuple((trade > 1e-12).nonzero()[0].tolist())
    if not traded:
        return RebalanceDecision(
            None,
            "no cash for the buys while trims wait" + note,
            delayed=delayed,
            bands=bands,
            regime_factor=factor,
        )
    forced = (changed | (size > s.force_multiple * bands)) & outside
    if benefit <= cost and not forced.any():
        return RebalanceDecision(
            None,
            f"trade would cost {cost * 1e4:.1f} bps of equity for "
            f"{benefit * 1e4:.1f} bps of risk reduction" + note,
            benefit,
            cost,
            delayed=delayed,
            bands=bands,
            regime_factor=factor,
        )
    if benefit > cost:
        many = len(traded) > 1
        why = (
            f"{len(traded)} asset{'s' if many else ''} outside "
            f"{'their bands' if many else 'its band'}: risk reduction "
            f"{benefit * 1e4:.1f} bps > cost {cost * 1e4:.1f} bps" + note
        )
    elif changed.any():
        why = (
            f"target change: {int(leaving.sum())} asset(s) leaving, {int(entering.sum())} "
            f"entering; {len(traded)} traded (risk reduction {benefit * 1e4:.1f} bps, "
            f"cost {cost * 1e4:.1f} bps)"
        )
    else:
        why = (
            f"{int(forced.sum())} asset(s) beyond {s.force_multiple:g}x their band: traded "
            f"although the risk reduction ({benefit * 1e4:.1f} bps) is below the cost "
            f"({cost * 1e4:.1f} bps)"
        )
    return RebalanceDecision(
        new,
        why,
        benefit,
        cost,
        traded,
        delayed,
        bands,
        factor,
    )
