"""Volatility regimes, fitted only on the past: a Gaussian HMM and a cheap scanner score.

The HMM. For each asset (or a market index) the features at bar t are

- the log return ``ln(close_t / close_{t-1})`` times ``sqrt(periods_per_year)``, and
- the log of the annualised realised volatility over the last ``vol_window`` bars,
  ``ln(sqrt(periods_per_year * mean(r^2)))``,

both known at the close of bar t and on the same scale at any timeframe. A Gaussian HMM
with full covariances is fitted on the features up to a refit bar (all of them, or the
last ``fit_window``), first once ``min_history`` bars exist, then every ``refit_every``
bars; each refit starts EM from the previous parameters, which keeps the states in place
and makes a refit cost a few EM iterations. EM is hmmlearn 0.3.3's ``GaussianHMM`` fit
written out over its compiled ``_hmmc`` passes (the same figures to the last bit), so that
fitting does not import ``hmmlearn.hmm``, scikit-learn and scipy.stats.

States are ordered by their mean log realised volatility after every fit, so label 0 is
the calmest state and label K-1 the most volatile one, whatever order EM found them in.
With the default three states: 0 = calm, 1 = normal, 2 = turbulent (crashes such as
March 2020, May 2021, the LUNA and FTX weeks, and violent rallies alike: the state is
about volatility, its return mean says which way). On BTC daily bars the three sit near
35 %, 70 % and 120 % annualised volatility. ``HmmFit.annual_vol`` gives each fit's
levels, so a caller can read "state 2" as a number.

The probabilities are FILTERED: at bar t, P(state_t | features of bars <= t) from the
forward algorithm under the parameters of the last refit at or before t, run from the
start of that refit's window (so they can step at a refit bar, never before it).
Smoothed posteriors (``predict_proba``) use later bars and are never used here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from trimtab.signals.volatility import (
    Frame,
    _as_frame,
    _finite_runs,
    _like,
    close_to_close_vol,
    simple_returns,
    single_threaded_blas,
)

N_STATES = 3
VOL_WINDOW = 10
_MIN_VOL = 1e-4  # floor before the log: a flat (gap-filled) window would give log(0)


@dataclass(frozen=True)
class HmmFit:
    """One refit of the regime HMM for one asset; states are in label order (calm first).

    ``at`` is the last bar the fit saw, ``first`` the first. ``means`` (K x 2) and
    ``covars`` (K x 2 x 2) are over (scaled return, log vol); ``transmat[i, j]`` is
    P(state j next | state i now).
    """

    at: pd.Timestamp
    first: pd.Timestamp
    n_obs: int
    startprob: np.ndarray
    transmat: np.ndarray
    means: np.ndarray
    covars: np.ndarray
    log_likelihood: float
    n_iter: int

    @property
    def annual_vol(self) -> np.ndarray:
        """Typical annualised volatility of each state (exp of its mean log vol)."""
        return np.exp(self.means[:, 1])


@dataclass(frozen=True)
class RegimeResult:
    """Filtered regime probabilities, one time x asset frame per state label."""

    probs: tuple[pd.DataFrame, ...]
    fits: dict[str, list[HmmFit]] = field(default_factory=dict)

    @property
    def n_states(self) -> int:
        return len(self.probs)

    @property
    def high_vol(self) -> pd.DataFrame:
        """Probability of the most volatile state (label K-1)."""
        return self.probs[-1]

    @property
    def state(self) -> pd.DataFrame:
        """Most probable label per bar (float so that NaN marks no estimate)."""
        stack = np.stack([p.to_numpy() for p in self.probs])
        missing = np.isnan(stack).any(axis=0)
        label = np.argmax(np.where(np.isnan(stack), -1.0, stack), axis=0).astype(float)
        label[missing] = np.nan
        return pd.DataFrame(label, index=self.probs[0].index, columns=self.probs[0].columns)

    def expected_state(self) -> pd.DataFrame:
        """Probability-weighted label, 0 (calm) .. K-1 (turbulent)."""
        return sum(k * p for k, p in enumerate(self.probs))  # type: ignore[return-value]


def regime_features(
    close: pd.DataFrame | pd.Series, vol_window: int = VOL_WINDOW, periods_per_year: float = 365.0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The HMM's two features (scaled log return, log realised vol), time x asset."""
    c = _as_frame(close)
    r = np.log(c / c.shift(1))
    rv = np.sqrt((r * r).rolling(vol_window, min_periods=vol_window).mean() * periods_per_year)
    return r * np.sqrt(periods_per_year), np.log(rv.clip(lower=_MIN_VOL))


