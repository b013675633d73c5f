"""The ensemble as pure rules (oversight.ensemble.combine): context vetoes, fused item lists,
weighted label votes, failures, and the record kept with the decision."""

from __future__ import annotations

from typing import Any

import pytest

from oversight import jsonutil
from oversight.adapters import DEADLINE, ERROR, GARBAGE, Answer
from oversight.ensemble import DEFAULT_CONFIDENCE, Combined, combine


def said(model: str, output: Any, confidence: float | None = None, **extra: Any) -> Answer:
    return Answer(model, output=output, confidence=confidence, **extra)


def items(*names: str) -> dict[str, Any]:
    return {"items": list(names)}


def failed(model: str, error: str, detail: str = "it broke") -> Answer:
    return Answer(model, error=error, detail=detail)


def veto(model: str, *, items_: tuple[str, ...] = (), models: tuple[str, ...] = (), reason: str = "") -> Answer:
    return Answer(model, output=None, veto_items=items_, veto_models=models, veto_reason=reason)


def votes_by_model(c: Combined) -> dict[str, dict[str, Any]]:
    return {v["model"]: v for v in c.votes}


# --- context vetoes ----------------------------------------------------------------------------


def test_a_vetoed_item_is_removed_from_every_list_however_sure_the_voters_are() -> None:
    answers = [
        said("collab", items("t-metal", "t-pop", "t-jazz"), 0.99),
        said("calm", items("t-ambient", "t-metal"), 0.9),
        veto("bedtime", items_=("t-metal",), reason="bedtime: nothing loud"),
    ]
    c = combine(answers, {"collab": 5.0}, {"bedtime": "context"})
    assert c.answered
    assert "t-metal" not in c.output["items"]
    assert set(c.output["items"]) == {"t-pop", "t-jazz", "t-ambient"}
    assert "item t-metal vetoed: bedtime: nothing loud (bedtime)" in c.reasons
    # The context model did not vote: its (null) output is recorded, not counted.
    assert votes_by_model(c)["bedtime"]["role"] == "context"
    assert votes_by_model(c)["bedtime"]["veto"] == {"items": ["t-metal"], "models": [],
                                                    "reason": "bedtime: nothing loud"}


def test_a_veto_without_a_reason_names_the_context_model() -> None:
    c = combine([said("a", items("x", "y"), 0.9), veto("ctx", items_=("x",))], {}, {"ctx": "context"})
    assert c.output == items("y")
    assert "item x vetoed: context model ctx (ctx)" in c.reasons


def test_a_vetoed_model_does_not_vote_and_its_vote_is_recorded_as_vetoed() -> None:
    answers = [
        said("collab", items("t-metal", "t-pop"), 0.99),
        said("calm", items("t-ambient", "t-jazz"), 0.6),
        veto("bedtime", models=("collab",), reason="bedtime listener"),
    ]
    c = combine(answers, {"collab": 10.0, "calm": 1.0}, {"bedtime": "context"})
    assert c.output == items("t-ambient", "t-jazz")
    assert c.model == "calm"
    assert c.confidence == pytest.approx(0.6)  # only calm's weight counts
    v = votes_by_model(c)["collab"]
    assert v["vetoed"] == "bedtime listener (bedtime)"
    assert v["output"] == items("t-metal", "t-pop")  # what it said is still on the record
    assert "model collab vetoed: bedtime listener (bedtime)" in c.reasons
    assert "vetoed" not in votes_by_model(c)["calm"]


def test_every_voter_vetoed_gives_no_answer_and_no_failure() -> None:
    c = combine([said("a", "approve", 0.9), veto("ctx", models=("a",))], {}, {"ctx": "context"})
    assert not c.answered
    assert c.output is None
    assert c.confidence is None
    assert c.failure == ""  # nothing broke: the fallback answers, the breakers see no error


def test_a_voters_own_veto_is_not_applied() -> None:
    """Only context models veto; a voter that sends a veto is recorded with it, nothing more."""
    answers = [said("a", items("x", "y"), 0.9, veto_items=("x",), veto_models=("b",)), said("b", items("z"), 0.9)]
    c = combine(answers, {}, {})
    assert c.output == items("x", "z")  # x and z tie at rank 1 (first seen first); as long as the longest list
    assert "vetoed" not in votes_by_model(c)["b"]
    assert votes_by_model(c)["a"]["veto"]["items"] == ["x"]


