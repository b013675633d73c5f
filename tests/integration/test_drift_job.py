"""The drift job (dashboards.drift_job): windows, stored results, alerts with hysteresis; the
monitoring API (drift results, run, jobs, alerts) from both sides of each role; one run on a real
Celery worker that pushes to a Channels group."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from scipy import stats  # type: ignore[import-untyped]

from dashboards import drift, drift_job
from dashboards.models import Alert, DriftResult, Reference
from oversight import events
from oversight.models import AuditEvent
from tests.conftest import api_session

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
FEATURES = ["x", "y", "color", "prediction.confidence"]
COLORS = np.array(["red", "green", "blue"])
COLOR_P = [0.5, 0.3, 0.2]


def sample(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, Any]:
    """``n`` rows laid out on each distribution's quantiles (then shuffled): a calm window is calm
    for sure, not by a seed's luck; ``shift`` moves x by that many standard deviations."""
    q = (np.arange(n) + 0.5) / n
    colors = np.repeat(COLORS, np.round(np.asarray(COLOR_P) * n).astype(int))[:n]
    colors = np.concatenate([colors, np.full(n - colors.size, COLORS[0])])
    return {
        "x": rng.permutation(stats.norm.ppf(q) + shift),
        "y": rng.permutation(5.0 + 2.0 * stats.norm.ppf(q)),
        "color": rng.permutation(colors),
        "prediction.confidence": rng.permutation(0.6 + 0.4 * q),
    }


def make_reference(system: Any, seed: int = 1) -> Reference:
    refs = drift.build_references(sample(np.random.default_rng(seed), 2000))
    return Reference.objects.create(
        system=system, source=Reference.Source.UPLOAD, rows=2000, columns=list(refs),
        summaries={k: r.to_dict() for k, r in refs.items()},
    )


def items(
    rng: np.random.Generator, n: int, start: datetime, span: timedelta, shift: float = 0.0
) -> list[dict[str, Any]]:
    s = sample(rng, n, shift)
    step = span / n
    return [
        {
            "subject": f"u{i}",
            "features": {"x": float(s["x"][i]), "y": float(s["y"][i]), "color": str(s["color"][i])},
            "prediction": {"output": {"label": "ok"}, "confidence": float(s["prediction.confidence"][i])},
            "occurred_at": (start + step * i).isoformat(),
        }
        for i in range(n)
    ]


