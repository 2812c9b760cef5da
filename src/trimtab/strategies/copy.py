"""Copy trading: follow a leader's trades, scaled, after a delay, within per-leader limits.

The leader's trades come from a ``LeaderFeed`` (``trimtab.data.leader_feed``: a CSV of
trades or positions, another trimtab run, or a live account through ccxt). The copy is a
spot book in its own subaccount, simulated on the market's bars (``CopyStrategy``,
a ``SimulatedStrategy`` of ``trimtab.strategies.sleeve``).

**Timing (no lookahead).** A leader trade at ``t`` is acted on at ``t + delay``, never
before: the copy order's size is decided then, from what is known then (the copy's cash
and holdings, its equity as marked at the last bar close at or before ``t + delay``, the
leader's equity last known at or before ``t + delay``). It fills at the **open of the
first bar of its symbol opening at or after** ``t + delay`` (bars are stamped with their
open time): a conservative rule, since bars give no price inside a bar, and the first
price seen after the order exists is that open. The fill price is that open moved
against the copy by ``half_spread_bps + slippage_bps``; the fee is ``fee_bps`` of the
notional, in USDT. Bars: the finest the data has for every symbol over the feed's span
(the hourly files of ``../shared/data`` for BTC, ETH, BNB, ADA to 2021-06), else daily
(``CopyStrategy.market()`` says which, and why; ``bar_seconds`` in the summary).

**Size.** ``equity_ratio``: ``fraction x follower equity / leader equity x leader
quantity`` (base units); ``fixed_fraction``: ``fraction x leader quantity`` (sells:
see below). Then the
limits, checked at the decision price (the leader's price; the last known close when the
feed has none), each clip recorded with its reason:

* ``symbols``: a symbol not allowed is skipped (``symbol_not_allowed``);
* ``max_trade_notional`` (USDT): the quantity clipped to it (``trade_notional``);
* buys: gross notional held after the trade at most ``max_total_notional`` (USDT,
  ``total_notional``) and ``max_leverage x equity`` (``leverage``); at ``max_leverage``
  1 or less, also no more than the cash pays for, fee included (``cash``);
* sells: with ``sells: proportional`` (the default) the copy sells the share of its own
  holding that the leader sold of its holding (known from the feed's trades up to then;
  a feed is taken to start flat), so a copy kept smaller by a limit still follows the
  leader out in step; ``scaled``, or a leader sell larger than its known holding, sells
  the scaled quantity; never more than the copy holds (spot, no shorts: ``holdings``);
* a copy below ``min_notional`` USDT is skipped (``below_min_notional``, or the clip that
  left nothing: ``leverage``, ``cash``, ``nothing_held``...).

**Stop.** With ``stop_drawdown`` set, the copy unfollows the leader when the leader's
equity (from the feed, or rebuilt from ``leader_equity`` and its trades marked at the
closes) falls ``stop_drawdown`` below its peak since following began (``stop_on:
leader``), or when the copy's own equity does (``copy``); ``auto`` uses the leader's
equity when there is one. The stop is recorded at the time it was known with the
drawdown, the peak and the level; later leader trades are skipped (``unfollowed``);
with ``on_stop: close`` the holdings are sold at the first bar open after the stop
(fills with reason ``unfollow``).

**Records.** Every fill names the leader trade it copies (``leader_trade_id``,
``leader_ts``, the leader's side, quantity and price) and the delay's cost:
``slippage_bps`` = side x (fill price / leader price - 1) x 10,000 (positive: the copy
paid more than the leader on a buy, got less on a sell), split into ``market_bps`` (the
market's move from the leader's price to the fill bar's open) and ``cost_bps`` (the
modelled spread and slippage, in bps of the leader's price: the two add up to
``slippage_bps``); ``slippage_usdt`` = side x (fill - leader price) x copy
quantity.

**Capacity** (USDT): with ``equity_ratio`` the copy's trade grows with its capital; it
is capped at ``volume_share`` of its symbol's median daily quote volume, so capacity is
the capital at which the leader's 90th-percentile trade (as a share of its equity,
times ``fraction``) reaches that, on the symbol where it binds first. With
``fixed_fraction`` the trades do not grow with capital: capacity is the peak gross
notional the copy held divided by ``max_leverage`` (more capital sits idle).

**Tracking**: daily (00:00 UTC) returns of the copy against the leader's equity last
known at the same instants; tracking error annualised with 365 days. A feed whose equity
is known only at its trades (an ``equity`` column) makes the leader's returns lumpy;
``leader_equity`` rebuilds a path marked at every close instead.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trimtab.data.errors import DataError
from trimtab.data.leader_feed import LeaderFeed, read_leader_csv, read_leader_run
from trimtab.data.panel import Panel, timeframe_seconds, to_utc
from trimtab.data.readers import load_panel
from trimtab.strategies.base import REGIMES
from trimtab.strategies.sleeve import SleeveRun

KIND = "copy"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\s*$", re.I)
_UNIT = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
#: The leader trade share of equity whose copy sets the capacity (a high quantile: the
#: big trades are the ones the market must absorb).
CAPACITY_QUANTILE = 0.9


def parse_delay(value: Any) -> float:
    """Seconds from a number (seconds) or text: ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError("delay must be seconds or text such as 30s, 5m, 1h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if m is None:
            raise ValueError(f"delay {value!r}: use seconds or text such as 30s, 5m, 1h, 1d")
        seconds = float(m.group(1)) * _UNIT[m.group(2).lower() if m.group(2) else None]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"delay must be >= 0 seconds, got {value!r}")
    return seconds


