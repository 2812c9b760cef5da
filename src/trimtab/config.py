"""The person's configuration: one YAML file validated into typed objects.

Every option has a default that works, so an empty file (or no file) is valid. Unknown
keys are errors, so a typo never silently leaves a limit at its default. ``load_config``
reports every problem with the file and the key path, e.g.
``limits.max_asset_weight: must be > 0 (got -0.1)``.

Sections:

* ``limits:`` hard limits (``trimtab.guard.limits.Limits``); no model can raise them.
* ``breakers:`` circuit breakers (``trimtab.guard.breakers.BreakerConfig``).
* ``governor:`` the drawdown governor's schedule (``GovernorConfig``).
* ``sizing:`` free mapping, validated by the sizing code that reads it.
* ``rebalance:`` the cost-aware rebalancer: fields of ``CostAwareSettings``.
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
      recovery_bars: 20
      interpolate: true
    sizing: {}
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
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trimtab.guard.breakers import BreakerConfig
from trimtab.guard.limits import Limits, normalize_symbol
from trimtab.policy.governor import GovernorSettings
from trimtab.policy.rebalance import CostAwareSettings


class ConfigError(ValueError):
    """A configuration that cannot be used; ``problems`` holds one readable line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"invalid configuration {source}:\n{lines}")


class GovernorConfig(BaseModel):
    """Drawdown governor settings.

    ``schedule`` maps drawdown from the equity peak (fraction) to the ceiling on gross
    exposure (fraction of equity): at 10% drawdown at most 75% invested, and so on.
    Drawdowns strictly increase and ceilings never increase. With ``interpolate`` the
    ceiling moves linearly between points (from 1.0 at no drawdown), otherwise it steps.
    ``recovery_bars`` is how many bars the ceiling takes to come back as equity recovers.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    schedule: tuple[tuple[float, float], ...] = GovernorSettings().schedule
    recovery_bars: int = Field(GovernorSettings().recovery_bars, ge=0)
    interpolate: bool = True

    @field_validator("schedule")
    @classmethod
    def _monotone(cls, value: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
        for k, (dd, ceiling) in enumerate(value):
            if not 0 < dd < 1:
                raise ValueError(f"entry {k}: drawdown must be in (0, 1), got {dd}")
            if not 0 <= ceiling <= 1:
                raise ValueError(f"entry {k}: exposure ceiling must be in [0, 1], got {ceiling}")
        for k in range(1, len(value)):
            if value[k][0] <= value[k - 1][0]:
                raise ValueError(
                    f"drawdowns must increase: entry {k} ({value[k][0]}) after {value[k - 1][0]}"
                )
            if value[k][1] > value[k - 1][1]:
                raise ValueError(
                    f"exposure ceilings must not increase: entry {k} ({value[k][1]}) "
                    f"after {value[k - 1][1]}"
                )
        return value


class TrimtabConfig(BaseModel):
    """The whole configuration file. ``TrimtabConfig()`` is the default configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    limits: Limits = Field(default_factory=Limits)
    breakers: BreakerConfig = Field(default_factory=BreakerConfig)
    governor: GovernorConfig = Field(default_factory=GovernorConfig)
    sizing: dict[str, Any] = Field(default_factory=dict)
    # Keys are the fields of ``CostAwareSettings``, validated by it (see ``_rebalance``).
    rebalance: dict[str, Any] = Field(default_factory=dict)
    clusters: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    @field_validator(
        "limits", "breakers", "governor", "sizing", "rebalance", "clusters", mode="before"
    )
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        # ``limits:`` with nothing under it reads as null in YAML: take the defaults.
        return {} if value is None else value

    @field_validator("rebalance")
    @classmethod
    def _rebalance(cls, value: dict[str, Any]) -> dict[str, Any]:
        known = {f.name for f in fields(CostAwareSettings)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
        bad = [k for k, v in value.items() if isinstance(v, bool) or not isinstance(v, int | float)]
        if bad:
            raise ValueError(f"{bad[0]} must be a number (got {value[bad[0]]!r})")
        CostAwareSettings(**value)  # raises naming every value out of range
        return value

    def rebalance_settings(self) -> CostAwareSettings:
        """The cost-aware rebalancer's settings from the ``rebalance:`` section."""
        return CostAwareSettings(**self.rebalance)

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
    """Read and validate a YAML configuration file; ``ConfigError`` names what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from exc
    return parse_config(text, source=str(path))


def parse_config(text: str, source: str = "<string>") -> TrimtabConfig:
    """Validate configuration YAML given as a string (``source`` names it in errors)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"{where}not valid YAML ({problem})"]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [f"the top level must be a mapping, got {type(data).__name__}"])
    try:
        return TrimtabConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, format_errors(exc)) from exc


def format_errors(exc: ValidationError) -> list[str]:
    """One line per problem: ``key.path: what is wrong (got value)``."""
    lines = []
    for err in exc.errors():
        loc = _path(err["loc"])
        kind, ctx = err["type"], err.get("ctx") or {}
        given = err.get("input")
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
            what = "must be a number" if kind.startswith("float") else "must be a whole number"
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
