"""Who may call what: every API endpoint checked from both sides (ARCHITECTURE.md, "The people")."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import redis
from django.conf import settings
from django.utils import timezone
from django.utils.crypto import get_random_string

from dashboards import drift
from dashboards.models import Alert, Reference
from oversight import actions, config, drills, editorial, hosted, rollout_actions
from oversight.models import AISystem, ApiKey, BlockedItem, KillSwitch, PersonalToken, Pick
from reviewqueue.models import ReviewItem
from tests.asgiclient import ApiClient
from tests.conftest import decision_body, second_admin


def send(client: ApiClient, method: str, url: str, data: Any = None, **extra: Any) -> Any:
    if method == "get":
        return client.get(url, **extra)
    body = b"" if data is None else json.dumps(data).encode()
    return getattr(client, method)(url, body, content_type="application/json", **extra)


def session(world: Any, user: Any) -> ApiClient:
    """A logged-in person whose unsafe requests carry the CSRF token, as the pages send it."""
    c = world.api_person(user)
    token = get_random_string(32)
    c.cookies[settings.CSRF_COOKIE_NAME] = token
    c.defaults["HTTP_X_CSRFTOKEN"] = token
    return c


@dataclass
class Setup:
    world: Any
    decision_id: str  # a pending decision of "sup"
    item_id: str  # its review item, claimed by the operator
    alert_id: str  # an open drift alert of "sup"
    theirs: str = ""  # a release request of crit's switch by another admin (admin may approve it)
    mine: str = ""  # a release request of a crit model's switch by admin (only admin may withdraw it)
    drill: str = ""  # a chaos drill running on "sup" (admin may stop it)
    rollout: str = ""  # a rollout running on "sup" (admin may advance, roll back or cancel it)

    def caller(self, who: str) -> ApiClient:
        w = self.world
        if who == "anonymous":
            return ApiClient()
        if who == "client":
            return w.client_for("sup")
        if who == "other_client":
            return w.client_for("auto")
        return session(w, getattr(w, who))


@pytest.fixture
def setup(world: Any) -> Setup:
    client = world.client_for("sup")
    made = send(client, "post", "/api/v1/systems/sup/decisions", decision_body(0.1)).json()
    assert made["status"] == "pending_review"
    item = ReviewItem.objects.get()
    summaries = {name: ref.to_dict() for name, ref in drift.build_references({"tempo": np.arange(200.0)}).items()}
    Reference.objects.create(system=world.supervised, source="upload", rows=200, columns=["tempo"], summaries=summaries)
    alert = Alert.objects.create(system=world.supervised, kind="drift", subject="tempo", message="tempo drifted",
                                 opened_at=timezone.now())
    return Setup(world, made["id"], item.public_id, alert.public_id)


def release_requests(s: Setup) -> None:
    """For the four-eyes endpoints: crit's switch released by another admin, a crit model's by admin."""
    second, admin = second_admin(), s.world.admin
    actions.set_killswitch(second, "system", True, "bad push", "crit")
    s.theirs = actions.set_killswitch(second, "system", False, "rolled back", "crit").public_id  # type: ignore[union-attr]
    actions.set_killswitch(admin, "model", True, "stale", "crit", "m1")
    s.mine = actions.set_killswitch(admin, "model", False, "fresh again", "crit", "m1").public_id  # type: ignore[union-attr]


# How each caller is answered, endpoint by endpoint: 2xx allowed; 401, 403, 404 refused.
# The review item is claimed by the operator, so resolve and release are theirs to do.
A, F, N, C = 401, 403, 404, 409
CALLERS = ("anonymous", "client", "other_client", "nobody", "operator", "editor", "admin")
MATRIX: dict[str, tuple[int, ...]] = {
    #                   anonymous client other_client nobody operator editor admin
    "list_systems":      (A, F, F, F, 200, 200, 200),
    "get_system":        (A, 200, N, F, 200, 200, 200),
    "create_system":     (A, F, F, F, F, F, 201),
    "patch_system":      (A, F, F, F, F, F, 200),
    "list_killswitches": (A, F, F, F, 200, 200, 200),
    "flip_killswitch":   (A, F, F, F, F, F, 200),
    "submit_decision":   (A, 201, N, F, F, F, F),
    "submit_batch":      (A, 200, N, F, F, F, F),
    "get_decision":      (A, 200, N, F, 200, 200, 200),
    "post_outcome":      (A, 201, N, F, F, F, F),
    # Admins review too; the item is the operator's, so an admin's resolve, release and heartbeat
    # are refused as anyone else's would be (409: claimed by operator), after the role check.
    "claim":             (A, F, F, F, 204, F, 204),
    "resolve":           (A, F, F, F, 200, F, C),
    "release":           (A, F, F, F, 200, F, C),
    "heartbeat":         (A, F, F, F, 200, F, C),
    # The setup's decision waits for a person: overriding it is refused after the role check.
    "override_decision": (A, F, F, F, C, F, C),
    "new_webhook_secret": (A, F, F, F, F, F, 201),
    "put_reference":     (A, F, F, F, F, F, 201),
    "reference_from_decisions": (A, F, F, F, F, F, 201),
    "get_reference":     (A, 200, N, F, 200, 200, 200),
    "list_drift":        (A, 200, N, F, 200, 200, 200),
    "list_metrics":      (A, 200, N, F, 200, 200, 200),
    "run_monitoring":    (A, F, F, F, F, F, 202),
    "get_job":           (A, F, F, F, 200, 200, 200),
    "list_alerts":       (A, F, F, F, 200, 200, 200),
    "ack_alert":         (A, F, F, F, F, F, 200),
    "list_breakers":     (A, 200, N, F, 200, 200, 200),
    "get_mitigation":    (A, 200, N, F, 200, 200, 200),
    "set_mitigation":    (A, F, F, F, F, F, 200),
    "set_breaker":       (A, F, F, F, F, F, 200),
    "list_releases":     (A, F, F, F, 200, 200, 200),
    "approve_release":   (A, F, F, F, F, F, 200),
    "withdraw_release":  (A, F, F, F, F, F, 200),
    "get_readiness":     (A, 200, N, F, 200, 200, 200),
    "put_readiness":     (A, F, F, F, F, F, 200),
    "start_drill":       (A, F, F, F, F, F, 201),
    "stop_drill":        (A, F, F, F, F, F, 200),
    "list_drills":       (A, F, F, F, 200, 200, 200),
    "list_models":       (A, 200, N, F, 200, 200, 200),
    "register_model":    (A, F, F, F, F, F, 201),
    "update_model":      (A, F, F, F, F, F, 200),
    "remove_model":      (A, F, F, F, F, F, 204),
    "list_picks":        (A, F, F, F, 200, 200, 200),
    "create_pick":       (A, F, F, F, F, 201, 201),
    "remove_pick":       (A, F, F, F, F, 200, 200),
    "preview_picks":     (A, F, F, F, 200, 200, 200),
    "list_blocked":      (A, F, F, F, 200, 200, 200),
    "create_block":      (A, F, F, F, F, 201, 201),
    "remove_block":      (A, F, F, F, F, 200, 200),
    "list_rollouts":     (A, 200, N, F, 200, 200, 200),
    "start_rollout":     (A, F, F, F, F, F, 201),
    "advance_rollout":   (A, F, F, F, F, F, 200),
    "rollback_rollout":  (A, F, F, F, F, F, 200),
    "cancel_rollout":    (A, F, F, F, F, F, 200),
    "get_bandit":        (A, 200, N, F, 200, 200, 200),
}


def call(endpoint: str, s: Setup, client: ApiClient) -> Any:
    """Make the request. The review item is claimed by the operator, so resolve/release are theirs."""
    d, i = s.decision_id, s.item_id
    requests: dict[str, tuple[str, str, Any]] = {
        "list_systems": ("get", "/api/v1/systems", None),
        "get_system": ("get", "/api/v1/systems/sup", None),
        "create_system": ("post", "/api/v1/systems", {"slug": "new-one", "level": 2}),
        "patch_system": ("patch", "/api/v1/systems/sup", {"confidence_threshold": 0.7, "reason": "tighter"}),
        "list_killswitches": ("get", "/api/v1/killswitches", None),
        "flip_killswitch": ("post", "/api/v1/killswitches",
                            {"scope": "system", "system": "sup", "engaged": True, "reason": "test"}),
        "submit_decision": ("post", "/api/v1/systems/sup/decisions", decision_body(0.9)),
        "submit_batch": ("post", "/api/v1/systems/sup/decisions/batch", {"items": [decision_body(0.9)]}),
        "get_decision": ("get", f"/api/v1/decisions/{d}", None),
        "post_outcome": ("post", f"/api/v1/decisions/{d}/outcome", {"reward": 0.5}),
        "claim": ("post", "/api/v1/review/claim", {}),
        "resolve": ("post", f"/api/v1/review/{i}/resolve", {"action": "approve", "note": "ok"}),
        "release": ("post", f"/api/v1/review/{i}/release", None),
        "heartbeat": ("post", f"/api/v1/review/{i}/heartbeat", None),
        "override_decision": ("post", f"/api/v1/decisions/{d}/override", {"output": {"items": ["t1"]}, "note": "n"}),
        "new_webhook_secret": ("post", "/api/v1/systems/sup/webhook-secret", None),
        "put_reference": ("put", "/api/v1/systems/sup/reference?format=csv", b"tempo\n1\n2\n"),
        "reference_from_decisions": ("post", "/api/v1/systems/sup/reference/from-decisions",
                                     {"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"}),
        "get_reference": ("get", "/api/v1/systems/sup/reference", None),
        "list_drift": ("get", "/api/v1/systems/sup/drift", None),
        "list_metrics": ("get", "/api/v1/systems/sup/metrics", None),
        "run_monitoring": ("post", "/api/v1/systems/sup/monitoring/run", None),
        "get_job": ("get", "/api/v1/jobs/6f1c2a7e-0d1b-4c5e-9a3f-2b8d7e6c5a41", None),  # queued: not run yet
        "list_alerts": ("get", "/api/v1/alerts", None),
        "ack_alert": ("post", f"/api/v1/alerts/{s.alert_id}/ack", None),
        "list_breakers": ("get", "/api/v1/systems/sup/breakers", None),
        "get_mitigation": ("get", "/api/v1/systems/sup/mitigation", None),
        "set_mitigation": ("post", "/api/v1/systems/sup/mitigation", {"active": True, "reason": "narrowing"}),
        "set_breaker": ("post", "/api/v1/systems/sup/breakers", {"state": "open", "reason": "test"}),
        "list_releases": ("get", "/api/v1/killswitches/releases", None),
        "approve_release": ("post", f"/api/v1/killswitches/releases/{s.theirs}/approve", None),
        "withdraw_release": ("post", f"/api/v1/killswitches/releases/{s.mine}/withdraw", None),
        "get_readiness": ("get", "/api/v1/systems/sup/readiness", None),
        "put_readiness": ("put", "/api/v1/systems/sup/readiness", {"answers": {
            "feedback": "no", "blast_radius": "one_reversible", "drift": "weeks", "stop": "drilled", "shared": "no"}}),
        "start_drill": ("post", "/api/v1/systems/sup/drills", {"kind": "error", "minutes": 5, "reason": "game day"}),
        "stop_drill": ("post", f"/api/v1/drills/{s.drill}/stop", None),
        "list_drills": ("get", "/api/v1/systems/sup/drills", None),
    }
    requests.update(_later_requests(endpoint, s))
    method, url, data = requests[endpoint]
    if isinstance(data, bytes):  # a raw upload
        return getattr(client, method)(url, data, content_type="text/csv")
    return send(client, method, url, data)


def _later_requests(endpoint: str, s: Setup) -> dict[str, tuple[str, str, Any]]:
    """Hosted models, editors' picks and rollouts (their objects are made in the test)."""
    live_pick = Pick.objects.filter(removed_at__isnull=True).order_by("id").first()
    live_block = BlockedItem.objects.filter(removed_at__isnull=True).order_by("id").first()
    return {
        "list_models": ("get", "/api/v1/systems/sup/models", None),
        "register_model": ("post", "/api/v1/systems/sup/models",
                           {"name": "v3", "kind": "python", "target": "tests.hosted_models:calm"}),
        "update_model": ("patch", "/api/v1/systems/sup/models/v1", {"weight": 3, "reason": "trust it more"}),
        "remove_model": ("delete", "/api/v1/systems/sup/models/v2", None),
        "list_picks": ("get", "/api/v1/systems/sup/picks", None),
        "create_pick": ("post", "/api/v1/systems/sup/picks", {"item": "t42", "context": {"activity": "sleep"}}),
        "remove_pick": ("delete", f"/api/v1/picks/{live_pick.public_id if live_pick else 'pck_0'}", None),
        "preview_picks": ("get", "/api/v1/systems/sup/picks/preview?context=activity=sleep", None),
        "list_blocked": ("get", "/api/v1/systems/sup/blocked", None),
        "create_block": ("post", "/api/v1/systems/sup/blocked", {"item": "t9"}),
        "remove_block": ("delete", f"/api/v1/blocked/{live_block.public_id if live_block else 'blk_0'}", None),
        "list_rollouts": ("get", "/api/v1/systems/sup/rollouts", None),
        "start_rollout": ("post", "/api/v1/systems/sup/rollouts", {"candidate": "v2", "baseline": "v1", "reason": "r"}),
        "advance_rollout": ("post", f"/api/v1/rollouts/{s.rollout}/advance", {"reason": "looks good"}),
        "rollback_rollout": ("post", f"/api/v1/rollouts/{s.rollout}/rollback", {"reason": "looks bad"}),
        "cancel_rollout": ("post", f"/api/v1/rollouts/{s.rollout}/cancel", {"reason": "not now"}),
        "get_bandit": ("get", "/api/v1/systems/sup/bandit", None),
    } if endpoint in LATER else {}


