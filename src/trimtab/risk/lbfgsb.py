"""SciPy's L-BFGS-B without importing ``scipy.optimize`` (a third to half a second of a
first review's start-up).

``minimize_lbfgsb(fun, x0, ...)`` is ``scipy.optimize.minimize(fun, x0, jac=True,
method="L-BFGS-B", options=...)`` with no bounds and no callback: the same compiled
routine (``scipy.optimize._lbfgsb.setulb``, loaded from SciPy's own file without running
the ``scipy.optimize`` package's ``__init__``, which imports scipy.linalg, scipy.sparse,
scipy.special and SciPy's array-API layer) driven by the loop of SciPy's
``_minimize_lbfgsb``, written out: the same work arrays, the same memoised evaluations
(one call of ``fun`` per new point, the first at ``x0``), the same stopping rules
(``maxiter`` iterations, ``maxfun`` evaluations). The result is the same floats as
SciPy's, tested against it (``tests/risk/test_lbfgsb.py``).

The loop is the one of the SciPy releases listed in ``VERIFIED_SCIPY``; with any other
SciPy, or when the compiled routine cannot be loaded, ``scipy.optimize.minimize`` itself
runs (slower to import, same answer).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["VERIFIED_SCIPY", "minimize_lbfgsb", "preload"]

#: SciPy releases (major.minor) whose ``_minimize_lbfgsb`` loop is the one written out
#: here (the C translation of L-BFGS-B with ``ln_task``, SciPy 1.15 on; checked line by
#: line against 1.17 and tested bit for bit there).
VERIFIED_SCIPY = ("1.17",)

_NOT_LOADED: Any = object()
_setulb_cache: Any = _NOT_LOADED


def _setulb() -> Callable[..., None] | None:
    """SciPy's compiled ``setulb`` for a verified SciPy, else None (cached per process)."""
    global _setulb_cache
    if _setulb_cache is not _NOT_LOADED:
        return _setulb_cache
    _setulb_cache = None
    try:
        import scipy  # its __init__ is light (its subpackages load on demand)

        if ".".join(scipy.__version__.split(".")[:2]) not in VERIFIED_SCIPY:
            return None
        module = sys.modules.get("scipy.optimize._lbfgsb")
        if module is None:
            module = _load_extension(scipy.__path__[0])
        _setulb_cache = module.setulb
    except Exception:  # any failure to load it: SciPy's own minimize runs instead
        _setulb_cache = None
    return _setulb_cache


def preload() -> None:
    """Load the compiled routine now. It links SciPy's own OpenBLAS: a thread limit
    (``threadpoolctl``) reaches only the BLAS libraries loaded when it is set, so a caller
    that limits BLAS loads this first."""
    if _setulb() is None:
        import scipy.optimize  # noqa: F401  (the fallback's BLAS, for the same reason)


def _load_extension(scipy_dir: str) -> Any:
    """``scipy/optimize/_lbfgsb`` (a compiled module needing only NumPy) loaded from its
    file, without the ``scipy.optimize`` package's ``__init__``. Not put in
    ``sys.modules``: a later ``import scipy.optimize`` loads its own copy as usual."""
    from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader
    from importlib.util import module_from_spec, spec_from_file_location
    from pathlib import Path

    name = "scipy.optimize._lbfgsb"
    for suffix in EXTENSION_SUFFIXES:
        path = Path(scipy_dir) / "optimize" / f"_lbfgsb{suffix}"
        if path.is_file():
            loader = ExtensionFileLoader(name, str(path))
            spec = spec_from_file_location(name, path, loader=loader)
            if spec is None:
                break
            module = module_from_spec(spec)
            loader.exec_module(module)
            return module
    raise ImportError("scipy.optimize._lbfgsb not found")


def minimize_lbfgsb(
    fun: Callable[..., tuple[float, np.ndarray]],
    x0: np.ndarray,
    args: tuple[Any, ...] = (),
    *,
    maxiter: int = 15000,
    maxls: int = 20,
    gtol: float = 1e-5,
    ftol: float = 2.2204460492503131e-09,
    maxcor: int = 10,
    maxfun: int = 15000,
) -> np.ndarray:
    """The minimiser ``x`` of ``fun(x, *args) -> (value, gradient)`` found by L-BFGS-B
    from ``x0`` (unbounded), as ``scipy.optimize.minimize(fun, x0, args, jac=True,
    method="L-BFGS-B", options={maxiter, maxls, gtol, ftol, maxcor, maxfun})`` returns
    it in ``res.x``. ``fun`` must return a Python float and a float64 array. An ``x0``
    of another float type (SciPy then evaluates ``fun`` in that type) goes to SciPy."""
    setulb = _setulb()
    kind = np.asarray(x0).dtype
    if setulb is None or (kind.kind == "f" and kind != np.float64):
        from scipy.optimize import minimize

        options = {
            "maxiter": maxiter,
            "maxls": maxls,
            "gtol": gtol,
            "ftol": ftol,
            "maxcor": maxcor,
            "maxfun": maxfun,
        }
        res = minimize(fun, x0, args=args, method="L-BFGS-B", jac=True, options=options)
        return res.x
    if not maxls > 0:
        raise ValueError("maxls must be positive.")
    # minimize: a 1-d float array; _minimize_lbfgsb's own copies of it.
    x0 = np.atleast_1d(np.asarray(x0))
    if x0.ndim != 1:
        raise ValueError("'x0' must only have one dimension.")
    if x0.dtype.kind in np.typecodes["AllInteger"]:
        x0 = np.asarray(x0, dtype=float)
    n = x0.shape[0]
    m = maxcor
    factr = ftol / np.finfo(float).eps
    # ScalarFunction evaluates at x0 when it is built (a copy of x0 goes to fun) and
    # afterwards only at a point that differs from the last one evaluated.
    last_x = x0.astype(np.float64)
    last_f, last_g = fun(np.copy(last_x), *args)
    last_g = np.atleast_1d(last_g)
    nfev = 1

    nbd = np.zeros(n, np.int32)
    low_bnd = np.zeros(n, np.float64)
    upper_bnd = np.zeros(n, np.float64)
    x = np.array(x0, dtype=np.float64)
    f: Any = np.array(0.0, dtype=np.float64)
    g = np.zeros((n,), dtype=np.float64)
    wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m, np.float64)
    iwa = np.zeros(3 * n, dtype=np.int32)
    task = np.zeros(2, dtype=np.int32)
    ln_task = np.zeros(2, dtype=np.int32)
    lsave = np.zeros(4, dtype=np.int32)
    isave = np.zeros(44, dtype=np.int32)
    dsave = np.zeros(29, dtype=np.float64)
    n_iterations = 0
    while True:
        g = g.astype(np.float64)
        setulb(
            m, x, low_bnd, upper_bnd, nbd, f, g, factr, gtol, wa, iwa, task, lsave, isave,
            dsave, maxls, ln_task,
        )  # fmt: skip
        if task[0] == 3:  # f and g wanted at x
            if not np.array_equal(x, last_x):
                last_x = x.astype(np.float64)  # a copy, as ScalarFunction keeps
                last_f, last_g = fun(np.copy(last_x), *args)
                last_g = np.atleast_1d(last_g)
                nfev += 1
            f, g = last_f, last_g
        elif task[0] == 1:  # a new iteration
            n_iterations += 1
            if n_iterations >= maxiter:
                task[0] = 5
                task[1] = 504
            elif nfev > maxfun:
                task[0] = 5
                task[1] = 502
        else:
            break
    return x
