"""The parts strategies are composed of: signals, sizers and trading rules.

Each part is a frozen dataclass (its fields are its parameters, which the walk-forward
may replace: ``Strategy.with_params``) and reads only the ``BarView`` of the decision
bar, i.e. the trailing window. Weights are fractions of the subaccount's equity;
volatilities are annualised fractions (365-day years).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trimtab.domain.decisions import Reason
from trimtab.risk.sizing import SizingConfig, portfolio_volatility, risk_multiplier
from trimtab.strategies.base import BarView, TradeChoice, due

# --- signals -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Membership:
    """Every member scores 1 (a core index's base); with ``top``, only the ``top``
    members by median quote volume over ``volume_window`` bars (a large-cap core)."""

    top: int | None = None
    volume_window: int = 30

    @property
    def lookback(self) -> int:
        return self.volume_window

    def scores(self, view: BarView) -> tuple[np.ndarray, list[Reason]]:
        members = view.members
        chosen = members.copy()
        if self.top is not None and members.sum() > self.top:
            volume = view.obs.history("quote_volume")[-self.volume_window :]
            # A member's typical bar volume (quote); members only, so no all-NaN column.
            med = np.full(members.shape, -np.inf)
            cols = np.flatnonzero(members)
            block = volume[:, cols]
            ok = np.isfinite(block).any(axis=0)
            med[cols[ok]] = np.nanmedian(block[:, ok], axis=0)
            keep = np.argsort(-med, kind="stable")[: self.top]
            chosen = np.zeros_like(members)
            chosen[keep] = True
            chosen &= members
        n = int(chosen.sum())
        scores = np.where(chosen, 1.0, np.nan)
        names = [view.symbols[j] for j in np.flatnonzero(chosen)]
        return scores, [
            Reason(
                "core_members",
                f"core: {n} assets" + (f" (top {self.top} by volume)" if self.top else ""),
                {"assets": names},
            )
        ]


@dataclass(frozen=True)
class TimeSeriesMomentum:
    """Time-series momentum across timeframes: each asset scores the share of its
    ``lookbacks`` (bars) over which its close rose, minus the share over which it fell,
    in [-1, 1]; ``long_only`` clips at 0 (spot cannot be sold short). An asset without
    the longest lookback of history scores over the lookbacks it has (none: NaN)."""

    lookbacks: tuple[int, ...] = (20, 60, 120, 250)
    long_only: bool = True

    def __post_init__(self) -> None:
        if not self.lookbacks or min(self.lookbacks) < 1:
            raise ValueError(f"lookbacks must be positive bar counts, got {self.lookbacks}")

    @property
    def lookback(self) -> int:
        return max(self.lookbacks)

    def scores(self, view: BarView) -> tuple[np.ndarray, list[Reason]]:
        close = view.obs.history("close")
        now = close[-1]
        votes = np.zeros(len(now))
        counted = np.zeros(len(now))
        for lag in self.lookbacks:
            if len(close) <= lag:
                continue
            past = close[-1 - lag]
            ok = np.isfinite(past) & np.isfinite(now) & (past > 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                votes += np.where(ok, np.sign(now / past - 1.0), 0.0)
            counted += ok
        with np.errstate(invalid="ignore", divide="ignore"):
            scores = np.where(counted > 0, votes / counted, np.nan)
        if self.long_only:
            scores = np.where(np.isfinite(scores), np.maximum(scores, 0.0), np.nan)
        scores = np.where(view.members, scores, np.nan)
        shown = {
            view.symbols[j]: round(float(scores[j]), 2)
            for j in np.flatnonzero(view.members & np.isfinite(scores))
        }
        up = sum(1 for v in shown.values() if v > 0)
        return scores, [
            Reason(
                "momentum",
                f"time-series momentum over {', '.join(map(str, self.lookbacks))} bars: "
                f"{up} of {len(shown)} assets trending up",
                {"scores": shown},
            )
        ]


def efficiency_ratio(close: np.ndarray, window: int) -> float:
    """Kaufman's efficiency ratio of the equal-weight index of a (bars x assets) close
    window over its last ``window`` bars: net move over the path travelled, in [0, 1]
    (near 0: range-bound; near 1: trending). NaN without enough history."""
    if len(close) <= window:
        return float("nan")
    c = close[-(window + 1) :]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = c[1:] / c[:-1] - 1.0
    usable = np.isfinite(r).all(axis=0)
    if not usable.any():
        return float("nan")
    index = np.concatenate([[0.0], np.cumsum(np.log1p(r[:, usable].mean(axis=1)))])
    path = float(np.abs(np.diff(index)).sum())
    return abs(float(index[-1] - index[0])) / path if path > 0 else 0.0


@dataclass(frozen=True)
class ShortTermReversal:
    """Short-horizon reversal, only in range-bound markets: the ``top`` members that
    fell most over ``horizon`` bars score 1 (a full share each), when the efficiency
    ratio of the members' index over ``regime_window`` bars is at most
    ``max_efficiency``; in a trending market nothing scores (the strategy holds cash).
    With ``uptrend`` (bars), only assets whose close is above their mean close over that
    many bars qualify: a dip in a rising market, not a falling knife."""

    horizon: int = 5
    top: int = 3
    regime_window: int = 30
    max_efficiency: float = 0.25
    uptrend: int | None = None

    @property
    def lookback(self) -> int:
        return max(self.horizon, self.regime_window, self.uptrend or 0)

    def scores(self, view: BarView) -> tuple[np.ndarray, list[Reason]]:
        close = view.obs.history("close")
        n = close.shape[1]
        members = view.members
        er = efficiency_ratio(close[:, members], self.regime_window) if members.any() else np.nan
        if not (np.isfinite(er) and er <= self.max_efficiency) or len(close) <= self.horizon:
            return np.full(n, np.nan), [
                Reason(
                    "trending_market",
                    f"efficiency ratio {er:.2f} above {self.max_efficiency:.2f}: not range-bound, "
                    "no reversal trade",
                    {"efficiency_ratio": er},
                )
            ]
        with np.errstate(invalid="ignore", divide="ignore"):
            move = close[-1] / close[-1 - self.horizon] - 1.0
        eligible = members & np.isfinite(move)
        if self.uptrend is not None:
            if len(close) < self.uptrend:
                eligible[:] = False
            else:
                with np.errstate(invalid="ignore"):
                    mean = close[-self.uptrend :].mean(axis=0)
                    eligible &= np.isfinite(mean) & (close[-1] > mean)
        move = np.where(eligible, move, np.nan)
        order = np.argsort(np.where(np.isfinite(move), move, np.inf), kind="stable")
        losers = [j for j in order[: self.top] if np.isfinite(move[j]) and move[j] < 0]
        scores = np.full(n, np.nan)
        scores[losers] = 1.0
        return scores, [
            Reason(
                "reversal",
                f"range-bound (efficiency ratio {er:.2f}): buy the {len(losers)} largest "
                f"{self.horizon}-bar losers",
                {
                    "efficiency_ratio": er,
                    "losers": {view.symbols[j]: round(float(move[j]), 4) for j in losers},
                },
            )
        ]


# --- sizers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class InverseVolatility:
    """Weights proportional to score / volatility (``window`` bars), summing to at most
    ``gross`` when every scored asset has a full score of 1: a half score takes half its
    share. Assets without a volatility get nothing."""

    window: int = 60
    gross: float = 1.0

    @property
    def lookback(self) -> int:
        return self.window

    def size(
        self, view: BarView, scores: np.ndarray, weights: np.ndarray | None
    ) -> tuple[np.ndarray, list[Reason]]:
        vol = view.volatility(self.window)
        scored = np.isfinite(scores) & np.isfinite(vol) & (vol > 0)
        inv = np.where(scored, 1.0 / np.where(scored, vol, 1.0), 0.0)
        total = float(inv.sum())
        if total <= 0:
            return np.zeros(len(scores)), [Reason("inverse_vol", "no asset with a volatility")]
        out = self.gross * inv / total * np.where(scored, np.clip(scores, 0.0, None), 0.0)
        return out, [
            Reason(
                "inverse_vol",
                f"inverse-volatility base over {int(scored.sum())} assets ({self.window} bars)",
                {"gross": float(out.sum())},
            )
        ]


@dataclass(frozen=True)
class RiskCut:
    """Each weight cut by its asset's 0-100 risk score (``risk_score`` of the risk
    engine): full at or below ``no_cut``, none at or above ``full_cut``, linear between."""

    no_cut: float = 15.0
    full_cut: float = 50.0

    @property
    def lookback(self) -> int:
        return 0

    def size(
        self, view: BarView, scores: np.ndarray, weights: np.ndarray | None
    ) -> tuple[np.ndarray, list[Reason]]:
        assert weights is not None, "RiskCut refines the weights of a sizer before it"
        risk = view.assessment.values.get("risk_score")
        if risk is None:
            raise ValueError("RiskCut needs the 'risk_score' feature of the risk engine")
        config = SizingConfig(no_cut_score=self.no_cut, full_cut_score=self.full_cut)
        mult = risk_multiplier(risk, config)
        out = weights * mult
        cut = np.flatnonzero((weights > 0) & (mult < 1))
        return out, [
            Reason(
                "risk_cut",
                f"{len(cut)} assets cut for risk scores above {self.no_cut:g}",
                {"scores": {view.symbols[j]: round(float(risk[j]), 1) for j in cut}},
            )
        ]


@dataclass(frozen=True)
class VolatilityTarget:
    """The book scaled so its forecast volatility (``window`` bars, covariance of the
    held assets) is ``target_vol``, never above ``max_gross`` (sum of absolute weights)
    and, with ``scale_up=False``, never above the weights it was given."""

    target_vol: float = 0.4
    max_gross: float = 1.0
    window: int = 60
    scale_up: bool = True

    @property
    def lookback(self) -> int:
        return self.window

    def size(
        self, view: BarView, scores: np.ndarray, weights: np.ndarray | None
    ) -> tuple[np.ndarray, list[Reason]]:
        assert weights is not None, "VolatilityTarget scales the weights of a sizer before it"
        gross = float(np.abs(weights).sum())
        if gross <= 0:
            return weights, []
        returns = view.returns[-self.window :]
        vol = portfolio_volatility(weights, returns, view.periods_per_year, False)
        if not (np.isfinite(vol) and vol > 0):
            return weights * 0.0, [Reason("vol_target", "no volatility forecast yet: nothing held")]
        scale = self.target_vol / vol
        if not self.scale_up:
            scale = min(scale, 1.0)
        scale = min(scale, self.max_gross / gross)
        out = weights * scale
        return out, [
            Reason(
                "vol_target",
                f"forecast volatility {vol:.0%} vs target {self.target_vol:.0%}: "
                f"exposure {float(np.abs(out).sum()):.0%} of equity",
                {"forecast_vol": vol, "target_vol": self.target_vol, "scale": scale},
            )
        ]


@dataclass(frozen=True)
class WeightCap:
    """No asset above ``max_weight`` (fraction of equity); the excess stays in cash."""

    max_weight: float = 0.5

    @property
    def lookback(self) -> int:
        return 0

    def size(
        self, view: BarView, scores: np.ndarray, weights: np.ndarray | None
    ) -> tuple[np.ndarray, list[Reason]]:
        assert weights is not None
        out = np.clip(weights, -self.max_weight, self.max_weight)
        capped = np.flatnonzero(np.abs(weights) > self.max_weight + 1e-12)
        if not len(capped):
            return out, []
        return out, [
            Reason(
                "weight_cap",
                f"{len(capped)} assets capped at {self.max_weight:.0%}",
                {"assets": [view.symbols[j] for j in capped]},
            )
        ]


# --- trading rules -----------------------------------------------------------------------


@dataclass(frozen=True)
class DriftBand:
    """Trade when the holdings drift from the target by more than ``band`` (sum of
    absolute weight differences), or on the first bar of each ``calendar`` period (None:
    never by date): then every asset moves ``trade_to`` of its gap (1 all the way to
    target, 0.5 half). An asset held above ``exit_weight`` whose target is 0 is sold at
    once, whatever the band; on such a bar the others move only if the band says so."""

    band: float = 0.10
    trade_to: float = 1.0
    calendar: str | None = None
    exit_weight: float = 0.005

    def __post_init__(self) -> None:
        if not 0 < self.trade_to <= 1:
            raise ValueError(f"trade_to must be in (0, 1], got {self.trade_to}")
        if self.band < 0:
            raise ValueError(f"band must be >= 0, got {self.band}")

    def choose(self, view: BarView, target: np.ndarray, current: np.ndarray) -> TradeChoice:
        drift = float(np.abs(target - current).sum())
        move = current + self.trade_to * (target - current)
        if self.calendar is not None and due(view.obs, self.calendar):
            return TradeChoice(
                move, Reason("calendar", f"{self.calendar} rebalance", {"drift": drift})
            )
        if drift > self.band:
            return TradeChoice(
                move,
                Reason(
                    "drift",
                    f"holdings {drift:.0%} away from the target (band {self.band:.0%})",
                    {"drift": drift},
                ),
            )
        exits = np.flatnonzero((target == 0) & (np.abs(current) > self.exit_weight))
        if len(exits):
            # An exit is the signal's, not the band's: sold now; the rest stay as held.
            weights = current.copy()
            weights[exits] = 0.0
            return TradeChoice(
                weights,
                Reason(
                    "exit",
                    f"{len(exits)} assets leave the target",
                    {"assets": [view.symbols[j] for j in exits], "drift": drift},
                ),
            )
        return TradeChoice(
            None,
            Reason(
                "within_band",
                f"holdings within {self.band:.0%} of the target",
                {"drift": drift},
            ),
        )
