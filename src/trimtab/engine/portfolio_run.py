"""A portfolio run: the subaccounts of a portfolio file over one account, one broker.

``run_portfolio`` loads the data the file and the options ask for, checks every symbol
against it, builds each subaccount's policy and guard from its section, the account
breaker from ``account:``, the transfer schedule and guard, runs the portfolio loop
(``trimtab.engine.backtest.PortfolioBacktest``) and measures the result.

Metrics conventions: a subaccount's metrics are computed on its equity with transfers
taken out (time-weighted, ``BacktestResult.nav``), so capital moved in or out is never a
return; ``end_equity`` is its real equity at the last close and ``net_transfers`` the
capital it received (USDT, < 0: it gave). The total's metrics are computed on the
account's total equity (transfers between subaccounts net out to zero).

Sleeve subaccounts (``strategy: market-making | copy | returns``) are simulated once per
run at their starting capital (``trimtab.engine.sleeve_run``); their ``result.json``
entry adds ``sleeve``: coverage, bars covered, capacity, regimes and the sleeve's own
summary. With a recorder, the allocator's records are decisions of ``*allocator`` in the
store, as ``trimtab run`` records them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from trimtab import __version__
from trimtab.analytics import compute_metrics, fees_paid, tracking_error, turnover
from trimtab.data import Panel
from trimtab.data.errors import DataError
from trimtab.domain import Account, Instrument
from trimtab.domain.decisions import json_ready
from trimtab.domain.transfers import TransferRequest
from trimtab.engine.backtest import (
    BacktestResult,
    PortfolioBacktest,
    Recorder,
    SubaccountSpec,
    TransferSource,
)
from trimtab.engine.carry_run import carry_members, wire_carry
from trimtab.engine.context import MarketContext
from trimtab.engine.portfolio_file import (
    STRATEGY_KINDS,
    Portfolio,
    SubaccountPlan,
    check_symbols,
    plan_subaccounts,
    transfer_guard,
    transfer_schedule,
)
from trimtab.engine.runner import RunSpec, find_btc, load_for_spec, select_members
from trimtab.engine.sleeve_run import SleeveState, build_sleeves, data_folder, sleeve_policies
from trimtab.execution.costs import CostModel
from trimtab.guard.breakers import CircuitBreaker
from trimtab.guard.safety import SafetyLayer
from trimtab.guard.transfers import TransferGuard
from trimtab.policy.transfers import TransferSchedule
from trimtab.strategies.allocator import Allocator, MarketState, Sleeve
from trimtab.strategies.base import Capacity

ProgressCallback = Callable[[int, int], None]

#: The name of the account's total in tables and in ``result.json``.
TOTAL = "total"
#: The name the allocator's decisions are recorded under (as ``trimtab.engine.live``'s).
ALLOCATOR = "*allocator"


@dataclass(frozen=True)
class PortfolioOptions:
    """The run's options from the command line: each data option given here (not None)
    wins over the file's ``backtest:`` block. Costs in bps, ``risk_free`` annual."""

    data: str | None = None
    start: str | None = None
    end: str | None = None
    timeframe: str | None = None
    costs: CostModel = field(default_factory=CostModel)
    risk_free: float = 0.0
    validation: str = "fail"
    walk_forward: bool = False


