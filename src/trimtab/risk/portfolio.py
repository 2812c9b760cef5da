"""The portfolio risk score: one number (0-100) with its factor breakdown for weights held.

Shared by the review (``trimtab.review``), the engine and the allocator: build the market
view once per bar with ``portfolio_market(panel, symbols, bar)``, then score any weights
against it with ``score_portfolio`` (cheap: matrices are cached per set of symbols, so
re-scoring a candidate change costs little).

Inputs and conventions
    ``weights``: net exposure per symbol / account equity (fractions; spot and perps of
    one symbol net out). ``invested = min(1, sum |w|)``: cash dilutes market risk.
    ``equity``: the account equity the weights are fractions of (when equity is not
    positive, the gross exposure, so that shares stay finite). Money in USDT.

Factors (scores 0-100, combined by ``trimtab.risk.score.combine``)
    - volatility, vol_regime, trend, drawdown, liquidity: the asset factors of
      ``asset_risk`` at the bar, exposure-weighted (|w|) over holdings, score times
      ``invested``. Trend is side-aware: a short is scored on the *up*trend strength
      (same windows, mirrored), a long on the downtrend strength.
    - correlation: exposure-weighted, sign-adjusted average pairwise correlation of
      daily returns over 30 days (a long and a short that move together hedge). Score =
      ramp(value) plus up to 20 points when it rose above its 180-day level (0.05 to
      0.30 higher), times ``invested``.
    - concentration: effective number of bets (minimum-torsion, Meucci et al. 2015) of
      the weights under the Ledoit-Wolf shrunk 90-day covariance
      (``trimtab.risk.covariance``), score times ``invested``; the PCA version, HHI and
      the largest correlated cluster (average linkage, correlation > 0.5 over 90 days)
      are reported beside it.
    - leverage: account gross exposure / equity.
    - liquidation: per perp, ramp(distance in daily volatilities) times
      ``min(1, |notional| / equity / LIQUIDATION_STAKE_FULL)``; the factor is the worst
      perp, 0 with no perps. The distances come in ``PerpExposure``.
    - funding: annualised carry paid on the side held, the mean of the last
      ``FUNDING_DAYS`` days of funding events, notional-weighted across perps; score
      times ``min(1, perp exposure / equity)``.
    - drawdown_probability: only when a probability is given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from trimtab.data.panel import Panel, timeframe_seconds
from trimtab.domain.quotes import format_price
from trimtab.risk.covariance import pairwise_correlation, shrunk_covariance
from trimtab.risk.score import (
    ASSET_WEIGHTS,
    PORTFOLIO_WEIGHTS,
    TREND_WINDOWS,
    Calibration,
    FactorReading,
    asset_risk,
    combine,
    explain,
    ramp,
    risk_level,
)
from trimtab.signals.concentration import cluster_exposure, hhi, minimum_torsion
from trimtab.signals.correlation import cluster_labels, correlation_shift
from trimtab.signals.trend import efficiency_ratio

__all__ = [
    "CLUSTER_MAX_DISTANCE",
    "CORR_LONG",
    "CORR_MID",
    "CORR_SHORT",
    "FUNDING_DAYS",
    "LIQUIDATION_STAKE_FULL",
    "LOOKBACK_DAYS",
    "REGIME_DAYS",
    "PerpExposure",
    "PortfolioMarket",
    "PortfolioRisk",
    "liquidation_score",
    "portfolio_market",
    "score_portfolio",
]

#: Bars of history read for the asset factors: the 365-day peak plus EWMA warm-up.
LOOKBACK_DAYS = 400
#: Days of daily closes kept in the market view (the review's regime index reads them).
REGIME_DAYS = 1460
CORR_SHORT, CORR_MID, CORR_LONG, SHIFT_Z = 30, 90, 180, 365
CLUSTER_MAX_DISTANCE = 0.5  # average-linkage correlation above 0.5
#: A perp whose notional is this share of equity counts fully in the liquidation score.
LIQUIDATION_STAKE_FULL = 0.25
FUNDING_DAYS = 7


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------- market view


@dataclass
class PortfolioMarket:
    """Everything the portfolio score needs at one bar for a set of symbols, computed once
    (``portfolio_market``).

    Per-symbol readings are plain dicts (symbol -> float) and matrices NumPy arrays in
    ``symbols`` order: the score is re-run for every candidate recommendation, so
    lookups must be cheap.
    """

    bar: pd.Timestamp
    timeframe: str
    bars_per_day: float
    symbols: list[str]
    price: dict[str, float]
    low: dict[str, float]
    high: dict[str, float]
    has_bar: dict[str, bool]
    daily_vol: dict[str, float]  # fraction per day (EWMA, annualised / sqrt(365))
    values: dict[str, dict[str, float]]  # asset factor raw values (long view)
    scores: dict[str, dict[str, float]]
    up_value: dict[str, float]  # uptrend strength, the short side's trend reading
    below: dict[int, dict[str, bool]]  # close below its w-day average
    above: dict[int, dict[str, bool]]
    daily_volume: dict[str, float]  # USDT a day, 30-day mean
    history_days: dict[str, float]
    returns: pd.DataFrame  # daily returns, for the correlation matrices of a held set
    market_shift: dict[str, float | None]
    carry: dict[str, dict[str, Any]]
    daily_close: pd.DataFrame  # for the regime index
    # Matrices per set of held symbols, reused across candidate recommendations.
    _cache: dict[tuple[str, ...], dict[str, Any]] = field(default_factory=dict)

    def matrices(self, held: Sequence[str]) -> dict[str, Any]:
        """Correlations (30 and 180 days), the shrunk 90-day covariance, its
        decompositions and the clusters of the ``held`` symbols, in that order.

        Computed from the held symbols alone (shrinkage and the fill of unknown pairs
        depend on the set), so scoring changed holdings gives exactly what a fresh
        review of them gives.
        """
        key = tuple(held)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        r = self.returns[list(held)]
        cov = shrunk_covariance(r, CORR_MID, pd.Series(self.daily_vol)).to_numpy()
        corr_mid = pairwise_correlation(r, CORR_MID)
        labels = cluster_labels(corr_mid, max_distance=CLUSTER_MAX_DISTANCE)
        vals, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
        try:
            torsion = minimum_torsion(cov) if len(held) > 1 else None
        except np.linalg.LinAlgError:
            torsion = None
        out = {
            "corr_short": pairwise_correlation(r, CORR_SHORT).to_numpy(),
            "corr_long": pairwise_correlation(r, CORR_LONG).to_numpy(),
            "cov": cov,
            "clusters": {s: _label_key(labels.get(s), s) for s in held},
            "vals": np.clip(vals, 0.0, None),
            "vecs": vecs,
            "t": torsion,
        }
        self._cache[key] = out
        return out

    def side_trend(self, symbol: str, sign: float) -> tuple[float, float]:
        """Trend reading and score of ``symbol`` for the side held: a short (``sign < 0``)
        is read on the uptrend strength, a long on the downtrend strength."""
        if sign < 0:
            v = float(self.up_value.get(symbol, np.nan))
            return v, float(ramp(v, 0.0, 1.0))
        return (
            float(self.values["trend"].get(symbol, np.nan)),
            float(self.scores["trend"].get(symbol, np.nan)),
        )


def _as_dict(s: pd.Series, kind: type = float) -> dict[str, Any]:
    return {str(k): kind(v) for k, v in s.items()}


def _slice_panel(panel: Panel, symbols: list[str], start: int, stop: int) -> Panel:
    frames = {name: frame[symbols].iloc[start:stop] for name, frame in panel.frames().items()}
    return Panel(**frames, timeframe=panel.timeframe, provenance={})


def _daily_closes(panel: Panel, symbols: list[str], pos: int) -> tuple[pd.DataFrame, float]:
    """Daily closes up to the as-of bar (last ``REGIME_DAYS`` days) and bars per day of
    the result (1 for daily and finer panels; coarser panels are used as they are)."""
    seconds = timeframe_seconds(panel.timeframe)
    bpd = 86400 / seconds
    if seconds > 86400:
        start = max(0, pos + 1 - int(REGIME_DAYS * bpd) - 1)
        return panel.close[symbols].iloc[start : pos + 1], bpd
    start = max(0, pos + 1 - int(REGIME_DAYS * bpd) - int(bpd))
    close = panel.close[symbols].iloc[start : pos + 1]
    if seconds == 86400:
        return close, 1.0
    # Last close of each UTC day; the as-of day may be partial (its latest close).
    daily = close.resample("1D", label="left", closed="left").last()
    return daily, 1.0


def _funding_carry(
    funding: pd.DataFrame | None, symbols: list[str], until: pd.Timestamp
) -> dict[str, dict[str, Any]]:
    """Annualised carry a long pays per perp symbol: the mean of the funding events in
    the ``FUNDING_DAYS`` days to ``until`` (Binance if it has the symbol, else the mean
    of the venues' means)."""
    if funding is None or not symbols:
        return {}
    from trimtab.signals.funding import funding_intervals, intervals_per_year

    f = funding[funding["symbol"].isin(symbols)]
    if f.empty:
        return {}
    ts = f["timestamp"]
    recent = f[(ts <= until) & (ts > until - pd.Timedelta(days=FUNDING_DAYS))]
    if recent.empty:
        return {}
    try:
        iv = funding_intervals(f)
        per_year = {v: intervals_per_year(iv[v]) for v in iv.index}
    except ValueError:  # a venue with a single event: assume the common 8 h interval
        per_year = {}
    out: dict[str, dict[str, Any]] = {}
    for sym, g in recent.groupby("symbol"):
        if "binance" in set(g["venue"]):
            g = g[g["venue"] == "binance"]
        carry_by_venue = {
            v: float((gv["funding_rate"] * per_year.get(v, 1095.0)).mean())
            for v, gv in g.groupby("venue")
        }
        venues = sorted(carry_by_venue)
        out[str(sym)] = {
            "carry": float(np.mean(list(carry_by_venue.values()))),
            "venue": venues[0] if len(venues) == 1 else f"mean of {', '.join(venues)}",
            "events": len(g),
            "latest_rate": float(g.sort_values("timestamp")["funding_rate"].iloc[-1]),
        }
    return out


def portfolio_market(
    panel: Panel,
    symbols: Sequence[str],
    bar: pd.Timestamp,
    *,
    perp_symbols: Sequence[str] = (),
    funding: pd.DataFrame | None = None,
) -> PortfolioMarket:
    """The market view of ``symbols`` at ``bar`` (a bar of ``panel``): the asset factors
    of ``trimtab.risk.score.asset_risk`` over the last ``LOOKBACK_DAYS`` only, daily
    returns for the correlation matrices, the market's correlation shift and the funding
    carry of ``perp_symbols`` (from ``funding``, the long frame of ``read_funding``).
    Causal: nothing after ``bar`` is read."""
    symbols = list(symbols)
    pos = panel.index.get_loc(bar)
    bpd = 86400 / timeframe_seconds(panel.timeframe)
    if not symbols:
        return _empty_market(bar, panel.timeframe, bpd)
    n = int(LOOKBACK_DAYS * bpd) + 1
    start = max(0, pos + 1 - n)
    sub = _slice_panel(panel, symbols, start, pos + 1)
    ar = asset_risk(sub)
    last = sub.index[-1]
    values = {k: v.loc[last] for k, v in ar.values.items()}
    scores = {k: v.loc[last] for k, v in ar.scores.items()}
    close = sub.close
    price = close.loc[last]
    below: dict[int, pd.Series] = {}
    above: dict[int, pd.Series] = {}
    for w in TREND_WINDOWS:
        nb = int(w * bpd)
        window = close.iloc[-nb:]
        ok = window.notna().all() & (len(window) == nb)
        sma = window.mean().where(ok)
        below[w] = (price < sma).where(ok, False)
        above[w] = (price > sma).where(ok, False)
    n_er = int(30 * bpd)
    er = efficiency_ratio(close.iloc[-(n_er + 1) :], n_er, signed=True).iloc[-1]
    above_frac = sum(above[w].astype(float) for w in TREND_WINDOWS) / len(TREND_WINDOWS)
    up_value = (above_frac + er.clip(lower=0).fillna(0)).clip(upper=1.0)
    up_value = up_value.where(values["trend"].notna())
    daily_volume = 10.0 ** values["liquidity"]
    # Days since the asset's first bar in the data (its listing, as far as we can see).
    first_seen = panel.close[symbols].iloc[: pos + 1].notna().idxmax()
    history_days = pd.Series(
        [(bar - first_seen[s]).total_seconds() / 86400 + 1 / bpd for s in symbols],
        index=symbols,
    )
    annual = values["volatility"]
    daily_vol = annual / math.sqrt(365.0)
    # Assets too new for an EWMA volatility: fall back on the close-to-close std so far.
    if daily_vol.isna().any():
        r = close.pct_change(fill_method=None)
        fb = r.std() * math.sqrt(bpd)
        daily_vol = daily_vol.fillna(fb)

    daily, _ = _daily_closes(panel, symbols, pos)
    returns = daily.pct_change(fill_method=None).iloc[1:]
    market_shift: dict[str, float | None] = {"short": None, "long": None, "z": None}
    if len(symbols) >= 2 and len(returns) > CORR_LONG:
        tail = returns.iloc[-(SHIFT_Z + CORR_LONG - 1) :]
        shift = correlation_shift(tail, CORR_SHORT, CORR_LONG, SHIFT_Z, start=CORR_LONG - 1)
        market_shift = {
            "short": _finite(shift.market_short.iloc[-1]),
            "long": _finite(shift.market_long.iloc[-1]),
            "z": _finite(shift.market_z.iloc[-1]),
        }
    bar_close = bar + pd.Timedelta(seconds=timeframe_seconds(panel.timeframe))
    carry = _funding_carry(funding, sorted(set(perp_symbols)), bar_close)
    return PortfolioMarket(
        bar=bar,
        timeframe=panel.timeframe,
        bars_per_day=bpd,
        symbols=symbols,
        price=_as_dict(price),
        low=_as_dict(sub.low.loc[last]),
        high=_as_dict(sub.high.loc[last]),
        has_bar=_as_dict(sub.has_bar.loc[last], bool),
        daily_vol=_as_dict(daily_vol),
        values={k: _as_dict(v) for k, v in values.items()},
        scores={k: _as_dict(v) for k, v in scores.items()},
        up_value=_as_dict(up_value),
        below={w: _as_dict(v, bool) for w, v in below.items()},
        above={w: _as_dict(v, bool) for w, v in above.items()},
        daily_volume=_as_dict(daily_volume),
        history_days=_as_dict(history_days),
        returns=returns,
        market_shift=market_shift,
        carry=carry,
        daily_close=daily,
    )


def _empty_market(bar: pd.Timestamp, timeframe: str, bpd: float) -> PortfolioMarket:
    e: dict[str, Any] = {}
    return PortfolioMarket(
        bar=bar,
        timeframe=timeframe,
        bars_per_day=bpd,
        symbols=[],
        price=e,
        low=e,
        high=e,
        has_bar=e,
        daily_vol=e,
        values={k: e for k in ASSET_WEIGHTS},
        scores={k: e for k in ASSET_WEIGHTS},
        up_value=e,
        below={w: e for w in TREND_WINDOWS},
        above={w: e for w in TREND_WINDOWS},
        daily_volume=e,
        history_days=e,
        returns=pd.DataFrame(dtype=float),
        market_shift={"short": None, "long": None, "z": None},
        carry={},
        daily_close=pd.DataFrame(dtype=float),
    )


def _bets(mats: dict[str, Any], w: np.ndarray) -> tuple[float | None, float | None]:
    """Effective number of bets, minimum-torsion and PCA (entropy), of weights ``w``:
    the numbers of ``effective_number_of_bets``, from decompositions of the covariance
    cached per held set (they do not depend on ``w``)."""
    cov = mats["cov"]
    var = float(w @ cov @ w)
    if not var > 0:
        return None, None

    def entropy(p: np.ndarray) -> float | None:
        if not np.all(np.isfinite(p)):
            return None
        p = np.clip(p, 0.0, None)
        p = p / p.sum()
        nz = p[p > 0]
        return float(np.exp(-(nz * np.log(nz)).sum()))

    pca = entropy(mats["vals"] * (mats["vecs"].T @ w) ** 2 / var)
    t = mats["t"]
    mt = None if t is None else entropy(np.linalg.solve(t.T, w) * (t @ cov @ w) / var)
    return mt, pca


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class PerpExposure:
    """A perpetual held, as the liquidation and funding factors read it.

    ``quantity`` is signed (base units, < 0 short), ``notional`` = quantity x price
    (USDT, signed), ``distance_pct`` the signed distance from price to liquidation as a
    fraction of the price (> 0 while not liquidated), ``distance_vols`` that distance in
    daily volatilities (None when unknown), ``loss_if_liquidated`` the equity in the
    position (USDT)."""

    symbol: str
    side: str  # "long" or "short", for the explanation
    quantity: float
    price: float
    notional: float
    liquidation_price: float | None
    distance_pct: float | None
    distance_vols: float | None
    loss_if_liquidated: float


@dataclass
class PortfolioRisk:
    """The scored portfolio: factor readings (contributions add up to ``score``), the
    factors left out and why, and the concentration, correlation and funding details."""

    score: float
    readings: list[FactorReading]
    omitted: list[dict[str, str]]
    invested: float
    concentration: dict[str, Any]
    correlation: dict[str, Any]
    funding: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Liquidation score (0-100) of each perp, in the order given.
    liquidation_scores: list[float] = field(default_factory=list)


def liquidation_score(
    perp: PerpExposure, equity: float, calibration: Calibration | None = None
) -> float:
    """0-100: ramp of the distance in daily volatilities (0 past liquidation) times the
    share of ``equity`` the position controls (full from ``LIQUIDATION_STAKE_FULL``).
    Severity is the exposure, not the margin at stake: more margin must never read as
    more risk (it only moves the liquidation away). 0 without a liquidation price."""
    if perp.liquidation_price is None:
        return 0.0
    cal = calibration or Calibration()
    d = perp.distance_vols if perp.distance_vols is not None else 0.0
    size = min(1.0, abs(perp.notional) / equity / LIQUIDATION_STAKE_FULL)
    return float(ramp(d, *cal.liquidation_vols)) * size


def score_portfolio(
    market: PortfolioMarket,
    weights: pd.Series,
    *,
    equity: float,
    leverage: float,
    subaccount_leverage: Mapping[str, float] | None = None,
    perps: Sequence[PerpExposure] = (),
    drawdown_probability: float | None = None,
    threshold: float = 0.10,
    horizon_days: int = 7,
    calibration: Calibration | None = None,
) -> PortfolioRisk:
    """Score ``weights`` (net exposure / equity per symbol, symbols of ``market``).

    ``leverage`` is account gross exposure / equity (inf when equity is not positive);
    ``subaccount_leverage`` each subaccount's, named in the explanation when one runs
    well above the account. ``drawdown_probability`` is the probability of losing more
    than ``threshold`` within ``horizon_days`` (the factor is omitted when None).
    """
    calibration = calibration or Calibration()
    subaccount_leverage = dict(subaccount_leverage or {})
    w = weights[weights.abs() > 1e-12]
    held = list(w.index)
    invested = float(min(1.0, w.abs().sum()))
    perps = list(perps)
    liq_scores = [liquidation_score(p, equity, calibration) for p in perps]

    readings: list[FactorReading] = []
    omitted: list[dict[str, str]] = []
    a = w.abs()

    # Asset factors, exposure-weighted.
    for name, weight in ASSET_WEIGHTS.items():
        vals, scs = [], []
        for sym in held:
            if name == "trend":
                v, s = market.side_trend(sym, np.sign(w[sym]))
            else:
                v, s = float(market.values[name][sym]), float(market.scores[name][sym])
            vals.append(v)
            scs.append(s)
        va, sa = np.array(vals, dtype=float), np.array(scs, dtype=float)
        ok = np.isfinite(sa) & np.isfinite(va)
        if not held or not ok.any():
            omitted.append(
                {"name": name, "reason": "no holdings" if not held else "not enough history"}
            )
            continue
        aw = a.to_numpy()[ok]
        value = float((aw * va[ok]).sum() / aw.sum())
        mean_score = float((aw * sa[ok]).sum() / aw.sum())
        score = mean_score * invested
        top = sorted(
            ((held[i], sa[i], a.iloc[i]) for i in range(len(held)) if ok[i]),
            key=lambda t: -t[1] * t[2],
        )[:3]
        text = explain(name, value, mean_score)
        if name == "trend" and (w < 0).any():
            text += " (shorts are scored on the uptrend)"
        text += "; exposure-weighted over holdings"
        if top:
            text += f", highest {top[0][0]} (score {top[0][1]:.0f})"
        if invested < 0.995:
            text += f"; scaled by the {invested:.0%} of equity invested"
        readings.append(
            FactorReading(name, value, score, weight, text, symbols=tuple(t[0] for t in top))
        )

    # Correlation among holdings.
    corr_info: dict[str, Any] = {
        "average_30d": None,
        "average_180d": None,
        "shift": None,
        "market_shift_z": market.market_shift.get("z"),
        "market_average_30d": market.market_shift.get("short"),
        "market_average_180d": market.market_shift.get("long"),
        "most_correlated": [],
    }
    mats = market.matrices(held) if held else {}
    if len(held) >= 2:
        sgn = np.sign(w.to_numpy())
        aa = a.to_numpy()
        pair_w = np.outer(aa, aa)
        np.fill_diagonal(pair_w, 0.0)
        sign = np.outer(sgn, sgn)
        c_short = mats["corr_short"]

        def wavg(cm: np.ndarray) -> float:
            return float((pair_w * sign * cm).sum() / pair_w.sum())

        c30, c180 = wavg(c_short), wavg(mats["corr_long"])
        shift = c30 - c180
        score = float(ramp(c30, *calibration.correlation)) + 0.2 * float(ramp(shift, 0.05, 0.30))
        score = min(score, 100.0) * invested
        text = explain("correlation", c30, score)
        text += f" over 30 days, {c180:.2f} over 180"
        if shift > 0.05:
            text += " and rising"
        iu = np.triu_indices(len(held), 1)
        order = np.argsort(-c_short[iu])[:3]
        corr_info.update(
            average_30d=c30,
            average_180d=c180,
            shift=shift,
            most_correlated=[
                {"pair": [held[iu[0][k]], held[iu[1][k]]], "correlation": float(c_short[iu][k])}
                for k in order
            ],
        )
        readings.append(
            FactorReading(
                "correlation", c30, score, PORTFOLIO_WEIGHTS["correlation"], text, symbols=()
            )
        )
    else:
        omitted.append(
            {"name": "correlation", "reason": "fewer than two holdings" if held else "no holdings"}
        )

    # Concentration.
    conc: dict[str, Any] = {
        "effective_bets": None,
        "independent_bets": None,
        "hhi": None,
        "effective_positions": None,
        "largest_position": None,
        "largest_cluster": None,
        "clusters": [],
    }
    if held:
        if len(held) == 1:
            enb = pca = 1.0
        else:
            enb, pca = _bets(mats, w.to_numpy())
            if enb is None:
                enb = pca if pca is not None else float(1.0 / hhi(w))
        h_ = float(hhi(w))
        labels = pd.Series(mats["clusters"], dtype=object)
        exp = cluster_exposure(w, labels)
        clusters = []
        for lab, e in exp.sort_values(ascending=False, kind="stable").items():
            members = [s for s in held if labels[s] == lab]
            clusters.append({"symbols": members, "exposure": float(e)})
        big = max(held, key=lambda s: abs(w[s]))
        conc.update(
            effective_bets=enb,
            independent_bets=pca,
            hhi=h_,
            effective_positions=1.0 / h_ if h_ > 0 else None,
            largest_position={"symbol": big, "weight": float(w[big])},
            largest_cluster=clusters[0] if clusters else None,
            clusters=clusters,
        )
        score = float(ramp(enb, *calibration.effective_bets)) * invested
        text = explain("concentration", enb, score)
        text += f"; largest position {big} at {abs(w[big]):.0%} of equity"
        if pca is not None and len(held) >= 2:
            text += f"; {pca:.1f} independent source(s) of risk once correlation is counted"
        readings.append(
            FactorReading(
                "concentration", enb, score, PORTFOLIO_WEIGHTS["concentration"], text, (big,)
            )
        )
    else:
        omitted.append({"name": "concentration", "reason": "no holdings"})

    # Leverage.
    lev_score = (
        100.0 if not math.isfinite(leverage) else float(ramp(leverage, *calibration.leverage))
    )
    text = (
        "account equity is not positive: every position is borrowed"
        if not math.isfinite(leverage)
        else explain("leverage", leverage, lev_score)
    )
    worst_sub = max(subaccount_leverage.items(), key=lambda kv: kv[1], default=None)
    if worst_sub and len(subaccount_leverage) > 1 and worst_sub[1] > leverage + 0.05:
        text += f"; subaccount {worst_sub[0]} runs {worst_sub[1]:.1f}x"
    readings.append(
        FactorReading(
            "leverage",
            leverage if math.isfinite(leverage) else float("nan"),
            lev_score,
            PORTFOLIO_WEIGHTS["leverage"],
            text,
        )
    )

    # Liquidation.
    if perps:
        k = max(range(len(perps)), key=lambda i: (liq_scores[i], -(perps[i].distance_vols or 0.0)))
        worst = h = perps[k]
        if worst.liquidation_price is None:
            text = "perpetual positions have no liquidation price"
            value = float("nan")
        else:
            value = worst.distance_vols if worst.distance_vols is not None else 0.0
            level = risk_level(liq_scores[k])
            if (worst.distance_pct or 0) > 0:
                text = (
                    f"nearest liquidation: {h.symbol} {h.side} is {worst.distance_pct:.1%} "
                    f"({value:.1f} daily moves) from {format_price(worst.liquidation_price)}; "
                    f"it would cost {worst.loss_if_liquidated / equity:.0%} of equity ({level})"
                )
            else:
                text = (
                    f"{h.symbol} {h.side} is past its liquidation price "
                    f"{format_price(worst.liquidation_price)} (close {format_price(worst.price)}) ({level})"
                )
        readings.append(
            FactorReading(
                "liquidation",
                value,
                liq_scores[k],
                PORTFOLIO_WEIGHTS["liquidation"],
                text,
                (h.symbol,),
            )
        )
    else:
        readings.append(
            FactorReading(
                "liquidation",
                float("nan"),
                0.0,
                PORTFOLIO_WEIGHTS["liquidation"],
                "no perpetuals: nothing can be liquidated",
            )
        )

    # Funding.
    funding_used: dict[str, dict[str, Any]] = {}
    if perps:
        paid, notional = 0.0, 0.0
        for p in perps:
            info = market.carry.get(p.symbol)
            if info is None:
                continue
            side = 1.0 if p.quantity > 0 else -1.0
            paid += abs(p.notional) * side * info["carry"]
            notional += abs(p.notional)
            funding_used[p.symbol] = info
        if notional > 0:
            value = paid / notional
            score = float(ramp(value, *calibration.funding)) * min(1.0, notional / equity)
            text = explain("funding", value, score).replace("costs -", "earns ")
            text += f" ({FUNDING_DAYS}-day average of the funding rates)"
            syms = tuple(sorted(funding_used))
            readings.append(
                FactorReading("funding", value, score, PORTFOLIO_WEIGHTS["funding"], text, syms)
            )
        else:
            omitted.append(
                {
                    "name": "funding",
                    "reason": "no funding data for the perpetuals held at the as-of bar",
                }
            )
    else:
        readings.append(
            FactorReading(
                "funding", 0.0, 0.0, PORTFOLIO_WEIGHTS["funding"], "no perpetuals: no funding paid"
            )
        )

    # Drawdown probability (the model lives elsewhere).
    if drawdown_probability is not None:
        p_dd = float(drawdown_probability)
        score = float(ramp(p_dd, *calibration.drawdown_probability))
        text = (
            f"model probability of losing more than {threshold:.0%} within {horizon_days} days: "
            f"{p_dd:.0%} ({risk_level(score)})"
        )
        readings.append(
            FactorReading(
                "drawdown_probability", p_dd, score, PORTFOLIO_WEIGHTS["drawdown_probability"], text
            )
        )
    else:
        omitted.append({"name": "drawdown_probability", "reason": "no drawdown model given"})

    total, combined = combine(readings)
    return PortfolioRisk(
        score=total if math.isfinite(total) else 0.0,
        readings=combined,
        omitted=omitted,
        invested=invested,
        concentration=conc,
        correlation=corr_info,
        funding=funding_used,
        liquidation_scores=liq_scores,
    )


def _label_key(label: Any, symbol: str) -> Any:
    return f"unclustered:{symbol}" if label is None or pd.isna(label) else label
