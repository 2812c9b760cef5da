"""``trimtab.risk.lbfgsb`` (SciPy's L-BFGS-B driven without importing scipy.optimize) gives
scipy.optimize.minimize's answer to the bit, and the drawdown model's NumPy ``expit`` is
scipy.special's."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit as scipy_expit

from tests.conftest import NUMPY_MATH_IS_LIBM
from trimtab.risk import lbfgsb
from trimtab.risk.drawdown_model import _logistic_loss_gradient, _LossWork, expit

pytestmark = pytest.mark.skipif(
    lbfgsb._setulb() is None, reason="SciPy release not verified: minimize_lbfgsb is minimize"
)


def _scipy(fun, x0, args, **options):
    res = minimize(fun, x0, args=args, method="L-BFGS-B", jac=True, options=options)
    return res.x, res.nfev


def _counted(fun):
    calls = []

    def wrapped(x, *args):
        calls.append(x.copy())
        return fun(x, *args)

    return wrapped, calls


def _logistic_problem(seed: int, n: int):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4)) * rng.uniform(0.5, 3.0, 4)
    y = (rng.random(n) < rng.uniform(0.05, 0.5)).astype(float)
    w = rng.uniform(0.01, 1.0, n) / 35.0
    return z, y, w, 1.0 / (0.05 * w.sum())


def test_logistic_fits_are_scipys_to_the_bit():
    """Warm-started expanding fits, as the walk-forward makes them: the same points
    evaluated in the same order and the same answer as scipy.optimize.minimize."""
    options = {"maxiter": 1000, "maxls": 50, "gtol": 1e-4, "ftol": 64 * np.finfo(float).eps}
    for seed in range(4):
        z, y, w, l2 = _logistic_problem(seed, 6000)
        x_ours = x_theirs = np.zeros(5)
        for n in range(1000, 6001, 1000):
            args = (z[:n], y[:n], w[:n], l2)
            f1, ours = _counted(_logistic_loss_gradient)
            f2, theirs = _counted(_logistic_loss_gradient)
            x_ours = lbfgsb.minimize_lbfgsb(f1, x_ours, args, **options)
            x_theirs, nfev = _scipy(f2, x_theirs, args, **options)
            assert np.array_equal(x_ours, x_theirs)
            assert len(ours) == len(theirs) == nfev
            assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))


def _rosenbrock(x):
    f = float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))
    g = np.zeros_like(x)
    g[:-1] = -400 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
    g[1:] += 200 * (x[1:] - x[:-1] ** 2)
    return f, g


@pytest.mark.parametrize(
    "options",
    [
        {},  # SciPy's defaults
        {"maxiter": 7},  # stopped by the iteration limit
        {"maxfun": 5},  # stopped by the evaluation limit
        {"maxcor": 3, "maxls": 5, "gtol": 1e-8, "ftol": 1e-14},
    ],
)
def test_a_hard_function_and_the_limits_are_scipys(options):
    for x0 in ([-1.2, 1.0, 0.5, 2.0, -0.3], [3, 3, 3], [0.0]):  # ints: cast as minimize does
        f1, ours = _counted(_rosenbrock)
        f2, theirs = _counted(_rosenbrock)
        x = lbfgsb.minimize_lbfgsb(f1, np.array(x0), (), **options)
        ref, _ = _scipy(f2, np.array(x0), (), **options)
        assert np.array_equal(x, ref)
        assert len(ours) == len(theirs)


def test_the_fallback_is_scipys_minimize(monkeypatch):
    z, y, w, l2 = _logistic_problem(9, 3000)
    args = (z, y, w, l2)
    fast = lbfgsb.minimize_lbfgsb(_logistic_loss_gradient, np.zeros(5), args, gtol=1e-4)
    monkeypatch.setattr(lbfgsb, "_setulb_cache", None)  # an unverified SciPy
    slow = lbfgsb.minimize_lbfgsb(_logistic_loss_gradient, np.zeros(5), args, gtol=1e-4)
    assert np.array_equal(fast, slow)


def test_the_driver_does_not_import_scipy_optimize():
    code = (
        "import sys, numpy as np\n"
        "from trimtab.risk.lbfgsb import minimize_lbfgsb, _setulb\n"
        "assert _setulb() is not None\n"
        "x = minimize_lbfgsb(lambda x: (float(x @ x), 2 * x), np.ones(3))\n"
        "assert np.allclose(x, 0)\n"
        "bad = [m for m in sys.modules if m.startswith(('scipy.optimize', 'scipy.special'))]\n"
        "assert bad == ['scipy.optimize._lbfgsb'] or not bad, bad\n"
        "assert 'scipy.optimize' not in sys.modules\n"
        "import scipy.optimize\n"  # the package still imports afterwards
        "assert scipy.optimize.minimize(lambda x: float(x @ x), np.ones(2)).success\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_buffers_reused_across_calls_give_the_same_values():
    z, y, w, l2 = _logistic_problem(3, 5000)
    work = _LossWork(len(y), y)
    for coef in (np.array([0.5, -1.0, 2.0, 0.1, -3.0]), np.zeros(5), np.full(5, 9.0)):
        f0, g0 = _logistic_loss_gradient(coef, z, y, w, l2)
        f1, g1 = _logistic_loss_gradient(coef, z, y, w, l2, work)
        assert f0 == f1
        assert np.array_equal(g0, g1)


def test_expit_is_scipys():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.normal(size=200_000) * s for s in (0.5, 5.0, 40.0, 300.0)
        ]  # both tails, beyond exp's overflow at -709
        + [np.array([0.0, -0.0, 1e-300, -745.2, 710.0, -710.0, np.inf, -np.inf, np.nan])]
    )
    if NUMPY_MATH_IS_LIBM:
        assert np.array_equal(expit(x), scipy_expit(x), equal_nan=True)
        assert expit(0.3) == scipy_expit(0.3)
    else:  # NumPy's AVX-512 exp: ulps here and there, the specials exact
        np.testing.assert_allclose(expit(x), scipy_expit(x), rtol=1e-15, atol=0.0)  # a few ulps
        specials = x[-9:]
        assert np.array_equal(expit(specials), scipy_expit(specials), equal_nan=True)


def test_a_float32_start_is_scipys_too():
    """SciPy evaluates a float32 start in float32: that case is handed to SciPy."""
    x0 = np.array([-1.2, 1.0, 0.5], dtype=np.float32)
    x = lbfgsb.minimize_lbfgsb(_rosenbrock, x0, (), maxiter=20)
    ref, _ = _scipy(_rosenbrock, x0, (), maxiter=20)
    assert np.array_equal(x, ref)
