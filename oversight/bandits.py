"""Bandit routing: Thompson sampling over a system's models (or versions of one), pure.

Each arm is a model with a Beta(alpha, beta) belief about its reward (0–1), Beta(1, 1) before any
outcome. For one decision, :func:`choose` draws once from every arm's Beta and the highest draw
answers; so an arm is chosen as often as it is likely to be the best. To keep learning about arms
that look worse, every arm keeps a floor share of the traffic: with probability ``len(arms) * floor``
the decision goes to an arm picked uniformly at random. An outcome updates the arm that answered:
``alpha += r``, ``beta += 1 - r`` (:func:`update`; the database side is ``oversight.bandit_arms``).

No database here: the scoring code and the rollout job call these with arms they read themselves.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats  # type: ignore[import-untyped]

DEFAULT_FLOOR = 0.01
#: The credible interval :func:`posterior` gives: 90 %, from the 5th to the 95th percentile.
INTERVAL = 0.90


@dataclass(frozen=True, slots=True)
class Arm:
    model: str
    alpha: float = 1.0
    beta: float = 1.0


def _explore_chance(n: int, floor: float) -> float:
    if not math.isfinite(floor) or floor <= 0:
        return 0.0
    return min(1.0, n * floor)


def _pct(share: float) -> str:
    return f"{share * 100:g} %"


def choose(arms: Sequence[Arm], floor: float, rng: random.Random) -> tuple[str, str]:
    """One arm for one decision, and the reason said in words: with probability len(arms)*floor a
    uniformly random arm (so every arm keeps at least `floor` of the traffic), else Thompson sampling
    (one Beta draw per arm, the highest wins)."""
    if not arms:
        raise ValueError("the bandit has no arms to choose from")
    if len(arms) == 1:
        return arms[0].model, f"bandit: {arms[0].model} is the only arm"
    if rng.random() < _explore_chance(len(arms), floor):
        arm = arms[rng.randrange(len(arms))]
        return arm.model, (f"bandit: {arm.model} picked at random (each of {len(arms)} arms keeps at least "
                           f"{_pct(floor)} of the traffic)")
    draws = [rng.betavariate(a.alpha, a.beta) for a in arms]
    best = max(range(len(arms)), key=draws.__getitem__)
    arm = arms[best]
    return arm.model, (f"bandit: {arm.model} drew {draws[best]:.3f}, the highest of {len(arms)} arms "
                       f"(Thompson sampling; its mean reward so far {arm.alpha / (arm.alpha + arm.beta):.3f})")


def update(arm: Arm, reward: float) -> Arm:
    """The arm after one outcome with reward ``reward`` (clipped to 0–1)."""
    r = min(1.0, max(0.0, float(reward)))
    return replace(arm, alpha=arm.alpha + r, beta=arm.beta + 1.0 - r)


def traffic_shares(arms: Sequence[Arm], floor: float, draws: int = 4000, seed: int = 0) -> dict[str, float]:
    """Each arm's expected share of traffic now (Monte Carlo, vectorised numpy)."""
    if not arms:
        return {}
    n = len(arms)
    explore = _explore_chance(n, floor)
    if n == 1:
        return {arms[0].model: 1.0}
    gen = np.random.default_rng(seed)
    alpha = np.array([a.alpha for a in arms], dtype=np.float64)
    beta = np.array([a.beta for a in arms], dtype=np.float64)
    samples = gen.beta(alpha, beta, size=(draws, n))
    wins = np.bincount(samples.argmax(axis=1), minlength=n) / draws
    shares = explore / n + (1.0 - explore) * wins
    return {a.model: float(s) for a, s in zip(arms, shares, strict=True)}


def posterior(arm: Arm) -> tuple[float, float, float]:
    """The arm's mean reward and a 90 % credible interval (scipy.stats.beta)."""
    dist = stats.beta(arm.alpha, arm.beta)
    tail = (1.0 - INTERVAL) / 2
    return float(dist.mean()), float(dist.ppf(tail)), float(dist.ppf(1.0 - tail))
