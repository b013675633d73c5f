"""The performance and feedback-loop job (dashboards.performance_job) on real PostgreSQL: what it
stores per window, that only changed windows are recomputed, the feedback-loop alert with
hysteresis, and the metric series through the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from django.db.models import F
from scipy import stats  # type: ignore[import-untyped]

from dashboards import performance, performance_job
from dashboards.models import Alert, MetricPoint
from oversight.models import AuditEvent, Decision, Outcome
from tests.conftest import api_session
from tests.integration.test_drift_job import post
from tests.integration.test_review_api import claim, resolve, token_client

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def figures(system: Any, t: datetime) -> dict[str, float]:
    return dict(MetricPoint.objects.filter(system=system, t=t, name__in=performance_job.NAMES)
                .values_list("name", "value"))


def decide(world: Any, slug: str, rows: list[dict[str, Any]]) -> list[Decision]:
    """Post the rows as a client would; the decisions they made, in order."""
    post(world.client_for(slug), slug, rows)
    times = [datetime.fromisoformat(r["occurred_at"]) for r in rows]
    return list(Decision.objects.filter(system__slug=slug, occurred_at__in=times).order_by("occurred_at", "id"))


def age(hours: float) -> None:
    """Everything stored so far arrived ``hours`` ago (the job's watermark follows arrival times)."""
    Decision.objects.update(created_at=F("created_at") - timedelta(hours=hours))
    Outcome.objects.update(created_at=F("created_at") - timedelta(hours=hours))


def row(i: int, start: datetime, output: Any, confidence: float, subject: str | None = None) -> dict[str, Any]:
    return {"subject": subject or f"u{i}", "features": {"x": i},
            "prediction": {"output": output, "confidence": confidence},
            "occurred_at": (start + timedelta(seconds=i)).isoformat()}


def test_labels_give_accuracy_calibration_correlation_and_the_own_outcome_share(world):
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.3, 1.0, 200)
    outputs = rng.choice(["rock", "jazz"], 200)
    made = decide(world, "sup", [row(i, T0, str(outputs[i]), float(conf[i])) for i in range(200)])
    labels = [d.prediction["output"] if rng.random() < d.confidence else "other" for d in made]
    Outcome.objects.bulk_create([Outcome(decision=d, label=lb, observed_at=T0 + HOUR)
                                 for d, lb in zip(made, labels, strict=True)])

    summary = performance_job.run_system(world.supervised.id)
    assert summary["windows"] == 1
    got = figures(world.supervised, T0)
    correct = np.array([d.prediction["output"] == lb for d, lb in zip(made, labels, strict=True)], dtype=float)
    confidence = np.array([d.confidence for d in made])
    assert got["perf.outcomes"] == 200
    assert got["perf.accuracy"] == pytest.approx(correct.mean())
    assert got["perf.ece"] == pytest.approx(performance.expected_calibration_error(confidence, correct))
    assert got["loop.correlation"] == pytest.approx(stats.pearsonr(confidence, correct)[0])
    released = np.mean([d.status == "released" for d in made])  # threshold 0.6: the rest waits for people
    assert 0 < released < 1
    assert got["loop.own_outcome_share"] == pytest.approx(released)
    assert "perf.mean_reward" not in got  # labels, not rewards


def test_rewards_give_the_mean_reward(world):
    made = decide(world, "auto", [row(i, T0, {"items": ["a"]}, 0.9) for i in range(10)])
    Outcome.objects.bulk_create([Outcome(decision=d, reward=r, observed_at=T0)
                                 for d, r in zip(made, [0.0, 1.0] * 5, strict=True)])
    performance_job.run_system(world.autonomous.id)
    got = figures(world.autonomous, T0)
    assert got["perf.mean_reward"] == pytest.approx(0.5)
    assert "perf.accuracy" not in got