LATER = {"list_models", "register_model", "update_model", "remove_model", "list_picks", "create_pick", "remove_pick",
         "preview_picks", "list_blocked", "create_block", "remove_block", "list_rollouts", "start_rollout",
         "advance_rollout", "rollback_rollout", "cancel_rollout", "get_bandit"}


def _later_objects(endpoint: str, s: Setup) -> None:
    if endpoint not in LATER:
        return
    for name, target in (("v1", "recommend"), ("v2", "calm")):
        hosted.register(None, "sup", {"name": name, "kind": "python", "target": f"tests.hosted_models:{target}"})
    if endpoint in ("advance_rollout", "rollback_rollout", "cancel_rollout"):
        s.rollout = rollout_actions.start(s.world.admin, "sup", "v2", "v1", reason="try v2").public_id
    for _ in range(2):  # editor and admin each remove one
        editorial.create_pick(s.world.editor, "sup", item="t1")
        editorial.create_block(s.world.editor, "sup", item="t2")


@pytest.mark.parametrize("endpoint", list(MATRIX))
def test_every_endpoint_from_every_side(setup, endpoint):
    """Refusals change nothing, so one endpoint's callers can be tried in a row (the one allowed
    writer last: each row allows at most one caller to write)."""
    operator = session(setup.world, setup.world.operator)
    claimed = send(operator, "post", "/api/v1/review/claim", {})
    assert claimed.json()["id"] == setup.item_id  # the only item, now leased to the operator
    if endpoint in ("approve_release", "withdraw_release"):
        release_requests(setup)
    if endpoint == "stop_drill":
        setup.drill = drills.start(setup.world.admin, "sup", "error", 5, 1.0, "game day").public_id
    _later_objects(endpoint, setup)
    want = dict(zip(CALLERS, MATRIX[endpoint], strict=True))
    order = sorted(CALLERS, key=lambda who: want[who] < 400)  # refused callers first
    got: dict[str, int] = {}
    for who in order:
        r = call(endpoint, setup, setup.caller(who))
        got[who] = r.status_code
        if r.status_code >= 400:
            error = r.json()["error"]
            assert error["code"] == {401: "unauthenticated", 403: "forbidden", 404: "not_found",
                                     409: "conflict"}[r.status_code]
    assert got == want


