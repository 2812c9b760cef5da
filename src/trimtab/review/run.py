"""``run_review``: what ``trimtab review`` calls. Find data, load it, review, render, write.

Importing this module is light (no pandas): a review whose report is in the report cache
(``trimtab.review.report_cache``) is answered without loading the review's modules.
"""

from __future__ import annotations

import hashlib
import json
from functools import partial
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trimtab import __version__
from trimtab.data.discovery import cache_dir, find_data_dir
from trimtab.data.errors import DataError
from trimtab.review.render import FORMATS, render
from trimtab.review.report_cache import code_digests, read_report, report_key, write_report

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from trimtab.data import Panel
    from trimtab.review.review import DrawdownInput

__all__ = ["cached_regime_fit", "find_funding_file", "model_probability", "run_review"]

#: Bump when the drawdown model's output for the same inputs changes.
MODEL_CACHE_VERSION = 1
#: Bump when the regime fit's output for the same inputs changes.
REGIME_CACHE_VERSION = 1


def find_funding_file(data: Path) -> Path | None:
    """The first ``funding_*.csv*`` file in a data folder (None for a file or none found)."""
    if not data.is_dir():
        return None
    files = sorted(p for p in data.glob("funding_*.csv*") if p.is_file())
    return files[0] if files else None


def model_probability(
    weights: pd.Series,
    panel: Panel,
    bar: pd.Timestamp,
    *,
    threshold: float,
    horizon_days: float,
    cache: Path | None = None,
) -> float | None:
    """The drawdown model's probability at ``bar`` for the holdings as they are now.

    The current weights (net exposure / equity) are applied to the past, where each asset
    was listed, and the walk-forward model (``trimtab.risk.drawdown_model``) is fitted on
    data up to ``bar`` only. None when there is too little history to fit it.

    The walk-forward fit (about a hundred refits) is the slowest part of a review, and
    its answer depends only on its inputs: it is kept on disk under ``cache`` (default
    ``<download cache>/drawdown``), keyed by a digest of every bar it reads, the
    weights, the event and the model's settings, so a review of the same holdings on
    the same data reads it back instead of refitting. Any change of data, weights or
    settings is a new key; a cache that cannot be read or written is skipped.
    """
    import numpy as np
    import pandas as pd

    from trimtab.journal.files import write_text_atomic

    history = panel.slice(end=bar)
    row = weights.reindex(history.symbols).fillna(0.0).to_numpy(float)
    w = pd.DataFrame(
        np.tile(row, (len(history.index), 1)), index=history.index, columns=history.symbols
    )
    w = w.where(history.live, 0.0)
    settings = f"threshold={float(threshold)!r} horizon={float(horizon_days)!r}"
    path = (cache or cache_dir() / "drawdown") / f"{_model_digest(history, row, settings)}.json"
    try:
        return json.loads(path.read_text())["probability"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    # Imported here: the model pulls in SciPy's optimiser, which a cache hit does not need.
    from trimtab.risk.drawdown_model import DrawdownModel

    model = DrawdownModel(threshold=threshold, horizon=horizon_days)
    # SciPy's optimiser loads its own BLAS: loaded before BLAS is limited to one thread
    # here (again), so that the limit reaches it too. Its products are tiny: threads only
    # spin, seconds of a review on a busy machine.
    from trimtab.risk.lbfgsb import preload

    preload()
    from trimtab.signals.volatility import single_threaded_blas

    with single_threaded_blas():
        # Only the model's own probability is read: its baseline's fits are skipped.
        forecast = model.fit_predict(history, weights=w, baseline=False)
    p = forecast.probabilities.iloc[-1] if len(forecast.probabilities) else float("nan")
    probability = float(p) if np.isfinite(p) else None
    try:
        write_text_atomic(path, json.dumps({"probability": probability, "bar": str(bar)}))
    except (OSError, ValueError):  # OutputError is a ValueError
        pass  # a read-only cache costs the speed, not the review
    return probability


#: The code the model's answer comes from (relative to the package): its source is part
#: of the key, so editing the model never reads back an answer of the old code.
_MODEL_SOURCES = (
    "risk/drawdown_model.py",
    "risk/lbfgsb.py",
    "risk/var.py",
    "signals/correlation.py",
    "signals/liquidity.py",
    "data/calendar.py",
    "data/panel.py",
)


def _model_digest(history: Panel, weights: np.ndarray, settings: str) -> str:
    """A digest of everything the drawdown model reads: every frame of ``history`` (values
    and timestamps), the weights row, the event's settings, trimtab's version and the
    source of the model's modules."""
    import numpy as np

    h = hashlib.blake2b(digest_size=20)
    h.update(f"{MODEL_CACHE_VERSION}|{__version__}|{settings}|{history.timeframe}".encode())
    _hash_sources(h, _MODEL_SOURCES)
    h.update("|".join(history.symbols).encode())
    h.update(history.index.asi8.tobytes())
    for name, frame in sorted(history.frames().items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(frame.to_numpy(dtype=float)).tobytes())
    h.update(np.ascontiguousarray(weights, dtype=float).tobytes())
    return h.hexdigest()


#: The code the regime fit's answer comes from (relative to the package).
_REGIME_SOURCES = ("review/review.py", "signals/regime.py", "signals/volatility.py")


def cached_regime_fit(
    level: pd.Series, *, cache: Path | None = None
) -> tuple[list[float], list[float] | None]:
    """``fit_holdings_regime(level)``, kept on disk under ``cache`` (default
    ``<download cache>/regime``).

    The fit (EM of a 3-state HMM, 0.1-0.2 s) is part of a first review's time, and its
    answer depends on the holdings' daily index alone: the key is a digest of its values
    and dates, the fit's code and the versions of trimtab and hmmlearn (whose compiled
    passes it uses). A cache that cannot be read or written is skipped.
    """
    import numpy as np
    import pandas as pd

    from trimtab.journal.files import write_text_atomic
    from trimtab.review.review import fit_holdings_regime

    h = hashlib.blake2b(digest_size=20)
    h.update(f"{REGIME_CACHE_VERSION}|{__version__}|{_dist_version('hmmlearn')}".encode())
    _hash_sources(h, _REGIME_SOURCES)
    h.update(pd.DatetimeIndex(level.index).asi8.tobytes())
    h.update(np.ascontiguousarray(level.to_numpy(dtype=float)).tobytes())
    path = (cache or cache_dir() / "regime") / f"{h.hexdigest()}.json"
    try:
        got = json.loads(path.read_text())
        probs, vols = got["probabilities"], got["state_volatility"]
        if isinstance(probs, list) and (vols is None or isinstance(vols, list)):
            return [float(p) for p in probs], None if vols is None else [float(v) for v in vols]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    probs, vols = fit_holdings_regime(level)
    try:
        write_text_atomic(path, json.dumps({"probabilities": probs, "state_volatility": vols}))
    except (OSError, ValueError):  # OutputError is a ValueError
        pass  # a read-only cache costs the speed, not the review
    return probs, vols


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:  # pragma: no cover - hmmlearn is a dependency
        return "none"


def _hash_sources(h: Any, sources: tuple[str, ...]) -> None:
    package = Path(__file__).resolve().parents[1]
    for source in sources:
        try:
            h.update((package / source).read_bytes())
        except OSError:  # an installed copy without sources: the version stands for them
            h.update(source.encode())


def run_review(
    portfolio: str | Path,
    data: str | None = None,
    fmt: str = "text",
    out: str | Path | None = None,
    timeframe: str | None = None,
    *,
    as_of: Any = None,
    drawdown_probability: DrawdownInput = None,
    threshold: float = 0.10,
    horizon_days: int = 7,
    report_cache: Path | bool = True,
) -> str:
    """Review the holdings file ``portfolio`` and return the rendered report.

    ``data`` is a folder or file (default: ``find_data_dir``'s order: ``TRIMTAB_DATA``,
    ``../shared/data``, the ccxt cache); ``timeframe`` the bars to load (default ``1d``
    when present). A ``funding_*.csv*`` file in the data folder, if any, feeds the
    funding factor. ``fmt`` is ``text``, ``markdown`` or ``json``; ``out`` a file to
    write it to (folders are created). ``as_of`` overrides the holdings' date. Raises
    ``HoldingsError`` (a ValueError) or ``DataError`` with a readable message.

    The report is kept in a report cache (``trimtab.review.report_cache``; default
    folder ``<download cache>/review``, or the folder ``report_cache`` names; False: not
    used) keyed by the holdings file, the data files, the code and the options, and read
    back by the next review of the same inputs. A ``drawdown_probability`` function of
    the caller's own is never cached.
    """
    if fmt.lower() not in (*FORMATS, "md"):
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    try:
        location = find_data_dir(data)
    except DataError:  # a mistake in the holdings file is reported first
        from trimtab.review.holdings import load_holdings

        load_holdings(portfolio)
        raise
    key = folder = None
    if report_cache is not False and (
        drawdown_probability is None or isinstance(drawdown_probability, Real)
    ):
        folder = cache_dir() / "review" if report_cache is True else Path(report_cache)
        settings = (
            f"fmt={fmt.lower()!r} timeframe={timeframe!r} as_of={as_of!r} "
            f"threshold={threshold!r} horizon={horizon_days!r} p={drawdown_probability!r}"
        )
        key = report_key(portfolio, str(location), location.path, settings)
    text = read_report(folder, key) if folder is not None and key is not None else None
    if text is None:
        text = _review_text(
            portfolio,
            location,
            fmt,
            timeframe,
            as_of=as_of,
            drawdown_probability=drawdown_probability,
            threshold=threshold,
            horizon_days=horizon_days,
        )
        if folder is not None and key is not None:
            write_report(folder, key, text, code_digests())
    if out is not None:
        from trimtab.journal.files import write_text_atomic

        write_text_atomic(out, text)
    return text


def _review_text(
    portfolio: str | Path,
    location: Any,
    fmt: str,
    timeframe: str | None,
    *,
    as_of: Any,
    drawdown_probability: DrawdownInput,
    threshold: float,
    horizon_days: int,
) -> str:
    """The review of ``run_review``, computed: load holdings, data and funding, review,
    render."""
    # The review's modules (pandas, the models) are imported here, after the report
    # cache has been asked.
    from trimtab.data import load_panel, read_funding
    from trimtab.review.holdings import load_holdings
    from trimtab.review.review import review_portfolio

    holdings = load_holdings(portfolio)
    # Parsed once per change of the files (``<download cache>/parsed``), not every review.
    panel = load_panel(location.path, timeframe=timeframe, cache=True)
    funding: pd.DataFrame | None = None
    notes: list[str] = []
    funding_file = find_funding_file(location.path)
    if funding_file is not None:
        try:
            funding = read_funding(funding_file, cache=True)
        except DataError as exc:
            # Funding is optional context: a bad file costs the factor, not the review.
            notes.append(f"funding file not used: {str(exc).splitlines()[0]}")
    if drawdown_probability is None:
        drawdown_probability = partial(
            model_probability, threshold=threshold, horizon_days=horizon_days
        )
    review = review_portfolio(
        holdings,
        panel,
        funding=funding,
        as_of=as_of,
        threshold=threshold,
        horizon_days=horizon_days,
        drawdown_probability=drawdown_probability,
        regime_fit=cached_regime_fit,
    )
    review["data"]["source"] = str(location)
    if location.synthetic:
        review["data"]["synthetic"] = True
        notes.append(
            "the data is a SYNTHETIC sample market generated by trimtab (not real prices); "
            "for real data run `trimtab data download` or pass --data DIR"
        )
    review["data"]["funding_file"] = (
        str(funding_file) if funding_file and funding is not None else None
    )
    review["notes"].extend(notes)
    return render(review, fmt)
