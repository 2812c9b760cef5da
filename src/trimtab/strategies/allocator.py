"""The capital allocator: how much of the account each strategy's subaccount deserves.

At each allocation date (the first bar of every ``every`` period) it reads each
subaccount's own return stream up to that close (its equity, net of the transfers in and
out: these are out of sample by construction, the returns the strategy really made) and
sets a target share of the allocated subaccounts' total equity:

1. **risk parity** on the Ledoit-Wolf shrunk covariance of the streams over
   ``lookback`` bars (``trimtab.risk.construction``): each strategy the same risk;
2. tilted by the **shrunk risk-adjusted return**: the annualised Sharpe ratio of each
   stream, shrunk toward their mean in proportion to its sampling error (James-Stein),
   held within +-2 (``SHARPE_CAP``), times ``tilt`` in the exponent;
3. with a **drawdown penalty**: the stream's drawdown from its peak over the lookback,
   times ``drawdown_penalty`` in the exponent;
4. tilted by **regime fit**: the share of the regimes a strategy declares that the
   market is in now (the risk engine's filtered volatility regime, and trend or range by
   the efficiency ratio of the market index), times ``regime_tilt``;
5. bounded by ``min_share`` / ``max_share`` and **capped by capacity** (a strategy never
   gets more USDT than its declared capacity; the excess goes to the others).

Moves are asked for only when some share is more than ``band`` off its target
(``trimtab.policy.transfers.capital_moves``), as transfers that the transfer guard lets
through, cuts to free cash, or refuses: they obey every limit and mode like any other
transfer. A subaccount with fewer than ``min_history`` returns keeps its share, never
above its capacity nor cut below ``min_share`` by it (the excess goes to the others), and
its reason says how many it has.
A sleeve (a strategy simulated on its own clock, ``trimtab.strategies.sleeve``) declares
a fixed capacity in USDT and the bars its data covers: only those count as its history
(it holds cash elsewhere, whose zero returns say nothing of its edge), and its reason
names the data it lacks. Every
allocation is recorded (``records``) with each strategy's score, its parts, and why its
share rose or fell; each transfer's reason says the same in a line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from trimtab.data.calendar import starts_period
from trimtab.domain.transfers import TransferRequest
from trimtab.policy.transfers import CapitalRebalance, capital_moves
from trimtab.risk.construction import risk_parity_weights, shrunk_covariance
from trimtab.strategies.base import Capacity
from trimtab.strategies.parts import efficiency_ratio

#: The shrunk Sharpe ratio's tilt stops at this magnitude (annualised).
SHARPE_CAP = 2.0


class AllocatorSettings(BaseModel):
    """The ``allocator:`` section of a portfolio file. Shares are fractions of the
    allocated subaccounts' total equity; ``lookback`` and ``min_history`` are bars."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    every: Literal["weekly", "monthly", "quarterly"] = "monthly"
    subaccounts: tuple[str, ...] | None = None
    lookback: int = Field(365, ge=10)
    min_history: int = Field(60, ge=5)
    tilt: float = Field(1.0, ge=0, le=5)
    drawdown_penalty: float = Field(2.0, ge=0, le=20)
    regime_tilt: float = Field(0.3, ge=0, le=5)
    min_share: float = Field(0.05, ge=0, lt=1)
    max_share: float = Field(0.60, gt=0, le=1)
    band: float = Field(0.05, ge=0, lt=1)
    trend_window: int = Field(60, ge=5)

    @model_validator(mode="after")
    def _consistent(self) -> AllocatorSettings:
        if self.min_history > self.lookback:
            raise ValueError(
                f"min_history ({self.min_history}) must not exceed lookback ({self.lookback})"
            )
        if self.min_share > self.max_share:
            raise ValueError(
                f"min_share ({self.min_share}) must not exceed max_share ({self.max_share})"
            )
        return self


