"""Funding carry through the engine: the perpetual columns, their funding and feature.

``carry_context`` extends a run's ``MarketContext`` (built on the spot panel) with the
``-PERP`` columns of a ``CarryMarket``: market arrays over the extended panel (the
perpetual's own bars when given: its prices and volume), every per-column feature of a
perpetual copied from its spot column (with basis zero its bars are copies of the spot's,
so computing them again would give the same numbers; with its own bars the carry still
sizes on the spot leg's features, and cross-sectional features and the regime model stay
those of the spot market the other subaccounts see), and the carry features
(``funding_feature``) added.

``wire_carry`` does it for a portfolio file: when some subaccount has ``strategy: carry``,
it finds the funding file (``backtest.funding`` in the file, else the one
``funding_*.csv.gz`` beside the OHLCV data: the data folder, or the folder of the data
file; with none there the carry runs without rates and stays flat, and
``provenance["carry"]["funding"]`` says so), reads it (``read_funding_file``), reads the
perpetuals' bars of ``backtest.perpetuals`` when given (``perpetual_bars``; else basis
zero), adds each carry subaccount's pairs (``prepare_carry_market``), makes the perpetual columns members of their carry
subaccount only (every other subaccount's membership leaves them out, including one
with no ``symbols:``) and returns what ``PortfolioBacktest`` needs (``instruments``,
``funding``). Where the funding file has no rate for a bar (before its first rate, after
its last), the carry's signal is NaN and it stays flat, saying so (``no_funding``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from trimtab.data import Panel, load_panel, read_funding
from trimtab.data.errors import DataError
from trimtab.data.readers import parse_freqtrade_name, read_freqtrade_funding
from trimtab.domain import Instrument
from trimtab.engine.context import MarketContext
from trimtab.engine.portfolio_file import Portfolio, SubaccountSettings
from trimtab.execution.market import MarketArrays
from trimtab.strategies.carry import (
    PERP_SUFFIX,
    CarryMarket,
    carry_params,
    funding_feature,
    perp_symbol,
    prepare_carry_market,
)

#: The funding files a data folder may hold (the shared data's, the sample's).
FUNDING_GLOB = "funding_*.csv.gz"


def carry_context(
    ctx: MarketContext, market: CarryMarket, features: Mapping[str, np.ndarray]
) -> MarketContext:
    """``ctx`` (built on the spot bars of ``market.panel``) with ``market``'s perpetual
    columns and ``features`` (each time x symbol over ``market.panel``) added.

    A perpetual column's features, half-spread and universe membership are its spot
    column's. Raises ``ValueError`` when the panels do not match (other bars or symbols).
    """
    spot = ctx.market.symbols
    symbols = tuple(market.panel.symbols)
    if symbols[: len(spot)] != tuple(spot) or not market.panel.index.equals(ctx.market.index):
        raise ValueError("the carry market must extend the context's panel (same bars, symbols)")
    column = {s: j for j, s in enumerate(spot)}
    source = np.array([column[s.removesuffix(PERP_SUFFIX)] for s in symbols], dtype=np.int64)
    n = len(spot)
    m = MarketArrays.from_panel(market.panel)
    if ctx.market.half_spread_bps is not None:
        m = replace(m, half_spread_bps=ctx.market.half_spread_bps[:, source])
    out: dict[str, np.ndarray] = {}
    for name, values in ctx.features.items():
        per_column = values.ndim == 2 and values.shape[1] == n
        out[name] = values[:, source] if per_column else values
    for name, values in features.items():
        if values.shape != (len(m.index), len(symbols)):
            raise ValueError(f"feature {name!r} has shape {values.shape}, not bars x symbols")
        out[name] = values
    return replace(
        ctx, panel=market.panel, market=m, features=out, universe=ctx.universe[:, source] & m.live
    )


@dataclass(frozen=True)
class CarryWiring:
    """A portfolio run's carry parts: the panel and context with the perpetual columns,
    each subaccount's membership over them, the perpetual instruments and their funding
    (perp symbol -> rates per interval), the funding file read (None: none was found,
    the carry has no rates)."""

    panel: Panel
    context: MarketContext
    members: dict[str, pd.DataFrame | None]
    instruments: dict[str, Instrument]
    funding: dict[str, pd.Series]
    source: Path | None


def carry_subaccounts(portfolio: Portfolio) -> dict[str, SubaccountSettings]:
    """The file's carry subaccounts, by name."""
    subs = portfolio.settings.subaccounts
    return {name: sub for name, sub in subs.items() if sub.strategy == "carry"}


