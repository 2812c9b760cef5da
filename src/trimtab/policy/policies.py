"""Allocation policies: from an observation to target weights, with reasons.

A policy sees one ``Observation`` at a time (nothing after the decision bar) and
returns a ``Decision``. The engine talks to it only through the ``Policy`` protocol:
``reset`` starts a run, ``decide`` is called bar by bar, ``telemetry`` is what the engine
may read between bars, and ``state``/``restore`` save and continue it. Calendars are
computed from each bar and the one before it (``starts_period``), so a policy schedules
the same on a clock that does not know the future as on a replay of history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from math import isfinite
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from trimtab.data.calendar import starts_period
from trimtab.domain.decisions import Assessment, Decision, Observation, Reason
from trimtab.execution.costs import CostModel
from trimtab.policy.governor import DrawdownGovernor, GovernorSettings
from trimtab.policy.rebalance import CostAwareSettings, parse_rule, threshold_rule
from trimtab.policy.trading import CostAwareTrader, window_returns
from trimtab.risk.score import SCORE_MIN_DAYS
from trimtab.risk.sizing import (
    SizingConfig,
    portfolio_volatility,
    vol_target_scale,
)


@dataclass(frozen=True)
class Telemetry:
    """What the engine may read from a policy after a decision.

    ``exposure_ceiling``: the governor's cap on gross exposure (fraction of equity; NaN
    when the policy has none). ``current_target``: the target weights it trades toward
    (fractions of equity, one per symbol), kept over bars where nothing trades; None when
    it has none (buy and hold). ``leverage``: the leverage its orders open perpetual
    positions at (isolated margin = notional / leverage; 1 for every policy but a
    levered carry).
    """

    exposure_ceiling: float = float("nan")
    current_target: np.ndarray | None = None
    leverage: float = 1.0


NO_TELEMETRY = Telemetry()


@runtime_checkable
class Policy(Protocol):
    """An allocation policy as the engine runs it."""

    name: str

    def reset(self, symbols: tuple[str, ...], periods_per_year: float) -> None:
        """Start a run over ``symbols`` (the observation's columns) with bars of
        ``periods_per_year`` per 365-day year: all state back to its start."""
        ...

    def decide(self, obs: Observation, assessment: Assessment) -> Decision: ...

    def telemetry(self) -> Telemetry: ...

    def state(self) -> dict[str, Any]:
        """Everything the next ``decide`` depends on, JSON-ready."""
        ...

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from ``state()`` (after ``reset`` with the same symbols)."""
        ...


class StatelessPolicy:
    """A base for policies that keep nothing between bars: ``decide`` is all they write."""

    name = "stateless"

    def reset(self, symbols: tuple[str, ...], periods_per_year: float) -> None:
        pass

    def decide(self, obs: Observation, assessment: Assessment) -> Decision:
        raise NotImplementedError

    def telemetry(self) -> Telemetry:
        return NO_TELEMETRY

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        pass


def _due(obs: Observation, frequency: str) -> bool:
    return starts_period(obs.timestamp, obs.previous_timestamp, frequency)


def _array(value: list[float] | None) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=float)


def _list(value: np.ndarray | None) -> list[float] | None:
    return None if value is None else np.asarray(value, dtype=float).tolist()


def _equal_weights(members: np.ndarray) -> np.ndarray:
    n = int(members.sum())
    return members / n if n else np.zeros(len(members))