def test_a_failed_context_models_veto_is_not_applied_and_is_not_a_voter_failure() -> None:
    answers = [
        said("collab", items("t-metal", "t-pop"), 0.9),
        Answer("bedtime", error=DEADLINE, detail="no answer within 50 ms", veto_items=("t-metal",)),
    ]
    c = combine(answers, {}, {"bedtime": "context"})
    assert c.answered
    assert c.output == items("t-metal", "t-pop")
    assert c.failure == ""
    assert "model bedtime did not answer (deadline: no answer within 50 ms)" in c.reasons
    assert votes_by_model(c)["bedtime"]["error"] == DEADLINE


def test_when_every_voter_fails_a_context_models_failure_does_not_decide_the_failure() -> None:
    answers = [
        failed("ctx1", ERROR), failed("ctx2", ERROR), failed("ctx3", ERROR),
        failed("voter", DEADLINE, "no answer within 100 ms"),
    ]
    c = combine(answers, {}, {"ctx1": "context", "ctx2": "context", "ctx3": "context"})
    assert not c.answered
    assert c.failure == DEADLINE


def test_only_context_models_answering_is_no_answer_and_no_failure() -> None:
    c = combine([veto("ctx", items_=("x",))], {}, {"ctx": "context"})
    assert not c.answered
    assert c.failure == ""
    assert c.output is None


# --- item lists: weighted reciprocal-rank fusion ------------------------------------------------


def test_items_are_fused_by_weighted_reciprocal_rank() -> None:
    # collab: 2 × 0.9 = 1.8 per 1/rank; calm: 1 × 0.7.
    #   t-metal 1.8, t-pop 0.9, t-jazz 1.8/3 + 0.7/2 = 0.95, t-ambient 0.7
    answers = [said("collab", items("t-metal", "t-pop", "t-jazz"), 0.9),
               said("calm", items("t-ambient", "t-jazz"), 0.7)]
    c = combine(answers, {"collab": 2.0, "calm": 1.0}, {})
    assert c.output == items("t-metal", "t-jazz", "t-pop")  # as long as the longest list
    # Confidence: the weighted mean of the voters' confidences (2×0.9 + 1×0.7) / 3.
    assert c.confidence == pytest.approx(2.5 / 3, abs=1e-6)
    assert c.model == "collab"  # contributed most
    assert any(r.startswith("ensemble of 2 models (collab 0.90×2, calm 0.70×1): items fused by weighted rank")
               for r in c.reasons), c.reasons


def test_the_weight_decides_the_order_when_lists_disagree() -> None:
    answers = [said("a", items("x", "y"), 0.8), said("b", items("y", "x"), 0.8)]
    assert combine(answers, {"a": 3.0, "b": 1.0}, {}).output == items("x", "y")
    assert combine(answers, {"a": 1.0, "b": 3.0}, {}).output == items("y", "x")
    assert combine(answers, {"a": 1.0, "b": 3.0}, {}).model == "b"


def test_a_voter_without_confidence_counts_as_unsure() -> None:
    answers = [said("sure", items("x"), 0.9), said("unsure", items("y"), None)]
    c = combine(answers, {}, {})
    assert c.output == items("x")
    assert c.confidence == pytest.approx((0.9 + DEFAULT_CONFIDENCE) / 2)


def test_the_first_voters_other_fields_are_kept_and_non_string_items_fuse_by_value() -> None:
    answers = [said("a", {"items": [{"id": 1}, {"id": 2}], "page": 1}, 0.9),
               said("b", {"items": [{"id": 2}, {"id": 3}]}, 0.9)]
    c = combine(answers, {}, {})
    assert c.output == {"items": [{"id": 2}, {"id": 1}], "page": 1}  # id 2 is in both lists


def test_a_weight_of_zero_does_not_vote_but_is_recorded() -> None:
    answers = [said("live", items("x", "y"), 0.7), said("shadow", items("z"), 1.0)]
    c = combine(answers, {"live": 1.0, "shadow": 0.0}, {})
    assert c.output == items("x", "y")
    assert c.confidence == pytest.approx(0.7)
    assert c.model == "live"
    assert votes_by_model(c)["shadow"] == {"model": "shadow", "role": "voter", "weight": 0.0, "latency_ms": 0.0,
                                           "output": items("z"), "confidence": 1.0}