def test_the_matrix_covers_every_api_operation():
    import oversight.urls  # noqa: F401 - adds the review router to the API
    from oversight.jsonapi import api

    operations = {
        op.view_func.__name__
        for _, router in api._routers
        for path_view in router.path_operations.values()
        for op in path_view.operations
    }
    assert operations == set(MATRIX)


def test_refusals_change_nothing(setup):
    w = setup.world
    for who in ("operator", "editor", "nobody", "client"):
        c = setup.caller(who)
        call("flip_killswitch", setup, c)
        call("patch_system", setup, c)
        call("create_system", setup, c)
    assert not KillSwitch.objects.exists()
    assert AISystem.objects.get(slug="sup").confidence_threshold == 0.6
    assert not AISystem.objects.filter(slug="new-one").exists()
    editor = session(w, w.editor)
    call("resolve", setup, editor)
    assert ReviewItem.objects.get().status == "open"


def test_client_key_reaches_only_its_own_system(world):
    key = world.client_for("sup")
    own = send(key, "get", "/api/v1/systems/sup")
    assert own.status_code == 200
    assert (own.json()["slug"], own.json()["level"], own.json()["confidence_threshold"]) == ("sup", 2, 0.6)
    for other in ("crit", "auto", "nope"):
        assert send(key, "get", f"/api/v1/systems/{other}").status_code == 404
    crit_decision = send(world.client_for("crit"), "post", "/api/v1/systems/crit/decisions", decision_body()).json()
    assert send(key, "get", f"/api/v1/decisions/{crit_decision['id']}").status_code == 404
    assert send(key, "post", f"/api/v1/decisions/{crit_decision['id']}/outcome", {"label": 1}).status_code == 404


