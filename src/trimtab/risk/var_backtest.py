"""Coverage backtests of VaR forecasts: Kupiec, Christoffersen, conditional coverage.

A HIT (exception) at bar t is a realised loss greater than the VaR forecast for that bar:
``-returns[t] > var[t]``, with VaR a positive loss fraction as in :mod:`trimtab.risk.var`
(forecasts aligned on the bar they are FOR, ``align="target"``). A correct model at
level ``L`` has i.i.d. Bernoulli(``1 - L``) hits.

- Kupiec (1995) proportion of failures: ``LR_pof = -2 ln[(1-p)^(n-x) p^x /
  ((1-x/n)^(n-x) (x/n)^x)]`` with ``p = 1 - L``, x hits in n bars; chi2(1).
- Christoffersen (1998) independence: a first-order Markov chain on the hits, with
  transition counts ``n_ij`` (state i at t-1, j at t) over the n - 1 consecutive pairs,
  ``pi_01 = n01/(n00+n01)``, ``pi_11 = n11/(n10+n11)``, ``pi = (n01+n11)/(n - 1)``;
  ``LR_ind = -2 ln[L(pi) / L(pi_01, pi_11)]``; chi2(1).
- Conditional coverage: ``LR_cc = LR_pof + LR_ind``; chi2(2). LR_pof is computed on all n
  bars and LR_ind on the n - 1 transitions (the common practical form; Christoffersen's
  exact decomposition conditions on the first bar, a difference of one observation).

Edge cases, with the standard convention ``0 * ln(0) = 0`` (a probability estimated as 0
or 1 from an empty or full count adds nothing to a log-likelihood):

- no hits (x = 0): ``LR_pof = -2 n ln(1 - p)``; all hits (x = n): ``LR_pof = -2 n ln p``;
- no hits or all hits: the chain never changes state, both likelihoods are 1 and
  ``LR_ind = 0`` (p-value 1): independence cannot be rejected without variation;
- no consecutive hits (n11 = 0): ``pi_11 = 0`` and the formula applies as is; a
  transition probability whose row is empty (e.g. ``n10 + n11 = 0``) has zero counts and
  contributes nothing;
- n = 0 gives NaN for every test; n = 1 gives NaN for independence (no transition).

Statistics are clipped at 0 (round-off can leave -1e-15).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import xlogy

from trimtab.risk.var import VarForecast

__all__ = [
    "BACKTEST_KEYS",
    "CoverageTest",
    "backtest_var",
    "christoffersen_independence",
    "conditional_coverage",
    "kupiec_pof",
    "transition_counts",
    "var_hits",
]

BACKTEST_KEYS: tuple[str, ...] = (
    "hit_rate",
    "expected_rate",
    "n",
    "hits",
    "kupiec_p",
    "christoffersen_p",
    "conditional_coverage_p",
)

_NAN = float("nan")


class CoverageTest(NamedTuple):
    """A likelihood-ratio statistic and its chi-squared p-value (NaN when undefined)."""

    statistic: float
    p_value: float


def _as_hits(hits: pd.Series | np.ndarray | list[bool]) -> np.ndarray:
    h = np.asarray(hits)
    if h.ndim != 1:
        raise ValueError(f"hits must be one-dimensional, got shape {h.shape}")
    if h.dtype != bool:
        hf = h.astype(float)
        if np.any(~np.isin(hf, (0.0, 1.0))):
            raise ValueError("hits must be booleans or 0/1 values (drop NaN bars first)")
        h = hf.astype(bool)
    return h


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"VaR level must be strictly between 0 and 1, got {level!r}")
    return float(level)


def _lr(stat: float, dof: int) -> CoverageTest:
    stat = max(float(stat), 0.0)
    return CoverageTest(stat, float(stats.chi2.sf(stat, dof)))


def _bernoulli_loglik(zeros: float, ones: float, p: float) -> float:
    # xlogy(0, 0) = 0 implements the 0 * ln(0) = 0 convention.
    return float(xlogy(zeros, 1.0 - p) + xlogy(ones, p))


def kupiec_pof(hits: pd.Series | np.ndarray | list[bool], level: float) -> CoverageTest:
    """Kupiec proportion-of-failures test of ``P(hit) = 1 - level``; chi2(1). NaN if empty."""
    h = _as_hits(hits)
    p = 1.0 - _check_level(level)
    n = h.size
    if n == 0:
        return CoverageTest(_NAN, _NAN)
    x = int(h.sum())
    stat = -2.0 * (_bernoulli_loglik(n - x, x, p) - _bernoulli_loglik(n - x, x, x / n))
    return _lr(stat, 1)


def transition_counts(hits: pd.Series | np.ndarray | list[bool]) -> tuple[int, int, int, int]:
    """``(n00, n01, n10, n11)``: pairs of consecutive bars by (state at t-1, state at t)."""
    h = _as_hits(hits).astype(int)
    if h.size < 2:
        return 0, 0, 0, 0
    pair = 2 * h[:-1] + h[1:]
    c = np.bincount(pair, minlength=4)
    return int(c[0]), int(c[1]), int(c[2]), int(c[3])


def christoffersen_independence(hits: pd.Series | np.ndarray | list[bool]) -> CoverageTest:
    """Christoffersen's Markov independence test of the hit sequence; chi2(1).

    NaN with fewer than two bars. See the module docstring for the edge-case conventions.
    """
    h = _as_hits(hits)
    if h.size < 2:
        return CoverageTest(_NAN, _NAN)
    n00, n01, n10, n11 = transition_counts(h)
    # An empty row's probability is arbitrary (its counts are 0); 0 keeps xlogy finite.
    pi01 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi11 = n11 / (n10 + n11) if n10 + n11 else 0.0
    pi = (n01 + n11) / (n00 + n01 + n10 + n11)
    restricted = _bernoulli_loglik(n00 + n10, n01 + n11, pi)
    unrestricted = _bernoulli_loglik(n00, n01, pi01) + _bernoulli_loglik(n10, n11, pi11)
    return _lr(-2.0 * (restricted - unrestricted), 1)


def conditional_coverage(hits: pd.Series | np.ndarray | list[bool], level: float) -> CoverageTest:
    """Christoffersen's conditional coverage: ``LR_pof + LR_ind``; chi2(2). NaN if n < 2."""
    h = _as_hits(hits)
    pof = kupiec_pof(h, level)
    ind = christoffersen_independence(h)
    if not (np.isfinite(pof.statistic) and np.isfinite(ind.statistic)):
        return CoverageTest(_NAN, _NAN)
    return _lr(pof.statistic + ind.statistic, 2)


