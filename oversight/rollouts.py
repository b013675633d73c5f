"""Gradual rollouts, the rules (pure): a new model version takes a growing share of the traffic.

A rollout moves a candidate (a hosted model) in for a baseline step by step, by default 1 % → 5 %
→ 20 % → 50 % → 100 % of the traffic. Each step lasts at least ``step_seconds``; when its time is
up the candidate advances if it *holds*: over at least ``Guard.min_outcomes`` outcomes of this
step, its metric (mean reward or accuracy) is not below the baseline's over the same step minus
``Guard.max_drop``. Reaching the last step (100 %) completes the rollout. As soon as the
candidate *regresses* (below the baseline minus ``max_drop``, both with enough outcomes), it is
rolled back, whatever the step's time. Otherwise the rollout holds, and :func:`next_action` says
why. The database side (stats, the writes, audit) is ``oversight.rollout_actions``; the periodic
job is ``dashboards.rollout_job``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

DEFAULT_STEPS: tuple[int, ...] = (1, 5, 20, 50, 100)
DEFAULT_STEP_SECONDS = 3600
MIN_STEP_SECONDS, MAX_STEP_SECONDS = 10, 30 * 24 * 3600
MAX_STEPS = 20
METRICS = ("auto", "reward", "accuracy")

ActionKind = Literal["hold", "advance", "complete", "rollback"]


@dataclass(frozen=True, slots=True)
class Guard:
    """When a candidate regresses: its ``metric`` over a step is below the baseline's minus
    ``max_drop``, judged once both have ``min_outcomes`` outcomes in the step. ``auto``: accuracy
    when the step's outcomes are mostly labels, mean reward when they are mostly rewards."""

    metric: str = "auto"
    max_drop: float = 0.05
    min_outcomes: int = 30

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Guard:
        """A guard from its JSON (anything left out: its default); ValueError(message, field) if bad."""
        data = dict(data or {})
        unknown = sorted(set(data) - {"metric", "max_drop", "min_outcomes"})
        if unknown:
            raise ValueError(f"the guard has no setting {unknown[0]!r} (it has metric, max_drop, min_outcomes)",
                             "guard")
        metric = data.get("metric", "auto")
        if metric not in METRICS:
            raise ValueError(f"guard.metric must be one of {', '.join(METRICS)}, not {metric!r}", "guard.metric")
        drop = data.get("max_drop", 0.05)
        if isinstance(drop, bool) or not isinstance(drop, int | float) or not math.isfinite(drop) \
                or not 0 <= drop <= 1:
            raise ValueError(f"guard.max_drop is how far below the baseline the candidate may fall, 0 to 1, "
                             f"not {drop!r}", "guard.max_drop")
        n = data.get("min_outcomes", 30)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1_000_000:
            raise ValueError(f"guard.min_outcomes is a whole number from 1 to 1000000, not {n!r}",
                             "guard.min_outcomes")
        return cls(metric=metric, max_drop=float(drop), min_outcomes=n)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Stats:
    """One model's outcomes in a step: how many carried a reward and their mean, how many a label
    and the model's accuracy against them."""

    rewards: int = 0
    mean_reward: float | None = None
    labels: int = 0
    accuracy: float | None = None

    def figure(self, metric: str) -> tuple[int, float | None]:
        return (self.labels, self.accuracy) if metric == "accuracy" else (self.rewards, self.mean_reward)


@dataclass(frozen=True, slots=True)
class State:
    """What the rules need of a running rollout."""

    steps: tuple[int, ...]
    step: int
    step_started_at: datetime
    step_seconds: int
    guard: Guard


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    reason: str