def test_session_post_without_csrf_token_is_refused(setup):
    w = setup.world
    for user, endpoint in ((w.admin, "flip_killswitch"), (w.admin, "patch_system"), (w.operator, "claim")):
        bare = w.person(user)  # logged in, CSRF enforced, but no token sent
        r = call(endpoint, setup, bare)
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "csrf"
        assert "X-CSRFToken" in r.json()["error"]["message"]
    assert not KillSwitch.objects.exists()
    assert ReviewItem.objects.get().status == "open"


def test_session_with_a_wrong_csrf_token_is_refused(setup):
    admin = setup.world.api_person(setup.world.admin)
    admin.cookies[settings.CSRF_COOKIE_NAME] = get_random_string(32)
    r = send(
        admin, "post", "/api/v1/killswitches", {"scope": "global", "engaged": True, "reason": "x"},
        HTTP_X_CSRFTOKEN=get_random_string(32),
    )
    assert (r.status_code, r.json()["error"]["code"]) == (403, "csrf")
    assert not KillSwitch.objects.exists()


def test_session_get_needs_no_csrf_token(setup):
    bare = setup.world.api_person(setup.world.operator)
    assert send(bare, "get", "/api/v1/systems").status_code == 200


def token_client(user: Any) -> ApiClient:
    _, secret = actions.create_personal_token(user, "script")
    return ApiClient(HTTP_AUTHORIZATION=f"Token {secret}")


