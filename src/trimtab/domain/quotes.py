"""Quote currencies: which prices a subaccount can take at face value.

A subaccount keeps its cash in one quote currency (USDT by default) and values every
position in it. A pair quoted in that currency, or in a stablecoin of ``STABLECOINS``
when the subaccount's quote is one too, is priced at par (1 BUSD = 1 USDT). Any other
quote (``ADABTC`` is ADA priced in BTC; ``BTCUSD`` is priced in US dollars, not a
stablecoin; ``BTCEUR``) is not at par: its price must be converted through a real
price series or the pair refused (``QuoteError``); trimtab refuses it, in backtests
(``Backtest`` setup), holdings and plans. Taking a BTC price for a USDT one would
"buy" a billion ADA with a thousand dollars.

Symbol names (this module is their one home too): trimtab writes a market as one
token, ``BTCUSDT`` (spot) or ``BTCUSDT-PERP``; ccxt writes ``BTC/USDT`` and
``BTC/USDT:USDT``, freqtrade file names ``BTC_USDT``. ``QUOTES`` is the one table of
quote currencies a name is split with (``split_symbol``, ``base_asset``); ``to_symbol``
converts ccxt's form, ``read_symbol`` reads a name from a data file (with a note on
what it changed), ``symbol_key`` compares names written by people (limits, config),
``spot_symbol`` finds the spot pair a holding's name stands for.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trimtab.domain.instruments import Instrument

#: Dollar stablecoins counted at par with each other (1 USDC = 1 USDT). Deliberately
#: short: TerraUSD (UST) lost its peg in May 2022 and is not here; a currency that is
#: missing is never assumed to be worth 1.
STABLECOINS: tuple[str, ...] = ("USDT", "USDC", "BUSD", "FDUSD", "TUSD", "DAI", "USDP")


#: Every quote currency a name is split with, in the order tried: the stablecoins first
#: (BUSD and TUSD before USD: ``ARBUSD`` is AR/BUSD), then quotes that split but are not
#: at par with USDT.
QUOTES: tuple[str, ...] = (*STABLECOINS, "USD", "BTC", "ETH", "BNB", "EUR", "TRY")


class QuoteError(ValueError):
    """An instrument whose quote currency cannot be valued in the subaccount's."""


def at_par(quote: str, account_quote: str) -> bool:
    """True if one unit of ``quote`` counts as one unit of ``account_quote``."""
    q, a = quote.upper(), account_quote.upper()
    return q == a or (q in STABLECOINS and a in STABLECOINS)


def quote_problem(symbol: str, quote: str, account_quote: str) -> str | None:
    """Why ``symbol`` (quoted in ``quote``) cannot be priced at par in an
    ``account_quote`` subaccount, or None if it can."""
    if at_par(quote, account_quote):
        return None
    core = symbol.split("-", 1)[0].replace("/", "")
    base = core[: -len(quote)] if core.endswith(quote) and len(core) > len(quote) else ""
    instead = f" such as {base}{account_quote}" if base else ""
    par = (
        f"{account_quote} or a stablecoin at par ({', '.join(STABLECOINS)})"
        if account_quote.upper() in STABLECOINS
        else account_quote
    )
    return (
        f"{symbol} is quoted in {quote}, not in the subaccount's {account_quote}: its price "
        f"is in {quote}, and taken for {account_quote} it would misstate every quantity and "
        f"value (trimtab does not convert between quotes); use a pair quoted in {par}"
        f"{instead}"
    )


def check_quotes(
    instruments: Iterable[tuple[str, str]], account_quote: str, *, where: str = ""
) -> None:
    """Raise ``QuoteError`` naming every (symbol, quote) not at par with ``account_quote``.

    ``where`` (a file, a command, a subaccount) prefixes the message.
    """
    problems = [
        p for symbol, quote in instruments if (p := quote_problem(symbol, quote, account_quote))
    ]
    if problems:
        prefix = f"{where}: " if where else ""
        raise QuoteError(prefix + "; ".join(problems))


def check_traded_quotes(
    symbols: Iterable[str],
    instruments: Mapping[str, Instrument],
    account_quote: str,
    *,
    where: str = "",
) -> None:
    """``check_quotes`` for the symbols a run may trade: the quote of each is its
    instrument's (``instruments``) or read from the name (``ADABTC`` -> BTC). A name
    whose quote cannot be told is left to whoever builds its instrument."""
    pairs = []
    for symbol in symbols:
        inst = instruments.get(symbol)
        if inst is not None:
            pairs.append((symbol, inst.quote))
            continue
        try:
            _, quote = split_symbol(symbol.removesuffix("-PERP"))
        except ValueError:
            continue
        pairs.append((symbol, quote))
    check_quotes(pairs, account_quote, where=where)