class EqualWeight:
    """Equal weight across the tradable universe, rebalanced on a calendar or never.

    With ``rebalance=None`` it buys once (at the first bar with any member) and holds:
    delisted assets turn into cash and new listings are never bought.
    """

    def __init__(self, rebalance: str | None = "monthly", name: str | None = None) -> None:
        self.rebalance = rebalance
        self.name = name or (f"equal-{rebalance}" if rebalance else "equal-hold")
        self.current_target: np.ndarray | None = None
        self._invested = False

    def reset(self, symbols: tuple[str, ...], periods_per_year: float) -> None:
        self._invested = False
        self.current_target = None

    def telemetry(self) -> Telemetry:
        return Telemetry(current_target=self.current_target)

    def state(self) -> dict[str, Any]:
        return {"invested": self._invested, "current_target": _list(self.current_target)}

    def restore(self, state: dict[str, Any]) -> None:
        self._invested = bool(state["invested"])
        self.current_target = _array(state["current_target"])

    def decide(self, obs: Observation, assessment: Assessment) -> Decision:
        members = obs.universe & obs.tradable
        n = int(members.sum())
        if not self._invested:
            if n == 0:
                return Decision.hold(Reason("no_universe", "no tradable asset in the universe yet"))
            self._invested = True
            self._set_target(_equal_weights(members))
            return Decision.rebalance(
                _equal_weights(members),
                Reason("initial", f"initial allocation: 1/{n} in each of {n} assets", {"n": n}),
                action="initial",
            )
        if self.rebalance is None:
            return Decision.hold(Reason("buy_and_hold", "buy and hold: never rebalanced"))
        if not _due(obs, self.rebalance):
            return Decision.hold(Reason("calendar", f"not a {self.rebalance} rebalance date"))
        if n == 0:
            return Decision.hold(Reason("no_universe", "no tradable asset in the universe"))
        self._set_target(_equal_weights(members))
        return Decision.rebalance(
            _equal_weights(members),
            Reason(
                "calendar",
                f"{self.rebalance} rebalance to 1/{n} in each of {n} assets",
                {"n": n, "frequency": self.rebalance},
            ),
        )

    def _set_target(self, target: np.ndarray) -> None:
        # The target of the last trade, kept over the bars where nothing trades (for
        # tracking error); none before the first trade. Buy and hold has no target.
        if self.rebalance is not None:
            self.current_target = target


class FixedWeights:
    """Fixed weights per symbol (e.g. 100 % BTC), bought once or on a calendar."""

    def __init__(
        self, weights: Mapping[str, float], rebalance: str | None = None, name: str | None = None
    ) -> None:
        if not weights:
            raise ValueError("FixedWeights needs at least one symbol")
        bad = {s: w for s, w in weights.items() if not (np.isfinite(w) and w >= 0)}
        if bad:
            raise ValueError(f"weights must be finite and >= 0, got {bad}")
        if sum(weights.values()) > 1 + 1e-9:
            raise ValueError(f"weights sum to {sum(weights.values()):.4f} > 1")
        self.weights = dict(weights)
        self.rebalance = rebalance
        self.name = name or "fixed"
        self._target = np.zeros(0)
        self._invested = False

    def reset(self, symbols: tuple[str, ...], periods_per_year: float) -> None:
        missing = [s for s in self.weights if s not in symbols]
        if missing:
            raise ValueError(f"policy {self.name}: symbols not in the data: {', '.join(missing)}")
        self._target = np.array([self.weights.get(s, 0.0) for s in symbols])
        self._invested = False

    def telemetry(self) -> Telemetry:
        return NO_TELEMETRY

    def state(self) -> dict[str, Any]:
        return {"invested": self._invested}

    def restore(self, state: dict[str, Any]) -> None:
        self._invested = bool(state["invested"])

    def decide(self, obs: Observation, assessment: Assessment) -> Decision:
        listed = obs.tradable[self._target > 0]
        if not self._invested:
            if not listed.all():
                return Decision.hold(
                    Reason("not_listed", "waiting for every target asset to trade")
                )
            self._invested = True
            return Decision.rebalance(
                self._target,
                Reason("initial", "initial allocation to fixed weights"),
                action="initial",
            )
        if self.rebalance is not None and _due(obs, self.rebalance):
            return Decision.rebalance(
                self._target, Reason("calendar", f"{self.rebalance} rebalance to fixed weights")
            )
        return Decision.hold(Reason("buy_and_hold", "holding fixed weights"))