class CopyLimits(BaseModel):
    """Per-leader limits (module docstring). Notionals in USDT; leverage as gross
    notional over equity; ``symbols`` None: every symbol of the feed."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    max_trade_notional: float | None = Field(None, gt=0)
    max_total_notional: float | None = Field(None, gt=0)
    max_leverage: float = Field(1.0, gt=0, le=20)
    symbols: tuple[str, ...] | None = None
    min_notional: float = Field(5.0, ge=0)

    @field_validator("symbols")
    @classmethod
    def _upper(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return None
        out = tuple(s.strip().upper().replace("/", "") for s in v if s.strip())
        if not out:
            raise ValueError("symbols is empty (leave it out to allow every symbol)")
        return out


class CopyParams(BaseModel):
    """Settings of a copy subaccount (module docstring); units: bps, USDT, seconds,
    fractions."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    leader: str | None = None
    leader_kind: Literal["auto", "trades", "positions", "run"] = "auto"
    subaccount: str | None = None
    leader_equity: float | None = Field(None, gt=0)
    scaling: Literal["equity_ratio", "fixed_fraction"] = "equity_ratio"
    fraction: float = Field(1.0, gt=0, le=100)
    sells: Literal["proportional", "scaled"] = "proportional"
    delay: float = 300.0
    timeframe: Literal["auto", "1h", "1d"] = "auto"
    half_spread_bps: float = Field(2.0, ge=0, le=500)
    slippage_bps: float = Field(3.0, ge=0, le=500)
    fee_bps: float = Field(10.0, ge=0, le=500)
    limits: CopyLimits = CopyLimits()
    stop_drawdown: float | None = Field(0.3, gt=0, lt=1)
    stop_on: Literal["auto", "leader", "copy"] = "auto"
    on_stop: Literal["close", "keep"] = "close"
    volume_share: float = Field(0.01, gt=0, le=1)
    start: str | None = None
    end: str | None = None
    regimes: tuple[str, ...] = ()

    @field_validator("delay", mode="before")
    @classmethod
    def _delay(cls, v: Any) -> float:
        return parse_delay(v)

    @field_validator("regimes")
    @classmethod
    def _regimes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [r for r in v if r not in REGIMES]
        if bad:
            raise ValueError(f"unknown regime {bad[0]!r}; choose among {', '.join(REGIMES)}")
        return v


def validation_message(exc: ValidationError, what: str = "copy") -> str:
    """One line per bad key: ``copy: limits.max_leverage: Input should be ...``."""
    parts = []
    for e in exc.errors():
        key = ".".join(str(x) for x in e["loc"]) or "(settings)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{key}: {msg}")
    return f"{what}: " + "; ".join(parts)


def copy_params(params: dict[str, Any]) -> CopyParams:
    """Validated settings; a ``ValueError`` naming every bad or unknown key."""
    try:
        return CopyParams.model_validate(dict(params))
    except ValidationError as exc:
        raise ValueError(validation_message(exc)) from None


def read_feed(p: CopyParams) -> LeaderFeed:
    """The leader feed ``p.leader`` names: a run folder, or a CSV of trades/positions."""
    if p.leader is None:
        raise ValueError("copy: leader: missing (a CSV of trades or positions, or a run folder)")
    path = Path(p.leader).expanduser()
    if p.leader_kind == "run" or (p.leader_kind == "auto" and path.is_dir()):
        return read_leader_run(path, p.subaccount)
    if not path.exists():
        raise DataError(f"copy: leader: {path}: no such file or folder")
    kind = None if p.leader_kind in ("auto", "run") else p.leader_kind
    return read_leader_csv(path, kind)  # type: ignore[arg-type]


def copy_from_settings(params: dict[str, Any], data_dir: str | Path) -> CopyStrategy:
    """A copy subaccount from its settings (``CopyParams`` keys) over the bars in
    ``data_dir``; the leader feed is read now, the bars at the first simulation."""
    p = copy_params(params)
    return CopyStrategy(p, read_feed(p), data_dir)


# --- one copy decision -------------------------------------------------------------------


