"""Portfolio construction written by hand for speed: shrunk covariance, risk parity
(equal or budgeted risk contributions) and Hierarchical Risk Parity.

Checked against the reference libraries in ``tests/risk/test_construction.py``:
``sklearn.covariance.LedoitWolf`` (same numbers), skfolio's ``RiskBudgeting`` (variance)
and ``HierarchicalRiskParity`` with its defaults (same weights). Speed against skfolio:
``bench/bench_construction.py``.

Conventions: ``returns`` are simple returns per bar (rows: bars, oldest first; columns:
assets), fractions. A covariance is in the same units (return squared per bar). Weights
are long-only fractions of capital summing to 1, in the asset order of the input.
"""

from __future__ import annotations

import numpy as np
import scipy.cluster.hierarchy as sch
import scipy.linalg as sla
import scipy.spatial.distance as ssd

__all__ = ["hrp_weights", "risk_parity_weights", "shrunk_covariance"]

#: Tolerances of the covariance checks, on the correlation scale (unit diagonal), so
#: they do not depend on the units of the returns.
SYMMETRY_TOL = 1e-9
PSD_TOL = 1e-8

_ZERO_RISK_MIX = (
    "cov is singular and some long-only portfolio with zero variance exists "
    "(risk shares are undefined there); shrink it, e.g. shrunk_covariance(returns)"
)

LINKAGE_METHODS = ("single", "complete", "average", "weighted", "centroid", "median", "ward")


def shrunk_covariance(returns: np.ndarray, method: str = "ledoit-wolf") -> np.ndarray:
    """Covariance of ``returns`` (T x N), N x N.

    Rows with any NaN are dropped first (the estimate uses only the bars where every
    asset has a return, so it stays positive semi-definite); fewer than 2 rows left is a
    ValueError. Infinite returns are a ValueError.

    ``method``:
      - ``"ledoit-wolf"``: Ledoit & Wolf (2004) shrinkage of the sample covariance
        (divided by T, means removed) toward the scaled identity ``mu * I`` with
        ``mu = trace / N``; the same numbers as ``sklearn.covariance.LedoitWolf().fit``.
      - ``"sample"``: the unbiased sample covariance (divided by T - 1), as ``np.cov``.
    """
    x = np.asarray(returns, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"returns must be 2-D (bars x assets), got shape {x.shape}")
    if method not in ("ledoit-wolf", "sample"):
        raise ValueError(f"method must be 'ledoit-wolf' or 'sample', got {method!r}")
    if np.isinf(x).any():
        rows, cols = np.nonzero(np.isinf(x))
        raise ValueError(f"returns has infinite values (first at row {rows[0]}, column {cols[0]})")
    keep = ~np.isnan(x).any(axis=1)
    x = x[keep]
    t, n = x.shape
    if t < 2:
        raise ValueError(
            f"returns of shape {np.asarray(returns).shape} has {t} row(s) without NaN; "
            "a covariance needs at least 2"
        )
    if n == 0:
        raise ValueError(f"returns of shape {np.asarray(returns).shape} has no assets")
    xc = x - x.mean(axis=0)
    gram = xc.T @ xc
    if method == "sample":
        return gram / (t - 1)
    s = gram / t
    if n == 1:
        return s
    # sklearn's ledoit_wolf_shrinkage in closed form: sum(X2'X2) = sum_t (sum_i x_ti^2)^2
    # and sum((X'X)^2) / T^2 = ||S||_F^2, so no second N x N product is needed.
    x2_rows = np.einsum("ti,ti->t", xc, xc)
    trace = float(x2_rows.sum()) / t
    mu = trace / n
    beta_ = float(x2_rows @ x2_rows)
    delta_ = float(np.einsum("ij,ij->", s, s))
    beta = (beta_ / t - delta_) / (n * t)
    delta = (delta_ - 2.0 * mu * trace + n * mu * mu) / n
    beta = min(beta, delta)
    shrinkage = 0.0 if beta == 0 else beta / delta
    out = (1.0 - shrinkage) * s
    out.flat[:: n + 1] += shrinkage * mu
    return out


