"""Walk-forward: a strategy's parameters chosen again and again on the past only.

``WalkForward`` wraps a strategy (it is a policy itself). At the first bar of every
``every`` period it replays each candidate parameter set over the last ``train`` bars
of the observation's own history (decisions at each close from the history up to that
close; the holdings drift with the next bar's close; ``fee_bps`` charged on what each
trade moves) and continues with the candidate of the best ``metric`` (Sharpe or Calmar,
365-day years). The replay reads only the rows the observation holds (bars up to the
decision bar), so nothing after the decision bar can reach a choice; each choice is a
reason of that bar's decision, with every candidate's score.

The replay is a scoring model, not the engine: it trades at the decision close, without
lots, spread or impact, and takes today's membership for the past's. It ranks candidates;
the backtest that uses the choice is the engine's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd

from trimtab.domain.decisions import Assessment, Decision, Observation, PortfolioState, Reason
from trimtab.policy.policies import Telemetry
from trimtab.strategies.base import Strategy, due


def _score(returns: np.ndarray, metric: str, periods_per_year: float) -> float:
    if len(returns) < 2:
        return float("nan")
    if metric == "calmar":
        wealth = np.cumprod(1.0 + returns)
        peak = np.maximum.accumulate(np.concatenate([[1.0], wealth]))[1:]
        mdd = float((1.0 - wealth / peak).max())
        years = len(returns) / periods_per_year
        growth = float(wealth[-1]) ** (1.0 / years) - 1.0 if wealth[-1] > 0 else -1.0
        return growth / mdd if mdd > 0 else (math.inf if growth > 0 else 0.0)
    sd = float(returns.std(ddof=1))
    return float(returns.mean()) / sd * math.sqrt(periods_per_year) if sd > 0 else 0.0


class WalkForward:
    """A strategy whose parameters are refit on the past (see the module docstring).

    ``factory`` builds the strategy from a parameter dict (the file's ``params`` with a
    candidate's values over them); ``grid`` maps parameter names to candidate values.
    """

    def __init__(
        self,
        factory: Callable[[dict[str, Any]], Strategy],
        params: Mapping[str, Any] | None,
        grid: Mapping[str, tuple[Any, ...]],
        *,
        every: Literal["monthly", "quarterly"] = "quarterly",
        train: int = 365,
        metric: Literal["sharpe", "calmar"] = "sharpe",
        fee_bps: float = 10.0,
    ) -> None:
        if not grid:
            raise ValueError("a walk-forward needs a grid of at least one parameter")
        self.factory = factory
        self.params = dict(params or {})
        keys = list(grid)
        self.candidates = [
            dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())
        ]
        self.every = every
        self.train = train
        self.metric = metric
        self.fee = fee_bps / 1e4
        self.chosen: dict[str, Any] = {}
        self.active = factory(self.params)
        self.name = f"{self.active.name}[walk-forward]"
        self._symbols: tuple[str, ...] = ()
        self._ppy = 365.0

    # --- the policy protocol -----------------------------------------------------------
    def reset(self, symbols: tuple[str, ...], periods_per_year: float) -> None:
        self._symbols, self._ppy = symbols, periods_per_year
        self.chosen = {}
        self.active = self.factory(self.params)
        self.active.reset(symbols, periods_per_year)

    def telemetry(self) -> Telemetry:
        return self.active.telemetry()

    def state(self) -> dict[str, Any]:
        return {"chosen": dict(self.chosen), "active": self.active.state()}

    def restore(self, state: dict[str, Any]) -> None:
        self.chosen = dict(state["chosen"])
        self.active = self.factory({**self.params, **self.chosen})
        self.active.reset(self._symbols, self._ppy)
        self.active.restore(state["active"])

    def decide(self, obs: Observation, assessment: Assessment) -> Decision:
        refit: Reason | None = None
        if due(obs, self.every) and obs.i >= self.active.window + 2:
            refit = self._refit(obs)
        decision = self.active.decide(obs, assessment)
        if refit is None:
            return decision
        return Decision(decision.targets, (*decision.reasons, refit), decision.action)

    # --- the choice ----------------------------------------------------------------------
    def _refit(self, obs: Observation) -> Reason:
        first = max(0, obs.i - self.train)
        scores = []
        for candidate in self.candidates:
            returns = self.replay(self.factory({**self.params, **candidate}), obs, first)
            scores.append(_score(returns, self.metric, self._ppy))
        finite = [s if math.isfinite(s) else -math.inf for s in scores]
        best = int(np.argmax(finite))
        before = dict(self.chosen)
        self.chosen = dict(self.candidates[best])
        if self.chosen != before:
            state = self.active.state()
            self.active = self.factory({**self.params, **self.chosen})
            self.active.reset(self._symbols, self._ppy)
            self.active.restore(state)
        table = [
            {**c, self.metric: None if not math.isfinite(s) else round(s, 4)}
            for c, s in zip(self.candidates, scores, strict=True)
        ]
        return Reason(
            "walk_forward",
            f"parameters refit on bars {first}..{obs.i} ({obs.i - first} bars, "
            f"{self.metric}): {self.chosen}"
            + ("" if before == self.chosen else f" (were {before or 'the defaults'})"),
            {"chosen": self.chosen, "candidates": table, "train_first_bar": first},
        )

    def replay(self, strategy: Strategy, obs: Observation, first: int) -> np.ndarray:
        """Returns per bar, net of fees, of ``strategy`` decided at closes ``first..i-1``
        (each from the history up to that close) and held to the next close."""
        strategy.reset(obs.symbols, self._ppy)
        close_all = obs.history("close")
        bar = pd.Timedelta(days=365.0 / self._ppy)
        names = obs.feature_names
        features = {n: obs.feature_history(n) for n in names}
        n = len(obs.symbols)
        weights = np.zeros(n)
        equity = peak = 1.0
        out = []
        for s in range(first, obs.i):
            close = close_all[s]
            listed = np.isfinite(close) & (close > 0)
            marks = np.where(listed, close, 0.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                qty = np.where(listed, weights * equity / np.where(listed, close, 1.0), 0.0)
            state = PortfolioState(equity, equity * (1.0 - weights.sum()), qty, marks, peak)
            ts = obs.timestamp - (obs.i - s) * bar
            past = obs.earlier(s, ts, state, listed, obs.universe & listed, ts - bar)
            decision = strategy.decide(past, Assessment({k: v[s] for k, v in features.items()}))
            kept = 1.0
            if decision.targets is not None:
                target = np.where(listed, np.nan_to_num(decision.targets), 0.0)
                kept = 1.0 - self.fee * float(np.abs(target - weights).sum())
                weights = target
            nxt = close_all[s + 1]
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.where(
                    listed & np.isfinite(nxt), nxt / np.where(listed, close, 1.0) - 1.0, 0.0
                )
            growth = float(weights @ r)
            net = kept * (1.0 + growth)
            equity *= net
            peak = max(peak, equity)
            if 1.0 + growth > 0:
                weights = weights * (1.0 + r) / (1.0 + growth)
            out.append(net - 1.0)
        return np.asarray(out)