@dataclass(frozen=True)
class CopyPlan:
    """What the copier sends for one leader trade: ``quantity`` (base, > 0) or a
    ``skip`` reason; ``clipped``: the limits that cut it, each with its numbers."""

    quantity: float
    wanted: float
    skip: str | None = None
    clipped: tuple[dict[str, Any], ...] = ()


def plan_copy(
    side: str,
    wanted: float,
    price: float,
    *,
    held: float,
    cash: float,
    equity: float,
    gross: float,
    limits: CopyLimits,
    fill_cost: float,
    fee_rate: float,
) -> CopyPlan:
    """Clip a wanted copy quantity (base units, > 0) by ``limits`` at ``price`` (USDT),
    given the copy's ``held`` quantity of the symbol, its ``cash``, ``equity`` and
    ``gross`` notional (USDT, at the decision's marks); ``fill_cost`` and ``fee_rate``
    (fractions) bound a buy by its cash. Pure: the simulator and a live copier both
    call it."""
    q = wanted
    clipped: list[dict[str, Any]] = []

    def clip(code: str, to: float, **values: float) -> None:
        nonlocal q
        if to < q:
            clipped.append({"code": code, "from": q, "to": max(to, 0.0), **values})
            q = max(to, 0.0)

    if limits.max_trade_notional is not None:
        clip("trade_notional", limits.max_trade_notional / price, limit=limits.max_trade_notional)
    if side == "buy":
        room = limits.max_leverage * equity - gross
        cap_total = (
            limits.max_total_notional - gross if limits.max_total_notional is not None else math.inf
        )
        if cap_total <= room:
            clip("total_notional", cap_total / price, limit=float(limits.max_total_notional or 0))
        clip("leverage", room / price, limit=limits.max_leverage, equity=equity, gross=gross)
        if limits.max_leverage <= 1.0:
            clip("cash", cash / (price * (1 + fill_cost) * (1 + fee_rate)), cash=cash)
    else:
        clip("holdings" if held > 0 else "nothing_held", held, held=held)
    skip = None
    if q * price < max(limits.min_notional, 1e-9):
        skip = clipped[-1]["code"] if clipped and q * price < 1e-9 else "below_min_notional"
        q = 0.0
    return CopyPlan(q, wanted, skip, tuple(clipped))


# --- the simulated copy --------------------------------------------------------------------


@dataclass
class _Market:
    panel: Panel
    timeframe: str
    why: str
    open: np.ndarray = field(repr=False)
    close: np.ndarray = field(repr=False)  # forward-filled past a delisting
    has: np.ndarray = field(repr=False)
    col: dict[str, int] = field(repr=False)
    real: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    closes: pd.DatetimeIndex | None = field(default=None, repr=False)  # bar open + bar

    def __post_init__(self) -> None:
        self.closes = self.panel.index + pd.Timedelta(seconds=timeframe_seconds(self.timeframe))


