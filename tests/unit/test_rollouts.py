"""The rollout rules (oversight.rollouts): when a candidate advances, holds, completes or rolls back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from oversight import rollouts
from oversight.rollouts import Guard, State, Stats

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
STEP = 600


def state(step: int = 0, guard: Guard | None = None) -> State:
    return State(steps=rollouts.DEFAULT_STEPS, step=step, step_started_at=T0, step_seconds=STEP,
                 guard=guard or Guard())


def reward(n: int, mean: float) -> Stats:
    return Stats(rewards=n, mean_reward=mean)


def label(n: int, acc: float) -> Stats:
    return Stats(labels=n, accuracy=acc)


LATER = T0 + timedelta(seconds=STEP)
EARLY = T0 + timedelta(seconds=STEP - 1)


def test_advances_when_the_time_is_up_and_the_candidate_holds():
    a = rollouts.next_action(state(), reward(40, 0.48), reward(4000, 0.50), LATER)
    assert a.kind == "advance"
    assert "mean reward 0.480 over 40 outcomes" in a.reason
    assert "on to 5 %" in a.reason
    # better than the baseline: advances too
    assert rollouts.next_action(state(2), reward(40, 0.9), reward(400, 0.5), LATER).kind == "advance"


def test_the_step_before_the_last_completes():
    a = rollouts.next_action(state(3), reward(400, 0.5), reward(400, 0.5), LATER)
    assert (a.kind, "on to 100 %" in a.reason) == ("complete", True)


def test_holds_until_the_steps_time_is_up():
    a = rollouts.next_action(state(), reward(400, 0.5), reward(400, 0.5), EARLY)
    assert a.kind == "hold"
    assert "lasts until 2024-05-01 12:10:00 UTC" in a.reason
    assert "so far the candidate" in a.reason


def test_holds_while_outcomes_are_too_few():
    a = rollouts.next_action(state(), reward(29, 0.9), reward(4000, 0.5), LATER + timedelta(hours=5))
    assert a.kind == "hold"
    assert "the candidate has 29 of the 30 outcomes" in a.reason
    a = rollouts.next_action(state(), reward(30, 0.9), reward(3, 0.5), LATER)
    assert a.kind == "hold"
    assert "the baseline has 3 of the 30" in a.reason
    # too few outcomes never roll back, however bad they look
    assert rollouts.next_action(state(), reward(29, 0.0), reward(4000, 0.9), EARLY).kind == "hold"


def test_rolls_back_as_soon_as_it_regresses():
    a = rollouts.next_action(state(1), reward(30, 0.44), reward(600, 0.50), EARLY)
    assert a.kind == "rollback"
    assert a.reason.startswith("regression: the candidate's mean reward 0.440 over 30 outcomes")
    # exactly max_drop below still holds
    assert rollouts.next_action(state(1), reward(30, 0.45), reward(600, 0.50), LATER).kind == "advance"
    # a tighter guard is stricter
    strict = Guard(max_drop=0.0)
    assert rollouts.next_action(state(1, strict), reward(30, 0.49), reward(600, 0.50), EARLY).kind == "rollback"


def test_the_metric_auto_follows_the_outcomes_and_can_be_chosen():
    both_c = Stats(rewards=100, mean_reward=0.2, labels=200, accuracy=0.9)
    both_b = Stats(rewards=100, mean_reward=0.8, labels=200, accuracy=0.9)
    assert rollouts.next_action(state(), both_c, both_b, LATER).kind == "advance"  # mostly labels: accuracy
    assert rollouts.next_action(state(guard=Guard(metric="reward")), both_c, both_b, LATER).kind == "rollback"
    a = rollouts.next_action(state(), label(50, 0.6), label(500, 0.8), EARLY)
    assert a.kind == "rollback"
    assert "accuracy 0.600" in a.reason


def test_share_and_steps():
    assert [rollouts.share(rollouts.DEFAULT_STEPS, i) for i in range(5)] == [0.01, 0.05, 0.2, 0.5, 1.0]
    assert rollouts.check_steps(None) == (1, 5, 20, 50, 100)
    assert rollouts.check_steps([10, 100]) == (10, 100)
    for bad in ([100], [0, 100], [5, 5, 100], [1, 50], [1.5, 100], "1,100", [True, 100], list(range(1, 101))):
        with pytest.raises(ValueError, match="steps") as exc:
            rollouts.check_steps(bad)
        assert exc.value.args[1] == "steps"
    assert rollouts.check_step_seconds(None) == rollouts.DEFAULT_STEP_SECONDS
    with pytest.raises(ValueError, match="step_seconds"):
        rollouts.check_step_seconds(1)


def test_guard_from_json():
    assert Guard.from_json(None) == Guard()
    assert Guard.from_json({"metric": "accuracy", "max_drop": 0, "min_outcomes": 5}) == Guard("accuracy", 0.0, 5)
    for bad, field in (({"metric": "loss"}, "guard.metric"), ({"max_drop": 2}, "guard.max_drop"),
                       ({"max_drop": float("nan")}, "guard.max_drop"), ({"min_outcomes": 0}, "guard.min_outcomes"),
                       ({"min_outcomes": 2.5}, "guard.min_outcomes"), ({"typo": 1}, "guard")):
        with pytest.raises(ValueError, match="guard") as exc:
            Guard.from_json(bad)
        assert exc.value.args[1] == field

