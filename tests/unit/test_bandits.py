"""Thompson sampling with a floor (oversight.bandits), on simulated reward streams with fixed seeds."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from oversight import bandits
from oversight.bandits import Arm

TRUTH = {"old": 0.3, "mid": 0.5, "new": 0.7}


def simulate(truth: dict[str, float], rounds: int, floor: float, seed: int) -> tuple[list[str], list[str], list[Arm]]:
    """choose → Bernoulli reward → update, ``rounds`` times: who answered, the reasons, the arms after."""
    rng, world = random.Random(seed), random.Random(seed + 1)
    arms = {m: Arm(m) for m in truth}
    chosen, reasons = [], []
    for _ in range(rounds):
        model, reason = bandits.choose(list(arms.values()), floor, rng)
        reward = 1.0 if world.random() < truth[model] else 0.0
        arms[model] = bandits.update(arms[model], reward)
        chosen.append(model)
        reasons.append(reason)
    return chosen, reasons, list(arms.values())


def binomial_low(n: int, p: float, z: float = 4.0) -> float:
    return n * p - z * math.sqrt(n * p * (1 - p))


def test_traffic_moves_to_the_best_arm():
    chosen, _, arms = simulate(TRUTH, 4000, 0.01, seed=11)
    last = Counter(chosen[-1000:])
    assert last["new"] / 1000 > 0.85, last
    # the worse arms still get their floor, and the better of them more than the worst over the run
    everything = Counter(chosen)
    for model in TRUTH:
        assert everything[model] >= binomial_low(4000, 0.01), everything
    # the posteriors learnt the truth: within four posterior standard deviations (the best arm, within 0.03)
    for arm in arms:
        mean, low, high = bandits.posterior(arm)
        n = arm.alpha + arm.beta
        sd = math.sqrt(mean * (1 - mean) / (n + 1))
        assert abs(mean - TRUTH[arm.model]) <= 4 * sd, (arm, mean)
        assert low < mean < high
    best = next(a for a in arms if a.model == "new")
    assert abs(bandits.posterior(best)[0] - 0.7) < 0.03


def test_every_arm_keeps_its_floor_share():
    """A clearly worse arm is still tried: at random with probability len(arms) × floor, uniformly, so
    each arm's random picks are Binomial(rounds, floor); its total share is at least that."""
    floor, rounds = 0.05, 3000
    chosen, reasons, _ = simulate({"bad": 0.1, "good": 0.9}, rounds, floor, seed=5)
    random_picks = Counter(m for m, r in zip(chosen, reasons, strict=True) if "picked at random" in r)
    sd = math.sqrt(rounds * floor * (1 - floor))
    for model in ("bad", "good"):
        assert abs(random_picks[model] - rounds * floor) <= 4 * sd, random_picks
    share_bad = Counter(chosen[-1000:])["bad"] / 1000
    assert share_bad >= floor - 4 * math.sqrt(floor * (1 - floor) / 1000), share_bad
    assert share_bad < 0.2  # and not much more: the good arm takes the rest


def test_reasons_say_what_happened():
    rng = random.Random(1)
    model, reason = bandits.choose([Arm("a", 50, 1), Arm("b", 1, 50)], 0.0, rng)
    assert model == "a"
    assert reason.startswith("bandit: a drew ")
    assert "Thompson sampling" in reason
    model, reason = bandits.choose([Arm("a", 50, 1), Arm("b", 1, 50)], 0.5, random.Random(3))
    assert "picked at random" in reason
    assert "at least 50 %" in reason
    assert bandits.choose([Arm("only")], 0.01, rng) == ("only", "bandit: only is the only arm")
    with pytest.raises(ValueError, match="no arms"):
        bandits.choose([], 0.01, rng)


def test_traffic_shares_match_what_choose_does():
    arms = [Arm("a", 12, 8), Arm("b", 10, 10), Arm("c", 3, 9)]
    shares = bandits.traffic_shares(arms, 0.02, draws=20000, seed=1)
    assert sum(shares.values()) == pytest.approx(1.0)
    rng = random.Random(9)
    n = 20000
    seen = Counter(bandits.choose(arms, 0.02, rng)[0] for _ in range(n))
    for arm in arms:
        p = shares[arm.model]
        assert abs(seen[arm.model] / n - p) <= 4 * math.sqrt(p * (1 - p) / n) + 4 * math.sqrt(p * (1 - p) / 20000)
        assert p >= 0.02
    # same seed, same answer; fresh arms share evenly
    assert bandits.traffic_shares(arms, 0.02, draws=20000, seed=1) == shares
    even = bandits.traffic_shares([Arm("x"), Arm("y")], 0.01)
    assert even["x"] == pytest.approx(0.5, abs=0.04)
    # a floor covering every arm's share is uniform
    assert bandits.traffic_shares([Arm("x", 100, 1), Arm("y", 1, 100)], 0.5) == {"x": 0.5, "y": 0.5}
    assert bandits.traffic_shares([], 0.01) == {}
    assert bandits.traffic_shares([Arm("solo")], 0.01) == {"solo": 1.0}


def test_posterior_and_update():
    mean, low, high = bandits.posterior(Arm("a"))
    assert (mean, low, high) == pytest.approx((0.5, 0.05, 0.95))
    arm = bandits.update(bandits.update(Arm("a"), 1.0), 0.25)
    assert (arm.alpha, arm.beta) == (2.25, 1.75)
    assert bandits.update(Arm("a"), 7) == Arm("a", 2.0, 1.0)  # clipped to 0–1
    mean, low, high = bandits.posterior(Arm("a", 80, 20))
    assert mean == pytest.approx(0.8)
    assert 0.72 < low < 0.8 < high < 0.87
