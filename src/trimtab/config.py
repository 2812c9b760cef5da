"""The person's configuration: one YAML file validated into typed objects.

Every option has a default that works, so an empty file (or no file) is valid. Each
section is a typed, frozen object owned by the package that uses it; this module only
composes them, validates the file once, and the objects are passed down from here.
Unknown keys, a key given twice in one mapping (YAML would silently keep the later
value, so a tighter limit could be loosened by a later line) and values of the wrong
type (``"0.2"`` or ``yes`` where a number is wanted, ``2.5`` where a whole number is)
are errors. ``load_config`` reports every problem with the file and the key path, e.g.
``limits.max_asset_weight: must be > 0 (got -0.1)``.

Sections:

* ``limits:`` hard limits (``trimtab.guard.limits.Limits``); no model can raise them.
* ``breakers:`` circuit breakers (``trimtab.guard.breakers.BreakerConfig``).
* ``governor:`` the drawdown governor (``trimtab.policy.governor.GovernorSettings``).
* ``sizing:`` how the managed policy sizes and trades its book
  (``trimtab.policy.policies.SizingSettings``).
* ``rebalance:`` the cost-aware rebalancer (``trimtab.policy.rebalance.CostAwareSettings``).
* ``clusters:`` correlation clusters for ``max_cluster_weight``: name -> symbols.

Example (every key shown with its default unless marked)::

    limits:
      max_gross_leverage: 1.0     # sum of |weights|, fraction of equity (1.0 = 1x)
      max_net_exposure: 1.0       # |sum of weights|
      max_asset_weight: 0.40      # any one asset (default 1.0)
      max_cluster_weight: 0.60    # one cluster below (default 1.0)
      max_order_notional: 50000   # USDT per order (default null: no cap)
      max_daily_turnover: 1.0     # one-way traded notional / equity per UTC day (default null)
      min_cash: 0.05              # fraction of equity kept in cash (default 0)
      allowed_symbols: [BTC/USDT, ETH/USDT, SOL/USDT, BNB/USDT]   # default null: all
      allowed_venues: [binance]   # default null: all
      max_drawdown: 0.35          # drawdown from the peak that halts (default 0.5)
    breakers:
      daily_loss_limit: 0.10      # loss since 00:00 UTC -> REDUCING (null: off)
      loss_streak: 10             # losing bars in a row -> REDUCING (null: off)
      stale_data_bars: 3          # bars without fresh data -> REDUCING (null: off)
      max_exchange_errors: 5      # consecutive exchange errors -> HALTED (null: off)
      cooldown: 5                 # bars before an automatic exit
      auto_resume: false          # may HALTED end without a person?
      resume_conditions: [drawdown_recovered, daily_loss_ok, no_loss_streak, data_fresh,
                          no_exchange_errors]
      resume_drawdown: null       # null: 0.8 x limits.max_drawdown
    governor:
      schedule:                   # [drawdown, exposure ceiling] pairs
        - [0.25, 0.75]
        - [0.35, 0.50]
        - [0.45, 0.25]
      recovery_bars: 20          # the ceiling rises at most 1/20 a bar as equity recovers
      recovery_confirm: 0.05     # ... once equity is 5 % above its trough
      interpolate: true
      regime_ceiling: 0.5        # exposure cap in a high-volatility regime ...
      regime_threshold: 0.5      # ... when its probability reaches this
    sizing:
      trading: cost-aware        # or band: all the way to target past `band` drift or on `calendar`
      target_vol: 0.45           # annualised volatility the uncut equal-weight book is scaled to
      max_gross: 1.0             # leverage cap of the sizing: sum of weights (1.0 = 1x)
      cov_window: 60             # bars of trailing returns in the volatility forecast ...
      min_history: 30            # ... and the fewest it needs
      downside: false            # forecast with downside deviation instead
      no_cut_score: 15           # an asset at or below this risk score keeps its full size ...
      full_cut_score: 50         # ... and at or above this one gets none (linear between)
      band: 0.30                 # trading: band only, sum of absolute weight drifts
      calendar: monthly          # trading: band only: daily, weekly or monthly
    rebalance:
      band_scale: 4.0             # constant k of the no-trade bands
      trade_fraction: 0.0         # 0: trade to the band's edge; 1: all the way to target
      risk_aversion: 3.0          # price of a unit of annualised tracking variance
    clusters:
      layer1: [ETH/USDT, SOL/USDT, BNB/USDT]
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trimtab.guard.breakers import BreakerConfig
from trimtab.guard.limits import Limits, normalize_symbol
from trimtab.policy.governor import GovernorSettings
from trimtab.policy.policies import SizingSettings
from trimtab.policy.rebalance import CostAwareSettings


class ConfigError(ValueError):
    """A configuration that cannot be used; ``problems`` holds one readable line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"invalid configuration {source}:\n{lines}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping.

    Plain YAML keeps the later value without a word; here every repeat is collected
    with its key path and both lines, then reported before anything is constructed.
    """

    def construct_document(self, node: yaml.Node) -> Any:
        self.duplicates: list[tuple[int, str]] = []
        self._check(node, "")
        if self.duplicates:
            raise _DuplicateKeys([message for _, message in sorted(self.duplicates)])
        return super().construct_document(node)

    def _check(self, node: yaml.Node, path: str) -> None:
        if isinstance(node, yaml.SequenceNode):
            for k, item in enumerate(node.value):
                self._check(item, f"{path}[{k}]")
        elif isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<:` merges are meant to be overridden
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
                where = f"{path}.{key}" if path else str(key)
                line = key_node.start_mark.line + 1
                if key in seen:
                    self.duplicates.append(
                        (
                            line,
                            f"{where}: duplicate key at line {line} (first at line {seen[key]}); "
                            "give each key once",
                        )
                    )
                else:
                    seen[key] = line
                self._check(value_node, where)


class _DuplicateKeys(Exception):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems


class TrimtabConfig(BaseModel):
    """The whole configuration file. ``TrimtabConfig()`` is the default configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    limits: Limits = Field(default_factory=Limits)
    breakers: BreakerConfig = Field(default_factory=BreakerConfig)
    governor: GovernorSettings = Field(default_factory=GovernorSettings)
    sizing: SizingSettings = Field(default_factory=SizingSettings)
    rebalance: CostAwareSettings = Field(default_factory=CostAwareSettings)
    clusters: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    @field_validator(
        "limits", "breakers", "governor", "sizing", "rebalance", "clusters", mode="before"
    )
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        # ``limits:`` with nothing under it reads as null in YAML: take the defaults.
        return {} if value is None else value

    @field_validator("clusters")
    @classmethod
    def _one_cluster_each(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        seen: dict[str, str] = {}
        for name, members in value.items():
            for symbol in members:
                key = normalize_symbol(symbol)
                if key in seen and seen[key] != name:
                    raise ValueError(
                        f"{symbol} is in clusters {seen[key]!r} and {name!r}; one cluster each"
                    )
                seen[key] = name
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrimtabConfig:
        resume = self.breakers.resume_drawdown
        if resume is not None and resume >= self.limits.max_drawdown:
            raise ValueError(
                f"breakers.resume_drawdown: must be below limits.max_drawdown "
                f"({self.limits.max_drawdown:g}) (got {resume:g})"
            )
        return self

    def cluster_map(self) -> dict[str, str]:
        """Symbol -> cluster name, the form ``LimitGuard(clusters=)`` takes."""
        return {s: name for name, members in self.clusters.items() for s in members}


def load_config(path: str | os.PathLike[str]) -> TrimtabConfig:
    """Read and validate a YAML configuration file; ``ConfigError`` names the file and
    what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from exc
    return parse_config(text, source=str(path))


def read_yaml(text: str, source: str = "<string>") -> dict[str, Any]:
    """The top-level mapping of a YAML configuration text (empty: ``{}``), read with the
    duplicate-key check; ``ConfigError`` names ``source`` and what is wrong. Shared by
    every configuration file (this one, the portfolio file)."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: plain data only
    except _DuplicateKeys as exc:
        raise ConfigError(source, exc.problems) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"{where}not valid YAML ({problem})"]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [f"the top level must be a mapping, got {type(data).__name__}"])
    return data


