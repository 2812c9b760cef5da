"""The drawdown governor: an exposure ceiling from the account's drawdown and regime.

- Drawdown is measured on equity (cash plus positions at mark, so unrealized PnL
  counts) from its running peak, never as a sum of trade returns.
- A schedule maps drawdown to a ceiling on gross exposure (fraction of equity),
  interpolated linearly between its points unless configured as steps: no cliff.
- Recovery: the ceiling falls at once when drawdown deepens, but rises only while
  equity recovers, by at most ``1 / recovery_bars`` a bar, and only once equity is
  ``recovery_confirm`` above its trough: exposure comes back as the recovery proves
  itself. Positions are sized on current equity (targets are fractions of it).
- Regime: in a high-volatility regime (the market index's filtered HMM probability of
  its turbulent state above ``regime_threshold``), the ceiling is cut to
  ``regime_ceiling`` at once, before the drawdown schedule would act. Every ceiling
  says which of the two (drawdown or regime) set it.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from functools import lru_cache
from math import isfinite

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator


class GovernorSettings(BaseModel):
    """The governor's settings: the ``governor:`` section of the configuration.

    ``schedule`` maps drawdown from the equity peak (fraction) to the ceiling on gross
    exposure (fraction of equity); drawdowns strictly increase within (0, 1) and ceilings
    in [0, 1] never increase along it. With ``interpolate`` the ceiling moves linearly
    between points (from 1.0 at no drawdown), otherwise it steps. ``recovery_bars``: the
    ceiling rises by at most ``1 / recovery_bars`` a bar, and only once equity is
    ``recovery_confirm`` (fraction) above its trough. ``regime_ceiling`` caps exposure
    while the market's high-volatility probability is at least ``regime_threshold``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    # Deep by default: the managed policy's volatility target and risk cuts already keep
    # drawdowns small, and on the shared data a shallower schedule (10 %/20 %/30 %) cut
    # exposure after falls and missed the rebounds (lower Calmar in 4 of 6 test windows).
    schedule: tuple[tuple[float, float], ...] = ((0.25, 0.75), (0.35, 0.50), (0.45, 0.25))
    interpolate: bool = True
    recovery_bars: int = Field(20, ge=1)
    recovery_confirm: float = Field(0.05, ge=0)
    regime_ceiling: float = Field(0.5, ge=0, le=1)
    regime_threshold: float = Field(0.5, gt=0, le=1)

    @field_validator("schedule")
    @classmethod
    def _monotone(cls, value: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
        if not value:
            raise ValueError("needs at least one [drawdown, ceiling] point")
        for k, (dd, ceiling) in enumerate(value):
            if not 0 < dd < 1:
                raise ValueError(f"entry {k}: drawdown must be in (0, 1), got {dd}")
            if not 0 <= ceiling <= 1:
                raise ValueError(f"entry {k}: exposure ceiling must be in [0, 1], got {ceiling}")
        for k in range(1, len(value)):
            if value[k][0] <= value[k - 1][0]:
                raise ValueError(
                    f"drawdowns must increase: entry {k} ({value[k][0]}) after {value[k - 1][0]}"
                )
            if value[k][1] > value[k - 1][1]:
                raise ValueError(
                    f"exposure ceilings must not increase: entry {k} ({value[k][1]}) "
                    f"after {value[k - 1][1]}"
                )
        return value

    def schedule_ceiling(self, drawdown: float) -> float:
        """The ceiling the schedule gives at ``drawdown`` (no recovery ramp, no regime)."""
        dds, ceilings = _schedule_points(self.schedule)
        if self.interpolate:
            if isfinite(drawdown):
                return _interp(drawdown, *_schedule_lists(self.schedule))
            return float(np.interp(drawdown, dds, ceilings))
        # Steps: a point's ceiling applies from its drawdown on.
        return float(ceilings[np.searchsorted(dds, drawdown, side="right") - 1])


@lru_cache(maxsize=64)
def _schedule_points(schedule: tuple[tuple[float, float], ...]) -> tuple[np.ndarray, np.ndarray]:
    """The schedule's drawdowns and ceilings from (0, 1.0) on, as arrays: made once per
    schedule rather than at every bar (the settings are frozen; the arrays are read-only
    so that no caller changes the shared copy)."""
    dds = np.array([0.0, *(d for d, _ in schedule)])
    ceilings = np.array([1.0, *(c for _, c in schedule)])
    dds.flags.writeable = False
    ceilings.flags.writeable = False
    return dds, ceilings


@lru_cache(maxsize=64)
def _schedule_lists(schedule: tuple[tuple[float, float], ...]) -> tuple[list[float], list[float]]:
    """``_schedule_points`` as Python lists, for ``_interp``."""
    dds, ceilings = _schedule_points(schedule)
    return dds.tolist(), ceilings.tolist()


def _interp(x: float, xs: list[float], fs: list[float]) -> float:
    """``float(np.interp(x, xs, fs))`` of a finite ``x`` (``xs`` increasing): NumPy's
    arithmetic and branches (its compiled ``interp``) on Python floats, without the
    call's cost, which was most of the governor's per-bar time. Same bits (tested)."""
    j = bisect_right(xs, x) - 1
    if j < 0:
        return fs[0]
    if j >= len(xs) - 1:
        return fs[-1]
    if xs[j] == x:
        return fs[j]
    slope = (fs[j + 1] - fs[j]) / (xs[j + 1] - xs[j])
    out = slope * (x - xs[j]) + fs[j]
    if out != out:  # NaN: NumPy tries from the right end, then a flat segment
        out = slope * (x - xs[j + 1]) + fs[j + 1]
        if out != out and fs[j] == fs[j + 1]:
            out = fs[j]
    return out


@dataclass(frozen=True)
class Ceiling:
    """The governor's answer at one bar."""

    value: float
    drawdown: float
    source: str  # "none", "drawdown", "recovery" or "regime"
    message: str


@dataclass
class DrawdownGovernor:
    """Stateful over one run: call ``update`` once per bar, in time order."""

    settings: GovernorSettings = field(default_factory=GovernorSettings)
    _ceiling: float = 1.0
    _peak: float = 0.0
    _trough: float = float("inf")
    _last_drawdown: float = 0.0
    _last_value: float = 1.0

    def reset(self) -> None:
        self._ceiling, self._peak, self._trough, self._last_drawdown = 1.0, 0.0, float("inf"), 0.0
        self._last_value = 1.0

    def state(self) -> dict[str, float | None]:
        """What the next bar needs (JSON-ready; an unset trough is None)."""
        return {
            "ceiling": self._ceiling,
            "peak": self._peak,
            "trough": self._trough if isfinite(self._trough) else None,
            "last_drawdown": self._last_drawdown,
            "last_value": self._last_value,
        }

    def restore(self, state: dict[str, float | None]) -> None:
        """Continue from ``state()``."""
        self._ceiling = float(state["ceiling"])  # type: ignore[arg-type]
        self._peak = float(state["peak"])  # type: ignore[arg-type]
        trough = state["trough"]
        self._trough = float("inf") if trough is None else float(trough)
        self._last_drawdown = float(state["last_drawdown"])  # type: ignore[arg-type]
        self._last_value = float(state["last_value"])  # type: ignore[arg-type]

    def update(
        self, equity: float, high_vol_probability: float = 0.0, flow: float = 0.0
    ) -> Ceiling:
        """Advance one bar with the account's ``equity`` (quote) and the regime reading.

        ``flow`` is capital transferred in (> 0) or out (< 0) at this bar (quote): the peak
        and the trough move with it, so a transfer is never read as a gain or a drawdown.
        """
        s = self.settings
        if flow:
            self._peak = max(self._peak + flow, 0.0)
            if isfinite(self._trough):
                self._trough = max(self._trough + flow, 0.0)
        if not isfinite(equity) or equity <= 0:
            self._ceiling = 0.0
            return Ceiling(0.0, 1.0, "drawdown", "equity is gone: no exposure")
        self._peak = max(self._peak, equity)
        # The trough is the low of the current episode; it resets only once the ceiling
        # is fully restored, so a new equity high does not restart the recovery proof.
        if self._ceiling >= 1.0:
            self._trough = equity
        self._trough = min(self._trough, equity)
        drawdown = 1.0 - equity / self._peak
        target = s.schedule_ceiling(drawdown)
        deepening = drawdown > self._last_drawdown
        if target <= self._ceiling or deepening:
            # Down at once; never up while the drawdown deepens.
            new = min(target, self._ceiling) if deepening else target
            source = "drawdown" if new < 1 else "none"
        elif equity >= self._trough * (1 + s.recovery_confirm):
            new = min(target, self._ceiling + 1.0 / s.recovery_bars)
            source = "recovery" if new < target else ("drawdown" if new < 1 else "none")
        else:
            new = self._ceiling
            source = "recovery"
        self._ceiling = new
        self._last_drawdown = drawdown
        value, message = new, self._message(source, drawdown, new, target)
        if (
            isfinite(high_vol_probability)
            and high_vol_probability >= s.regime_threshold
            and s.regime_ceiling < value
        ):
            value = s.regime_ceiling
            source = "regime"
            message = (
                f"high-volatility regime (probability {high_vol_probability:.0%}): exposure capped at "
                f"{value:.0%} before any drawdown (drawdown {drawdown:.1%})"
            )
        if deepening and value > self._last_value:
            # A regime cap lifting on a falling day must not raise exposure into the fall.
            value = self._last_value
            message += "; held at the previous ceiling while the drawdown deepens"
        self._last_value = value
        return Ceiling(value, drawdown, source, message)

    @staticmethod
    def _message(source: str, drawdown: float, value: float, target: float) -> str:
        if source == "none":
            return f"drawdown {drawdown:.1%}: no ceiling"
        if source == "drawdown":
            return f"drawdown {drawdown:.1%} from the equity peak: exposure capped at {value:.0%}"
        return (
            f"recovering from a drawdown (now {drawdown:.1%}): exposure ceiling {value:.0%}, "
            f"rising gradually toward {target:.0%}"
        )
