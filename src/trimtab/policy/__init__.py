"""Allocation and rebalancing: targets and the order plans that reach them."""

from trimtab.data.calendar import calendar_mask
from trimtab.policy.orders import SkippedTrade, plan_orders
from trimtab.policy.policies import (
    BASELINES,
    POLICIES,
    EqualWeight,
    FixedWeights,
    Managed,
    Policy,
    TargetWeights,
    make_policy,
)

__all__ = [
    "BASELINES",
    "POLICIES",
    "EqualWeight",
    "FixedWeights",
    "Managed",
    "Policy",
    "SkippedTrade",
    "TargetWeights",
    "calendar_mask",
    "make_policy",
    "plan_orders",
]
