"""Level-3 guardrails (oversight.guardrails) and how the gate applies them: pure logic."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from oversight import gate
from oversight.gate import KillState, Prediction
from oversight.guardrails import Guardrails, violation
from oversight.policy_schemas import GuardrailPolicy


def rails(**policy) -> Guardrails:
    made = Guardrails.from_json(GuardrailPolicy.model_validate(policy).model_dump())
    assert made is not None
    return made


def test_allowed_values_are_compared_as_json():
    r = rails(field="decision", allowed=["approve", "refer"])
    assert violation(r, {"decision": "refer"}) is None
    assert violation(r, {"decision": "decline"}) == (
        "guardrail: output.decision 'decline' is not one of the allowed values")
    assert violation(r, {"other": 1}) == "guardrail: output.decision is missing"


def test_bounds_are_inclusive_and_check_every_element_of_a_list():
    r = rails(field="offer.amount", min=0, max=5000)
    assert violation(r, {"offer": {"amount": 5000}}) is None
    assert violation(r, {"offer": {"amount": 5000.5}}) == "guardrail: output.offer.amount 5000.5 above the maximum 5000"
    assert violation(r, {"offer": {"amount": -1}}) == "guardrail: output.offer.amount -1 below the minimum 0"
    assert violation(r, {"offer": {"amount": "lots"}}) == "guardrail: output.offer.amount 'lots' is not a number"
    assert violation(r, {"offer": {"amount": True}}) == "guardrail: output.offer.amount true is not a number"
    items = rails(field="items", allowed=["t1", "t2", "t3"])
    assert violation(items, {"items": ["t1", "t3"]}) is None
    assert violation(items, {"items": ["t1", "t666"]}) == (
        "guardrail: output.items 't666' is not one of the allowed values")


def test_the_whole_output_when_no_field_is_named():
    assert violation(rails(allowed=[{"label": "spam"}, {"label": "ham"}]), {"label": "ham"}) is None
    assert violation(rails(min=0, max=1), 1.5) == "guardrail: output 1.5 above the maximum 1"


@pytest.mark.parametrize(("policy", "words"), [
    ({"min": 5, "max": 1}, "min (5) must not be above max (1)"),
    ({"field": "amount"}, "a field to check needs allowed values, a min or a max"),
    ({"field": "a..b", "max": 1}, "String should match pattern"),
    ({"allowed": []}, "List should have at least 1 item"),
    ({"rate_per_minute": 0}, "greater than or equal to 1"),
    ({"maximum": 3}, "Extra inputs are not permitted"),
])
def test_a_guardrail_that_cannot_work_is_refused_with_the_reason(policy, words):
    with pytest.raises(ValidationError, match=words.replace("(", r"\(").replace(")", r"\)")):
        GuardrailPolicy.model_validate(policy)


def test_no_guardrails_is_none():
    assert Guardrails.from_json({}) is None
    assert GuardrailPolicy.model_validate({}).model_dump() == {}


AUTO = gate.Policy(level=3, confidence_threshold=0.5, audit_sample_rate=0.0, fallback={"decision": "refer"},
                   guardrails=Guardrails.from_json({"field": "decision", "allowed": ["approve", "refer"],
                                                    "rate_per_minute": 10}))


def test_the_gate_answers_a_breach_with_the_fallback_and_queues_it_for_a_person():
    ok = gate.decide(AUTO, KillState(), Prediction({"decision": "approve"}, 0.9, "m"), 0.9)
    assert (ok.status, ok.route, ok.audit) == ("released", "auto", False)
    v = gate.decide(AUTO, KillState(), Prediction({"decision": "decline"}, 0.9, "m"), 0.9)
    assert (v.status, v.route, v.output, v.audit) == ("fallback", "fallback", {"decision": "refer"}, True)
    assert v.reasons == ["guardrail: output.decision 'decline' is not one of the allowed values",
                         "answered with the system's fallback output; queued for a person"]
    over = gate.decide(AUTO, KillState(), Prediction({"decision": "approve"}, 0.9, "m"), 0.9, over_rate=True)
    assert (over.status, over.reasons[0]) == ("fallback", "guardrail: more than 10 decisions this minute")


def test_guardrails_apply_to_level_3_only():
    supervised = gate.Policy(level=2, confidence_threshold=0.5, audit_sample_rate=0.0, fallback={},
                             guardrails=AUTO.guardrails)
    v = gate.decide(supervised, KillState(), Prediction({"decision": "decline"}, 0.9, "m"), 0.9, over_rate=True)
    assert v.status == "released"
