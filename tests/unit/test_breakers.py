"""The circuit breaker's state machine (oversight.breakers) and how the gate honours it: pure logic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from oversight import breakers, gate
from oversight.breakers import CLOSED, HALF_OPEN, OPEN, Breaker, Policy, Reading, step
from oversight.gate import BreakerState, KillState, Prediction, Vote

T0 = datetime(2026, 3, 16, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
POLICY = Policy(cooldown_s=600)


def window(start: datetime, accuracy: float | None = None, outcomes: float = 100, **more: float) -> Reading:
    values: dict[str, float | None] = {"perf.outcomes": outcomes, "perf.accuracy": accuracy}
    values.update({k.replace("__", "."): v for k, v in more.items()})
    return Reading(start, values)


def test_a_closed_breaker_opens_when_accuracy_falls_below_its_minimum():
    change = step(Breaker(), POLICY, [window(T0, 0.91), window(T0 + HOUR, 0.62)], T0 + 2 * HOUR, level=2)
    assert change is not None
    assert change.to == OPEN
    assert change.reason == "accuracy 0.62 below 0.85 (window from 2026-03-16 01:00 UTC)"
    assert (change.finding.metric, change.finding.value, change.finding.threshold) == ("perf.accuracy", 0.62, 0.85)


def test_a_window_exactly_at_the_threshold_does_not_trip():
    assert step(Breaker(), POLICY, [window(T0, 0.85)], T0 + HOUR, level=2) is None


def test_the_newest_window_with_a_verdict_speaks_and_thin_windows_say_nothing():
    # The newest window has 5 outcomes: too few to judge; the one before was fine.
    readings = [window(T0, 0.95), window(T0 + HOUR, 0.1, outcomes=5)]
    assert step(Breaker(), POLICY, readings, T0 + 2 * HOUR, level=2) is None
    # With the bad window first and a thin good one after, the bad one speaks.
    readings = [window(T0, 0.5), window(T0 + HOUR, 0.99, outcomes=5)]
    assert step(Breaker(), POLICY, readings, T0 + 2 * HOUR, level=2).to == OPEN


@pytest.mark.parametrize(("series", "value", "text"), [
    ("drift__drifted_share", 0.75, "share of drifted features 0.75 above 0.5"),
    ("gate__error_rate", 0.2, "error rate 0.2 above 0.05"),
    ("gate__deadline_miss_rate", 0.1, "deadline misses 0.1 above 0.05"),
    ("perf__mean_reward", 0.4, "mean reward 0.4 below 0.85"),
])
def test_each_watched_figure_trips_the_breaker(series, value, text):
    change = step(Breaker(), POLICY, [window(T0, None, **{series: value})], T0 + HOUR, level=3)
    assert change is not None
    assert change.to == OPEN
    assert change.reason.startswith(text)


def test_an_open_feedback_loop_alert_trips_the_breaker_even_without_windows():
    change = step(Breaker(), POLICY, [], T0, level=2, feedback_alert="correlation rose 0.4")
    assert change.to == OPEN
    assert change.reason == "feedback-loop alert open: correlation rose 0.4"
    off = Policy(feedback_loop=False)
    assert step(Breaker(), off, [], T0, level=2, feedback_alert="correlation rose 0.4") is None


def test_a_figure_the_policy_does_not_watch_never_trips():
    policy = Policy(min_accuracy=None)
    assert step(Breaker(), policy, [window(T0, 0.1)], T0 + HOUR, level=2) is None
    assert step(Breaker(), Policy(enabled=False), [window(T0, 0.1)], T0 + HOUR, level=2) is None


def test_an_open_breaker_goes_half_open_after_its_cool_down():
    opened = Breaker(OPEN, changed_at=T0)
    assert step(opened, POLICY, [], T0 + timedelta(seconds=599), level=2) is None
    change = step(opened, POLICY, [], T0 + timedelta(seconds=600), level=2)
    assert change.to == HALF_OPEN
    assert "canary share of 5%" in change.reason


def test_a_breaker_opened_by_hand_waits_for_a_person():
    assert step(Breaker(OPEN, changed_at=T0, manual=True), POLICY, [window(T0 + HOUR, 0.99)], T0 + 9 * HOUR,
                level=2) is None


def test_windows_from_before_the_last_change_are_not_read_again():
    """No flapping: the window that opened (or closed) a breaker cannot move it a second time."""
    half = Breaker(HALF_OPEN, changed_at=T0 + timedelta(minutes=30))
    bad_old = window(T0, 0.2)  # started before the change
    assert step(half, POLICY, [bad_old], T0 + HOUR, level=2) is None
    closed = Breaker(CLOSED, changed_at=T0 + timedelta(minutes=30))
    assert step(closed, POLICY, [bad_old], T0 + HOUR, level=2) is None


def test_half_open_re_trips_on_a_bad_window_and_closes_on_a_good_one():
    half = Breaker(HALF_OPEN, changed_at=T0)
    again = step(half, POLICY, [window(T0 + HOUR, 0.7)], T0 + 2 * HOUR, level=2)
    assert again.to == OPEN
    assert again.reason.startswith("re-tripped while half-open: accuracy 0.7 below 0.85")
    closed = step(half, POLICY, [window(T0 + HOUR, 0.9)], T0 + 2 * HOUR, level=2)
    assert closed.to == CLOSED
    assert closed.reason == "figures recovered (window from 2026-03-16 01:00 UTC)"


def test_recovering_needs_the_margin_above_the_threshold():
    half = Breaker(HALF_OPEN, changed_at=T0)
    assert step(half, POLICY, [window(T0 + HOUR, 0.86)], T0 + 2 * HOUR, level=2) is None  # < 0.85 + 0.02
    assert step(half, POLICY, [window(T0 + HOUR, 0.87)], T0 + 2 * HOUR, level=2).to == CLOSED


def test_on_a_level_1_system_a_person_closes_the_breaker():
    half = Breaker(HALF_OPEN, changed_at=T0)
    change = step(half, POLICY, [window(T0 + HOUR, 0.99)], T0 + 2 * HOUR, level=1)
    assert (change.to, change.awaiting_person) == (HALF_OPEN, True)
    waiting = Breaker(HALF_OPEN, changed_at=T0 + 2 * HOUR, awaiting_person=True)
    assert step(waiting, POLICY, [window(T0 + 3 * HOUR, 0.99)], T0 + 4 * HOUR, level=1) is None


def test_a_stored_policy_keeps_the_defaults_for_what_it_leaves_out():
    p = Policy.from_json({"min_accuracy": 0.9, "unknown": 1, "canary_share": None})
    assert (p.min_accuracy, p.canary_share, p.max_drifted_share) == (0.9, 0.05, 0.5)


# --- the gate ------------------------------------------------------------------------------------------

POL = gate.Policy(level=2, confidence_threshold=0.5, audit_sample_rate=0.0, fallback={"items": []})
PRED = Prediction({"items": ["t1"]}, 0.9, "collab")


def test_an_open_breaker_answers_with_the_fallback_route_breaker_open():
    v = gate.decide(POL, KillState(), PRED, 0.5, BreakerState("open", "accuracy 0.6 below 0.85"))
    assert (v.status, v.route, v.output) == ("fallback", "breaker_open", {"items": []})
    assert v.reasons[0] == "circuit breaker open: accuracy 0.6 below 0.85"


def test_a_kill_switch_wins_over_a_breaker():
    v = gate.decide(POL, KillState(global_reason="stop"), PRED, 0.5, BreakerState("open", "x"))
    assert v.route == "killed"


def test_half_open_lets_the_canary_share_through_and_falls_back_for_the_rest():
    half = BreakerState("half_open", "cool-down over", canary_share=0.05)
    through = gate.decide(POL, KillState(), PRED, 0.5, half, canary_draw=0.049)
    assert (through.status, through.route) == ("released", "auto")
    assert through.reasons[0] == "circuit breaker half-open: in the 5% canary share"
    held = gate.decide(POL, KillState(), PRED, 0.5, half, canary_draw=0.05)
    assert (held.status, held.route) == ("fallback", "breaker_open")


def test_an_open_model_breaker_leaves_the_model_out_of_the_ensemble():
    votes = (Vote("collab", {"items": ["t1"]}, 0.9), Vote("content", {"items": ["t7"]}, 0.8))
    pred = Prediction({"items": ["t1"]}, 0.9, "collab", votes)
    b = BreakerState(models={"collab": "opened by hand: bad push"})
    v = gate.decide(POL, KillState(), pred, 0.5, b)
    assert v.output == {"items": ["t7"]}
    assert v.model == "content"
    assert v.reasons[0] == "model collab left out: circuit breaker open (opened by hand: bad push)"
    alone = gate.decide(POL, KillState(), PRED, 0.5, b)
    assert (alone.status, alone.route) == ("fallback", "breaker_open")


def test_the_labels_name_every_state():
    assert set(breakers.LABELS) == set(breakers.STATES)


def test_half_open_waits_for_a_verdict_on_what_tripped_it():
    """Tripped on accuracy: a window with a fine error rate but too few outcomes does not close it."""
    half = Breaker(HALF_OPEN, changed_at=T0, tripped_on="perf.accuracy")
    thin = window(T0 + HOUR, 0.99, outcomes=5, gate__error_rate=0.0)
    assert step(half, POLICY, [thin], T0 + 2 * HOUR, level=2) is None
    full = window(T0 + 2 * HOUR, 0.95, outcomes=100, gate__error_rate=0.0)
    assert step(half, POLICY, [thin, full], T0 + 3 * HOUR, level=2).to == CLOSED
    on_errors = Breaker(HALF_OPEN, changed_at=T0, tripped_on="gate.error_rate")
    assert step(on_errors, POLICY, [thin], T0 + 2 * HOUR, level=2).to == CLOSED
