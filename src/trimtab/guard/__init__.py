"""Hard limits applied after every model and before any order."""

from trimtab.guard.targets import TargetGuard

__all__ = ["TargetGuard"]