@dataclass(frozen=True)
class Sleeve:
    """One allocated subaccount as the allocator sees it: its strategy's declared
    regimes and capacity, and the symbols it may hold (a boolean bar x symbol array over
    the run's market; None: every listed symbol).

    A self-simulated strategy's subaccount also gives ``capacity_usdt`` (its capacity in
    USDT, instead of ``capacity``), ``covered`` (a boolean per bar of the run's market:
    its data covers the bar; only those bars count toward ``min_history``) and
    ``history_name`` (what those bars are, in its reason: "bars with book data"). Where
    its data did not cover the bar just closed its capacity is 0 (it holds cash)."""

    name: str
    regimes: tuple[str, ...] = ()
    capacity: Capacity = field(default_factory=lambda: Capacity(volume_share=None))
    members: np.ndarray | None = None
    capacity_usdt: float | None = None
    covered: np.ndarray | None = None
    history_name: str = "bars of returns"


@dataclass(frozen=True)
class MarketState:
    """What the allocator reads of the market (the run's arrays; only rows up to the
    allocation bar are read): quote volume per bar, listed assets, closes, the risk
    engine's high-volatility probability (NaN where none), bars per day."""

    index: pd.DatetimeIndex
    close: np.ndarray
    quote_volume: np.ndarray
    live: np.ndarray
    high_vol: np.ndarray
    bars_per_day: float


def shrunk_sharpe(returns: np.ndarray, periods_per_year: float) -> tuple[np.ndarray, np.ndarray]:
    """Annualised Sharpe ratios of the columns of ``returns`` and the same shrunk toward
    their mean by their sampling error (James-Stein: the share kept is the spread between
    strategies beyond what the error alone explains)."""
    n = returns.shape[0]
    mean = returns.mean(axis=0)
    sd = returns.std(axis=0, ddof=1)
    with np.errstate(all="ignore"):
        sharpe = np.where(sd > 0, mean / sd * math.sqrt(periods_per_year), 0.0)
    years = n / periods_per_year
    # Lo (2002): var(SR) ~ (1 + SR^2 / 2) / T, T in years for an annualised SR.
    err = (1.0 + 0.5 * sharpe**2 / periods_per_year) / max(years, 1e-9)
    if len(sharpe) < 2:
        return sharpe, sharpe * 0.0
    center = float(sharpe.mean())
    spread = float(sharpe.var(ddof=1))
    between = max(spread - float(err.mean()), 0.0)
    keep = between / (between + err) if between > 0 else np.zeros_like(err)
    return sharpe, center + keep * (sharpe - center)


def _bounded(raw: np.ndarray, low: float, high: np.ndarray) -> np.ndarray:
    """Shares ``clip(scale * raw, low, high_i)`` with the one ``scale`` that makes them
    sum to 1 (bisection: the sum rises with the scale). When even every ``high`` sums
    under 1 (capacity binds everywhere) the shares are the highs."""
    high = np.maximum(high, low)
    if float(high.sum()) <= 1.0:
        return high.copy()
    if low * len(raw) >= 1.0:
        return np.full(len(raw), 1.0 / len(raw))
    weight = np.maximum(raw, 0.0)
    if not weight.any():
        weight = np.ones(len(raw))
    lo, hi = 0.0, 1.0
    while float(np.clip(hi * weight, low, high).sum()) < 1.0:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if float(np.clip(mid * weight, low, high).sum()) < 1.0:
            lo = mid
        else:
            hi = mid
    shares = np.clip(hi * weight, low, high)
    return shares / shares.sum()