def _check_covariance(cov: np.ndarray, name: str = "cov") -> tuple[np.ndarray, np.ndarray]:
    """The covariance made exactly symmetric and its standard deviations, after the
    checks: square, finite, positive variances, symmetric and positive semi-definite
    within the tolerances (on the correlation scale)."""
    c = np.asarray(cov, dtype=float)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"{name} must be a square N x N matrix, got shape {c.shape}")
    if c.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {c.shape})")
    if not np.isfinite(c).all():
        rows, cols = np.nonzero(~np.isfinite(c))
        raise ValueError(f"{name} has NaN or infinite entries (first at [{rows[0]}, {cols[0]}])")
    var = np.diag(c)
    if (var <= 0).any():
        i = int(np.flatnonzero(var <= 0)[0])
        raise ValueError(
            f"{name} has a variance <= 0 on its diagonal (asset {i}: {float(var[i])!r}); "
            "drop assets that do not move"
        )
    sd = np.sqrt(var)
    scale = np.outer(sd, sd)
    asym = np.abs(c - c.T) / scale
    if asym.max() > SYMMETRY_TOL:
        i, j = np.unravel_index(int(asym.argmax()), asym.shape)
        raise ValueError(
            f"{name} is not symmetric: [{i}, {j}] = {float(c[i, j])!r} "
            f"but [{j}, {i}] = {float(c[j, i])!r}"
        )
    c = 0.5 * (c + c.T)
    corr = c / scale
    # PSD within tolerance <=> corr + PSD_TOL * I has a Cholesky factor (one O(N^3/3)
    # factorisation, much cheaper than the eigenvalues).
    corr.flat[:: c.shape[0] + 1] = 1.0 + PSD_TOL
    try:
        sla.cholesky(corr, lower=True, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:
        low = float(np.linalg.eigvalsh(c / scale)[0])
        raise ValueError(
            f"{name} is not positive semi-definite: the smallest eigenvalue of its "
            f"correlation matrix is {low:.3g} (below -{PSD_TOL:g})"
        ) from None
    return c, sd


def risk_parity_weights(
    cov: np.ndarray,
    budgets: np.ndarray | None = None,
    *,
    tol: float = 1e-10,
    max_iter: int = 100,
) -> np.ndarray:
    """Long-only risk-budgeting weights (equal risk contribution without ``budgets``).

    Finds w > 0, sum(w) = 1, whose risk contributions ``w_i (cov w)_i / (w' cov w)``
    equal ``budgets / sum(budgets)`` (budgets: positive numbers, any scale). Method:
    Newton's method on Spinu's (2013) convex problem ``min 0.5 y'Cy - b'log(y)`` on the
    correlation scale (C the correlation matrix, y = w * sd up to scale), damped steps
    ``1 / (1 + Newton decrement)`` that keep y > 0 (the objective is self-concordant),
    then full steps (quadratic convergence). Cost: one Cholesky of N x N per step.

    ``tol``: the largest relative error of a risk contribution, ``|rc_i - b_i| / b_i``,
    at which to stop. Raises RuntimeError if ``max_iter`` steps do not reach it.
    """
    c, sd = _check_covariance(cov)
    n = c.shape[0]
    if budgets is None:
        b = np.full(n, 1.0 / n)
    else:
        b = np.asarray(budgets, dtype=float)
        if b.shape != (n,):
            raise ValueError(f"budgets must have shape ({n},) like cov, got {b.shape}")
        if not np.isfinite(b).all() or (b <= 0).any():
            bad = int(np.flatnonzero(~(np.isfinite(b) & (b > 0)))[0])
            raise ValueError(
                f"budgets must be finite and > 0 (budget {bad} is {float(b[bad])!r}); "
                "leave out an asset that should get no risk"
            )
        b = b / b.sum()
    if not (tol > 0 and np.isfinite(tol)):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    if n == 1:
        return np.ones(1)
    corr = c / np.outer(sd, sd)
    # Budgets scaled so the smallest is 1: then every -b_i log(y_i) is self-concordant
    # (constant 2), which is what makes the damped step stay inside y > 0.
    b = b / b.min()
    # Start on the ray of sqrt(b) (the answer when uncorrelated), scaled to its best
    # point: along y = t d the objective is lowest at t^2 = sum(b) / d'Cd.
    y = np.sqrt(b)
    quad = float(y @ corr @ y)
    if not quad > PSD_TOL:
        raise RuntimeError(f"risk parity has no solution: {_ZERO_RISK_MIX}")
    y *= np.sqrt(b.sum() / quad)
    hess = np.empty_like(corr)
    diag = hess.reshape(-1)[:: n + 1]
    for _ in range(max_iter):
        cy = corr @ y
        err = np.max(np.abs(y * cy - b) / b)
        if err <= tol:
            break
        grad = cy - b / y
        np.copyto(hess, corr)
        diag += b / (y * y)
        try:
            factor = sla.cho_factor(hess, lower=True, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError:
            raise RuntimeError(f"risk parity has no solution: {_ZERO_RISK_MIX}") from None
        step = -sla.cho_solve(factor, grad, check_finite=False)
        decrement = float(np.sqrt(max(-(grad @ step), 0.0)))
        y = y + (step / (1.0 + decrement) if decrement > 0.25 else step)
    else:
        raise RuntimeError(
            f"risk parity did not converge in {max_iter} Newton steps "
            f"(largest relative risk-contribution error {err:.3g} > tol {tol:g}); "
            f"if cov is singular: {_ZERO_RISK_MIX}"
        )
    w = y / sd
    return w / w.sum()


def _correlation_distance(corr: np.ndarray) -> np.ndarray:
    """Condensed angular distance ``sqrt(0.5 (1 - rho))``, clipped to [0, 1] (as
    skfolio's ``PearsonDistance``)."""
    d = np.sqrt(np.clip(0.5 * (1.0 - corr), 0.0, 1.0))
    return ssd.squareform(d, checks=False)


def hrp_weights(
    cov: np.ndarray,
    *,
    linkage: str = "ward",
    optimal_ordering: bool = True,
    corr: np.ndarray | None = None,
) -> np.ndarray:
    """Hierarchical Risk Parity weights (Lopez de Prado 2016), long-only, summing to 1.

    Steps, with skfolio's ``HierarchicalRiskParity`` defaults (same weights):
      1. distance ``sqrt(0.5 (1 - rho))`` of the correlation ``corr`` (by default the
         correlation of ``cov``; skfolio's default takes the Pearson correlation of the
         returns, which is the correlation of their sample covariance);
      2. scipy hierarchical clustering with ``linkage`` (default ``"ward"``, as skfolio;
         any of ``LINKAGE_METHODS``);
      3. quasi-diagonal order: the tree's leaves, reordered by scipy's optimal leaf
         ordering (adjacent leaves as close as possible) when ``optimal_ordering``
         (skfolio's default);
      4. recursive bisection of the ordered list at its middle; each half gets the
         inverse-variance weights within it and its variance ``v``; the left half's
         share is ``1 - v_left / (v_left + v_right)``.
    """
    c, sd = _check_covariance(cov)
    n = c.shape[0]
    if linkage not in LINKAGE_METHODS:
        raise ValueError(f"linkage must be one of {LINKAGE_METHODS}, got {linkage!r}")
    if corr is None:
        rho = c / np.outer(sd, sd)
    else:
        rho = np.asarray(corr, dtype=float)
        if rho.shape != (n, n):
            raise ValueError(f"corr must have the shape of cov {(n, n)}, got {rho.shape}")
        if not np.isfinite(rho).all():
            raise ValueError("corr has NaN or infinite entries")
        if np.abs(rho - rho.T).max() > SYMMETRY_TOL:
            raise ValueError("corr is not symmetric")
        if np.abs(np.diag(rho) - 1.0).max() > 1e-8 or np.abs(rho).max() > 1.0 + 1e-8:
            raise ValueError("corr must have a unit diagonal and entries in [-1, 1]")
    if n == 1:
        return np.ones(1)
    condensed = _correlation_distance(rho)
    tree = sch.linkage(condensed, method=linkage)
    if optimal_ordering:
        tree = sch.optimal_leaf_ordering(tree, condensed)
    order = sch.leaves_list(tree)
    return _recursive_bisection(c, order)


def _recursive_bisection(c: np.ndarray, order: np.ndarray) -> np.ndarray:
    """HRP's top-down split of the ordered assets (skfolio's variant: halves of the
    ordered list, inverse-variance weights within each half)."""
    n = c.shape[0]
    # Reordered once so that every cluster is a contiguous block (views, no copies).
    co = c[np.ix_(order, order)]
    ivar = 1.0 / np.diag(co)
    w = np.ones(n)
    stack = [(0, n)]
    while stack:
        lo, hi = stack.pop()
        if hi - lo < 2:
            continue
        mid = lo + (hi - lo) // 2
        v = []
        for a, z in ((lo, mid), (mid, hi)):
            u = ivar[a:z] / ivar[a:z].sum()
            v.append(float(u @ co[a:z, a:z] @ u))
        alpha = 1.0 - v[0] / (v[0] + v[1])
        w[lo:mid] *= alpha
        w[mid:hi] *= 1.0 - alpha
        stack.append((lo, mid))
        stack.append((mid, hi))
    out = np.empty(n)
    out[order] = w
    return out
