"""A system's drift reference through the API (issue 8): uploads, a past window, who may do what."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dashboards import drift, references
from dashboards.models import Reference
from oversight import actions
from oversight.models import AuditEvent
from tests.asgiclient import ApiClient
from tests.conftest import api_session, decision_body

URL = "/api/v1/systems/sup/reference"

CSV = b"age,country,score\n31,fr,0.5\n45,de,0.75\n,fr,1.5\n52,,2\n"
JSONL = (
    b'{"age": 31, "country": "fr", "vip": true}\n'
    b'{"age": 45.5, "country": "de", "vip": false}\n'
    b"\n"
    b'{"age": null, "country": "fr"}\n'
)


def put(client: ApiClient, body: bytes, content_type: str = "text/csv", query: str = "") -> Any:
    if not body and not query:  # Django's test client sends no Content-Type with an empty body
        query = "?format=" + ("csv" if content_type == "text/csv" else "jsonl")
    return client.put(URL + query, body, content_type=content_type)


def stored() -> int:
    return Reference.objects.count()


# --- uploads --------------------------------------------------------------------------------


def test_csv_upload_is_stored_and_summarised(world: Any) -> None:
    r = put(api_session(world.admin), CSV)
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["system"] == "sup"
    assert body["rows"] == 4
    assert body["source"] == "upload"
    cols = {c["name"]: c for c in body["columns"]}
    assert [c["name"] for c in body["columns"]] == ["age", "country", "score"]
    assert cols["age"]["kind"] == "numeric"
    assert cols["age"]["count"] == 3
    assert cols["age"]["missing"] == 1
    assert cols["country"] == {"name": "country", "kind": "categorical", "missing": 1, "count": 3,
                               "categories": 2, "top": {"fr": 2, "de": 1}}
    ref = Reference.objects.get(id=body["id"])
    age = drift.reference_from_dict(ref.summaries["age"])
    assert isinstance(age, drift.NumericReference)
    assert age.count == 3
    assert age.missing == 1
    assert age.values.tolist() == [31.0, 45.0, 52.0]
    country = drift.reference_from_dict(ref.summaries["country"])
    assert isinstance(country, drift.CategoricalReference)
    assert country.counts == {"de": 1, "fr": 2}
    assert country.missing == 1
    assert ref.created_by == world.admin
    event = AuditEvent.objects.get(action="reference.upload")
    assert event.data["rows"] == 4
    assert event.data["columns"] == ["age", "country", "score"]
    assert event.system == world.supervised
    assert event.actor == world.admin
    # The newest is the one in use, for a person with any role and the system's own key.
    for client in (api_session(world.operator), world.client_for("sup")):
        got = client.get(URL)
        assert got.status_code == 200, got.content
        assert got.json()["id"] == body["id"]
        assert got.json()["columns"] == body["columns"]


@pytest.mark.parametrize("content_type", ["application/x-ndjson", "application/jsonl"])
def test_jsonl_upload_is_stored_and_summarised(world: Any, content_type: str) -> None:
    r = put(api_session(world.admin), JSONL, content_type)
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["rows"] == 3
    ref = Reference.objects.get(id=body["id"])
    assert ref.columns == ["age", "country", "vip"]
    assert ref.summaries["age"]["type"] == "numeric"
    assert ref.summaries["age"]["count"] == 2
    assert ref.summaries["age"]["missing"] == 1
    assert ref.summaries["country"]["counts"] == {"de": 1, "fr": 2}
    # Booleans are categories; a column left out of a line is missing there.
    assert ref.summaries["vip"] == {"type": "categorical", "version": 1, "counts": {"False": 1, "True": 1},
                                    "missing": 1}


def test_format_query_and_forced_categorical(world: Any) -> None:
    admin = api_session(world.admin)
    r = put(admin, b"zip,n\n02139,1\n10001,2\n", "application/octet-stream", "?format=csv&categorical=zip")
    assert r.status_code == 201, r.content
    ref = Reference.objects.get(id=r.json()["id"])
    assert ref.summaries["zip"]["counts"] == {"02139": 1, "10001": 1}
    assert ref.summaries["n"]["type"] == "numeric"
    # A later upload is the one in use; the older stays as history.
    r2 = put(admin, b"a\nx\n")
    assert admin.get(URL).json()["id"] == r2.json()["id"]
    assert stored() == 2


def test_quoted_multiline_csv_and_bom(world: Any) -> None:
    body = '\ufeffname,v\n"two\nlines",1\n"é",2\n'.encode()
    r = put(api_session(world.admin), body)
    assert r.status_code == 201, r.content
    ref = Reference.objects.get(id=r.json()["id"])
    assert ref.columns == ["name", "v"]
    assert ref.summaries["name"]["counts"] == {"two\nlines": 1, "é": 1}


BAD_CSV = [
    (b"", "empty"),
    (b"\n\n", "empty"),
    (b"a,b\n", "no rows"),
    (b"a,b\n1,2\n3\n4,5\n", "line 3 has 1 field, but the header (line 1) names 2 columns"),
    (b"a,b\n1,2\n3,4,5\n", "line 3 has 3 fields"),
    (b"a,b\n1,x\n2,y\nthree,z\nfour,w\n", "line 4, column 'a': 'three' is not a number"),
    (b"a,b\n1,x\nnan,y\n", "line 3, column 'a': 'nan' is not a number"),
    (b"a,a\n1,2\n", "column 'a' appears twice"),
    (b"a,\n1,2\n", "column 2 has no name"),
    (b"a,b\n1,2\n\xff\xfe,3\n", "not UTF-8 text: line 3"),
    (b"a,b\n1,2\n3,\x004\n", "line 3 contains a NUL character"),
    (b'a,b\n1,2\n"x"y,3\n', "line 3 is not valid CSV"),
]


@pytest.mark.parametrize(("body", "expected"), BAD_CSV)
def test_bad_csv_is_refused_and_nothing_stored(world: Any, body: bytes, expected: str) -> None:
    r = put(api_session(world.admin), body)
    assert r.status_code == 422, r.content
    err = r.json()["error"]
    assert err["code"] == "invalid"
    assert expected in err["message"], err
    assert stored() == 0
    assert not AuditEvent.objects.filter(action__startswith="reference.").exists()


BAD_JSONL = [
    (b"", "empty"),
    (b'{"a": 1}\n[1, 2]\n', "line 2 is a JSON array, not an object"),
    (b'{"a": 1}\n"x"\n', "line 2 is a JSON string, not an object"),
    (b'{"a": 1}\n{"a": 2\n', "line 2 is not valid JSON"),
    (b'{"a": 1}\n{"a": 2, "b": 3}\n', "line 2 has the column 'b', which the first line (line 1) does not have"),
    (b'{"a": 1}\n{"a": 2}\n{"a": "two"}\n{"a": "x"}\n', "line 3, column 'a': 'two' is not a number"),
    (b'{"a": 1}\n{"a": true}\n', "line 2, column 'a': 'true' is not a number"),
    (b'{"a": 1}\n{"a": NaN}\n', "line 2: NaN is not a valid JSON number"),
    (b'{"a": 1}\n{"a": 1e999}\n', "line 2"),
    (b'{"a": 1}\n{"a": {"b": 1}}\n', "line 2, column 'a': a nested object is not supported"),
    (b'{"a": "x"}\n{"a": "\\u0000"}\n', "line 2 has a \\u0000"),
    (b"{}\n", "line 1 is an empty object"),
    (b'{"a": 1}\n{"a": 2}\n\xc3(\n', "not UTF-8 text: line 3"),
]


@pytest.mark.parametrize(("body", "expected"), BAD_JSONL)
def test_bad_jsonl_is_refused_and_nothing_stored(world: Any, body: bytes, expected: str) -> None:
    r = put(api_session(world.admin), body, "application/x-ndjson")
    assert r.status_code == 422, r.content
    err = r.json()["error"]
    assert err["code"] == "invalid"
    assert expected in err["message"], err
    assert stored() == 0


def test_unknown_content_type_is_415(world: Any) -> None:
    admin = api_session(world.admin)
    r = put(admin, b'{"a": 1}', "application/json")
    assert r.status_code == 415
    assert "text/csv" in r.json()["error"]["message"]
    assert "application/x-ndjson" in r.json()["error"]["message"]
    r = put(admin, CSV, "text/csv", "?format=xlsx")
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "format"
    assert stored() == 0


def test_size_limits(world: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = api_session(world.admin)
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64
    r = put(admin, b"a\n" + b"1\n" * 100)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_large"
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    monkeypatch.setattr(references, "REFERENCE_MAX_BYTES", 100)
    r = put(admin, b"a\n" + b"1\n" * 100)
    assert r.status_code == 422
    assert "at most 100 bytes" in r.json()["error"]["message"]
    assert stored() == 0


# --- who may ----------------------------------------------------------------------------------


def test_who_may_upload(world: Any) -> None:
    for user in (world.operator, world.editor, world.nobody):
        r = put(api_session(user), CSV)
        assert r.status_code == 403, (user, r.content)
    r = put(world.client_for("sup"), CSV)
    assert r.status_code == 403
    assert "for people" in r.json()["error"]["message"]
    r = put(ApiClient(), CSV)
    assert r.status_code == 401
    # A session without the CSRF token is refused; a personal token needs none.
    r = put(world.api_person(world.admin), CSV)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "csrf"
    assert stored() == 0
    _, secret = actions.create_personal_token(world.admin, "script")
    r = put(ApiClient(HTTP_AUTHORIZATION=f"Token {secret}"), CSV)
    assert r.status_code == 201
    r = api_session(world.admin).put("/api/v1/systems/nope/reference", CSV, content_type="text/csv")
    assert r.status_code == 404


def test_who_may_read(world: Any) -> None:
    r = api_session(world.editor).get(URL)
    assert r.status_code == 404
    assert "no reference yet" in r.json()["error"]["message"]
    put(api_session(world.admin), CSV)
    assert api_session(world.editor).get(URL).status_code == 200
    assert api_session(world.nobody).get(URL).status_code == 403
    assert ApiClient().get(URL).status_code == 401
    # A key reaches only its own system, and learns nothing about others.
    assert world.client_for("crit").get(URL).status_code == 404
    assert world.client_for("sup").get(URL).status_code == 200


# --- a past window of decisions ------------------------------------------------------------------


def submit(world: Any, features: dict[str, Any], confidence: float | None, occurred_at: datetime) -> None:
    body = decision_body(confidence, features=features, occurred_at=occurred_at.isoformat())
    r = world.client_for("sup").post("/api/v1/systems/sup/decisions", json.dumps(body),
                                     content_type="application/json")
    assert r.status_code == 201, r.content


def test_reference_from_decisions(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(references, "CHUNK_SIZE", 2)  # several chunks
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    submit(world, {"tempo": 120.0, "genre": "rock"}, 0.9, t0)
    submit(world, {"tempo": 130, "genre": "jazz"}, 0.5, t0 + timedelta(minutes=1))
    submit(world, {"tempo": None, "genre": "rock", "new": 1}, 0.7, t0 + timedelta(minutes=2))
    submit(world, {"tempo": 140.0, "genre": 3}, None, t0 + timedelta(minutes=3))
    submit(world, {"tempo": 999.0}, 0.1, t0 + timedelta(hours=5))  # outside the window
    admin = api_session(world.admin)
    url = URL + "/from-decisions"
    r = admin.post(url, json.dumps({"since": t0.isoformat(), "until": (t0 + timedelta(hours=1)).isoformat()}),
                   content_type="application/json")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["rows"] == 4
    assert body["source"] == "window"
    ref = Reference.objects.get(id=body["id"])
    assert ref.columns == ["genre", "new", "tempo", "prediction.confidence"]
    tempo = drift.reference_from_dict(ref.summaries["tempo"])
    assert isinstance(tempo, drift.NumericReference)
    assert tempo.values.tolist() == [120.0, 130.0, 140.0]
    assert tempo.missing == 1
    assert ref.summaries["genre"]["counts"] == {"3": 1, "jazz": 1, "rock": 2}
    assert ref.summaries["new"]["count"] == 1
    assert ref.summaries["new"]["missing"] == 3
    conf = ref.summaries["prediction.confidence"]
    assert conf["type"] == "numeric"
    assert conf["values"] == [0.5, 0.7, 0.9]
    assert conf["missing"] == 1
    assert AuditEvent.objects.get(action="reference.window").data["rows"] == 4
    assert admin.get(URL).json()["id"] == body["id"]

    # An empty range, or a backwards one, is refused and stores nothing.
    empty = {"since": (t0 - timedelta(days=2)).isoformat(), "until": (t0 - timedelta(days=1)).isoformat()}
    r = admin.post(url, json.dumps(empty), content_type="application/json")
    assert r.status_code == 422
    assert "no decisions" in r.json()["error"]["message"]
    backwards = {"since": t0.isoformat(), "until": (t0 - timedelta(days=1)).isoformat()}
    r = admin.post(url, json.dumps(backwards), content_type="application/json")
    assert r.status_code == 422
    assert "before" in r.json()["error"]["message"]
    assert stored() == 1

    # Admin only.
    window = {"since": t0.isoformat(), "until": (t0 + timedelta(hours=1)).isoformat()}
    assert api_session(world.operator).post(url, json.dumps(window), content_type="application/json").status_code == 403
    assert world.client_for("sup").post(url, json.dumps(window), content_type="application/json").status_code == 403
    assert ApiClient().post(url, json.dumps(window), content_type="application/json").status_code == 401
    assert stored() == 1
