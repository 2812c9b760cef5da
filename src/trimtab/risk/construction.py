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
import scipy.linalg as sla

# scipy.cluster and scipy.spatial are imported where HRP needs them: they cost about
# 0.45 s at start-up, which every ``trimtab run`` (whose allocator uses risk parity
# only) would otherwise pay.

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


def _check_covariance(
    cov: np.ndarray, name: str = "cov"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(covariance made exactly symmetric, standard deviations, correlation), after the
    checks: square, finite, positive variances, symmetric and positive semi-definite
    within the tolerances (on the correlation scale)."""
    c = np.asarray(cov, dtype=float)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"{name} must be a square N x N matrix, got shape {c.shape}")
    n = c.shape[0]
    if n == 0:
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
    corr = c / sd[:, None]
    corr /= sd[None, :]
    asym = np.abs(corr - corr.T)
    if asym.max() > SYMMETRY_TOL:
        i, j = np.unravel_index(int(asym.argmax()), asym.shape)
        raise ValueError(
            f"{name} is not symmetric: [{i}, {j}] = {float(c[i, j])!r} "
            f"but [{j}, {i}] = {float(c[j, i])!r}"
        )
    del asym
    c = 0.5 * (c + c.T)
    corr += corr.T
    corr *= 0.5
    # PSD within tolerance <=> corr + PSD_TOL * I has a Cholesky factor (one O(N^3/3)
    # factorisation, several times cheaper than the eigenvalues).
    test = corr.copy()
    test.flat[:: n + 1] = 1.0 + PSD_TOL
    try:
        sla.cholesky(test, lower=False, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:
        low = float(np.linalg.eigvalsh(corr)[0])
        raise ValueError(
            f"{name} is not positive semi-definite: the smallest eigenvalue of its "
            f"correlation matrix is {low:.3g} (below -{PSD_TOL:g})"
        ) from None
    corr.flat[:: n + 1] = 1.0
    return c, sd, corr


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
    correlation scale (C the correlation matrix, y = w * sd up to scale), steps taken
    in log(y) with a backtracking line search; 5-7 steps at N = 2,000, each one
    Cholesky factorisation of N x N. Raises RuntimeError when there is no solution (a
    singular cov under which some long-only portfolio has zero variance).

    ``tol``: the largest relative error of a risk contribution, ``|rc_i - b_i| / b_i``,
    at which to stop. Raises RuntimeError if ``max_iter`` steps do not reach it.
    """
    _, sd, corr = _check_covariance(cov)
    n = corr.shape[0]
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
    # Budgets scaled so the smallest is 1: then every -b_i log(y_i) is self-concordant
    # and the textbook bound for Newton's quadratic region (decrement < 0.32) holds.
    b = b / b.min()
    # Start on the ray of sqrt(b) (the answer when uncorrelated), scaled to its best
    # point: along y = t d the objective is lowest at t^2 = sum(b) / d'Cd.
    y = np.sqrt(b)
    cy = corr @ y
    quad = float(y @ cy)
    if not quad > PSD_TOL:
        raise RuntimeError(f"risk parity has no solution: {_ZERO_RISK_MIX}")
    t = np.sqrt(b.sum() / quad)
    y *= t
    cy *= t
    solve = _NewtonSolver(corr)
    for _ in range(max_iter):
        err = float(np.max(np.abs(y * cy - b) / b))
        if err <= tol:
            break
        if not np.isfinite(err):  # y ran off to 0 or infinity: no finite answer
            raise RuntimeError(f"risk parity has no solution: {_ZERO_RISK_MIX}")
        grad = cy - b / y
        step = solve(b / (y * y), -grad)
        slope = float(grad @ step)
        # The step is taken in log(y) (y * exp(step / y), the same direction to first
        # order): it cannot leave y > 0 and needs about half the steps of y + step,
        # which stalls at the boundary on correlated markets. Backtracking (Armijo) on
        # the objective, except in Newton's quadratic region (decrement below 0.32).
        rel = step / y
        a = 1.0
        if -slope >= 0.1:
            f0 = 0.5 * float(y @ cy) - float(b @ np.log(y))
            while a > 1e-12:
                trial = y * np.exp(np.minimum(a * rel, 50.0))
                ct = corr @ trial
                f1 = 0.5 * float(trial @ ct) - float(b @ np.log(trial))
                if f1 <= f0 + 1e-4 * a * slope:
                    break
                a *= 0.5
            y, cy = trial, ct
        else:
            y = y * np.exp(rel)
            cy = corr @ y
    else:
        raise RuntimeError(
            f"risk parity did not converge in {max_iter} Newton steps "
            f"(largest relative risk-contribution error {err:.3g} > tol {tol:g}); "
            f"if cov is singular: {_ZERO_RISK_MIX}"
        )
    w = y / sd
    return w / w.sum()


class _NewtonSolver:
    """Solves ``(C + diag(d)) x = r`` for Newton's steps.

    From 256 assets the factorisation is in float32 (about twice as fast) and the
    answer is refined in float64 against the float64 matrix (two rounds of iterative
    refinement: relative error ~ (cond * 6e-8)^3); where float32 is not enough (a
    failed factorisation or a residual left above 1e-9), float64 from then on."""

    def __init__(self, corr: np.ndarray) -> None:
        self.corr = corr
        n = corr.shape[0]
        self.f32 = n >= 256
        self.h32 = corr.astype(np.float32) if self.f32 else None
        self.work32 = np.empty_like(self.h32) if self.f32 else None
        self.work64 = np.empty_like(corr)

    def __call__(self, d: np.ndarray, r: np.ndarray) -> np.ndarray:
        n = self.corr.shape[0]
        if self.f32:
            np.copyto(self.work32, self.h32)
            self.work32.reshape(-1)[:: n + 1] += d.astype(np.float32)
            try:
                f = sla.cho_factor(self.work32, lower=False, overwrite_a=True, check_finite=False)
            except np.linalg.LinAlgError:
                self.f32 = False
            else:
                x = sla.cho_solve(f, r.astype(np.float32), check_finite=False).astype(float)
                for _ in range(2):
                    res = r - (self.corr @ x + d * x)
                    x += sla.cho_solve(f, res.astype(np.float32), check_finite=False)
                if np.linalg.norm(r - (self.corr @ x + d * x)) <= 1e-9 * np.linalg.norm(r):
                    return x
                self.f32 = False
        np.copyto(self.work64, self.corr)
        self.work64.reshape(-1)[:: n + 1] += d
        try:
            f = sla.cho_factor(self.work64, lower=False, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError:
            raise RuntimeError(f"risk parity has no solution: {_ZERO_RISK_MIX}") from None
        return sla.cho_solve(f, r, check_finite=False)


def hrp_weights(
    cov: np.ndarray,
    *,
    linkage: str = "ward",
    optimal_ordering: bool = True,
    corr: np.ndarray | None = None,
) -> np.ndarray:
    """Hierarchical Risk Parity weights (Lopez de Prado 2016), long-only, summing to 1.

    Steps, with skfolio's ``HierarchicalRiskParity`` defaults (same weights):
      1. distance ``sqrt(0.5 (1 - rho))`` (clipped to [0, 1], as skfolio's
         ``PearsonDistance``) of the correlation ``corr`` (by default the
         correlation of ``cov``; skfolio's default takes the Pearson correlation of the
         returns, which is the correlation of their sample covariance);
      2. scipy hierarchical clustering with ``linkage`` (default ``"ward"``, as skfolio;
         any of ``LINKAGE_METHODS``);
      3. quasi-diagonal order: the tree's leaves, reordered as scipy's
         ``optimal_leaf_ordering`` reorders them when ``optimal_ordering`` (skfolio's
         default): the same order, computed ~10-100x faster (``_optimal_leaf_order``);
      4. recursive bisection of the ordered list at its middle; each half gets the
         inverse-variance weights within it and its variance ``v``; the left half's
         share is ``1 - v_left / (v_left + v_right)``.

    ``corr``: the correlation to cluster on, when it is not that of ``cov`` (e.g. cov
    shrunk, corr of the raw returns: skfolio with a shrunk prior does this). The order
    matches scipy's except where two choices tie (e.g. assets with identical returns).
    """
    c, _, own_corr = _check_covariance(cov)
    n = c.shape[0]
    if linkage not in LINKAGE_METHODS:
        raise ValueError(f"linkage must be one of {LINKAGE_METHODS}, got {linkage!r}")
    if corr is None:
        rho = own_corr
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
    import scipy.cluster.hierarchy as sch
    import scipy.spatial.distance as ssd

    dist = np.sqrt(np.clip(0.5 * (1.0 - rho), 0.0, 1.0))
    np.fill_diagonal(dist, 0.0)
    tree = sch.linkage(ssd.squareform(dist, checks=False), method=linkage)
    order = _optimal_leaf_order(tree, dist) if optimal_ordering else sch.leaves_list(tree)
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


# --- optimal leaf ordering ----------------------------------------------------------
#
# scipy's optimal_leaf_ordering (Bar-Joseph et al. 2001) is the slow part of skfolio's
# HRP (O(N^3) scalar loops: ~30 s at N = 2,000). This computes the same order from the
# same dynamic programme, in numpy:
#   M[u, w] = least sum of adjacent distances over orderings of a node's leaves that
#   start at leaf u (in one child) and end at leaf w (in the other), by the recurrence
#   M[u, w] = min_{m, k} M[u, m] + D[m, k] + M[k, w] (m, k the inner ends of the
#   children's orderings), as two min-plus matrix products per pair of grandchildren;
# then scipy's own read-out, which is not a full back-tracking: every node takes the
# (u, w) of least M over its own block and from it whether each child is mirrored, and
# the mirrors compose down the tree. The root needs only the least M of each of its
# four (u-side, w-side) classes, and its children only the least M per end leaf, so
# those three nodes (most of the work in a balanced tree) cost O(N^2), not O(N^3).
# scipy keeps M in float32; this keeps it in float64. The orders can differ where two
# choices at a node tie, exactly (assets with identical returns: 14 of 60 orders
# differed on random cases with duplicated columns) or within scipy's float32
# rounding; either choice is as good for scipy's programme. No difference was seen on
# data without duplicates (the tests and the 2,000-asset bench).

_MINPLUS_BLOCK = 1 << 17  # elements of one 3-D temporary of a min-plus product (1 MiB)


def _min_plus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``out[i, j] = min_k a[i, k] + b[k, j]``, in row blocks that fit in cache."""
    p, q = a.shape
    r = b.shape[1]
    if q == 1:
        return a + b
    rows = max(1, _MINPLUS_BLOCK // (q * r))
    if rows >= p:
        return np.min(a[:, :, None] + b[None, :, :], axis=1)
    out = np.empty((p, r))
    for i in range(0, p, rows):
        np.min(a[i : i + rows, :, None] + b[None, :, :], axis=1, out=out[i : i + rows])
    return out


def _optimal_leaf_order(tree: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """``sch.leaves_list(sch.optimal_leaf_ordering(tree, dist))``, faster.

    ``tree``: a scipy linkage matrix; ``dist``: the square distance matrix it was built
    from."""
    import scipy.cluster.hierarchy as sch

    n = tree.shape[0] + 1
    base = sch.leaves_list(tree)
    if n < 3:
        return base
    # Positions in the tree's own leaf order: every node is a range [lo, hi) of them,
    # its first child [lo, mid), its second [mid, hi) (mid = -1 for a leaf).
    d = dist[np.ix_(base, base)]
    left = tree[:, 0].astype(np.intp)
    right = tree[:, 1].astype(np.intp)
    lo = np.empty(2 * n - 1, dtype=np.intp)
    hi = np.empty(2 * n - 1, dtype=np.intp)
    mid = np.full(2 * n - 1, -1, dtype=np.intp)
    lo[base] = np.arange(n)
    hi[base] = np.arange(1, n + 1)
    for i in range(n - 1):
        lo[n + i] = lo[left[i]]
        hi[n + i] = hi[right[i]]
        mid[n + i] = hi[left[i]]
    root = n - 2
    top = {root} | {int(c) - n for c in (left[root], right[root]) if c >= n}
    m = np.zeros((n, n))
    mirror = np.zeros(n - 1, dtype=bool)

    def decide(i: int, u: int, w: int) -> None:
        # scipy: mirror the first child when u is in its second half, the second child
        # when w is in its first half.
        a, b = left[i], right[i]
        if a >= n:
            mirror[a - n] = u >= mid[a]
        if b >= n:
            mirror[b - n] = w < mid[b]

    for i in range(n - 1):
        if i in top:
            continue
        a, b = left[i], right[i]
        al, am, ah = lo[a], mid[a], hi[a]
        bl, bm, bh = lo[b], mid[b], hi[b]
        # t[m, w] = min_k D[m, k] + M[k, w]: m anywhere in a, k in the other half of b.
        if bm < 0:
            t = d[al:ah, bl:bh]
        else:
            t = np.empty((ah - al, bh - bl))
            t[:, : bm - bl] = _min_plus(d[al:ah, bm:bh], m[bm:bh, bl:bm])
            t[:, bm - bl :] = _min_plus(d[al:ah, bl:bm], m[bl:bm, bm:bh])
        # M[u, w] = min_m M[u, m] + t[m, w]: m in the other half of a.
        if am < 0:
            blk = t
        else:
            blk = np.empty((ah - al, bh - bl))
            blk[: am - al] = _min_plus(m[al:am, am:ah], t[am - al :])
            blk[am - al :] = _min_plus(m[am:ah, al:am], t[: am - al])
        m[al:ah, bl:bh] = blk
        m[bl:bh, al:ah] = blk.T
        iu, iw = divmod(int(np.argmin(blk)), blk.shape[1])
        decide(i, al + iu, bl + iw)

    def halves(v: int) -> list[tuple[int, int]]:
        return [(lo[v], hi[v])] if mid[v] < 0 else [(lo[v], mid[v]), (mid[v], hi[v])]

    def end_vec(v: int) -> np.ndarray:
        """Per leaf p of node v (a leaf or a node with a full M block): the least M
        over orderings of v that end at p (start anywhere in the other half)."""
        if mid[v] < 0:
            return np.zeros(1)
        vl, vm, vh = lo[v], mid[v], hi[v]
        return np.concatenate([m[vm:vh, vl:vm].min(axis=0), m[vl:vm, vm:vh].min(axis=0)])

    def end_costs(s: int, t: int, cs: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """For orderings of s then t (s's ending leaf p next to t's starting leaf q):
        per half P of s holding p, the least cost per end leaf of t. ``cs``: end_vec(s)."""
        out = []
        tl, tm, th = lo[t], mid[t], hi[t]
        for pl, ph in halves(s):
            r = np.min(cs[pl - lo[s] : ph - lo[s], None] + d[pl:ph, tl:th], axis=0)
            if tm < 0:
                vp = r
            else:
                vp = np.empty(th - tl)
                vp[: tm - tl] = np.min(r[tm - tl :, None] + m[tm:th, tl:tm], axis=0)
                vp[tm - tl :] = np.min(r[: tm - tl, None] + m[tl:tm, tm:th], axis=0)
            out.append((pl, vp))
        return out

    vec = {}
    for c in (left[root], right[root]):
        if c < n:
            vec[c] = np.zeros(1)
            continue
        x, y = left[c - n], right[c - n]
        v = np.empty(hi[c] - lo[c])
        fwd = end_costs(x, y, end_vec(x))
        v[mid[c] - lo[c] :] = np.min([vp for _, vp in fwd], axis=0)
        v[: mid[c] - lo[c]] = np.min([vp for _, vp in end_costs(y, x, end_vec(y))], axis=0)
        vec[c] = v
        # c's own read-out: the least M over (u in x, w in y), by class of u and w.
        best = None
        for pl, vp in fwd:
            u_half_second = mid[x] >= 0 and pl == lo[x]  # u is in the other half than p
            for wl, wh in halves(y):
                val = vp[wl - lo[y] : wh - lo[y]].min()
                if best is None or val < best[0]:
                    best = (val, u_half_second, wl)
        _, u_second, wl = best
        u = mid[x] if u_second else lo[x]
        decide(c - n, u, wl)
    a, b = left[root], right[root]
    best = None
    for ml, mh in halves(a):
        for kl, kh in halves(b):
            va = vec[a][ml - lo[a] : mh - lo[a]]
            vb = vec[b][kl - lo[b] : kh - lo[b]]
            val = (va[:, None] + d[ml:mh, kl:kh] + vb[None, :]).min()
            if best is None or val < best[0]:
                # u is in the half of a other than m's, w in the half of b other than k's
                u = lo[a] if (mid[a] < 0 or ml == mid[a]) else mid[a]
                w = lo[b] if (mid[b] < 0 or kl == mid[b]) else mid[b]
                best = (val, u, w)
    decide(root, best[1], best[2])
    # Mirrors compose: a node is flipped if an odd number of it and its ancestors are.
    flip = mirror.copy()
    for i in range(n - 2, -1, -1):  # parents come after their children in a linkage
        for ch in (left[i], right[i]):
            if ch >= n:
                flip[ch - n] ^= flip[i]
    swapped = tree.copy()
    swapped[flip, 0], swapped[flip, 1] = tree[flip, 1], tree[flip, 0]
    return sch.leaves_list(swapped)
