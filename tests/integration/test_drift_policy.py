"""Drift thresholds per system and feature (policy field ``drift``): validated by the API and the
pages, applied by the drift job, a change recomputes every window."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime, timedelta

import numpy as np

from dashboards import drift, drift_job
from dashboards.models import DriftResult
from oversight import actions
from oversight.policy_schemas import CategoricalMethod, NumericMethod
from tests.integration.test_drift_job import items, make_reference, post
from tests.integration.test_review_api import token_client

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def test_the_schemas_know_exactly_the_drift_modules_methods():
    assert typing.get_args(NumericMethod) == drift.NUMERIC_METHODS
    assert typing.get_args(CategoricalMethod) == drift.CATEGORICAL_METHODS


def patch(world, body):
    return token_client(world.admin).patch("/api/v1/systems/sup", json.dumps({**body, "reason": "tuning"}),
                                           content_type="application/json")


def test_the_api_stores_thresholds_without_the_parts_left_out_and_refuses_nonsense(world):
    r = patch(world, {"drift": {"numeric": {"method": "wasserstein", "threshold": 0.1},
                                "features": {"color": {"p_threshold": 0.01}}}})
    assert r.status_code == 200, r.content
    assert r.json()["drift"] == {"numeric": {"method": "wasserstein", "threshold": 0.1},
                                 "features": {"color": {"p_threshold": 0.01}}}
    for bad, field in (({"numeric": {"method": "chi2"}}, "drift.numeric.method"),
                       ({"numeric": {"threshold": -1}}, "drift.numeric.threshold"),
                       ({"features": {"x": {"p_threshold": 0}}}, "drift.features.x.p_threshold"),
                       ({"numerc": {}}, "drift.numerc")):
        r = patch(world, {"drift": bad})
        assert r.status_code == 422, bad
        assert r.json()["error"]["field"] == field, r.json()


def run_three_hours(world, shift: float) -> dict[str, bool | None]:
    make_reference(world.supervised)
    rng = np.random.default_rng(11)
    batch = [x for h in range(3) for x in items(rng, 400, T0 + timedelta(hours=h), timedelta(hours=1),
                                               shift=shift if h == 2 else 0.0)]
    post(world.client_for("sup"), "sup", batch)
    drift_job.run_system(world.supervised.id)
    rows = DriftResult.objects.filter(system=world.supervised, feature="x", primary=True)
    return {r.window_start.hour: r.drifted for r in rows} | {"method": rows.first().method}


def test_a_feature_threshold_changes_the_verdict_and_recomputes_every_window(world):
    before = run_three_hours(world, shift=0.3)  # 400 rows: KS decides, and a 0.3-std shift is drift
    assert before == {0: False, 1: False, 2: True, "method": "ks"}
    actions.update_system(world.admin, "sup", {"drift": {"features": {"x": {"method": "wasserstein",
                                                                             "threshold": 0.5}}}}, "less sensitive")
    world.supervised.refresh_from_db()
    summary = drift_job.run_system(world.supervised.id)
    assert summary["full"] is True  # new thresholds: every window again
    rows = DriftResult.objects.filter(system=world.supervised, feature="x", primary=True)
    assert {r.window_start.hour: (r.method, r.drifted) for r in rows} == {
        0: ("wasserstein", False), 1: ("wasserstein", False), 2: ("wasserstein", False)}


def test_a_feature_rule_for_the_wrong_column_type_is_left_out_and_reported(world):
    actions.update_system(world.admin, "sup", {"drift": {"features": {"x": {"method": "chi2"}}}}, "typo")
    make_reference(world.supervised)
    post(world.client_for("sup"), "sup", items(np.random.default_rng(1), 200, T0, timedelta(hours=1)))
    summary = drift_job.run_system(world.supervised.id)
    assert summary["ignored_overrides"] == ["x: chi2 does not apply to a numeric column"]
    assert DriftResult.objects.filter(feature="x", primary=True).first().method == "ks"


def test_the_policy_page_takes_thresholds_as_json(world):
    c = world.person(world.admin)
    r = c.get("/systems/sup/")
    assert "Drift thresholds (JSON)" in r.content.decode()
    page = r.content.decode()
    assert 'aria-describedby="id_drift_helptext"' in page
