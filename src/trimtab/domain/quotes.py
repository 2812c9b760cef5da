"""Quote currencies: which prices a subaccount can take at face value.

A subaccount keeps its cash in one quote currency (USDT by default) and values every
position in it. A pair quoted in that currency, or in a stablecoin of ``STABLECOINS``
when the subaccount's quote is one too, is priced at par (1 BUSD = 1 USDT). Any other
quote (``ADABTC`` is ADA priced in BTC; ``BTCUSD`` is priced in US dollars, not a
stablecoin; ``BTCEUR``) is not at par: its price must be converted through a real
price series or the pair refused (``QuoteError``); trimtab refuses it, in backtests
(``Backtest`` setup), holdings and plans. Taking a BTC price for a USDT one would
"buy" a billion ADA with a thousand dollars.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trimtab.domain.instruments import Instrument

#: Dollar stablecoins counted at par with each other (1 USDC = 1 USDT). Deliberately
#: short: TerraUSD (UST) lost its peg in May 2022 and is not here; a currency that is
#: missing is never assumed to be worth 1.
STABLECOINS: tuple[str, ...] = ("USDT", "USDC", "BUSD", "FDUSD", "TUSD", "DAI", "USDP")


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
    from trimtab.domain.instruments import split_symbol  # instruments imports this module

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