def parse_config(text: str, source: str = "<string>") -> TrimtabConfig:
    """Validate configuration YAML given as a string (``source`` names it in errors)."""
    data = read_yaml(text, source)
    try:
        # Strict: YAML gives numbers, booleans and strings their own types, so "0.2" or
        # `yes` where a number is wanted is a mistake to report, not to coerce. YAML lists
        # become tuples first because every list in the configuration is a tuple.
        return TrimtabConfig.model_validate(_tuples(data), strict=True)
    except ValidationError as exc:
        raise ConfigError(source, format_errors(exc)) from exc


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _lists(value: Any) -> Any:
    """Tuples back as the YAML lists they were written as, for error messages."""
    if isinstance(value, tuple):
        return [_lists(v) for v in value]
    return value


def format_errors(exc: ValidationError) -> list[str]:
    """One line per problem: ``key.path: what is wrong (got value)``."""
    lines = []
    for err in exc.errors():
        loc = _path(err["loc"])
        kind, ctx = err["type"], err.get("ctx") or {}
        given = _lists(err.get("input"))
        if kind == "extra_forbidden":
            lines.append(f"{loc}: unknown key{_allowed(err['loc'])}")
            continue
        if kind == "greater_than":
            what = f"must be > {_num(ctx['gt'])}"
        elif kind == "greater_than_equal":
            what = f"must be >= {_num(ctx['ge'])}"
        elif kind == "less_than":
            what = f"must be < {_num(ctx['lt'])}"
        elif kind == "less_than_equal":
            what = f"must be <= {_num(ctx['le'])}"
        elif kind == "finite_number":
            what = "must be a finite number"
        elif kind in {"float_type", "float_parsing", "int_type", "int_parsing", "int_from_float"}:
            # Strict validation calls a bool a wrong type too: `yes` is not 1.
            what = "must be a number" if kind.startswith("float") else "must be a whole number"
        elif kind in {"string_type"}:
            what = "must be text"
        elif kind in {"bool_type", "bool_parsing"}:
            what = "must be true or false"
        elif kind in {"dict_type", "model_type", "model_attributes_type"}:
            what = "must be a mapping of keys to values"
        elif kind in {"tuple_type", "list_type"}:
            what = "must be a list"
        elif kind == "literal_error":
            what = f"must be one of {ctx.get('expected', '')}"
        elif kind == "value_error":
            what = str(ctx.get("error", err["msg"]))
        else:
            what = err["msg"]
        if not err["loc"]:
            lines.append(what)  # a check across sections names its keys itself
        else:
            lines.append(f"{loc}: {what}" + ("" if kind == "value_error" else f" (got {given!r})"))
    return lines


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _allowed(loc: tuple[Any, ...]) -> str:
    """The keys that are allowed where an unknown one was found."""
    model: Any = TrimtabConfig
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        model = getattr(field, "annotation", None) if field else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return ""
    return f"; allowed keys: {', '.join(model.model_fields)}"


