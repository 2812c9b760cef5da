"""A comparison run: one policy beside the baselines, over the same data and costs."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from trimtab import __version__
from trimtab.analytics import compute_metrics, tracking_error
from trimtab.analytics.metrics import fees_paid, turnover
from trimtab.config import TrimtabConfig, load_config
from trimtab.data import (
    Panel,
    find_data_dir,
    load_panel,
    parse_universe,
    select_universe,
)
from trimtab.data.errors import DataError
from trimtab.data.panel import to_utc
from trimtab.data.sample import provenance as sample_provenance
from trimtab.engine.backtest import Backtest, BacktestConfig, BacktestResult, Recorder
from trimtab.engine.context import MarketContext
from trimtab.execution.costs import CostModel
from trimtab.guard.safety import SafetyLayer
from trimtab.policy import BASELINES, POLICIES, Managed, make_policy
from trimtab.policy.policies import RebalancedEqualWeight
from trimtab.policy.rebalance import parse_rule
from trimtab.risk.score import score_min_bars

# Days of history loaded before --start so the longest trailing windows (the risk
# score's 365-day drawdown and 200-day trend) are warm on the first traded bar.
WARMUP_DAYS = 400
UNIVERSE_LOOKBACK = 30

StepProgress = Callable[[str, int, int], None]


ALL_RULES = (
    "cost-aware",
    "calendar:daily",
    "calendar:weekly",
    "calendar:monthly",
    "threshold:0.05",
    "threshold:0.10",
)


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a backtest comparison. Costs in bps, cash in USDT."""

    policy: str = "managed"
    data: str | None = None
    start: str | None = None
    end: str | None = None
    symbols: tuple[str, ...] | None = None
    universe: str | None = None
    timeframe: str | None = None
    fee_bps: float = 10.0
    maker_fee_bps: float = 2.0
    half_spread_bps: float = 2.0
    impact_bps: float = 10.0
    initial_cash: float = 100_000.0
    risk_free: float = 0.0
    validation: str = "fail"
    baselines: tuple[str, ...] = BASELINES
    config: str | None = None
    rebalance: str | None = None
    spread: str = "fixed"
    max_volume_share: float = 0.10

    def __post_init__(self) -> None:
        if not 0 < self.max_volume_share <= 1:  # also refuses NaN
            raise ValueError(
                f"--max-volume-share must be a fraction in (0, 1], not {self.max_volume_share}"
            )
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; choose one of {', '.join(POLICIES)}")
        if self.symbols is not None and self.universe is not None:
            raise ValueError("give either --symbols or --universe, not both")
        if self.universe is not None:
            parse_universe(self.universe)  # raises a clear error on a bad spec
        if self.spread not in ("fixed", "bars"):
            raise ValueError(f"--spread must be 'fixed' or 'bars', not {self.spread!r}")
        if self.rebalance is not None:
            if self.policy != "equal-weight":
                raise ValueError("--rebalance applies to --policy equal-weight")
            for rule in self.rules:
                parse_rule(rule)

    @property
    def rules(self) -> tuple[str, ...]:
        """The rebalancing rules to compare: ``--rebalance a,b,c`` or ``all``; the first
        one runs as the policy under test, the others beside it."""
        if self.rebalance is None:
            return ()
        if self.rebalance.strip() == "all":
            return ALL_RULES
        return tuple(r.strip() for r in self.rebalance.split(",") if r.strip())

    @property
    def costs(self) -> CostModel:
        return CostModel(
            taker_fee_bps=self.fee_bps,
            maker_fee_bps=min(self.maker_fee_bps, self.fee_bps),
            half_spread_bps=self.half_spread_bps,
            impact_bps_at_1pct=self.impact_bps,
            spread=self.spread,  # type: ignore[arg-type]
            max_volume_share=self.max_volume_share,
        )