def check_steps(steps: Sequence[Any] | None) -> tuple[int, ...]:
    """The steps as given (percent of traffic), or the default; ValueError(message, field) if bad:
    whole percents, strictly increasing, above 0, the last one 100."""
    if steps is None:
        return DEFAULT_STEPS
    if not isinstance(steps, list | tuple) or not 2 <= len(steps) <= MAX_STEPS:
        raise ValueError(f"steps is a list of 2 to {MAX_STEPS} percents, such as [1, 5, 20, 50, 100]", "steps")
    if any(isinstance(s, bool) or not isinstance(s, int) for s in steps):
        raise ValueError("steps are whole percents, such as [1, 5, 20, 50, 100]", "steps")
    out = tuple(int(s) for s in steps)
    if out[0] <= 0 or any(b <= a for a, b in zip(out, out[1:], strict=False)) or out[-1] != 100:
        raise ValueError(f"steps must rise strictly from above 0 to 100, not {list(out)}", "steps")
    return out


def check_step_seconds(value: Any) -> int:
    if value is None:
        return DEFAULT_STEP_SECONDS
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_STEP_SECONDS <= value <= MAX_STEP_SECONDS:
        raise ValueError(f"step_seconds is how long each step lasts at least: {MIN_STEP_SECONDS} to "
                         f"{MAX_STEP_SECONDS} seconds, not {value!r}", "step_seconds")
    return value


def share(steps: Sequence[int], step: int) -> float:
    """The candidate's share of the traffic at step index ``step`` (0–1)."""
    return float(steps[min(max(step, 0), len(steps) - 1)]) / 100.0


def pct(value: float) -> str:
    """A share as people read it: 0.05 → "5 %"."""
    return f"{value * 100:g} %"


def metric_of(guard: Guard, candidate: Stats, baseline: Stats) -> str:
    """The metric the guard judges on: its own, or for ``auto`` the kind of outcome the step has most."""
    if guard.metric != "auto":
        return guard.metric
    labels, rewards = candidate.labels + baseline.labels, candidate.rewards + baseline.rewards
    return "accuracy" if labels and labels >= rewards else "reward"


def _name(metric: str) -> str:
    return "accuracy" if metric == "accuracy" else "mean reward"


def next_action(state: State, candidate_stats: Stats, baseline_stats: Stats, now: datetime) -> Action:
    """What a running rollout does now: roll back as soon as the candidate regresses, advance (or
    complete, at the last step) when the step's time is up and it holds, else hold, saying why."""
    g = state.guard
    metric = metric_of(g, candidate_stats, baseline_stats)
    n_c, v_c = candidate_stats.figure(metric)
    n_b, v_b = baseline_stats.figure(metric)
    enough = n_c >= g.min_outcomes and n_b >= g.min_outcomes and v_c is not None and v_b is not None
    what = _name(metric)
    compared = ""
    if enough:
        assert v_c is not None
        assert v_b is not None
        compared = (f"the candidate's {what} {v_c:.3f} over {n_c} outcomes against the baseline's {v_b:.3f} "
                    f"over {n_b} (at most {g.max_drop:g} below)")
        if v_c < v_b - g.max_drop - 1e-12:
            return Action("rollback", f"regression: {compared}")
    due_at = state.step_started_at + timedelta(seconds=state.step_seconds)
    at = pct(share(state.steps, state.step))
    if now < due_at:
        so_far = f"; {compared.replace('the candidate', 'so far the candidate')}" if enough else ""
        return Action("hold", f"the step at {at} lasts until {due_at:%Y-%m-%d %H:%M:%S} UTC{so_far}")
    if not enough:
        missing = []
        if n_c < g.min_outcomes:
            missing.append(f"the candidate has {n_c} of the {g.min_outcomes} outcomes ({what}) it needs in this step")
        if n_b < g.min_outcomes:
            missing.append(f"the baseline has {n_b} of the {g.min_outcomes} outcomes ({what}) it needs in this step")
        return Action("hold", f"the step at {at} is over but waits for outcomes: {'; '.join(missing)}")
    last = state.step + 1 >= len(state.steps) - 1
    nxt = pct(share(state.steps, state.step + 1))
    kind: ActionKind = "complete" if last else "advance"
    return Action(kind, f"{compared} holds after the step at {at}: on to {nxt}")