class TargetWeights:
    """Replays a precomputed (time x symbol) weight frame: NaN rows mean hold.

    Used to run the same target-weight simulation as other backtesters.
    """

    def __init__(self, weights: pd.DataFrame, name: str = "targets") -> None:
        self.frame = weights
        self.name = name
        self._rows: dict[int, np.ndarray] = {}

    def reset(self, symbols: tuple[str, ...], periods_per_year: float) -> None:
        unknown = [c for c in self.frame.columns if c not in symbols]
        if unknown:
            raise ValueError(f"target weights name unknown symbols: {', '.join(unknown)}")
        # Looked up by the bar's timestamp, so the replay needs no index of the run.
        aligned = self.frame.reindex(columns=list(symbols))
        active = aligned.notna().any(axis=1).to_numpy()
        rows = aligned.fillna(0.0).to_numpy(float)
        stamps = pd.DatetimeIndex(aligned.index).as_unit("ns").asi8  # Timestamp.value is ns
        self._rows = {int(t): rows[k] for k, t in enumerate(stamps) if active[k]}

    def telemetry(self) -> Telemetry:
        return NO_TELEMETRY

    def state(self) -> dict[str, Any]:
        return {}  # a replay of a frame: nothing carries from bar to bar

    def restore(self, state: dict[str, Any]) -> None:
        pass

    _HOLD = Decision.hold(Reason("no_target", "no target on this bar"))

    def holds_at(self, timestamp: pd.Timestamp) -> bool:
        """Is the decision at ``timestamp`` a plain hold, known before the bar (no target
        row), with nothing else done? A loop may then skip the step there when a hold
        would not be recorded."""
        return timestamp.value not in self._rows

    def decide(self, obs: Observation, assessment: Assessment) -> Decision:
        row = self._rows.get(obs.timestamp.value)
        if row is None:
            return self._HOLD
        return Decision.rebalance(row, Reason("target", "rebalance to the given targets"))


