"""Hard limits and circuit breakers, applied after every model and before any order.

``trimtab.guard.safety.SafetyLayer`` is what the engine runs: the limits of
``trimtab.guard.limits`` and the breakers of ``trimtab.guard.breakers``.
"""