def data_location(panel: Panel) -> str | None:
    """Where ``panel`` was read from: the data folder or file of its provenance (its
    ``location``, else the ``source`` ``load_panel`` was given, else its first file)."""
    prov = panel.provenance
    location = (prov.get("location") or {}).get("path") or prov.get("source")
    if location:
        return str(location)
    files = prov.get("files") or ()
    if not files:
        return None
    first = files[0]
    return str(first.get("path")) if isinstance(first, Mapping) else str(first)


def funding_file(portfolio: Portfolio, data_path: str | None) -> Path | None:
    """The funding CSV of a run: ``backtest.funding`` (relative to the file's folder;
    ``ConfigError`` when it does not exist), else the single ``funding_*.csv.gz`` beside
    the data (``data_path``: the data folder, or a file in it), else None. Several there:
    ``ConfigError`` asking to name one."""
    given = portfolio.settings.backtest.funding
    if given:
        path = portfolio.resolve(given)
        if not path.is_file():
            raise portfolio.error(f"backtest.funding: no such file: {path}")
        return path
    if data_path is None:
        return None
    where = Path(data_path)
    folder = where if where.is_dir() else where.parent
    found = sorted(folder.glob(FUNDING_GLOB))
    if len(found) > 1:
        names = ", ".join(f.name for f in found)
        raise portfolio.error(
            f"backtest.funding: {folder} has {len(found)} funding files ({names}); "
            "name the one the carry reads under backtest.funding"
        )
    return found[0] if found else None


def read_funding_file(path: Path, *, venue: str) -> pd.DataFrame:
    """The funding rows of ``path``: the shared CSV (``read_funding``) or a freqtrade
    ``-funding_rate`` file, whose one pair is booked under ``venue`` (the carry's) with
    its spot symbol (``XRPUSDT``). Raises ``DataError`` naming the file."""
    name = parse_freqtrade_name(path)
    if name is None or name.candle_type != "funding_rate":
        return read_funding(path)
    rows = read_freqtrade_funding(path, venue=venue)
    return rows.assign(symbol=rows["symbol"].str.removesuffix(PERP_SUFFIX))


def perpetual_bars(
    portfolio: Portfolio, panel: Panel, symbols: Sequence[str], context: MarketContext
) -> Panel | None:
    """The perpetuals' own bars named by ``backtest.perpetuals`` (None when not given:
    basis zero), at the run's timeframe. Each carry symbol needs a column (``XUSDT-PERP``
    or ``XUSDT``) whose bars reach the run's last bar: a short marked past its data would
    be valued at nothing. Errors are ``ConfigError`` naming the key, file and symbol."""
    given = portfolio.settings.backtest.perpetuals
    if not given:
        return None
    path = portfolio.resolve(given)
    if not path.exists():
        raise portfolio.error(f"backtest.perpetuals: no such file or folder: {path}")
    try:
        bars = load_panel(path, timeframe=panel.timeframe)
    except DataError as exc:
        raise portfolio.error(f"backtest.perpetuals: {exc}") from None
    last = context.market.index[context.end_i]
    problems = []
    for s in symbols:
        column = next((c for c in (perp_symbol(s), s) if c in bars.symbols), None)
        if column is None:
            problems.append(
                f"backtest.perpetuals: {path} has no bars for {perp_symbol(s)} (or {s}); "
                f"it holds {', '.join(bars.symbols)}"
            )
            continue
        closes = bars.close[column].dropna()
        if closes.empty or closes.index[-1] < last:
            end = "no bar" if closes.empty else f"its last bar is {closes.index[-1]:%Y-%m-%d %H:%M}"
            problems.append(
                f"backtest.perpetuals: {column} in {path} ends before the run: {end}, "
                f"the run's last is {last:%Y-%m-%d %H:%M} UTC (end the run earlier)"
            )
    if problems:
        raise portfolio.error(*problems)
    return bars


