"""Performance and feedback-loop statistics (dashboards/performance.py) as plain functions.

* Properties by Hypothesis against naive references written here with plain Python loops:
  accuracy and agreement (JSON values compared through a canonical form), mean reward, ECE (each
  row put in its bin by comparing against the edges k/bins), Pearson's r (the textbook formula,
  and ``scipy.stats.pearsonr``), the Gini coefficient (mean absolute difference over all ordered
  pairs), and homogeneity (Jaccard over every pair of Python sets).
* Hand-computed examples for each function, the ``None`` cases and the contract's ``ValueError``s.
* Homogeneity's sampled path: deterministic for one seed, distinct pairs of distinct subjects, the
  mean over exactly those pairs, and close to the all-pairs mean.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from dashboards.performance import (
    _pairs,
    accuracy,
    agreement,
    correlation_rise,
    expected_calibration_error,
    exposure_gini,
    homogeneity,
    mean_reward,
    own_outcome_share,
    prediction_outcome_correlation,
)

ROOT = Path(__file__).resolve().parents[2]

# No example database on disk, no deadline on a shared VM; PERFORMANCE_EXAMPLES=5000 searches longer.
PROPERTY = settings(
    database=None,
    deadline=None,
    max_examples=int(os.environ.get("PERFORMANCE_EXAMPLES", "200")),
    suppress_health_check=[HealthCheck.too_slow],
)

# --------------------------------------------------------------------------------------------
# Naive references


def canonical(v: Any) -> Any:
    """A JSON value in a form where Python's == is JSON equality: numbers as floats, booleans
    tagged (so true is not 1), lists as tuples, objects as sorted tuples of items."""
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, int | float):
        return ("number", float(v))
    if isinstance(v, list):
        return ("list", tuple(canonical(x) for x in v))
    if isinstance(v, dict):
        return ("object", tuple(sorted((k, canonical(x)) for k, x in v.items())))
    return ("other", v)


def naive_match_share(left: list[Any], right: list[Any]) -> float:
    same = 0
    for a, b in zip(left, right, strict=True):
        if canonical(a) == canonical(b):
            same += 1
    return same / len(left)


def naive_ece(confidence: list[float], correct: list[float], bins: int) -> float:
    members: list[list[int]] = [[] for _ in range(bins)]
    for row, c in enumerate(confidence):
        for k in range(bins):
            if k / bins <= c and (c < (k + 1) / bins or k == bins - 1):
                members[k].append(row)
                break
    n = len(confidence)
    total = 0.0
    for rows in members:
        if rows:
            mean_correct = sum(correct[r] for r in rows) / len(rows)
            mean_confidence = sum(confidence[r] for r in rows) / len(rows)
            total += len(rows) / n * abs(mean_correct - mean_confidence)
    return total


def naive_pearson(x: list[float], y: list[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy)


def naive_gini(x: list[float]) -> float:
    n = len(x)
    mean = sum(x) / n
    diffs = 0.0
    for a in x:
        for b in x:
            diffs += abs(a - b)
    return diffs / (2 * n * n * mean)


def jaccard(a: set[Any], b: set[Any]) -> float:
    union = a | b
    return len(a & b) / len(union) if union else 0.0


def naive_homogeneity(lists: list[list[Any]], pairs: list[tuple[int, int]] | None = None) -> float:
    sets = [set(items) for items in lists]
    if pairs is None:
        pairs = [(i, j) for i in range(len(sets)) for j in range(i + 1, len(sets))]
    return sum(jaccard(sets[i], sets[j]) for i, j in pairs) / len(pairs)


# --------------------------------------------------------------------------------------------
# Strategies

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from([0.0, 1.0, 2.0, 0.5]) | st.text("ab1", max_size=2),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text("ab", max_size=2), inner, max_size=3),
    max_leaves=6,
)
# Pairs where the second is often a copy of the first, so matches are common.
json_pairs = st.lists(
    st.tuples(json_values, json_values, st.booleans()).map(lambda t: (t[0], t[0] if t[2] else t[1])),
    min_size=1,
    max_size=30,
)
shares = st.floats(0.0, 1.0)
# Confidences on and off the bin edges of every bin count up to 20.
confidences = st.one_of(shares, st.integers(0, 20).flatmap(lambda d: st.integers(0, d).map(lambda k: k / max(d, 1))))
grid = st.integers(0, 100).map(lambda k: k / 100)


# --------------------------------------------------------------------------------------------
# accuracy, agreement


@PROPERTY
@given(json_pairs)
def test_accuracy_and_agreement_equal_the_share_of_equal_json_values(pairs: list[tuple[Any, Any]]) -> None:
    left, right = [a for a, _ in pairs], [b for _, b in pairs]
    expected = naive_match_share(left, right)
    assert accuracy(left, right) == pytest.approx(expected, abs=1e-15)
    assert agreement(left, right) == pytest.approx(expected, abs=1e-15)


def test_accuracy_compares_as_json_numbers_equal_but_booleans_distinct() -> None:
    # 1 == 1.0; true is not 1; "1" is not 1; null equals null.
    assert accuracy([1, True, "1", None], [1.0, 1, 1, None]) == 0.5
    assert accuracy(["a", "b", "c", "a"], ["a", "b", "x", "b"]) == 0.5
    assert accuracy([{"k": [1, 2]}, [1, 2], {"k": 1}], [{"k": [1.0, 2]}, [2, 1], {"k": True}]) == pytest.approx(1 / 3)


def test_agreement_counts_resolutions_where_the_person_kept_the_output() -> None:
    model = ["approve", "deny", "approve", {"score": 3}]
    human = ["approve", "approve", "approve", {"score": 3}]
    assert agreement(model, human) == 0.75


def test_accuracy_and_agreement_are_none_when_empty_and_reject_unequal_lengths() -> None:
    assert accuracy([], []) is None
    assert agreement([], []) is None
    with pytest.raises(ValueError, match="1 and 2"):
        accuracy([1], [1, 2])
    with pytest.raises(ValueError, match="2 and 0"):
        agreement([1, 2], [])


# --------------------------------------------------------------------------------------------
# mean_reward


@PROPERTY
@given(st.lists(shares, min_size=1, max_size=50))
def test_mean_reward_is_the_arithmetic_mean(rewards: list[float]) -> None:
    assert mean_reward(rewards) == pytest.approx(sum(rewards) / len(rewards), abs=1e-14)


def test_mean_reward_examples_empty_and_out_of_range() -> None:
    assert mean_reward([0.0, 1.0, 0.5, 0.5]) == 0.5
    assert mean_reward(np.array([0.2])) == pytest.approx(0.2)
    assert mean_reward([]) is None
    bad: Any
    for bad in ([1.5], [-0.1], [math.nan], [None]):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            mean_reward(bad)


# --------------------------------------------------------------------------------------------
# expected_calibration_error


@PROPERTY
@given(
    st.lists(st.tuples(confidences, st.one_of(st.booleans().map(float), shares)), min_size=1, max_size=60),
    st.integers(1, 20),
)
def test_ece_equals_the_binned_definition(rows: list[tuple[float, float]], bins: int) -> None:
    conf, correct = [c for c, _ in rows], [y for _, y in rows]
    got = expected_calibration_error(conf, correct, bins=bins)
    assert got == pytest.approx(naive_ece(conf, correct, bins), abs=1e-12)
    assert got is not None
    assert 0.0 <= got <= 1.0


def test_ece_hand_computed_examples() -> None:
    # Bin 9: correct 0.5 vs confidence 0.95; bin 1: 0 vs 0.15; each half the rows.
    assert expected_calibration_error([0.95, 0.95, 0.15, 0.15], [True, False, False, False]) == pytest.approx(0.3)
    # Calibrated: 75 % confidence, 3 of 4 right; a reward's mean plays the same part.
    assert expected_calibration_error([0.75] * 4, [1, 1, 1, 0]) == pytest.approx(0.0)
    assert expected_calibration_error([0.8, 0.8], [0.6, 1.0]) == pytest.approx(0.0)
    # One bin: |mean correct − mean confidence|.
    assert expected_calibration_error([0.2, 0.9], [1, 1], bins=1) == pytest.approx(0.45)


def test_ece_puts_a_confidence_on_an_edge_in_the_bin_starting_there_and_one_in_the_last_bin() -> None:
    # 0.3 shares bin [0.3, 0.4) with 0.35: |0.5 − 0.325| = 0.175 (in [0.2, 0.3) it would be 0.475).
    assert expected_calibration_error([0.3, 0.35], [0, 1]) == pytest.approx(0.175)
    # 1.0 shares the last bin with 0.9: |0.5 − 0.95| = 0.45 (a bin of its own would give 0.55).
    assert expected_calibration_error([1.0, 0.9], [0, 1]) == pytest.approx(0.45)


def test_ece_is_none_when_empty_and_rejects_bad_input() -> None:
    assert expected_calibration_error([], []) is None
    with pytest.raises(ValueError, match="1 and 2"):
        expected_calibration_error([0.5], [1, 0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([1.2], [1])
    with pytest.raises(ValueError, match="bins"):
        expected_calibration_error([0.5], [1], bins=0)


# --------------------------------------------------------------------------------------------
# own_outcome_share


@PROPERTY
@given(st.lists(st.booleans(), min_size=1, max_size=50))
def test_own_outcome_share_is_the_share_of_outcomes_that_followed_a_release(followed: list[bool]) -> None:
    count = 0
    for f in followed:
        count += f
    assert own_outcome_share(followed) == pytest.approx(count / len(followed), abs=1e-15)


def test_own_outcome_share_examples_and_empty() -> None:
    assert own_outcome_share([True, False, False, True]) == 0.5
    assert own_outcome_share(np.ones(3, dtype=bool)) == 1.0
    assert own_outcome_share([]) is None


# --------------------------------------------------------------------------------------------
# prediction_outcome_correlation, correlation_rise


@PROPERTY
@given(st.lists(st.tuples(grid, st.one_of(st.booleans().map(float), grid)), min_size=3, max_size=60))
def test_correlation_agrees_with_scipy_pearsonr_and_the_textbook_formula(rows: list[tuple[float, float]]) -> None:
    x, y = [c for c, _ in rows], [o for _, o in rows]
    assume(len(set(x)) > 1 and len(set(y)) > 1)
    got = prediction_outcome_correlation(x, y)
    assert got is not None
    assert -1.0 <= got <= 1.0
    assert got == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-9)
    assert got == pytest.approx(naive_pearson(x, y), abs=1e-9)


def test_correlation_examples() -> None:
    assert prediction_outcome_correlation([0.2, 0.4, 0.6], [0.0, 0.5, 1.0]) == pytest.approx(1.0)
    assert prediction_outcome_correlation([0.2, 0.4, 0.6], [1, 0.5, 0]) == pytest.approx(-1.0)
    # x = (−1, 0, 1)·0.1 around 0.5, y = (0, 1, 1): r = 1 / √(2 · 2/3) = √3/2.
    assert prediction_outcome_correlation([0.4, 0.5, 0.6], [False, True, True]) == pytest.approx(math.sqrt(3) / 2)


def test_correlation_is_none_with_fewer_than_three_pairs_or_a_constant_side() -> None:
    assert prediction_outcome_correlation([0.1, 0.9], [0, 1]) is None
    assert prediction_outcome_correlation([], []) is None
    assert prediction_outcome_correlation([0.7, 0.7, 0.7], [0, 1, 1]) is None
    assert prediction_outcome_correlation([0.1, 0.5, 0.9], [1, 1, 1]) is None
    with pytest.raises(ValueError, match="3 and 2"):
        prediction_outcome_correlation([0.1, 0.5, 0.9], [1, 0])
    with pytest.raises(ValueError, match="finite"):
        prediction_outcome_correlation([0.1, math.nan, 0.9], [1, 0, 1])


def test_correlation_rise_is_current_minus_reference_or_none() -> None:
    assert correlation_rise(0.9, 0.5) == pytest.approx(0.4)
    assert correlation_rise(0.2, 0.5) == pytest.approx(-0.3)
    assert correlation_rise(None, 0.5) is None
    assert correlation_rise(0.5, None) is None


# --------------------------------------------------------------------------------------------
# exposure_gini


@PROPERTY
@given(
    st.lists(
        st.one_of(st.integers(0, 1000).map(float), st.integers(0, 10**9).map(lambda k: k / 1000)),
        min_size=1,
        max_size=40,
    )
)
def test_gini_equals_the_mean_absolute_difference_formula(counts: list[float]) -> None:
    assume(sum(counts) > 0)
    got = exposure_gini(counts)
    assert got is not None
    assert 0.0 <= got <= (len(counts) - 1) / len(counts) + 1e-12
    assert got == pytest.approx(naive_gini(counts), abs=1e-9)


@PROPERTY
@given(st.lists(st.integers(0, 100), min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_gini_ignores_order_and_scale(counts: list[int], rnd: Any) -> None:
    assume(sum(counts) > 0)
    shuffled = list(counts)
    rnd.shuffle(shuffled)
    base = exposure_gini(counts)
    assert exposure_gini(shuffled) == pytest.approx(base, abs=1e-12)
    assert exposure_gini([7 * c for c in counts]) == pytest.approx(base, abs=1e-12)


def test_gini_examples() -> None:
    assert exposure_gini([5, 5, 5]) == 0.0
    assert exposure_gini([0, 0, 0, 10]) == pytest.approx(0.75)  # one item of 4 gets all: (n − 1)/n
    assert exposure_gini([1, 2, 3, 4]) == pytest.approx(0.25)  # Σ|xi − xj| = 20, 2·n²·mean = 80
    assert exposure_gini([3]) == 0.0


def test_gini_is_none_without_items_or_exposure_and_rejects_negative_counts() -> None:
    assert exposure_gini([]) is None
    assert exposure_gini([0, 0]) is None
    with pytest.raises(ValueError, match="non-negative"):
        exposure_gini([3, -1])


# --------------------------------------------------------------------------------------------
# homogeneity

item_sets = st.lists(st.lists(st.sampled_from(["a", "b", "c", "d", 1, 2, 3]), max_size=5), min_size=2, max_size=12)


@PROPERTY
@given(item_sets)
def test_homogeneity_equals_the_mean_jaccard_over_all_pairs(lists: list[list[Any]]) -> None:
    got = homogeneity(lists)
    assert got is not None
    assert 0.0 <= got <= 1.0
    assert got == pytest.approx(naive_homogeneity(lists), abs=1e-12)


def test_homogeneity_examples() -> None:
    assert homogeneity([{1, 2}, {2, 3}]) == pytest.approx(1 / 3)
    assert homogeneity([["a"], ["a"], ["b"]]) == pytest.approx(1 / 3)  # pairs: 1, 0, 0
    assert homogeneity([["x", "y"], ("y", "x"), {"y", "x"}]) == 1.0  # everyone got the same
    assert homogeneity([[1, 1, 2], [1, 2]]) == 1.0  # duplicates count once
    assert homogeneity([[1], [2], [3]]) == 0.0


def test_homogeneity_counts_two_empty_sets_as_no_overlap() -> None:
    assert homogeneity([[], []]) == 0.0
    assert homogeneity([[], [], ["a"], ["a"]]) == pytest.approx(1 / 6)  # only the ("a", "a") pair overlaps


def test_homogeneity_is_none_with_fewer_than_two_subjects() -> None:
    assert homogeneity([]) is None
    assert homogeneity([["a", "b"]]) is None


def random_lists(n: int, seed: int, catalog: int = 40, size: int = 6) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, catalog, size=int(rng.integers(0, size + 1))).tolist() for _ in range(n)]


def test_homogeneity_uses_all_pairs_up_to_max_pairs_whatever_the_seed() -> None:
    lists = random_lists(30, seed=1)  # 435 pairs
    exact = naive_homogeneity(lists)
    for seed in (0, 1, 2):
        assert homogeneity(lists, max_pairs=435, seed=seed) == pytest.approx(exact, abs=1e-12)
        assert homogeneity(lists, max_pairs=10_000, seed=seed) == pytest.approx(exact, abs=1e-12)


def test_homogeneity_sample_is_distinct_pairs_of_distinct_subjects_and_deterministic() -> None:
    n, k = 50, 300
    i, j = _pairs(n, k, seed=7)
    pairs = list(zip(i.tolist(), j.tolist(), strict=True))
    assert len(pairs) == k == len(set(pairs))
    assert all(0 <= a < b < n for a, b in pairs)
    again_i, again_j = _pairs(n, k, seed=7)
    assert np.array_equal(i, again_i)
    assert np.array_equal(j, again_j)
    other_i, other_j = _pairs(n, k, seed=8)
    assert set(zip(other_i.tolist(), other_j.tolist(), strict=True)) != set(pairs)
    # Every pair can be drawn: sampling all but one pair leaves exactly one out.
    all_i, all_j = _pairs(n, n * (n - 1) // 2 - 1, seed=0)
    assert len(set(zip(all_i.tolist(), all_j.tolist(), strict=True))) == n * (n - 1) // 2 - 1


def test_homogeneity_sampled_is_the_mean_over_the_sampled_pairs() -> None:
    lists = random_lists(50, seed=3)
    i, j = _pairs(50, 300, seed=5)
    expected = naive_homogeneity(lists, list(zip(i.tolist(), j.tolist(), strict=True)))
    got = homogeneity(lists, max_pairs=300, seed=5)
    assert got == pytest.approx(expected, abs=1e-12)
    assert homogeneity(lists, max_pairs=300, seed=5) == got  # the same input gives the same value
    assert homogeneity(lists, max_pairs=300, seed=6) != got


def test_homogeneity_sample_is_close_to_the_all_pairs_mean() -> None:
    lists = random_lists(300, seed=4, catalog=15)  # 44,850 pairs; mean Jaccard ≈ 0.15
    exact = naive_homogeneity(lists)
    sampled = homogeneity(lists, max_pairs=20_000, seed=0)
    assert sampled is not None
    assert sampled == pytest.approx(exact, abs=0.005)


def test_module_imports_without_django() -> None:
    code = "import sys, dashboards.performance; assert not any(m.startswith('django') for m in sys.modules), 'django'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
