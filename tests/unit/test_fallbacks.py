"""What a system answers when the model cannot (oversight.fallbacks): pure logic."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from oversight import gate
from oversight.fallbacks import FallbackRule, resolve
from oversight.gate import KillState, Prediction
from oversight.policy_schemas import FallbackPolicy

POLICY = gate.Policy(level=2, confidence_threshold=0.5, audit_sample_rate=0.0, fallback={"items": ["top-1"]})
KILLED = KillState(system_reason="bad push")


def rule(**data) -> FallbackRule | None:
    return FallbackRule.from_json(FallbackPolicy.model_validate(data).model_dump())


def killed_verdict() -> gate.Verdict:
    return gate.decide(POLICY, KILLED, Prediction({"items": ["t1"]}, 0.9, "m"), 0.9)


def test_the_fixed_output_stays_when_the_system_keeps_it():
    assert rule() is None
    assert rule(kind="fixed") is None
    v = killed_verdict()
    assert resolve(None, v, {}, {}) is v


def test_a_rule_answers_by_one_field_of_the_decision():
    r = rule(kind="rule", by="context.activity", outputs={"sleep": {"items": ["calm-1"]}},
             default={"items": ["popular-1"]})
    v = resolve(r, killed_verdict(), {"activity": "sleep"}, {})
    assert (v.status, v.route, v.output) == ("fallback", "killed", {"items": ["calm-1"]})
    assert v.reasons == ["system kill switch engaged: bad push",
                         "answered by the fallback rule: context.activity is 'sleep'"]
    other = resolve(r, killed_verdict(), {"activity": "gym"}, {})
    assert other.output == {"items": ["popular-1"]}
    assert other.reasons[-1] == (
        "answered by the fallback rule's default (context.activity is 'gym': no output of its own)")
    numbers = rule(kind="rule", by="features.hour", outputs={"23": "night"})
    assert resolve(numbers, killed_verdict(), {}, {"hour": 23}).output == "night"
    no_default = resolve(numbers, killed_verdict(), {}, {"hour": 9})
    assert no_default.output == {"items": ["top-1"]}  # the fixed fallback when nothing else says


def test_withhold_sends_the_decision_to_a_person_instead():
    v = resolve(rule(kind="withhold"), killed_verdict(), {}, {})
    assert (v.status, v.route, v.output, v.audit) == ("pending_review", "killed", None, False)
    assert v.reasons == ["system kill switch engaged: bad push",
                         "withheld: this system's fallback is to wait for a person"]


def test_a_released_decision_is_not_touched():
    v = gate.decide(POLICY, KillState(), Prediction({"items": ["t1"]}, 0.9, "m"), 0.9)
    assert resolve(rule(kind="withhold"), v, {}, {}) is v


@pytest.mark.parametrize(("data", "words"), [
    ({"kind": "rule"}, 'a rule needs "by"'),
    ({"kind": "rule", "by": "subject", "outputs": {"a": 1}}, "String should match pattern"),
    ({"kind": "withhold", "by": "context.x"}, '"by", "outputs" and "default" belong to kind "rule"'),
    ({"kind": "picks"}, "Input should be 'fixed', 'rule' or 'withhold'"),
])
def test_a_fallback_rule_that_cannot_work_is_refused(data, words):
    with pytest.raises(ValidationError, match=words):
        FallbackPolicy.model_validate(data)
