"""Bad input always gets the API.md error shape with a 4xx, never a 5xx, and stores nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from oversight import actions
from oversight.models import AISystem, Decision, Outcome
from tests.asgiclient import ApiClient
from tests.conftest import decision_body

URL = "/api/v1/systems/sup/decisions"
BATCH = "/api/v1/systems/sup/decisions/batch"



def send(client: ApiClient, url: str, data: Any, method: str = "post", **extra: Any) -> Any:
    body = data if isinstance(data, bytes) else json.dumps(data)
    return getattr(client, method)(url, body, content_type="application/json", **extra)


def error_of(r: Any, status: int) -> dict[str, Any]:
    """The JSON error body, checked against API.md's shape."""
    assert r.status_code == status, r.content
    assert r["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "field"}
    assert isinstance(body["error"]["code"], str)
    assert body["error"]["code"]
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert body["error"]["field"] is None or isinstance(body["error"]["field"], str)
    return body["error"]


def test_malformed_json(world):
    err = error_of(send(world.client_for("sup"), URL, b'{"subject": "u-1",'), 400)
    assert err["code"] == "invalid_json"
    assert err["message"].startswith("the request body is not valid JSON")
    assert not Decision.objects.exists()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"prediction": {"output": 1, "confidence": NaN}}', "NaN is not a valid JSON number"),
        (b'{"prediction": {"output": 1, "confidence": Infinity}}', "Infinity is not a valid JSON number"),
        (b'{"features": {"tempo": -Infinity}}', "-Infinity is not a valid JSON number"),
        (b'{"features": {"tempo": 1e400}}', "the number 1e400 is too large"),
        (b'{"prediction": {"output": 1, "confidence": 1e400}}', "the number 1e400 is too large"),
    ],
)
def test_non_finite_numbers(world, raw, message):
    err = error_of(send(world.client_for("sup"), URL, raw), 400)
    assert err["code"] == "invalid_json"
    assert err["message"].startswith(message)
    assert not Decision.objects.exists()


def test_invalid_utf8(world):
    err = error_of(send(world.client_for("sup"), URL, b'{"subject": "caf\xe9"}'), 400)
    assert err["message"] == "the request body must be UTF-8 encoded JSON"


def test_deeply_nested_json(world):
    deep = b'{"context": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    err = error_of(send(world.client_for("sup"), URL, deep), 400)
    assert err["message"].startswith("the request body is nested too deeply")
    deep_enough_to_break_storage = b'{"context": {"x": ' + b"[" * 300 + b"]" * 300 + b"}}"
    error_of(send(world.client_for("sup"), URL, deep_enough_to_break_storage), 400)
    assert not Decision.objects.exists()


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"subject": 5}, "subject", "subject: Input should be a valid string"),
        ({"context": ["hour", 23]}, "context", "context: Input should be a valid dictionary"),
        ({"features": "tempo=171"}, "features", "features: Input should be a valid dictionary"),
        ({"prediction": "t1"}, "prediction", "prediction: Input should be a valid dictionary"),
        ({"prediction": {"output": 1, "confidence": "high"}}, "prediction.confidence",
         "prediction.confidence: expected a number, not the text 'high'"),
        ({"prediction": {"output": 1, "confidence": "0.9"}}, "prediction.confidence",  # a number in quotes
         "prediction.confidence: expected a number, not the text '0.9' (send it without quotes)"),
        ({"prediction": {"output": 1, "confidence": True}}, "prediction.confidence",
         "prediction.confidence: expected a number, not true/false"),
        ({"prediction": {"output": 1, "confidence": 1.01}}, "prediction.confidence",
         "prediction.confidence: Input should be less than or equal to 1"),
        ({"prediction": {"output": 1, "confidence": -0.01}}, "prediction.confidence",
         "prediction.confidence: Input should be greater than or equal to 0"),
        ({"prediction": {"output": 1, "votes": {"m": 1}}}, "prediction.votes",
         "prediction.votes: Input should be a valid list"),
        ({"prediction": {"output": 1, "votes": [{"output": 1}]}}, "prediction.votes.0.model",
         "prediction.votes.0.model: this field is required"),
        ({"prediction": {"output": 1, "model": ["m"]}}, "prediction.model", "prediction.model: Input should be"),
        ({"idempotency_key": 17}, "idempotency_key", "idempotency_key: Input should be a valid string"),
        ({"idempotency_key": ""}, "idempotency_key", "idempotency_key: String should have at least 1 character"),
        ({"idempotency_key": "k" * 201}, "idempotency_key", "idempotency_key: String should have at most 200"),
        ({"subject": "s" * 201}, "subject", "subject: String should have at most 200 characters"),
    ],
)
def test_wrong_types_and_values_name_the_field(world, body, field, message):
    err = error_of(send(world.client_for("sup"), URL, body), 422)
    assert (err["code"], err["field"]) == ("invalid", field)
    assert err["message"].startswith(message)
    assert not Decision.objects.exists()