class SizingSettings(BaseModel):
    """The ``sizing:`` section: how the managed policy sizes and trades its book.

    ``target_vol`` is the annualised volatility (fraction) the uncut equal-weight book is
    scaled to, forecast from the trailing ``cov_window`` bars of returns (needing at least
    ``min_history`` of them; ``downside`` uses downside deviation), never above
    ``max_gross`` (the leverage cap: sum of weights, 1.0 = 1x). Each asset is then cut by
    its 0-100 risk score: full size at or below ``no_cut_score``, nothing at or above
    ``full_cut_score``, linear between. ``trading`` picks the rule that trades toward that
    target: ``cost-aware`` (the ``rebalance:`` section) or ``band``: all the way to target
    when the holdings drift more than ``band`` (sum of absolute weight differences) or on
    the first bar of each ``calendar`` period.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    trading: Literal["cost-aware", "band"] = "cost-aware"
    target_vol: float = Field(0.45, gt=0, le=10)
    max_gross: float = Field(1.0, gt=0, le=125)
    cov_window: int = Field(60, ge=3)
    min_history: int = Field(30, ge=2)
    downside: bool = False
    no_cut_score: float = Field(15.0, ge=0, lt=100)
    full_cut_score: float = Field(50.0, gt=0, le=100)
    band: float = Field(0.30, ge=0, lt=2)
    calendar: Literal["daily", "weekly", "monthly"] = "monthly"

    @model_validator(mode="after")
    def _consistent(self) -> SizingSettings:
        if self.no_cut_score >= self.full_cut_score:
            raise ValueError(
                f"no_cut_score ({self.no_cut_score:g}) must be below full_cut_score "
                f"({self.full_cut_score:g})"
            )
        if self.min_history > self.cov_window:
            # The forecast reads only cov_window bars: more history could never be there.
            raise ValueError(
                f"min_history ({self.min_history}) must not exceed cov_window ({self.cov_window})"
            )
        return self

    def risk_sizing(self) -> SizingConfig:
        """The risk-sizing numbers of ``trimtab.risk.sizing``."""
        return SizingConfig(
            target_vol=self.target_vol,
            downside=self.downside,
            max_gross=self.max_gross,
            no_cut_score=self.no_cut_score,
            full_cut_score=self.full_cut_score,
            cov_window=self.cov_window,
            min_history=self.min_history,
        )


class Managed:
    """trimtab's own policy: equal weight across the universe, sized by risk.

    At every bar it computes the risk-sized target (see ``trimtab.risk.sizing``): the
    equal-weight book scaled to the volatility target under the leverage cap, then each
    asset cut by its risk score. With ``trading: cost-aware`` (the default) the
    cost-aware rebalancer (``trimtab.policy.trading``) decides each bar which assets to
    trade and how far; with ``band`` it trades all the way to target when the holdings
    drift from it by more than ``band`` or on the calendar date. Either way risk changes
    act within a bar rather than a month. Needs the ``risk_score`` feature (the engine
    computes it). ``settings`` is the ``sizing:`` section, ``governor`` the
    ``governor:`` one (None: no governor), ``cost_settings`` the ``rebalance:`` one.
    """

    def __init__(
        self,
        settings: SizingSettings | None = None,
        governor: GovernorSettings | None = None,
        costs: CostModel | None = None,
        cost_settings: CostAwareSettings | None = None,
        periods_per_year: float = 365.0,
    ) -> None:
        self.settings = settings or SizingSettings()
        self.sizing = self.settings.risk_sizing()
        self.trading = self.settings.trading
        self.band = self.settings.band
        self.rebalance = self.settings.calendar
        self.trader = CostAwareTrader(costs, cost_settings, cov_window=self.settings.cov_window)
        self.name = "managed"
        self.periods_per_year = periods_per_year
        self.governor = DrawdownGovernor(governor) if governor is not None else None
        # The governor's ceiling at the last decision (1.0 without a governor), for the record.
        self.exposure_ceiling = 1.0
        self._invested = False

    def reset(self, symbols: tuple[str, ...], periods_per_year: float) -> None:
        self._invested = False
        self.exposure_ceiling = 1.0
        if self.governor is not None:
            self.governor.reset()
        self.periods_per_year = periods_per_year
        self.trader.reset(self.periods_per_year)

    def telemetry(self) -> Telemetry:
        return Telemetry(exposure_ceiling=self.exposure_ceiling)

    def state(self) -> dict[str, Any]:
        return {
            "invested": self._invested,
            "exposure_ceiling": self.exposure_ceiling,
            "governor": self.governor.state() if self.governor is not None else None,
            "trader": self.trader.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self._invested = bool(state["invested"])
        self.exposure_ceiling = float(state["exposure_ceiling"])
        if self.governor is not None:
            self.governor.restore(state["governor"])
        self.trader.restore(state["trader"])

    def target(
        self, obs: Observation, assessment: Assessment, returns: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[Reason]]:
        """The risk-sized target weights and the reasons for them. ``returns``: the
        bar's window of ``cov_window`` returns (``window_returns``), if already made."""
        return self._target(obs, assessment, returns, obs.universe & obs.tradable)

    def _target(
        self,
        obs: Observation,
        assessment: Assessment,
        returns: np.ndarray | None,
        members: np.ndarray,
        clean: bool = False,
    ) -> tuple[np.ndarray, list[Reason]]:
        """``target`` given ``members`` (``obs.universe & obs.tradable``); ``clean``:
        ``returns`` has its missing returns at 0 already (``_clean_returns``)."""
        cfg = self.sizing
        n = int(np.count_nonzero(members))
        base = members / n if n else np.zeros(len(members))
        scores = assessment.values.get("risk_score")
        if scores is None:
            raise ValueError("the managed policy needs the 'risk_score' feature")
        scores = np.asarray(scores, dtype=float)
        # risk_multiplier(scores, cfg) of the members (others are 0 in ``base``): fmax
        # turns the NaN of an unknown score into 0 where clip kept it; the same bits.
        mult = np.fmin(
            np.fmax((cfg.full_cut_score - scores) / (cfg.full_cut_score - cfg.no_cut_score), 0.0),
            1.0,
        )
        sized = base * mult
        reasons = [Reason("equal_weight", f"base: 1/{n} in each of {n} assets", {"n": n})]
        scored = members & np.isfinite(scores)
        reasons += _young_asset_reasons(obs, members, scores, assessment.values, scored)
        cut = (scored & (mult < 1)).nonzero()[0]
        if len(cut):
            symbols = obs.symbols
            detail = dict(
                zip(
                    [symbols[j] for j in cut.tolist()],
                    _round1(scores[cut]),
                    strict=True,
                )
            )
            reasons.append(
                Reason(
                    "risk_cut",
                    f"{len(cut)} assets cut for risk scores above {cfg.no_cut_score:g} "
                    f"(zero at {cfg.full_cut_score:g})",
                    {"scores": detail},
                )
            )
        # The volatility target sizes the whole universe book; risk cuts then come out of
        # it. Scaling after the cuts would buy the cut exposure back in other assets.
        gross = float(base.sum())
        if gross > 0 and min(obs.i + 1, cfg.cov_window + 1) > cfg.min_history:
            if returns is None:
                returns = window_returns(obs.history("close"), cfg.cov_window)
                clean = False
            if clean and not cfg.downside:
                vol = _book_volatility(returns @ base, self.periods_per_year)
            else:
                vol = portfolio_volatility(base, returns, self.periods_per_year, cfg.downside)
        else:
            vol = float("nan")
        scale = vol_target_scale(vol, cfg, gross)
        targets = sized * scale
        exposure = float(targets.sum())
        reasons.append(
            Reason(
                "vol_target",
                f"forecast volatility {vol:.0%} vs target {cfg.target_vol:.0%}: "
                f"exposure {exposure:.0%} of equity",
                {
                    "forecast_vol": vol,
                    "target_vol": cfg.target_vol,
                    "scale": scale,
                    "gross": exposure,
                },
            )
        )
        return targets, reasons

    def decide(self, obs: Observation, assessment: Assessment) -> Decision:
        ceiling = None
        if self.governor is not None:
            # The governor sees every bar, traded or not, so its peak and ramp are exact.
            high_vol = assessment.values.get("market_high_vol", float("nan"))
            ceiling = self.governor.update(
                obs.portfolio.equity, _zero_nan(high_vol), obs.portfolio.flow
            )
            self.exposure_ceiling = ceiling.value
        members = obs.universe & obs.tradable
        if not members.any():
            return Decision.hold(Reason("no_universe", "no tradable asset in the universe"))
        # One window of returns for the volatility target and the cost-aware trader, its
        # missing returns set to 0 once (as each of them would).
        returns = None
        if self.trading == "cost-aware" and self.trader.cov_window == self.sizing.cov_window:
            returns = _clean_returns(window_returns(obs.history("close"), self.sizing.cov_window))
        targets, reasons = self._target(obs, assessment, returns, members, clean=True)
        if ceiling is not None and ceiling.source != "none":
            gross = float(targets.sum())
            if gross > ceiling.value:
                targets = targets * (ceiling.value / gross)
            reasons.append(
                Reason(
                    f"governor_{ceiling.source}",
                    ceiling.message,
                    {"ceiling": ceiling.value, "drawdown": ceiling.drawdown, "gross_before": gross},
                )
            )
            held = float(np.abs(obs.portfolio.weights).sum())
            if self._invested and held > ceiling.value + 0.05:
                return Decision.rebalance(
                    targets,
                    *reasons,
                    Reason(
                        "over_ceiling",
                        f"holdings at {held:.0%} exceed the {ceiling.value:.0%} ceiling",
                    ),
                    action="derisk",
                )
        if not self._invested:
            self._invested = True
            return Decision.rebalance(targets, *reasons, action="initial")
        if self.trading == "cost-aware":
            return self.trader.decide(
                obs, assessment, targets, reasons, returns=returns, clean=returns is not None
            )
        drift = float(np.abs(targets - obs.portfolio.weights).sum())
        if _due(obs, self.rebalance):
            return Decision.rebalance(
                targets,
                *reasons,
                Reason("calendar", f"{self.rebalance} rebalance", {"drift": drift}),
            )
        if drift > self.band:
            return Decision.rebalance(
                targets,
                *reasons,
                Reason(
                    "drift",
                    f"holdings {drift:.0%} away from the risk target (band {self.band:.0%})",
                    {"drift": drift},
                ),
            )
        return Decision.hold(
            Reason(
                "within_band",
                f"holdings within {self.band:.0%} of the risk target",
                {"drift": drift},
            )
        )


