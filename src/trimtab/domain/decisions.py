"""What flows between the pipeline's steps: observations, assessments, decisions.

observe -> ``Observation`` -> assess -> ``Assessment`` -> decide -> ``Decision`` ->
guard -> ``Decision`` (with ``guard`` actions) -> act -> orders -> record.

Arrays are (time x symbol) views that end at the decision bar: a step cannot index
past the present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import isfinite
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Reason:
    """One named reason for a decision, with the numbers behind it."""

    code: str
    message: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        values = self.values
        if values:
            # json_ready's dict case, called directly (a record has a few reasons a bar).
            out["values"] = _ready_dict(values) if type(values) is dict else json_ready(values)
        return out


# Types a record holds as they are (a Python float only when finite).
_PLAIN = frozenset((str, int, bool, type(None)))


def json_ready(value: Any) -> Any:
    """Plain JSON types: NumPy scalars unwrapped, NaN and infinities as None."""
    kind = type(value)
    if kind is float:
        return value if isfinite(value) else None
    if kind in _PLAIN:
        return value
    if kind is dict:
        return _ready_dict(value)
    if kind is list or kind is tuple:
        return _ready_list(value)
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not isfinite(value):
        return None
    return value


_FLOAT, _STR = {float}, {str}


def _ready_dict(value: dict) -> dict[str, Any]:
    # json_ready of each item, with the plain scalars inline (most of a record's values):
    # a detail dict of a thousand assets would otherwise cost a call per asset.
    if len(value) > 8 and set(map(type, value)) == _STR:
        # A per-asset detail (symbol -> float or str): checked and copied in C. A sum of
        # floats is finite only if every one is (an infinity or a NaN stays in the sum).
        kinds = set(map(type, value.values()))
        if kinds == _STR or (kinds == _FLOAT and isfinite(sum(value.values()))):
            return dict(value)
    out = {}
    plain = _PLAIN
    for k, v in value.items():
        if type(k) is not str:
            k = str(k)
        kind = type(v)
        if kind is float:
            out[k] = v if isfinite(v) else None
        elif kind in plain:
            out[k] = v
        else:
            out[k] = json_ready(v)
    return out


def _ready_list(value: list | tuple) -> list[Any]:
    if len(value) > 8:
        kinds = set(map(type, value))
        if kinds == _STR or (kinds == _FLOAT and isfinite(sum(value))):
            return list(value)
    out = []
    plain = _PLAIN
    for v in value:
        kind = type(v)
        if kind is float:
            out.append(v if isfinite(v) else None)
        elif kind in plain:
            out.append(v)
        else:
            out.append(json_ready(v))
    return out


@dataclass(frozen=True)
class PortfolioState:
    """The account as the decision sees it, at the decision bar's close.

    ``marks`` are the prices positions are valued at (0 where an asset is not listed).
    ``flow`` is the capital moved in (> 0) or out (< 0) at this close by transfers (quote):
    a change of equity that is neither a gain nor a loss.
    """

    equity: float
    cash: float
    quantities: np.ndarray
    marks: np.ndarray
    peak_equity: float
    flow: float = 0.0

    @property
    def values(self) -> np.ndarray:
        """Signed position notionals at the marks (quote currency)."""
        return self.quantities * self.marks

    @property
    def weights(self) -> np.ndarray:
        """Position notionals as fractions of equity."""
        return self.values / self.equity if self.equity > 0 else np.zeros_like(self.marks)


class Observation:
    """Everything known at the close of bar ``i`` and nothing after it.

    ``history(field)`` and ``feature_history(name)`` return rows ``0..i`` of a
    (time x symbol) array, the last row being the present; slices are taken on demand,
    so building an observation at every bar costs almost nothing.
    """

    __slots__ = (
        "_features",
        "_fields",
        "i",
        "portfolio",
        "previous_timestamp",
        "step",
        "symbols",
        "timestamp",
        "tradable",
        "universe",
    )

    def __init__(
        self,
        i: int,
        timestamp: pd.Timestamp,
        symbols: tuple[str, ...],
        fields: dict[str, np.ndarray],
        features: dict[str, np.ndarray],
        tradable: np.ndarray,
        universe: np.ndarray,
        portfolio: PortfolioState,
        step: int,
        previous_timestamp: pd.Timestamp | None = None,
    ) -> None:
        self.i = i
        self.timestamp = timestamp
        self.symbols = symbols
        self._fields = fields
        self._features = features
        self.tradable = tradable
        self.universe = universe
        self.portfolio = portfolio
        self.step = step
        # The bar before this one (None for the first bar ever seen): calendars compare
        # against it, so scheduling needs nothing after the present.
        self.previous_timestamp = previous_timestamp

    @property
    def close(self) -> np.ndarray:
        """Closes at the decision bar (NaN where not listed)."""
        return self._fields["close"][self.i]

    def history(self, field: str) -> np.ndarray:
        """Rows 0..i of a market field (``open``, ``high``, ``low``, ``close``, ``quote_volume``)."""
        return self._fields[field][: self.i + 1]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self._features)

    def feature(self, name: str) -> np.ndarray:
        """A feature's values at the decision bar."""
        return self._features[name][self.i]

    def features_at(self) -> dict[str, np.ndarray]:
        """Every feature's values at the decision bar, by name (``feature`` of each)."""
        i = self.i
        return {name: values[i] for name, values in self._features.items()}

    def feature_history(self, name: str) -> np.ndarray:
        """Rows 0..i of a feature."""
        return self._features[name][: self.i + 1]

    def earlier(
        self,
        i: int,
        timestamp: pd.Timestamp,
        portfolio: PortfolioState,
        tradable: np.ndarray,
        universe: np.ndarray,
        previous_timestamp: pd.Timestamp | None = None,
    ) -> Observation:
        """The observation of an earlier bar ``i`` (at most this one's), with the given
        portfolio: what a walk-forward replays to score parameters on the past only."""
        if not 0 <= i <= self.i:
            raise ValueError(f"bar {i} is not at or before the observed bar {self.i}")
        return Observation(
            i,
            timestamp,
            self.symbols,
            self._fields,
            self._features,
            tradable,
            universe,
            portfolio,
            self.step - (self.i - i),
            previous_timestamp,
        )


@dataclass(frozen=True)
class Assessment:
    """Risk and signal readings at the decision bar; later issues add scores."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    reasons: tuple[Reason, ...] = ()


@dataclass(frozen=True)
class GuardAction:
    """A change the guard made to a decision, and why."""

    rule: str
    message: str
    symbols: tuple[str, ...] = ()
    before: float | None = None
    after: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "message": self.message}
        if self.symbols:
            out["symbols"] = list(self.symbols)
        if self.before is not None:
            out["before"] = self.before
        if self.after is not None:
            out["after"] = self.after
        return out


@dataclass(frozen=True)
class Decision:
    """Target weights (fractions of equity, one per symbol) or None to hold as is."""

    targets: np.ndarray | None
    reasons: tuple[Reason, ...]
    action: str = "hold"
    guard: tuple[GuardAction, ...] = ()

    @classmethod
    def hold(cls, *reasons: Reason) -> Decision:
        return cls(None, tuple(reasons), "hold")

    @classmethod
    def rebalance(
        cls, targets: np.ndarray, *reasons: Reason, action: str = "rebalance"
    ) -> Decision:
        return cls(np.asarray(targets, dtype=float), tuple(reasons), action)