def example_yaml() -> str:
    """The documented example configuration from this module's docstring."""
    doc = __doc__ or ""
    block = doc.split("::\n", 1)[1]
    return textwrap.dedent(block).strip() + "\n"


# --------------------------------------------------------------------------- alerts
#
# The ``alerts:`` section (portfolio pulse, ``trimtab.review.pulse``): rules evaluated at
# every cycle of the runner, and the notification targets their alerts go to (apprise
# URLs, delivered through the store's outbox by ``trimtab.app.notify``)::
#
#     alerts:
#       cooldown: 6h                 # default for every rule: "90s", "30m", "6h", "2d", "1w"
#                                    # or a whole number of bars (0: no cooldown)
#       notify:                      # target name -> where its apprise URL comes from
#         phone: {url_env: TRIMTAB_ALERT_PHONE}             # an environment variable
#         team: {url_file: ~/.config/trimtab/team.url}      # a file only its owner can read
#       rules:                       # default: one rule of each kind with its defaults
#         - {kind: risk_score, level: 60, direction: both}  # 0-100 score crossing 60
#         - {kind: liquidation_distance, daily_moves: 3, targets: [phone]}
#         - {kind: breaker}                                 # a guard state change
#         - {kind: drawdown, level: 0.10}                   # fraction below the peak
#         - {kind: correlation_shift, z: 2.0}
#         - {kind: volatility_regime}                       # calm / normal / elevated / high-vol
#         - {kind: stale_data, bars: 2}                     # held symbol without a fresh bar
#         - {kind: order_rejected}
#         - {kind: proposal_waiting, subaccount: core, cooldown: 1h}   # a reminder an hour
#
# Every rule takes ``subaccount`` (only that one; default all, and the account),
# ``severity`` (info | warning | critical; default: the kind's own, see the pulse),
# ``cooldown`` (default: the section's) and ``targets`` (names under ``notify``; default
# all). An apprise URL holds a token or password, so it is never written here: the
# section names where to find it, and ``url:`` is an error that says so.