@dataclass
class Comparison:
    """The results of a comparison run, keyed by policy name (chosen policy first)."""

    spec: RunSpec
    results: dict[str, BacktestResult]
    metrics: dict[str, dict[str, float]]
    symbols: list[str]
    provenance: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``result.json`` document (NaN and inf become null)."""
        main = self.results[self.spec.policy]
        doc = {
            "policy": self.spec.policy,
            "start": main.equity.index[0].isoformat(),
            "end": main.equity.index[-1].isoformat(),
            "timeframe": self.provenance.get("timeframe"),
            "symbols": self.symbols,
            "universe": self.spec.universe or ("explicit" if self.spec.symbols else "all"),
            "fee_bps": self.spec.fee_bps,
            "costs": asdict(self.spec.costs),
            "initial_cash": self.spec.initial_cash,
            "risk_free": self.spec.risk_free,
            "metrics": self.metrics[self.spec.policy],
            "baselines": {name: m for name, m in self.metrics.items() if name != self.spec.policy},
            "data": self.provenance,
            "notes": self.notes,
            "safety": main.safety,
            "dust": main.dust,
            "trimtab_version": __version__,
        }
        return _json_safe(doc)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def find_btc(symbols: list[str]) -> str | None:
    """The BTC pair against a dollar stablecoin, if the data has one."""
    for quote in ("USDT", "USDC", "BUSD", "FDUSD", "USD"):
        if f"BTC{quote}" in symbols:
            return f"BTC{quote}"
    return None


def load_for_spec(spec: RunSpec) -> Panel:
    """Load the data a spec asks for, with warm-up history before ``start``."""
    location = find_data_dir(spec.data)  # never downloads: `trimtab data download` does
    panel = load_panel(location.path, timeframe=spec.timeframe, policy=spec.validation)
    if spec.start is not None:
        start = to_utc(spec.start)
        panel = panel.slice(start - pd.Timedelta(days=WARMUP_DAYS), spec.end)
    elif spec.end is not None:
        panel = panel.slice(None, spec.end)
    if len(panel.index) == 0 or not panel.symbols:
        raise DataError(f"no bars in {location.path} between {spec.start} and {spec.end}")
    panel.provenance["location"] = {"path": str(location.path), "how": location.how}
    if location.synthetic:
        panel.provenance.update(sample_provenance())  # result.json says it is not real
    return panel


def select_members(
    panel: Panel, spec: RunSpec, extra: list[str] | None = None
) -> tuple[Panel, pd.DataFrame | None]:
    """The panel narrowed to what the spec trades (plus ``extra`` symbols kept as data),
    and the universe membership frame (None: every listed asset)."""
    if spec.symbols:
        keep = list(dict.fromkeys([*spec.symbols, *(extra or [])]))
        try:
            panel = panel.select(keep)
        except KeyError as exc:
            raise DataError(str(exc.args[0])) from None
        members = pd.DataFrame(False, index=panel.index, columns=panel.symbols)
        members[list(spec.symbols)] = True
        return panel, members
    if spec.universe:
        # A listing needs a full ranking window before it can enter: listing-day volume
        # spikes would otherwise buy every new coin. And its risk score must be warm, so
        # that admission never means a silent zero weight (at any bar length).
        history = max(UNIVERSE_LOOKBACK, score_min_bars(panel.periods_per_year))
        return panel, select_universe(
            panel, **parse_universe(spec.universe).kwargs(), min_history=history
        )
    return panel, None


def run_comparison(
    spec: RunSpec,
    panel: Panel | None = None,
    progress: StepProgress | None = None,
    settings: TrimtabConfig | None = None,
    recorder: Recorder | None = None,
) -> Comparison:
    """Run ``spec.policy`` and the baselines over the same data and costs.

    ``settings`` replaces the file named by ``spec.config`` (for scripts). ``recorder``
    records the policy under test (and resumes it, ``trimtab.engine.recording``); the
    baselines are cheap and deterministic, and run again each time."""
    panel = panel if panel is not None else load_for_spec(spec)
    btc = find_btc(panel.symbols)
    notes: list[str] = []
    panel, universe = select_members(panel, spec, extra=[btc] if btc else [])
    # The regime model feeds the governor of the managed policy (filtered HMM, refit monthly).
    context = MarketContext.build(
        panel,
        universe=universe,
        start=spec.start,
        end=spec.end,
        with_regime=spec.policy == "managed",
    )
    config = BacktestConfig(initial_cash=spec.initial_cash, costs=spec.costs)
    user_config = settings or (load_config(spec.config) if spec.config else None)
    others = [f"equal-weight[{r}]" for r in spec.rules[1:]]
    names = [spec.policy, *others, *[b for b in spec.baselines if b != spec.policy]]
    results: dict[str, BacktestResult] = {}
    for name in names:
        if name == "btc-hold" and btc is None:
            notes.append("btc-hold skipped: the data has no BTC pair against a stablecoin")
            continue
        # The person's rebalance section configures the policy under test and the rules
        # beside it; baselines keep the defaults.
        cost_settings = (
            user_config.rebalance
            if user_config is not None and (name == spec.policy or name in others)
            else None
        )
        under_test = name == spec.policy
        if name in others:
            policy = RebalancedEqualWeight(
                name[len("equal-weight[") : -1], costs=spec.costs, settings=cost_settings
            )
        elif name == "managed" and under_test:
            # Managed always runs with the person's sizing and governor (the defaults
            # when no --config is given).
            run_config = user_config or TrimtabConfig()
            policy = Managed(
                run_config.sizing,
                governor=run_config.governor,
                costs=spec.costs,
                cost_settings=run_config.rebalance,
            )
        else:
            rule = spec.rules[0] if spec.rules else None
            policy = make_policy(
                name, btc, rebalance=rule, costs=spec.costs, cost_settings=cost_settings
            )
        safety = None
        if under_test and (user_config is not None or name == "managed"):
            # The person's limits and breakers guard the policy under test; baselines run
            # as references under the default hard limits alone (the loop gives them
            # SafetyLayer.limits_only()). The sections are validated objects already.
            run_config = user_config or TrimtabConfig()
            safety = SafetyLayer(
                run_config.limits,
                run_config.breakers,
                clusters=run_config.cluster_map(),
                subaccount=config.subaccount,
            )
        callback = (lambda done, total, n=name: progress(n, done, total)) if progress else None
        results[name] = Backtest(context, policy, config, safety=safety).run(
            callback, recorder if under_test else None
        )
    metrics = {}
    for name, r in results.items():
        trades = _metric_trades(r.trades)
        metrics[name] = compute_metrics(
            r.equity,
            periods_per_year=r.periods_per_year,
            risk_free=spec.risk_free,
            trades=trades,
            gross_exposure=r.gross_exposure,
        )
        # What rebalancing cost, apart from buying into the book the first time (which
        # every rule pays alike).
        later = trades[~trades["reason"].astype(str).str.startswith("initial")]
        metrics[name]["rebalance_turnover"] = turnover(later, r.equity, r.periods_per_year)
        metrics[name]["rebalance_fees"] = fees_paid(later)
        metrics[name]["tracking_error"] = (
            tracking_error(r.equity, r.target_weights, panel.close, r.periods_per_year)
            if r.target_weights is not None
            else float("nan")
        )
    traded = context.universe[context.start_i : context.end_i + 1].any(axis=0)
    symbols = [s for s, t in zip(context.market.symbols, traded, strict=True) if t]
    return Comparison(spec, results, metrics, symbols, dict(panel.provenance), notes)


def _metric_trades(trades: pd.DataFrame) -> pd.DataFrame:
    """Trades with fees valued in quote, as the metrics expect."""
    out = trades[["timestamp", "symbol", "side", "quantity", "price", "reason"]].copy()
    out["fee"] = trades["fee_quote"]
    return out
