"""Symbol names, as the data layer reads them: the rules live in ``trimtab.domain.quotes``
(one home for symbol and quote rules); this module keeps the names the readers import.

``normalize_symbol`` here is ``trimtab.domain.quotes.read_symbol`` (a name from a data
file, with a note on what was changed), not ``symbol_key``.
"""

from __future__ import annotations

from trimtab.domain.quotes import QUOTES, SYMBOL_RE, base_asset, to_symbol
from trimtab.domain.quotes import read_symbol as normalize_symbol

__all__ = ["QUOTES", "SYMBOL_RE", "base_asset", "normalize_symbol", "to_symbol"]
