"""Funding carry: long spot, short the perpetual, while funding pays the short.

A delta-neutral book in one subaccount: for each pair (``BTCUSDT`` spot, ``BTCUSDT-PERP``
linear perpetual, isolated margin) the strategy holds ``+w`` of equity in spot and ``-w``
in the perpetual, equal quantities (the perpetual's weight is ``-w * perp / spot``), when
the trailing funding rate pays shorts. The price
moves of the legs cancel; what is left is the funding received, the fees, and the basis
(perpetual minus spot price).

**Data limit (say it wherever figures are shown).** The shared data has no perpetual
bars: ``prepare_carry_market`` marks the perpetual at copies of the spot bars unless
perpetual bars are given, so the basis is zero throughout, the perpetual's volume is the
spot's, and funding is priced at the spot path. Reasons and ``CarryMarket.basis_zero``
say so. Funding rates are real (the venue's, per 8 h interval on Binance). A portfolio
file gives perpetual bars with ``backtest.perpetuals`` (``engine.carry_run``).

Pieces:

* ``prepare_carry_market``: the panel with ``XUSDT-PERP`` columns, the perpetual
  instruments and the ``funding`` mapping the simulated broker books;
* ``funding_feature``: the annualised mean funding rate over the last ``window`` funding
  intervals known at each bar's close (no rate stamped after the close), per column;
* ``CarryStrategy`` (``build_carry``): a ``Strategy`` from a ``FundingCarry`` signal, a
  ``HedgedPairs`` sizer and a ``PairRule``, plus the stateful parts a carry book needs:
  the re-strike of a pair the price has moved ``reset_move`` from its entry (both legs
  closed, re-opened at the next decision: flat for one bar, since the ledger cannot add
  margin to an isolated position and a partial close leaves the short's liquidation
  price, about 2x the entry at 1x, where it was struck), and the **leg breaker**.

The engine runs it as any policy: ``Backtest(ctx, strategy, config,
instruments=market.instruments, funding=market.funding)`` over a context built on
``market.panel`` with ``strategy.features(market.panel, market.funding)`` added to its
features (``plan_orders`` turns the signed perpetual targets into short sells and
reduce-only buy-backs; ``LimitGuard`` takes negative weights on perpetual columns). In a
portfolio file, ``strategy: carry`` with ``symbols:`` (the spot legs) is wired by
``trimtab.engine.carry_run``. Where no funding rate is known (outside the funding data)
the signal is NaN and the pairs stay flat, with a ``no_funding`` reason.

Leg breaker: at each decision the strategy compares the legs' quantities (what the fills
left). Spot ``s`` and short ``p`` (base units) are mismatched when one is held without
the other, or ``|s - p| > hedge_tolerance * max(s, p)``. Then it records ``leg_mismatch``
and trades both legs down to the smaller one (the re-hedge); when a pair has been found
mismatched at ``max_mismatch_bars`` decisions with no hedged decision between, it closes
both legs and halts that pair (``carry_breaker``). A halted pair re-arms only when its
funding signal has fallen to ``exit_apr`` or below: a fresh entry needs the signal to
cross ``enter_apr`` again, so a broken market is not re-entered while the same episode
lasts. The counters, halts and entry marks are in ``state()``.

Units: rates are fractions per funding interval; annualised rates (``apr``) fractions per
365-day year, simple (rate x intervals per year); weights fractions of equity; moves
fractions of price.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trimtab.data.panel import Panel
from trimtab.domain import Instrument, perpetual
from trimtab.domain.decisions import Assessment, Decision, Observation, Reason
from trimtab.policy.policies import Telemetry
from trimtab.signals.external import bar_closes
from trimtab.signals.funding import FUNDING_COLUMNS, intervals_per_year
from trimtab.strategies.base import BarView, Capacity, Strategy, StrategySpec, TradeChoice

PERP_SUFFIX = "-PERP"
#: A funding series older than this many of its intervals at a bar's close is stale.
MAX_AGE_INTERVALS = 3


def perp_symbol(spot: str) -> str:
    """The perpetual column of a spot symbol: ``BTCUSDT`` -> ``BTCUSDT-PERP``."""
    return spot + PERP_SUFFIX


# --- the market ------------------------------------------------------------------------


@dataclass(frozen=True)
class CarryMarket:
    """What a carry run needs besides the strategy.

    ``panel`` has each pair's spot and ``-PERP`` columns; ``instruments`` the perpetuals'
    rules (isolated margin, Binance's brackets for BTC and ETH); ``funding`` perp symbol ->
    rates per interval (fractions, UTC index) as ``SimulatedBroker`` books them;
    ``pairs`` (spot, perp) in order; ``basis_zero`` the perpetuals whose bars are copies
    of the spot bars (no perpetual bars given: basis zero); ``venue`` the funding venue.
    """

    panel: Panel
    instruments: dict[str, Instrument]
    funding: dict[str, pd.Series]
    pairs: tuple[tuple[str, str], ...]
    basis_zero: tuple[str, ...]
    venue: str


def _funding_rows(funding: pd.DataFrame, symbol: str, venue: str) -> pd.Series:
    missing = [c for c in FUNDING_COLUMNS if c not in funding.columns]
    if missing:
        raise ValueError(
            f"funding table lacks column(s) {', '.join(missing)}; "
            f"expected {', '.join(FUNDING_COLUMNS)} (as read_funding returns)"
        )
    venues = sorted(map(str, funding["venue"].unique()))
    if venue not in venues:
        raise ValueError(f"no funding rows for venue {venue!r}; the table has {', '.join(venues)}")
    rows = funding[(funding["symbol"] == symbol) & (funding["venue"] == venue)]
    if rows.empty:
        have = sorted(map(str, funding.loc[funding["venue"] == venue, "symbol"].unique()))
        raise ValueError(
            f"no funding rows for {symbol} on {venue}; it has {', '.join(have) or 'none'}"
        )
    ts = pd.DatetimeIndex(rows["timestamp"])
    if ts.tz is None:
        raise ValueError(f"funding timestamps of {symbol} on {venue} have no timezone (UTC)")
    rates = pd.Series(
        rows["funding_rate"].to_numpy(float), index=ts.tz_convert("UTC"), name=perp_symbol(symbol)
    ).sort_index()
    bad = ~np.isfinite(rates.to_numpy())
    if bad.any():
        at = rates.index[bad][0]
        raise ValueError(f"funding rate of {symbol} on {venue} at {at} is not a number")
    if rates.index.has_duplicates:
        at = rates.index[rates.index.duplicated()][0]
        raise ValueError(f"two funding rates of {symbol} on {venue} at {at}")
    return rates


def prepare_carry_market(
    panel: Panel,
    symbols: Sequence[str],
    funding: pd.DataFrame | None,
    *,
    venue: str = "binance",
    perp_bars: Panel | None = None,
) -> CarryMarket:
    """The market for carry on ``symbols`` (spot, e.g. ``BTCUSDT``): ``panel`` (spot bars)
    with a ``-PERP`` column per symbol, the perpetual instruments and the funding of
    ``venue`` from ``funding`` (the long table of ``read_funding``).

    The perpetual's bars are ``perp_bars``' column ``XUSDT-PERP`` (or ``XUSDT``) when
    given, else a copy of the spot bars: basis zero, flagged in ``basis_zero`` and in
    ``panel.provenance["carry"]``. Unknown symbols, a venue or symbol without funding
    rows and bad rates raise ``ValueError`` naming them. ``funding=None``: no funding data
    at all (no rates: the carry's signal is NaN throughout and it stays flat).
    """
    symbols = list(dict.fromkeys(symbols))
    if not symbols:
        raise ValueError("carry needs at least one spot symbol, e.g. BTCUSDT")
    bad = [s for s in symbols if s.endswith(PERP_SUFFIX)]
    if bad:
        raise ValueError(f"give carry the spot symbols, not {', '.join(bad)}")
    missing = [s for s in symbols if s not in panel.symbols]
    if missing:
        raise ValueError(
            f"carry symbols not in the spot bars: {', '.join(missing)}; "
            f"available: {', '.join(panel.symbols)}"
        )
    frames = {name: frame.copy() for name, frame in panel.frames().items()}
    instruments: dict[str, Instrument] = {}
    rates: dict[str, pd.Series] = {}
    copied: list[str] = []
    notes: dict[str, str] = {}
    for s in symbols:
        perp = perp_symbol(s)
        source = None
        if perp_bars is not None:
            source = next((c for c in (perp, s) if c in perp_bars.symbols), None)
        for name, frame in frames.items():
            if source is None:
                frame[perp] = frame[s]
            else:
                given = perp_bars.frames()[name][source].reindex(frame.index)
                frame[perp] = given.fillna(False) if name == "has_bar" else given
        if source is None:
            copied.append(perp)
            notes[perp] = f"bars copied from {s} spot: basis zero"
        else:
            notes[perp] = f"perpetual bars given ({source})"
        instruments[perp] = perpetual(perp)
        if funding is not None:
            rates[perp] = _funding_rows(funding, s, venue)
    provenance = dict(panel.provenance)
    provenance["carry"] = {"venue": venue, "perpetuals": notes}
    if funding is None:
        provenance["carry"]["funding"] = "no funding data: the carry stays flat"
    out = Panel(**frames, timeframe=panel.timeframe, provenance=provenance)
    return CarryMarket(
        out,
        instruments,
        rates,
        tuple((s, perp_symbol(s)) for s in symbols),
        tuple(copied),
        venue,
    )


def _interval(rates: pd.Series) -> pd.Timedelta:
    gaps = pd.Series(rates.index).diff().dropna()
    gaps = gaps[gaps > pd.Timedelta(0)].dt.round("min")
    if gaps.empty:
        raise ValueError(f"funding of {rates.name}: one rate cannot tell its interval")
    return gaps.mode().iloc[0]


def funding_feature(
    panel: Panel, funding: Mapping[str, pd.Series], *, window: int = 21
) -> np.ndarray:
    """Annualised trailing funding known at each bar's close: (time x symbol) of ``panel``.

    For a perpetual ``XUSDT-PERP`` in ``funding`` (rates per interval, UTC index) the
    value at bar t (stamped at its open, closing at t + bar) is the mean of the last
    ``window`` rates stamped at or before that close, times the intervals per 365-day
    year (1,095 at 8 h), in both the perpetual's and the spot's column; NaN with fewer
    than ``window`` rates known or when the latest is older than 3 intervals (the venue
    stopped reporting), and in every other column.
    """
    if window < 1:
        raise ValueError(f"funding window must be at least 1 interval, got {window}")
    closes = bar_closes(panel.index, panel.timeframe).as_unit("ns").asi8
    out = np.full((len(panel.index), len(panel.symbols)), np.nan)
    column = {s: j for j, s in enumerate(panel.symbols)}
    for perp, rates in funding.items():
        if perp not in column:
            continue
        rates = rates.dropna().sort_index()
        if len(rates) == 0:
            continue
        interval = _interval(rates) if len(rates) > 1 else pd.Timedelta(hours=8)
        per_year = intervals_per_year(interval)
        stamps = pd.DatetimeIndex(rates.index).tz_convert("UTC").as_unit("ns").asi8
        # Known at the close: the rates stamped at or before it.
        known = np.searchsorted(stamps, closes, side="right")
        cum = np.concatenate([[0.0], np.cumsum(rates.to_numpy(float))])
        lo = np.maximum(known - window, 0)
        mean = (cum[known] - cum[lo]) / window
        latest = stamps[np.maximum(known - 1, 0)]
        fresh = (known >= window) & (closes - latest <= MAX_AGE_INTERVALS * interval.value)
        value = np.where(fresh, mean * per_year, np.nan)
        out[:, column[perp]] = value
        spot = perp.removesuffix(PERP_SUFFIX)
        if spot in column:
            out[:, column[spot]] = value
    return out


# --- the parts ---------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{x:.1%}" if math.isfinite(x) else "n/a"


@dataclass(frozen=True)
class FundingCarry:
    """Scores each pair's spot column with its trailing annualised funding (the
    ``feature`` of ``funding_feature``); NaN elsewhere and where unknown."""

    pairs: tuple[tuple[str, str], ...]
    feature: str = "funding_apr_21"
    basis_zero: bool = True
    venue: str = "binance"

    @property
    def lookback(self) -> int:
        return 0

    def scores(self, view: BarView) -> tuple[np.ndarray, list[Reason]]:
        if self.feature not in view.obs.feature_names:
            raise ValueError(
                f"carry needs the {self.feature!r} feature: add "
                f"funding_feature(panel, market.funding, window=...) to the run's features"
            )
        apr = view.obs.feature(self.feature)
        col = {s: j for j, s in enumerate(view.symbols)}
        scores = np.full(len(view.symbols), np.nan)
        shown: dict[str, float | None] = {}
        for spot, _perp in self.pairs:
            j = col[spot]
            scores[j] = apr[j]
            shown[spot] = float(apr[j]) if math.isfinite(apr[j]) else None
        marks = "perp marked at the spot bars (basis zero)" if self.basis_zero else "perp bars"
        text = ", ".join(
            f"{s} {_pct(v if v is not None else math.nan)}/yr" for s, v in shown.items()
        )
        reasons = [
            Reason(
                "funding",
                f"trailing funding on {self.venue}: {text}; {marks}",
                {"apr": shown, "basis_zero": self.basis_zero},
            )
        ]
        unknown = [s for s, v in shown.items() if v is None]
        if unknown:
            reasons.append(
                Reason(
                    "no_funding",
                    f"no funding data on {self.venue} for {', '.join(unknown)} at this bar "
                    f"(fewer rates known than the window, or none for "
                    f"{MAX_AGE_INTERVALS} intervals): flat",
                    {"pairs": unknown},
                )
            )
        return scores, reasons


def pair_columns(symbols: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[tuple[int, int]]:
    """(spot column, perp column) of each pair in ``symbols``."""
    col = {s: j for j, s in enumerate(symbols)}
    missing = [s for pair in pairs for s in pair if s not in col]
    if missing:
        raise ValueError(
            f"carry instruments not in the data: {', '.join(missing)} "
            "(prepare_carry_market adds the -PERP columns)"
        )
    return [(col[s], col[p]) for s, p in pairs]


@dataclass(frozen=True)
class HedgedPairs:
    """``+w`` spot and ``-w * perp / spot`` perpetual (the same quantity of each: a hedge
    in coins, whatever the basis) for each pair whose funding is above ``enter_apr`` (or
    above ``exit_apr`` while held: hysteresis), 0 for the others. Each pair has a fixed
    slot: ``w = gross / (pairs * (1 + 1 / leverage))``, so the spot and the short's margin
    (notional / leverage) of every pair fit in ``gross`` of equity, to within the basis.
    A pair whose perpetual has no price yet (given perpetual bars that start later) stays
    flat."""

    pairs: tuple[tuple[str, str], ...]
    enter_apr: float = 0.08
    exit_apr: float = 0.0
    gross: float = 0.95
    leverage: float = 1.0

    @property
    def lookback(self) -> int:
        return 0

    @property
    def weight(self) -> float:
        return self.gross / (len(self.pairs) * (1.0 + 1.0 / self.leverage))

    def size(
        self, view: BarView, scores: np.ndarray, weights: np.ndarray | None
    ) -> tuple[np.ndarray, list[Reason]]:
        q = view.obs.portfolio.quantities
        close = view.obs.close
        out = np.zeros(len(scores))
        wanted: dict[str, str] = {}
        for js, jp in pair_columns(view.symbols, self.pairs):
            held = q[js] > 0 or q[jp] != 0
            apr = scores[js]
            bar = self.exit_apr if held else self.enter_apr
            ratio = close[jp] / close[js]  # 1.0 exactly when the perp is marked at spot
            if not (math.isfinite(ratio) and ratio > 0):
                wanted[view.symbols[js]] = "no perpetual price"
            elif math.isfinite(apr) and apr > bar:
                out[js], out[jp] = self.weight, -self.weight * ratio
                wanted[view.symbols[js]] = "hold" if held else "enter"
            else:
                wanted[view.symbols[js]] = "exit" if held else "flat"
        return out, [
            Reason(
                "carry_target",
                f"enter above {self.enter_apr:.1%}/yr, exit at {self.exit_apr:.1%}/yr or below; "
                f"{self.weight:.1%} spot and -{self.weight:.1%} perp per pair at "
                f"{self.leverage:g}x margin",
                {"pairs": wanted, "weight": self.weight},
            )
        ]


@dataclass(frozen=True)
class PairRule:
    """Trade a pair only when its target changes from held to flat or back: a held pair
    keeps its legs (their weights drift with the price, their quantities do not)."""

    pairs: tuple[tuple[str, str], ...]

    def choose(self, view: BarView, target: np.ndarray, current: np.ndarray) -> TradeChoice:
        q = view.obs.portfolio.quantities
        weights = current.copy()
        moved: list[str] = []
        for js, jp in pair_columns(view.symbols, self.pairs):
            held = q[js] > 0 or q[jp] != 0
            if held != bool(target[js] or target[jp]):
                weights[js], weights[jp] = target[js], target[jp]
                moved.append(view.symbols[js])
        if not moved:
            return TradeChoice(None, Reason("carry_hold", "no pair enters or exits"))
        return TradeChoice(
            weights, Reason("carry_trade", f"{', '.join(moved)} enter or exit", {"pairs": moved})
        )


# --- the strategy ------------------------------------------------------------------------


class CarryParams(BaseModel):
    """``carry``: trailing funding over ``window`` intervals of ``venue``; enter above
    ``enter_apr``, exit at ``exit_apr`` or below (fractions per year); ``gross`` of equity
    in spot plus margin at ``leverage``; re-strike a pair when the price moved more than
    ``reset_move`` from its entry; the leg breaker's ``hedge_tolerance`` (fraction of the
    larger leg) and ``max_mismatch_bars``.

    ``leverage`` sizes the pairs and is the leverage the short legs open at (the
    strategy's telemetry gives it to the pipeline step's ``plan_orders``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    venue: str = "binance"
    window: int = Field(21, ge=1, le=10_000)
    enter_apr: float = Field(0.08, gt=-1, le=10)
    exit_apr: float = Field(0.0, gt=-1, le=10)
    gross: float = Field(0.95, gt=0, le=1)
    leverage: float = Field(1.0, ge=1, le=10)
    reset_move: float = Field(0.30, gt=0, lt=1)
    hedge_tolerance: float = Field(0.05, gt=0, lt=1)
    max_mismatch_bars: int = Field(3, ge=1, le=1_000)
    capacity_share: float | None = Field(0.01, gt=0, le=1)

    @model_validator(mode="after")
    def _consistent(self) -> CarryParams:
        if self.exit_apr >= self.enter_apr:
            raise ValueError(
                f"exit_apr ({self.exit_apr:g}) must be below enter_apr ({self.enter_apr:g})"
            )
        # A short at L x is liquidated about 1/L above its entry: re-strike well before.
        limit = 0.75 / self.leverage
        if self.reset_move > limit:
            raise ValueError(
                f"reset_move ({self.reset_move:g}) must be at most {limit:.3g} at "
                f"{self.leverage:g}x: the short is liquidated about {1 / self.leverage:.0%} "
                "above its entry"
            )
        return self


def carry_params(params: Mapping[str, Any] | None) -> CarryParams:
    """Validated ``carry`` parameters (``ValueError`` naming the key)."""
    try:
        return CarryParams(**dict(params or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "params"
        raise ValueError(f"params.{where}: {first['msg']}") from None


class CarryStrategy(Strategy):
    """Long spot / short perpetual per pair while funding pays (see the module docstring).

    A ``Strategy`` whose ``decide`` adds, in order of precedence per pair: a halted pair
    (closed, waiting for its signal to reset), the leg breaker (re-hedge to the smaller
    leg, then close and halt), the re-strike (both legs closed when the price moved
    ``reset_move`` from the entry, re-entered at the next decision if funding still
    pays), then the parts' enter/exit rule.
    """

    def __init__(
        self,
        name: str,
        spec: StrategySpec,
        signal: FundingCarry,
        sizer: HedgedPairs,
        rule: PairRule,
        params: CarryParams,
    ) -> None:
        super().__init__(name, spec, signal, [sizer], rule)
        self.params = params
        self.pairs = signal.pairs
        self.feature = signal.feature
        self._cols: list[tuple[int, int]] = []
        self._fresh_state()

    def telemetry(self) -> Telemetry:
        return replace(super().telemetry(), leverage=float(self.params.leverage))

    def _fresh_state(self) -> None:
        n = len(self.pairs)
        self.mismatch = [0] * n
        self.halted = [False] * n
        self.rolling = [False] * n
        self.entry_mark: list[float | None] = [None] * n

    def with_params(self, **params: Any) -> CarryStrategy:
        """A copy with ``CarryParams`` fields replaced (``enter_apr=0.1``; the parts'
        prefixes ``signal__``, ``sizer0__``, ``rule__`` are accepted and dropped).
        Unknown names and bad values raise ``ValueError`` naming them."""
        flat = {key.partition("__")[2] or key: value for key, value in params.items()}
        return build_carry(
            {**self.params.model_dump(), **flat},
            name=self.name,
            symbols=tuple(spot for spot, _ in self.pairs),
            basis_zero=self.signal.basis_zero,
        )

    def features(self, panel: Panel, funding: Mapping[str, pd.Series]) -> dict[str, np.ndarray]:
        """The features this strategy reads, computed over ``panel`` (causal)."""
        return {self.feature: funding_feature(panel, funding, window=self.params.window)}

    # --- the policy protocol -----------------------------------------------------------
    def reset(self, symbols: tuple[str, ...], periods_per_year: float) -> None:
        super().reset(symbols, periods_per_year)
        self._cols = pair_columns(symbols, self.pairs)
        self._fresh_state()

    def state(self) -> dict[str, Any]:
        out = super().state()
        out["carry"] = {
            "mismatch": list(self.mismatch),
            "halted": list(self.halted),
            "rolling": list(self.rolling),
            "entry_mark": list(self.entry_mark),
        }
        return out

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        carry = state["carry"]
        self.mismatch = [int(v) for v in carry["mismatch"]]
        self.halted = [bool(v) for v in carry["halted"]]
        self.rolling = [bool(v) for v in carry["rolling"]]
        self.entry_mark = [None if v is None else float(v) for v in carry["entry_mark"]]

    def decide(self, obs: Observation, assessment: Assessment) -> Decision:
        p = self.params
        if obs.i < self.spec.warmup:
            return Decision.hold(Reason("warmup", f"{self.name}: warming up"))
        view = self.view(obs, assessment)
        scores, reasons = self.signal.scores(view)
        target, more = self.sizers[0].size(view, scores, None)
        reasons += more
        q = obs.portfolio.quantities
        close = obs.close
        equity = obs.portfolio.equity
        current = obs.portfolio.weights
        weights = current.copy()
        traded: list[str] = []  # pairs this decision trades by the carry's own rules
        ruled: list[int] = []  # pairs left to the parts' rule
        for k, (js, jp) in enumerate(self._cols):
            spot = self.pairs[k][0]
            s, short = float(q[js]), -float(q[jp])
            held = s > 0 or short != 0
            apr = float(scores[js])
            if self.halted[k]:
                if held:
                    weights[js] = weights[jp] = 0.0
                    traded.append(spot)
                    reasons.append(
                        Reason(
                            "carry_breaker",
                            f"{spot}: halted by the leg breaker; closing both legs",
                            {"pair": spot, "spot_qty": s, "perp_qty": -short},
                        )
                    )
                elif not (math.isfinite(apr) and apr > p.exit_apr):
                    self.halted[k] = False
                    self.mismatch[k] = 0
                    reasons.append(
                        Reason(
                            "carry_rearmed",
                            f"{spot}: funding {_pct(apr)}/yr at or below the exit "
                            f"{p.exit_apr:.1%}: the leg breaker re-arms",
                            {"pair": spot, "apr": apr},
                        )
                    )
                else:
                    reasons.append(
                        Reason(
                            "carry_halted",
                            f"{spot}: halted by the leg breaker until funding falls to "
                            f"{p.exit_apr:.1%}/yr (now {_pct(apr)})",
                            {"pair": spot, "apr": apr},
                        )
                    )
                continue
            larger = max(s, short)
            mismatched = held and (short < 0 or abs(s - short) > p.hedge_tolerance * larger)
            if mismatched:
                self.mismatch[k] += 1
                values = {
                    "pair": spot,
                    "spot_qty": s,
                    "perp_qty": -short,
                    "decisions": self.mismatch[k],
                    "max_mismatch_bars": p.max_mismatch_bars,
                }
                weights[js] = weights[jp] = 0.0
                traded.append(spot)
                self.rolling[k] = False
                if self.mismatch[k] >= p.max_mismatch_bars:
                    self.halted[k] = True
                    self.entry_mark[k] = None
                    reasons.append(
                        Reason(
                            "carry_breaker",
                            f"{spot}: legs mismatched at {self.mismatch[k]} decisions "
                            f"(spot {s:g}, perp {-short:g}): both legs closed, pair halted",
                            values,
                        )
                    )
                    continue
                hedge = min(s, max(short, 0.0))
                if hedge > 0 and equity > 0:
                    weights[js] = hedge * close[js] / equity
                    weights[jp] = -hedge * close[jp] / equity
                reasons.append(
                    Reason(
                        "leg_mismatch",
                        f"{spot}: spot {s:g} vs perp {-short:g} differ by more than "
                        f"{p.hedge_tolerance:.0%}: re-hedged to the smaller leg ({hedge:g})",
                        values,
                    )
                )
                continue
            if held:
                self.mismatch[k] = 0  # a hedged decision ends an episode
            elif not target[js]:
                self.mismatch[k] = 0
            mark = self.entry_mark[k]
            if held and target[js] and mark:
                move = close[js] / mark - 1.0
                if abs(move) > p.reset_move:
                    weights[js] = weights[jp] = 0.0
                    traded.append(spot)
                    self.rolling[k] = True
                    self.entry_mark[k] = None
                    reasons.append(
                        Reason(
                            "carry_reset",
                            f"{spot}: price {move:+.1%} from the entry {mark:g}: both legs "
                            "closed, re-struck at the next decision while funding pays "
                            "(the short's liquidation price stays where it was struck)",
                            {"pair": spot, "move": move, "entry": mark},
                        )
                    )
                    continue
            if not held and self.rolling[k]:
                # Re-striking after a reset: the exit bar, not the entry bar, applies.
                self.rolling[k] = False
                if math.isfinite(apr) and apr > p.exit_apr:
                    w = self.sizers[0].weight
                    weights[js], weights[jp] = w, -w * float(close[jp] / close[js])
                    self.entry_mark[k] = float(close[js])
                    traded.append(spot)
                    reasons.append(
                        Reason(
                            "carry_restrike",
                            f"{spot}: re-struck at {close[js]:g}, funding {_pct(apr)}/yr",
                            {"pair": spot, "apr": apr},
                        )
                    )
                    continue
            ruled.append(k)
        if ruled:
            # The parts' rule sees the signal's target on its pairs only; the pairs the
            # carry's own rules handled keep their holdings in what it is shown.
            shown = current.copy()
            for k in ruled:
                for j in self._cols[k]:
                    shown[j] = target[j]
            choice = self.rule.choose(view, shown, current)
            reasons.append(choice.reason)
            if choice.weights is not None:
                for k in ruled:
                    js, jp = self._cols[k]
                    if choice.weights[js] != current[js] or choice.weights[jp] != current[jp]:
                        weights[js], weights[jp] = choice.weights[js], choice.weights[jp]
                        traded.append(self.pairs[k][0])
                        entering = bool(choice.weights[js])
                        self.entry_mark[k] = float(close[js]) if entering else None
        self.current_target = weights
        if not traded:
            return Decision.hold(*reasons)
        self._invested = True
        return Decision.rebalance(weights, *reasons, action="carry")


def build_carry(
    params: Mapping[str, Any] | None = None,
    *,
    name: str = "carry",
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
    basis_zero: bool = True,
) -> CarryStrategy:
    """The ``carry`` strategy on ``symbols`` (spot; each trades with its ``-PERP``) with
    validated ``params`` (``CarryParams``). ``basis_zero``: the perpetual is marked at the
    spot bars (``CarryMarket.basis_zero`` non-empty), said in every decision's reasons."""
    p = carry_params(params)
    symbols = tuple(dict.fromkeys(symbols))
    if not symbols:
        raise ValueError("carry needs at least one spot symbol, e.g. BTCUSDT")
    bad = [s for s in symbols if s.endswith(PERP_SUFFIX)]
    if bad:
        raise ValueError(f"give carry the spot symbols, not {', '.join(bad)}")
    pairs = tuple((s, perp_symbol(s)) for s in symbols)
    signal = FundingCarry(pairs, f"funding_apr_{p.window}", basis_zero, p.venue)
    sizer = HedgedPairs(pairs, p.enter_apr, p.exit_apr, p.gross, p.leverage)
    spec = StrategySpec(
        kind="carry",
        instruments=tuple(s for pair in pairs for s in pair),
        timeframe="1d",
        warmup=0,
        capacity=Capacity(volume_share=p.capacity_share),
        regimes=("trending", "calm"),
    )
    return CarryStrategy(name, spec, signal, sizer, PairRule(pairs), p)