def format_price(x: float | None) -> str:
    """A price with sensible precision for a person: 30,472 / 1,933.79 / 0.06646 ("n/a"
    when unknown or not finite)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:,.2f}"
    if x == 0:
        return "0"
    digits = max(2, 3 - int(math.floor(math.log10(abs(x)))))
    return f"{x:.{digits}f}"


# --------------------------------------------------------------------------- symbol names


def split_quote(name: str) -> tuple[str, str] | None:
    """``BTCUSDT`` -> ``("BTC", "USDT")`` by the first quote of ``QUOTES`` it ends with
    (the whole name must be longer than the quote); None if none fits."""
    for quote in QUOTES:
        if name.endswith(quote) and len(name) > len(quote):
            return name[: -len(quote)], quote
    return None


def split_symbol(symbol: str, quote: str | None = None) -> tuple[str, str]:
    """Split ``BTCUSDT`` or ``BTC/USDT`` into (base, quote); ``quote`` given: that one.
    Raises ValueError when the quote cannot be told."""
    if "/" in symbol:
        base, q = symbol.split("/", 1)
        return base, q.split(":", 1)[0]
    if quote is not None:
        if not symbol.endswith(quote) or symbol == quote:
            raise ValueError(f"symbol {symbol!r} does not end with quote {quote!r}")
        return symbol[: -len(quote)], quote
    split = split_quote(symbol)
    if split is None:
        raise ValueError(f"cannot tell the quote currency of {symbol!r}; pass quote=")
    return split


def base_asset(symbol: str) -> str | None:
    """``BTCUSDT`` (or ``BTCUSDT-PERP``) -> ``BTC``; None if no quote of ``QUOTES`` fits."""
    split = split_quote(symbol.split("-", 1)[0])
    return split[0] if split else None


def asset_of(pair: str) -> str:
    """The base asset of a pair name (``BTCUSDT`` -> ``BTC``), or the name itself when no
    quote of ``QUOTES`` fits (``BTC`` stays ``BTC``). Suffixes such as ``-PERP`` are not
    stripped: pass a spot pair."""
    split = split_quote(pair)
    return split[0] if split else pair


def to_symbol(market: str) -> str:
    """``BTC/USDT`` -> ``BTCUSDT``; ``BTC/USDT:USDT`` -> ``BTCUSDT-PERP``; others unchanged.

    A dated future (``BTC/USDT:USDT-231229``) keeps its expiry: ``BTCUSDT-231229``.
    """
    if "/" not in market:
        return market
    pair, _, settle = market.partition(":")
    base, _, quote = pair.partition("/")
    if not settle:
        return f"{base}{quote}"
    _, _, expiry = settle.partition("-")
    return f"{base}{quote}-{expiry}" if expiry else f"{base}{quote}-PERP"


def symbol_key(symbol: str) -> str:
    """The name people's lists are compared by: ``BTC/USDT`` and ``btcusdt`` are both
    ``BTCUSDT`` (settle suffixes such as ``:USDT`` are kept)."""
    return symbol.strip().upper().replace("/", "")


def spot_symbol(name: str) -> str:
    """The spot pair a holding's name stands for, before it is looked up in the data:
    ``btc/usdt``, ``BTC_USDT``, ``BTCUSDT-PERP`` and ``BTC/USDT:USDT`` are ``BTCUSDT``;
    a bare asset stays as it is (``BTC``)."""
    key = name.strip().upper().replace(" ", "")
    return key.split(":", 1)[0].replace("/", "").replace("_", "").removesuffix("-PERP")


#: What a trimtab symbol may hold: upper-case letters and digits, with ``-`` or ``.``
#: between parts (``BTCUSDT``, ``1000SHIBUSDT``, ``BTCUSDT-PERP``, ``BTCUSDT-231229``).
#: Anything else (``[``, ``]``, spaces, quotes, a stray ``/``) is refused: such names
#: end up in file names, markup and reports, where they are unsafe or mean something else.
SYMBOL_RE = re.compile(r"^[A-Z0-9]+(?:[-.][A-Z0-9]+)*$")
_CCXT_RE = re.compile(r"^[A-Z0-9]+/[A-Z0-9]+(?::[A-Z0-9]+(?:-[A-Z0-9]+)?)?$")


def read_symbol(raw: str) -> tuple[str | None, str | None]:
    """Read a symbol as written in a data file: ``(symbol, note)``.

    Surrounding spaces are stripped; lower case is read as upper case (exchanges ignore
    case: ``btcusdt`` is ``BTCUSDT``) and the ccxt form is converted (``BTC/USDT`` ->
    ``BTCUSDT``, ``btc/usdt:usdt`` -> ``BTCUSDT-PERP``), each with a ``note`` saying so.
    A name that still does not match ``SYMBOL_RE`` gives ``(None, why)``.
    """
    text = raw.strip()
    upper = text.upper()
    converted = to_symbol(upper) if _CCXT_RE.match(upper) else upper
    if not SYMBOL_RE.match(converted):
        bad = sorted(
            {ch for ch in converted if not (ch.isascii() and (ch.isalnum() or ch in "-."))}
        )
        shown = "".join(bad) if bad else ""
        why = (
            f"symbol {raw!r} has characters trimtab does not allow ({shown!r}); "
            if shown
            else f"symbol {raw!r} is not a valid name; "
        )
        return None, why + "use letters, digits and '-' or '.', e.g. BTCUSDT or BTCUSDT-PERP"
    notes = []
    if text != raw:
        notes.append("surrounding spaces removed")
    if upper != text:
        notes.append("lower case read as upper case")
    if converted != upper:
        notes.append("ccxt form converted")
    return converted, (
        f"symbol {raw!r} read as {converted} ({', '.join(notes)})" if notes else None
    )
