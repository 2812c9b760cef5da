"""What a person holds: a holdings file (YAML or CSV) read into typed, validated objects.

YAML (``.yaml``/``.yml``)::

    as_of: 2023-06-30            # optional; default: the last bar in the data
    subaccounts:
      core:
        exchange: binance        # optional label
        cash: {USDT: 5000}
        spot: {BTC: 0.5, ETH: 4} # asset or pair -> quantity in base units
      momentum:
        cash: {USDT: 1000}
        perps:
          - {symbol: DOGEUSDT, side: long, size: 200000, entry_price: 0.07,
             leverage: 10, margin_mode: isolated}

- ``spot`` keys are assets (``BTC``, priced on ``BTCUSDT``, else ``BTCBUSD``/``BTCUSDC``/
  ``BTCFDUSD``) or pairs (``BTCUSDT``, ``BTC/USDT``). A value is a quantity, or
  ``{quantity: 0.5, entry_price: 21000}``. Quantities must be >= 0 (0 is ignored).
- ``cash`` maps a currency to an amount >= 0. Stablecoins (USDT, USDC, BUSD, FDUSD,
  TUSD, DAI, USDP: ``trimtab.domain.quotes.STABLECOINS``) count at 1 USDT; any other
  currency (``BTC``) is priced from the data like a spot holding (it is one), and a
  currency with no price in the data is an error.
  Stablecoins listed under ``spot`` are cash. A pair quoted in anything else (``ADABTC``,
  ``BTCUSD``, ``BTCEUR``) is refused: its price is not in USDT.
- ``perps`` are USDT-margined perpetuals: ``symbol`` (``DOGEUSDT``, ``DOGEUSDT-PERP``,
  ``DOGE/USDT:USDT`` or ``DOGE``), ``side`` long/short, ``size`` in base units (> 0),
  ``entry_price`` (> 0), ``leverage`` (>= 1) and/or ``margin`` (USDT, > 0; default
  ``size * entry_price / leverage``; without leverage, ``leverage = size * entry_price /
  margin``), ``margin_mode`` isolated (default) or cross.
- ``cash`` is the subaccount's *free* cash: an isolated perp's margin is on top of it.
- Without ``subaccounts``, top-level ``cash``/``spot``/``perps`` form one subaccount
  named ``main``.

CSV (``.csv``): one row per holding, header
``subaccount,kind,asset,quantity,side,entry_price,leverage,margin_mode,margin``;
``subaccount``, ``kind``, ``asset`` and ``quantity`` are required columns, the others
optional (empty cells mean "not given"). ``kind`` is ``cash``, ``spot`` or ``perp``;
``asset`` is the currency, the asset/pair or the perp symbol; ``quantity`` the amount,
the spot quantity or the perp size (base units). ``side``, ``leverage``, ``margin_mode``
and ``margin`` are for perp rows only; ``entry_price`` is required for perps, optional
for spot. Rows of the same cash currency or spot asset in one subaccount add up. Lines
starting with ``#`` are comments; ``# as_of: 2023-06-30`` sets the as-of date.

Every mistake raises ``HoldingsError`` (a ``ValueError``) whose message names the file
and the field path (``subaccounts.momentum.perps[0].leverage``) or the CSV row and
column, never a traceback. ``resolve_holdings`` then checks the holdings against market
data: every symbol must be in the data and priced at the as-of bar, and ``as_of`` must
fall inside the data.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from trimtab.data.panel import Panel, timeframe_seconds
from trimtab.domain.quotes import (
    STABLECOINS,
    asset_of,
    quote_problem,
    split_quote,
    spot_symbol,
)

__all__ = [
    "STABLECOINS",
    "Book",
    "Holding",
    "Holdings",
    "HoldingsError",
    "PerpPosition",
    "SpotEntry",
    "SubaccountHoldings",
    "load_holdings",
    "parse_holdings",
    "resolve_holdings",
]

#: Quotes tried, in order, to price a bare asset such as ``BTC``.
PRICE_QUOTES: tuple[str, ...] = ("USDT", "BUSD", "USDC", "FDUSD")
CSV_COLUMNS = (
    "subaccount",
    "kind",
    "asset",
    "quantity",
    "side",
    "entry_price",
    "leverage",
    "margin_mode",
    "margin",
)
CSV_REQUIRED = ("subaccount", "kind", "asset", "quantity")
_MAX_ERRORS = 10


class HoldingsError(ValueError):
    """A mistake in a holdings file, explained for a person (file, field path or row)."""


# --------------------------------------------------------------------------- models

Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class SpotEntry(_Model):
    """A spot holding: ``quantity`` in base units (>= 0), optional ``entry_price`` (USDT)."""

    quantity: NonNegative
    entry_price: Positive | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_number(cls, data: Any) -> Any:
        # ``BTC: 0.5`` is shorthand for ``BTC: {quantity: 0.5}``.
        if isinstance(data, dict):
            return data
        return {"quantity": data}


class PerpPosition(_Model):
    """A USDT-margined perpetual: size in base units, prices and margin in USDT."""

    symbol: Annotated[str, Field(min_length=1)]
    side: Literal["long", "short"]
    size: Positive
    entry_price: Positive
    leverage: Annotated[float, Field(ge=1, le=200, allow_inf_nan=False)] | None = None
    margin_mode: Literal["isolated", "cross"] = "isolated"
    margin: Positive | None = None

    @field_validator("side", "margin_mode", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _leverage_or_margin(self) -> PerpPosition:
        if self.leverage is None and self.margin is None:
            raise ValueError("give leverage or margin (isolated margin in USDT)")
        return self

    @property
    def notional_at_entry(self) -> float:
        """``size * entry_price`` (USDT)."""
        return self.size * self.entry_price

    @property
    def effective_margin(self) -> float:
        """The margin given, else the initial margin ``size * entry_price / leverage``."""
        if self.margin is not None:
            return self.margin
        return self.notional_at_entry / float(self.leverage)  # type: ignore[arg-type]

    @property
    def effective_leverage(self) -> float:
        """The leverage given, else ``size * entry_price / margin``."""
        if self.leverage is not None:
            return self.leverage
        return self.notional_at_entry / float(self.margin)  # type: ignore[arg-type]


class SubaccountHoldings(_Model):
    """One isolated pool of capital: free cash, spot holdings, perpetuals."""

    exchange: str | None = None
    cash: dict[str, NonNegative] = Field(default_factory=dict)
    spot: dict[str, SpotEntry] = Field(default_factory=dict)
    perps: list[PerpPosition] = Field(default_factory=list)

    @field_validator("cash", "spot", mode="before")
    @classmethod
    def _upper_keys(cls, v: Any) -> Any:
        if isinstance(v, dict):
            out: dict[Any, Any] = {}
            for k, val in v.items():
                key = str(k).strip().upper()
                if key in out:
                    raise ValueError(f"{key} is listed twice")
                out[key] = val
            return out
        return v


class Holdings(_Model):
    """A whole account: subaccounts by name, and optionally the as-of date."""

    as_of: datetime | date | None = None
    subaccounts: dict[str, SubaccountHoldings]

    _source: str = PrivateAttr(default="<holdings>")
    # CSV: (subaccount, section, key) -> "row N"; section is cash/spot/perps.
    _rows: dict[tuple[str, str, Any], int] = PrivateAttr(default_factory=dict)

    @field_validator("as_of", mode="before")
    @classmethod
    def _parse_as_of(cls, v: Any) -> Any:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            raise ValueError(f"write as_of as a date, YYYY-MM-DD (got {v!r})")
        if isinstance(v, str):
            text = v.strip()
            # ISO 8601 only: a lenient parser reads "June" as 0001-06-01.
            try:
                # A bare date stays a date: it means "the close of that day".
                if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                    return date.fromisoformat(text)
                return datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(
                    f"cannot read {text!r} as a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)"
                ) from None
        return v

    @field_validator("subaccounts")
    @classmethod
    def _not_empty(cls, v: dict[str, SubaccountHoldings]) -> dict[str, SubaccountHoldings]:
        if not v:
            raise ValueError("no subaccounts: list at least one with cash, spot or perps")
        return v

    @property
    def source(self) -> str:
        """The file the holdings came from (for error messages)."""
        return self._source

    def where(self, subaccount: str, section: str, key: Any, field_name: str | None = None) -> str:
        """Where a holding was written: a YAML field path or a CSV row."""
        row = self._rows.get((subaccount, section, key))
        if row is not None:
            return f"row {row}" + (
                f", column {_CSV_NAME.get(field_name, field_name)}" if field_name else ""
            )
        index = f"[{key}]" if isinstance(key, int) else f".{key}"
        return f"subaccounts.{subaccount}.{section}{index}" + (
            f".{field_name}" if field_name else ""
        )

    def with_source(
        self, source: str, rows: dict[tuple[str, str, Any], int] | None = None
    ) -> Holdings:
        self._source = source
        self._rows = dict(rows or {})
        return self

    def copy_with(self, subaccounts: dict[str, SubaccountHoldings]) -> Holdings:
        """A copy with other subaccounts (same source, as_of)."""
        out = Holdings(as_of=self.as_of, subaccounts=subaccounts)
        return out.with_source(self._source, {})


_CSV_NAME = {"size": "quantity", "symbol": "asset"}


# --------------------------------------------------------------------------- loading


def load_holdings(path: str | Path) -> Holdings:
    """Read a holdings file (``.yaml``/``.yml`` or ``.csv``); see the module docstring."""
    p = Path(path).expanduser()
    if not p.exists():
        raise HoldingsError(f"holdings file {p} does not exist")
    if not p.is_file():
        raise HoldingsError(f"{p} is not a file")
    suffix = p.suffix.lower()
    if suffix not in (".yaml", ".yml", ".csv"):
        raise HoldingsError(f"{p}: unknown holdings format {suffix!r}; use .yaml, .yml or .csv")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise HoldingsError(f"{p}: cannot read the file ({exc})") from None
    return parse_holdings(text, "csv" if suffix == ".csv" else "yaml", source=str(p))


def parse_holdings(text: str, fmt: Literal["yaml", "csv"], source: str = "<holdings>") -> Holdings:
    """Parse holdings from text in ``fmt``; ``source`` names it in error messages."""
    if fmt == "yaml":
        return _parse_yaml(text, source)
    if fmt == "csv":
        return _parse_csv(text, source)
    raise HoldingsError(f"unknown holdings format {fmt!r}; use 'yaml' or 'csv'")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(text: str, source: str) -> Holdings:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise HoldingsError(f"{source}: not valid YAML{where}: {problem}") from None
    if data is None:
        raise HoldingsError(f"{source}: the file is empty; see examples/holdings.yaml")
    if not isinstance(data, dict):
        raise HoldingsError(
            f"{source}: expected a mapping with 'subaccounts' (and optionally 'as_of'), "
            f"got a {type(data).__name__}"
        )
    data = {str(k): v for k, v in data.items()}
    if "subaccounts" not in data and any(k in data for k in ("cash", "spot", "perps")):
        # Shorthand: one subaccount written at the top level.
        top = {k: data.pop(k) for k in ("exchange", "cash", "spot", "perps") if k in data}
        data["subaccounts"] = {"main": top}
    if isinstance(data.get("subaccounts"), dict):
        data["subaccounts"] = {
            str(k): ({} if v is None else v) for k, v in data["subaccounts"].items()
        }
    holdings = _validate(data, source, rows=None)
    return holdings.with_source(source)


def _parse_csv(text: str, source: str) -> Holdings:
    as_of: str | None = None
    lines: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            m = re.match(r"#\s*as_of\s*[:=]\s*(\S+)", stripped)
            if m:
                as_of = m.group(1)
            continue
        lines.append((number, line))
    if not lines:
        raise HoldingsError(f"{source}: no header and no rows; expected {','.join(CSV_COLUMNS)}")
    try:
        parsed = list(csv.reader(io.StringIO("\n".join(line for _, line in lines))))
    except csv.Error as exc:
        raise HoldingsError(f"{source}: not valid CSV ({exc})") from None
    header = [h.strip().lower() for h in parsed[0]]
    header_line = lines[0][0]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        raise HoldingsError(
            f"{source}: line {header_line}: unknown column(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(CSV_COLUMNS)}"
        )
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise HoldingsError(
            f"{source}: line {header_line}: missing column(s) {', '.join(missing)}; "
            f"the header must include {', '.join(CSV_REQUIRED)}"
        )
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise HoldingsError(f"{source}: line {header_line}: duplicate column(s) {', '.join(dup)}")
    if len(parsed) == 1:
        raise HoldingsError(f"{source}: the file has a header but no holdings")

    subs: dict[str, dict[str, Any]] = {}
    rows: dict[tuple[str, str, Any], int] = {}
    errors: list[str] = []
    for (number, _), values in zip(lines[1:], parsed[1:], strict=True):
        if len(values) != len(header):
            errors.append(
                f"row {number}: {len(values)} cells but the header has {len(header)} columns"
            )
            continue
        cell = {h: v.strip() for h, v in zip(header, values, strict=True)}
        given = {k: v for k, v in cell.items() if v != ""}
        for col in CSV_REQUIRED:
            if col not in given:
                errors.append(f"row {number}, column {col}: empty; it is required")
        if any(col not in given for col in CSV_REQUIRED):
            continue
        name, kind, asset = given["subaccount"], given["kind"].lower(), given["asset"]
        sub = subs.setdefault(name, {})
        if kind in ("cash", "spot"):
            allowed = {"entry_price"} if kind == "spot" else set()
            extra = [
                c
                for c in ("side", "leverage", "margin_mode", "margin", "entry_price")
                if c in given and c not in allowed
            ]
            if kind == "spot" and given.get("side", "").lower() == "long":
                extra.remove("side")
            if extra:
                errors.append(
                    f"row {number}: {', '.join(extra)} {'is' if len(extra) == 1 else 'are'} "
                    f"only for perp rows (this row is {kind})"
                )
                continue
            qty = _csv_number(given["quantity"])
            if qty is None:
                errors.append(
                    f"row {number}, column quantity: not a number (got {given['quantity']!r})"
                )
                continue
            if qty < 0:
                errors.append(
                    f"row {number}, column quantity: must be >= 0 (got {given['quantity']!r})"
                )
                continue
            key = asset.upper()
            section = sub.setdefault(kind, {})
            if kind == "cash":
                section[key] = section.get(key, 0.0) + qty if key in section else qty
            else:
                entry = _csv_number(given.get("entry_price", ""))
                if "entry_price" in given and entry is None:
                    errors.append(
                        f"row {number}, column entry_price: not a number (got {given['entry_price']!r})"
                    )
                    continue
                section[key] = _add_lot(section.get(key), qty, entry)
            rows.setdefault((name, kind, key), number)
        elif kind == "perp":
            perp: dict[str, Any] = {"symbol": asset, "size": given["quantity"]}
            for col in ("side", "entry_price", "leverage", "margin_mode", "margin"):
                if col in given:
                    perp[col] = given[col]
            perps = sub.setdefault("perps", [])
            rows[(name, "perps", len(perps))] = number
            perps.append(perp)
        else:
            errors.append(
                f"row {number}, column kind: must be cash, spot or perp (got {given['kind']!r})"
            )
    if errors:
        raise HoldingsError(_join(source, errors))
    data: dict[str, Any] = {"subaccounts": subs}
    if as_of is not None:
        data["as_of"] = as_of
    return _validate(data, source, rows=rows).with_source(source, rows)


def _csv_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _add_lot(prev: Any, qty: float, entry: float | None) -> Any:
    """Add a spot lot to an earlier one (CSV rows of the same asset add up)."""
    if prev is None:
        return qty if entry is None else {"quantity": qty, "entry_price": entry}
    p_qty = prev["quantity"] if isinstance(prev, dict) else prev
    p_entry = prev.get("entry_price") if isinstance(prev, dict) else None
    total = p_qty + qty
    if p_entry is not None and entry is not None and total > 0:
        return {"quantity": total, "entry_price": (p_qty * p_entry + qty * entry) / total}
    return total


def _validate(
    data: dict[str, Any], source: str, rows: dict[tuple[str, str, Any], int] | None
) -> Holdings:
    try:
        return Holdings.model_validate(data)
    except ValidationError as exc:
        messages = [_describe(err, rows) for err in exc.errors()]
        raise HoldingsError(_join(source, messages)) from None


def _join(source: str, messages: list[str]) -> str:
    head = messages[:_MAX_ERRORS]
    more = len(messages) - len(head)
    if len(messages) == 1:
        return f"{source}: {messages[0]}"
    lines = [f"{source}: {len(messages)} problems"] + [f"  - {m}" for m in head]
    if more:
        lines.append(f"  ... and {more} more")
    return "\n".join(lines)


_FIELDS = {
    "holdings": ("as_of", "subaccounts"),
    "subaccount": tuple(SubaccountHoldings.model_fields),
    "perp": tuple(PerpPosition.model_fields),
    "spot": tuple(SpotEntry.model_fields),
}


def _allowed(loc: tuple[Any, ...]) -> tuple[str, ...]:
    if len(loc) == 1:
        return _FIELDS["holdings"]
    if len(loc) == 3 and loc[0] == "subaccounts":
        return _FIELDS["subaccount"]
    if len(loc) == 5 and loc[2] == "perps":
        return _FIELDS["perp"]
    if len(loc) == 5 and loc[2] == "spot":
        return _FIELDS["spot"]
    return ()


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(err: Any, rows: dict[tuple[str, str, Any], int] | None) -> str:
    """One readable line for a pydantic error: where, what, and the value given."""
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    if kind == "extra_forbidden":
        allowed = _allowed(loc)
        msg = f"unknown field {loc[-1]!r}" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    elif kind == "missing":
        msg = "required but missing"
    elif "input" in err and kind not in ("model_type", "dict_type", "list_type"):
        value = err["input"]
        if not isinstance(value, (dict, list)):
            msg = f"{msg} (got {value!r})"
    elif kind in ("model_type", "dict_type", "list_type"):
        msg = f"{msg} (got {type(err.get('input')).__name__})"
    where = _path(loc) or "top level"
    if rows is not None and len(loc) >= 4 and loc[0] == "subaccounts":
        key = (str(loc[1]), str(loc[2]), loc[3])
        if key in rows:
            col = loc[4] if len(loc) > 4 else None
            col = _CSV_NAME.get(col, col) if isinstance(col, str) else None
            if col is None and loc[2] in ("cash", "spot"):
                col = "quantity"
            where = f"row {rows[key]}" + (f", column {col}" if col else "")
    return f"{where}: {msg}"


# --------------------------------------------------------------------------- resolution


@dataclass(frozen=True)
class Holding:
    """One priced position after resolution against market data.

    ``symbol`` is the panel column the position is marked on (a perp is marked on the
    spot bars of the same symbol); ``quantity`` is signed base units; ``margin`` and
    ``entry_price`` are in USDT. ``key`` says where it sits in the ``Holdings`` (the
    spot/cash key or the perp's index) and ``where`` how to point a person at it.
    """

    subaccount: str
    kind: Literal["spot", "perp"]
    symbol: str
    asset: str
    quantity: float
    entry_price: float | None = None
    leverage: float | None = None
    margin: float | None = None
    margin_mode: Literal["isolated", "cross"] | None = None
    section: str = "spot"
    key: Any = None
    where: str = ""
    note: str | None = None

    @property
    def side(self) -> Literal["long", "short"]:
        return "short" if self.quantity < 0 else "long"


@dataclass
class Book:
    """Holdings resolved at one bar: positions, stable cash (USDT) per subaccount."""

    positions: list[Holding]
    cash: dict[str, float]
    bar: pd.Timestamp
    source: str
    as_of_given: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def subaccounts(self) -> list[str]:
        return list(self.cash)

    @property
    def symbols(self) -> list[str]:
        """Distinct symbols held, in order of first appearance."""
        return list(dict.fromkeys(p.symbol for p in self.positions))


def market_symbol(key: str, available: set[str] | list[str]) -> str | None:
    """The panel column for an asset or pair the person wrote, or None if none fits.

    ``BTC`` -> ``BTCUSDT`` (else a BUSD/USDC/FDUSD pair); ``BTC/USDT``, ``BTCUSDT``,
    ``BTCUSDT-PERP`` and ``BTC/USDT:USDT`` -> ``BTCUSDT`` when in the data.
    """
    have = set(available)
    k = spot_symbol(key)
    if k in have:
        return k
    for q in PRICE_QUOTES:
        if k + q in have:
            return k + q
    return None


def bar_at(
    index: pd.DatetimeIndex, timeframe: str, as_of: Any, *, what: str = "as_of"
) -> pd.Timestamp:
    """The bar a review is made at: the last bar, or the last one opening at/before ``as_of``.

    A bare date means the close of that day: the last bar opening on it (the daily bar
    stamped that day; on hourly data the 23:00 bar). Raises ``HoldingsError`` if
    ``as_of`` falls before the first bar or after the last bar's close.
    """
    first, last = index[0], index[-1]
    bar = pd.Timedelta(seconds=timeframe_seconds(timeframe))
    if as_of is None:
        return last
    date_only = isinstance(as_of, date) and not isinstance(as_of, datetime)
    if date_only:
        # The close of that day: bars opening before the next midnight.
        day = pd.Timestamp(as_of).tz_localize("UTC")
        start, end = day, day + pd.Timedelta(days=1)
        shown = as_of.isoformat()
    else:
        t = pd.Timestamp(as_of)
        start = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
        end = start + pd.Timedelta(1, "ns")
        shown = str(start)
    span = f"the data covers {first:%Y-%m-%d} to {last:%Y-%m-%d}"
    if end <= first:
        raise HoldingsError(
            f"{what} {shown} is before the market data starts ({first:%Y-%m-%d %H:%M} UTC); {span}"
        )
    if start >= last + bar:
        raise HoldingsError(
            f"{what} {shown} is after the market data ends (last bar {last:%Y-%m-%d %H:%M} UTC); "
            f"{span}"
        )
    ns = index.as_unit("ns")
    pos = int(ns.searchsorted(end.as_unit("ns"), side="left")) - 1
    return index[pos]


def resolve_holdings(holdings: Holdings, panel: Panel, as_of: Any = None) -> Book:
    """Check holdings against market data and price them at the as-of bar.

    ``as_of`` (argument) overrides the file's; default: the last bar of the panel.
    Raises ``HoldingsError`` naming the file and the field for a symbol that is not in
    the data, or not priced (not listed) at the as-of bar, or an ``as_of`` outside it.
    """
    src = holdings.source
    given = as_of if as_of is not None else holdings.as_of
    what = "as_of" if as_of is not None else f"{src}: as_of"
    if isinstance(given, str):
        try:
            given = Holdings._parse_as_of(given)
        except ValueError as exc:
            raise HoldingsError(f"{what}: {exc}") from None
    bar = bar_at(panel.index, panel.timeframe, given, what=what)
    available = panel.symbols
    close = panel.close
    row = close.index.get_loc(bar)
    positions: list[Holding] = []
    cash: dict[str, float] = {}
    notes: list[str] = []

    def _price_symbol(key: str, where: str, what_kind: str) -> str:
        symbol = market_symbol(key, available)
        if symbol is None:
            parsed = split_quote(key.upper().replace("/", ""))
            hint = ""
            if parsed and parsed[1] not in STABLECOINS:
                hint = f" (pairs quoted in {parsed[1]} are not supported; trimtab values in USDT)"
            listing = ", ".join(available[:40]) + (" ..." if len(available) > 40 else "")
            raise HoldingsError(
                f"{src}: {where}: {what_kind} {key!r} is not in the market data{hint}; "
                f"available: {listing}"
            )
        parsed = split_quote(symbol.split("-", 1)[0])
        problem = quote_problem(symbol, parsed[1], "USDT") if parsed else None
        if problem:
            # Its price is in another currency: taken for USDT it would misstate the book.
            raise HoldingsError(f"{src}: {where}: {problem}")
        price = close[symbol].iloc[row]
        if not np.isfinite(price):
            s = close[symbol]
            first, last = s.first_valid_index(), s.last_valid_index()
            raise HoldingsError(
                f"{src}: {where}: {symbol} has no price at {bar:%Y-%m-%d %H:%M} UTC "
                f"(its data runs {first:%Y-%m-%d} to {last:%Y-%m-%d}); change as_of or remove it"
            )
        return symbol

    for name, sub in holdings.subaccounts.items():
        cash[name] = 0.0
        for currency, amount in sub.cash.items():
            where = holdings.where(name, "cash", currency)
            if currency in STABLECOINS:
                cash[name] += amount
                continue
            if amount == 0:
                continue
            symbol = market_symbol(currency, available)
            if symbol is None:
                raise HoldingsError(
                    f"{src}: {where}: cash in {currency} has no price in the market data; "
                    f"give cash in {', '.join(STABLECOINS)} (counted at 1 USDT), or a currency "
                    f"with a USDT pair in the data"
                )
            symbol = _price_symbol(currency, where, "cash currency")
            positions.append(
                Holding(
                    subaccount=name,
                    kind="spot",
                    symbol=symbol,
                    asset=currency,
                    quantity=amount,
                    section="cash",
                    key=currency,
                    where=where,
                    note=f"cash in {currency}, valued on {symbol} and counted as a spot holding",
                )
            )
        for key, entry in sub.spot.items():
            where = holdings.where(name, "spot", key)
            if key in STABLECOINS or (split_quote(key) or ("", ""))[0] in STABLECOINS:
                cash[name] += entry.quantity
                notes.append(f"{where}: {key} is a stablecoin, counted as cash at 1 USDT")
                continue
            if entry.quantity == 0:
                continue
            symbol = _price_symbol(key, where, "spot asset")
            positions.append(
                Holding(
                    subaccount=name,
                    kind="spot",
                    symbol=symbol,
                    asset=asset_of(symbol),
                    quantity=entry.quantity,
                    entry_price=entry.entry_price,
                    section="spot",
                    key=key,
                    where=where,
                )
            )
        for i, perp in enumerate(sub.perps):
            where = holdings.where(name, "perps", i)
            symbol = _price_symbol(
                perp.symbol, where + (".symbol" if "row" not in where else ""), "perpetual"
            )
            positions.append(
                Holding(
                    subaccount=name,
                    kind="perp",
                    symbol=symbol,
                    asset=asset_of(symbol),
                    quantity=perp.size if perp.side == "long" else -perp.size,
                    entry_price=perp.entry_price,
                    leverage=perp.effective_leverage,
                    margin=perp.effective_margin,
                    margin_mode=perp.margin_mode,
                    section="perps",
                    key=i,
                    where=where,
                )
            )
    if not positions and not any(v > 0 for v in cash.values()):
        raise HoldingsError(f"{src}: the holdings are empty (no cash, spot or perps)")
    return Book(
        positions=positions,
        cash=cash,
        bar=bar,
        source=src,
        as_of_given=None if given is None else str(given),
        notes=notes,
    )