class Allocator:
    """Capital between strategy subaccounts (see the module docstring). The engine asks
    it, like any transfer source, at every bar's close (``requests``)."""

    def __init__(
        self,
        settings: AllocatorSettings,
        sleeves: Sequence[Sleeve],
        market: MarketState,
        periods_per_year: float = 365.0,
    ) -> None:
        if len(sleeves) < 2:
            raise ValueError("the allocator needs at least two subaccounts to allocate between")
        if settings.min_share * len(sleeves) > 1 + 1e-12:
            raise ValueError(
                f"min_share {settings.min_share} for {len(sleeves)} subaccounts is more than "
                "the whole"
            )
        self.settings = settings
        self.sleeves = tuple(sleeves)
        self.names = tuple(s.name for s in sleeves)
        self.market = market
        self.periods_per_year = periods_per_year
        self.records: list[dict[str, Any]] = []

    # --- the transfer source protocol --------------------------------------------------
    def requests(
        self,
        ts: pd.Timestamp,
        previous: pd.Timestamp | None,
        equity: Mapping[str, float],
        history: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> list[TransferRequest]:
        if previous is None or not starts_period(ts, previous, self.settings.every):
            return []
        if history is None:
            raise ValueError("the allocator needs each subaccount's equity history")
        if not any(len(history[n][0]) for n in self.names):
            return []  # the run's first bar: no return of anyone's yet
        record = self.allocate(ts, equity, history)
        self.records.append(record)
        if not record["moves"]:
            return []
        rule = CapitalRebalance(
            self.settings.every, record["targets"], self.settings.band, record["summary"]
        )
        out = capital_moves(ts, rule, {n: equity[n] for n in self.names})
        return [
            TransferRequest(
                r.timestamp, r.source, r.target, r.amount, r.reason, "allocator", r.allow_partial
            )
            for r in out
        ]

    def dates(self, index: pd.DatetimeIndex) -> int:
        """How many allocation records a run over ``index`` makes (its first bar has none)."""
        return sum(
            starts_period(index[k], index[k - 1], self.settings.every) for k in range(1, len(index))
        )

    def replay(
        self,
        index: pd.DatetimeIndex,
        equity: Mapping[str, np.ndarray],
        flows: Mapping[str, np.ndarray],
    ) -> list[dict[str, Any]]:
        """The allocation records of a finished run from its equity at each close (after
        transfers) and its transfers (in > 0), per subaccount: the records ``requests``
        made while it ran, for a run resumed from a store or read back from one, whose
        records were made in another process."""
        out = []
        for k in range(1, len(index)):
            if not starts_period(index[k], index[k - 1], self.settings.every):
                continue
            now = {n: float(equity[n][k] - flows[n][k]) for n in self.names}
            history = {n: (np.asarray(equity[n][:k]), np.asarray(flows[n][:k])) for n in self.names}
            out.append(self.allocate(index[k], now, history))
        return out

    # --- the allocation ----------------------------------------------------------------
    def stream(self, equity_now: float, history: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """A subaccount's returns per bar, net of transfers, up to this close: the bar's
        equity before its own transfer over the last close's after it."""
        equity, flows = history
        eq = np.append(np.asarray(equity, dtype=float), equity_now)
        fl = np.append(np.asarray(flows, dtype=float), 0.0)
        before = eq[1:] - fl[1:]
        with np.errstate(all="ignore"):
            r = before / eq[:-1] - 1.0
        return np.where(np.isfinite(r), r, 0.0)

    def regime_now(self, i: int) -> dict[str, Any]:
        """The regimes the market is in at bar ``i`` (only rows up to ``i`` read)."""
        m = self.market
        hv = float(m.high_vol[i]) if i < len(m.high_vol) else float("nan")
        live = m.live[i]
        window = self.settings.trend_window
        close = m.close[max(0, i - window) : i + 1][:, live]
        er = efficiency_ratio(close, window) if close.size else float("nan")
        active = set()
        if math.isfinite(hv):
            active.add("stressed" if hv >= 0.5 else "calm")
        if math.isfinite(er):
            if er >= 0.3:
                active.add("trending")
            elif er <= 0.15:
                active.add("ranging")
        return {"regimes": sorted(active), "high_vol": hv, "efficiency_ratio": er}

    def history(self, j: int, stream: np.ndarray, i: int) -> int:
        """Bars of history of subaccount ``j`` at bar ``i``: its stream's length, or for a
        sleeve the bars of it that its data covers."""
        covered = self.sleeves[j].covered
        if covered is None:
            return len(stream)
        return int(covered[max(0, i - len(stream) + 1) : i + 1].sum())

    def idle(self, sleeve: Sleeve, i: int) -> bool:
        """A sleeve whose data did not cover bar ``i`` (the bar just closed): it holds
        cash and cannot use capital, so its capacity is 0 there."""
        return sleeve.covered is not None and not bool(sleeve.covered[i])

    def capacity_usdt(self, sleeve: Sleeve, i: int) -> float:
        if self.idle(sleeve, i):
            return 0.0
        if sleeve.capacity_usdt is not None:
            return float(sleeve.capacity_usdt)
        m = self.market
        lo = max(0, i - sleeve.capacity.window + 1)
        members = m.live[i] if sleeve.members is None else (sleeve.members[i] & m.live[i])
        return sleeve.capacity.usdt(m.quote_volume[lo : i + 1], members, m.bars_per_day)

    def allocate(
        self,
        ts: pd.Timestamp,
        equity: Mapping[str, float],
        history: Mapping[str, tuple[np.ndarray, np.ndarray]],
    ) -> dict[str, Any]:
        """The allocation record at the close of ``ts``: target shares, each strategy's
        score and its parts, the reasons, and whether capital should move."""
        s = self.settings
        i = int(self.market.index.searchsorted(ts, side="right")) - 1
        names = self.names
        values = np.array([max(float(equity[n]), 0.0) for n in names])
        total = float(values.sum())
        current = values / total if total > 0 else np.full(len(names), 1.0 / len(names))
        streams = [self.stream(equity[n], history[n]) for n in names]
        lengths = np.array([self.history(j, r, i) for j, r in enumerate(streams)])
        ready = lengths >= s.min_history
        regime = self.regime_now(i)
        base = {
            "timestamp": ts.isoformat(),
            "regime": regime,
            "current": dict(zip(names, current.round(6).tolist(), strict=True)),
        }
        if ready.sum() < 2 or total <= 0:
            why = f"fewer than two subaccounts with {s.min_history} bars of returns"
            return {
                **base,
                "targets": dict(zip(names, current.tolist(), strict=True)),
                "moves": False,
                "summary": f"allocator: holds ({why})",
                "strategies": {},
            }
        idx = np.flatnonzero(ready)
        n_obs = int(min(lengths[idx].min(), s.lookback))
        r = np.column_stack([streams[j][-n_obs:] for j in idx])
        # A stream that did not move (a strategy holding only cash) has no risk to
        # balance: risk parity would hand it everything. It gets the smallest share.
        vol = r.std(axis=0, ddof=1) * math.sqrt(self.periods_per_year)
        idle = vol < 1e-4
        rp = np.zeros(len(idx))
        if (~idle).sum() >= 2:
            cov = shrunk_covariance(r[:, ~idle])
            rp[~idle] = risk_parity_weights(cov + np.eye(int((~idle).sum())) * 1e-12)
        elif (~idle).sum() == 1:
            rp[~idle] = 1.0
        sharpe, shrunk = shrunk_sharpe(r, self.periods_per_year)
        wealth = np.cumprod(1.0 + r, axis=0)
        drawdown = 1.0 - wealth[-1] / np.maximum.accumulate(wealth, axis=0).max(axis=0)
        active = set(regime["regimes"])
        fit = np.array(
            [
                len(active & set(self.sleeves[j].regimes)) / len(self.sleeves[j].regimes)
                if self.sleeves[j].regimes
                else 0.5
                for j in idx
            ]
        )
        # A Sharpe ratio beyond +-SHARPE_CAP is rarely what a strategy will earn (a
        # near-riskless stream's is mostly the absence of measured risk): the tilt stops
        # there, so risk parity, not an extreme ratio, sizes such a stream.
        tilted = np.clip(shrunk, -SHARPE_CAP, SHARPE_CAP)
        log_score = (
            np.log(np.maximum(rp, 1e-12))
            + s.tilt * tilted
            - s.drawdown_penalty * drawdown
            + s.regime_tilt * (fit - fit.mean())
        )
        raw = np.exp(log_score - log_score.max())
        # The ready ones share what they hold between them; the others keep theirs, but
        # not more than their capacity (nor less than min_share): the excess joins the
        # ready ones' pool.
        kept = current.copy()
        for j in np.flatnonzero(~ready):
            room = max(self.capacity_usdt(self.sleeves[j], i), 0.0) / total
            kept[j] = min(current[j], max(room, s.min_share))
        pool = float(current[idx].sum() + (current - kept)[~ready].sum())
        capacity = np.array([self.capacity_usdt(self.sleeves[j], i) for j in idx])
        caps = np.array(
            [
                min(s.max_share, capacity[k] / total) / pool if pool > 0 else s.max_share
                for k in range(len(idx))
            ]
        )
        caps = np.maximum(caps, 0.0)
        low = min(s.min_share / pool if pool > 0 else s.min_share, 1.0 / len(idx))
        inner = _bounded(raw, low, np.maximum(caps, low))
        targets = kept.copy()
        targets[idx] = inner * pool
        gap = float(np.abs(targets - current).max())
        parts: dict[str, Any] = {}
        lines = []
        for k, j in enumerate(idx):
            name = names[j]
            change = targets[j] - current[j]
            terms = {
                "risk parity": float(np.log(max(rp[k], 1e-12)) - np.log(1.0 / len(idx))),
                "risk-adjusted return": float(s.tilt * (tilted[k] - tilted.mean())),
                "drawdown": float(-s.drawdown_penalty * (drawdown[k] - drawdown.mean())),
                "regime fit": float(s.regime_tilt * (fit[k] - fit.mean())),
            }
            capped = inner[k] >= caps[k] - 1e-12 and caps[k] < s.max_share / max(pool, 1e-12)
            sign = float(np.sign(change))
            driver = max(terms, key=lambda t, sign=sign: sign * terms[t])
            direction = "rose" if change > 0 else "fell" if change < 0 else "held"
            why = "capped by capacity" if capped and change <= 0 else f"mostly {driver}"
            if self.idle(self.sleeves[j], i):
                why += f" (no {self.sleeves[j].history_name} at this bar: capacity 0)"
            parts[name] = {
                "share_before": float(current[j]),
                "share_target": float(targets[j]),
                "score": float(raw[k] / raw.sum()),
                "risk_parity": float(rp[k]),
                "sharpe": float(sharpe[k]),
                "sharpe_shrunk": float(shrunk[k]),
                "drawdown": float(drawdown[k]),
                "regime_fit": float(fit[k]),
                "capacity_usdt": float(capacity[k]),
                "terms": terms,
                "why": f"{direction}: {why}",
            }
            lines.append(
                f"{name} {current[j]:.0%}->{targets[j]:.0%} (Sharpe {shrunk[k]:.2f} shrunk, "
                f"drawdown {drawdown[k]:.0%}, regime fit {fit[k]:.0%}; {direction}: {why})"
            )
        for j in np.flatnonzero(~ready):
            sleeve = self.sleeves[j]
            why = f"held: {int(lengths[j])} of {s.min_history} {sleeve.history_name}"
            if kept[j] < current[j] and self.idle(sleeve, i):
                why += "; none at this bar, where it holds cash: cut toward capacity 0"
            elif kept[j] < current[j]:
                why += f"; cut to its capacity ({self.capacity_usdt(sleeve, i):,.0f} USDT)"
            parts[names[j]] = {
                "share_before": float(current[j]),
                "share_target": float(kept[j]),
                "why": why,
            }
            if sleeve.covered is not None or kept[j] < current[j]:
                lines.append(f"{names[j]} {current[j]:.0%}->{kept[j]:.0%} ({why})")
        moves = gap > s.band
        summary = f"allocator ({', '.join(regime['regimes']) or 'no regime'}): " + "; ".join(lines)
        if not moves:
            summary += f"; no move: every share within {s.band:.0%} of its target"
        return {
            **base,
            "targets": dict(zip(names, targets.tolist(), strict=True)),
            "moves": bool(moves),
            "summary": summary,
            "observations": n_obs,
            "strategies": parts,
        }
