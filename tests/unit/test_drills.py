"""The gate with a model failure (a chaos drill, later hosted scoring): pure, no database."""

from __future__ import annotations

import pytest

from oversight import gate
from oversight.gate import BreakerState, KillState, Policy, Prediction, Vote

FALLBACK = {"items": ["safe"]}
PREDICTION = Prediction({"items": ["t1"]}, 0.95, "collab-v3")


def policy(level: int) -> Policy:
    return Policy(level=level, confidence_threshold=0.6, audit_sample_rate=1.0, fallback=FALLBACK)


@pytest.mark.parametrize("level", [1, 2, 3])
@pytest.mark.parametrize(("failure", "reason"), [
    ("error", "drill: the model raised an error"),
    ("garbage", "drill: the model answered garbage"),
    ("deadline", "drill: the model answered after its deadline"),
])
def test_a_failure_answers_the_fallback_on_every_level(level, failure, reason):
    v = gate.decide(policy(level), KillState(), PREDICTION, 0.0, failure=failure)
    assert (v.status, v.route, v.output, v.failure, v.audit) == ("fallback", "fallback", FALLBACK, failure, False)
    assert v.reasons == [reason, "answered with the system's fallback output"]
    assert v.model == "collab-v3"


def test_no_failure_changes_nothing():
    v = gate.decide(policy(3), KillState(), PREDICTION, 0.5)
    assert (v.status, v.route, v.failure) == ("released", "auto", "")


def test_kill_switches_and_an_open_breaker_answer_first():
    v = gate.decide(policy(2), KillState(system_reason="incident"), PREDICTION, 0.5, failure="error")
    assert (v.route, v.failure) == ("killed", "")
    v = gate.decide(policy(2), KillState(), PREDICTION, 0.5, BreakerState("open", "error rate 1 above 0.05"),
                    failure="error")
    assert (v.route, v.failure) == ("breaker_open", "")
    v = gate.decide(policy(2), KillState(models={"collab-v3": "stale"}), PREDICTION, 0.5, failure="error")
    assert (v.route, v.failure) == ("killed", "")  # the stopped model is never asked, so it cannot fail


def test_outside_a_half_open_canary_the_breaker_answers_inside_the_model_fails():
    half = BreakerState("half_open", "cool-down over", canary_share=0.1)
    outside = gate.decide(policy(3), KillState(), PREDICTION, 0.5, half, canary_draw=0.5, failure="deadline")
    assert (outside.route, outside.failure) == ("breaker_open", "")
    inside = gate.decide(policy(3), KillState(), PREDICTION, 0.5, half, canary_draw=0.05, failure="deadline")
    assert (inside.route, inside.failure) == ("fallback", "deadline")
    assert inside.reasons[:2] == ["circuit breaker half-open: in the 10% canary share",
                                  "drill: the model answered after its deadline"]


def test_a_failure_wins_over_a_readiness_hold_and_guardrails():
    v = gate.decide(policy(2), KillState(), PREDICTION, 0.5, readiness=0, failure="garbage")
    assert (v.status, v.route) == ("fallback", "fallback")


def test_an_ensemble_with_a_killed_vote_still_fails_with_the_drill():
    p = Prediction({"a": 1}, 0.9, "m1", votes=[Vote("m1", {"a": 1}, 0.9), Vote("m2", {"a": 2}, 0.8)])
    v = gate.decide(policy(3), KillState(models={"m1": "stale"}), p, 0.5, failure="error")
    assert (v.route, v.model, v.failure) == ("fallback", "m2", "error")
    assert v.reasons[0].startswith("model m1 left out")
