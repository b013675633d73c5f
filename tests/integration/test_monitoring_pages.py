"""The monitoring pages' data (what the overview and a system page draw, and re-read on a push or
a reconnect): per-system drift and alerts, time ranges, roles, escaping."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from dashboards.models import Alert, DriftResult, MetricPoint
from tests.conftest import World
from tests.integration.test_pages import post

XSS = "<script>alert(1)</script>"


def drift_row(world: World, feature: str, start, severity: float | None, drifted: bool | None) -> DriftResult:
    return DriftResult.objects.create(
        system=world.supervised, window_start=start, window_end=start + timedelta(hours=1), feature=feature,
        method="psi", statistic=severity and severity * 0.2, threshold=0.2, p_value=None, drifted=drifted,
        primary=True, rows=500, severity=severity)


def test_the_overview_shows_each_systems_worst_drift_of_its_newest_window_and_newest_open_alert(world):
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    drift_row(world, "tempo", now - timedelta(hours=2), 5.0, True)  # older window: not the newest
    drift_row(world, "tempo", now - timedelta(hours=1), 0.4, False)
    drift_row(world, "hour", now - timedelta(hours=1), 1.7, True)
    Alert.objects.create(system=world.supervised, kind="drift", subject="hour", message="hour drifted",
                         opened_at=now - timedelta(minutes=5))
    Alert.objects.create(system=world.supervised, kind="drift", subject="old", message="resolved one",
                         opened_at=now, state=Alert.State.RESOLVED)
    state = world.person(world.operator).get("/overview/data.json").json()
    sup = next(s for s in state["systems"] if s["slug"] == "sup")
    assert (sup["worst_drift"]["feature"], sup["worst_drift"]["severity"], sup["worst_drift"]["drifted"]) == (
        "hour", 1.7, True)
    assert sup["alert"]["message"] == "hour drifted"
    crit = next(s for s in state["systems"] if s["slug"] == "crit")
    assert (crit["worst_drift"], crit["alert"]) == (None, None)


def test_the_overview_chart_covers_the_chosen_range_in_minutes_or_hours(world):
    now = timezone.now().replace(second=0, microsecond=0)
    for minutes_ago, n in ((5, 2.0), (50, 3.0), (3 * 60, 7.0), (3 * 60 + 1, 1.0), (3 * 24 * 60, 4.0)):
        MetricPoint.objects.create(system=world.supervised, name="decisions.auto",
                                   t=now - timedelta(minutes=minutes_ago), value=n)
    c = world.person(world.editor)
    short = c.get("/overview/data.json?range=15m").json()
    assert (short["range"], short["bucket"], [p["value"] for p in short["series"]]) == ("15m", "minute", [2.0])
    hour = c.get("/overview/data.json?range=1h").json()
    assert [p["value"] for p in hour["series"]] == [3.0, 2.0]
    week = c.get("/overview/data.json?range=7d").json()
    assert week["bucket"] == "hour"
    assert sum(p["value"] for p in week["series"]) == 17.0
    assert all(p["t"].endswith(":00:00+00:00") for p in week["series"])  # whole hours
    assert c.get("/overview/data.json?range=forever").json()["range"] == "1h"  # an unknown range: the default
    page = c.get("/?range=24h").content.decode()
    assert 'data-range="24h" aria-pressed="true"' in page


def test_a_system_page_draws_stored_results_and_escapes_what_users_wrote(world):
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    drift_row(world, "tempo", now - timedelta(hours=1), 2.5, True)
    drift_row(world, XSS, now - timedelta(hours=1), None, None)
    MetricPoint.objects.create(system=world.supervised, name="perf.accuracy", t=now - timedelta(hours=1), value=0.9)
    Alert.objects.create(system=world.supervised, kind="drift", subject=XSS, message=f"{XSS} drifted", opened_at=now)
    c = world.person(world.operator)
    data = c.get("/monitor/sup/data.json").json()
    assert data["drift"]["features"] == [XSS, "tempo"]
    tempo = data["drift"]["cells"][1][0]
    assert (tempo["severity"], tempo["method"], tempo["drifted"]) == (2.5, "psi", True)
    assert data["drift"]["cells"][0][0]["severity"] is None
    assert data["series"]["perf.accuracy"] == [[(now - timedelta(hours=1)).isoformat(), 0.9]]
    assert data["alerts"][0]["message"] == f"{XSS} drifted"
    page = c.get("/monitor/sup/").content.decode()
    assert XSS not in page  # the page's state is JSON with "<" escaped; the script writes text only
    assert c.get("/monitor/nope/").status_code == 404


def test_every_role_reads_the_monitoring_pages_and_nobody_else(world):
    for user in (world.operator, world.editor, world.admin):
        c = world.person(user)
        assert c.get("/monitor/sup/").status_code == 200
        assert c.get("/monitor/sup/data.json").status_code == 200
    assert world.person(world.nobody).get("/monitor/sup/").status_code == 403
    assert world.person(world.nobody).get("/monitor/sup/data.json").status_code == 403
    from django.test import Client

    assert Client().get("/monitor/sup/")["Location"].startswith("/login/")


def upload(c, name: str, content: bytes, json_reply: bool = False, **extra):
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = {"op": "upload", "ref-file": SimpleUploadedFile(name, content), **extra}
    headers = {"HTTP_ACCEPT": "application/json"} if json_reply else {}
    return post(c, "/monitor/sup/reference/", data, **headers)


def test_an_admin_uploads_a_reference_from_the_page(world):
    from dashboards.models import Reference

    c = world.person(world.admin)
    r = upload(c, "ref.csv", b"tempo,genre\n120,jazz\n95,rock\n", **{"ref-categorical": "", "ref-note": "feb"})
    assert r.status_code == 302
    assert r["Location"] == "/monitor/sup/#reference"
    ref = Reference.objects.get()
    assert (ref.rows, ref.columns, ref.note, ref.created_by) == (2, ["tempo", "genre"], "feb", world.admin)
    page = c.get("/monitor/sup/").content.decode()
    assert "2 rows from an upload" in page
    assert "reference stored: 2 rows, 2 columns" in page  # the message after the redirect
    r = upload(c, "ref.jsonl", b'{"tempo": 1}\n{"tempo": 2}\n', json_reply=True)  # the page's script
    assert r.status_code == 201
    assert r.json() == {"ok": True, "message": "reference stored: 2 rows, 1 columns",
                        "redirect": "/monitor/sup/#reference"}


def test_a_bad_upload_names_the_problem_and_changes_nothing(world):
    from dashboards.models import Reference

    c = world.person(world.admin)
    r = upload(c, "ref.csv", b"tempo\n120\nfast\n")
    assert r.status_code == 422
    assert "Line 3, column &#x27;tempo&#x27;" in r.content.decode()
    r = upload(c, "ref.xlsx", b"tempo\n1\n", json_reply=True)
    assert r.status_code == 422
    assert "neither CSV nor JSON lines" in r.json()["errors"][0]
    r = upload(c, "ref.csv", b"", json_reply=True)
    assert r.status_code == 422
    assert r.json()["errors"] == ["The file is empty: nothing to summarise."]
    r = upload(c, "ref.csv", "tempo\n\xe9\n".encode("latin-1"), json_reply=True)
    assert r.status_code == 422
    assert "UTF-8" in r.json()["errors"][0]
    assert not Reference.objects.exists()


def test_a_past_window_of_decisions_becomes_the_reference(world):
    from dashboards.models import Reference
    from tests.integration.test_drift_job import post as post_batch

    post_batch(world.client_for("sup"), "sup", [
        {"subject": f"u{i}", "features": {"tempo": 100 + i}, "prediction": {"output": "a", "confidence": 0.9},
         "occurred_at": f"2024-01-01T00:{i:02d}:00+00:00"} for i in range(10)])
    c = world.person(world.admin)
    bad = post(c, "/monitor/sup/reference/", {"op": "decisions", "window-since": "2024-01-01T01:00",
                                              "window-until": "2024-01-01T00:00"})
    assert bad.status_code == 422
    assert "Until must be after From." in bad.content.decode()
    r = post(c, "/monitor/sup/reference/", {"op": "decisions", "window-since": "2024-01-01T00:00",
                                            "window-until": "2024-01-01T00:05"})
    assert r.status_code == 302
    assert Reference.objects.get().rows == 5


def test_only_admins_change_the_reference(world):
    for user in (world.operator, world.editor, world.nobody):
        r = upload(world.person(user), "ref.csv", b"tempo\n1\n")
        assert r.status_code == 403
        assert "upload-form" not in world.person(user).get("/monitor/sup/").content.decode()
    c = world.person(world.admin)
    assert c.get("/monitor/sup/reference/").status_code == 405
    assert post(c, "/monitor/sup/reference/", {"op": "drop"}).status_code == 400
    assert c.post("/monitor/sup/reference/", {"op": "upload"}).status_code == 403  # no CSRF token


def test_an_admin_acknowledges_an_alert_on_the_system_page(world):
    from oversight.models import AuditEvent

    alert = Alert.objects.create(system=world.supervised, kind="drift", subject="tempo", message="tempo drifted",
                                 opened_at=timezone.now())
    url = f"/monitor/sup/alerts/{alert.public_id}/ack/"
    assert post(world.person(world.operator), url).status_code == 403
    admin = world.person(world.admin)
    r = post(admin, url, follow=True)
    assert r.redirect_chain[-1][0] == "/monitor/sup/#alerts"
    assert f"alert {alert.public_id} acknowledged (admin)" in r.content.decode()
    alert.refresh_from_db()
    assert alert.acked_by == world.admin
    assert AuditEvent.objects.filter(action="alert.ack", actor=world.admin).count() == 1
    again = post(admin, url, follow=True)  # the first acknowledgement is kept, not audited twice
    assert again.status_code == 200
    assert AuditEvent.objects.filter(action="alert.ack").count() == 1
    missing = post(admin, "/monitor/sup/alerts/alr_999999/ack/", follow=True)
    assert "no alert &#x27;alr_999999&#x27;" in missing.content.decode()
    data = admin.get("/monitor/sup/data.json").json()
    assert data["alerts"][0]["acked_by"] == "admin"
