"""The portfolio file: many isolated subaccounts over one account, validated once.

``portfolio.yaml`` (see ``examples/portfolio.yaml``) declares::

    backtest:                       # data options; the CLI's flags win over these
      start: 2021-01-01             # first bar traded (UTC)
      end: 2023-12-31               # last bar (UTC, inclusive)
      timeframe: 1d
      data: null                    # folder or file, relative to this file (null: discovery)
    account:                        # above every subaccount, on the account's total equity
      limits: {max_gross_leverage: 1.0, max_drawdown: 0.5}   # Limits: the account breaker
      breakers: {daily_loss_limit: null}                     # BreakerConfig of the account
      transfers: {max_transfer: 50000, min_transfer: 1}      # USDT
    subaccounts:                    # name -> one isolated subaccount (names: a-z 0-9 _ -)
      core:
        exchange: binance           # the venue (checked against limits.allowed_venues)
        strategy: equal-monthly     # managed | equal-weight | equal-hold | equal-monthly
                                    # | btc-hold | fixed | core | trend | mean-reversion
                                    # | carry | market-making | copy | returns
        rule: calendar:monthly      # equal-weight: any rebalancing rule; fixed: calendar:*
        weights: {BTCUSDT: 0.6}     # fixed only: symbol -> fraction of the subaccount's equity
        universe: top:10            # or symbols: [BTCUSDT, ETHUSDT]; neither: every symbol
        capital: 40000              # starting cash, USDT (> 0)
        max_capital: null           # USDT its equity may reach through transfers in
        limits: {...}               # the sections of the configuration file
        breakers: {...}             #   (``trimtab.config``): its own hard limits,
        governor: {...}             #   breakers, drawdown governor (managed only),
        sizing: {...}               #   sizing (managed only), cost-aware rebalancer
        rebalance: {...}            #   and correlation clusters
        clusters: {...}
    transfers:                      # dated transfer decisions, each through the guard
      - {at: 2021-07-01, from: core, to: trend, amount: 10000, reason: "...", partial: false}
    rebalance_capital:              # optional periodic rule (partial moves allowed)
      every: monthly                # daily | weekly | monthly | quarterly
      shares: {core: 0.5, trend: 0.5}
      band: 0.02                    # act when a share is off by more than this
    runner:                         # ``trimtab run`` only (see trimtab.engine.live)
      grace_seconds: 30             # after a bar's close before it is processed
      tick_seconds: 2               # between guard ticks (commands, heartbeat)
      band: 0.02                    # a proposal's price band, fraction of the planned price
      review_every: 1               # bars between scheduled reviews (0: none)
      paper_db: null                # the paper exchange's database (default: beside the store)

Sleeve subaccounts (``strategy: market-making | copy | returns``, ``SLEEVE_KINDS``)
simulate themselves on their own clock (``trimtab.strategies.sleeve``) from their
``params:`` (what data, which leader, which file) and hold no bar position: they take no
``symbols``, ``universe``, ``rule``, ``weights``, ``sizing``, ``governor``, ``rebalance``,
``clusters`` or ``walk_forward``; their limits and breakers apply to their equity
(``trimtab.engine.sleeve_run``).

Per subaccount, for ``trimtab run``: ``mode: monitor | approve | auto`` (monitor by
default: decisions, reviews and alerts, no order) and, for auto, ``envelope:
{max_order_notional: USDT, max_daily_turnover: USDT}``.

Every error names the file and the key path, e.g. ``portfolio.yaml:
subaccounts.trend.limits.max_gross_leverage: must be <= 125 (got 200)``; keys given
twice, unknown keys and values of the wrong type are errors, as in the configuration
file. Symbols are checked against the data when the run is built (``build_portfolio``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from trimtab.config import AlertSettings, ConfigError, TrimtabConfig, format_errors, read_yaml
from trimtab.data import Panel, parse_universe
from trimtab.data.errors import DataError
from trimtab.data.panel import to_utc
from trimtab.execution.costs import CostModel
from trimtab.guard.breakers import BreakerConfig
from trimtab.guard.limits import Limits, normalize_symbol
from trimtab.guard.safety import SafetyLayer
from trimtab.guard.transfers import TransferGuard, TransferLimits
from trimtab.policy import EqualWeight, FixedWeights, Managed, Policy
from trimtab.policy.policies import RebalancedEqualWeight
from trimtab.policy.rebalance import parse_rule
from trimtab.policy.transfers import CapitalRebalance, ScheduledTransfer, TransferSchedule
from trimtab.strategies.allocator import AllocatorSettings
from trimtab.strategies.base import StrategySpec
from trimtab.strategies.library import DEFAULT_GRIDS, build_strategy, check_params
from trimtab.strategies.walkforward import WalkForward

STRATEGIES = ("managed", "equal-weight", "equal-hold", "equal-monthly", "btc-hold", "fixed")
Strategy = Literal[
    "managed",
    "equal-weight",
    "equal-hold",
    "equal-monthly",
    "btc-hold",
    "fixed",
    "core",
    "trend",
    "mean-reversion",
    "carry",
    "market-making",
    "copy",
    "returns",
]
#: The strategies of ``trimtab.strategies``: they take ``params:`` and ``walk_forward:``.
STRATEGY_KINDS = ("core", "trend", "mean-reversion", "carry")
#: Strategies simulated on their own clock (``trimtab.strategies.sleeve``): they take
#: ``params:`` and hold no bar position.
SLEEVE_KINDS = ("market-making", "copy", "returns")
#: Sections and keys of a subaccount that only strategies trading bars read.
_BAR_ONLY = (
    "symbols",
    "universe",
    "walk_forward",
    "sizing",
    "governor",
    "rebalance",
    "clusters",
)

# Subaccount names become folder names of the run: keep them plain.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def _timestamp_text(value: Any) -> Any:
    """YAML reads ``2021-01-01`` as a date: keep it as ISO text, checked as a UTC time."""
    if isinstance(value, dt.date):
        value = value.isoformat()
    if isinstance(value, str):
        try:
            to_utc(value)
        except (DataError, ValueError, TypeError):
            raise ValueError(f"not a date or UTC time: {value!r}") from None
    return value


class BacktestSettings(BaseModel):
    """The ``backtest:`` block: data options (the CLI's flags win over each).

    ``funding``: the funding-rate file a ``carry`` subaccount reads (relative to the
    file's folder): the shared CSV format, or a freqtrade ``-funding_rate`` file; by
    default the one ``funding_*.csv.gz`` beside the OHLCV data.
    ``perpetuals``: the perpetuals' own bars for ``carry`` (a file or folder that
    ``load_panel`` reads, symbols ``BTCUSDT-PERP`` or ``BTCUSDT``; relative to the file's
    folder). Without it the perpetual is marked at its spot bars: basis zero.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: str | None = None
    end: str | None = None
    timeframe: str | None = None
    data: str | None = None
    funding: str | None = None
    perpetuals: str | None = None

    _dates = field_validator("start", "end", mode="before")(_timestamp_text)


#: The limits the account enforces on the total: the drawdown kill level of the account
#: breaker, and gross and net exposure, which hold by construction (every subaccount's
#: cap at most the account's: the total's exposure is an equity-weighted mean of theirs).
ACCOUNT_LIMITS = ("max_gross_leverage", "max_net_exposure", "max_drawdown")


class AccountSettings(BaseModel):
    """The ``account:`` block: limits and breakers on the total equity, transfer caps.

    ``limits.max_drawdown`` is the account breaker's kill level (drawdown of the total
    equity from its peak: every subaccount HALTED); ``limits.max_gross_leverage`` and
    ``max_net_exposure`` cap the exposure of all subaccounts together over the total
    equity, by requiring every subaccount's cap to be at most the account's. Other limit
    keys are per subaccount only (an error here).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    limits: Limits = Field(default_factory=Limits)
    breakers: BreakerConfig = Field(default_factory=BreakerConfig)
    transfers: TransferLimits = Field(default_factory=TransferLimits)

    @field_validator("limits", "breakers", "transfers", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("limits")
    @classmethod
    def _account_keys(cls, value: Limits) -> Limits:
        other = sorted(value.model_fields_set - set(ACCOUNT_LIMITS))
        if other:
            raise ValueError(
                f"{other[0]}: not an account-wide limit; set it per subaccount (the account "
                f"takes {', '.join(ACCOUNT_LIMITS)})"
            )
        return value


Mode = Literal["monitor", "approve", "auto"]


class EnvelopeSettings(BaseModel):
    """A subaccount's ``envelope:`` for auto mode: what it may send without asking,
    in USDT of notional per order and per UTC day (null: no cap). An order beyond
    either becomes a proposal."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_order_notional: float | None = Field(None, gt=0, allow_inf_nan=False)
    max_daily_turnover: float | None = Field(None, gt=0, allow_inf_nan=False)


class RunnerSettings(BaseModel):
    """The ``runner:`` block of ``trimtab run``: seconds after a bar's close before it is
    processed (the exchange publishes it late), seconds between guard ticks, the price
    band of a proposal (a fraction of the planned price), bars between scheduled
    reviews (0: none), and the paper exchange's database (default: beside the store)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    grace_seconds: float = Field(30.0, ge=0, allow_inf_nan=False)
    tick_seconds: float = Field(2.0, gt=0, allow_inf_nan=False)
    band: float = Field(0.02, gt=0, lt=1, allow_inf_nan=False)
    review_every: int = Field(1, ge=0)
    paper_db: str | None = None


class WalkForwardSettings(BaseModel):
    """``walk_forward:`` of a strategy subaccount: at the first bar of every ``every``
    period its parameters are chosen again among ``grid`` (param -> values; empty: the
    strategy's own grid) by ``metric`` over the last ``train`` bars only. Used by
    ``trimtab backtest --portfolio FILE --walk-forward``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    every: Literal["monthly", "quarterly"] = "quarterly"
    train: int = Field(365, ge=30)
    metric: Literal["sharpe", "calmar"] = "sharpe"
    grid: dict[str, tuple[Any, ...]] = Field(default_factory=dict)

    @field_validator("grid")
    @classmethod
    def _grid(cls, value: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
        for key, values in value.items():
            if not values:
                raise ValueError(f"{key}: give at least one value")
        return value


class SubaccountSettings(TrimtabConfig):
    """One subaccount: the configuration file's sections plus what it trades and with
    how much. ``capital`` and ``max_capital`` are USDT; ``weights`` are fractions of the
    subaccount's equity."""

    exchange: str = "binance"
    strategy: Strategy = "managed"
    rule: str | None = None
    weights: dict[str, float] | None = None
    symbols: tuple[str, ...] | None = None
    universe: str | None = None
    capital: float = Field(gt=0, allow_inf_nan=False)
    max_capital: float | None = Field(None, gt=0, allow_inf_nan=False)
    mode: Mode = "monitor"
    envelope: EnvelopeSettings | None = None
    params: dict[str, Any] | None = None
    walk_forward: WalkForwardSettings | None = None

    @field_validator("exchange")
    @classmethod
    def _venue(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a venue, e.g. binance")
        return value.strip().lower()

    @field_validator("rule")
    @classmethod
    def _rule(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rule(value)  # a clear ValueError for an unknown rule
        return value

    @field_validator("universe")
    @classmethod
    def _universe(cls, value: str | None) -> str | None:
        if value is not None:
            if not (value.strip().lower() == "all" or value.strip().lower().startswith("top:")):
                raise ValueError(
                    f"use top:N or all, not {value!r} (name symbols under symbols: [...])"
                )
            try:
                parse_universe(value)
            except DataError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("give at least one symbol and its weight")
        for symbol, w in value.items():
            if not (w == w and 0 <= w < float("inf")):
                raise ValueError(f"{symbol}: must be a finite number >= 0 (got {w!r})")
        total = sum(value.values())
        if total > 1 + 1e-9:
            raise ValueError(f"sum to {total:.4f}, more than 1 (the whole equity)")
        return {normalize_symbol(s): float(w) for s, w in value.items()}

    @model_validator(mode="after")
    def _strategy_keys(self) -> SubaccountSettings:
        s = self.strategy
        fields = self.model_fields_set
        if s in SLEEVE_KINDS:
            return self._sleeve_keys()
        if self.symbols is not None and self.universe is not None:
            raise ValueError("universe: give either symbols or universe, not both")
        if s == "fixed" and self.weights is None:
            raise ValueError("weights: strategy fixed needs weights: {SYMBOL: fraction, ...}")
        if s != "fixed" and self.weights is not None:
            raise ValueError(f"weights: only strategy fixed takes weights (strategy is {s})")
        if self.rule is not None:
            kind, _ = parse_rule(self.rule)
            if s == "fixed" and kind != "calendar":
                raise ValueError("rule: strategy fixed rebalances on a calendar rule only")
            if s not in ("fixed", "equal-weight"):
                raise ValueError(f"rule: only equal-weight and fixed take a rule (strategy is {s})")
        if "sizing" in fields and s != "managed":
            raise ValueError(
                f"sizing: only the managed strategy has a sizing section (strategy is {s})"
            )
        if "governor" in fields and s != "managed" and s not in STRATEGY_KINDS:
            raise ValueError(
                f"governor: only managed and {', '.join(STRATEGY_KINDS)} have a governor (strategy is {s})"
            )
        for key in ("params", "walk_forward"):
            if key in fields and s not in STRATEGY_KINDS:
                raise ValueError(
                    f"{key}: only the strategies {', '.join(STRATEGY_KINDS)} take {key} (strategy is {s})"
                )
        if s in STRATEGY_KINDS:
            try:
                check_params(s, self.params)
                if self.walk_forward is not None:
                    for key, values in self.walk_forward.grid.items():
                        for value in values:
                            check_params(s, {**(self.params or {}), key: value})
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        if self.mode == "auto" and self.envelope is None:
            raise ValueError(
                "envelope: auto mode sends orders only within an envelope; set "
                "envelope: {max_order_notional: USDT, max_daily_turnover: USDT}"
            )
        venues = self.limits.allowed_venues
        if venues is not None and self.exchange not in {v.lower() for v in venues}:
            raise ValueError(
                f"exchange: {self.exchange!r} is not in limits.allowed_venues ({', '.join(venues)})"
            )
        return self

    def _sleeve_keys(self) -> SubaccountSettings:
        """A sleeve subaccount's keys: ``params`` (checked here for ``returns``, by its
        constructor when the run is built for the others) and no bar-trading keys."""
        s = self.strategy
        fields = self.model_fields_set
        for key in _BAR_ONLY:
            if key in fields:
                raise ValueError(
                    f"{key}: strategy {s} simulates itself on its own data and holds no bar "
                    f"position; it takes params: (and limits, breakers), not {key}"
                )
        if s == "returns":
            from trimtab.strategies.external import check_returns_params

            try:
                check_returns_params(self.params)
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        if self.mode == "auto" and self.envelope is None:
            raise ValueError(
                "envelope: auto mode sends orders only within an envelope; set "
                "envelope: {max_order_notional: USDT, max_daily_turnover: USDT}"
            )
        return self

    @property
    def is_sleeve(self) -> bool:
        """A strategy simulated on its own clock (``SLEEVE_KINDS``)."""
        return self.strategy in SLEEVE_KINDS

    def traded_symbols(self) -> tuple[str, ...] | None:
        """The symbols it names (``symbols:``, or the keys of fixed weights), normalised;
        None when it takes a universe or every symbol."""
        if self.weights is not None:
            return tuple(s for s, w in self.weights.items() if w > 0) or tuple(self.weights)
        if self.symbols is not None:
            return tuple(dict.fromkeys(normalize_symbol(s) for s in self.symbols))
        return None


class TransferLine(BaseModel):
    """One dated line of ``transfers:``: ``amount`` USDT ``from`` one subaccount ``to``
    another at the first bar at or after ``at`` (UTC). ``partial``: when the source
    cannot free the whole amount, move what it can (default: refuse the whole)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=False)

    at: str
    source: str = Field(alias="from")
    target: str = Field(alias="to")
    amount: float = Field(gt=0, allow_inf_nan=False)
    reason: str = ""
    partial: bool = False

    _at = field_validator("at", mode="before")(_timestamp_text)


class RebalanceCapitalSettings(BaseModel):
    """``rebalance_capital:``: move free cash toward ``shares`` (fractions summing to 1)
    of the named subaccounts' total equity on the first bar of each ``every`` period."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    every: Literal["daily", "weekly", "monthly", "quarterly"] = "monthly"
    shares: dict[str, float]
    band: float = Field(0.02, ge=0, lt=1)
    reason: str = ""

    @field_validator("shares")
    @classmethod
    def _shares(cls, value: dict[str, float]) -> dict[str, float]:
        if len(value) < 2:
            raise ValueError("name at least two subaccounts")
        for name, share in value.items():
            if not 0 <= share <= 1:
                raise ValueError(f"{name}: must be a fraction in [0, 1] (got {share!r})")
        total = sum(value.values())
        if abs(total - 1) > 1e-6:
            raise ValueError(f"must sum to 1 (got {total:.6g})")
        return value


class PortfolioFile(BaseModel):
    """The whole portfolio file (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backtest: BacktestSettings = Field(default_factory=BacktestSettings)
    account: AccountSettings = Field(default_factory=AccountSettings)
    subaccounts: dict[str, SubaccountSettings]
    transfers: tuple[TransferLine, ...] = ()
    rebalance_capital: RebalanceCapitalSettings | None = None
    allocator: AllocatorSettings | None = None
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)

    @field_validator("backtest", "account", "runner", "alerts", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("transfers", mode="before")
    @classmethod
    def _no_transfers(cls, value: Any) -> Any:
        return () if value is None else value

    @field_validator("subaccounts")
    @classmethod
    def _names(cls, value: dict[str, SubaccountSettings]) -> dict[str, SubaccountSettings]:
        if not value:
            raise ValueError("declare at least one subaccount")
        seen: dict[str, str] = {}
        for name in value:
            if not isinstance(name, str) or not _NAME.match(name):
                raise ValueError(
                    f"subaccount name {name!r}: use letters, digits, '-' and '_' "
                    "(it names the subaccount's folder of results)"
                )
            if name.lower() in seen:
                raise ValueError(
                    f"subaccounts {seen[name.lower()]!r} and {name!r} differ only in case; "
                    "their result folders would collide"
                )
            seen[name.lower()] = name
        return value

    @model_validator(mode="after")
    def _known_names(self) -> PortfolioFile:
        known = list(self.subaccounts)
        names = ", ".join(known)
        problems = []
        for k, line in enumerate(self.transfers):
            for key, name in (("from", line.source), ("to", line.target)):
                if name not in self.subaccounts:
                    problems.append(
                        f"transfers[{k}].{key}: unknown subaccount {name!r}; subaccounts are {names}"
                    )
            if line.source == line.target:
                problems.append(f"transfers[{k}]: from and to are both {line.source!r}")
        account = self.account.limits
        for key in ("max_gross_leverage", "max_net_exposure"):
            cap = getattr(account, key)
            for name, sub in self.subaccounts.items():
                if getattr(sub.limits, key) > cap:
                    problems.append(
                        f"subaccounts.{name}.limits.{key}: {getattr(sub.limits, key):g} is above "
                        f"account.limits.{key} ({cap:g}), so the total could pass it; lower it "
                        "or raise the account's"
                    )
        for k, rule in enumerate(self.alerts.rules):
            if rule.subaccount is not None and rule.subaccount not in self.subaccounts:
                problems.append(
                    f"alerts.rules[{k}].subaccount: unknown subaccount {rule.subaccount!r}; "
                    f"subaccounts are {names}"
                )
            for target in rule.targets or ():
                if target not in self.alerts.notify:
                    problems.append(
                        f"alerts.rules[{k}].targets: {target!r} is not in alerts.notify "
                        f"({', '.join(self.alerts.notify) or 'none declared'})"
                    )
        if self.allocator is not None:
            if self.rebalance_capital is not None:
                problems.append(
                    "allocator: give either allocator or rebalance_capital, not both (both "
                    "would move capital toward different shares)"
                )
            chosen = self.allocator.subaccounts or tuple(self.subaccounts)
            for name in chosen:
                if name not in self.subaccounts:
                    problems.append(
                        f"allocator.subaccounts: unknown subaccount {name!r}; subaccounts are {names}"
                    )
            if len(chosen) < 2:
                problems.append("allocator.subaccounts: name at least two subaccounts")
            elif self.allocator.min_share * len(chosen) > 1:
                problems.append(
                    f"allocator.min_share: {self.allocator.min_share:g} for {len(chosen)} "
                    "subaccounts is more than the whole"
                )
        if self.rebalance_capital is not None:
            for name in self.rebalance_capital.shares:
                if name not in self.subaccounts:
                    problems.append(
                        f"rebalance_capital.shares.{name}: unknown subaccount; subaccounts are {names}"
                    )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def total_capital(self) -> float:
        """The starting capital of every subaccount together (USDT)."""
        return sum(s.capital for s in self.subaccounts.values())


@dataclass(frozen=True)
class Portfolio:
    """A validated portfolio file and where it came from (``source`` names it in
    errors; relative ``backtest.data`` paths are taken from ``folder``)."""

    settings: PortfolioFile
    source: str
    folder: Path = field(default_factory=Path)

    def resolve(self, given: str) -> Path:
        """A path the file names (``~`` expanded), relative to the file's folder."""
        path = Path(given).expanduser()
        return path if path.is_absolute() else self.folder / path

    @property
    def data_path(self) -> str | None:
        data = self.settings.backtest.data
        return None if data is None else str(self.resolve(data))

    def error(self, *problems: str) -> ConfigError:
        return ConfigError(self.source, list(problems))


def load_portfolio(path: str | Path) -> Portfolio:
    """Read and validate a portfolio file; ``ConfigError`` names the file and each key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from exc
    return parse_portfolio(text, source=str(path), folder=path.parent)


def parse_portfolio(text: str, source: str = "<string>", folder: Path | None = None) -> Portfolio:
    """Validate portfolio YAML given as a string (``source`` names it in errors)."""
    data = read_yaml(text, source)
    try:
        settings = PortfolioFile.model_validate(_tuples(data), strict=True)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from exc
    return Portfolio(settings, source, folder if folder is not None else Path())


def _tuples(value: Any) -> Any:
    """YAML lists as tuples (every list of the file is a tuple), mappings kept."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _problems(exc: ValidationError) -> list[str]:
    """``format_errors``' lines, with the allowed keys after an unknown one, and the
    cross-key checks' several lines split."""
    out = []
    for err, line in zip(exc.errors(), format_errors(exc), strict=True):
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(err["loc"])
            if allowed:
                line += f"; allowed keys: {', '.join(allowed)}"
        elif err["type"] == "missing":
            line = f"{line.split(':', 1)[0]}: required"
        elif err["type"] == "value_error" and err["loc"]:
            # A check that names its own key ("rule: ...") speaks under the full path.
            where, _, what = line.partition(": ")
            keyed = _KEYED.match(what)
            if keyed:
                line = f"{where}.{keyed.group(1)}: {what[keyed.end() :]}"
        out.extend(line.splitlines())
    return out


_KEYED = re.compile(r"^([\w/-]+(?:\.[\w/-]+)*): ")


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = PortfolioFile
    parts = list(loc[:-1])
    while parts:
        part = parts.pop(0)
        info = model.model_fields.get(part) if isinstance(part, str) else None
        if info is None:
            return []
        model = info.annotation
        if part == "subaccounts":
            model = SubaccountSettings
            if not parts:
                return []
            parts.pop(0)  # the subaccount's name
        elif part == "transfers":
            model = TransferLine
            if parts and isinstance(parts[0], int):
                parts.pop(0)
        elif part == "rebalance_capital":
            model = RebalanceCapitalSettings
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return [info.alias or name for name, info in model.model_fields.items()]


# --- from a validated file to the run's parts ----------------------------------------------


@dataclass
class SubaccountPlan:
    """What one subaccount runs with, built from its section of the file: its policy,
    its guard, its starting cash (USDT), and its membership (a boolean time x symbol
    frame over the run's panel; None: every listed symbol)."""

    name: str
    settings: SubaccountSettings
    policy: Policy
    safety: SafetyLayer
    capital: float
    members: pd.DataFrame | None
    declared: StrategySpec | None = None


def check_symbols(portfolio: Portfolio, panel: Panel, btc: str | None) -> None:
    """Every symbol a subaccount names is in the data (``ConfigError`` names the key),
    and btc-hold has a BTC pair to hold."""
    have = set(panel.symbols)
    problems = []
    for name, sub in portfolio.settings.subaccounts.items():
        key = "weights" if sub.weights is not None else "symbols"
        missing = [s for s in sub.traded_symbols() or () if s not in have]
        if missing:
            where = panel.provenance.get("location", {}).get("path", "the data")
            problems.append(
                f"subaccounts.{name}.{key}: not in the data ({where}): {', '.join(missing)}"
            )
        if sub.strategy == "btc-hold" and btc is None:
            problems.append(
                f"subaccounts.{name}.strategy: btc-hold needs a BTC pair against a stablecoin "
                "in the data"
            )
    if problems:
        raise portfolio.error(*problems)


def make_subaccount_policy(
    sub: SubaccountSettings,
    btc: str | None,
    costs: CostModel,
    *,
    name: str | None = None,
    walk_forward: bool = False,
) -> Policy:
    """The policy a subaccount's ``strategy`` names, with its own sections; with
    ``walk_forward``, a strategy of ``trimtab.strategies`` refits its parameters on the
    past (its ``walk_forward:`` section, else the strategy's own grid quarterly)."""
    s = sub.strategy
    if s in STRATEGY_KINDS:
        return make_strategy(sub, name or s, costs, walk_forward)
    if s == "managed":
        return Managed(sub.sizing, governor=sub.governor, costs=costs, cost_settings=sub.rebalance)
    if s == "equal-weight":
        return RebalancedEqualWeight(
            sub.rule or "calendar:monthly", costs=costs, settings=sub.rebalance
        )
    if s == "equal-hold":
        return EqualWeight(rebalance=None)
    if s == "equal-monthly":
        return EqualWeight(rebalance="monthly")
    if s == "btc-hold":
        assert btc is not None  # check_symbols said so first
        return FixedWeights({btc: 1.0}, name="btc-hold")
    every = parse_rule(sub.rule)[1] if sub.rule else None
    return FixedWeights(sub.weights or {}, rebalance=every, name="fixed")


def make_strategy(
    sub: SubaccountSettings, name: str, costs: CostModel, walk_forward: bool
) -> Policy:
    """A ``trimtab.strategies`` strategy for the subaccount, walk-forward when asked."""
    kind = sub.strategy
    governor = sub.governor if "governor" in sub.model_fields_set else None
    symbols = sub.traded_symbols()

    def factory(params: dict[str, Any]) -> Any:
        if kind == "carry":
            from trimtab.strategies.carry import build_carry

            return build_carry(params, name=name, symbols=symbols)
        return build_strategy(kind, params, name=name, governor=governor)

    params = dict(sub.params or {})
    if not walk_forward:
        return factory(params)
    wf = sub.walk_forward or WalkForwardSettings()
    grid = dict(wf.grid) or dict(DEFAULT_GRIDS.get(kind, {}))
    if not grid:
        return factory(params)
    # What a trade costs one way: the fee and half the spread.
    fee = costs.taker_fee_bps + costs.half_spread_bps
    return WalkForward(
        factory, params, grid, every=wf.every, train=wf.train, metric=wf.metric, fee_bps=fee
    )


def declared_spec(sub: SubaccountSettings, name: str, costs: CostModel) -> StrategySpec | None:
    """What a strategy subaccount declares (regimes, capacity, warm-up); None for the
    other policies, which declare nothing."""
    if sub.strategy not in STRATEGY_KINDS:
        return None
    return make_strategy(sub, name, costs, walk_forward=False).spec  # type: ignore[attr-defined]


def make_safety(name: str, sub: SubaccountSettings) -> SafetyLayer:
    """The subaccount's guard: its limits, breakers and clusters."""
    return SafetyLayer(sub.limits, sub.breakers, clusters=sub.cluster_map(), subaccount=name)


def transfer_guard(settings: PortfolioFile) -> TransferGuard:
    """The transfer guard of the file: each subaccount's limits and ``max_capital``,
    the account's transfer caps."""
    subs = settings.subaccounts
    return TransferGuard(
        limits={n: s.limits for n, s in subs.items()},
        max_capital={n: s.max_capital for n, s in subs.items()},
        account=settings.account.transfers,
    )


def transfer_schedule(settings: PortfolioFile) -> TransferSchedule:
    """The file's dated transfers and its periodic rule as one schedule."""
    scheduled = tuple(
        ScheduledTransfer(
            to_utc(t.at), t.source, t.target, t.amount, t.reason, allow_partial=t.partial
        )
        for t in settings.transfers
    )
    rule = settings.rebalance_capital
    rebalance = (
        CapitalRebalance(rule.every, dict(rule.shares), rule.band, rule.reason)
        if rule is not None
        else None
    )
    return TransferSchedule(scheduled, rebalance)


def plan_subaccounts(
    portfolio: Portfolio,
    members: Mapping[str, pd.DataFrame | None],
    btc: str | None,
    costs: CostModel,
    walk_forward: bool = False,
    sleeves: Mapping[str, Callable[[SafetyLayer], Policy]] | None = None,
) -> list[SubaccountPlan]:
    """One ``SubaccountPlan`` per subaccount of the file, in the file's order; a sleeve
    subaccount's policy is ``sleeves[name]`` made with its guard
    (``trimtab.engine.sleeve_run``)."""
    plans = []
    for name, sub in portfolio.settings.subaccounts.items():
        safety = make_safety(name, sub)
        if sub.is_sleeve:
            if sleeves is None or name not in sleeves:
                raise ValueError(f"subaccount {name!r} ({sub.strategy}): its sleeve was not built")
            policy = sleeves[name](safety)
        else:
            policy = make_subaccount_policy(sub, btc, costs, name=name, walk_forward=walk_forward)
        plans.append(
            SubaccountPlan(
                name,
                sub,
                policy,
                safety,
                sub.capital,
                members.get(name),
                declared_spec(sub, name, costs),
            )
        )
    return plans