def test_a_weight_zero_label_model_does_not_turn_fusion_into_a_label_vote() -> None:
    answers = [said("a", items("x", "y"), 0.7), said("b", items("y"), 0.7), said("shadow", "spam", 1.0)]
    c = combine(answers, {"shadow": 0.0}, {})
    assert c.output == items("y", "x")


def test_all_voters_weighted_zero_is_no_answer_and_no_failure() -> None:
    c = combine([said("a", "x", 0.9), said("b", "y", 0.9)], {"a": 0.0, "b": 0.0}, {})
    assert not c.answered
    assert c.failure == ""
    assert len(c.votes) == 2


def test_every_item_vetoed_leaves_an_empty_list() -> None:
    c = combine([said("a", items("x"), 0.9), veto("ctx", items_=("x",))], {}, {"ctx": "context"})
    assert c.output == items()
    assert "item x vetoed: context model ctx (ctx)" in c.reasons


# --- labels: weighted vote --------------------------------------------------------------------


def test_identical_labels_pool_their_weighted_confidence() -> None:
    answers = [said("a", {"label": "approve"}, 0.8), said("b", {"label": "refer"}, 0.6),
               said("c", {"label": "approve"}, None)]
    c = combine(answers, {}, {})
    assert c.output == {"label": "approve"}
    # approve pools 0.8 + 0.5 (no confidence) = 1.3 of a total weight of 3.
    assert c.confidence == pytest.approx(1.3 / 3, abs=1e-6)
    assert c.model == "a"  # the winner's strongest voter
    assert "ensemble of 3 models: a, c agreed, 1.30 of 1.90 weighted confidence" in c.reasons


def test_weight_can_outvote_confidence() -> None:
    answers = [said("a", "approve", 0.9), said("b", "refer", 0.5)]
    c = combine(answers, {"a": 1.0, "b": 3.0}, {})
    assert c.output == "refer"
    assert c.confidence == pytest.approx(1.5 / 4)
    assert c.model == "b"


def test_outputs_equal_as_json_pool_whatever_their_key_order() -> None:
    answers = [said("a", {"label": "x", "score": 1}, 0.4), said("b", {"score": 1, "label": "x"}, 0.4),
               said("c", {"label": "y", "score": 1}, 0.7)]
    c = combine(answers, {}, {})
    assert c.output == {"label": "x", "score": 1}
    assert c.confidence == pytest.approx(0.8 / 3, abs=1e-6)


def test_the_winners_model_is_its_strongest_voter_by_weight_times_confidence() -> None:
    answers = [said("a", "spam", 0.9), said("b", "spam", 0.5)]
    assert combine(answers, {"a": 1.0, "b": 2.0}, {}).model == "b"  # 1.0 beats 0.9
    assert combine(answers, {"a": 1.0, "b": 1.0}, {}).model == "a"


def test_one_voter_answers_with_its_own_output_and_confidence() -> None:
    for output in ("spam", items("x", "y")):
        c = combine([said("only", output, 0.83)], {"only": 4.0}, {})
        assert c.output == output
        assert c.confidence == pytest.approx(0.83)
        assert c.model == "only"
        assert c.reasons == ["answer from model only (confidence 0.83)"]


def test_one_voter_without_confidence_is_half_sure() -> None:
    c = combine([said("only", "spam")], {}, {})
    assert c.confidence == DEFAULT_CONFIDENCE


# --- failures ---------------------------------------------------------------------------------


def test_a_failing_voter_leaves_the_others_to_answer() -> None:
    c = combine([said("a", "spam", 0.9), failed("b", ERROR, "RuntimeError: weights missing")], {}, {})
    assert c.answered
    assert c.output == "spam"
    assert c.confidence == pytest.approx(0.9)
    assert c.failure == ""
    assert "model b did not answer (error: RuntimeError: weights missing)" in c.reasons
    assert votes_by_model(c)["b"] == {"model": "b", "role": "voter", "weight": 1.0, "latency_ms": 0.0,
                                      "error": ERROR, "detail": "RuntimeError: weights missing"}


