"""The named strategies, built from parts with validated parameters.

A portfolio file names a strategy per subaccount (``strategy: trend``) and may set its
parameters (``params: {target_vol: 0.3}``); ``build_strategy`` validates them (unknown
keys and bad values are errors naming the key) and composes the parts:

* ``core``: a large-cap index, risk managed: the ``top`` members by volume, inverse-
  volatility weights, cut by the risk engine's score, scaled to a volatility target,
  traded by a drift band; suits calm markets;
* ``trend``: time-series momentum over several lookbacks, long only, inverse-volatility
  weights scaled to a volatility target; suits trending markets;
* ``mean-reversion``: short-horizon reversal, bought only in range-bound markets (the
  efficiency ratio of its members' index low), held by a band; suits ranging markets.

``carry`` (long spot, short perpetual when funding pays) lives in
``trimtab.strategies.carry``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trimtab.policy.governor import GovernorSettings
from trimtab.strategies.base import Capacity, Strategy, StrategySpec
from trimtab.strategies.parts import (
    DriftBand,
    InverseVolatility,
    Membership,
    RiskCut,
    ShortTermReversal,
    TimeSeriesMomentum,
    VolatilityTarget,
    WeightCap,
)

Calendar = Literal["daily", "weekly", "monthly", "quarterly"]


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    band: float = Field(0.10, ge=0, le=2)
    trade_to: float = Field(1.0, gt=0, le=1)
    calendar: Calendar | None = None
    capacity_share: float | None = Field(0.01, gt=0, le=1)


class CoreParams(_Params):
    """``core``: ``top`` members by volume, inverse volatility over ``vol_window`` bars,
    risk cuts between ``no_cut`` and ``full_cut``, scaled to ``target_vol`` under
    ``max_gross``; ``max_weight`` per asset."""

    top: int | None = Field(10, ge=1)
    vol_window: int = Field(60, ge=5)
    no_cut: float = Field(15.0, ge=0, lt=100)
    full_cut: float = Field(50.0, gt=0, le=100)
    target_vol: float = Field(0.45, gt=0, le=5)
    max_gross: float = Field(1.0, gt=0, le=1)
    max_weight: float = Field(0.4, gt=0, le=1)
    band: float = Field(0.15, ge=0, le=2)
    calendar: Calendar | None = "monthly"

    @model_validator(mode="after")
    def _cuts(self) -> CoreParams:
        if self.no_cut >= self.full_cut:
            raise ValueError(f"no_cut ({self.no_cut:g}) must be below full_cut ({self.full_cut:g})")
        return self


class TrendParams(_Params):
    """``trend``: momentum over ``lookbacks`` (bars), inverse volatility over
    ``vol_window`` bars, scaled to ``target_vol`` under ``max_gross``."""

    lookbacks: tuple[int, ...] = (20, 60, 120, 250)
    vol_window: int = Field(60, ge=5)
    target_vol: float = Field(0.40, gt=0, le=5)
    max_gross: float = Field(1.0, gt=0, le=1)
    max_weight: float = Field(0.6, gt=0, le=1)
    band: float = Field(0.15, ge=0, le=2)

    @model_validator(mode="after")
    def _lookbacks(self) -> TrendParams:
        if not self.lookbacks or min(self.lookbacks) < 1:
            raise ValueError("lookbacks: give positive bar counts, e.g. [20, 60, 120, 250]")
        return self


class ReversionParams(_Params):
    """``mean-reversion``: the ``top`` largest losers over ``horizon`` bars while the
    members' efficiency ratio over ``regime_window`` bars is at most
    ``max_efficiency``, inverse-volatility weighted up to ``gross``."""

    horizon: int = Field(5, ge=1)
    top: int = Field(3, ge=1)
    regime_window: int = Field(30, ge=5)
    max_efficiency: float = Field(0.25, gt=0, le=1)
    uptrend: int | None = Field(None, ge=2)
    vol_window: int = Field(30, ge=5)
    gross: float = Field(0.5, gt=0, le=1)
    band: float = Field(0.10, ge=0, le=2)


PARAMS: dict[str, type[_Params]] = {
    "core": CoreParams,
    "trend": TrendParams,
    "mean-reversion": ReversionParams,
}


def strategy_params(kind: str, params: dict[str, Any] | None) -> _Params:
    """The validated parameters of strategy ``kind`` (``ValueError`` naming the key)."""
    try:
        model = PARAMS[kind]
    except KeyError:
        raise ValueError(f"unknown strategy {kind!r}; choose one of {', '.join(PARAMS)}") from None
    try:
        return model(**(params or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "params"
        raise ValueError(f"params.{where}: {first['msg']}") from None


#: Each strategy's own walk-forward grid (param -> candidate values): what
#: ``--walk-forward`` chooses among when the file gives no ``walk_forward.grid``.
DEFAULT_GRIDS: dict[str, dict[str, tuple[Any, ...]]] = {
    "core": {"target_vol": (0.3, 0.45), "band": (0.1, 0.25), "trade_to": (0.5, 1.0)},
    "trend": {"target_vol": (0.3, 0.4, 0.6), "band": (0.1, 0.25), "trade_to": (0.5, 1.0)},
    "mean-reversion": {"horizon": (3, 5, 10), "max_efficiency": (0.2, 0.3)},
    "carry": {},
}


def check_params(kind: str, params: dict[str, Any] | None) -> None:
    """Raise ``ValueError`` naming the key when ``params`` do not fit strategy ``kind``."""
    if kind == "carry":
        from trimtab.strategies.carry import carry_params

        carry_params(params)
        return
    strategy_params(kind, params)


def build_strategy(
    kind: str,
    params: dict[str, Any] | None = None,
    *,
    name: str | None = None,
    instruments: tuple[str, ...] | None = None,
    governor: GovernorSettings | None = None,
) -> Strategy:
    """The strategy ``kind`` with ``params`` (see the module docstring)."""
    p = strategy_params(kind, params)
    rule = DriftBand(band=p.band, trade_to=p.trade_to, calendar=p.calendar)
    capacity = Capacity(volume_share=p.capacity_share)
    if isinstance(p, CoreParams):
        signal = Membership(top=p.top)
        # The volatility target sizes the uncut book; the risk cuts then come out of it
        # (scaling after the cuts would buy the cut exposure back in the other assets).
        sizers = [
            InverseVolatility(window=p.vol_window),
            VolatilityTarget(target_vol=p.target_vol, max_gross=p.max_gross, window=p.vol_window),
            RiskCut(no_cut=p.no_cut, full_cut=p.full_cut),
            WeightCap(max_weight=p.max_weight),
        ]
        regimes: tuple[str, ...] = ("calm", "trending")
        warmup = p.vol_window
    elif isinstance(p, TrendParams):
        signal = TimeSeriesMomentum(lookbacks=tuple(p.lookbacks))
        sizers = [
            InverseVolatility(window=p.vol_window),
            VolatilityTarget(
                target_vol=p.target_vol, max_gross=p.max_gross, window=p.vol_window, scale_up=False
            ),
            WeightCap(max_weight=p.max_weight),
        ]
        regimes = ("trending",)
        warmup = min(p.lookbacks)
    else:
        assert isinstance(p, ReversionParams)
        signal = ShortTermReversal(
            horizon=p.horizon,
            top=p.top,
            regime_window=p.regime_window,
            max_efficiency=p.max_efficiency,
            uptrend=p.uptrend,
        )
        sizers = [InverseVolatility(window=p.vol_window, gross=p.gross)]
        regimes = ("ranging",)
        warmup = max(p.regime_window, p.vol_window, p.uptrend or 0)
    spec = StrategySpec(
        kind=kind,
        instruments=instruments,
        timeframe="1d",
        warmup=warmup,
        capacity=capacity,
        regimes=regimes,
    )
    return Strategy(name or kind, spec, signal, sizers, rule, governor=governor)
