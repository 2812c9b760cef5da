"""The risk score: 0 (calm) to 100 (dangerous), per asset and for a portfolio.

Every factor is a raw reading (a volatility, a distance, a ratio) mapped to a 0-100 score
by a documented linear ramp between a "no concern" and a "maximum concern" level. The
asset score is the weighted mean of its factor scores. The portfolio score blends the
weighted mean of its factors with its worst structural factor (leverage, liquidation
proximity, concentration), because one of those alone can wipe out an account however
calm the rest looks:

    portfolio = (1 - STRUCTURAL_BLEND) * weighted_mean + STRUCTURAL_BLEND * max(structural)

Asset factors are computed once over a whole panel (time x asset), causally, so the
backtest and the review read the same numbers.

Young assets: a factor whose window is not yet full is missing, and the asset score is
the weighted mean of the factors that are there (``AssetRisk.coverage`` says what share
of the weight that is). The score exists from an asset's ``SCORE_MIN_DAYS``-th day, when
its volatility (the one factor every score needs) can be measured; universes admit a
listing no earlier, so an admitted asset is scored rather than silently held at zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from trimtab.data.panel import Panel
from trimtab.signals.trend import efficiency_ratio
from trimtab.signals.volatility import ewma_vol

STRUCTURAL_BLEND = 0.4
STRUCTURAL_FACTORS = ("leverage", "liquidation", "concentration")


def ramp(value: Any, calm: float, extreme: float) -> Any:
    """0 at ``calm``, 100 at ``extreme``, linear in between, clipped; NaN stays NaN."""
    scaled = (np.asarray(value, dtype=float) - calm) / (extreme - calm) * 100.0
    return np.clip(scaled, 0.0, 100.0)


@dataclass(frozen=True)
class Calibration:
    """Where each factor starts to matter (score 0) and where it is maximal (score 100).

    Units: volatility annualised fraction; vol_ratio short/long vol; drawdown fraction
    from the 365-day peak; daily quote volume in USDT (log10); correlation a coefficient;
    effective bets a count; leverage gross/equity; liquidation distance in daily
    volatilities; funding annualised fraction paid.
    """

    volatility: tuple[float, float] = (0.30, 1.50)
    vol_ratio: tuple[float, float] = (1.0, 2.5)
    drawdown: tuple[float, float] = (0.10, 0.80)
    log_volume: tuple[float, float] = (9.0, 6.0)  # $1B/day calm, $1M/day extreme
    correlation: tuple[float, float] = (0.30, 0.90)
    effective_bets: tuple[float, float] = (8.0, 1.0)
    leverage: tuple[float, float] = (1.0, 5.0)
    liquidation_vols: tuple[float, float] = (10.0, 1.0)
    funding: tuple[float, float] = (0.10, 1.00)
    drawdown_probability: tuple[float, float] = (0.05, 0.50)


# Trend carries the most weight: in crypto, falling markets are where capital is lost,
# and volatility alone reacts late (it is often low in a slow bear market).
ASSET_WEIGHTS: dict[str, float] = {
    "volatility": 0.20,
    "vol_regime": 0.15,
    "trend": 0.35,
    "drawdown": 0.15,
    "liquidity": 0.15,
}

PORTFOLIO_WEIGHTS: dict[str, float] = {
    **ASSET_WEIGHTS,
    "correlation": 0.15,
    "concentration": 0.15,
    "leverage": 0.20,
    "liquidation": 0.25,
    "funding": 0.10,
    "drawdown_probability": 0.25,
}

TREND_WINDOWS = (20, 60, 200)
# Days of closes before an asset has a score: its EWMA volatility is seeded with the
# first SCORE_MIN_DAYS - 1 returns. The backtest's universes admit no listing earlier.
SCORE_MIN_DAYS = 30
EWMA_HALFLIFE_DAYS = np.log(0.5) / np.log(0.94)
SHORT_VOL, LONG_VOL = 10, 90


def score_min_bars(periods_per_year: float) -> int:
    """Bars of prices an asset needs before it has a risk score (``SCORE_MIN_DAYS`` days
    at the data's bar length): a universe should admit a listing no earlier."""
    return max(int(SCORE_MIN_DAYS * periods_per_year / 365.0), 3)


@dataclass(frozen=True)
class FactorReading:
    """One factor of a score: its raw value, its 0-100 score, its share, and why."""

    name: str
    value: float
    score: float
    weight: float
    explanation: str
    contribution: float = 0.0
    symbols: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": _num(self.value),
            "score": _num(self.score),
            "weight": self.weight,
            "contribution": _num(self.contribution),
            "explanation": self.explanation,
            **({"symbols": list(self.symbols)} if self.symbols else {}),
        }


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


