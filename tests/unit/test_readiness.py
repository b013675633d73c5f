"""The readiness assessment's rules as plain functions: scoring, checking answers, the level-3 rule,
and the gate holding every decision of a system that scores 0–1."""

from __future__ import annotations

import itertools

import pytest

from oversight import gate, readiness
from oversight.errors import ActionError
from oversight.gate import KillState, Policy, Prediction

SAFE = {"feedback": "no", "blast_radius": "one_reversible", "drift": "months", "stop": "drilled", "shared": "no"}
UNSAFE = {"feedback": "yes", "blast_radius": "irreversible", "drift": "overnight", "stop": "no", "shared": "yes"}


def test_five_questions_each_with_two_to_four_choices_and_one_safe_answer():
    assert [q.key for q in readiness.QUESTIONS] == ["feedback", "blast_radius", "drift", "stop", "shared"]
    for q in readiness.QUESTIONS:
        assert 2 <= len(q.choices) <= 4
        assert sum(c.points for c in q.choices) == 1
        assert len({c.key for c in q.choices}) == len(q.choices)
    assert readiness.MAX_SCORE == len(readiness.QUESTIONS)


def test_the_score_counts_the_safe_answers():
    assert readiness.score(SAFE) == 5
    assert readiness.score(UNSAFE) == 0
    assert readiness.score({**SAFE, "drift": "weeks"}) == 4
    assert readiness.score({**SAFE, "feedback": "partly", "stop": "untested"}) == 3
    assert [q.key for q in readiness.missing({**SAFE, "feedback": "partly", "stop": "untested"})] == [
        "feedback", "stop"]


def test_every_combination_scores_between_0_and_5():
    combos = itertools.product(*([c.key for c in q.choices] for q in readiness.QUESTIONS))
    keys = [q.key for q in readiness.QUESTIONS]
    scores = {readiness.score(dict(zip(keys, combo, strict=True))) for combo in combos}
    assert scores == {0, 1, 2, 3, 4, 5}


@pytest.mark.parametrize(("answers", "field", "words"), [
    ({**SAFE, "colour": "blue"}, "answers.colour", "unknown question 'colour'"),
    ({**SAFE, "drift": "yearly"}, "answers.drift", "unknown answer 'yearly'"),
    ({**SAFE, "stop": 1}, "answers.stop", "unknown answer 1"),
    ({k: v for k, v in SAFE.items() if k != "shared"}, "answers.shared", "answer “Do its models share"),
    ({**SAFE, "feedback": ""}, "answers.feedback", "answer “Can the model change"),
])
def test_bad_answers_name_the_field(answers, field, words):
    with pytest.raises(ActionError) as err:
        readiness.check_answers(answers)
    assert (err.value.code, err.value.field) == ("invalid", field)
    assert words in err.value.message


def test_checked_answers_come_in_question_order():
    shuffled = dict(reversed(list(SAFE.items())))
    assert list(readiness.check_answers(shuffled)) == list(SAFE)


@pytest.mark.parametrize("recorded", [4, 5])
def test_level_3_is_allowed_from_a_score_of_4(recorded):
    readiness.check_level(3, 2, recorded)


@pytest.mark.parametrize("recorded", [0, 1, 2, 3])
def test_level_3_is_refused_below_4_naming_the_score_and_what_is_missing(recorded):
    answers = {**SAFE, **dict(list(UNSAFE.items())[: 5 - recorded])}
    with pytest.raises(ActionError) as err:
        readiness.check_level(3, 2, recorded, answers)
    assert err.value.field == "level"
    assert f"this system scores {recorded} of 5" in err.value.message
    assert "at least 4 of 5" in err.value.message
    assert "not safe yet: its own training data (yes: its decisions feed its training data)" in err.value.message


def test_level_3_is_refused_without_an_assessment_and_for_a_new_system():
    with pytest.raises(ActionError, match="record its readiness assessment first"):
        readiness.check_level(3, 1, None)
    with pytest.raises(ActionError, match="a new system has none yet: create it at level 1 or 2"):
        readiness.check_level(3, None, None)


def test_other_levels_and_a_system_already_at_level_3_are_not_checked():
    for level in (1, 2):
        readiness.check_level(level, None, None)
        readiness.check_level(level, 3, 0)
    readiness.check_level(3, 3, None)  # already level 3 (from before the assessment): unchanged
    readiness.check_level(3, 3, 2)


def test_a_level_3_systems_score_cannot_drop_below_4():
    readiness.check_assessment(3, 4, {**SAFE, "drift": "weeks"})
    readiness.check_assessment(2, 0, UNSAFE)
    with pytest.raises(ActionError) as err:
        readiness.check_assessment(3, 3, {**SAFE, "drift": "weeks", "shared": "some"})
    assert err.value.field == "answers"
    assert "these answers score 3" in err.value.message
    assert "lower its level first" in err.value.message


def test_the_hold_reason_only_for_0_and_1():
    assert readiness.hold_reason(None) is None
    assert readiness.hold_reason(2) is None
    assert readiness.hold_reason(5) is None
    assert readiness.hold_reason(1) == ("readiness score 1 of 5: every decision waits for a person until the "
                                        "assessment is fixed")
    assert readiness.hold_reason(0).startswith("readiness score 0 of 5")


# --- the gate -------------------------------------------------------------------------------

FALLBACK = {"items": ["safe"]}
PREDICTION = Prediction({"items": ["t1"]}, 0.95, "m1")


def policy(level: int) -> Policy:
    return Policy(level=level, confidence_threshold=0.6, audit_sample_rate=1.0, fallback=FALLBACK)


@pytest.mark.parametrize(("level", "score"), itertools.product((1, 2, 3), (0, 1)))
def test_a_score_of_0_or_1_sends_every_decision_to_a_person(level, score):
    v = gate.decide(policy(level), KillState(), PREDICTION, 0.0, readiness=score)
    assert (v.status, v.route, v.output, v.audit) == ("pending_review", "human", None, False)
    assert v.reasons == [f"readiness score {score} of 5: every decision waits for a person until the assessment "
                         "is fixed"]
    assert (v.confidence, v.model) == (0.95, "m1")


@pytest.mark.parametrize(("level", "score"), itertools.product((1, 2, 3), (None, 2, 3, 4, 5)))
def test_a_score_of_2_or_more_or_none_leaves_the_gate_as_it_was(level, score):
    assert gate.decide(policy(level), KillState(), PREDICTION, 0.0, readiness=score) == gate.decide(
        policy(level), KillState(), PREDICTION, 0.0)


def test_a_kill_switch_still_answers_with_the_fallback_when_held():
    v = gate.decide(policy(2), KillState(system_reason="incident"), PREDICTION, 0.0, readiness=0)
    assert (v.status, v.route, v.output) == ("fallback", "killed", FALLBACK)


def test_no_prediction_still_answers_with_the_fallback_when_held():
    v = gate.decide(policy(2), KillState(), None, 0.0, readiness=1)
    assert (v.status, v.route) == ("fallback", "fallback")
