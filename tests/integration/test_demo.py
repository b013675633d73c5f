"""The demo's parts: seeding people/systems/keys and the recommender's hosted models, the traffic
simulator against a real server (and the scoring worker), the March-2020 switch."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from oversight import access, demo, embedded, simulator
from oversight.models import AISystem, ApiKey, Decision, HostedModel, Outcome

MUSIC_MODELS = {"collab", "audio", "daypart", "popularity"}


def test_seed_demo_makes_one_person_per_role_one_system_per_level_and_keys(db, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(embedded, "VAR_DIR", tmp_path)
    call_command("seed_demo")
    out = capsys.readouterr().out
    store = json.loads((tmp_path / "demo.json").read_text())
    for username in ("operator", "editor", "admin"):
        assert store["passwords"][username] in out  # printed for the newcomer
    from django.contrib.auth import get_user_model

    for username, role in demo.PEOPLE:
        user = get_user_model().objects.get(username=username)
        assert access.roles_of(user) == {role}
        assert user.check_password(store["passwords"][username])
    assert sorted(AISystem.objects.values_list("level", flat=True)) == [1, 2, 3]
    assert ApiKey.objects.count() == 3
    recs = AISystem.objects.get(slug="nightly-recs")
    models = {m.name: m for m in HostedModel.objects.filter(system=recs)}
    assert set(models) == MUSIC_MODELS
    assert models["daypart"].role == "context"
    assert models["collab"].target == "oversight.music.models:collab"
    assert models["collab"].weight > models["audio"].weight > models["popularity"].weight
    from oversight.music import models as music_models

    assert recs.fallback == {"items": music_models.fallback_items(5)}
    assert (tmp_path / "music").is_dir()  # the factors, for the scoring workers
    # running it again keeps what exists (same passwords, no new keys, no new models)
    call_command("seed_demo")
    assert json.loads((tmp_path / "demo.json").read_text()) == store
    assert ApiKey.objects.count() == 3
    assert HostedModel.objects.count() == 4


def test_a_demo_database_from_before_hosted_models_gets_them_and_a_new_reference(db, tmp_path, monkeypatch):
    """An older demo's nightly-recs (client-side predictions, the old fallback and breaker, a
    reference of the old columns) is brought up to the hosted recommender by the seed."""
    from dashboards import references
    from oversight import actions

    monkeypatch.setattr(embedded, "VAR_DIR", tmp_path)
    actions.create_system(None, {"slug": "nightly-recs", "name": "recs", "level": 2,
                                 "fallback": {"items": ["editorial-calm-1"]}, "breaker": {"min_mean_reward": 0.3}})
    call_command("seed_demo_reference", "--rows", "50")
    old = references.current(AISystem.objects.get(slug="nightly-recs").id)
    demo.seed()
    recs = AISystem.objects.get(slug="nightly-recs")
    assert set(HostedModel.objects.filter(system=recs).values_list("name", flat=True)) == MUSIC_MODELS
    assert recs.breaker["min_mean_reward"] == 0.6
    assert recs.fallback["items"][0] != "editorial-calm-1"
    new = references.current(recs.id)
    assert new.id != old.id
    assert "energy" in new.columns


def test_seed_demo_against_a_database_made_anew_gives_keys_that_work(db, tmp_path, monkeypatch):
    """var/demo.json outlives a dropped database: keys it names that this database does not hold
    are made anew, or the simulator's every decision would be a 401."""
    monkeypatch.setattr(embedded, "VAR_DIR", tmp_path)
    (tmp_path / "demo.json").write_text(json.dumps({"passwords": {}, "keys": {
        "loan-approvals": "ovk_from_an_old_database", "nightly-recs": "ovk_gone", "spam-filter": "ovk_gone_too"}}))
    store = demo.seed()
    from oversight import credentials

    for slug, secret in store["keys"].items():
        assert ApiKey.objects.filter(system__slug=slug, digest=credentials.digest(secret)).exists(), slug