@dataclass
class AssetRisk:
    """Asset factor readings over a panel: ``values[f]`` and ``scores[f]`` are
    (time x asset) frames, ``composite`` the 0-100 asset score (NaN while unlisted or
    younger than ``SCORE_MIN_DAYS``), ``coverage`` the share (0-1) of the factor weight
    it rests on (below 1 while some factor's window is not full yet)."""

    values: dict[str, pd.DataFrame]
    scores: dict[str, pd.DataFrame]
    composite: pd.DataFrame
    calibration: Calibration = field(default_factory=Calibration)
    coverage: pd.DataFrame | None = None

    def at(self, timestamp: pd.Timestamp, symbol: str) -> list[FactorReading]:
        """The factor breakdown of one asset at one bar, with explanations."""
        readings = []
        for name, weight in ASSET_WEIGHTS.items():
            value = float(self.values[name].at[timestamp, symbol])
            score = float(self.scores[name].at[timestamp, symbol])
            readings.append(
                FactorReading(
                    name, value, score, weight, explain(name, value, score), symbols=(symbol,)
                )
            )
        return _with_contributions(readings)


def volatility_regime(close: pd.DataFrame, periods_per_year: float) -> pd.DataFrame:
    """Short (``SHORT_VOL`` days) over long (``LONG_VOL`` days) rolling volatility of
    close-to-close returns: 1 is normal, above 1 a stressed regime."""
    bars_per_day = periods_per_year / 365.0
    short = _rolling_vol(close, int(SHORT_VOL * bars_per_day), periods_per_year)
    long = _rolling_vol(close, int(LONG_VOL * bars_per_day), periods_per_year)
    return short / long.where(long > 0)


def asset_risk(panel: Panel, calibration: Calibration | None = None) -> AssetRisk:
    """Compute every asset factor over ``panel`` at once (causal, trailing windows)."""
    cal = calibration or Calibration()
    close = panel.close
    ppy = panel.periods_per_year
    bars_per_day = ppy / 365.0
    # RiskMetrics' daily lambda 0.94 is a half-life of ~11.2 days; keep it in days so an
    # hourly panel gets the same memory rather than an 11-hour one.
    vol = ewma_vol(
        close,
        halflife=EWMA_HALFLIFE_DAYS * bars_per_day,
        periods_per_year=ppy,
        min_periods=score_min_bars(ppy) - 1,
    )
    vol_ratio = volatility_regime(close, ppy)
    averages = [
        close.rolling(int(w * bars_per_day), min_periods=int(w * bars_per_day)).mean()
        for w in TREND_WINDOWS
    ]
    # Fraction of trend horizons on which price is below its average, nudged by how
    # straight the 30-day move was (a clean fall is worse than a noisy one). Only the
    # horizons with a full window count: a young asset's missing 200-day average is
    # unknown, not "above".
    below = [(close < ma).astype(float).where(ma.notna() & close.notna()) for ma in averages]
    counted = sum(b.notna().astype(float) for b in below)
    below_frac = sum(b.fillna(0.0) for b in below) / counted.where(counted > 0)
    er = efficiency_ratio(close, int(30 * bars_per_day), signed=True)
    trend_down = (below_frac + (-er).clip(lower=0)).clip(upper=1.0)
    peak = close.rolling(int(365 * bars_per_day), min_periods=1).max()
    drawdown = 1.0 - close / peak
    daily_volume = (
        panel.quote_volume.rolling(int(30 * bars_per_day), min_periods=1).mean() * bars_per_day
    )
    log_volume = np.log10(daily_volume.where(daily_volume > 0))
    values = {
        "volatility": vol,
        "vol_regime": vol_ratio,
        "trend": trend_down,
        "drawdown": drawdown,
        "liquidity": log_volume.where(close.notna()),
    }
    ramps = {
        "volatility": cal.volatility,
        "vol_regime": cal.vol_ratio,
        "trend": (0.0, 1.0),
        "drawdown": cal.drawdown,
        "liquidity": cal.log_volume,
    }
    scores = {
        name: pd.DataFrame(
            ramp(v.to_numpy(float), *ramps[name]), index=v.index, columns=v.columns
        ).where(v.notna())
        for name, v in values.items()
    }
    total = sum(ASSET_WEIGHTS.values())
    weight = sum(scores[n].notna() * w for n, w in ASSET_WEIGHTS.items())
    weighted = sum(scores[n].fillna(0.0) * w for n, w in ASSET_WEIGHTS.items())
    # The weighted mean of the factors there are; none without a volatility reading.
    composite = (weighted / weight.where(weight > 0)).where(scores["volatility"].notna())
    coverage = (weight / total).where(composite.notna())
    return AssetRisk(values, scores, composite, cal, coverage)