def _round1(values: np.ndarray) -> list[float]:
    """``[round(float(v), 1) for v in values]`` (finite values), vectorised.

    Python's ``round`` picks the tenth nearest to the exact value (ties to even) and
    returns the double nearest to it; ``rint(v * 10) / 10`` does the same (the division
    is correctly rounded) unless ``v * 10``, rounded to a double, sits so near a half
    that the rounding could have moved it across: those few go through ``round``."""
    if len(values) <= 4:  # a few: round() is quicker than the arrays
        return [round(v, 1) for v in values.tolist()]
    tenths = values * 10.0
    out = (np.rint(tenths) / 10.0).tolist()
    near_half = np.abs(tenths - np.floor(tenths) - 0.5) < 1e-6
    if near_half.any():
        for j in near_half.nonzero()[0].tolist():
            out[j] = round(float(values[j]), 1)
    return out


def _clean_returns(returns: np.ndarray) -> np.ndarray:
    """A window of returns with missing returns as 0 and infinities as the largest floats
    (``nan_to_num``): what ``portfolio_volatility`` and ``CostAwareTrader.inputs`` each
    make of it, made once. Changes ``returns`` in place when it can."""
    returns[np.isnan(returns)] = 0.0
    if not np.isfinite(returns).all():
        returns = np.nan_to_num(returns)
    return returns