def gaussian_log_likelihood(x: np.ndarray, means: np.ndarray, covars: np.ndarray) -> np.ndarray:
    """log N(x_t; mean_k, cov_k) for every bar t and state k, as a (T x K) array."""
    t, d = x.shape
    out = np.empty((t, len(means)))
    for k, (mu, cov) in enumerate(zip(means, covars, strict=True)):
        chol = np.linalg.cholesky(cov)
        z = np.linalg.solve(chol, (x - mu).T)
        logdet = 2.0 * np.log(np.diag(chol)).sum()
        out[:, k] = -0.5 * (d * np.log(2.0 * np.pi) + logdet + (z * z).sum(axis=0))
    return out


def forward_filter(
    startprob: np.ndarray, transmat: np.ndarray, log_emission: np.ndarray
) -> np.ndarray:
    """Filtered state probabilities P(s_t | x_0..x_t) by the forward algorithm, (T x K).

    Uses hmmlearn's compiled forward pass when available; row t depends on rows <= t only.
    """
    try:
        from hmmlearn import _hmmc

        _, fwd = _hmmc.forward_log(
            np.asarray(startprob, float), np.asarray(transmat, float), log_emission
        )
    except (ImportError, AttributeError):  # pragma: no cover - older/newer hmmlearn
        from scipy.special import logsumexp

        log_a = np.log(transmat)
        fwd = np.empty_like(log_emission)
        fwd[0] = np.log(startprob) + log_emission[0]
        for t in range(1, len(log_emission)):
            fwd[t] = logsumexp(fwd[t - 1][:, None] + log_a, axis=0) + log_emission[t]
    p = np.exp(fwd - fwd.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def _initial_params(x: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """Deterministic start for EM: states seeded at quantile bands of log volatility."""
    edges = np.quantile(x[:, 1], np.linspace(0.0, 1.0, k + 1))
    band = np.clip(np.searchsorted(edges, x[:, 1], side="right") - 1, 0, k - 1)
    d = x.shape[1]
    means = np.empty((k, d))
    covars = np.empty((k, d, d))
    overall = np.cov(x.T) + 1e-3 * np.eye(d)
    for i in range(k):
        pts = x[band == i]
        means[i] = pts.mean(axis=0) if len(pts) else x.mean(axis=0)
        covars[i] = np.cov(pts.T) + 1e-3 * np.eye(d) if len(pts) > d + 1 else overall
    transmat = np.full((k, k), 0.05 / max(k - 1, 1))
    np.fill_diagonal(transmat, 0.95 if k > 1 else 1.0)
    startprob = np.full(k, 1.0 / k)
    return startprob, transmat, means, covars


def _log_density_full(x: np.ndarray, means: np.ndarray, covars: np.ndarray) -> np.ndarray:
    """hmmlearn 0.3.3's ``_log_multivariate_normal_density_full``: the same SciPy calls in
    the same order (EM's figures must equal hmmlearn's to the last bit), T x K."""
    from scipy import linalg

    nf = means.shape[1]
    log_prob = []
    for mu, cv in zip(means, covars, strict=True):
        try:
            cv_chol = linalg.cholesky(cv, lower=True)
        except linalg.LinAlgError:
            try:
                cv_chol = linalg.cholesky(cv + 1.0e-7 * np.eye(nf), lower=True)
            except linalg.LinAlgError:
                raise ValueError("'covars' must be symmetric, positive-definite") from None
        cv_log_det = 2 * np.sum(np.log(np.diagonal(cv_chol)))
        cv_sol = linalg.solve_triangular(cv_chol, (x - mu).T, lower=True).T
        log_prob.append(-0.5 * (nf * np.log(2 * np.pi) + (cv_sol**2).sum(axis=1) + cv_log_det))
    return np.transpose(log_prob)


def _check_start(start: tuple[np.ndarray, ...]) -> None:
    """The checks hmmlearn makes when the start is set and fitted (ValueError if not met)."""
    from scipy import linalg

    for cv in start[3]:  # hmmlearn's covars_ setter
        if not np.allclose(cv, cv.T) or np.any(linalg.eigvalsh(cv) <= 0):
            raise ValueError("HMM start: covariances must be symmetric, positive-definite")


def _em(
    x: np.ndarray, start: tuple[np.ndarray, ...], n_iter: int, tol: float, scaling: bool
) -> tuple[tuple[np.ndarray, ...], list[float]]:
    """EM of a full-covariance Gaussian HMM, as hmmlearn 0.3.3's ``GaussianHMM(
    covariance_type="full", init_params="", params="stmc")`` fits it from ``start``.

    Written out so that a review does not import ``hmmlearn.hmm`` (which imports
    scikit-learn and scipy.stats, most of a second); the forward-backward passes are
    hmmlearn's compiled ``_hmmc``. Default priors (startprob/transmat 1, means weight 0,
    covars prior 1e-2, weight 1), the same operations in the same order: the parameters
    and the log-likelihoods equal hmmlearn's bit for bit (tests/signals/test_regime_exact).
    ``tol`` is on the total log-likelihood. Raises ValueError or LinAlgError as hmmlearn.
    """
    from hmmlearn import _hmmc

    x = np.asarray(x, dtype=float)
    if not np.isfinite(x).all():
        raise ValueError("HMM features contain NaN or infinity")
    startprob, transmat, means, covars = (np.array(a, dtype=float) for a in start)
    k, nf = means.shape
    for name, a in (("startprob", startprob), ("transmat", transmat)):
        if not np.allclose(a.sum(axis=-1), 1):
            raise ValueError(f"HMM start: {name} must sum to 1")
    history: list[float] = []
    for it in range(n_iter):
        log_frameprob = _log_density_full(x, means, covars)
        if scaling:
            with np.errstate(under="ignore"):
                lattice = np.exp(log_frameprob)
            log_prob, fwd, scale = _hmmc.forward_scaling(startprob, transmat, lattice)
            bwd = _hmmc.backward_scaling(startprob, transmat, lattice, scale)
            posteriors = fwd * bwd
            norm = posteriors.sum(1)
            norm[norm == 0] = 1
            posteriors /= norm[:, None]
        else:
            from scipy.special import logsumexp

            lattice = log_frameprob
            log_prob, fwd = _hmmc.forward_log(startprob, transmat, lattice)
            bwd = _hmmc.backward_log(startprob, transmat, lattice)
            log_gamma = fwd + bwd
            with np.errstate(under="ignore"):
                log_gamma -= logsumexp(log_gamma, 1, keepdims=True)
                posteriors = np.exp(log_gamma)
        # Sufficient statistics, accumulated from zeros as hmmlearn does (0.0 + x is x
        # but for the sign of a zero).
        s_start = np.zeros(k) + posteriors[0]
        s_trans = np.zeros((k, k))
        if len(x) > 1:
            if scaling:
                s_trans += _hmmc.compute_scaling_xi_sum(fwd, transmat, bwd, lattice)
            else:
                log_xi_sum = _hmmc.compute_log_xi_sum(fwd, transmat, bwd, lattice)
                with np.errstate(under="ignore"):
                    s_trans += np.exp(log_xi_sum)
        s_post = np.zeros(k) + posteriors.sum(axis=0)
        s_obs = np.zeros((k, nf)) + posteriors.T @ x
        s_outer = np.zeros((k, nf, nf)) + np.einsum("ij,ik,il->jkl", posteriors, x, x)
        lower_bound = 0 + log_prob
        # M-step with the default priors, written as hmmlearn writes it.
        new_start = np.maximum(1.0 - 1 + s_start, 0)
        startprob = np.where(startprob == 0, 0, new_start)
        startprob /= startprob.sum(None)
        new_trans = np.maximum(1.0 - 1 + s_trans, 0)
        transmat = np.where(transmat == 0, 0, new_trans)
        row = transmat.sum(1)
        row[row == 0] = 1
        transmat /= row[:, None]
        denom = s_post[:, None]
        means = (0 * 0 + s_obs) / (0 + denom)
        meandiff = means - 0
        c_n = np.empty((k, nf, nf))
        for c in range(k):
            obsmean = np.outer(s_obs[c], means[c])
            c_n[c] = (
                0 * np.outer(meandiff[c], meandiff[c])
                + s_outer[c]
                - obsmean
                - obsmean.T
                + np.outer(means[c], means[c]) * s_post[c]
            )
        covars = (1e-2 + c_n) / (max(1 - nf, 0) + s_post[:, None, None])
        history.append(lower_bound)
        if it + 1 == n_iter or (len(history) >= 2 and history[-1] - history[-2] < tol):
            break
    return (startprob, transmat, means, covars), history


def _fit_hmm(
    x: np.ndarray,
    start: tuple[np.ndarray, ...],
    n_iter: int,
    tol: float,
    random_state: int,
) -> tuple[tuple[np.ndarray, ...], float, int]:
    """EM from ``start``; returns parameters in label order, log-likelihood, iterations.

    ``random_state`` is unused (hmmlearn drew nothing with ``init_params=""``); kept for
    the callers' signature.
    """
    del random_state
    _check_start(start)
    # Scaling is about twice as fast as log-space EM; log-space is the fallback when an
    # extreme bar underflows every state's density.
    for scaling in (True, False):
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                fitted, history = _em(x, start, n_iter, tol, scaling)
        except (ValueError, np.linalg.LinAlgError):
            continue
        if all(np.isfinite(a).all() for a in fitted):
            break
    else:
        # EM failed both ways: keep the starting parameters rather than lose the bar.
        return start, np.nan, 0
    startprob, transmat, means, covars = fitted
    order = np.argsort(means[:, 1], kind="stable")
    params = (startprob[order], transmat[np.ix_(order, order)], means[order], covars[order])
    return params, float(history[-1]) if history else np.nan, len(history)


def _regime_column(
    x: np.ndarray,
    index: pd.DatetimeIndex,
    *,
    n_states: int,
    refit_every: int,
    min_history: int,
    fit_window: int | None,
    n_iter: int,
    warm_iter: int,
    tol: float,
    random_state: int,
) -> tuple[np.ndarray, list[HmmFit]]:
    out = np.full((len(x), n_states), np.nan)
    fits: list[HmmFit] = []
    for start, stop in _finite_runs(np.isfinite(x).all(axis=1)):
        params: tuple[np.ndarray, ...] | None = None
        s = start + min_history - 1
        while s < stop:
            block_end = min(s + refit_every, stop)
            lo = start if fit_window is None else max(start, s + 1 - fit_window)
            y = x[lo : s + 1]
            init = params if params is not None else _initial_params(y, n_states)
            iters = warm_iter if params is not None else n_iter
            params, loglik, used = _fit_hmm(y, init, iters, tol * len(y), random_state)
            startprob, transmat, means, covars = params
            fits.append(
                HmmFit(
                    at=index[s],
                    first=index[lo],
                    n_obs=len(y),
                    startprob=startprob,
                    transmat=transmat,
                    means=means,
                    covars=covars,
                    log_likelihood=loglik,
                    n_iter=used,
                )
            )
            # Forward pass over the fit window and on to the end of the block; only the
            # block's rows are kept, each depending on bars up to itself.
            seg = x[lo:block_end]
            filt = forward_filter(startprob, transmat, gaussian_log_likelihood(seg, means, covars))
            out[s:block_end] = filt[s - lo :]
            s = block_end
    return out, fits


def fit_regimes(
    close: pd.DataFrame | pd.Series,
    *,
    n_states: int = N_STATES,
    vol_window: int = VOL_WINDOW,
    periods_per_year: float = 365.0,
    refit_every: int | None = None,
    min_history: int | None = None,
    fit_window: int | None = None,
    n_iter: int = 100,
    warm_iter: int = 5,
    tol: float = 1e-4,
    random_state: int = 0,
) -> RegimeResult:
    """Filtered volatility-regime probabilities per asset from a Gaussian HMM; causal.

    See the module docstring for the features, the schedule and the state order.
    ``refit_every`` defaults to 30 days of bars, ``min_history`` (bars of features before
    the first fit) to one year of bars, ``fit_window`` to all history (expanding). The
    first fit runs up to ``n_iter`` EM iterations, later refits up to ``warm_iter``; EM
    stops when the log-likelihood gains less than ``tol`` per observation.
    """
    if n_states < 2:
        raise ValueError("n_states must be at least 2")
    ret, logvol = regime_features(close, vol_window, periods_per_year)
    refit_every = refit_every or max(1, round(periods_per_year * 30 / 365))
    min_history = min_history or max(100, round(periods_per_year))
    if min_history < 10 * n_states:
        raise ValueError("min_history is too short to fit the HMM")
    index = pd.DatetimeIndex(ret.index)
    feats = np.stack([ret.to_numpy(float), logvol.to_numpy(float)], axis=-1)  # T x N x 2
    probs = np.full((n_states, *ret.shape), np.nan)
    fits: dict[str, list[HmmFit]] = {}
    with single_threaded_blas():
        for j, name in enumerate(ret.columns):
            col, fits[str(name)] = _regime_column(
                feats[:, j, :],
                index,
                n_states=n_states,
                refit_every=refit_every,
                min_history=min_history,
                fit_window=fit_window,
                n_iter=n_iter,
                warm_iter=warm_iter,
                tol=tol,
                random_state=random_state,
            )
            probs[:, :, j] = col.T
    frames = tuple(
        pd.DataFrame(p, index=ret.index, columns=ret.columns).where(_as_frame(close).notna())
        for p in probs
    )
    return RegimeResult(probs=frames, fits=fits)


def portfolio_index(
    close: pd.DataFrame, weights: pd.DataFrame | None = None, name: str = "market"
) -> pd.Series:
    """A causal portfolio level series (starts at 1) from asset closes.

    ``weights=None`` is an equal-weight index over the assets with a return at each bar
    (listed at t-1 and t), so listings and delistings enter and leave without look-ahead.
    Otherwise ``weights`` (time x asset, fractions of equity) held from the close of t-1
    earn the returns of bar t; the rest is cash at zero return.
    """
    r = simple_returns(close)
    if weights is None:
        port = r.mean(axis=1, skipna=True)
    else:
        w = weights.reindex(index=close.index, columns=close.columns).shift(1)
        port = (w * r).sum(axis=1, min_count=1)
    level = (1.0 + port.fillna(0.0)).cumprod()
    started = close.notna().any(axis=1).cummax()
    return level.where(started).rename(name)


def market_regime(
    close: pd.DataFrame, weights: pd.DataFrame | None = None, **kwargs: object
) -> RegimeResult:
    """``fit_regimes`` on ``portfolio_index(close, weights)``: one ``market`` column."""
    return fit_regimes(portfolio_index(close, weights).to_frame(), **kwargs)  # type: ignore[arg-type]


def regime_change_score(
    close: Frame, short: int = 10, long: int = 90, periods_per_year: float = 365.0
) -> Frame:
    """How far short-window volatility has moved from long-window volatility, as a z-score.

    ``ln(vol_short / vol_long) * sqrt(2 (short - 1))``: the log ratio in units of its
    standard error when volatility is constant and returns Gaussian, so +3 reads "the
    last ``short`` bars are far more volatile than the last ``long``". Fat tails make
    large values more common than the normal law says: a ranking for scanners, not a
    p-value. NaN until ``long`` returns exist or when the long window never moved.
    """
    if not 1 < short < long:
        raise ValueError("need 1 < short < long")
    vs = close_to_close_vol(close, short, periods_per_year)
    vl = close_to_close_vol(close, long, periods_per_year)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.log(_as_frame(vs) / _as_frame(vl).where(_as_frame(vl) > 0)) * np.sqrt(
            2.0 * (short - 1)
        )
    z = z.where(np.isfinite(z))
    return _like(z, close)