def _rolling_vol(close: pd.DataFrame, window: int, ppy: float) -> pd.DataFrame:
    returns = close.pct_change(fill_method=None)
    return returns.rolling(window, min_periods=window).std() * np.sqrt(ppy)


def _with_contributions(readings: list[FactorReading]) -> list[FactorReading]:
    valid = [r for r in readings if np.isfinite(r.score)]
    total = sum(r.weight for r in valid) or 1.0
    return [
        FactorReading(
            r.name,
            r.value,
            r.score,
            r.weight,
            r.explanation,
            r.weight * r.score / total if np.isfinite(r.score) else float("nan"),
            r.symbols,
        )
        for r in readings
    ]


def combine(readings: list[FactorReading]) -> tuple[float, list[FactorReading]]:
    """Portfolio score from factor readings; returns it and the readings with their
    contributions (which add up to the score)."""
    valid = [r for r in readings if np.isfinite(r.score)]
    if not valid:
        return float("nan"), readings
    total_w = sum(r.weight for r in valid)
    mean = sum(r.weight * r.score for r in valid) / total_w
    structural = [r for r in valid if r.name in STRUCTURAL_FACTORS]
    worst = max(structural, key=lambda r: r.score) if structural else None
    blend = STRUCTURAL_BLEND if worst is not None and worst.score > mean else 0.0
    score = (1 - blend) * mean + (blend * worst.score if blend else 0.0)
    out = []
    for r in readings:
        if not np.isfinite(r.score):
            out.append(r)
            continue
        c = (1 - blend) * r.weight * r.score / total_w
        if blend and r is worst:
            c += blend * r.score
        out.append(FactorReading(r.name, r.value, r.score, r.weight, r.explanation, c, r.symbols))
    return float(score), out


def risk_level(score: float) -> str:
    """The word for a 0-100 score: low < 25 <= moderate < 50 <= high < 75 <= extreme."""
    return (
        "low" if score < 25 else "moderate" if score < 50 else "high" if score < 75 else "extreme"
    )


def explain(name: str, value: float, score: float) -> str:
    """A sentence a trader reads: what the factor measures now and whether it matters."""
    if not np.isfinite(value):
        return f"{name}: not enough history to measure"
    level = risk_level(score)
    texts = {
        "volatility": f"annualised volatility is {value:.0%} ({level})",
        "vol_regime": f"volatility over the last {SHORT_VOL} days is {value:.1f}x its {LONG_VOL}-day level ({level})",
        "trend": f"downtrend strength {value:.0%}: price below its {'/'.join(map(str, TREND_WINDOWS))}-day averages or falling steadily ({level})",
        "drawdown": f"{value:.0%} below its 1-year high ({level})",
        "liquidity": f"trades about ${10**value:,.0f} a day ({level} liquidity risk)",
        "correlation": f"average pairwise correlation is {value:.2f} ({level}): holdings move together",
        "concentration": f"{value:.1f} effective independent bets ({level} concentration)",
        "leverage": f"gross exposure is {value:.1f}x equity ({level})",
        "liquidation": f"nearest liquidation is {value:.1f} daily volatilities away ({level})",
        "funding": f"funding costs {value:.0%} a year on the positions held ({level})",
        "drawdown_probability": f"model probability of a large drawdown soon: {value:.0%} ({level})",
    }
    return texts.get(name, f"{name} = {value:.4g} ({level})")
