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
import textwrap
from pathlib import Path
from typing import Any

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