def _book_volatility(r: np.ndarray, periods_per_year: float) -> float:
    """``float(np.std(r, ddof=1) * np.sqrt(periods_per_year))`` of a book's returns (NaN
    under 2 bars): the operations of ``np.std`` in its order (so the same bits) without
    its argument handling, which costs more than the arithmetic on a few dozen bars."""
    n = len(r)
    if n < 2:
        return float("nan")
    d = r - np.add.reduce(r) / n
    return float(np.sqrt(np.add.reduce(d * d) / (n - 1)) * np.sqrt(periods_per_year))


def _zero_nan(value: Any) -> float:
    """``float(np.nan_to_num(value))`` of a scalar, without its cost when finite."""
    out = float(value)
    return out if isfinite(out) else float(np.nan_to_num(value))


def _young_asset_reasons(
    obs: Observation,
    members: np.ndarray,
    scores: np.ndarray,
    values: Mapping[str, np.ndarray],
    scored: np.ndarray | None = None,
) -> list[Reason]:
    """Say which members the risk score cannot see whole: too young to score at all (held
    at zero, never silently), or scored on only part of the factor weight. ``scored``:
    ``members & np.isfinite(scores)``, if already made."""
    reasons = []
    if scored is None:
        scored = members & np.isfinite(scores)
    symbols = obs.symbols
    unscored = [symbols[j] for j in (members & ~scored).nonzero()[0].tolist()]
    if unscored:
        reasons.append(
            Reason(
                "not_scored",
                f"{len(unscored)} {'asset' if len(unscored) == 1 else 'assets'} without a risk "
                f"score yet (fewer than {SCORE_MIN_DAYS} days of prices): held at zero",
                {"assets": unscored},
            )
        )
    coverage = values.get("risk_coverage")
    if coverage is not None:
        partial = (scored & (coverage < 1 - 1e-9)).nonzero()[0]
        if len(partial):
            detail = {symbols[j]: round(float(coverage[j]), 2) for j in partial.tolist()}
            reasons.append(
                Reason(
                    "partial_score",
                    f"{len(partial)} young {'asset' if len(partial) == 1 else 'assets'} scored "
                    f"on the factors their history allows (share of the factor weight: "
                    + ", ".join(f"{s} {c:.0%}" for s, c in detail.items())
                    + ")",
                    {"coverage": detail},
                )
            )
    return reasons


