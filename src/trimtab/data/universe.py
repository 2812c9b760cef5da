"""Universes: which assets a strategy may hold at each bar, without survivorship bias.

``select_universe`` returns a boolean timestamp x symbol frame. It is causal: membership
at bar t depends only on data up to and including bar t (cutting the panel after t
changes nothing up to t), and it is always ANDed with ``panel.live`` so that an asset is
a member only while it is listed.

A ranked universe may be buffered (``top:20/30,stay:30``; see ``buffered_membership``):
an asset enters at rank 20 or better and leaves only past rank 30, after at least 30
bars as a member. Re-ranking is most of a rebalancing rule's turnover; the buffer keeps
the assets that hover around rank N from going in and out every month.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from trimtab.data.calendar import calendar_mask
from trimtab.data.errors import DataError
from trimtab.data.panel import Panel
from trimtab.data.symbols import base_asset, to_symbol

Rebalance = Literal["monthly", "weekly", "daily"]
RankBy = Literal["quote_volume", "market_cap"]
REBALANCE_CHOICES = ("monthly", "weekly", "daily")
RANK_CHOICES = ("quote_volume", "market_cap")


def rebalance_mask(index: pd.DatetimeIndex, rebalance: Rebalance) -> np.ndarray:
    """True on the first bar of each UTC month / ISO week (Monday) / day, and on bar 0."""
    if rebalance not in REBALANCE_CHOICES:
        raise DataError(
            f"rebalance must be one of {', '.join(REBALANCE_CHOICES)}, not {rebalance!r}"
        )
    return calendar_mask(index, rebalance)


def market_cap_panel(
    caps: pd.DataFrame, panel: Panel, *, max_age: str | pd.Timedelta = "7D"
) -> pd.DataFrame:
    """Market caps aligned to ``panel`` (timestamp x panel symbol), causally.

    ``caps`` is long (``timestamp, symbol, market_cap``, as from ``read_market_caps``,
    symbols being base assets such as ``BTC``) or already wide (columns = base assets or
    panel symbols). A panel symbol maps to a base asset by stripping its quote
    (``BTCUSDT`` -> ``BTC``, ``ARBUSD`` -> ``AR``: Arweave against BUSD). Each panel bar
    gets the last value stamped at or before its timestamp, no older than ``max_age``
    (a source that stops updating must not rank an asset forever on its last value).
    """
    if {"timestamp", "symbol", "market_cap"} <= set(caps.columns):
        wide = caps.pivot_table(
            index="timestamp", columns="symbol", values="market_cap", aggfunc="last"
        )
    else:
        wide = caps
    wide = wide.sort_index()
    if wide.index.tz is None:
        raise DataError("market caps need UTC timestamps")
    tolerance = pd.Timedelta(max_age)
    out = {}
    for sym in panel.symbols:
        col = sym if sym in wide.columns else base_asset(sym)
        if col is None or col not in wide.columns:
            out[sym] = pd.Series(np.nan, index=panel.index)
            continue
        s = wide[col].dropna()
        s = s[~s.index.duplicated(keep="last")]
        out[sym] = s.reindex(panel.index, method="ffill", tolerance=tolerance)
    return pd.DataFrame(out, index=panel.index)


def buffered_membership(
    ranks: pd.DataFrame,
    enter: int,
    exit: int,
    min_stay: int = 0,
    *,
    live: pd.DataFrame | None = None,
    reselect: np.ndarray | pd.Series | None = None,
) -> pd.DataFrame:
    """Boolean membership (the shape of ``ranks``) of a universe with a rank buffer.

    ``ranks``: each symbol's rank at each bar (1 = best); inf = listed but not ranked
    (not eligible). ``live``: the symbol is listed at that bar; None: listed where
    ``ranks`` is not NaN (with ``live`` given, NaN is just not ranked). ``reselect``: the bars where ranks are read (None: every bar);
    ranks on other bars are ignored. At a reselection bar, in this order:

    - a member leaves when its rank is worse than ``exit`` (or it is not ranked) and it
      has been a member for at least ``min_stay`` bars (bars of the index: days on daily
      bars; a member that entered at bar e may leave at bar e + min_stay);
    - a non-member with a rank of ``enter`` or better becomes a member.

    Between reselections membership holds, except that a symbol that is not live leaves
    at once, whatever its stay (never hold a dead asset), and counts as new if it comes
    back. So after every reselection the ``enter`` best-ranked live symbols are members;
    without a minimum stay every member ranks ``exit`` or better, so there are at most
    ``exit`` members; a minimum stay can keep recent entrants beyond that. Causal: the
    loop runs forward, membership at bar t reads rows up to t only.
    """
    if not (_is_int(enter) and enter >= 1):
        raise DataError(f"entry rank must be a whole number >= 1, not {enter!r}")
    if not (_is_int(exit) and exit >= enter):
        raise DataError(f"exit rank {exit!r} is below the entry rank {enter}")
    if not (_is_int(min_stay) and min_stay >= 0):
        raise DataError(f"minimum stay must be a whole number of bars >= 0, not {min_stay!r}")
    r = ranks.to_numpy(dtype=float)
    if live is None:
        alive = ~np.isnan(r)
    else:
        if live.shape != ranks.shape:
            raise DataError(f"live has shape {live.shape}, ranks {ranks.shape}")
        alive = live.to_numpy(dtype=bool)
    n_bars, n_syms = r.shape
    if reselect is None:
        at = np.ones(n_bars, dtype=bool)
    else:
        at = np.asarray(reselect, dtype=bool)
        if at.shape != (n_bars,):
            raise DataError(f"reselect has {at.size} bars, ranks {n_bars}")
    r = np.where(np.isnan(r), np.inf, r)
    member = np.zeros(n_syms, dtype=bool)
    since = np.zeros(n_syms, dtype=np.int64)
    out = np.zeros((n_bars, n_syms), dtype=bool)
    for t in range(n_bars):
        member &= alive[t]  # a delisting ends membership now, not at the next reselection
        if at[t]:
            rank = np.where(alive[t], r[t], np.inf)
            member &= ~((rank > exit) & (t - since >= min_stay))
            joins = ~member & (rank <= enter)
            member |= joins
            since[joins] = t
        out[t] = member
    return pd.DataFrame(out, index=ranks.index, columns=ranks.columns)


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def select_universe(
    panel: Panel,
    *,
    symbols: list[str] | None = None,
    top: int | None = None,
    by: RankBy = "quote_volume",
    lookback: int = 30,
    rebalance: Rebalance = "monthly",
    min_history: int | None = None,
    market_caps: pd.DataFrame | None = None,
    exit_rank: int | None = None,
    min_stay: int = 0,
) -> pd.DataFrame:
    """Boolean membership (timestamp x symbol, the panel's shape) of the universe.

    - ``symbols`` only: those symbols, members whenever they are live.
    - ``top=N``: at each rebalance bar (see ``rebalance_mask``) the N eligible assets with
      the highest score are chosen and held until the next rebalance; with ``symbols`` as
      well, only those compete. Score: mean ``quote_volume`` over the trailing
      ``lookback`` bars ending at (and including) the rebalance bar, or with
      ``by="market_cap"`` the latest market cap (``market_caps``: long frame from
      ``read_market_caps`` or a wide timestamp x symbol frame; see ``market_cap_panel``).
      Eligible: live at the rebalance bar, a score, and at least ``min_history`` live bars
      so far (None: no minimum). Ties go to the alphabetically first symbol.
    - ``top=N`` with ``exit_rank=M`` (M >= N) and/or ``min_stay`` (bars): buffered, see
      ``buffered_membership``; ranks are read at the rebalance bars, a member leaves
      only past rank M after ``min_stay`` bars (or at once when it delists), so there
      are between N and M members after each rebalance (fewer when fewer than N are
      eligible, more while a minimum stay holds recent entrants).
      ``exit_rank=N, min_stay=0`` is plain ``top=N``.
    - neither: every live asset.

    Membership is always ANDed with ``panel.live``: a member that delists mid-period
    leaves at once and its slot stays empty until the next rebalance; a new listing can
    join only at a rebalance.
    """
    live = panel.live
    columns = panel.symbols
    candidates = pd.Series(True, index=columns)
    if symbols is not None:
        wanted = [to_symbol(s) for s in symbols]
        unknown = [s for s in wanted if s not in columns]
        if unknown:
            raise DataError(
                f"unknown symbol(s) {', '.join(unknown)}; available: {', '.join(columns)}"
            )
        candidates[:] = False
        candidates[wanted] = True
    if top is None:
        return live & candidates.to_numpy()[None, :]
    if top < 1:
        raise DataError(f"top must be at least 1, not {top}")
    if lookback < 1:
        raise DataError(f"lookback must be at least 1 bar, not {lookback}")
    if by not in RANK_CHOICES:
        raise DataError(f"by must be one of {', '.join(RANK_CHOICES)}, not {by!r}")
    if exit_rank is not None and not (_is_int(exit_rank) and exit_rank >= top):
        raise DataError(f"exit rank {exit_rank!r} is below the entry rank {top}")
    if not (_is_int(min_stay) and min_stay >= 0):
        raise DataError(f"minimum stay must be a whole number of bars >= 0, not {min_stay!r}")
    buffered = (exit_rank is not None and exit_rank > top) or min_stay > 0

    if by == "quote_volume":
        score = panel.quote_volume.rolling(lookback, min_periods=1).mean()
    else:
        if market_caps is None:
            raise DataError("by='market_cap' needs market_caps (e.g. from read_market_caps)")
        score = market_cap_panel(market_caps, panel)
    history = live.cumsum()
    eligible = live & score.notna() & candidates.to_numpy()[None, :]
    if min_history:
        eligible &= history >= min_history

    at = rebalance_mask(panel.index, rebalance)
    s = score.to_numpy(dtype=float)[at]
    e = eligible.to_numpy()[at]
    s = np.where(e, s, -np.inf)
    # Stable sort on the negated score: ties keep column (alphabetical) order.
    order = np.argsort(-s, axis=1, kind="stable")
    rank = np.empty_like(order)
    rows = np.arange(order.shape[0])[:, None]
    rank[rows, order] = np.arange(order.shape[1])[None, :]
    if buffered:
        ranks = np.full(live.shape, np.nan)
        ranks[at] = np.where(e, rank + 1, np.inf)  # 1-based; inf: listed, not eligible
        frame = pd.DataFrame(ranks, index=panel.index, columns=columns)
        exit_at = top if exit_rank is None else exit_rank
        return buffered_membership(frame, top, exit_at, min_stay, live=live, reselect=at)
    chosen = (rank < top) & e
    # Each bar holds the choice of the latest rebalance at or before it (bar 0 always is one).
    held = chosen[np.cumsum(at) - 1] if len(at) else np.zeros(live.shape, dtype=bool)
    return live & held


@dataclass(frozen=True)
class UniverseSpec:
    """A parsed universe description; ``kwargs()`` feeds ``select_universe``."""

    symbols: tuple[str, ...] | None = None
    top: int | None = None
    by: RankBy = "quote_volume"
    #: Leave only past this rank (None: past ``top``); see ``buffered_membership``.
    exit_rank: int | None = None
    #: Bars a member stays at least (days on daily bars) unless it delists.
    min_stay: int = 0

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"by": self.by}
        if self.symbols is not None:
            out["symbols"] = list(self.symbols)
        if self.top is not None:
            out["top"] = self.top
        if self.exit_rank is not None:
            out["exit_rank"] = self.exit_rank
        if self.min_stay:
            out["min_stay"] = self.min_stay
        return out


def parse_universe(text: str) -> UniverseSpec:
    """Parse ``"all"``, ``"top:20"``, ``"top:20:market_cap"`` or ``"BTCUSDT,ETH/USDT"``.

    A ranked universe may carry a buffer: ``"top:20/30"`` enters at rank 20 and leaves
    past rank 30; ``",stay:30"`` keeps a member at least 30 bars (days on daily bars):
    ``"top:20/30,stay:30"``, ``"top:20/30:mcap,stay:30"``.
    ``select_universe(panel, **parse_universe("top:20").kwargs())``.
    """
    raw = text.strip()
    if not raw:
        raise DataError("empty universe; use 'all', 'top:N' or a list like 'BTCUSDT,ETHUSDT'")
    if raw.lower() == "all":
        return UniverseSpec()
    if raw.lower().startswith("top:"):
        return _parse_top(text, raw)
    symbols = tuple(to_symbol(s.strip()) for s in raw.split(",") if s.strip())
    if not symbols:
        raise DataError(f"bad universe {text!r}")
    return UniverseSpec(symbols=symbols)


def _parse_top(text: str, raw: str) -> UniverseSpec:
    """``top:N[/M][:by][,stay:K]``; every mistake named with the text it was found in."""
    head, *options = (p.strip() for p in raw.split(","))
    min_stay = 0
    for option in options:
        key, sep, value = option.partition(":")
        if key.strip().lower() != "stay" or not sep:
            raise DataError(
                f"bad universe {text!r}: unknown option {option!r}; "
                "the only option is stay:K (bars), e.g. 'top:20/30,stay:30'"
            )
        min_stay = _whole(value)
        if min_stay is None:
            raise DataError(
                f"bad universe {text!r}: stay must be a whole number of bars >= 0, "
                f"not {value.strip()!r}"
            )
    parts = head.split(":")
    enter_text, _, exit_text = parts[1].partition("/") if len(parts) > 1 else ("", "", "")
    n = _whole(enter_text)
    if not n or len(parts) > 3:
        raise DataError(
            f"bad universe {text!r}: expected 'top:N' with N >= 1, e.g. 'top:20' "
            "or 'top:20/30,stay:30'"
        )
    exit_rank = None
    if exit_text or "/" in parts[1]:
        exit_rank = _whole(exit_text)
        if exit_rank is None:
            raise DataError(
                f"bad universe {text!r}: the exit rank after '/' must be a whole number, "
                f"not {exit_text.strip()!r}"
            )
        if exit_rank < n:
            raise DataError(
                f"bad universe {text!r}: exit rank {exit_rank} is below the entry rank {n}"
            )
    by = parts[2].strip().lower() if len(parts) == 3 else "quote_volume"
    by = {"volume": "quote_volume", "mcap": "market_cap", "marketcap": "market_cap"}.get(by, by)
    if by not in RANK_CHOICES:
        raise DataError(
            f"bad universe {text!r}: rank by {', '.join(RANK_CHOICES)}, not {parts[2]!r}"
        )
    return UniverseSpec(top=n, by=by, exit_rank=exit_rank, min_stay=min_stay)  # type: ignore[arg-type]


def _whole(text: str) -> int | None:
    """A whole number >= 0 written in ``text``, or None."""
    t = text.strip()
    return int(t) if t.isascii() and t.isdigit() else None
