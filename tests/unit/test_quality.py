"""Cohen's kappa (reviewqueue.quality.cohen_kappa) against hand-computed examples, and its degenerate
cases; the period's result types. No database."""

from __future__ import annotations

import math

import pytest

from reviewqueue.quality import Kappa, ModelAgreement, Operator, cohen_kappa, duration_text, kappas


def table(cells: dict[tuple[str, str], int]) -> tuple[list[str], list[str]]:
    """Two raters' labels from a confusion table: ``cells[(a, b)]`` items labelled a by one, b by the other."""
    a: list[str] = []
    b: list[str] = []
    for (x, y), n in cells.items():
        a += [x] * n
        b += [y] * n
    return a, b


def test_the_textbook_two_by_two_example_is_0_4() -> None:
    # 50 items: both yes 20, yes/no 5, no/yes 10, both no 15. p_o = 35/50 = 0.7; the first says yes
    # 25 times, the second 30: p_e = 0.5·0.6 + 0.5·0.4 = 0.5; kappa = (0.7 − 0.5) / (1 − 0.5) = 0.4.
    a, b = table({("yes", "yes"): 20, ("yes", "no"): 5, ("no", "yes"): 10, ("no", "no"): 15})
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_three_verdicts() -> None:
    # Rows the first reviewer, columns the second (approve, reject, modify):
    #   approve 10 2 3 | reject 1 8 1 | modify 2 1 7      n = 35, diagonal 25
    # row sums 15 10 10, column sums 13 11 11: Σ r·c = 195 + 110 + 110 = 415
    # kappa = (35·25 − 415) / (35² − 415) = 460 / 810 = 46/81
    a, b = table({
        ("approve", "approve"): 10, ("approve", "reject"): 2, ("approve", "modify"): 3,
        ("reject", "approve"): 1, ("reject", "reject"): 8, ("reject", "modify"): 1,
        ("modify", "approve"): 2, ("modify", "reject"): 1, ("modify", "modify"): 7,
    })
    assert cohen_kappa(a, b) == pytest.approx(46 / 81)


def test_full_agreement_is_1_and_full_disagreement_on_two_labels_is_minus_1() -> None:
    assert cohen_kappa(["a", "b", "a", "c"], ["a", "b", "a", "c"]) == 1.0
    # p_o = 0, p_e = 0.5·0.5 + 0.5·0.5 = 0.5: (0 − 0.5) / 0.5
    assert cohen_kappa(["x", "y", "x", "y"], ["y", "x", "y", "x"]) == -1.0


def test_agreement_as_often_as_chance_is_0() -> None:
    # p_o = 0.5 (items 1 and 4), each rater says 1 half the time: p_e = 0.5
    assert cohen_kappa([1, 1, 0, 0], [1, 0, 1, 0]) == 0.0


def test_one_rater_who_always_says_the_same_scores_0_against_a_rater_who_varies() -> None:
    # p_o = 0.5, p_e = 1·0.5 + 0·0.5 = 0.5
    assert cohen_kappa(["approve"] * 4, ["approve", "approve", "reject", "reject"]) == 0.0
    # Never the same label: p_o = 0, p_e = 0, kappa 0 (no better than chance, which was nothing)
    assert cohen_kappa(["approve"] * 3, ["reject"] * 3) == 0.0


def test_no_pairs_is_none() -> None:
    assert cohen_kappa([], []) is None


def test_both_raters_always_giving_the_same_single_label_is_1() -> None:
    """p_e = p_o = 1, so the formula is 0/0: defined as full agreement (1.0), which is what happened."""
    assert cohen_kappa(["approve"] * 7, ["approve"] * 7) == 1.0
    assert cohen_kappa([True], [True]) == 1.0


def test_symmetric_and_independent_of_item_order_and_label_names() -> None:
    a, b = table({("yes", "yes"): 20, ("yes", "no"): 5, ("no", "yes"): 10, ("no", "no"): 15})
    k = cohen_kappa(a, b)
    assert cohen_kappa(b, a) == k
    assert cohen_kappa(a[::-1], b[::-1]) == k
    rename = {"yes": True, "no": False}
    assert cohen_kappa([rename[x] for x in a], [rename[y] for y in b]) == k


def test_kappa_stays_within_its_bounds_on_random_labels() -> None:
    import random

    rng = random.Random(11)
    for _ in range(200):
        n = rng.randint(1, 40)
        a = [rng.choice("ARM") for _ in range(n)]
        b = [rng.choice("ARM") for _ in range(n)]
        k = cohen_kappa(a, b)
        assert k is not None
        assert math.isfinite(k)
        assert -1.0 <= k <= 1.0


def test_unequal_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same items"):
        cohen_kappa(["a", "b"], ["a"])


def test_kappas_per_system_and_pooled() -> None:
    rows = [("b", "approve", "approve"), ("a", "approve", "reject"), ("a", "reject", "reject"),
            ("b", "reject", "reject"), ("a", "approve", "approve")]
    per, overall = kappas(rows)
    assert [(k.system, k.pairs, k.same) for k in per] == [("a", 3, 2), ("b", 2, 2)]
    assert per[1].kappa == 1.0
    # a: approve/approve, approve/reject, reject/reject: p_o = 2/3; first says approve 2/3, second 1/3
    # p_e = 2/3·1/3 + 1/3·2/3 = 4/9; kappa = (2/3 − 4/9) / (5/9) = 0.4
    assert per[0].kappa == pytest.approx(0.4)
    assert per[0].agreement == pytest.approx(2 / 3)
    assert (overall.system, overall.pairs, overall.same) == ("", 5, 4)
    assert overall.kappa == cohen_kappa(["approve", "approve", "reject", "reject", "approve"],
                                        ["approve", "reject", "reject", "reject", "approve"])
    assert kappas([]) == ([], Kappa("", 0, 0, None))
    assert Kappa("", 0, 0, None).agreement is None


def test_result_figures() -> None:
    assert ModelAgreement("sup", "m1", 4, 3).share == 0.75
    assert ModelAgreement("sup", "m1", 0, 0).share is None
    o = Operator("op", resolved=9, active_hours=2, median_handling_s=95.4, timed=9)
    assert o.per_active_hour == 4.5
    assert o.handling_text == "1 min 35 s"
    assert Operator("op", 0, 0, None, 0).per_active_hour is None


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "—"), (0, "0 s"), (42.4, "42 s"), (59.6, "1 min 00 s"), (185, "3 min 05 s"), (7620, "2 h 07 min"),
])
def test_duration_text(seconds: float | None, text: str) -> None:
    assert duration_text(seconds) == text