@pytest.mark.usefixtures("scoring_worker_proc")
def test_the_listeners_ask_the_hosted_models_and_say_what_they_skipped(tworld, live_server_url, tmp_path,
                                                                       monkeypatch):
    """The recommender's decisions go out without a prediction: the scoring worker asks the four
    models; the simulated listeners report 1 (played through) or 0 (skipped). With the
    collaborative filter's kill switch engaged, it is not asked any more."""
    from oversight import actions
    from oversight.music import models

    models.warm()  # in the var/ the worker reads: it loads the factors instead of training
    monkeypatch.setattr(embedded, "VAR_DIR", tmp_path)
    store = demo.seed()
    keys = {"nightly-recs": store["keys"]["nightly-recs"]}
    counts = simulator.run(live_server_url, keys, rate=15, duration_s=4, log=lambda _: None, seed=3)
    assert sum(counts.values()) >= 8, counts
    assert set(counts) <= {"released", "pending_review", "fallback"}
    made = list(Decision.objects.filter(system__slug="nightly-recs"))
    assert len(made) == sum(counts.values())
    scored = [d for d in made if d.prediction and d.prediction.get("hosted")]
    assert len(scored) >= 0.8 * len(made)  # the models answered within the wait
    assert {v["model"] for v in scored[0].prediction["votes"]} == MUSIC_MODELS
    assert {"activity", "daypart", "segment"} <= set(made[0].context)
    rewards = set(Outcome.objects.filter(decision__system__slug="nightly-recs").values_list("reward", flat=True))
    assert rewards
    assert rewards <= {0.0, 1.0}

    actions.set_killswitch(tworld.admin, "model", True, "March 2020: the filter lives in the old routines",
                           "nightly-recs", "collab")
    before = {d.id for d in made}
    simulator.run(live_server_url, keys, rate=15, duration_s=2, log=lambda _: None, seed=4)
    later = [d for d in Decision.objects.filter(system__slug="nightly-recs") if d.id not in before]
    assert later
    for d in later:
        if d.prediction and d.prediction.get("hosted"):
            assert "collab" not in {v["model"] for v in d.prediction["votes"]}
            assert any("model collab not asked: kill switch engaged" in r for r in d.reasons)


def test_simulator_sends_decisions_through_the_public_api(tworld, live_server_url):
    keys = {"crit": tworld.keys["crit"], "sup": tworld.keys["sup"]}
    counts = simulator.run(live_server_url, keys, rate=40, duration_s=1.5, log=lambda _: None, seed=7)
    assert sum(counts.values()) >= 20
    assert set(counts) <= {"released", "pending_review"}
    assert Decision.objects.count() == sum(counts.values())
    assert Decision.objects.filter(system__slug="crit", status="pending_review").exists()


# --- the demo's scenarios ----------------------------------------------------------------------


def _sample(scenario: str, n: int = 2000, seed: int = 1) -> dict[str, list]:
    import random

    rng = random.Random(seed)
    cols: dict[str, list] = {"hour": [], "activity": [], "tempo": [], "energy": [], "genre": [],
                             "prediction.confidence": []}
    for _ in range(n):
        features, _, _, confidence = simulator.nightly_row(rng, scenario)
        for k, v in features.items():
            cols[k].append(v)
        cols["prediction.confidence"].append(confidence)
    return cols


def test_march_2020_moves_what_the_drift_job_watches_and_normal_traffic_does_not():
    import numpy as np

    from dashboards import drift

    base = _sample("normal", seed=1)
    refs = drift.build_references({k: np.asarray(v, dtype=object if k in ("activity", "genre") else float)
                                   for k, v in base.items()}, categorical=["activity", "genre"])

    def drifted(scenario: str) -> set[str]:
        window = _sample(scenario, n=500, seed=2)
        report = drift.detect_drift(refs, {k: np.asarray(v, dtype=object if k in ("activity", "genre") else float)
                                           for k, v in window.items()})
        return {f.feature for f in report.features.values() if f.drifted}

    assert drifted("normal") == set()
    assert drifted("march-2020") >= {"hour", "activity", "energy", "genre", "prediction.confidence"}
    assert "commute" not in _sample("march-2020", n=500)["activity"]