def var_hits(returns: pd.Series, var: pd.Series) -> pd.Series:
    """Boolean hits ``-returns > var`` on the bars where both are known (NaN bars dropped).

    ``var`` is indexed by the bar it is a forecast for (``align="target"``). Bars of
    ``var`` missing from ``returns`` are dropped.
    """
    if not isinstance(returns, pd.Series) or not isinstance(var, pd.Series):
        raise ValueError("returns and var must be pandas Series (one column at a time)")
    r = returns.reindex(var.index)
    ok = r.notna() & var.notna()
    if np.any(np.isinf(var[ok].to_numpy(float))):
        raise ValueError("VaR forecasts contain infinite values")
    return (-r[ok] > var[ok]).rename("hit")


def backtest_var(
    returns: pd.Series,
    forecasts_by_method: Mapping[str, Mapping[float, pd.Series] | VarForecast],
    *,
    common_sample: bool = False,
) -> dict[str, dict[float, dict[str, float | int]]]:
    """Coverage backtest of each method and level: ``{method: {level: {key: value}}}``.

    ``forecasts_by_method[method]`` maps a level to its VaR Series (a :class:`VarForecast`
    is accepted too: its ``var`` is used; it must be ``align="target"``). Each entry has
    the keys of :data:`BACKTEST_KEYS`: ``hit_rate`` (hits / n), ``expected_rate``
    (``1 - level``), ``n`` (bars with both a forecast and a return), ``hits``,
    ``kupiec_p`` (proportion of failures), ``christoffersen_p`` (the INDEPENDENCE test's
    p-value alone) and ``conditional_coverage_p`` (the joint chi2(2) test). The hit
    sequence is the evaluated bars in time order; a bar without forecast or return is
    skipped, so the Markov test treats the bars on both sides of it as consecutive.

    ``common_sample=True`` evaluates every method and level on the same bars (those where
    all forecasts exist), so that models with different warm-ups compare fairly.
    """
    series: dict[str, dict[float, pd.Series]] = {}
    for method, fc in forecasts_by_method.items():
        if isinstance(fc, VarForecast):
            if fc.align != "target":
                raise ValueError(f"{method}: backtest forecasts made with align='target'")
            fc = fc.var
        series[method] = {float(lvl): s for lvl, s in fc.items()}

    keep: pd.Index | None = None
    if common_sample:
        for by_level in series.values():
            for s in by_level.values():
                idx = s.index[s.notna().to_numpy()]
                keep = idx if keep is None else keep.intersection(idx)

    out: dict[str, dict[float, dict[str, float | int]]] = {}
    for method, by_level in series.items():
        out[method] = {}
        for level, var in by_level.items():
            _check_level(level)
            v = var if keep is None else var.reindex(keep)
            h = var_hits(returns, v).to_numpy(bool)
            n, x = int(h.size), int(h.sum())
            out[method][level] = {
                "hit_rate": x / n if n else _NAN,
                "expected_rate": 1.0 - level,
                "n": n,
                "hits": x,
                "kupiec_p": kupiec_pof(h, level).p_value,
                "christoffersen_p": christoffersen_independence(h).p_value,
                "conditional_coverage_p": conditional_coverage(h, level).p_value,
            }
    return out
