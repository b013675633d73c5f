"""Systems and policies (API and policies-as-code), API keys from the command line, and the
append-only audit log."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from oversight import actions
from oversight.models import AISystem, ApiKey, AuditEvent, PolicyVersion
from tests.asgiclient import ApiClient
from tests.conftest import api_session, decision_body


def send(client: ApiClient, method: str, url: str, data: Any) -> Any:
    return getattr(client, method)(url, json.dumps(data), content_type="application/json")


def admin_session(world: Any) -> ApiClient:
    return api_session(world.admin)


# --- the API ----------------------------------------------------------------------------------


def test_create_system_records_version_1_and_an_audit_event(world):
    r = send(admin_session(world), "post", "/api/v1/systems", {
        "slug": "fraud", "name": "Fraud scorer", "level": 1, "confidence_threshold": 0.9,
        "audit_sample_rate": 0.05, "review_sla_s": 120, "fallback": {"decision": "hold"},
    })
    assert r.status_code == 201
    body = r.json()
    assert (body["slug"], body["level"], body["policy_version"], body["killed"]) == ("fraud", 1, 1, False)
    assert body["fallback"] == {"decision": "hold"}
    system = AISystem.objects.get(slug="fraud")
    assert (system.name, system.confidence_threshold, system.audit_sample_rate, system.review_sla_s) == (
        "Fraud scorer", 0.9, 0.05, 120)
    version = PolicyVersion.objects.get(system=system)
    assert (version.version, version.created_by_id) == (1, world.admin.id)
    assert version.policy == system.policy_dict()
    event = AuditEvent.objects.get(action="system.create", target="fraud")
    assert (event.actor_id, event.actor_label, event.system_id, event.target) == (
        world.admin.id, "admin", system.id, "fraud")
    assert event.data["level"] == 1


def test_create_system_defaults(world):
    r = send(admin_session(world), "post", "/api/v1/systems", {"slug": "bare"})
    assert r.status_code == 201
    assert {k: r.json()[k] for k in ("name", "level", "confidence_threshold", "audit_sample_rate", "fallback")} == {
        "name": "bare", "level": 2, "confidence_threshold": 0.8, "audit_sample_rate": 0.0, "fallback": {}}


def test_patch_makes_a_new_policy_version_with_the_reason(world, django_capture_on_commit_callbacks):
    admin = admin_session(world)
    with django_capture_on_commit_callbacks(execute=True):
        r = send(admin, "patch", "/api/v1/systems/sup", {"confidence_threshold": 0.7, "level": 2,
                                                          "reason": "too many bad releases"})
    assert r.status_code == 200
    assert (r.json()["policy_version"], r.json()["confidence_threshold"]) == (2, 0.7)
    system = AISystem.objects.get(slug="sup")
    assert system.policy_version == 2
    assert list(PolicyVersion.objects.filter(system=system).values_list("version", flat=True)) == [2, 1]
    assert PolicyVersion.objects.get(system=system, version=1).policy["confidence_threshold"] == 0.6
    assert PolicyVersion.objects.get(system=system, version=2).policy["confidence_threshold"] == 0.7
    event = AuditEvent.objects.get(action="policy.change")
    assert (event.actor_id, event.reason, event.target) == (world.admin.id, "too many bad releases", "sup")
    assert event.data == {"version": 2, "changes": {"confidence_threshold": {"from": 0.6, "to": 0.7}}}

    # the gate applies the new threshold to the very next decision, and records the version
    made = world.client_for("sup").post("/api/v1/systems/sup/decisions", json.dumps(decision_body(0.65)),
                                        content_type="application/json").json()
    assert made["status"] == "pending_review"
    assert made["reasons"] == ["confidence 0.65 < threshold 0.70: a person decides"]


def test_patch_level_and_fallback_reach_the_gate(world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        r = send(admin_session(world), "patch", "/api/v1/systems/auto", {"level": 1, "fallback": ["x"],
                                                                                 "reason": "critical now"})
    assert r.json()["policy_version"] == 2
    made = world.client_for("auto").post("/api/v1/systems/auto/decisions", json.dumps(decision_body(0.99)),
                                         content_type="application/json").json()
    assert made["status"] == "pending_review"
    from oversight.models import Decision

    assert Decision.objects.get().policy_version == 2
    assert AISystem.objects.get(slug="auto").fallback == ["x"]


def test_patch_that_changes_nothing_makes_no_version(world):
    r = send(admin_session(world), "patch", "/api/v1/systems/sup", {"confidence_threshold": 0.6, "name": None})
    assert r.status_code == 200
    assert r.json()["policy_version"] == 1
    assert not AuditEvent.objects.filter(action="policy.change").exists()
    assert PolicyVersion.objects.filter(system__slug="sup").count() == 1


def test_patch_leaves_unsent_fields_alone(world):
    send(admin_session(world), "patch", "/api/v1/systems/sup", {"review_sla_s": 60, "reason": "faster"})
    system = AISystem.objects.get(slug="sup")
    assert (system.review_sla_s, system.confidence_threshold, system.fallback, system.level) == (
        60, 0.6, {"items": ["safe"]}, 2)


def test_every_change_is_a_version(world):
    admin = admin_session(world)
    for i, threshold in enumerate((0.5, 0.55, 0.7), start=2):
        assert send(admin, "patch", "/api/v1/systems/sup", {"confidence_threshold": threshold,
                                                                   "reason": "tuning"}).json()[
            "policy_version"] == i
    assert AuditEvent.objects.filter(action="policy.change", target="sup").count() == 3
    assert [v.policy["confidence_threshold"] for v in PolicyVersion.objects.filter(system__slug="sup")] == [
        0.7, 0.55, 0.5, 0.6]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"slug": "new", "level": 4}, "level"),
        ({"slug": "new", "level": 0}, "level"),
        ({"slug": "new", "level": "2"}, "level"),
        ({"slug": "new", "confidence_threshold": 1.5}, "confidence_threshold"),
        ({"slug": "new", "confidence_threshold": -0.1}, "confidence_threshold"),
        ({"slug": "new", "audit_sample_rate": 2}, "audit_sample_rate"),
        ({"slug": "new", "review_sla_s": 0}, "review_sla_s"),
        ({"slug": "new", "override_window_s": -1}, "override_window_s"),
        ({"slug": "Bad Slug"}, "slug"),
        ({"slug": "-leading-dash"}, "slug"),
        ({"slug": "ünïcode"}, "slug"),
        ({"slug": ""}, "slug"),
        ({"slug": "s" * 65}, "slug"),
        ({"slug": "new", "name": "n" * 201}, "name"),
    ],
)
def test_invalid_new_systems_are_refused(world, payload, field):
    r = send(admin_session(world), "post", "/api/v1/systems", payload)
    assert r.status_code == 422
    assert (r.json()["error"]["code"], r.json()["error"]["field"]) == ("invalid", field)
    assert AISystem.objects.count() == 3
    assert not AuditEvent.objects.filter(action="system.create").exclude(actor=None).exists()


def test_duplicate_slug_is_a_conflict(world):
    r = send(admin_session(world), "post", "/api/v1/systems", {"slug": "sup", "level": 3})
    assert r.status_code == 409
    assert r.json()["error"] == {"code": "conflict", "message": "a system with slug 'sup' already exists",
                                 "field": "slug"}
    assert AISystem.objects.get(slug="sup").level == 2


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"level": 4}, "level"), ({"confidence_threshold": 1.5}, "confidence_threshold"),
     ({"audit_sample_rate": -1}, "audit_sample_rate"), ({"fallback": None}, "fallback")],
)
def test_invalid_policy_changes_are_refused(world, payload, field):
    r = send(admin_session(world), "patch", "/api/v1/systems/sup", payload)
    assert (r.status_code, r.json()["error"]["field"]) == (422, field)
    assert AISystem.objects.get(slug="sup").policy_version == 1
    assert not AuditEvent.objects.filter(action="policy.change").exists()


# --- the audit log is append-only -------------------------------------------------------------


def an_event(world: Any) -> AuditEvent:
    return actions.audit.record(world.admin, "test.event", target="x", reason="because")


def test_audit_event_cannot_be_changed_through_the_orm(world):
    event = an_event(world)
    event.reason = "rewritten"
    with pytest.raises(ValueError, match="append-only"):
        event.save()
    with pytest.raises(ValueError, match="append-only"):
        event.delete()
    assert AuditEvent.objects.get(pk=event.pk).reason == "because"


def in_savepoint(write: Any) -> None:
    with transaction.atomic():  # the failed statement rolls back to here; the test goes on
        write()


@pytest.mark.parametrize("bulk", ["update", "delete"])
def test_audit_event_bulk_writes_are_refused_by_the_database(world, bulk):
    event = an_event(world)
    qs = AuditEvent.objects.filter(pk=event.pk)
    write = (lambda: qs.update(reason="rewritten")) if bulk == "update" else qs.delete
    with pytest.raises(DatabaseError, match="append-only"):
        in_savepoint(write)
    assert AuditEvent.objects.get(pk=event.pk).reason == "because"


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE oversight_auditevent SET reason = 'rewritten' WHERE id = %s",
        "UPDATE oversight_auditevent SET actor_label = 'someone else' WHERE id = %s",
        "DELETE FROM oversight_auditevent WHERE id = %s",
    ],
)
def test_audit_event_raw_sql_is_refused_by_a_trigger(world, sql):
    event = an_event(world)

    def raw() -> None:
        with connection.cursor() as cur:
            cur.execute(sql, [event.pk])

    with pytest.raises(DatabaseError, match=r"audit events are append-only \((UPDATE|DELETE) refused\)"):
        in_savepoint(raw)
    assert AuditEvent.objects.filter(pk=event.pk, reason="because", actor_label="admin").exists()


def test_audit_events_can_still_be_added(world):
    before = AuditEvent.objects.count()
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO oversight_auditevent (actor_label, action, target, reason, data, created_at) "
            "VALUES ('script', 'test.insert', '', '', '{}', now())"
        )
    assert AuditEvent.objects.count() == before + 1


# --- manage.py create_api_key -----------------------------------------------------------------


def test_create_api_key_prints_the_key_once_and_stores_only_its_digest(world, django_capture_on_commit_callbacks):
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("create_api_key", "auto", "--name", "prod-recommender", stdout=out)
    text = out.getvalue()
    assert text.startswith("API key for auto (shown once, stored hashed):\n")
    secret = text.splitlines()[1].strip()
    assert secret.startswith("ovk_")
    assert len(secret) > 40
    key = ApiKey.objects.get(name="prod-recommender")
    assert key.system.slug == "auto"
    assert key.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.startswith(key.prefix)
    assert len(key.prefix) < len(secret) - 30
    stored_text = json.dumps([list(ApiKey.objects.values_list()), list(AuditEvent.objects.values_list())],
                             default=str)
    assert secret not in stored_text
    event = AuditEvent.objects.get(action="apikey.create", target=key.prefix)
    assert event.data == {"name": "prod-recommender"}
    # the key works at once, for its own system only
    client = ApiClient(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get("/api/v1/systems/auto").status_code == 200
    assert client.get("/api/v1/systems/sup").status_code == 404


def test_create_api_key_quiet_prints_only_the_key(world):
    out = io.StringIO()
    call_command("create_api_key", "sup", "--quiet", stdout=out)
    secret = out.getvalue().strip()
    assert "\n" not in secret
    assert ApiKey.objects.filter(digest=hashlib.sha256(secret.encode()).hexdigest(), system__slug="sup").exists()


def test_create_api_key_makes_a_new_key_each_time(world):
    a, b = io.StringIO(), io.StringIO()
    call_command("create_api_key", "sup", "--quiet", stdout=a)
    call_command("create_api_key", "sup", "--quiet", stdout=b)
    assert a.getvalue() != b.getvalue()
    assert ApiKey.objects.filter(system__slug="sup").count() == 3  # the world's one and these two


def test_create_api_key_for_an_unknown_system(world):
    with pytest.raises(CommandError, match=r"no system 'nope' \(known: auto, crit, sup\)"):
        call_command("create_api_key", "nope", stdout=io.StringIO())
    assert ApiKey.objects.count() == 3


# --- manage.py apply_policies -----------------------------------------------------------------


def apply(path: Path, *args: str) -> list[str]:
    out = io.StringIO()
    call_command("apply_policies", str(path), *args, stdout=out)
    return out.getvalue().splitlines()


YAML_V1 = """
systems:
  - slug: pricing
    name: Pricing model
    level: 2
    confidence_threshold: 0.75
    audit_sample_rate: 0.1
    fallback: {price: list}
  - slug: sup
    confidence_threshold: 0.65