def wire_carry(
    portfolio: Portfolio,
    panel: Panel,
    context: MarketContext,
    members: Mapping[str, pd.DataFrame | None],
) -> CarryWiring | None:
    """The carry parts of a portfolio run (see the module docstring), or None when no
    subaccount is carry. ``panel``, ``context`` and ``members`` are the run's over the
    spot bars. Errors (no funding file, a symbol without funding, a venue not in it,
    perpetual bars that cannot mark the run) are ``ConfigError`` naming the key."""
    carry = carry_subaccounts(portfolio)
    if not carry:
        return None
    path = funding_file(portfolio, data_location(panel))
    params = {name: carry_params(sub.params) for name, sub in carry.items()}
    venues = {p.venue for p in params.values()}
    if len(venues) > 1:
        raise portfolio.error(
            f"subaccounts: carry subaccounts must share one funding venue, not {sorted(venues)}"
        )
    table = None
    if path is not None:
        try:
            table = read_funding_file(path, venue=next(iter(venues)))
        except DataError as exc:
            raise portfolio.error(f"backtest.funding: {exc}") from None
    problems: list[str] = []
    symbols: list[str] = []
    for name, sub in carry.items():
        traded = sub.traded_symbols()
        if not traded:
            problems.append(
                f"subaccounts.{name}.symbols: carry needs its spot legs, e.g. [BTCUSDT]"
            )
            continue
        symbols += [s for s in traded if s not in symbols]
    if problems:
        raise portfolio.error(*problems)
    (venue,) = venues
    perp_bars = perpetual_bars(portfolio, panel, symbols, context)
    try:
        market = prepare_carry_market(panel, symbols, table, venue=venue, perp_bars=perp_bars)
    except ValueError as exc:
        names = ", ".join(carry)
        raise portfolio.error(f"subaccounts.{names}: {exc} (funding file {path})") from None
    # Every window the carry may read: its own, and a walk-forward grid's.
    windows = {p.window for p in params.values()}
    for sub in carry.values():
        grid = sub.walk_forward.grid if sub.walk_forward is not None else {}
        for key, values in grid.items():
            if key.partition("__")[2] == "window" or key == "window":
                windows |= {int(v) for v in values}
    features = {
        f"funding_apr_{w}": funding_feature(market.panel, market.funding, window=w)
        for w in sorted(windows)
    }
    ctx = carry_context(context, market, features)
    return CarryWiring(
        market.panel,
        ctx,
        carry_members(portfolio, members, market.panel),
        dict(market.instruments),
        dict(market.funding),
        path,
    )


def carry_members(
    portfolio: Portfolio, members: Mapping[str, pd.DataFrame | None], panel: Panel
) -> dict[str, pd.DataFrame | None]:
    """``members`` over ``panel`` (with its ``-PERP`` columns): a carry subaccount's pairs
    are members where its spot leg is; no other subaccount has a perpetual column (one
    that took every listed symbol now takes every spot symbol)."""
    carry = carry_subaccounts(portfolio)
    perps = [s for s in panel.symbols if s.endswith(PERP_SUFFIX)]
    out: dict[str, pd.DataFrame | None] = {}
    for name, frame in members.items():
        if frame is None:
            full = pd.DataFrame(True, index=panel.index, columns=panel.symbols)
            full[perps] = False
            out[name] = full
            continue
        full = frame.reindex(
            index=panel.index, columns=list(panel.symbols), fill_value=False
        ).astype(bool)
        full[perps] = False
        if name in carry:
            for spot in carry[name].traded_symbols() or ():
                if spot in full.columns and perp_symbol(spot) in full.columns:
                    full[perp_symbol(spot)] = full[spot]
        out[name] = full
    return out
