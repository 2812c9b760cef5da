"""Strategy plug-ins (one isolated subaccount each) and the allocator across them.

``Strategy`` (``trimtab.strategies.base``) composes a signal, sizers and a trading rule
into a policy the engine runs like any other; ``build_strategy`` makes the named ones
(core, trend, mean-reversion); the allocator moves capital between subaccounts from
their own return streams.
"""

from trimtab.strategies.base import BarView, Capacity, Strategy, StrategySpec
from trimtab.strategies.library import build_strategy, strategy_params

__all__ = ["BarView", "Capacity", "Strategy", "StrategySpec", "build_strategy", "strategy_params"]