"""


def test_apply_policies_from_yaml_creates_updates_and_reports_unchanged(world, tmp_path):
    path = tmp_path / "policies.yaml"
    path.write_text(YAML_V1)
    assert apply(path) == ["pricing: created (policy v1)", "sup: changed (policy v2)"]
    pricing = AISystem.objects.get(slug="pricing")
    assert (pricing.name, pricing.level, pricing.confidence_threshold, pricing.audit_sample_rate) == (
        "Pricing model", 2, 0.75, 0.1)
    assert pricing.fallback == {"price": "list"}
    sup = AISystem.objects.get(slug="sup")
    assert (sup.confidence_threshold, sup.name, sup.fallback) == (0.65, "Supervised", {"items": ["safe"]})

    assert apply(path) == ["pricing: unchanged (policy v1)", "sup: unchanged (policy v2)"]

    path.write_text(YAML_V1.replace("0.75", "0.8"))
    assert apply(path, "--reason", "quarterly review") == ["pricing: changed (policy v2)",
                                                            "sup: unchanged (policy v2)"]
    assert list(PolicyVersion.objects.filter(system__slug="pricing").values_list("version", flat=True)) == [2, 1]
    event = AuditEvent.objects.filter(action="policy.change", target="pricing").get()
    assert (event.reason, event.actor_id, event.actor_label) == ("quarterly review", None, "system")
    assert event.data["changes"] == {"confidence_threshold": {"from": 0.75, "to": 0.8}}
    first = AuditEvent.objects.get(action="system.create", target="pricing")
    assert first.reason == "apply_policies policies.yaml"


def test_apply_policies_from_json_list(world, tmp_path):
    path = tmp_path / "policies.json"
    path.write_text(json.dumps([{"slug": "triage", "level": 1, "review_sla_s": 300, "fallback": "escalate"},
                                {"slug": "auto", "level": 2}]))
    assert apply(path) == ["triage: created (policy v1)", "auto: changed (policy v2)"]
    assert AISystem.objects.get(slug="triage").fallback == "escalate"
    assert AISystem.objects.get(slug="auto").level == 2
    assert apply(path) == ["triage: unchanged (policy v1)", "auto: unchanged (policy v2)"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "systems:\n  - slug: new-one\n  - slug: other\n    level: 4\n",
         r"bad\.yaml: systems\[1\]\.level: Input should be 1, 2 or 3 \(nothing was applied\)"),
        ("bad.yaml", "- slug: new-one\n- slug: Bad Slug\n", r"systems\[1\]\.slug: String should match pattern"),
        ("bad.yaml", "- slug: new-one\n- {slug: x, confidence_threshold: 1.5}\n",
         r"systems\[1\]\.confidence_threshold: Input should be less than or equal to 1"),
        ("bad.yaml", "- slug: new-one\n- {slug: x, fallback: null}\n", r"systems\[1\]\.fallback: cannot be null"),
        ("bad.yaml", "- slug: new-one\n- just-a-slug\n", r"bad\.yaml: systems\[1\]: Input should be a valid dict"),
        ("bad.yaml", "- slug: new-one\n- {slug: x, level: true}\n", r"systems\[1\]\.level: expected a number"),
        ("bad.yaml", "", r"expected a list of systems"),
        ("bad.yaml", "- slug: new-one\n- name: no slug\n", r"systems\[1\]\.slug: Field required"),
        ("bad.yaml", "systems: [slug: new-one\n", r"bad\.yaml is not valid YAML"),
        ("bad.json", '[{"slug": "new-one"},]', r"bad\.json is not valid JSON"),
        ("bad.yaml", "slug: new-one\n", r"expected a list of systems"),
        ("bad.yaml", "systems: {slug: new-one}\n", r"expected a list of systems"),
        ("bad.json", '"new-one"', r"expected a list of systems"),
    ],
)
def test_invalid_policy_files_apply_nothing(world, tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CommandError, match=message):
        apply(path)
    assert not AISystem.objects.filter(slug="new-one").exists()
    assert AISystem.objects.count() == 3
    assert PolicyVersion.objects.count() == 3


def test_missing_policy_file(world, tmp_path):
    with pytest.raises(CommandError, match=r"cannot read .*missing\.yaml: No such file"):
        apply(tmp_path / "missing.yaml")


def test_a_policy_change_needs_a_reason(world):
    """Every change says why (it goes to the audit log): without one, a 422 on the reason and no new version."""
    r = send(admin_session(world), "patch", "/api/v1/systems/sup", {"confidence_threshold": 0.7, "reason": "  "})
    assert r.status_code == 422
    assert r.json()["error"] == {
        "code": "invalid", "field": "reason",
        "message": "say why: a reason is required to change a policy (it goes to the audit log)"}
    assert AISystem.objects.get(slug="sup").policy_version == 1