class RebalancedEqualWeight:
    """Equal weight across the tradable universe, traded by a rebalancing rule.

    The targets are those of ``equal-monthly``; only the rule that decides when and how
    far to trade differs (see ``trimtab.policy.rebalance``). ``current_target`` holds
    the target weights of the last decision, for tracking error.
    """

    def __init__(
        self,
        rule: str = "calendar:monthly",
        costs: CostModel | None = None,
        settings: CostAwareSettings | None = None,
        cov_window: int = 60,
    ) -> None:
        self.kind, self.arg = parse_rule(rule)
        self.rule = rule
        self.name = f"equal-weight[{rule}]"
        self.trader = CostAwareTrader(costs, settings, cov_window=cov_window)
        self.current_target: np.ndarray | None = None
        self._invested = False

    def reset(self, symbols: tuple[str, ...], periods_per_year: float) -> None:
        self._invested = False
        self.current_target = None
        self.trader.reset(periods_per_year)

    def telemetry(self) -> Telemetry:
        return Telemetry(current_target=self.current_target)

    def state(self) -> dict[str, Any]:
        return {
            "invested": self._invested,
            "current_target": _list(self.current_target),
            "trader": self.trader.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self._invested = bool(state["invested"])
        self.current_target = _array(state["current_target"])
        self.trader.restore(state["trader"])

    def decide(self, obs: Observation, assessment: Assessment) -> Decision:
        members = obs.universe & obs.tradable
        n = int(members.sum())
        if n == 0:
            return Decision.hold(Reason("no_universe", "no tradable asset in the universe"))
        target = _equal_weights(members)
        current = obs.portfolio.weights
        if not self._invested:
            self._invested = True
            self.current_target = target
            return Decision.rebalance(
                target, Reason("initial", f"initial allocation: 1/{n} each"), action="initial"
            )
        if self.kind == "calendar":
            if not _due(obs, str(self.arg)):
                # A bar where nothing trades keeps the last target (as equal-monthly).
                return Decision.hold(Reason("calendar", f"not a {self.arg} rebalance date"))
            self.current_target = target
            return Decision.rebalance(
                target, Reason("calendar", f"{self.arg} rebalance to 1/{n} each")
            )
        # The drift rules measure against today's target, traded or not.
        self.current_target = target
        if self.kind == "cost-aware":
            return self.trader.decide(obs, assessment, target, [], kind="cost-aware")
        choice = threshold_rule(current, target, float(self.arg))
        if choice.weights is None:
            return Decision.hold(Reason(self.kind, choice.reason))
        assets = [obs.symbols[j] for j in choice.traded]
        return Decision.rebalance(
            choice.weights, Reason(self.kind, choice.reason, {"assets": assets})
        )


BASELINES = ("equal-hold", "equal-monthly", "btc-hold")
POLICIES = ("managed", "equal-weight", *BASELINES)


def make_policy(
    name: str,
    btc_symbol: str | None = None,
    rebalance: str | None = None,
    costs: CostModel | None = None,
    cost_settings: CostAwareSettings | None = None,
) -> Policy:
    """A policy by its CLI name; ``rebalance`` is the rule of ``equal-weight``,
    ``cost_settings`` the ``rebalance:`` section its cost-aware rule reads."""
    if name == "managed":
        return Managed(costs=costs, cost_settings=cost_settings)
    if name == "equal-weight":
        return RebalancedEqualWeight(
            rebalance or "calendar:monthly", costs=costs, settings=cost_settings
        )
    if name == "equal-hold":
        return EqualWeight(rebalance=None)
    if name == "equal-monthly":
        return EqualWeight(rebalance="monthly")
    if name == "btc-hold":
        if btc_symbol is None:
            raise ValueError("btc-hold needs BTC in the data (BTCUSDT or another BTC pair)")
        return FixedWeights({btc_symbol: 1.0}, name="btc-hold")
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