def test_prediction_without_output(world):
    err = error_of(send(world.client_for("sup"), URL, {"prediction": {"confidence": 0.9, "model": "m"}}), 422)
    assert err == {"code": "invalid", "message": "prediction.output: this field is required",
                   "field": "prediction.output"}


def test_several_problems_are_counted(world):
    err = error_of(send(world.client_for("sup"), URL, {"subject": 1, "context": 2, "features": 3}), 422)
    assert err["message"].endswith("(and 2 more problems)")


@pytest.mark.parametrize(
    ("occurred_at", "message"),
    [
        ("2026-03-15T23:47:00", "occurred_at: needs a time zone, e.g. 2026-03-15T23:47:00Z"),
        ("yesterday", "occurred_at: Input should be a valid datetime"),
        ("9999-12-31T23:59:59-12:00", "occurred_at: is out of range"),
        ("0001-01-01T00:00:00+14:00", "occurred_at: is out of range"),
        ("1969-12-31T23:59:59Z", "occurred_at: is out of range"),
        ("2999-01-01T00:00:00Z", "occurred_at: is out of range"),
    ],
)
def test_occurred_at_must_be_a_storable_time_with_a_zone(world, occurred_at, message):
    err = error_of(send(world.client_for("sup"), URL, decision_body(0.9, occurred_at=occurred_at)), 422)
    assert err["field"] == "occurred_at"
    assert err["message"].startswith(message)
    assert not Decision.objects.exists()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"subject": "a\\u0000b"}', "subject"),
        (b'{"context": {"note": "a\\u0000b"}}', "context.note"),
        (b'{"context": {"a\\u0000": 1}}', "context"),
        (b'{"features": {"tags": ["ok", "bad\\u0000"]}}', "features.tags.1"),
        (b'{"context": {"note": "\\ud800"}}', "context.note"),
        (b'{"prediction": {"output": {"items": ["\\udfff"]}}}', "prediction.output.items.0"),
        (b'{"idempotency_key": "k\\u0000"}', "idempotency_key"),
    ],
)
def test_text_postgresql_cannot_store_is_refused_not_a_server_error(world, raw, field):
    err = error_of(send(world.client_for("sup"), URL, raw), 422)
    assert err["field"] == field
    assert "cannot be stored" in err["message"]
    assert not Decision.objects.exists()


def test_the_message_points_inside_the_field(world):
    err = error_of(send(world.client_for("sup"), URL, b'{"context": {"device": {"name": "x\\u0000"}}}'), 422)
    assert err["field"] == "context.device.name"
    assert err["message"] == (
        "context.device.name: contains a NUL character (\\u0000), which cannot be stored; remove it"
    )


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"decide"', b"42", b"null", b"true"])
def test_non_object_body(world, raw):
    err = error_of(send(world.client_for("sup"), URL, raw), 422)
    assert err["code"] == "invalid"
    assert not Decision.objects.exists()


def test_extra_unknown_fields_are_ignored(world):
    body = decision_body(0.9, future_field={"x": 1}, priority="high")
    body["prediction"]["explanation"] = "because"
    r = send(world.client_for("sup"), URL, body)
    assert r.status_code == 201
    assert "future_field" not in r.json()
    assert "explanation" not in Decision.objects.get().prediction


# --- identity -------------------------------------------------------------------------------


def test_missing_key(world):
    err = error_of(send(ApiClient(), URL, decision_body()), 401)
    assert err["code"] == "unauthenticated"
    assert "Authorization: Bearer" in err["message"]


@pytest.mark.parametrize(
    "header",
    ["Bearer ovk_not-a-real-key", "Bearer", "Bearer  ", "Basic dXNlcjpwYXNz", "ovk_raw-key-without-scheme"],
)
def test_wrong_key(world, header):
    err = error_of(send(ApiClient(HTTP_AUTHORIZATION=header), URL, decision_body()), 401)
    assert err["code"] == "unauthenticated"
    assert not Decision.objects.exists()


