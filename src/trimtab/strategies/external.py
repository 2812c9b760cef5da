"""A strategy run elsewhere, imported as its equity or its returns (``strategy: returns``).

The file is a CSV with a ``timestamp`` column (UTC; a time without a zone is read as
UTC) and either ``equity`` (its value in any unit: only ratios are used) or ``return``
(simple return, a fraction, over the period that ends at the row's time). A row's time
is when its value was known: the portfolio applies it to the first bar closing at or
after it, never earlier. A returns file's first period starts one median spacing
before its first row.

In a portfolio file::

    external:
      strategy: returns
      capital: 10000
      params:
        file: my_strategy_equity.csv   # relative to the portfolio file's folder
        capacity: 250000               # USDT it can use (default: unbounded)
        regimes: [trending]            # the regimes it suits (default: none declared)

Simulated at a capital, its equity is the file's path scaled to start at that capital;
it has no fills of its own to show (they happened elsewhere).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trimtab.strategies.base import REGIMES
from trimtab.strategies.sleeve import SleeveRun

#: The keys ``params:`` of a ``returns`` subaccount takes.
RETURNS_PARAMS = ("file", "capacity", "regimes")


def check_returns_params(params: Mapping[str, Any] | None) -> None:
    """The keys and types of a returns sleeve's ``params`` (the file is read later):
    ``ValueError`` naming the key."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(RETURNS_PARAMS))
    if unknown:
        raise ValueError(
            f"params.{unknown[0]}: not a parameter of strategy returns; it takes "
            f"{', '.join(RETURNS_PARAMS)}"
        )
    file = params.get("file")
    if not isinstance(file, str) or not file.strip():
        raise ValueError(
            "params.file: required, the CSV of the strategy's equity or returns "
            "(timestamp, equity | return), relative to the portfolio file"
        )
    capacity = params.get("capacity")
    if capacity is not None and not (
        isinstance(capacity, int | float)
        and not isinstance(capacity, bool)
        and math.isfinite(capacity)
        and capacity > 0
    ):
        raise ValueError(f"params.capacity: USDT, a number > 0 (got {capacity!r})")
    regimes = params.get("regimes", ())
    if not isinstance(regimes, list | tuple) or any(r not in REGIMES for r in regimes):
        raise ValueError(f"params.regimes: a list of {', '.join(REGIMES)} (got {regimes!r})")


class ExternalReturns:
    """A ``SimulatedStrategy`` from an equity path (``equity``: a UTC-indexed Series of
    values > 0, in time order); ``source`` names it in reasons."""

    kind = "returns"
    #: What its data is, in a reason ("no equity data for this bar").
    data_name = "equity data"

    def __init__(
        self,
        equity: pd.Series,
        *,
        source: str = "returns",
        capacity: float = float("inf"),
        regimes: tuple[str, ...] = (),
    ) -> None:
        if equity.empty:
            raise ValueError(f"{source}: no rows")
        self.path = equity.astype(float)
        self.source = source
        self.capacity = float(capacity)
        self.regimes = tuple(regimes)

    def coverage(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        return self.path.index[0], self.path.index[-1]

    def simulate(self, capital: float) -> SleeveRun:
        equity = self.path * (capital / float(self.path.iloc[0]))
        total = float(equity.iloc[-1] / equity.iloc[0] - 1.0)
        return SleeveRun(
            equity.rename("equity"),
            records=[
                {
                    "ts": equity.index[0],
                    "kind": "start",
                    "reason": f"imported from {self.source}: {len(equity)} points, "
                    f"{equity.index[0]:%Y-%m-%d %H:%M} to {equity.index[-1]:%Y-%m-%d %H:%M} UTC",
                }
            ],
            capacity=self.capacity,
            regimes=self.regimes,
            summary={"points": float(len(equity)), "total_return": total},
        )


def read_returns_file(path: Path) -> pd.Series:
    """The equity path of an equity or returns CSV (module docstring), starting at 1.0
    for a returns file. ``ValueError`` names the file, the row (1 = the header) and the
    column of a bad value."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{path}: cannot read it as CSV: {exc}") from None
    columns = {c.strip().lower(): c for c in frame.columns}
    if "timestamp" not in columns:
        raise ValueError(f"{path}: needs a timestamp column (has {', '.join(frame.columns)})")
    kinds = [k for k in ("equity", "return") if k in columns]
    if len(kinds) != 1:
        raise ValueError(
            f"{path}: needs exactly one of the columns equity or return (has "
            f"{', '.join(frame.columns)})"
        )
    kind = kinds[0]
    if frame.empty:
        raise ValueError(f"{path}: no rows")
    stamps = pd.to_datetime(frame[columns["timestamp"]].str.strip(), errors="coerce", utc=True)
    bad = stamps.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path}: row {row + 2}, timestamp: not a time "
            f"({frame[columns['timestamp']].iloc[row]!r})"
        )
    values = pd.to_numeric(frame[columns[kind]].str.strip(), errors="coerce").to_numpy(float)
    ok = np.isfinite(values) & ((values > 0) if kind == "equity" else (values > -1))
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        need = "a number > 0" if kind == "equity" else "a fraction > -1"
        raise ValueError(
            f"{path}: row {row + 2}, {kind}: must be {need} (got {frame[columns[kind]].iloc[row]!r})"
        )
    index = pd.DatetimeIndex(stamps)
    steps = np.diff(index.asi8)
    if (steps <= 0).any():
        row = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise ValueError(
            f"{path}: row {row + 2}, timestamp: {index[row]} is not after the row before "
            "(rows must be in time order, one per time)"
        )
    if kind == "equity":
        return pd.Series(values, index=index, name="equity")
    if len(index) < 2:
        raise ValueError(f"{path}: a returns file needs at least two rows (to know its spacing)")
    spacing = pd.Series(index).diff().median()
    start = index[0] - spacing
    path_values = np.concatenate([[1.0], np.cumprod(1.0 + values)])
    return pd.Series(path_values, index=index.insert(0, start), name="equity")


def returns_from_settings(params: Mapping[str, Any], folder: Path) -> ExternalReturns:
    """The ``returns`` sleeve of a subaccount's ``params`` (``file`` relative to
    ``folder``, the portfolio file's). ``ValueError`` (a bad value) and
    ``FileNotFoundError`` name ``params.file``."""
    check_returns_params(params)
    file = Path(str(params["file"])).expanduser()
    path = file if file.is_absolute() else folder / file
    try:
        equity = read_returns_file(path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"params.file: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"params.file: {exc}") from None
    capacity = params.get("capacity")
    return ExternalReturns(
        equity,
        source=str(params["file"]),
        capacity=float(capacity) if capacity is not None else float("inf"),
        regimes=tuple(params.get("regimes", ())),
    )