def test_every_voter_failing_gives_no_answer_and_the_most_common_failure() -> None:
    answers = [failed("a", ERROR), failed("b", DEADLINE), failed("c", GARBAGE), failed("d", DEADLINE)]
    c = combine(answers, {}, {})
    assert not c.answered
    assert c.output is None
    assert c.confidence is None
    assert c.model == ""
    assert c.failure == DEADLINE
    assert len(c.reasons) == 4
    assert len(c.votes) == 4


def test_a_tie_between_failures_goes_to_the_first_model_in_order() -> None:
    """Not to whatever order a set of strings has in this process (it changes with PYTHONHASHSEED):
    the same answers give the same failure in every worker."""
    assert combine([failed("a", ERROR), failed("b", GARBAGE)], {}, {}).failure == ERROR
    assert combine([failed("a", GARBAGE), failed("b", ERROR)], {}, {}).failure == GARBAGE
    assert combine([failed("a", DEADLINE), failed("b", ERROR), failed("c", ERROR)], {}, {}).failure == ERROR


# --- the record -------------------------------------------------------------------------------


def test_the_record_holds_the_answer_and_every_vote() -> None:
    answers = [
        Answer("collab", output=items("t-metal", "t-pop"), confidence=0.9, latency_ms=12.3456),
        Answer("calm", output=items("t-jazz"), confidence=0.7, latency_ms=3.0),
        Answer("broken", error=GARBAGE, detail="the answer has no output", latency_ms=1.0),
        Answer("bedtime", output=None, veto_items=("t-metal",), veto_models=("calm",), veto_reason="late",
               latency_ms=0.5),
    ]
    c = combine(answers, {"collab": 2.0}, {"bedtime": "context"})
    rec = c.record()
    assert set(rec) == {"output", "confidence", "model", "votes", "hosted"}
    assert rec["hosted"] is True
    assert rec["output"] == items("t-pop")
    assert rec["model"] == "collab"
    assert rec["confidence"] == pytest.approx(0.9)
    assert rec["votes"] == [
        {"model": "collab", "role": "voter", "weight": 2.0, "latency_ms": 12.35, "output": items("t-metal", "t-pop"),
         "confidence": 0.9},
        {"model": "calm", "role": "voter", "weight": 1.0, "latency_ms": 3.0, "output": items("t-jazz"),
         "confidence": 0.7, "vetoed": "late (bedtime)"},
        {"model": "broken", "role": "voter", "weight": 1.0, "latency_ms": 1.0, "error": GARBAGE,
         "detail": "the answer has no output"},
        {"model": "bedtime", "role": "context", "weight": 1.0, "latency_ms": 0.5, "output": None, "confidence": None,
         "veto": {"items": ["t-metal"], "models": ["calm"], "reason": "late"}},
    ]
    assert jsonutil.loads(jsonutil.dumps(rec)) == rec  # storable as it is


def test_the_record_carries_the_routing_only_when_there_was_one() -> None:
    c = combine([said("a", "spam", 0.9)], {}, {})
    assert "routing" not in c.record()
    c.routing = {"bandit": "a"}
    assert c.record()["routing"] == {"bandit": "a"}


def test_no_answers_at_all() -> None:
    c = combine([], {}, {})
    assert not c.answered
    assert c.failure == ""
    assert c.votes == []
    assert c.record()["output"] is None


# --- known gaps -------------------------------------------------------------------------------


def test_a_vetoed_item_stays_out_when_voters_give_different_shapes() -> None:
    answers = [said("collab", items("t-metal", "t-pop"), 0.9), said("labeller", {"label": "rock"}, 0.3),
               veto("bedtime", items_=("t-metal",), reason="bedtime")]
    c = combine(answers, {}, {"bedtime": "context"})
    assert "t-metal" not in jsonutil.dumps(c.output).decode()


def test_items_vetoed_for_one_reason_are_named_in_one_reason_line() -> None:
    loud = tuple(f"t{i}" for i in range(12))
    answers = [said("collab", items(*loud, "calm"), 0.9), veto("night", items_=loud, reason="night: nothing loud")]
    c = combine(answers, {}, {"night": "context"})
    assert c.output == {"items": ["calm"]}
    lines = [r for r in c.reasons if "vetoed" in r]
    assert lines == ["items t0, t1, t2, t3, t4, t5, t6, t7, t8, t9 and 2 more vetoed: night: nothing loud (night)"]