Severity = Literal["info", "warning", "critical"]
SEVERITIES = ("info", "warning", "critical")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: A cooldown: a duration text ("6h") or a whole number of bars (int >= 0).
Cooldown = str | Annotated[int, Field(ge=0)]


def _check_duration(value: Any) -> Any:
    if isinstance(value, str) and not _DURATION_RE.match(value):
        raise ValueError(
            f"cooldown {value!r} is not a duration: write a number and a unit s, m, h, d or w "
            "(e.g. 30m, 6h, 2d), or a whole number of bars"
        )
    return value


def cooldown_seconds(cooldown: str | int, bar_seconds: float) -> float:
    """A cooldown in seconds: a duration text as written, or bars x ``bar_seconds``."""
    if isinstance(cooldown, int):
        return float(cooldown) * bar_seconds
    found = _DURATION_RE.match(cooldown)
    if found is None:  # validated on the way in
        raise ValueError(f"not a duration: {cooldown!r}")
    return float(found.group(1)) * _DURATION_UNITS[found.group(2)]


class NotifyTarget(BaseModel):
    """Where one notification target's apprise URL comes from: ``url_env`` (an environment
    variable's name) or ``url_file`` (a file readable by its owner only, holding the URL).
    Never the URL itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url_env: str | None = None
    url_file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and "url" in data:
            # The value is a secret: the message must not repeat it.
            raise ValueError(
                "url: an apprise URL holds its service's token or password, and this file is "
                "read, copied and committed, so it never goes here. Put the URL in an "
                "environment variable and write `url_env: VARIABLE_NAME`, or in a file only "
                "you can read (chmod 600 FILE) and write `url_file: FILE`"
            )
        return data

    @model_validator(mode="after")
    def _one_source(self) -> NotifyTarget:
        if (self.url_env is None) == (self.url_file is None):
            raise ValueError("give exactly one of url_env (a variable's name) or url_file")
        if self.url_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.url_env):
            # Probably the URL itself pasted in: do not echo it.
            raise ValueError(
                "url_env: must be the NAME of an environment variable (letters, digits, _), "
                "not the URL; set the variable to the URL outside this file"
            )
        if self.url_file is not None and not self.url_file.strip():
            raise ValueError("url_file: must be a path")
        return self

    @property
    def path(self) -> Path | None:
        """``url_file`` as a path (``~`` expanded), or None."""
        return None if self.url_file is None else Path(self.url_file).expanduser()


class _RuleBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    subaccount: str | None = None
    severity: Severity | None = None
    cooldown: Cooldown | None = None
    targets: tuple[str, ...] | None = None

    @field_validator("cooldown")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return _check_duration(value)


class RiskScoreRule(_RuleBase):
    """The risk score (0-100) of a subaccount or the account crossing ``level``: ``up``
    (rising to or past it), ``down`` (falling back below it) or ``both``."""

    kind: Literal["risk_score"] = "risk_score"
    level: Annotated[float, Field(gt=0, lt=100, allow_inf_nan=False)] = 50.0
    direction: Literal["up", "down", "both"] = "both"


class LiquidationDistanceRule(_RuleBase):
    """A perpetual coming within ``daily_moves`` daily volatilities of its liquidation."""

    kind: Literal["liquidation_distance"] = "liquidation_distance"
    daily_moves: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 3.0


class BreakerRule(_RuleBase):
    """A guard (circuit breaker) state change of a subaccount or the account."""

    kind: Literal["breaker"] = "breaker"


class DrawdownRule(_RuleBase):
    """Drawdown (fraction below the equity peak) going past ``level``."""

    kind: Literal["drawdown"] = "drawdown"
    level: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.10


class CorrelationShiftRule(_RuleBase):
    """A held asset's correlation-shift z-score (30 vs 180 days, against the universe)
    rising past ``z``."""

    kind: Literal["correlation_shift"] = "correlation_shift"
    z: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 2.0


class VolatilityRegimeRule(_RuleBase):
    """A held asset's volatility regime changing. The regime is read from the ratio of
    its 10-day to 90-day volatility: below ``calm`` calm, from ``elevated`` elevated, from
    ``high`` high-vol, normal between."""

    kind: Literal["volatility_regime"] = "volatility_regime"
    calm: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.75
    elevated: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.5
    high: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 2.5

    @model_validator(mode="after")
    def _ordered(self) -> VolatilityRegimeRule:
        if not self.calm < self.elevated < self.high:
            raise ValueError(
                f"volatility_regime: need calm < elevated < high (got {self.calm:g}, "
                f"{self.elevated:g}, {self.high:g})"
            )
        return self


class StaleDataRule(_RuleBase):
    """A held symbol without a fresh bar for ``bars`` closes in a row."""

    kind: Literal["stale_data"] = "stale_data"
    bars: Annotated[int, Field(ge=1)] = 2


class OrderRejectedRule(_RuleBase):
    """An order the guard, the exchange or the broker rejected, or that failed."""

    kind: Literal["order_rejected"] = "order_rejected"


class ProposalWaitingRule(_RuleBase):
    """A proposal waiting for a person's approval; repeated every cooldown while it waits."""

    kind: Literal["proposal_waiting"] = "proposal_waiting"


