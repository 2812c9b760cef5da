"""The strategy interface: one subaccount's plug-in, composed from parts.

A ``Strategy`` is a policy (``trimtab.policy.policies.Policy``: the engine runs it like
any other) built from three kinds of part, in the manner of a scikit-learn pipeline:

* a **signal** scores each asset at the decision bar from the trailing window only
  (momentum, reversal, membership of a large-cap core);
* one or more **sizers** turn scores into target weights, each refining the last
  (inverse volatility, risk cuts, a volatility target, caps);
* a **rule** decides whether and how far to trade toward the target (a calendar, a
  drift band).

It also declares what the allocator and the runner need to know about it: the
instruments it trades (None: its subaccount's universe), its timeframe, its warm-up (bars
of history before its first decision), its ``Capacity`` (how much capital it can use
before its own trading moves prices: a share of the traded instruments' daily volume) and
the market regimes it suits.

Every part reads a ``BarView`` of one bar: the observation (nothing after the decision
bar), the assessment and the window of returns, so a strategy decides the same on a
replay and on a wall clock. Parts keep no state between bars unless they say so in
``state``/``restore``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from trimtab.data.calendar import starts_period
from trimtab.domain.decisions import Assessment, Decision, Observation, Reason
from trimtab.policy.governor import DrawdownGovernor, GovernorSettings
from trimtab.policy.policies import Telemetry

#: Regimes a strategy may declare it suits (``Strategy.regimes``); the allocator tilts
#: toward strategies that suit the regime it measures (see ``trimtab.strategies.regime``).
REGIMES = ("trending", "ranging", "calm", "stressed")

#: A transfer in or out above this share of equity makes a strategy trade to its target
#: at that close (fraction of equity).
FLOW_TRADE = 0.01


@dataclass(frozen=True)
class Capacity:
    """How much capital a strategy can use: ``volume_share`` (fraction) of the median
    daily quote volume (USDT) over ``window`` bars of the instruments it may hold, summed
    over them. ``None`` volume share: unbounded."""

    volume_share: float | None = 0.01
    window: int = 30

    def __post_init__(self) -> None:
        if self.volume_share is not None and not 0 < self.volume_share <= 1:
            raise ValueError(f"capacity volume_share must be in (0, 1], got {self.volume_share}")
        if self.window < 1:
            raise ValueError(f"capacity window must be at least 1 bar, got {self.window}")

    def usdt(self, quote_volume: np.ndarray, members: np.ndarray, bars_per_day: float) -> float:
        """Capacity in USDT from a (bars x assets) window of quote volume per bar and the
        assets it may hold."""
        if self.volume_share is None:
            return float("inf")
        window = quote_volume[-self.window :][:, members]
        if window.size == 0:
            return 0.0
        with np.errstate(all="ignore"):
            daily = np.nanmedian(window, axis=0) * bars_per_day
        return float(np.nansum(daily) * self.volume_share)


class BarView:
    """One bar as the parts see it: the observation, the assessment, the members
    (universe and tradable, within the strategy's instruments) and the trailing returns
    (``window`` bars of simple returns, NaN where a close is missing)."""

    __slots__ = ("assessment", "members", "obs", "periods_per_year", "returns")

    def __init__(
        self,
        obs: Observation,
        assessment: Assessment,
        members: np.ndarray,
        returns: np.ndarray,
        periods_per_year: float,
    ) -> None:
        self.obs = obs
        self.assessment = assessment
        self.members = members
        self.returns = returns
        self.periods_per_year = periods_per_year

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.obs.symbols

    def volatility(self, window: int) -> np.ndarray:
        """Annualised volatility of each asset's last ``window`` returns (NaN with fewer
        than half of them)."""
        r = self.returns[-window:]
        valid = np.isfinite(r)
        n = valid.sum(axis=0)
        filled = np.where(valid, r, 0.0)
        safe_n = np.maximum(n, 2)
        mean = filled.sum(axis=0) / np.maximum(n, 1)
        dev = np.where(valid, r - mean, 0.0)
        vol = np.sqrt((dev * dev).sum(axis=0) / (safe_n - 1))
        vol = np.where(n >= max(2, (window + 1) // 2), vol, np.nan)
        return vol * np.sqrt(self.periods_per_year)


class Signal(Protocol):
    """Scores per asset at the decision bar (NaN: no view); higher is more wanted."""

    lookback: int

    def scores(self, view: BarView) -> tuple[np.ndarray, list[Reason]]: ...


class Sizer(Protocol):
    """Target weights (fractions of the subaccount's equity) from scores and the
    weights of the sizer before it (None for the first)."""

    lookback: int

    def size(
        self, view: BarView, scores: np.ndarray, weights: np.ndarray | None
    ) -> tuple[np.ndarray, list[Reason]]: ...


@dataclass(frozen=True)
class TradeChoice:
    """A rule's answer: the weights to trade to (None: hold) and why."""

    weights: np.ndarray | None
    reason: Reason


class Rule(Protocol):
    """Whether and how far to trade from the current weights toward the target."""

    def choose(self, view: BarView, target: np.ndarray, current: np.ndarray) -> TradeChoice: ...


@dataclass(frozen=True)
class StrategySpec:
    """What a strategy declares: ``kind`` (core, trend, ...), the ``instruments`` it
    trades (None: its subaccount's universe), ``timeframe`` (bar length it is made
    for), ``warmup`` (bars of history before its first decision), ``capacity`` and the
    ``regimes`` it suits (a subset of ``REGIMES``)."""

    kind: str
    instruments: tuple[str, ...] | None = None
    timeframe: str = "1d"
    warmup: int = 0
    capacity: Capacity = field(default_factory=Capacity)
    regimes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [r for r in self.regimes if r not in REGIMES]
        if unknown:
            raise ValueError(f"unknown regime {unknown[0]!r}; choose among {', '.join(REGIMES)}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0 bars, got {self.warmup}")


class Strategy:
    """A policy composed of a signal, sizers and a rule (see the module docstring).

    ``governor`` (optional) caps gross exposure by the subaccount's drawdown, as for
    the managed policy. The target of the last decision is kept (``telemetry``), so
    tracking error is measured against what the strategy wants, traded or not.
    """

    def __init__(
        self,
        name: str,
        spec: StrategySpec,
        signal: Signal,
        sizers: Sequence[Sizer],
        rule: Rule,
        *,
        governor: GovernorSettings | None = None,
    ) -> None:
        if not sizers:
            raise ValueError(f"strategy {name!r}: give at least one sizer")
        self.name = name
        self.spec = spec
        self.signal = signal
        self.sizers = tuple(sizers)
        self.rule = rule
        self.governor_settings = governor
        self.governor = DrawdownGovernor(governor) if governor is not None else None
        self.window = max([signal.lookback, *(s.lookback for s in self.sizers), 2])
        self.periods_per_year = 365.0
        self.current_target: np.ndarray | None = None
        self.exposure_ceiling = float("nan")
        self._instrument_mask: np.ndarray | None = None
        self._invested = False

    def __repr__(self) -> str:
        parts = [type(self.signal).__name__, *(type(s).__name__ for s in self.sizers)]
        return f"Strategy({self.name!r}, {' -> '.join(parts)}, {type(self.rule).__name__})"

    def with_params(self, **params: Any) -> Strategy:
        """A copy with parts' fields replaced: ``signal__lookbacks=(20, 60)``,
        ``sizer0__target_vol=0.3``, ``rule__band=0.1`` (scikit-learn's ``set_params``
        naming). Unknown names raise ``ValueError``."""
        signal, sizers, rule = self.signal, list(self.sizers), self.rule
        for key, value in params.items():
            part, _, attr = key.partition("__")
            if part == "signal":
                signal = _replace(signal, attr, value, key)
            elif part == "rule":
                rule = _replace(rule, attr, value, key)
            elif part.startswith("sizer") and part[5:].isdigit() and int(part[5:]) < len(sizers):
                j = int(part[5:])
                sizers[j] = _replace(sizers[j], attr, value, key)
            else:
                raise ValueError(
                    f"strategy {self.name!r}: no part {part!r} for parameter {key!r} "
                    f"(use signal__, rule__ or sizer0__..sizer{len(sizers) - 1}__)"
                )
        return Strategy(self.name, self.spec, signal, sizers, rule, governor=self.governor_settings)

    # --- the policy protocol -----------------------------------------------------------
    def reset(self, symbols: tuple[str, ...], periods_per_year: float) -> None:
        self.periods_per_year = periods_per_year
        self.current_target = None
        self.exposure_ceiling = float("nan")
        self._invested = False
        if self.spec.instruments is None:
            self._instrument_mask = None
        else:
            wanted = set(self.spec.instruments)
            self._instrument_mask = np.array([s in wanted for s in symbols], dtype=bool)
        if self.governor is not None:
            self.governor.reset()

    def telemetry(self) -> Telemetry:
        return Telemetry(exposure_ceiling=self.exposure_ceiling, current_target=self.current_target)

    def state(self) -> dict[str, Any]:
        return {
            "invested": self._invested,
            "exposure_ceiling": self.exposure_ceiling
            if np.isfinite(self.exposure_ceiling)
            else None,
            "current_target": None if self.current_target is None else self.current_target.tolist(),
            "governor": self.governor.state() if self.governor is not None else None,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self._invested = bool(state["invested"])
        ceiling = state["exposure_ceiling"]
        self.exposure_ceiling = float("nan") if ceiling is None else float(ceiling)
        target = state["current_target"]
        self.current_target = None if target is None else np.asarray(target, dtype=float)
        if self.governor is not None:
            self.governor.restore(state["governor"])

    def view(self, obs: Observation, assessment: Assessment) -> BarView:
        """The bar as the parts see it."""
        members = obs.universe & obs.tradable
        if self._instrument_mask is not None:
            members = members & self._instrument_mask
        close = obs.history("close")[-(self.window + 1) :]
        with np.errstate(invalid="ignore", divide="ignore"):
            returns = close[1:] / close[:-1] - 1.0
        return BarView(obs, assessment, members, returns, self.periods_per_year)

    def target(self, view: BarView) -> tuple[np.ndarray, list[Reason]]:
        """The target weights at this bar and the reasons for them."""
        scores, reasons = self.signal.scores(view)
        weights: np.ndarray | None = None
        for sizer in self.sizers:
            weights, more = sizer.size(view, scores, weights)
            reasons += more
        assert weights is not None
        weights = np.where(view.members & np.isfinite(weights), weights, 0.0)
        return weights, reasons

    def decide(self, obs: Observation, assessment: Assessment) -> Decision:
        ceiling = None
        if self.governor is not None:
            high_vol = assessment.values.get("market_high_vol", float("nan"))
            ceiling = self.governor.update(
                obs.portfolio.equity,
                float(high_vol) if np.isfinite(high_vol) else 0.0,
                obs.portfolio.flow,
            )
            self.exposure_ceiling = ceiling.value
        if obs.i < self.spec.warmup:
            return Decision.hold(
                Reason(
                    "warmup",
                    f"{self.name}: {obs.i + 1} bars of history, needs {self.spec.warmup}",
                    {"bars": obs.i + 1, "warmup": self.spec.warmup},
                )
            )
        view = self.view(obs, assessment)
        if not view.members.any() and not np.any(obs.portfolio.quantities):
            return Decision.hold(Reason("no_universe", "no tradable asset in the universe"))
        target, reasons = self.target(view)
        if ceiling is not None and ceiling.source != "none":
            gross = float(np.abs(target).sum())
            if gross > ceiling.value:
                target = target * (ceiling.value / gross)
            reasons.append(
                Reason(
                    f"governor_{ceiling.source}",
                    ceiling.message,
                    {"ceiling": ceiling.value, "drawdown": ceiling.drawdown, "gross_before": gross},
                )
            )
        self.current_target = target
        current = obs.portfolio.weights
        if not self._invested:
            if not np.any(target):
                return Decision.hold(*reasons, Reason("no_target", "nothing to hold yet"))
            self._invested = True
            return Decision.rebalance(target, *reasons, action="initial")
        flow = obs.portfolio.flow
        if abs(flow) > FLOW_TRADE * max(obs.portfolio.equity, 1e-9):
            # Capital moved in or out at this close: cash the strategy did not choose to
            # hold (or a book now too big for its equity). Trade to target now, whatever
            # the band: the allocator moved it to be used.
            return Decision.rebalance(
                target,
                *reasons,
                Reason(
                    "capital_flow",
                    f"{flow:+,.0f} USDT moved at this close: to target",
                    {"flow": flow},
                ),
            )
        choice = self.rule.choose(view, target, current)
        if choice.weights is None:
            return Decision.hold(*reasons, choice.reason)
        return Decision.rebalance(choice.weights, *reasons, choice.reason)


def _replace(part: Any, attr: str, value: Any, key: str) -> Any:
    try:
        return replace(part, **{attr: value})
    except TypeError:
        raise ValueError(f"{type(part).__name__} has no parameter {attr!r} ({key})") from None


def due(obs: Observation, every: str) -> bool:
    """Is the decision bar the first of an ``every`` period (daily, weekly, monthly,
    quarterly)?"""
    return starts_period(obs.timestamp, obs.previous_timestamp, every)