def test_exposure_concentration_and_homogeneity_come_from_what_was_shown(world):
    # Everyone gets the same two items: exposure spread evenly over them, identical lists.
    decide(world, "auto", [row(i, T0, {"items": ["t1", "t2"]}, 0.9) for i in range(6)])
    # The next hour: one blockbuster for all, and each subject also one item of their own.
    decide(world, "auto", [row(i, T0 + HOUR, {"items": ["hit", f"own{i}"]}, 0.9) for i in range(4)])
    performance_job.run_system(world.autonomous.id)
    first, second = figures(world.autonomous, T0), figures(world.autonomous, T0 + HOUR)
    assert first["loop.exposure_gini"] == pytest.approx(0.0)
    assert first["loop.homogeneity"] == pytest.approx(1.0)
    # t1 and t2, shown the hour before and no longer, count 0 in the catalogue
    assert second["loop.exposure_gini"] == pytest.approx(performance.exposure_gini(np.array([4, 1, 1, 1, 1, 0, 0])))
    assert second["loop.homogeneity"] == pytest.approx(1 / 3)  # {hit, own_i} vs {hit, own_j}


def test_a_recommender_narrowing_to_a_few_items_concentrates_exposure(world):
    decide(world, "auto", [row(i, T0, {"items": [f"t{i % 10}"]}, 0.9) for i in range(40)])  # 10 items evenly
    decide(world, "auto", [row(i, T0 + HOUR, {"items": [f"t{i % 2}"]}, 0.9) for i in range(40)])  # 2 of them
    performance_job.run_system(world.autonomous.id)
    assert figures(world.autonomous, T0)["loop.exposure_gini"] == pytest.approx(0.0)
    assert figures(world.autonomous, T0 + HOUR)["loop.exposure_gini"] == pytest.approx(0.8)


def test_agreement_counts_what_people_kept_of_the_model(world):
    decide(world, "crit", [row(i, T0, {"decision": "approve"}, 0.9) for i in range(4)])
    op = token_client(world.operator)
    for action in ("approve", "approve", "approve", "reject"):
        item = claim(op).json()["id"]
        assert resolve(op, item, action=action).status_code == 200
    # each resolution is an outcome marked human: what the person released (the fallback for a reject)
    human = Outcome.objects.filter(source="human").order_by("created_at")
    assert [o.label for o in human] == [{"decision": "approve"}] * 3 + [{"decision": "refer"}]
    performance_job.run_system(world.critical.id)
    got = figures(world.critical, T0)
    assert got["perf.agreement"] == pytest.approx(0.75)
    assert "perf.outcomes" not in got  # people's resolutions are not the client's outcomes


def test_a_late_outcome_recomputes_only_its_window_and_a_second_run_changes_nothing(world):
    made = decide(world, "auto", [row(i, T0 + HOUR * h, "a", 0.8) for h in range(3) for i in range(5)])
    Outcome.objects.bulk_create([Outcome(decision=d, label="a", observed_at=T0) for d in made])
    performance_job.run_system(world.autonomous.id)
    stored = MetricPoint.objects.filter(system=world.autonomous, name__in=performance_job.NAMES)
    before = list(stored.order_by("name", "t").values_list("name", "t", "value"))
    again = performance_job.run_system(world.autonomous.id)  # inside the overlap: recomputed, the same
    assert again["windows"] == 3
    assert list(stored.order_by("name", "t").values_list("name", "t", "value")) == before
    age(1)  # an hour later, past the overlap: nothing to do
    assert performance_job.run_system(world.autonomous.id)["windows"] == 0

    Outcome.objects.create(decision=made[5], label="b", observed_at=T0)  # a miss in the second hour
    late = performance_job.run_system(world.autonomous.id)
    assert late["windows"] == 1
    assert figures(world.autonomous, T0 + HOUR)["perf.accuracy"] == pytest.approx(5 / 6)
    assert figures(world.autonomous, T0)["perf.accuracy"] == 1.0


def echo_window(world: Any, start: datetime, n: int, echo: bool, rng: np.random.Generator) -> None:
    conf = rng.uniform(0.2, 1.0, n)
    made = decide(world, "auto", [row(i, start, "a", float(conf[i]), subject=f"s{start.hour}-{i}")
                                  for i in range(n)])
    rewards = [d.confidence if echo else float(rng.uniform()) for d in made]
    Outcome.objects.bulk_create([Outcome(decision=d, reward=r, observed_at=start)
                                 for d, r in zip(made, rewards, strict=True)])