@dataclass
class PortfolioRun:
    """A finished portfolio run: per-subaccount results and metrics, the total's, the
    transfer records (``Transfer.to_dict`` rows), and the document for ``result.json``."""

    portfolio: Portfolio
    options: PortfolioOptions
    spec: RunSpec
    subaccounts: dict[str, BacktestResult]
    plans: dict[str, SubaccountPlan]
    equity: pd.Series
    metrics: dict[str, dict[str, float]]
    transfers: list[dict[str, Any]]
    account_state: pd.Series | None
    symbols: list[str]
    provenance: dict[str, Any]
    notes: list[str]
    allocations: list[dict[str, Any]] = field(default_factory=list)
    #: Each sleeve subaccount's ``SleeveState.describe()``.
    sleeves: dict[str, dict[str, Any]] = field(default_factory=dict)

    def equity_frame(self) -> pd.DataFrame:
        """Equity at each close (USDT): ``total`` then one column per subaccount."""
        frame = pd.DataFrame({n: r.equity for n, r in self.subaccounts.items()})
        frame.insert(0, TOTAL, self.equity)
        return frame

    def to_json(self) -> dict[str, Any]:
        """The portfolio's ``result.json`` (NaN and inf become null)."""
        index = self.equity.index
        subs = {}
        for name, r in self.subaccounts.items():
            plan = self.plans[name]
            subs[name] = {
                "strategy": plan.settings.strategy,
                "policy": r.policy,
                "exchange": plan.settings.exchange,
                "capital": plan.capital,
                "metrics": self.metrics[name],
                "final_state": (r.safety or {}).get("final_state"),
            }
            if name in self.sleeves:
                subs[name]["sleeve"] = self.sleeves[name]
        doc = {
            "portfolio": self.portfolio.source,
            "start": index[0].isoformat(),
            "end": index[-1].isoformat(),
            "timeframe": self.provenance.get("timeframe"),
            "symbols": self.symbols,
            "costs": asdict(self.options.costs),
            "initial_cash": self.portfolio.settings.total_capital,
            "risk_free": self.options.risk_free,
            "metrics": self.metrics[TOTAL],
            "subaccounts": subs,
            TOTAL: {"metrics": self.metrics[TOTAL]},
            "account": {
                "limits": self.portfolio.settings.account.limits.model_dump(mode="json"),
                "final_state": (
                    str(self.account_state.iloc[-1]) if self.account_state is not None else None
                ),
            },
            "transfers": self.transfers,
            "allocations": self.allocations,
            "data": self.provenance,
            "notes": self.notes,
            "trimtab_version": __version__,
        }
        return json_ready(doc)

    def subaccount_json(self, name: str) -> dict[str, Any]:
        """One subaccount's ``result.json``, shaped like a single run's."""
        r, plan = self.subaccounts[name], self.plans[name]
        index = r.equity.index
        return json_ready(
            {
                "subaccount": name,
                "policy": r.policy,
                "strategy": plan.settings.strategy,
                "exchange": plan.settings.exchange,
                "start": index[0].isoformat(),
                "end": index[-1].isoformat(),
                "timeframe": self.provenance.get("timeframe"),
                "initial_cash": plan.capital,
                "metrics": self.metrics[name],
                "settings": plan.settings.model_dump(mode="json"),
                "transfers": [t for t in self.transfers if name in (t.get("from"), t.get("to"))],
                "safety": r.safety,
                "dust": r.dust,
                **({"sleeve": self.sleeves[name]} if name in self.sleeves else {}),
                "trimtab_version": __version__,
            }
        )


class _Schedule:
    """The file's transfer schedule, and its allocator when it has one, as the loop asks
    for them (``requests``): dated transfers first, then the allocator's moves."""

    def __init__(self, schedule: TransferSchedule, allocator: Allocator | None = None) -> None:
        self.schedule = schedule
        self.allocator = allocator
        self._seen = 0

    def decisions(
        self, stamps: pd.DatetimeIndex, transfers: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[dict[str, Any]]]:
        """The allocator's records made at the close of ``stamps[-1]`` (the run's bars up
        to it) as decisions of ``ALLOCATOR``, numbered by allocation date from 0, with
        the bar's transfer records it asked for."""
        if self.allocator is None:
            return {}
        new = self.allocator.records[self._seen :]
        self._seen = len(self.allocator.records)
        if not new:
            return {}
        first = self.allocator.dates(stamps) - len(new)
        moved = [t for t in transfers if t.get("origin") == "allocator"]
        return {ALLOCATOR: [allocation_decision(first + j, r, moved) for j, r in enumerate(new)]}

    def allocations(self) -> list[dict[str, Any]]:
        """The allocator's records (none without an allocator)."""
        return list(self.allocator.records) if self.allocator is not None else []

    def requests(
        self,
        ts: pd.Timestamp,
        previous: pd.Timestamp | None,
        equity: Mapping[str, float] | None = None,
        history: Mapping[str, Any] | None = None,
    ) -> Sequence[TransferRequest]:
        if equity is None:
            if self.schedule.rebalance is not None:
                raise ValueError("rebalance_capital needs each subaccount's equity at the bar")
            return list(self.schedule.decide(ts, previous, {}))
        return file_transfer_requests(self.schedule, self.allocator, ts, previous, equity, history)


def file_transfer_requests(
    schedule: TransferSchedule,
    allocator: TransferSource | None,
    ts: pd.Timestamp,
    previous: pd.Timestamp | None,
    equity: Mapping[str, float],
    history: Mapping[str, Any] | None = None,
) -> list[TransferRequest]:
    """A portfolio file's transfer requests at the close of ``ts``, in the order a
    backtest and the runner both ask for them: the dated transfers and the
    ``rebalance_capital`` rule (``schedule``), then the allocator's moves (none without
    one). ``equity``: each subaccount's at that close, before any transfer (USDT)."""
    out = list(schedule.decide(ts, previous, equity))
    if allocator is not None:
        out += allocator.requests(ts, previous, equity, history)
    return out