def test_a_feedback_loop_makes_rewards_follow_the_model_and_narrows_what_is_shown():
    import random

    import numpy as np

    from dashboards import performance
    from oversight.music import ensemble

    rng = random.Random(3)
    normal = []
    for _ in range(1500):  # the hosted recommender: the listeners' plays barely follow its confidence
        m, context, features = simulator.nightly_moment(rng, "normal")
        output, conf = ensemble.score({"subject": m.subject, "context": context, "features": features})
        normal.append((conf, simulator.nightly_reward("normal", m, output, rng)))
    conf = [rng.betavariate(5, 2) for _ in range(4000)]
    loop = [(c, simulator.nightly_outcome(rng, "feedback-loop", "released", c)) for c in conf]
    corr = {name: performance.prediction_outcome_correlation(np.array([c for c, r in pairs if r is not None]),
                                                              np.array([r for _, r in pairs if r is not None]))
            for name, pairs in (("normal", normal), ("loop", loop))}
    assert corr["normal"] < 0.3
    assert corr["loop"] > performance.ECHO_CORRELATION
    assert simulator.nightly_outcome(rng, "feedback-loop", "pending_review", 0.9) is None  # only its own releases

    def gini(scenario: str) -> float:
        counts: dict[str, int] = {}
        for _ in range(1000):
            for item in simulator.nightly_row(rng, scenario)[2]["items"]:
                counts[item] = counts.get(item, 0) + 1
        return performance.exposure_gini(np.array(list(counts.values()) + [0] * (600 - len(counts))))

    assert gini("feedback-loop") > gini("normal")
    # in a feedback loop the client sends its own (narrow) predictions again
    body = simulator.decision_body("nightly-recs", rng, "feedback-loop")
    assert set(body["prediction"]["output"]["items"]) <= set(simulator.CATALOGUE[:8])


def test_the_scenario_is_switched_by_the_command_and_by_an_admins_button(world, tmp_path, monkeypatch, capsys):
    from oversight.models import AuditEvent
    from tests.integration.test_pages import post

    monkeypatch.setattr(embedded, "VAR_DIR", tmp_path)
    call_command("demo_scenario", "normal")
    assert demo.scenario() == "normal"
    call_command("demo_scenario", "march-2020")
    assert demo.scenario() == "march-2020"
    call_command("demo_scenario")
    assert capsys.readouterr().out.strip().endswith("march-2020")
    call_command("march2020", "--off")
    assert demo.scenario() == "normal"
    call_command("march2020")
    assert demo.scenario() == "march-2020"
    out = capsys.readouterr().out
    assert "March 2020" in out
    assert "/monitor/nightly-recs/" in out
    assert "kill switch of model 'collab'" in out
    from oversight.music import models

    assert all(item in out for item in models.calm_items(5))  # what editors might pin for the night
    assert AuditEvent.objects.filter(action="demo.scenario", target="march-2020", actor=None).exists()

    admin = world.person(world.admin)
    r = post(admin, "/demo/scenario/", {"scenario": "feedback-loop"}, follow=True)
    assert "this is not the demo" in r.content.decode()  # no demo seeded here: nothing switched
    assert demo.scenario() == "march-2020"
    (tmp_path / "demo.json").write_text("{}")  # now it is the demo
    assert 'value="march-2020" aria-pressed="true"' in admin.get("/").content.decode()
    r = post(admin, "/demo/scenario/", {"scenario": "feedback-loop"}, follow=True)
    assert "demo scenario: Feedback loop" in r.content.decode()
    assert demo.scenario() == "feedback-loop"
    assert AuditEvent.objects.filter(action="demo.scenario", target="feedback-loop", actor=world.admin).exists()
    assert post(admin, "/demo/scenario/", {"scenario": "chaos"}, follow=True).status_code == 200
    assert demo.scenario() == "feedback-loop"
    assert post(world.person(world.operator), "/demo/scenario/", {"scenario": "normal"}).status_code == 403
    assert "demo-title" not in world.person(world.operator).get("/").content.decode()
    call_command("demo_scenario", "normal")


def test_the_demo_recommender_gets_a_reference_of_normal_listening(world):
    from dashboards.models import Reference

    actions_system = {"slug": "nightly-recs", "name": "recs", "level": 2}
    from oversight import actions

    actions.create_system(None, actions_system)
    call_command("seed_demo_reference", "--rows", "500")
    ref = Reference.objects.get()
    assert ref.rows == 500
    assert sorted(ref.columns) == sorted(["hour", "activity", "tempo", "energy", "genre", "prediction.confidence"])
    call_command("seed_demo_reference")  # has one: kept
    assert Reference.objects.count() == 1