def test_personal_token_carries_the_persons_role_and_needs_no_csrf(setup):
    w = setup.world
    operator = token_client(w.operator)
    claimed = send(operator, "post", "/api/v1/review/claim", {})
    assert claimed.status_code == 200
    assert claimed.json()["claimed_by"] == "operator"
    assert call("flip_killswitch", setup, operator).status_code == 403
    assert call("patch_system", setup, operator).status_code == 403
    assert call("resolve", setup, operator).status_code == 200

    admin = token_client(w.admin)
    assert call("flip_killswitch", setup, admin).status_code == 200
    assert call("patch_system", setup, admin).status_code == 200
    assert call("claim", setup, admin).status_code == 204  # admins review too; the only item is the operator's
    assert KillSwitch.objects.get().changed_by_id == w.admin.id

    editor = token_client(w.editor)
    assert call("list_systems", setup, editor).status_code == 200
    assert call("flip_killswitch", setup, editor).status_code == 403

    nobody = token_client(w.nobody)
    assert call("list_systems", setup, nobody).status_code == 403


def test_personal_token_follows_role_changes(setup):
    from django.contrib.auth.models import Group

    w = setup.world
    _, secret = actions.create_personal_token(w.editor, "script")
    assert call("list_killswitches", setup, ApiClient(HTTP_AUTHORIZATION=f"Token {secret}")).status_code == 200
    assert call("flip_killswitch", setup, ApiClient(HTTP_AUTHORIZATION=f"Token {secret}")).status_code == 403
    w.editor.groups.add(Group.objects.get(name="admin"))
    assert call("flip_killswitch", setup, ApiClient(HTTP_AUTHORIZATION=f"Token {secret}")).status_code == 200