def unbatch(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A pushed message as the page sees it: a batch is its messages, one by one."""
    return list(message["messages"]) if message.get("type") == "batch" else [message]


def post(client: Any, slug: str, batch: list[dict[str, Any]]) -> None:
    for i in range(0, len(batch), 1000):
        r = client.post(f"/api/v1/systems/{slug}/decisions/batch", {"items": batch[i : i + 1000]},
                        content_type="application/json")
        assert r.status_code == 200, r.content
        assert all("id" in x for x in r.json()["results"]), r.json()


def stored(system: Any) -> list[tuple[Any, ...]]:
    return list(
        DriftResult.objects.filter(system=system)
        .order_by("window_start", "feature", "method")
        .values_list("window_start", "window_end", "feature", "method", "statistic", "threshold", "p_value",
                     "drifted", "primary", "rows")
    )


def drifted(system: Any) -> set[tuple[datetime, str]]:
    return set(DriftResult.objects.filter(system=system, primary=True, drifted=True)
               .values_list("window_start", "feature"))


PER_WINDOW = 3 * 4 + 2  # three numeric columns × four methods, one categorical × two


def test_shifted_window_is_drifted_and_results_are_replaced_on_rerun(world, monkeypatch):
    make_reference(world.supervised)
    rng = np.random.default_rng(7)
    post(world.client_for("sup"), "sup", items(rng, 300, T0, HOUR) + items(rng, 300, T0 + HOUR, HOUR, shift=1.0))

    summary = drift_job.run_system(world.supervised.id)
    assert summary["windows"] == 2
    assert summary["results"] == 2 * PER_WINDOW
    assert summary["full"]
    assert drifted(world.supervised) == {(T0 + HOUR, "x")}
    primaries = DriftResult.objects.filter(system=world.supervised, primary=True)
    assert {(r.feature, r.method) for r in primaries} == {
        ("x", "ks"), ("y", "ks"), ("prediction.confidence", "ks"), ("color", "chi2")
    }
    assert all(r.drifted is not None and r.rows == 300 for r in primaries)
    w = DriftResult.objects.filter(system=world.supervised, window_start=T0).first()
    assert w is not None
    assert w.window_end == T0 + HOUR
    first = stored(world.supervised)

    again = drift_job.run_system(world.supervised.id)  # same decisions (inside the overlap): same rows
    assert not again["full"]
    assert stored(world.supervised) == first
    assert DriftResult.objects.filter(system=world.supervised).count() == 2 * PER_WINDOW

    # A backfilled decision lands in its own (old) window, the only one computed past the
    # watermark (no overlap here: every decision of this test was made seconds ago).
    monkeypatch.setattr(drift_job, "OVERLAP", timedelta(0))
    post(world.client_for("sup"), "sup", items(rng, 5, T0 - 24 * HOUR, HOUR))
    third = drift_job.run_system(world.supervised.id)
    assert third["windows"] == 1
    assert drift_job.run_system(world.supervised.id)["windows"] == 0
    old = DriftResult.objects.filter(system=world.supervised, window_start=T0 - 24 * HOUR)
    assert old.count() == PER_WINDOW
    assert all(r.drifted is None for r in old)
    assert drifted(world.supervised) == {(T0 + HOUR, "x")}


def test_no_reference_means_nothing_computed(world):
    post(world.client_for("sup"), "sup", items(np.random.default_rng(1), 10, T0, HOUR))
    assert drift_job.run_system(world.supervised.id)["skipped"] == "no reference"
    assert not DriftResult.objects.exists()


def test_count_windows(world, monkeypatch):
    make_reference(world.supervised)
    rng = np.random.default_rng(11)
    sup = world.client_for("sup")
    post(sup, "sup", items(rng, 300, T0, HOUR) + items(rng, 300, T0 + HOUR, HOUR, shift=1.0))
    drift_job.run_system(world.supervised.id)  # time windows first: replaced when the policy changes

    admin = api_session(world.admin)
    r = admin.patch("/api/v1/systems/sup", {"window": {"kind": "count", "size": 200}, "reason": "count windows"},
                    content_type="application/json")
    assert r.status_code == 200, r.content
    world.supervised.refresh_from_db()

    summary = drift_job.run_system(world.supervised.id)
    assert summary["full"]
    assert summary["windows"] == 3
    assert summary["window"] == {"kind": "count", "size": 200}
    starts = sorted(set(DriftResult.objects.filter(system=world.supervised).values_list("window_start", flat=True)))
    assert len(starts) == 3
    assert starts[0] == T0
    assert DriftResult.objects.filter(system=world.supervised).count() == 3 * PER_WINDOW
    assert all(r.rows == 200 for r in DriftResult.objects.filter(system=world.supervised, primary=True))
    found = drifted(world.supervised)
    assert (starts[0], "x") not in found
    assert (starts[2], "x") in found
    assert {f for _, f in found} == {"x"}

    monkeypatch.setattr(drift_job, "OVERLAP", timedelta(0))  # only what came after the watermark
    post(sup, "sup", items(rng, 100, T0 + 2 * HOUR, HOUR, shift=1.0))  # a tail of 100: no new window yet
    assert drift_job.run_system(world.supervised.id)["windows"] == 0
    post(sup, "sup", items(rng, 100, T0 + 3 * HOUR, HOUR, shift=1.0))
    assert drift_job.run_system(world.supervised.id)["windows"] == 1
    assert DriftResult.objects.filter(system=world.supervised).count() == 4 * PER_WINDOW

    # Backfill shifts every later window by its size: all recomputed, none left duplicated.
    post(sup, "sup", items(rng, 200, T0 - 48 * HOUR, HOUR))
    assert drift_job.run_system(world.supervised.id)["windows"] == 5
    rows = DriftResult.objects.filter(system=world.supervised)
    assert rows.count() == 5 * PER_WINDOW
    assert rows.order_by("window_start").first().window_start == T0 - 48 * HOUR  # type: ignore[union-attr]


def test_alert_opens_once_and_resolves_after_calm_windows(world, django_capture_on_commit_callbacks, monkeypatch):
    pushed: list[tuple[list[str], dict[str, Any]]] = []
    monkeypatch.setattr(events, "send_now", lambda groups, message: pushed.append((groups, message)))
    make_reference(world.supervised)
    rng = np.random.default_rng(3)
    sup = world.client_for("sup")
    open_alerts = Alert.objects.filter(system=world.supervised, kind="drift", state="open")

    def window(i: int, shift: float) -> dict[str, Any]:
        post(sup, "sup", items(rng, 200, T0 + i * HOUR, HOUR, shift=shift))
        with django_capture_on_commit_callbacks(execute=True):
            return drift_job.run_system(world.supervised.id)

    s = window(0, 1.5)
    assert s["alerts_opened"] == 1
    assert open_alerts.get().subject == "x"
    assert window(1, 1.5)["alerts_opened"] == 0
    assert open_alerts.count() == 1
    s = window(2, 0.0)
    assert s["alerts_resolved"] == 0
    assert open_alerts.count() == 1
    s = window(3, 0.0)
    assert s["alerts_resolved"] == 1
    assert not open_alerts.exists()
    alert = Alert.objects.get(system=world.supervised)
    assert alert.state == "resolved"
    assert alert.resolved_at is not None
    assert AuditEvent.objects.filter(action="alert.open", target="x").count() == 1
    assert AuditEvent.objects.filter(action="alert.resolve", target="x").count() == 1
    window(4, 0.0)
    assert Alert.objects.filter(system=world.supervised).count() == 1  # nothing new

    pushed = [(g, m) for g, batch in pushed for m in unbatch(batch)]
    kinds = [m["type"] for _, m in pushed]
    assert kinds.count("alert") == 2
    drift_msgs = [m for _, m in pushed if m["type"] == "drift"]
    assert {"system", "feature", "method", "statistic", "threshold", "p_value", "drifted", "window_start",
            "window_end"} <= set(drift_msgs[0])
    assert any(m["feature"] == "x" and m["drifted"] for m in drift_msgs)
    assert all(g == [events.system_group("sup"), events.OVERVIEW_GROUP] for g, _ in pushed)


def test_flapping_drift_keeps_one_alert(world, django_capture_on_commit_callbacks):
    make_reference(world.supervised)
    rng = np.random.default_rng(5)
    sup = world.client_for("sup")
    for i, shift in enumerate([1.5, 0.0, 1.5, 0.0, 1.5]):
        post(sup, "sup", items(rng, 200, T0 + i * HOUR, HOUR, shift=shift))
        with django_capture_on_commit_callbacks(execute=False):
            drift_job.run_system(world.supervised.id)
        assert Alert.objects.filter(system=world.supervised).count() == 1
        assert Alert.objects.get(system=world.supervised).state == "open"


# --- the API ---------------------------------------------------------------------------------------


def test_drift_api_roles_and_paging(world):
    make_reference(world.supervised)
    rng = np.random.default_rng(7)
    post(world.client_for("sup"), "sup", items(rng, 300, T0, HOUR) + items(rng, 300, T0 + HOUR, HOUR, shift=1.0))
    drift_job.run_system(world.supervised.id)

    r = world.client_for("sup").get("/api/v1/systems/sup/drift")
    assert r.status_code == 200
    body = r.json()
    assert len(body["results"]) == 2 * PER_WINDOW
    assert body["next_offset"] is None
    first = body["results"][0]
    assert set(first) >= {"window_start", "window_end", "feature", "method", "statistic", "threshold", "p_value",
                          "drifted", "primary", "rows"}
    keys = [(x["window_start"], x["feature"], x["method"]) for x in body["results"]]
    assert keys == sorted(keys)

    assert world.client_for("auto").get("/api/v1/systems/sup/drift").status_code == 404
    op = api_session(world.operator)
    r = op.get("/api/v1/systems/sup/drift", {"since": (T0 + HOUR).isoformat(), "primary": "true"})
    assert r.status_code == 200
    got = r.json()["results"]
    assert len(got) == 4
    assert {x["feature"] for x in got if x["drifted"]} == {"x"}
    r = op.get("/api/v1/systems/sup/drift", {"until": (T0 + HOUR).isoformat(), "limit": 5})
    assert len(r.json()["results"]) == 5
    assert r.json()["next_offset"] == 5
    r = op.get("/api/v1/systems/sup/drift", {"limit": 5, "offset": 10})
    assert [x["method"] for x in r.json()["results"]] == [k[2] for k in keys[10:15]]
    assert op.get("/api/v1/systems/sup/drift", {"limit": 0}).status_code == 422
    assert api_session(world.nobody).get("/api/v1/systems/sup/drift").status_code == 403
    assert op.get("/api/v1/systems/nope/drift").status_code == 404


def test_run_and_jobs_api(world, django_capture_on_commit_callbacks):
    op = api_session(world.operator)
    assert op.post("/api/v1/systems/sup/monitoring/run").status_code == 403
    assert world.client_for("sup").post("/api/v1/systems/sup/monitoring/run").status_code == 403
    admin = api_session(world.admin)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        r = admin.post("/api/v1/systems/sup/monitoring/run")
    assert r.status_code == 202, r.content
    job = r.json()["job"]
    uuid.UUID(job)
    assert len(callbacks) == 1  # enqueued only once the request's transaction commits
    assert AuditEvent.objects.filter(action="monitoring.run", target=job).exists()
    assert admin.post("/api/v1/systems/nope/monitoring/run").status_code == 404

    r = op.get(f"/api/v1/jobs/{uuid.uuid4()}")
    assert r.status_code == 200
    assert r.json()["state"] == "queued"
    assert op.get("/api/v1/jobs/not-a-job").status_code == 404
    assert world.client_for("sup").get(f"/api/v1/jobs/{job}").status_code == 403


def test_alerts_api(world, django_capture_on_commit_callbacks):
    make_reference(world.supervised)
    rng = np.random.default_rng(3)
    post(world.client_for("sup"), "sup", items(rng, 200, T0, HOUR, shift=1.5))
    drift_job.run_system(world.supervised.id)
    alert = Alert.objects.get(system=world.supervised)

    op = api_session(world.operator)
    r = op.get("/api/v1/alerts", {"state": "open"})
    assert r.status_code == 200
    assert [(a["id"], a["subject"], a["system"]) for a in r.json()["results"]] == [(alert.public_id, "x", "sup")]
    assert op.get("/api/v1/alerts", {"state": "resolved"}).json()["results"] == []
    assert op.get("/api/v1/alerts", {"system": "auto"}).json()["results"] == []
    assert op.get("/api/v1/alerts", {"state": "bogus"}).status_code == 422
    assert world.client_for("sup").get("/api/v1/alerts").status_code == 403

    assert op.post(f"/api/v1/alerts/{alert.public_id}/ack").status_code == 403
    admin = api_session(world.admin)
    with django_capture_on_commit_callbacks(execute=False):
        r = admin.post(f"/api/v1/alerts/{alert.public_id}/ack")
    assert r.status_code == 200
    assert r.json()["acked_by"] == "admin"
    first_at = r.json()["acked_at"]
    other = get_admin2(world)
    r = api_session(other).post(f"/api/v1/alerts/{alert.id}/ack")
    assert r.status_code == 200
    assert r.json()["acked_by"] == "admin"
    assert r.json()["acked_at"] == first_at
    assert AuditEvent.objects.filter(action="alert.ack").count() == 1
    assert admin.post("/api/v1/alerts/alr_999999/ack").status_code == 404
    assert admin.post("/api/v1/alerts/nonsense/ack").status_code == 404


def get_admin2(world: Any) -> Any:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    u = get_user_model().objects.create_user("admin2", password=world.password)
    u.groups.add(Group.objects.get(name="admin"))
    return u


# --- on a real worker ------------------------------------------------------------------------------


async def _run_and_listen(group: str, system_id: int, timeout: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    from dashboards.tasks import compute_drift

    try:
        result = await asyncio.to_thread(lambda: compute_drift.delay(system_id).get(timeout=timeout))
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while not any(m["type"] == "drift" for m in messages):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            messages += unbatch((await asyncio.wait_for(layer.receive(channel), timeout=left))["message"])
        return result, messages
    finally:
        await layer.group_discard(group, channel)


@pytest.mark.django_db(transaction=True)
def test_worker_computes_drift_and_pushes_it(tworld, celery_worker_proc):
    make_reference(tworld.supervised)
    rng = np.random.default_rng(7)
    post(tworld.client_for("sup"), "sup", items(rng, 300, T0, HOUR) + items(rng, 300, T0 + HOUR, HOUR, shift=1.0))

    result, messages = async_to_sync(_run_and_listen)(events.system_group("sup"), tworld.supervised.id, 60)

    assert result["windows"] == 2
    assert result["results"] == 2 * PER_WINDOW
    assert drifted(tworld.supervised) == {(T0 + HOUR, "x")}
    drift_msgs = [m for m in messages if m["type"] == "drift"]
    assert drift_msgs
    assert drift_msgs[0]["system"] == "sup"