def test_unknown_system_and_another_systems_key_look_the_same(world):
    sup_key = world.client_for("sup")
    unknown = error_of(send(sup_key, "/api/v1/systems/nope/decisions", decision_body()), 404)
    other = error_of(send(sup_key, "/api/v1/systems/crit/decisions", decision_body()), 404)
    assert unknown["code"] == other["code"] == "not_found"
    assert unknown["message"] == "no system 'nope' for this API key"
    assert other["message"] == "no system 'crit' for this API key"
    error_of(send(sup_key, "/api/v1/systems/crit/decisions/batch", {"items": [decision_body()]}), 404)
    error_of(sup_key.get("/api/v1/systems/crit"), 404)
    assert not Decision.objects.exists()


# --- size limits ----------------------------------------------------------------------------


def test_body_over_the_size_limit(world, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    small = decision_body(0.9)
    assert send(world.client_for("sup"), URL, small).status_code == 201
    big = decision_body(0.9, context={"blob": "x" * 3000})
    err = error_of(send(world.client_for("sup"), URL, big), 413)
    assert err["code"] == "too_large"
    assert "2000 bytes" in err["message"]
    assert Decision.objects.count() == 1


def test_body_over_the_default_limit(world, settings):
    raw = json.dumps(decision_body(0.9, context={"blob": "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE})).encode()
    err = error_of(send(world.client_for("sup"), URL, raw), 413)
    assert err["code"] == "too_large"
    assert not Decision.objects.exists()


def test_batch_over_1000_items(world):
    items = [decision_body(0.9)] * 1001
    err = error_of(send(world.client_for("sup"), BATCH, {"items": items}), 422)
    assert (err["code"], err["field"]) == ("batch_too_large", "items")
    assert "at most 1000" in err["message"]
    assert "1001" in err["message"]
    assert not Decision.objects.exists()


@pytest.mark.parametrize(("body", "field"), [({"items": "x"}, "items"), ({}, "items"), ([], None)])
def test_batch_that_is_not_a_list_of_items(world, body, field):
    err = error_of(send(world.client_for("sup"), BATCH, body), 422)
    assert err["field"] == field


def test_batch_with_some_bad_items_stores_the_others(world):
    items = [
        decision_body(0.9, subject="good-1"),
        {"prediction": {"confidence": 0.9}},
        "not an object",
        decision_body(0.9, subject="good-2", occurred_at="2026-03-15T23:47:00"),
        decision_body(0.9, subject="bad\u0000"),
        decision_body(0.1, subject="good-3"),
    ]
    r = send(world.client_for("sup"), BATCH, {"items": items})
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 6
    assert [("error" in x) for x in results] == [False, True, True, True, True, False]
    assert results[1]["error"] == {"code": "invalid", "message": "items[1]: prediction.output: this field is required",
                                   "field": "prediction.output"}
    assert results[2]["error"]["message"].startswith("items[2]: ")
    assert results[3]["error"]["field"] == "occurred_at"
    assert results[4]["error"]["field"] == "subject"
    assert (results[0]["status"], results[5]["status"]) == ("released", "pending_review")
    assert sorted(Decision.objects.values_list("subject", flat=True)) == ["good-1", "good-3"]


def test_batch_with_only_bad_items_stores_nothing(world):
    r = send(world.client_for("sup"), BATCH, {"items": [1, 2, {"subject": []}]})
    assert r.status_code == 200
    assert all("error" in x for x in r.json()["results"])
    assert not Decision.objects.exists()


# --- other endpoints ------------------------------------------------------------------------


def test_outcome_text_that_cannot_be_stored(world):
    made = send(world.client_for("sup"), URL, decision_body(0.9)).json()
    err = error_of(send(world.client_for("sup"), f"/api/v1/decisions/{made['id']}/outcome",
                        b'{"label": "clicked\\u0000"}'), 422)
    assert err["field"] == "label"
    assert not Outcome.objects.exists()


def admin_token_client(world: Any) -> ApiClient:
    _, token = actions.create_personal_token(world.admin)
    return ApiClient(HTTP_AUTHORIZATION=f"Token {token}")


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "field"),
    [
        ("post", "/api/v1/systems", {"slug": "new", "fallback": None}, 422, "fallback"),
        ("post", "/api/v1/systems", {"slug": "new", "name": "N\u0000"}, 422, "name"),
        ("post", "/api/v1/systems", {"slug": "new", "level": True}, 422, "level"),
        ("post", "/api/v1/systems", {"slug": "new", "review_sla_s": True}, 422, "review_sla_s"),
        ("post", "/api/v1/systems", {"name": "no slug"}, 422, "slug"),
        ("patch", "/api/v1/systems/sup", {"fallback": None}, 422, "fallback"),
        ("patch", "/api/v1/systems/sup", {"name": "x\u0000"}, 422, "name"),
        ("patch", "/api/v1/systems/sup", {"confidence_threshold": True}, 422, "confidence_threshold"),
        ("patch", "/api/v1/systems/sup", {"audit_sample_rate": float("nan")}, 400, None),
        ("patch", "/api/v1/systems/nope", {"level": 1}, 404, None),
        ("post", "/api/v1/killswitches", {"scope": "global", "engaged": True, "reason": "x\u0000"}, 422, "reason"),
        ("post", "/api/v1/killswitches", {"scope": "model", "system": "sup", "model": "m\u0000", "engaged": True,
                                          "reason": "x"}, 422, "model"),
    ],
)
def test_admin_endpoints_refuse_bad_input_without_a_server_error(world, method, url, body, status, field):
    r = send(admin_token_client(world), url, body, method=method)
    err = error_of(r, status)
    assert err["field"] == field
    assert AISystem.objects.count() == 3
    assert AISystem.objects.get(slug="sup").policy_version == 1


GARBAGE = [
    b"", b" ", b"{", b"}", b"[", b"nul", b"{}{}", b'{"a":1,}', b"\x00", b"\xff\xfe\x00{", b'{"\\u": 1}',
    b'{"prediction": null}', b'{"prediction": {"output": null}}', b'{"prediction": {"votes": null, "output": 1}}',
    b'{"prediction": {"output": 1, "votes": [null]}}', b'{"context": null}', b'{"occurred_at": 1e308}',
    b'{"occurred_at": -1e18}', b'{"occurred_at": ""}', b'{"idempotency_key": null}',
    b'{"prediction": {"output": 1, "confidence": 1e-400}}', b'{"context": {"": ""}}',
]


@pytest.mark.parametrize("raw", GARBAGE)
def test_garbage_never_yields_a_server_error(world, raw):
    for url in (URL, BATCH, "/api/v1/review/claim", "/api/v1/killswitches", "/api/v1/systems"):
        r = send(world.client_for("sup"), url, raw)
        assert 200 <= r.status_code < 500, (url, r.status_code, r.content)
        if r.status_code >= 400:
            error_of(r, r.status_code)
    admin = admin_token_client(world)
    for url, method in (("/api/v1/systems", "post"), ("/api/v1/systems/sup", "patch"),
                        ("/api/v1/killswitches", "post")):
        r = send(admin, url, raw, method=method)
        assert 200 <= r.status_code < 500, (url, r.status_code, r.content)


def test_a_body_must_be_declared_json_in_utf8(world):
    """415 for a body sent as text/plain, form data or UTF-16, with what to send instead; nothing stored."""
    import json as _json

    from oversight.models import Decision

    c = world.client_for("sup")
    body = _json.dumps(decision_body(0.9))
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-16"):
        r = c.post(URL, body, content_type=content_type)
        assert r.status_code == 415, content_type
        assert r.json()["error"]["code"] == "unsupported_media_type"
        assert "application/json" in r.json()["error"]["message"] or "UTF-8" in r.json()["error"]["message"]
    r = c.post(URL, body.encode("utf-16"), content_type="application/json")
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "the request body must be UTF-8 encoded JSON"
    assert not Decision.objects.exists()
    assert c.post(URL, body, content_type="application/json; charset=utf-8").status_code == 201
    assert c.post(URL, body, content_type="application/merge-patch+json").status_code == 201


def test_an_empty_batch_is_refused(world):
    r = world.client_for("sup").post(URL + "/batch", {"items": []}, content_type="application/json")
    assert r.status_code == 422
    assert r.json()["error"] == {"code": "invalid", "field": "items",
                                 "message": 'a batch needs at least one item (send them in "items")'}
