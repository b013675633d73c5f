"""The decision gate as a pure function: every level × confidence × kill switch × audit draw.

No database, no HTTP: ``oversight.gate.decide`` takes a policy, the kill state and a prediction
and says what happens to the decision, with the reasons the API returns verbatim.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from oversight import gate
from oversight.gate import KillState, Policy, Prediction, Vote

THRESHOLD = 0.60
AUDIT_SHARE = 0.25
FALLBACK = {"items": ["safe"]}
OUTPUT = {"items": ["t1", "t9"]}
STALE_OUTPUT = {"items": ["stale"]}
MODEL = "collab-v3"
OTHER = "old-v1"

CONFIDENCES = {"below": 0.59, "equal": 0.60, "above": 0.61, "none": None}
CONFIDENCE_TEXT = {
    "below": "confidence 0.59 < threshold 0.60: a person decides",
    "equal": "confidence 0.60 ≥ threshold 0.60",
    "above": "confidence 0.61 ≥ threshold 0.60",
    "none": "no confidence given: a person decides",
}
DRAWS = {"audit_hit": 0.10, "audit_at_share": AUDIT_SHARE, "audit_miss": 0.90}
KILLS = ("none", "global", "system", "model_vote", "model_no_votes", "all_votes", "unrelated_model")
FALLBACK_REASON = "answered with the system's fallback output"


def policy(level: int, audit_share: float = AUDIT_SHARE) -> Policy:
    return Policy(level=level, confidence_threshold=THRESHOLD, audit_sample_rate=audit_share, fallback=FALLBACK)


def scenario(kill: str, confidence: float | None) -> tuple[KillState, Prediction]:
    """The kill state and what the client sent for one kill-switch case."""
    plain = Prediction(OUTPUT, confidence, MODEL)
    with_votes = Prediction(
        {"items": ["blend"]},
        confidence,
        MODEL,
        (Vote(OTHER, STALE_OUTPUT, 0.99), Vote(MODEL, OUTPUT, confidence)),
    )
    match kill:
        case "none":
            return KillState(), plain
        case "global":
            return KillState(global_reason="incident 42"), plain
        case "system":
            return KillState(system_reason="drift on tempo"), plain
        case "model_vote":  # the overconfident stale model is left out; the live vote answers
            return KillState(models={OTHER: "stale weights"}), with_votes
        case "model_no_votes":
            return KillState(models={MODEL: "bias found"}), plain
        case "all_votes":
            return KillState(models={OTHER: "stale weights", MODEL: "bias found"}), with_votes
        case "unrelated_model":
            return KillState(models={"someone-else": "not ours"}), plain
    raise AssertionError(kill)


def expected(level: int, conf_case: str, kill: str, draw_case: str) -> dict[str, Any]:
    """The contract (ARCHITECTURE.md, "The decision gate"), case by case."""
    confidence = CONFIDENCES[conf_case]
    if kill == "global":
        return {"status": "fallback", "route": "killed", "output": FALLBACK, "confidence": None, "model": MODEL,
                "reasons": ["global kill switch engaged: incident 42", FALLBACK_REASON],
                "audit": False}
    if kill == "system":
        return {"status": "fallback", "route": "killed", "output": FALLBACK, "confidence": None, "model": MODEL,
                "reasons": ["system kill switch engaged: drift on tempo", FALLBACK_REASON],
                "audit": False}
    if kill == "model_no_votes":
        return {"status": "fallback", "route": "killed", "output": FALLBACK, "confidence": None, "model": MODEL,
                "reasons": ["model collab-v3 is stopped: kill switch engaged (bias found)", FALLBACK_REASON],
                "audit": False}
    if kill == "all_votes":
        return {"status": "fallback", "route": "killed", "output": FALLBACK, "confidence": None, "model": MODEL,
                "reasons": ["model collab-v3 left out: kill switch engaged (bias found)",
                            "model old-v1 left out: kill switch engaged (stale weights)", FALLBACK_REASON],
                "audit": False}
    reasons: list[str] = []
    if kill == "model_vote":
        reasons += ["model old-v1 left out: kill switch engaged (stale weights)",
                    "answer taken from model collab-v3, the most confident vote left"]
    pending = {"status": "pending_review", "route": "human", "output": None, "confidence": confidence,
               "model": MODEL, "audit": False}
    if level == 1:
        return pending | {"reasons": [*reasons, "level 1 (critical): a person approves every decision"]}
    if level == 2:
        reasons.append(CONFIDENCE_TEXT[conf_case])
        if conf_case in ("below", "none"):
            return pending | {"reasons": reasons}
    else:
        reasons.append("level 3 (autonomous): released")
    audited = draw_case == "audit_hit"
    if audited:
        reasons.append("sampled for after-the-fact audit (share 0.25)")
    return {"status": "released", "route": "auto", "output": OUTPUT, "confidence": confidence, "model": MODEL,
            "reasons": reasons, "audit": audited}


CASES = list(itertools.product((1, 2, 3), CONFIDENCES, KILLS, DRAWS))


@pytest.mark.parametrize(("level", "conf_case", "kill", "draw_case"), CASES)
def test_every_level_confidence_kill_switch_and_audit_draw(level: int, conf_case: str, kill: str, draw_case: str):
    kills, prediction = scenario(kill, CONFIDENCES[conf_case])
    verdict = gate.decide(policy(level), kills, prediction, DRAWS[draw_case])
    want = expected(level, conf_case, kill, draw_case)
    got = {
        "status": verdict.status, "route": verdict.route, "output": verdict.output, "confidence": verdict.confidence,
        "model": verdict.model, "reasons": verdict.reasons,
        "audit": verdict.audit,
    }
    assert got == want


def test_the_case_table_covers_every_combination():
    assert len(CASES) == 3 * 4 * 7 * 3
    statuses = {expected(*c)["status"] for c in CASES}
    routes = {expected(*c)["route"] for c in CASES}
    assert statuses == {"released", "pending_review", "fallback"}
    assert routes == {"auto", "human", "killed"}


def test_the_spec_example_reason_text():
    verdict = gate.decide(policy(2), KillState(), Prediction(OUTPUT, 0.62, MODEL), 0.99)
    assert verdict.reasons == ["confidence 0.62 ≥ threshold 0.60"]
    assert (verdict.status, verdict.route, verdict.output) == ("released", "auto", OUTPUT)


def test_global_kill_switch_wins_over_the_system_one():
    kills = KillState(global_reason="incident 42", system_reason="drift")
    verdict = gate.decide(policy(3), kills, Prediction(OUTPUT, 0.9, MODEL), 0.0)
    assert verdict.route == "killed"
    assert verdict.reasons == ["global kill switch engaged: incident 42", FALLBACK_REASON]


def test_kill_switch_answers_the_fallback_even_without_a_prediction():
    verdict = gate.decide(policy(2), KillState(system_reason="drift"), None, 0.0)
    assert (verdict.status, verdict.route, verdict.output, verdict.model) == ("fallback", "killed", FALLBACK, "")


@pytest.mark.parametrize("level", [1, 2, 3])
def test_no_prediction_and_no_hosted_model_answers_the_fallback(level: int):
    verdict = gate.decide(policy(level), KillState(), None, 0.0)
    assert (verdict.status, verdict.route, verdict.output) == ("fallback", "fallback", FALLBACK)
    assert verdict.reasons == ["no prediction was sent and no hosted model scored this decision", FALLBACK_REASON]
    assert verdict.status != "pending_review"
    assert not verdict.audit


@pytest.mark.parametrize(
    ("confidence", "text", "status"),
    [
        (0.599, "confidence 0.599 < threshold 0.600: a person decides", "pending_review"),
        (0.6001, "confidence 0.6001 ≥ threshold 0.6000", "released"),
        (1.0, "confidence 1.00 ≥ threshold 0.60", "released"),
        (0.0, "confidence 0.00 < threshold 0.60: a person decides", "pending_review"),
    ],
)
def test_reasons_show_enough_decimals_to_tell_confidence_and_threshold_apart(confidence, text, status):
    verdict = gate.decide(policy(2), KillState(), Prediction(OUTPUT, confidence, MODEL), 0.99)
    assert verdict.reasons == [text]
    assert verdict.status == status


def test_the_most_confident_live_vote_answers():
    prediction = Prediction(
        {"items": ["blend"]}, 0.9, "ensemble",
        (Vote("a", {"items": ["a"]}, 0.7), Vote("b", {"items": ["b"]}, None), Vote("c", {"items": ["c"]}, 0.95)),
    )
    verdict = gate.decide(policy(3), KillState(models={"c": "broken"}), prediction, 0.99)
    assert (verdict.output, verdict.model, verdict.confidence) == ({"items": ["a"]}, "a", 0.7)
    assert verdict.reasons == [
        "model c left out: kill switch engaged (broken)",
        "answer taken from model a, the most confident vote left",
        "level 3 (autonomous): released",
    ]


def test_a_killed_model_pushes_a_level_2_decision_below_threshold_to_a_person():
    prediction = Prediction(OUTPUT, 0.95, MODEL, (Vote(MODEL, OUTPUT, 0.95), Vote("weak", {"items": []}, 0.40)))
    verdict = gate.decide(policy(2), KillState(models={MODEL: "bias"}), prediction, 0.99)
    assert (verdict.status, verdict.route) == ("pending_review", "human")
    assert (verdict.model, verdict.confidence) == ("weak", 0.4)
    assert verdict.reasons[-1] == "confidence 0.40 < threshold 0.60: a person decides"


def test_killing_a_model_that_did_not_vote_changes_nothing():
    prediction = Prediction(OUTPUT, 0.9, MODEL, (Vote(MODEL, OUTPUT, 0.9),))
    verdict = gate.decide(policy(3), KillState(models={"absent": "x"}), prediction, 0.99)
    assert verdict.reasons == ["level 3 (autonomous): released"]
    assert verdict.output == OUTPUT


@pytest.mark.parametrize(
    ("share", "draw", "audited"),
    [(0.0, 0.0, False), (0.0, 0.5, False), (1.0, 0.0, True), (1.0, 0.999999, True), (0.5, 0.4999, True),
     (0.5, 0.5, False)],
)
@pytest.mark.parametrize("level", [2, 3])
def test_audit_share_bounds(level: int, share: float, draw: float, audited: bool):
    verdict = gate.decide(policy(level, share), KillState(), Prediction(OUTPUT, 0.9, MODEL), draw)
    assert verdict.status == "released"
    assert verdict.audit is audited
    assert (f"sampled for after-the-fact audit (share {share:g})" in verdict.reasons) is audited


def test_level_1_is_never_audited_after_the_fact_even_at_share_1():
    verdict = gate.decide(policy(1, 1.0), KillState(), Prediction(OUTPUT, 0.99, MODEL), 0.0)
    assert (verdict.status, verdict.audit) == ("pending_review", False)


def test_killed_decisions_are_never_audited_or_reviewed():
    verdict = gate.decide(policy(3, 1.0), KillState(system_reason="x"), Prediction(OUTPUT, 0.99, MODEL), 0.0)
    assert (verdict.status, verdict.audit) == ("fallback", False)


@pytest.mark.parametrize(
    ("value", "other", "want"),
    [
        (0.62, 0.6, ("0.62", "0.60")),
        (0.6, 0.6, ("0.60", "0.60")),
        (0.599, 0.6, ("0.599", "0.600")),
        (0.6, 0.599, ("0.600", "0.599")),
        (0.6000001, 0.6, ("0.6000001", "0.6000000")),
        (0.60000001, 0.6, ("0.60000001", "0.6")),
        (1.0, 0.0, ("1.00", "0.00")),
        (0.123456, 0.123456, ("0.12", "0.12")),
    ],
)
def test_fmt_uses_the_fewest_decimals_that_keep_different_numbers_apart(value, other, want):
    assert gate.fmt(value, other) == want


def test_fmt_never_makes_different_numbers_look_equal():
    for a, b in [(0.1 + 0.2, 0.3), (0.7, 0.70000000001), (0.5, 0.5000001)]:
        x, y = gate.fmt(a, b)
        assert x != y


def test_drop_killed_keeps_the_prediction_when_nothing_is_killed():
    prediction = Prediction(OUTPUT, 0.5, MODEL, (Vote(MODEL, OUTPUT, 0.5),))
    assert gate.drop_killed(prediction, KillState()) == (prediction, [], "")