def allocation_decision(
    number: int, record: Mapping[str, Any], transfers: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """An allocation record as a decision record: its summary and each strategy's why
    as reasons, the record itself, and the transfers it asked for (as the guard left
    them)."""
    reasons = [{"code": "allocation", "message": str(record.get("summary", ""))}]
    for name, part in (record.get("strategies") or {}).items():
        values = {
            k: part[k]
            for k in ("share_before", "share_target", "score", "sharpe_shrunk", "capacity_usdt")
            if k in part
        }
        reasons.append(
            {
                "code": "allocation_share",
                "message": f"{name}: {part.get('why', '')}",
                "values": values,
            }
        )
    return json_ready(
        {
            "id": number,
            "timestamp": record["timestamp"],
            "policy": "allocator",
            "action": "allocate" if record.get("moves") else "hold",
            "reasons": reasons,
            "allocation": dict(record),
            "transfers": [dict(t) for t in transfers],
        }
    )


def make_allocator(settings: Any, prep: PreparedPortfolio) -> Allocator | None:
    """The file's allocator over the run's market (None without an ``allocator:``)."""
    rule = settings.allocator
    if rule is None:
        return None
    names = rule.subaccounts or tuple(settings.subaccounts)
    plans = {p.name: p for p in prep.plans}
    market = prep.context.market
    sleeves = []
    for name in names:
        plan = plans[name]
        sleeve = prep.sleeves.get(name)
        if sleeve is not None:
            sleeves.append(_allocated_sleeve(sleeve))
            continue
        declared = plan.declared
        members = None
        if plan.members is not None:
            members = (
                plan.members.reindex(index=market.index, columns=list(market.symbols))
                .fillna(False)
                .to_numpy(bool)
            )
        sleeves.append(
            Sleeve(
                name,
                regimes=declared.regimes if declared is not None else (),
                capacity=declared.capacity if declared is not None else Capacity(None),
                members=members,
            )
        )
    high_vol = prep.context.features.get("market_high_vol")
    n = len(market.index)
    state = MarketState(
        index=market.index,
        close=market.close,
        quote_volume=market.quote_volume,
        live=market.live,
        high_vol=high_vol if high_vol is not None else np.full(n, np.nan),
        bars_per_day=prep.panel.periods_per_year / 365.0,
    )
    return Allocator(rule, sleeves, state, periods_per_year=prep.panel.periods_per_year)


def _allocated_sleeve(state: SleeveState) -> Sleeve:
    """A sleeve subaccount as the allocator sees it: the simulation's capacity (none
    without data: it cannot use capital) and regimes, the bars its data covers."""
    run = state.run
    capacity = 0.0 if run is None else float(run.capacity)
    return Sleeve(
        state.name,
        regimes=tuple(run.regimes) if run is not None else (),
        capacity_usdt=capacity if math.isfinite(capacity) else None,
        covered=state.covered,
        history_name=f"bars with {state.data_name}",
    )


class _Guard:
    """The transfer guard as the loop calls it: the subaccounts' breaker states are read
    from their safety layers."""

    def __init__(self, guard: TransferGuard) -> None:
        self.guard = guard

    def check(
        self,
        request: TransferRequest,
        account: Account,
        marks: Mapping[str, float],
        safeties: Mapping[str, SafetyLayer],
        ts: pd.Timestamp,
    ) -> Any:
        states = {name: s.trading_state for name, s in safeties.items()}
        return self.guard.check(request, account, marks, states)


class _Members:
    """A policy that sees only its subaccount's universe: ``members`` is a boolean
    (bar x symbol) array over the run's market, ANDed into each observation's universe
    for the decision (and put back after it)."""

    def __init__(self, policy: Any, members: np.ndarray) -> None:
        self.policy = policy
        self.members = members
        self.name = policy.name

    def reset(self, symbols: tuple[str, ...], periods_per_year: float) -> None:
        self.policy.reset(symbols, periods_per_year)

    def decide(self, obs: Any, assessment: Any) -> Any:
        shared = obs.universe
        # A live market grows past the mask it was built on; live runs name their
        # symbols (no universe), so the last row holds for every later bar.
        obs.universe = shared & self.members[min(obs.i, len(self.members) - 1)]
        try:
            return self.policy.decide(obs, assessment)
        finally:
            obs.universe = shared

    def telemetry(self) -> Any:
        return self.policy.telemetry()

    def state(self) -> dict[str, Any]:
        return self.policy.state()

    def restore(self, state: dict[str, Any]) -> None:
        self.policy.restore(state)


def data_spec(portfolio: Portfolio, options: PortfolioOptions) -> RunSpec:
    """The data options of the run: the CLI's where given, else the file's."""
    b = portfolio.settings.backtest
    return RunSpec(
        data=options.data if options.data is not None else portfolio.data_path,
        start=options.start if options.start is not None else b.start,
        end=options.end if options.end is not None else b.end,
        timeframe=options.timeframe if options.timeframe is not None else b.timeframe,
        validation=options.validation,
    )


def subaccount_members(
    portfolio: Portfolio, panel: Panel, btc: str | None
) -> dict[str, pd.DataFrame | None]:
    """Each subaccount's membership over ``panel`` (None: every listed symbol)."""
    out: dict[str, pd.DataFrame | None] = {}
    for name, sub in portfolio.settings.subaccounts.items():
        if sub.is_sleeve:  # no bar position: a member of nothing
            out[name] = pd.DataFrame(False, index=panel.index, columns=panel.symbols)
            continue
        symbols = sub.traded_symbols()
        if sub.strategy == "btc-hold" and btc is not None:
            symbols = (btc,)
        if symbols is not None:
            frame = pd.DataFrame(False, index=panel.index, columns=panel.symbols)
            frame[list(symbols)] = True
            out[name] = frame
        elif sub.universe is not None and sub.universe.strip().lower() != "all":
            out[name] = select_members(panel, RunSpec(universe=sub.universe))[1]
        else:
            out[name] = None
    return out


@dataclass(frozen=True)
class PreparedPortfolio:
    """A portfolio file made ready to run over data: the panel of the symbols some
    subaccount may trade, the market context (features, universe, regime), each
    subaccount's plan and its ``SubaccountSpec`` (policy restricted to its members);
    with a carry subaccount, the perpetuals' ``instruments`` and ``funding``."""

    spec: RunSpec
    panel: Panel
    context: MarketContext
    plans: list[SubaccountPlan]
    specs: list[SubaccountSpec]
    instruments: dict[str, Instrument] | None = None
    funding: dict[str, pd.Series] | None = None
    sleeves: dict[str, SleeveState] = field(default_factory=dict)


def prepare_portfolio(
    portfolio: Portfolio,
    options: PortfolioOptions,
    panel: Panel | None = None,
    reuse: PreparedPortfolio | None = None,
) -> PreparedPortfolio:
    """What a backtest and the runner both build from the file before their first bar.

    ``reuse``: an earlier preparation of the same file, options and data, whose panel
    and market context are taken as they are; the plans (policies, guards) are new, so
    a second run starts from nothing the first one changed (a benchmark's repeats)."""
    spec = data_spec(portfolio, options)
    panel = panel if panel is not None else load_for_spec(spec)
    btc = find_btc(panel.symbols)
    check_symbols(portfolio, panel, btc)
    members = subaccount_members(portfolio, panel, btc)
    # Only the symbols some subaccount may trade are simulated (all of them if one takes
    # every listed symbol).
    settings = portfolio.settings
    only_sleeves = all(s.is_sleeve for s in settings.subaccounts.values())
    if all(m is not None for m in members.values()) and not only_sleeves:
        used = [s for s in panel.symbols if any(bool(m[s].any()) for m in members.values())]
        if not used:
            raise DataError("no subaccount has a symbol to trade in the data")
        panel = panel.select(used)
        members = {n: m[used] for n, m in members.items()}  # type: ignore[index]
    if reuse is not None:
        if reuse.funding is not None:
            members = carry_members(portfolio, members, reuse.panel)
        return replace(
            _planned(
                portfolio,
                options,
                spec,
                reuse.panel,
                reuse.context,
                members,
                btc,
                reuse.sleeves,
            ),
            instruments=reuse.instruments,
            funding=reuse.funding,
        )
    union = None
    if all(m is not None for m in members.values()):
        union = np.logical_or.reduce([m.to_numpy(bool) for m in members.values()])  # type: ignore[union-attr]
        union = pd.DataFrame(union, index=panel.index, columns=panel.symbols)
    context = MarketContext.build(
        panel,
        universe=union,
        start=spec.start,
        end=spec.end,
        with_regime=settings.allocator is not None
        or any(s.strategy in ("managed", *STRATEGY_KINDS) for s in settings.subaccounts.values()),
    )
    # Sleeves: simulated once, at their starting capital, over the run's bars.
    sleeves: dict[str, SleeveState] = {}
    if any(s.is_sleeve for s in settings.subaccounts.values()):
        sleeves = build_sleeves(
            portfolio,
            context.market.index,
            panel.timeframe,
            context.start_i,
            context.end_i,
            data_folder(spec.data, panel.provenance),
        )
    # Carry: the -PERP columns, members of their carry subaccount only, and their funding.
    carry = wire_carry(portfolio, panel, context, members)
    if carry is None:
        return _planned(portfolio, options, spec, panel, context, members, btc, sleeves)
    return replace(
        _planned(portfolio, options, spec, carry.panel, carry.context, carry.members, btc, sleeves),
        instruments=carry.instruments,
        funding=carry.funding,
    )


def _planned(
    portfolio: Portfolio,
    options: PortfolioOptions,
    spec: RunSpec,
    panel: Panel,
    context: MarketContext,
    members: Mapping[str, pd.DataFrame | None],
    btc: str | None,
    sleeves: Mapping[str, SleeveState] | None = None,
) -> PreparedPortfolio:
    """Each subaccount's plan and spec over a built context."""
    sleeves = dict(sleeves or {})
    plans = plan_subaccounts(
        portfolio,
        members,
        btc,
        options.costs,
        options.walk_forward,
        sleeves=sleeve_policies(sleeves),
    )
    specs = []
    for plan in plans:
        policy: Any = plan.policy
        if plan.name in sleeves:
            specs.append(
                SubaccountSpec(
                    plan.name,
                    policy,
                    plan.capital,
                    safety=plan.safety,
                    sleeve=sleeves[plan.name].bars,
                )
            )
            continue
        if plan.members is not None:
            mask = plan.members.reindex(index=context.market.index, columns=list(panel.symbols))
            policy = _Members(policy, mask.fillna(False).to_numpy(bool))
        specs.append(SubaccountSpec(plan.name, policy, plan.capital, safety=plan.safety))
    return PreparedPortfolio(spec, panel, context, plans, specs, sleeves=sleeves)


def run_portfolio(
    portfolio: Portfolio,
    options: PortfolioOptions | None = None,
    panel: Panel | None = None,
    progress: ProgressCallback | None = None,
    recorder: Recorder | None = None,
) -> PortfolioRun:
    """Run every subaccount of ``portfolio`` over one account (see the module docstring);
    ``recorder`` records the run and resumes it (``trimtab.engine.recording``)."""
    options = options or PortfolioOptions()
    prep = prepare_portfolio(portfolio, options, panel)
    spec, panel, context, plans = prep.spec, prep.panel, prep.context, prep.plans
    settings = portfolio.settings
    schedule = transfer_schedule(settings)
    index = context.index
    notes = schedule.not_made(index[0], index[-1])
    notes += [n for n in (state.note() for state in prep.sleeves.values()) if n]
    loop = portfolio_backtest(portfolio, prep, options)
    result = loop.run(progress, recorder)
    metrics = {
        name: _subaccount_metrics(r, options, panel.close, sleeve=name in prep.sleeves)
        for name, r in result.subaccounts.items()
    }
    metrics[TOTAL] = _total_metrics(result.subaccounts, result.equity, options)
    traded = context.universe[context.start_i : context.end_i + 1].any(axis=0)
    symbols = [s for s, t in zip(context.market.symbols, traded, strict=True) if t]
    return PortfolioRun(
        portfolio=portfolio,
        options=options,
        spec=spec,
        subaccounts=result.subaccounts,
        plans={p.name: p for p in plans},
        equity=result.equity,
        metrics=metrics,
        transfers=list(result.transfers),
        account_state=result.account_state,
        symbols=symbols,
        provenance=dict(panel.provenance),
        notes=notes,
        allocations=_allocations(loop, result, recorder),
        sleeves={name: state.describe() for name, state in prep.sleeves.items()},
    )


def _allocations(
    loop: PortfolioBacktest, result: Any, recorder: Recorder | None = None
) -> list[dict[str, Any]]:
    """The allocator's records of the run: those it made in this process when it ran
    every bar, else (resumed or read back from a store) those the store holds as
    decisions of ``ALLOCATOR``, else (a store written before it held them) the same
    records made again from the run's equity and transfers."""
    source = loop.transfers
    if not isinstance(source, _Schedule) or source.allocator is None:
        return []
    allocator = source.allocator
    made = source.allocations()
    index = result.equity.index
    due = allocator.dates(index)
    if len(made) == due:
        return made
    store, run_id = getattr(recorder, "store", None), getattr(recorder, "run_id", None)
    if store is not None and run_id is not None:
        rows = sorted(store.decisions(run_id, subaccount=ALLOCATOR), key=lambda d: d["id"])
        stored = [d.get("allocation") for d in rows]
        if len(stored) == due and all(isinstance(r, dict) for r in stored):
            return stored  # type: ignore[return-value]
    subs = result.subaccounts
    equity = {n: subs[n].equity.to_numpy(float) for n in allocator.names}
    flows = {
        n: (subs[n].flows if subs[n].flows is not None else subs[n].equity * 0.0).to_numpy(float)
        for n in allocator.names
    }
    return allocator.replay(index, equity, flows)


def portfolio_backtest(
    portfolio: Portfolio, prep: PreparedPortfolio, options: PortfolioOptions
) -> PortfolioBacktest:
    """The loop of ``run_portfolio`` over a prepared portfolio: its subaccounts, the
    account breaker, the transfer schedule and the transfer guard."""
    settings = portfolio.settings
    account = settings.account
    return PortfolioBacktest(
        prep.context,
        prep.specs,
        costs=options.costs,
        instruments=prep.instruments,
        funding=prep.funding,
        account_breaker=CircuitBreaker(account.breakers, account.limits, scope="account"),
        transfers=_Schedule(transfer_schedule(settings), make_allocator(settings, prep)),
        transfer_guard=_Guard(transfer_guard(settings)),
    )


def _subaccount_metrics(
    r: BacktestResult, options: PortfolioOptions, close: pd.DataFrame, sleeve: bool = False
) -> dict[str, float]:
    """``sleeve``: its exposure is the simulation's, which the run does not see (none)."""
    nav = r.nav
    trades = _fees_in_quote(r.trades)
    out = compute_metrics(
        nav,
        periods_per_year=r.periods_per_year,
        risk_free=options.risk_free,
        trades=trades,
        gross_exposure=None if sleeve else r.gross_exposure,
    )
    _after_buy_in(out, trades, r.equity, r.periods_per_year)
    out["tracking_error"] = (
        tracking_error(nav, r.target_weights, close, r.periods_per_year)
        if r.target_weights is not None
        else float("nan")
    )
    out["end_equity"] = float(r.equity.iloc[-1])
    out["net_transfers"] = float(r.flows.sum()) if r.flows is not None else 0.0
    return out


def _total_metrics(
    subaccounts: Mapping[str, BacktestResult], equity: pd.Series, options: PortfolioOptions
) -> dict[str, float]:
    trades = pd.concat(
        [_fees_in_quote(r.trades) for r in subaccounts.values()], ignore_index=True
    ).sort_values("timestamp", kind="stable")
    gross = sum(
        (r.gross_exposure * r.equity).fillna(0.0) for r in subaccounts.values()
    )  # USDT of gross exposure, all subaccounts
    with np.errstate(invalid="ignore", divide="ignore"):
        exposure = gross / equity.where(equity > 0)
    first = next(iter(subaccounts.values()))
    out = compute_metrics(
        equity,
        periods_per_year=first.periods_per_year,
        risk_free=options.risk_free,
        trades=trades,
        gross_exposure=exposure,
    )
    _after_buy_in(out, trades, equity, first.periods_per_year)
    out["net_transfers"] = 0.0
    if not math.isfinite(out.get("end_equity", float("nan"))):
        out["end_equity"] = float(equity.iloc[-1])
    return out


def _after_buy_in(
    out: dict[str, float], trades: pd.DataFrame, equity: pd.Series, periods_per_year: float
) -> None:
    """Turnover and fees of rebalancing, apart from buying into the book the first time."""
    later = trades[~trades["reason"].astype(str).str.startswith("initial")]
    out["rebalance_turnover"] = turnover(later, equity, periods_per_year)
    out["rebalance_fees"] = fees_paid(later)


def _fees_in_quote(trades: pd.DataFrame) -> pd.DataFrame:
    """Trade rows as the metrics read them: ``fee`` valued in quote (USDT)."""
    out = trades[["timestamp", "symbol", "side", "quantity", "price", "reason"]].copy()
    out["fee"] = trades["fee_quote"]
    return out
