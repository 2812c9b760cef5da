"""Sleeve subaccounts through the engine: strategies that simulate themselves on their own
clock (``strategy: market-making | copy | returns``), seen by the portfolio through their
equity at each bar's close.

``build_sleeves`` makes each sleeve of a portfolio file from its ``params`` and
simulates it once, at the subaccount's starting capital, over its whole data. Bars are
stamped with their open time, so the run's bar k closes at its open plus the bar's
length; the sleeve's equity is sampled at each close from its last point at or before it
(``trimtab.strategies.sleeve``: causal), and the engine applies the return between two
closes to the subaccount's equity of the bar before (``SleeveBars``): capital moved by
the allocator scales the sleeve linearly, up to its capacity. Its fills in a bar become
the subaccount's trade rows (scaled the same way), its other records (stops, kill
switches, unfollows) reasons of the decision at that bar's close, which also says what
the bar did: active (fills, return), no data for the bar (the sleeve holds cash), or
stopped by its guard.

A sleeve whose data is missing (no book and trade files where it looks, no leader feed)
holds cash for the whole run and a note says why; a bad parameter is a ``ConfigError``
naming ``subaccounts.NAME.params``. A run resumed from a store simulates the sleeve
again (it is deterministic) and refuses to continue when the simulation differs from the
recorded one's (its data changed): the decision state holds its digest.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trimtab.data.errors import DataError
from trimtab.data.panel import timeframe_seconds
from trimtab.domain.decisions import Assessment, Decision, Observation, Reason, json_ready
from trimtab.engine.backtest import SleeveBars
from trimtab.engine.portfolio_file import Portfolio, SubaccountSettings
from trimtab.guard.breakers import TradingState
from trimtab.guard.safety import SafetyLayer
from trimtab.policy.policies import NO_TELEMETRY, Telemetry
from trimtab.strategies.sleeve import SimulatedStrategy, SleeveRun, bar_closes, covered

#: What each kind's data is called in its reasons.
DATA_NAMES = {"market-making": "book data", "copy": "leader trades", "returns": "equity data"}
#: Record kinds counted per bar but not listed one by one in the decisions.
QUIET_KINDS = frozenset({"fill", "quote", "decision", "rejected", "start"})
#: A decision lists at most this many of the sleeve's own records (the rest counted).
MAX_LISTED = 20


@dataclass
class SleeveState:
    """One sleeve subaccount over a run: its simulation (None: no data, ``missing`` says
    why), its coverage, the market bars it covers (a boolean per row of the run's market)
    and the loop's ``SleeveBars`` over the run's bars, with each bar's records."""

    name: str
    kind: str
    capital: float
    data_name: str
    run: SleeveRun | None
    coverage: tuple[pd.Timestamp, pd.Timestamp] | None
    missing: str | None
    covered: np.ndarray
    bars: SleeveBars
    # Per run bar: {"counts": {kind: n}, "listed": [records], "return": r}.
    per_bar: list[dict[str, Any]] = field(default_factory=list)
    digest: str = ""

    @property
    def run_covered(self) -> int:
        return int(sum(1 for b in self.per_bar if b["covered"]))

    def coverage_text(self) -> str:
        if self.coverage is None:
            return f"no {self.data_name}" + (f" ({self.missing})" if self.missing else "")
        first, last = self.coverage
        return f"{self.data_name} from {first:%Y-%m-%d %H:%M:%S} to {last:%Y-%m-%d %H:%M:%S} UTC"

    def describe(self) -> dict[str, Any]:
        """For ``result.json``: what the sleeve is, what it covered, its own summary."""
        counts: dict[str, int] = {}
        for b in self.per_bar:
            for kind, n in b["counts"].items():
                counts[kind] = counts.get(kind, 0) + n
        run = self.run
        return json_ready(
            {
                "kind": self.kind,
                "simulated_capital": self.capital,
                "coverage": None
                if self.coverage is None
                else [self.coverage[0].isoformat(), self.coverage[1].isoformat()],
                "missing": self.missing,
                "bars_covered": self.run_covered,
                "bars": len(self.per_bar),
                "capacity_usdt": run.capacity if run is not None else None,
                "regimes": list(run.regimes) if run is not None else [],
                "records_in_run": counts,
                "summary": dict(run.summary) if run is not None else {},
            }
        )

    def note(self) -> str | None:
        """A line for the run's notes when the sleeve is idle on some bars."""
        n, active = len(self.per_bar), self.run_covered
        head = f"subaccount {self.name} ({self.kind})"
        if self.coverage is None:
            return f"{head}: {self.coverage_text()}; it holds cash for the whole run"
        if active == 0:
            return (
                f"{head}: {self.coverage_text()}, outside the run: it holds cash for the whole run"
            )
        if active < n:
            return f"{head}: active on {active} of {n} bars ({self.coverage_text()}); it holds cash on the others"
        return None


def sleeve_strategy(
    name: str, sub: SubaccountSettings, portfolio: Portfolio, data_dir: Path | None
) -> SimulatedStrategy:
    """The sleeve a subaccount's ``strategy`` and ``params`` name. ``data_dir``: the
    run's data folder (where book, trade and leader files are looked for)."""
    params = dict(sub.params or {})
    if sub.strategy == "returns":
        from trimtab.strategies.external import returns_from_settings

        return returns_from_settings(params, portfolio.folder)
    if sub.strategy == "market-making":
        from trimtab.data.ticks import find_tick_files
        from trimtab.strategies.market_making import (
            market_making_from_settings,
            market_making_params,
        )

        market_making_params(params)  # a bad value is an error even without data
        if params.get("book") is None and params.get("trades") is None:
            # Files found in the data folder, not named: none there is missing data (the
            # sleeve holds cash), not a mistake in the file.
            if data_dir is None or not find_tick_files(data_dir):
                where = f"in {data_dir} or its orderbook_samples/" if data_dir else "here"
                raise DataError(f"no order-book and trade files {where}")
        return market_making_from_settings(params, data_dir)
    if sub.strategy == "copy":
        from trimtab.strategies.copy import copy_from_settings

        leader = params.get("leader")
        if isinstance(leader, str) and leader.strip():
            path = portfolio.resolve(leader)
            if not path.exists():
                raise ValueError(f"params.leader: {path}: no such file or folder")
            params["leader"] = str(path)
        if data_dir is None:
            raise DataError("no market data folder for the copy's bars")
        return copy_from_settings(params, data_dir)
    raise ValueError(f"strategy {sub.strategy!r} is not a sleeve")


def build_sleeves(
    portfolio: Portfolio,
    market_index: pd.DatetimeIndex,
    timeframe: str,
    start_i: int,
    end_i: int,
    data_dir: Path | None,
    make: Callable[[str, SubaccountSettings], SimulatedStrategy] | None = None,
) -> dict[str, SleeveState]:
    """Every sleeve subaccount of ``portfolio`` built and simulated once (module
    docstring) over the run's bars ``market_index[start_i:end_i + 1]`` (open times).
    ``make``: the sleeve of a subaccount (default: ``sleeve_strategy``)."""
    out: dict[str, SleeveState] = {}
    bar = pd.Timedelta(seconds=timeframe_seconds(timeframe))
    problems: list[str] = []
    for name, sub in portfolio.settings.subaccounts.items():
        if not sub.is_sleeve:
            continue
        try:
            strategy = make(name, sub) if make else sleeve_strategy(name, sub, portfolio, data_dir)
        except (FileNotFoundError, DataError) as exc:
            if sub.strategy == "returns":  # a file the person named: a mistake to fix
                problems.append(_keyed(name, exc))
                continue
            out[name] = _state(name, sub, None, str(exc), market_index, bar, start_i, end_i)
            continue
        except ImportError as exc:
            problems.append(f"subaccounts.{name}.strategy: {sub.strategy} is not available ({exc})")
            continue
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(_keyed(name, exc))
            continue
        try:
            run = strategy.simulate(sub.capital)
            span = strategy.coverage()
        except (FileNotFoundError, DataError) as exc:
            out[name] = _state(name, sub, None, str(exc), market_index, bar, start_i, end_i)
            continue
        except ValueError as exc:
            problems.append(_keyed(name, exc))
            continue
        data_name = getattr(strategy, "data_name", None) or DATA_NAMES.get(sub.strategy, "data")
        state = _state(name, sub, run, None, market_index, bar, start_i, end_i, span)
        state.data_name = data_name
        out[name] = state
    if problems:
        raise portfolio.error(*problems)
    return out


def _keyed(name: str, exc: BaseException) -> str:
    """An error of a sleeve's constructor under its subaccount's key."""
    text = str(exc).strip() or type(exc).__name__
    if text.startswith("params"):
        return f"subaccounts.{name}.{text}"
    return f"subaccounts.{name}.params: {text}"


def _state(
    name: str,
    sub: SubaccountSettings,
    run: SleeveRun | None,
    missing: str | None,
    market_index: pd.DatetimeIndex,
    bar: pd.Timedelta,
    start_i: int,
    end_i: int,
    span: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> SleeveState:
    opens = market_index[start_i : end_i + 1]
    n = len(opens)
    closes = bar_closes(opens, bar)
    if run is not None and run.equity.empty:
        run, missing = None, missing or "the simulation made no equity point"
    if run is None:
        span = None
    elif span is None:
        span = (run.equity.index[0], run.equity.index[-1])
    if span is not None:
        span = (_utc(span[0]), _utc(span[1]))
    cover_all = covered(market_index, bar, span)
    cover = cover_all[start_i : end_i + 1]
    if run is None:
        equity = np.full(n, float(sub.capital))
        returns = np.zeros(n)
    else:
        equity = run.equity_at(closes).to_numpy(float)
        returns = np.zeros(n)
        with np.errstate(all="ignore"):
            returns[1:] = equity[1:] / equity[:-1] - 1.0
        returns = np.where(np.isfinite(returns), returns, 0.0)
    fills: list[list[tuple]] = [[] for _ in range(n)]
    per_bar: list[dict[str, Any]] = [
        {"counts": {}, "listed": [], "more": 0, "covered": bool(cover[k]), "return": returns[k]}
        for k in range(n)
    ]
    records = run.records if run is not None else []
    if records and n:
        stamps = pd.DatetimeIndex([_utc(r["ts"]) for r in records])
        # A record at or before bar k's close and after bar k-1's is bar k's; those up
        # to the first close, before the subaccount starts, and after the last are not.
        at = closes.searchsorted(stamps, side="left")
        for rec, k in zip(records, at, strict=True):
            if k <= 0 or k >= n:
                continue
            kind = str(rec.get("kind", "record"))
            entry = per_bar[k]
            entry["counts"][kind] = entry["counts"].get(kind, 0) + 1
            if kind == "fill":
                fills[k].append(_fill_row(name, rec))
            elif kind not in QUIET_KINDS:
                if len(entry["listed"]) < MAX_LISTED:
                    entry["listed"].append(rec)
                else:
                    entry["more"] += 1
    bars = SleeveBars(returns=returns, equity=equity, fills=fills)
    digest = hashlib.blake2b(digest_size=8)
    digest.update(np.ascontiguousarray(returns, dtype=float).tobytes())
    digest.update(repr([len(f) for f in fills]).encode())
    return SleeveState(
        name=name,
        kind=sub.strategy,
        capital=float(sub.capital),
        data_name=DATA_NAMES.get(sub.strategy, "data"),
        run=run,
        coverage=span,
        missing=missing,
        covered=cover_all,
        bars=bars,
        per_bar=per_bar,
        digest=digest.hexdigest(),
    )


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _fill_row(name: str, rec: Mapping[str, Any]) -> tuple:
    """A sleeve's fill record as ``SleeveBars`` takes it; a record lacking a field is
    the sleeve's bug, named."""
    try:
        quantity = float(rec.get("quantity", rec.get("qty")))  # type: ignore[arg-type]
        price = float(rec["price"])
        fee = float(rec.get("fee", 0.0))
        symbol, side = str(rec["symbol"]), str(rec["side"]).lower()
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"subaccount {name!r}: the sleeve's fill record {dict(rec)!r} lacks symbol, side, "
            f"quantity, price or fee ({exc})"
        ) from None
    return (_utc(rec["ts"]), symbol, side, abs(quantity), price, fee, str(rec.get("reason", "")))


class SleevePolicy:
    """The decision of a sleeve subaccount at each close: it holds (no bar position; its
    equity follows the simulation) and says what the bar did, with the sleeve's own
    records of the bar (stops, kill switches) as reasons. Its state is whether the
    sleeve runs over the next bar (its guard ACTIVE) and the simulation's digest."""

    def __init__(self, state: SleeveState, safety: SafetyLayer) -> None:
        self.sleeve = state
        self.safety = safety
        self.name = state.kind
        self._running = True

    def reset(self, symbols: tuple[str, ...], periods_per_year: float) -> None:
        self._running = True

    def telemetry(self) -> Telemetry:
        return NO_TELEMETRY

    def state(self) -> dict[str, Any]:
        return {"running": self._running, "digest": self.sleeve.digest}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("digest") != self.sleeve.digest:
            s = self.sleeve
            raise ValueError(
                f"subaccount {s.name!r} ({s.kind}): its simulation differs from the one this "
                "run recorded (its data or parameters changed since): the run cannot be "
                "resumed; record it under another --run-id"
            )
        self._running = bool(state.get("running", True))

    def decide(self, obs: Observation, assessment: Assessment) -> Decision:
        s = self.sleeve
        k = obs.step
        entry = s.per_bar[k]
        applied = k > 0 and self._running
        self._running = self.safety.trading_state is TradingState.ACTIVE
        reasons: list[Reason] = []
        equity = float(obs.portfolio.equity)
        r = float(entry["return"])
        if k == 0:
            reasons.append(
                Reason(
                    "sleeve_start",
                    f"{s.kind} starts at this close with {equity:,.2f} USDT "
                    f"(simulated once at {s.capital:,.0f}; {s.coverage_text()})",
                )
            )
        elif equity <= 0:
            reasons.append(
                Reason("sleeve_empty", "the subaccount has no equity left: the sleeve has stopped")
            )
        elif not applied:
            reasons.append(
                Reason(
                    "sleeve_stopped",
                    "the sleeve was stopped over this bar (its guard was not ACTIVE at the "
                    "close before): its book taken off at the mark, it held cash",
                )
            )
        elif not entry["covered"]:
            reasons.append(
                Reason(
                    "sleeve_no_data",
                    f"no {s.data_name} for this bar ({s.coverage_text()}): it holds cash",
                )
            )
        else:
            fills = int(entry["counts"].get("fill", 0))
            values = {"return": r, "fills": fills, "records": dict(entry["counts"])}
            message = (
                f"{s.kind}: {fills} fill{'s' if fills != 1 else ''} in the bar, return {r:+.4%}"
            )
            if r < -1.0:
                message += "; it lost more than its equity: the loss stops at its equity (isolated)"
            reasons.append(Reason("sleeve_active", message, values))
        for rec in entry["listed"]:
            kind = str(rec.get("kind", "record"))
            extra = {
                key: v.isoformat() if isinstance(v, pd.Timestamp) else v
                for key, v in rec.items()
                if key not in ("kind", "reason") and _plain(v)
            }
            reasons.append(Reason(f"sleeve_{kind}", str(rec.get("reason", kind)), extra))
        if entry["more"]:
            reasons.append(
                Reason("sleeve_more", f"and {entry['more']} more records of the sleeve in the bar")
            )
        if self._running is False:
            reasons.append(
                Reason(
                    "sleeve_stops",
                    f"guard {self.safety.trading_state}: the sleeve stops from the next bar "
                    "(cash until ACTIVE again)",
                )
            )
        return Decision.hold(*reasons)


def _plain(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int | bool | pd.Timestamp) or value is None


def sleeve_policies(states: Mapping[str, SleeveState]) -> dict[str, Callable[[SafetyLayer], Any]]:
    """The policy factory of each sleeve subaccount, for ``plan_subaccounts``."""
    return {
        name: (lambda safety, state=state: SleevePolicy(state, safety))
        for name, state in states.items()
    }


def data_folder(path: str | None, provenance: Mapping[str, Any]) -> Path | None:
    """The run's data folder: the data option's (its folder, for a file), else the one
    the data was discovered in (the synthetic sample's folder too)."""
    where = path or (provenance.get("location") or {}).get("path")
    if not where:
        return None
    p = Path(str(where)).expanduser()
    return p if p.is_dir() else p.parent