class CopyStrategy:
    """A copy subaccount (module docstring): ``simulate(capital)`` -> ``SleeveRun``."""

    kind = KIND

    def __init__(
        self,
        params: CopyParams,
        feed: LeaderFeed,
        data_dir: str | Path | None = None,
        *,
        panel: Panel | None = None,
    ) -> None:
        if data_dir is None and panel is None:
            raise ValueError("copy: give the market data (a data folder or a panel)")
        if feed.trades.empty:
            raise DataError(f"leader feed {feed.source}: no trades to copy")
        self.params = params
        self.feed = feed
        self.data_dir = data_dir
        self._panel = panel
        self._market: _Market | None = None

    # --- market data ------------------------------------------------------------------
    def _span(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        p = self.params
        ts = self.feed.trades["timestamp"]
        start = to_utc(p.start, what="start") if p.start else ts.iloc[0]
        last = ts.iloc[-1] + pd.Timedelta(seconds=p.delay)
        if self.feed.equity is not None and len(self.feed.equity):
            last = max(last, self.feed.equity.index[-1])
        end = to_utc(p.end, what="end") if p.end else last
        if end <= start:
            raise ValueError(f"copy: end {end} is not after start {start}")
        return start, end

    def market(self) -> _Market:
        if self._market is None:
            self._market = self._load_market()
        return self._market

    def _load_market(self) -> _Market:
        p = self.params
        wanted = self.feed.symbols
        if p.limits.symbols is not None:
            wanted = [s for s in wanted if s in p.limits.symbols]
        if not wanted:
            raise ValueError(
                f"copy: none of the leader's symbols ({', '.join(self.feed.symbols)}) is in "
                f"limits.symbols ({', '.join(p.limits.symbols or ())})"
            )
        start, end = self._span()
        lo, hi = start.floor("D") - pd.Timedelta(days=2), end.ceil("D") + pd.Timedelta(days=2)
        if self._panel is not None:
            panel, why = self._panel.slice(lo, hi), "bars given"
        else:
            panel, why = self._load_bars(wanted, lo, hi, end)
        tf = pd.Timedelta(seconds=timeframe_seconds(panel.timeframe))
        if panel.index[-1] + tf < end:
            why += f"; the bars end at {panel.index[-1] + tf}, before the copy's end {end}"
        cols = [s for s in wanted if s in panel.symbols]
        if not cols:
            raise DataError(
                f"copy: no market data for the leader's symbols {', '.join(wanted)} in "
                f"{self.data_dir} ({panel.timeframe} bars have {', '.join(panel.symbols)})"
            )
        panel = panel.select(cols)
        close = panel.close.ffill().to_numpy(dtype=float)
        return _Market(
            panel,
            panel.timeframe,
            why,
            panel.open.to_numpy(dtype=float),
            close,
            panel.has_bar.to_numpy(dtype=bool),
            {s: j for j, s in enumerate(cols)},
        )

    def _load_bars(
        self, wanted: list[str], lo: pd.Timestamp, hi: pd.Timestamp, end: pd.Timestamp
    ) -> tuple[Panel, str]:
        p = self.params
        src = self.data_dir
        assert src is not None
        tried = ""
        if p.timeframe in ("auto", "1h"):
            try:
                panel = load_panel(
                    src, timeframe="1h", symbols=wanted, start=lo, end=hi, cache=True
                )
                if panel.index[-1] + pd.Timedelta(hours=1) >= end or p.timeframe == "1h":
                    return panel, "hourly bars cover every symbol over the feed's span"
                tried = f"hourly bars end at {panel.index[-1]}, before {end}"
            except DataError as exc:
                if p.timeframe == "1h":
                    raise
                tried = f"no hourly bars for all of {', '.join(wanted)} ({exc})"
        try:
            panel = load_panel(src, timeframe="1d", symbols=wanted, start=lo, end=hi, cache=True)
        except DataError:
            panel = load_panel(src, timeframe="1d", start=lo, end=hi, cache=True)
        why = "daily bars" + (f": {tried}" if tried else " (as asked)")
        return panel, why

    def fill_bar(self, symbol: str, act: pd.Timestamp) -> int | None:
        """The bar a copy decided at ``act`` fills in: the first real bar of ``symbol``
        opening at or after ``act`` (None: none in the data)."""
        m = self.market()
        j = m.col.get(symbol)
        if j is None:
            return None
        real = m.real.get(symbol)
        if real is None:
            real = m.real[symbol] = np.flatnonzero(m.has[:, j])
        pos = int(m.panel.index[real].searchsorted(act, side="left"))
        return int(real[pos]) if pos < len(real) else None

    def bounds(self) -> tuple[int, int]:
        """The first and last bar simulated: from the bar holding the start to the last
        bar closing by the end; without an ``end`` setting, at least to the bar the last
        leader trade's copy fills in."""
        m = self.market()
        start, end = self._span()
        idx = m.panel.index
        tf = pd.Timedelta(seconds=timeframe_seconds(m.timeframe))
        i0 = max(int(idx.searchsorted(start, side="right")) - 1, 0)
        i1 = max(int((idx + tf).searchsorted(end, side="right")) - 1, i0)
        if self.params.end is None:
            delay = pd.Timedelta(seconds=self.params.delay)
            for r in self.feed.trades.itertuples(index=False):
                k = self.fill_bar(r.symbol, r.timestamp + delay)
                if k is not None:
                    i1 = max(i1, k)
        return i0, i1

    def coverage(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        """From the open of the first bar simulated to the close of the last (UTC)."""
        m = self.market()
        i0, i1 = self.bounds()
        tf = pd.Timedelta(seconds=timeframe_seconds(m.timeframe))
        return m.panel.index[i0], m.panel.index[i1] + tf

    # --- the leader's equity ------------------------------------------------------------
    def leader_equity(self, start: pd.Timestamp) -> pd.Series | None:
        """The leader's equity by the time each value is known: rebuilt from
        ``leader_equity`` and its trades marked at the closes when given, else the feed's."""
        p = self.params
        if p.leader_equity is None:
            return self.feed.equity
        m = self.market()
        idx = m.panel.index
        tf = pd.Timedelta(seconds=timeframe_seconds(m.timeframe))
        closes = idx + tf
        t = self.feed.trades
        n, k = len(idx), len(m.col)
        dpos = np.zeros((n + 1, k))
        dcash = np.zeros(n + 1)
        for r in t.itertuples(index=False):
            j = m.col.get(r.symbol)
            if j is None or r.timestamp < start:
                continue
            price = r.price if math.isfinite(r.price) else self._last_close(r.symbol, r.timestamp)
            if not math.isfinite(price):
                continue
            c = int(closes.searchsorted(r.timestamp, side="left"))  # first close at/after it
            sign = 1.0 if r.side == "buy" else -1.0
            dpos[c, j] += sign * r.quantity
            dcash[c] -= sign * r.quantity * price + r.fee
        pos = np.cumsum(dpos[:n], axis=0)
        cash = p.leader_equity + np.cumsum(dcash[:n])
        value = cash + np.nansum(pos * np.nan_to_num(m.close), axis=1)
        i0 = max(int(idx.searchsorted(start, side="right")) - 1, 0)
        series = pd.Series(value[i0:], index=closes[i0:])
        first = pd.Series([p.leader_equity], index=[idx[i0]])
        return pd.concat([first, series])

    def _last_close(self, symbol: str, t: pd.Timestamp) -> float:
        """The close of the last bar of ``symbol`` that closed at or before ``t``."""
        m = self.market()
        j = m.col.get(symbol)
        if j is None:
            return math.nan
        i = int(m.closes.searchsorted(t, side="right")) - 1
        return float(m.close[i, j]) if i >= 0 else math.nan

    # --- the simulation -----------------------------------------------------------------
    def simulate(self, capital: float) -> SleeveRun:
        """Copy the feed with ``capital`` USDT (module docstring for every rule)."""
        if not (math.isfinite(capital) and capital > 0):
            raise ValueError(f"copy: capital must be > 0 USDT, got {capital!r}")
        return _Simulation(self, float(capital)).run()


def _mark_row(m: _Market, i: int, fallback: np.ndarray) -> np.ndarray:
    row = m.close[i] if i >= 0 else np.full(len(m.col), np.nan)
    return np.where(np.isfinite(row), row, fallback)


class _Simulation:
    """One pass over the bars (``CopyStrategy.simulate``)."""

    def __init__(self, strat: CopyStrategy, capital: float) -> None:
        self.s = strat
        self.p = strat.params
        self.m = strat.market()
        self.capital = capital
        self.tf = pd.Timedelta(seconds=timeframe_seconds(self.m.timeframe))
        self.idx = self.m.panel.index
        k = len(self.m.col)
        self.pos = np.zeros(k)
        self.last_fill = np.full(k, np.nan)
        self.cash = capital
        self.records: list[dict[str, Any]] = []
        self.fills: list[dict[str, Any]] = []
        self.skips: dict[str, int] = {}
        self.stop_time: pd.Timestamp | None = None
        self.stop_reason = ""
        self.cost = (self.p.half_spread_bps + self.p.slippage_bps) / 1e4
        self.fee_rate = self.p.fee_bps / 1e4
        self.peak_gross = 0.0
        self.eq_times: list[pd.Timestamp] = []
        self.eq_values: list[float] = []

    def _skip(self, r: Any, at: pd.Timestamp, code: str, **extra: Any) -> None:
        self.skips[code] = self.skips.get(code, 0) + 1
        self.records.append(
            {
                "ts": at,
                "kind": "skip",
                "reason": code,
                "symbol": r.symbol,
                "side": r.side,
                "leader_trade_id": r.trade_id,
                "leader_ts": r.timestamp,
                "leader_quantity": float(r.quantity),
                "leader_price": float(r.price),
                **extra,
            }
        )

    def run(self) -> SleeveRun:
        s, p, m = self.s, self.p, self.m
        start, end = s._span()
        idx, tf = self.idx, self.tf
        closes = idx + tf
        i0, i1 = s.bounds()
        leader_eq = s.leader_equity(start)
        stop_on = p.stop_on
        if stop_on == "auto":
            stop_on = "leader" if leader_eq is not None and len(leader_eq) else "copy"
        if stop_on == "leader" and p.stop_drawdown is not None and leader_eq is None:
            raise ValueError(
                "copy: stop_on leader needs the leader's equity: a feed with equity "
                "(a run, an equity column) or leader_equity (USDT)"
            )
        if p.scaling == "equity_ratio" and leader_eq is None:
            raise ValueError(
                "copy: scaling equity_ratio needs the leader's equity: give leader_equity "
                "(USDT) or a feed with equity (a run folder, an equity column); or use "
                "scaling: fixed_fraction"
            )
        delay = pd.Timedelta(seconds=p.delay)
        # Each leader trade's bar: the first real bar of its symbol opening at/after t+delay.
        buckets: dict[int, list[tuple[pd.Timestamp, int, Any]]] = {}
        trades = s.feed.trades
        # The leader's holding of each symbol before each of its trades, from all its
        # trades up to then (a feed is taken to start flat): proportional sells.
        held: dict[str, float] = {}
        self.leader_before: dict[str, float] = {}
        for r in trades.itertuples(index=False):
            before = held.get(r.symbol, 0.0)
            self.leader_before[r.trade_id] = before
            held[r.symbol] = before + (r.quantity if r.side == "buy" else -r.quantity)
        trades = trades[(trades["timestamp"] >= start) & (trades["timestamp"] <= end)]
        for n, r in enumerate(trades.itertuples(index=False)):
            act = r.timestamp + delay
            j = m.col.get(r.symbol)
            if p.limits.symbols is not None and r.symbol not in p.limits.symbols:
                self._skip(r, act, "symbol_not_allowed")
                continue
            if j is None:
                self._skip(r, act, "no_market_data")
                continue
            k = s.fill_bar(r.symbol, act)
            if k is None or k > i1:
                self._skip(r, act, "after_end")
                continue
            buckets.setdefault(k, []).append((act, n, r))
        leader_stop = None
        if stop_on == "leader" and p.stop_drawdown is not None and leader_eq is not None:
            leader_stop = self._leader_stop(leader_eq, start)
        if leader_stop is not None:
            self.stop_time, self.stop_reason = leader_stop[0], "leader_drawdown"
            self.records.append(leader_stop[1])
        self.eq_times = eq_times = [idx[i0]]
        self.eq_values = eq_values = [self.capital]
        peak = self.capital
        closed = False
        for i in range(i0, i1 + 1):
            t_open = idx[i]
            for act, _, r in sorted(buckets.get(i, []), key=lambda x: (x[0], x[1])):
                if self.stop_time is not None and act >= self.stop_time:
                    self._skip(r, act, "unfollowed", stopped_at=self.stop_time)
                    continue
                self._copy(r, act, i, leader_eq)
            if (
                p.on_stop == "close"
                and not closed
                and self.stop_time is not None
                and self.stop_time <= t_open
            ):
                closed = self._close_all(i)
            value = self.cash + float(np.dot(self.pos, _mark_row(m, i, self.last_fill)))
            eq_times.append(closes[i])
            eq_values.append(value)
            if stop_on == "copy" and p.stop_drawdown is not None and self.stop_time is None:
                peak = max(peak, value)
                dd = 1.0 - value / peak
                if dd >= p.stop_drawdown:
                    self.stop_time, self.stop_reason = closes[i], "copy_drawdown"
                    self.records.append(
                        {
                            "ts": closes[i],
                            "kind": "stop",
                            "reason": "copy_drawdown",
                            "drawdown": dd,
                            "level": p.stop_drawdown,
                            "peak": peak,
                            "equity": value,
                            "message": f"unfollow: the copy's drawdown {dd:.1%} reached "
                            f"{p.stop_drawdown:.0%} (equity {value:,.0f} from a peak of "
                            f"{peak:,.0f} USDT)",
                        }
                    )
        equity = pd.Series(eq_values, index=pd.DatetimeIndex(eq_times), name="equity")
        self.records.sort(key=lambda rec: rec["ts"])
        return SleeveRun(
            equity=equity,
            records=self.records,
            capacity=self._capacity(leader_eq),
            regimes=p.regimes,
            summary=self._summary(equity, leader_eq, len(trades)),
        )

    def _leader_stop(
        self, leader_eq: pd.Series, start: pd.Timestamp
    ) -> tuple[pd.Timestamp, dict[str, Any]] | None:
        """The first time the leader's equity is known ``stop_drawdown`` below its peak
        since ``start`` (the value last known at ``start`` included)."""
        level = self.p.stop_drawdown
        assert level is not None
        before = leader_eq[leader_eq.index <= start]
        seen = pd.concat([before.iloc[-1:], leader_eq[leader_eq.index > start]])
        if seen.empty:
            return None
        values = seen.to_numpy(dtype=float)
        peaks = np.maximum.accumulate(values)
        dd = 1.0 - values / peaks
        hit = np.flatnonzero(dd >= level)
        if not len(hit):
            return None
        h = int(hit[0])
        at = max(seen.index[h], start)
        return at, {
            "ts": at,
            "kind": "stop",
            "reason": "leader_drawdown",
            "drawdown": float(dd[h]),
            "level": level,
            "peak": float(peaks[h]),
            "equity": float(values[h]),
            "message": f"unfollow: the leader's drawdown {dd[h]:.1%} reached {level:.0%} "
            f"(equity {values[h]:,.0f} from a peak of {peaks[h]:,.0f} USDT, known at {at})",
        }

    def _copy(self, r: Any, act: pd.Timestamp, i: int, leader_eq: pd.Series | None) -> None:
        s, p, m = self.s, self.p, self.m
        j = m.col[r.symbol]
        leader_price = (
            float(r.price) if math.isfinite(r.price) else s._last_close(r.symbol, r.timestamp)
        )
        if not math.isfinite(leader_price):
            self._skip(r, act, "no_price")
            return
        known = int(m.closes.searchsorted(act, side="right")) - 1
        marks = _mark_row(m, known, self.last_fill)
        held_value = np.where(self.pos != 0, self.pos * marks, 0.0)
        # The equity last marked at or before t + delay: every copy decided at one time
        # sees the same equity, and a fill not yet marked is not valued at a stale close.
        equity = self.eq_values[bisect.bisect_right(self.eq_times, act) - 1]
        gross = float(np.nansum(np.abs(held_value)))
        if p.scaling == "equity_ratio":
            assert leader_eq is not None
            at = int(leader_eq.index.searchsorted(act, side="right")) - 1
            if at < 0:
                self._skip(r, act, "no_leader_equity")
                return
            leader_equity = float(leader_eq.iloc[at])
            scale = p.fraction * equity / leader_equity
        else:
            leader_equity = math.nan
            scale = p.fraction
        wanted = scale * float(r.quantity)
        before = self.leader_before.get(r.trade_id, 0.0)
        rule = "scaled"
        if (
            r.side == "sell"
            and p.sells == "proportional"
            and before > 0
            and r.quantity <= before * (1 + 1e-9)
        ):
            # The same share of the copy's holding as the leader sold of its own.
            wanted, rule = float(self.pos[j]) * min(r.quantity / before, 1.0), "proportional"
        plan = plan_copy(
            r.side,
            wanted,
            leader_price,
            held=float(self.pos[j]),
            cash=self.cash,
            equity=equity,
            gross=gross,
            limits=p.limits,
            fill_cost=self.cost,
            fee_rate=self.fee_rate,
        )
        if plan.skip is not None:
            self._skip(
                r,
                act,
                plan.skip,
                wanted_quantity=plan.wanted,
                scale=scale,
                clipped=list(plan.clipped),
            )
            return
        sign = 1.0 if r.side == "buy" else -1.0
        open_ = float(m.open[i, j])
        price = open_ * (1.0 + sign * self.cost)
        q = plan.quantity
        notional = q * price
        fee = notional * self.fee_rate
        self.pos[j] += sign * q
        if abs(self.pos[j]) < 1e-12:
            self.pos[j] = 0.0
        self.cash -= sign * notional + fee
        self.last_fill[j] = price
        gross_now = float(np.nansum(np.abs(self.pos * _mark_row(m, i, self.last_fill))))
        self.peak_gross = max(self.peak_gross, gross_now)
        fill_time = self.idx[i]
        rec = {
            "ts": fill_time,
            "kind": "fill",
            "reason": f"copy {r.trade_id}: leader {r.side} {float(r.quantity):.8g} {r.symbol} "
            f"at {leader_price:.8g} on {r.timestamp.isoformat()}",
            "symbol": r.symbol,
            "side": r.side,
            "quantity": q,
            "price": price,
            "notional": notional,
            "fee": fee,
            "leader_trade_id": r.trade_id,
            "leader_ts": r.timestamp,
            "leader_quantity": float(r.quantity),
            "leader_price": leader_price,
            "leader_note": r.note,
            "decided_at": act,
            "delay_seconds": (fill_time - r.timestamp).total_seconds(),
            "scale": scale,
            "leader_equity": leader_equity,
            "equity": equity,
            "wanted_quantity": plan.wanted,
            "sell_rule": rule if r.side == "sell" else None,
            "leader_held": before,
            "clipped": list(plan.clipped),
            "slippage_bps": sign * (price / leader_price - 1.0) * 1e4,
            "market_bps": sign * (open_ / leader_price - 1.0) * 1e4,
            "cost_bps": sign * (price - open_) / leader_price * 1e4,
            "slippage_usdt": sign * (price - leader_price) * q,
        }
        self.records.append(rec)
        self.fills.append(rec)

    def _close_all(self, i: int) -> bool:
        """Sell what the copy holds at bar ``i``'s open (symbols without a bar wait);
        True when nothing is left."""
        m = self.m
        for sym, j in m.col.items():
            q = float(self.pos[j])
            if q == 0.0 or not m.has[i, j]:
                continue
            sign = -1.0 if q > 0 else 1.0
            price = float(m.open[i, j]) * (1.0 + sign * self.cost)
            notional = abs(q) * price
            fee = notional * self.fee_rate
            self.cash += -sign * notional - fee
            self.pos[j] = 0.0
            self.records.append(
                {
                    "ts": self.idx[i],
                    "kind": "fill",
                    "reason": f"unfollow: {self.stop_reason} stop at {self.stop_time}",
                    "symbol": sym,
                    "side": "sell" if q > 0 else "buy",
                    "quantity": abs(q),
                    "price": price,
                    "notional": notional,
                    "fee": fee,
                    "leader_trade_id": None,
                    "stopped_at": self.stop_time,
                }
            )
        return not np.any(self.pos != 0)

    def _capacity(self, leader_eq: pd.Series | None) -> float:
        p, m = self.p, self.m
        if p.scaling == "fixed_fraction":
            return self.peak_gross / p.limits.max_leverage if self.peak_gross > 0 else 0.0
        assert leader_eq is not None
        qv = m.panel.quote_volume
        daily = qv.resample("1D").sum(min_count=1) if m.timeframe != "1d" else qv
        cap = math.inf
        t = self.s.feed.trades
        for sym in m.col:
            rows = t[t["symbol"] == sym]
            if rows.empty:
                continue
            shares = []
            for r in rows.itertuples(index=False):
                act = r.timestamp + pd.Timedelta(seconds=p.delay)
                at = int(leader_eq.index.searchsorted(act, side="right")) - 1
                price = r.price if math.isfinite(r.price) else self.s._last_close(sym, r.timestamp)
                if at < 0 or not math.isfinite(price):
                    continue
                shares.append(r.quantity * price / float(leader_eq.iloc[at]))
            volume = float(np.nanmedian(daily[sym].to_numpy(dtype=float)))
            if not shares or not math.isfinite(volume):
                continue
            big = float(np.quantile(shares, CAPACITY_QUANTILE)) * p.fraction
            if big > 0:
                cap = min(cap, p.volume_share * volume / big)
        return cap

    def _summary(
        self, equity: pd.Series, leader_eq: pd.Series | None, n_trades: int
    ) -> dict[str, float]:
        fills = self.fills
        slip = np.array([f["slippage_bps"] for f in fills], dtype=float)
        notional = np.array([f["notional"] for f in fills], dtype=float)
        out: dict[str, float] = {
            "leader_trades": float(n_trades),
            "copied": float(len(fills)),
            "skipped": float(sum(self.skips.values())),
            "clipped": float(sum(1 for f in fills if f["clipped"])),
            "delay_seconds": float(self.p.delay),
            "bar_seconds": float(self.tf.total_seconds()),
            "mean_delay_slippage_bps": float(slip.mean()) if len(slip) else math.nan,
            "weighted_delay_slippage_bps": float((slip * notional).sum() / notional.sum())
            if len(slip) and notional.sum() > 0
            else math.nan,
            "mean_market_bps": float(np.mean([f["market_bps"] for f in fills]))
            if fills
            else math.nan,
            "slippage_usdt": float(sum(f["slippage_usdt"] for f in fills)),
            "fees_usdt": float(sum(r.get("fee", 0.0) for r in self.records if r["kind"] == "fill")),
            "copied_notional_usdt": float(notional.sum()),
            "start_equity": float(equity.iloc[0]),
            "end_equity": float(equity.iloc[-1]),
            "copy_return": float(equity.iloc[-1] / equity.iloc[0] - 1.0),
            "max_drawdown": float((1.0 - equity / equity.cummax()).max()),
            "stopped": 1.0 if self.stop_time is not None else 0.0,
        }
        for code, count in sorted(self.skips.items()):
            out[f"skipped_{code}"] = float(count)
        out.update(tracking(equity, leader_eq))
        return out


def tracking(copy: pd.Series, leader: pd.Series | None) -> dict[str, float]:
    """Daily (00:00 UTC) returns of ``copy`` against ``leader`` (both by the time each
    value is known, each sampled at its last value at or before the instant): leader's
    return over the copy's span, tracking error (std of the return difference, x
    sqrt(365)), correlation. NaN without a leader equity or with fewer than 3 days."""
    nan = {"leader_return": math.nan, "tracking_error": math.nan, "tracking_correlation": math.nan}
    if leader is None or leader.empty:
        return nan
    first, last = copy.index[0], copy.index[-1]

    def at(series: pd.Series, times: pd.DatetimeIndex) -> np.ndarray:
        pos = series.index.searchsorted(times, side="right") - 1
        vals = series.to_numpy(dtype=float)
        return np.where(pos >= 0, vals[np.clip(pos, 0, None)], np.nan)

    ends = at(leader, pd.DatetimeIndex([first, last]))
    out = dict(
        nan, leader_return=float(ends[1] / ends[0] - 1.0) if np.all(np.isfinite(ends)) else math.nan
    )
    days = pd.date_range(first.ceil("D"), last.floor("D"), freq="1D")
    if len(days) < 3:
        return out
    c, lead = at(copy, days), at(leader, days)
    rc, rl = np.diff(c) / c[:-1], np.diff(lead) / lead[:-1]
    ok = np.isfinite(rc) & np.isfinite(rl)
    if ok.sum() < 2:
        return out
    diff = rc[ok] - rl[ok]
    out["tracking_error"] = float(np.std(diff, ddof=1) * math.sqrt(365.0))
    if np.std(rc[ok]) > 0 and np.std(rl[ok]) > 0:
        out["tracking_correlation"] = float(np.corrcoef(rc[ok], rl[ok])[0, 1])
    return out
