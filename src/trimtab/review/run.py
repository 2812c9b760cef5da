"""``run_review``: what ``trimtab review`` calls. Find data, load it, review, render, write."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trimtab.data import DataError, Panel, find_data_dir, load_panel, read_funding
from trimtab.review.holdings import load_holdings
from trimtab.review.render import FORMATS, render
from trimtab.review.review import DrawdownInput, review_portfolio
from trimtab.risk.drawdown_model import DrawdownModel

__all__ = ["find_funding_file", "run_review"]


def find_funding_file(data: Path) -> Path | None:
    """The first ``funding_*.csv*`` file in a data folder (None for a file or none found)."""
    if not data.is_dir():
        return None
    files = sorted(p for p in data.glob("funding_*.csv*") if p.is_file())
    return files[0] if files else None


def model_probability(
    weights: pd.Series, panel: Panel, bar: pd.Timestamp, *, threshold: float, horizon_days: float
) -> float | None:
    """The drawdown model's probability at ``bar`` for the holdings as they are now.

    The current weights (net exposure / equity) are applied to the past, where each asset
    was listed, and the walk-forward model (``trimtab.risk.drawdown_model``) is fitted on
    data up to ``bar`` only. None when there is too little history to fit it.
    """
    history = panel.slice(end=bar)
    row = weights.reindex(history.symbols).fillna(0.0).to_numpy(float)
    w = pd.DataFrame(
        np.tile(row, (len(history.index), 1)), index=history.index, columns=history.symbols
    )
    w = w.where(history.live, 0.0)
    forecast = DrawdownModel(threshold=threshold, horizon=horizon_days).fit_predict(
        history, weights=w
    )
    p = forecast.probabilities.iloc[-1] if len(forecast.probabilities) else float("nan")
    return float(p) if np.isfinite(p) else None


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
) -> str:
    """Review the holdings file ``portfolio`` and return the rendered report.

    ``data`` is a folder or file (default: ``find_data_dir``'s order: ``TRIMTAB_DATA``,
    ``../shared/data``, the ccxt cache); ``timeframe`` the bars to load (default ``1d``
    when present). A ``funding_*.csv*`` file in the data folder, if any, feeds the
    funding factor. ``fmt`` is ``text``, ``markdown`` or ``json``; ``out`` a file to
    write it to (folders are created). ``as_of`` overrides the holdings' date. Raises
    ``HoldingsError`` (a ValueError) or ``DataError`` with a readable message.
    """
    if fmt.lower() not in (*FORMATS, "md"):
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    holdings = load_holdings(portfolio)
    location = find_data_dir(data)
    panel = load_panel(location.path, timeframe=timeframe)
    funding: pd.DataFrame | None = None
    notes: list[str] = []
    funding_file = find_funding_file(location.path)
    if funding_file is not None:
        try:
            funding = read_funding(funding_file)
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
    )
    review["data"]["source"] = str(location)
    review["data"]["funding_file"] = (
        str(funding_file) if funding_file and funding is not None else None
    )
    review["notes"].extend(notes)
    text = render(review, fmt)
    if out is not None:
        path = Path(out).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return text