def test_the_feedback_loop_alert_opens_on_an_echo_and_resolves_after_calm_windows(world):
    rng = np.random.default_rng(5)
    echo_window(world, T0, 60, echo=False, rng=rng)  # the reference: outcomes independent of the model
    performance_job.run_system(world.autonomous.id)
    assert not Alert.objects.filter(kind="feedback_loop").exists()

    echo_window(world, T0 + HOUR, 60, echo=True, rng=rng)  # rewards follow the model's confidence
    summary = performance_job.run_system(world.autonomous.id)
    assert summary["alerts_opened"] == 1
    alert = Alert.objects.get(kind="feedback_loop")
    assert alert.state == "open"
    assert alert.value == pytest.approx(1.0)
    rise = figures(world.autonomous, T0 + HOUR)["loop.correlation_rise"]
    assert rise == pytest.approx(1.0 - figures(world.autonomous, T0)["loop.correlation"])
    assert AuditEvent.objects.filter(action="alert.open", target="feedback_loop").count() == 1

    echo_window(world, T0 + 2 * HOUR, 60, echo=False, rng=rng)
    assert performance_job.run_system(world.autonomous.id)["alerts_resolved"] == 0  # one calm window: stays
    echo_window(world, T0 + 3 * HOUR, 60, echo=False, rng=rng)
    assert performance_job.run_system(world.autonomous.id)["alerts_resolved"] == 1
    assert Alert.objects.get(kind="feedback_loop").state == "resolved"


def test_metric_series_through_the_api(world):
    made = decide(world, "sup", [row(i, T0, "a", 0.9) for i in range(4)])
    Outcome.objects.bulk_create([Outcome(decision=d, label="a", observed_at=T0) for d in made])
    performance_job.run_system(world.supervised.id)
    r = api_session(world.operator).get("/api/v1/systems/sup/metrics?name=perf.accuracy,perf.outcomes")
    assert r.status_code == 200
    points = r.json()["results"]
    assert [(p["name"], p["value"]) for p in points] == [("perf.accuracy", 1.0), ("perf.outcomes", 4.0)]
    assert points[0]["t"].startswith("2024-01-01T00:00:00")
    everything = api_session(world.operator).get("/api/v1/systems/sup/metrics").json()["results"]
    assert everything
    assert not any(p["name"].startswith("_") for p in everything)  # no internal points
    bad = api_session(world.operator).get("/api/v1/systems/sup/metrics?since=yesterday")
    assert bad.status_code == 422


def test_once_a_run_started_past_the_overlap_an_idle_tick_recomputes_nothing(world):
    from dashboards import drift_job

    decide(world, "auto", [row(i, T0, "a", 0.8) for i in range(5)])
    assert performance_job.run_system(world.autonomous.id)["windows"] == 1
    # Straight after: the rows may still have companions committing late, so the window is read again.
    assert performance_job.run_system(world.autonomous.id)["windows"] == 1
    # Ten minutes later (the rows and the watermark moved back): this run started more than the
    # overlap after the watermark, so it is the last to look at those rows ...
    age(10 / 60)
    name = f"{performance_job.WATERMARK}.time.3600"
    mark = drift_job.read_watermark(world.autonomous.id, name)
    drift_job.write_watermark(world.autonomous.id, name, mark - timedelta(minutes=10))
    drift_job.write_watermark(world.autonomous.id, f"{name}.ran", mark - timedelta(minutes=10))
    assert performance_job.run_system(world.autonomous.id)["windows"] == 1
    # ... and the next tick, with nothing new, has nothing to do.
    assert performance_job.run_system(world.autonomous.id)["windows"] == 0
    decide(world, "auto", [row(i, T0 + HOUR, "a", 0.8) for i in range(5)])  # something new: its window only
    assert performance_job.run_system(world.autonomous.id)["windows"] == 1