AlertRule = Annotated[
    RiskScoreRule
    | LiquidationDistanceRule
    | BreakerRule
    | DrawdownRule
    | CorrelationShiftRule
    | VolatilityRegimeRule
    | StaleDataRule
    | OrderRejectedRule
    | ProposalWaitingRule,
    Field(discriminator="kind"),
]
RULE_KINDS = (
    "risk_score",
    "liquidation_distance",
    "breaker",
    "drawdown",
    "correlation_shift",
    "volatility_regime",
    "stale_data",
    "order_rejected",
    "proposal_waiting",
)


def _default_rules() -> tuple[Any, ...]:
    return (
        RiskScoreRule(),
        LiquidationDistanceRule(),
        BreakerRule(),
        DrawdownRule(),
        CorrelationShiftRule(),
        VolatilityRegimeRule(),
        StaleDataRule(),
        OrderRejectedRule(),
        ProposalWaitingRule(),
    )


class AlertSettings(BaseModel):
    """The ``alerts:`` section: rules, notification targets and the default cooldown.
    ``AlertSettings()`` has one rule of each kind and no target (alerts are recorded in
    the store, nothing is sent)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cooldown: Cooldown = "6h"
    notify: dict[str, NotifyTarget] = Field(default_factory=dict)
    rules: tuple[AlertRule, ...] = Field(default_factory=_default_rules)

    @field_validator("cooldown")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return _check_duration(value)

    @model_validator(mode="before")
    @classmethod
    def _empty_keys(cls, data: Any) -> Any:
        # `notify:` or `rules:` with nothing under it reads as null in YAML: the defaults.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (k in ("notify", "rules") and v is None)}
        return data

    @model_validator(mode="after")
    def _known_targets(self) -> AlertSettings:
        known = sorted(self.notify)
        for k, rule in enumerate(self.rules):
            for name in rule.targets or ():
                if name not in self.notify:
                    raise ValueError(
                        f"rules[{k}] ({rule.kind}): target {name!r} is not under notify "
                        f"(known: {', '.join(known) if known else 'none'})"
                    )
        return self

    def targets_of(self, rule: Any) -> tuple[str, ...]:
        """The target names a rule's alerts go to (its own, else every target)."""
        return tuple(rule.targets) if rule.targets is not None else tuple(self.notify)

    def cooldown_of(self, rule: Any) -> str | int:
        """The rule's cooldown, else the section's."""
        return self.cooldown if rule.cooldown is None else rule.cooldown


def parse_alert_settings(data: Any, source: str = "<alerts>") -> AlertSettings:
    """Validate an ``alerts:`` mapping as read from YAML (lists or tuples; None: defaults);
    ``ConfigError`` names ``source`` and every problem as ``alerts.key.path: what``."""
    if data is None:
        data = {}
    try:
        return AlertSettings.model_validate(_tuples(data), strict=True)
    except ValidationError as exc:
        problems = [f"alerts.{p}" if not p.startswith("alerts") else p for p in format_errors(exc)]
        # from None: pydantic's own message repeats the input, which may hold a URL.
        raise ConfigError(source, problems) from None