def test_only_the_digest_of_a_personal_token_is_stored(world):
    token, secret = actions.create_personal_token(world.operator, "laptop")
    assert secret.startswith("ovt_")
    stored = PersonalToken.objects.get(pk=token.pk)
    assert secret not in (stored.digest, stored.prefix, stored.name)
    assert secret.startswith(stored.prefix)


def test_revoked_personal_token_is_refused(setup):
    w = setup.world
    token, secret = actions.create_personal_token(w.admin, "script")
    client = ApiClient(HTTP_AUTHORIZATION=f"Token {secret}")
    assert call("list_systems", setup, client).status_code == 200
    actions.revoke_personal_token(w.admin, token)
    r = call("list_systems", setup, client)
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthenticated")
    assert call("flip_killswitch", setup, client).status_code == 401
    assert not KillSwitch.objects.exists()


def test_token_of_a_deactivated_person_is_refused(setup):
    w = setup.world
    _, secret = actions.create_personal_token(w.admin, "script")
    w.admin.is_active = False
    w.admin.save()
    assert call("list_systems", setup, ApiClient(HTTP_AUTHORIZATION=f"Token {secret}")).status_code == 401


def test_wrong_personal_token_is_refused(world):
    r = ApiClient(HTTP_AUTHORIZATION="Token ovt_made-up").get("/api/v1/systems")
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthenticated")


def test_revoked_api_key_is_refused_on_the_next_request(world, django_capture_on_commit_callbacks):
    client = world.client_for("sup")
    assert send(client, "post", "/api/v1/systems/sup/decisions", decision_body()).status_code == 201
    key = ApiKey.objects.get(system__slug="sup")
    with django_capture_on_commit_callbacks(execute=True):
        actions.revoke_api_key(world.admin, key)
    r = send(client, "post", "/api/v1/systems/sup/decisions", decision_body())
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthenticated")
    assert send(client, "get", "/api/v1/systems/sup").status_code == 401
    # the other systems' keys still work
    assert send(world.client_for("auto"), "get", "/api/v1/systems/auto").status_code == 200


def test_revoked_api_key_is_refused_even_when_redis_lost_the_epoch(world):
    client = world.client_for("sup")
    assert send(client, "get", "/api/v1/systems/sup").status_code == 200
    actions.revoke_api_key(world.admin, ApiKey.objects.get(system__slug="sup"))  # on-commit never runs here
    redis.Redis.from_url(settings.REDIS_URL).delete(settings.REDIS_PREFIX + config.EPOCH_KEY_SUFFIX)
    assert send(client, "get", "/api/v1/systems/sup").status_code == 401


def test_new_api_key_works_at_once_and_old_keys_keep_working(world, django_capture_on_commit_callbacks):
    assert send(world.client_for("sup"), "get", "/api/v1/systems/sup").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        _, secret = actions.create_api_key(world.admin, world.supervised, "second")
    fresh = ApiClient(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert send(fresh, "get", "/api/v1/systems/sup").status_code == 200
    assert send(fresh, "get", "/api/v1/systems/auto").status_code == 404
    assert send(world.client_for("sup"), "get", "/api/v1/systems/sup").status_code == 200
