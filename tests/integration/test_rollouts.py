"""Gradual rollouts and bandit arms on the real database: a rollout started through the API advances
step by step on the job's clock while the candidate's outcomes hold, completes and disables the
baseline; an injected regression rolls it back by itself and disables the candidate; every step is
audited; the roles and the refusals of the API; the bandit series the job writes; the page's card."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from dashboards import rollout_job
from dashboards.models import MetricPoint
from dashboards.tasks import run_rollouts
from oversight import audit, bandit_arms, bandits, config, rollout_actions
from oversight.models import (
    AISystem,
    AuditEvent,
    BanditArm,
    ConfigEpoch,
    Decision,
    HostedModel,
    Outcome,
    Rollout,
    RolloutEvent,
)
from tests.conftest import api_session, csrf_session

ROLLOUTS = "/api/v1/systems/{}/rollouts"
STEP_S = 600


def hosted(system: AISystem, *names: str, enabled: bool = True, role: str = "voter") -> None:
    for name in names:
        HostedModel.objects.create(system=system, name=name, kind="python", target=f"models.{name}:predict",
                                   role=role, enabled=enabled)


def outcomes(system: AISystem, model: str, n: int, at: datetime, hits: float) -> None:
    """``n`` decisions answered by ``model`` at ``at``, each with a client reward: a share ``hits`` of 1s."""
    made = Decision.objects.bulk_create([
        Decision(system=system, model=model, prediction={"output": "x", "model": model}, output="x",
                 status=Decision.Status.RELEASED, route=Decision.Route.AUTO, occurred_at=at, created_at=at)
        for _ in range(n)])
    ones = round(n * hits)
    Outcome.objects.bulk_create([Outcome(decision=d, reward=1.0 if i < ones else 0.0, observed_at=at)
                                 for i, d in enumerate(made)])


def start(world: Any, slug: str = "sup", **body: Any) -> Any:
    body = {"candidate": "v2", "baseline": "v1", "step_seconds": STEP_S, "reason": "v2 beat v1 offline", **body}
    return api_session(world.admin).post(ROLLOUTS.format(slug), body, content_type="application/json")


def epoch() -> int:
    return ConfigEpoch.objects.get(id=1).epoch


@pytest.fixture
def models(world: Any) -> Any:
    hosted(world.supervised, "v1", "v2")
    return world


def test_a_rollout_advances_on_schedule_while_it_holds_and_completes(models, django_capture_on_commit_callbacks):
    world = models
    with django_capture_on_commit_callbacks(execute=True) as pushed:
        r = start(world)
    assert r.status_code == 201, r.content
    body = r.json()
    assert (body["id"][:4], body["share"], body["steps"], body["state"], body["started_by"]) == (
        "rol_", 0.01, [1, 5, 20, 50, 100], "running", "admin")
    assert body["next"]["action"] == "hold"
    assert len(pushed) >= 1
    rollout = Rollout.objects.get()
    shares = [rollout.share]
    seen = config.cache.current().systems_by_slug["sup"].rollout  # what the scoring workers route by
    assert seen is not None
    assert (seen.id, seen.candidate, seen.baseline, seen.share) == (body["id"], "v2", "v1", 0.01)
    for step in range(4):
        began = rollout.step_started_at
        # good outcomes in this step: the candidate a little better than the baseline
        outcomes(world.supervised, "v2", 40, began + timedelta(seconds=5), 0.6)
        outcomes(world.supervised, "v1", 200, began + timedelta(seconds=5), 0.5)
        before = epoch()
        rollout_job.run_all(now=began + timedelta(seconds=STEP_S - 1))  # the step's time is not up: it holds
        rollout.refresh_from_db()
        assert (rollout.step, rollout.state) == (step, "running")
        with django_capture_on_commit_callbacks(execute=True):  # as on commit: Redis's epoch moves, pages are told
            run_rollouts(now=began + timedelta(seconds=STEP_S))  # the beat's task, on the injected clock
        rollout.refresh_from_db()
        assert epoch() > before  # the gate sees the new share on the next decision
        shares.append(rollout.share)
        seen = config.cache.current().systems_by_slug["sup"].rollout
        assert (seen.share if seen is not None else 1.0) == rollout.share  # the next decision sees it
    assert shares == [0.01, 0.05, 0.2, 0.5, 1.0]
    assert rollout.state == "completed"
    assert rollout.ended_at is not None
    assert not HostedModel.objects.get(system=world.supervised, name="v1").enabled
    assert HostedModel.objects.get(system=world.supervised, name="v2").enabled
    steps = list(RolloutEvent.objects.filter(rollout=rollout).values_list("kind", "share", "by"))
    assert steps == [("started", 0.01, "admin"), ("advanced", 0.05, "rollouts"), ("advanced", 0.2, "rollouts"),
                     ("advanced", 0.5, "rollouts"), ("completed", 1.0, "rollouts")]
    audited = list(AuditEvent.objects.filter(target=body["id"]).order_by("id").values_list("action", "actor_label"))
    assert audited == [("rollout.start", "admin"), ("rollout.advance", "rollouts"), ("rollout.advance", "rollouts"),
                       ("rollout.advance", "rollouts"), ("rollout.complete", "rollouts")]
    done = AuditEvent.objects.get(action="rollout.complete")
    assert done.data["disabled"] == "v1"
    assert done.data["stats"]["candidate"]["rewards"] == 40
    assert "mean reward 0.600 over 40 outcomes" in done.reason
    assert audit.verify_log().intact  # the chain holds
    listed = api_session(world.operator).get(ROLLOUTS.format("sup")).json()["rollouts"]
    assert [e["kind"] for e in listed[0]["events"]] == ["started", "advanced", "advanced", "advanced", "completed"]
    # a new rollout may start now that this one is over
    hosted(world.supervised, "v3")
    assert start(world, candidate="v3", baseline="v2").status_code == 201


def test_an_injected_regression_rolls_back_by_itself(models, django_capture_on_commit_callbacks):
    world = models
    assert start(world, steps=[10, 50, 100]).status_code == 201
    rollout = Rollout.objects.get()
    began = rollout.step_started_at
    outcomes(world.supervised, "v2", 20, began + timedelta(seconds=1), 0.2)  # bad, but too few to judge
    outcomes(world.supervised, "v1", 300, began + timedelta(seconds=1), 0.5)
    assert rollout_job.run_rollouts(now=began + timedelta(seconds=60))["rollouts"] == {"hold": 1}
    outcomes(world.supervised, "v2", 20, began + timedelta(seconds=70), 0.2)  # now 40 outcomes at 0.2
    before = epoch()
    with django_capture_on_commit_callbacks(execute=True) as pushed:
        summary = rollout_job.run_rollouts(now=began + timedelta(seconds=90))  # long before the step's end
    assert summary["rollouts"] == {"rollback": 1}
    rollout.refresh_from_db()
    assert (rollout.state, rollout.share) == ("rolled_back", 0.0)
    assert epoch() > before
    assert not HostedModel.objects.get(system=world.supervised, name="v2").enabled
    assert HostedModel.objects.get(system=world.supervised, name="v1").enabled
    event = RolloutEvent.objects.filter(rollout=rollout).latest("at", "id")
    assert (event.kind, event.share, event.by) == ("rolled_back", 0.0, "rollouts")
    assert event.reason.startswith("regression: the candidate's mean reward 0.200 over 40 outcomes")
    a = AuditEvent.objects.get(action="rollout.rollback")
    assert (a.actor_label, a.target, a.data["disabled"], a.data["from_share"]) == ("rollouts", rollout.public_id,
                                                                                   "v2", 0.1)
    assert len(pushed) >= 1  # the page is told
    # the job leaves it alone from now on
    assert rollout_job.run_rollouts(now=began + timedelta(hours=9))["rollouts"] == {}


def test_it_holds_while_outcomes_are_too_few_and_says_so(models):
    world = models
    assert start(world, guard={"min_outcomes": 50, "max_drop": 0.1}).status_code == 201
    rollout = Rollout.objects.get()
    outcomes(world.supervised, "v2", 10, rollout.step_started_at + timedelta(seconds=1), 0.9)
    outcomes(world.supervised, "v1", 100, rollout.step_started_at + timedelta(seconds=1), 0.5)
    later = rollout.step_started_at + timedelta(hours=3)
    action = rollout_actions.evaluate(rollout.pk, later)
    assert action is not None
    assert action.kind == "hold"
    assert "the candidate has 10 of the 50 outcomes (mean reward)" in action.reason
    rollout.refresh_from_db()
    assert (rollout.step, rollout.state) == (0, "running")
    shown = rollout_actions.public(rollout, "sup", later)
    assert shown["guard"] == {"metric": "auto", "max_drop": 0.1, "min_outcomes": 50}
    assert shown["stats"]["candidate"] == {"rewards": 10, "mean_reward": 0.9, "labels": 0, "accuracy": None}
    assert shown["next"]["action"] == "hold"


def test_votes_count_for_the_model_that_cast_them(models):
    """Ensemble decisions: each model's own vote against the label, and the decision's reward for both."""
    world = models
    rollout = rollout_actions.start(world.admin, "sup", "v2", "v1", reason="try v2")
    at = rollout.step_started_at + timedelta(seconds=1)
    votes = {"output": "a", "votes": [{"model": "v2", "output": "a"}, {"model": "v1", "output": "b"}]}
    d = Decision.objects.create(system=world.supervised, model="ensemble", prediction=votes, output="a",
                                status="released", route="auto", occurred_at=at, created_at=at)
    Outcome.objects.create(decision=d, label="a", observed_at=at)
    Outcome.objects.create(decision=d, reward=0.25, observed_at=at)
    Outcome.objects.create(decision=d, label="a", source="human", observed_at=at)  # a person's: not counted
    other = Decision.objects.create(system=world.supervised, model="v3", prediction={"output": "a"}, output="a",
                                    status="released", route="auto", occurred_at=at, created_at=at)
    Outcome.objects.create(decision=other, label="a", observed_at=at)
    found = rollout_actions.model_stats(world.supervised.id, ["v2", "v1", "v9"], rollout.step_started_at,
                                        at + timedelta(seconds=1))
    assert (found["v2"].labels, found["v2"].accuracy, found["v2"].rewards, found["v2"].mean_reward) == (1, 1.0, 1, 0.25)
    assert (found["v1"].labels, found["v1"].accuracy) == (1, 0.0)
    assert found["v9"].labels == found["v9"].rewards == 0
    # a vote that failed has no output: wrong
    failed = {"output": "a", "votes": [{"model": "v2", "error": "timeout"}, {"model": "v1", "output": "a"}]}
    d2 = Decision.objects.create(system=world.supervised, model="ensemble", prediction=failed, output="a",
                                 status="released", route="auto", occurred_at=at, created_at=at)
    Outcome.objects.create(decision=d2, label="a", observed_at=at)
    found = rollout_actions.model_stats(world.supervised.id, ["v2", "v1"], rollout.step_started_at,
                                        at + timedelta(seconds=1))
    assert (found["v2"].labels, found["v2"].accuracy, found["v1"].accuracy) == (2, 0.5, 0.5)
    # decisions before the step started do not count
    assert rollout_actions.model_stats(world.supervised.id, ["v2"], at + timedelta(seconds=1),
                                       at + timedelta(seconds=2))["v2"].labels == 0


def test_by_hand_advance_rollback_cancel_with_reasons(models):
    world = models
    admin = api_session(world.admin)
    rid = start(world, steps=[20, 100]).json()["id"]
    r = admin.post(f"/api/v1/rollouts/{rid}/advance", {"reason": ""}, content_type="application/json")
    assert (r.status_code, r.json()["error"]["field"]) == (422, "reason")
    r = admin.post(f"/api/v1/rollouts/{rid}/advance", {"reason": "looks fine"}, content_type="application/json")
    assert r.status_code == 200, r.content
    assert (r.json()["state"], r.json()["share"]) == ("completed", 1.0)  # from the step before the last
    assert not HostedModel.objects.get(name="v1").enabled
    r = admin.post(f"/api/v1/rollouts/{rid}/rollback", {"reason": "too late"}, content_type="application/json")
    assert r.status_code == 409
    assert "completed already" in r.json()["error"]["message"]

    hosted(world.supervised, "v3")
    rid = start(world, candidate="v3", baseline="v2").json()["id"]
    r = admin.post(f"/api/v1/rollouts/{rid}/rollback", {"reason": "pager fired"}, content_type="application/json")
    assert (r.status_code, r.json()["state"]) == (200, "rolled_back")
    assert not HostedModel.objects.get(name="v3").enabled
    a = AuditEvent.objects.filter(action="rollout.rollback").get()
    assert (a.actor_label, a.reason) == ("admin", "pager fired")

    HostedModel.objects.filter(name="v3").update(enabled=True)
    rid = start(world, candidate="v3", baseline="v2").json()["id"]
    r = admin.post(f"/api/v1/rollouts/{rid}/cancel", {"reason": "wrong build"}, content_type="application/json")
    assert (r.status_code, r.json()["state"], r.json()["events"][-1]["kind"]) == (200, "cancelled", "cancelled")
    assert not HostedModel.objects.get(name="v3").enabled
    assert AuditEvent.objects.filter(action="rollout.cancel", reason="wrong build").exists()
    assert admin.post("/api/v1/rollouts/rol_99999/cancel", {"reason": "x"},
                      content_type="application/json").status_code == 404
    assert admin.post("/api/v1/rollouts/nonsense/cancel", {"reason": "x"},
                      content_type="application/json").status_code == 404


@pytest.mark.parametrize(("body", "status", "field", "words"), [
    ({"candidate": "v9"}, 422, "candidate", "sup has no hosted model 'v9' (its models: v1, v2, v_off)"),
    ({"baseline": "v2"}, 422, "candidate", "both 'v2'"),
    ({"candidate": "v_off"}, 422, "candidate", "disabled"),
    ({"reason": "  "}, 422, "reason", "a reason is required"),
    ({"steps": [5, 1, 100]}, 422, "steps", "rise strictly"),
    ({"steps": [5, 50]}, 422, "steps", "to 100"),
    ({"step_seconds": 1}, 422, "step_seconds", None),
    ({"guard": {"metric": "loss"}}, 422, "guard.metric", None),
    ({"guard": {"max_drop": -1}}, 422, "guard.max_drop", None),
    ({"color": "red"}, 422, "color", None),
])
def test_bad_input_is_refused_clearly(models, body, status, field, words):
    hosted(models.supervised, "v_off", enabled=False)
    r = start(models, **body)
    assert r.status_code == status, r.content
    error = r.json()["error"]
    assert error["field"] == field
    if words:
        assert words in error["message"]
    assert not Rollout.objects.exists()
    assert not AuditEvent.objects.filter(action="rollout.start").exists()


def test_one_running_rollout_per_system_and_roles_differ(models):
    world = models
    hosted(world.supervised, "ctx", role="context")
    r = start(world, candidate="ctx")
    assert (r.status_code, r.json()["error"]["field"]) == (422, "candidate")
    assert "same role" in r.json()["error"]["message"]
    assert start(world).status_code == 201
    hosted(world.supervised, "v3")
    r = start(world, candidate="v3", baseline="v2")
    assert (r.status_code, r.json()["error"]["field"]) == (409, "system")
    assert "a rollout of v2 over v1 already runs on sup" in r.json()["error"]["message"]
    assert start(world, "nope").status_code == 404
    hosted(world.autonomous, "v1", "v2")
    assert start(world, "auto").status_code == 201  # another system may run its own


def test_the_api_roles_from_both_sides(models):
    world = models
    rid = start(world).json()["id"]
    url = ROLLOUTS.format("sup")
    for user in (world.operator, world.editor, world.admin):
        assert api_session(user).get(url).status_code == 200
        assert api_session(user).get("/api/v1/systems/sup/bandit").status_code == 200
    assert api_session(world.nobody).get(url).status_code == 403
    assert world.client_for("sup").get(url).status_code == 200  # the system's own key reads
    assert world.client_for("auto").get(url).status_code == 404  # another system's key learns nothing
    assert world.client_for("sup").get("/api/v1/systems/sup/bandit").status_code == 200
    for who in (api_session(world.operator), api_session(world.editor), world.client_for("sup")):
        r = who.post(url, {"candidate": "v2", "baseline": "v1", "reason": "x"}, content_type="application/json")
        assert r.status_code == 403, r.content
        for op in ("advance", "rollback", "cancel"):
            assert who.post(f"/api/v1/rollouts/{rid}/{op}", {"reason": "x"},
                            content_type="application/json").status_code == 403
    assert Rollout.objects.get().state == "running"
    assert not AuditEvent.objects.filter(action__in=("rollout.advance", "rollout.rollback", "rollout.cancel")).exists()


def test_bandit_arms_rewards_and_the_jobs_series(models, django_capture_on_commit_callbacks,
                                                 django_assert_num_queries):
    world = models
    sup = world.supervised
    with django_assert_num_queries(1):
        assert bandit_arms.arms_of(sup.id, ["v1", "v2"]) == [bandits.Arm("v1"), bandits.Arm("v2")]
    for i in range(60):
        bandit_arms.record_reward(sup.id, "v2", 1.0 if i % 10 < 8 else 0.0)
        bandit_arms.record_reward(sup.id, "v1", 1.0 if i % 10 < 3 else 0.0)
    bandit_arms.record_reward(sup.id, "v1", 7)  # clipped to 1
    with pytest.raises(ValueError, match="a reward is a number"):
        bandit_arms.record_reward(sup.id, "v1", float("nan"))
    arm = BanditArm.objects.get(system=sup, model="v2")
    assert (arm.alpha, arm.beta, arm.pulls) == (49.0, 13.0, 60)
    assert BanditArm.objects.get(system=sup, model="v1").pulls == 61

    now = timezone.now().replace(second=20, microsecond=0)
    assert rollout_job.run_bandits(now)["systems"] == 0  # ensemble systems have no bandit series
    AISystem.objects.filter(id=sup.id).update(routing={"mode": "bandit", "floor": 0.05})
    with django_capture_on_commit_callbacks(execute=True) as pushed:
        summary = rollout_job.run_bandits(now)
    assert (summary["systems"], summary["points"]) == (1, 8)
    t = rollout_job.bucket(now)
    assert t.second == 0
    stored = dict(MetricPoint.objects.filter(system=sup, t=t, name__startswith="bandit.").values_list("name", "value"))
    assert set(stored) == {f"bandit.{m}.{k}" for m in ("v1", "v2") for k in ("share", "mean", "low", "high")}
    assert stored["bandit.v1.share"] + stored["bandit.v2.share"] == pytest.approx(1.0)
    assert stored["bandit.v2.share"] > 0.9
    assert stored["bandit.v1.share"] >= 0.05  # its floor
    assert stored["bandit.v2.mean"] == pytest.approx(49 / 62)
    assert stored["bandit.v2.low"] < stored["bandit.v2.mean"] < stored["bandit.v2.high"]
    assert len(pushed) == 1
    # a later tick in the same minute replaces the values
    bandit_arms.record_reward(sup.id, "v1", 1.0)
    rollout_job.run_bandits(now + timedelta(seconds=30))
    assert MetricPoint.objects.filter(system=sup, name__startswith="bandit.").count() == 8
    shown = api_session(world.operator).get("/api/v1/systems/sup/bandit").json()
    assert (shown["mode"], shown["floor"]) == ("bandit", 0.05)
    arms = {a["model"]: a for a in shown["arms"]}
    assert arms["v2"]["pulls"] == 60
    assert arms["v2"]["low"] < arms["v2"]["mean"] < arms["v2"]["high"]
    assert arms["v2"]["share"] > arms["v1"]["share"]


def test_the_system_page_card_and_its_forms(models):
    world = models
    page = world.person(world.admin).get("/monitor/sup/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="rollouts"' in html
    assert "Start a rollout" in html
    assert "No rollout is running." in html
    operator_page = world.person(world.operator).get("/monitor/sup/").content.decode()
    assert "Start a rollout" not in operator_page

    admin = csrf_session(world.admin)
    form = {"op": "start", "rollout-candidate": "v2", "rollout-baseline": "v1", "rollout-steps": "1, 5, 20, 50, 100",
            "rollout-step_minutes": "30", "rollout-metric": "auto", "rollout-max_drop": "0.05",
            "rollout-min_outcomes": "30", "rollout-reason": ""}
    r = admin.post("/monitor/sup/rollouts/", form)
    assert r.status_code == 422
    assert "a reason is required to start a rollout" in r.content.decode()
    r = admin.post("/monitor/sup/rollouts/", {**form, "rollout-reason": "ship <v2>", "rollout-steps": "1, 200"})
    assert r.status_code == 422
    assert "Steps must rise strictly" in r.content.decode()
    r = admin.post("/monitor/sup/rollouts/", {**form, "rollout-reason": "ship <v2>"})
    assert r.status_code == 302
    rollout = Rollout.objects.get()
    assert (rollout.step_seconds, rollout.reason) == (1800, "ship <v2>")
    html = world.person(world.admin).get("/monitor/sup/").content.decode()
    assert "ship &lt;v2&gt;" in html
    assert "ship <v2>" not in html
    assert "v2 takes 1 % of the traffic from v1" in html

    r = admin.post("/monitor/sup/rollouts/", {"op": "rollback", "rollact-rollout_id": rollout.public_id,
                                              "rollact-reason": ""})
    assert r.status_code == 422
    r = admin.post("/monitor/sup/rollouts/", {"op": "rollback", "rollact-rollout_id": rollout.public_id,
                                              "rollact-reason": "errors in the logs"})
    assert r.status_code == 302
    rollout.refresh_from_db()
    assert rollout.state == "rolled_back"
    r = admin.post("/monitor/sup/rollouts/", {"op": "cancel", "rollact-rollout_id": rollout.public_id,
                                              "rollact-reason": "again"})
    assert r.status_code == 422
    assert "rolled back already" in r.content.decode()
    assert csrf_session(world.operator).post("/monitor/sup/rollouts/", form).status_code == 403
    data = world.person(world.operator).get("/monitor/sup/rollouts/data.json").json()
    assert data["rollouts"][0]["state"] == "rolled_back"
    assert [a["model"] for a in data["bandit"]["arms"]] == ["v1"]  # v2 was disabled by the rollback
