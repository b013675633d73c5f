"""Fuzzing the JSON API against its own OpenAPI document (issue 12), as CI runs it.

Schemathesis reads ``/api/v1/openapi.json`` from a real uvicorn (``live_server_url``), fetched with
the caller's own credentials, and sends every operation generated requests: the document's examples,
its coverage cases (boundaries, missing and wrong fields, wrong types) and fuzzed ones, valid and
invalid. Each answer is checked: no 5xx, a status code the operation documents, the content type
it documents and a body that matches the documented schema (``ErrorOut`` for every error).

It runs once per caller: a client service's API key, an admin's personal token and an operator's,
so that every operation is explored by someone it is for and refused (as documented) to the others.
Path parameters are mixed with the names of real objects (systems, decisions, review items, picks,
rollouts, …) made beforehand, so the fuzzing reaches past "not found".

Deterministic (a fixed seed, Hypothesis derandomized, no example database) and bounded: with
``MAX_EXAMPLES`` = 20, 54 operations get about 3,800 requests per caller, 11,500 in all, in 70–150 s
on a 2-core machine (``OVERSIGHT_FUZZ_EXAMPLES`` and ``OVERSIGHT_FUZZ_SEED`` run it deeper or
otherwise by hand: 150 gives about 10,500 per caller). Whatever the run changes (kill switches,
systems, models, …) is in the test database, which ``tworld`` flushes afterwards; the Celery tasks it
queues are purged.

Schemathesis' own per-operation Hypothesis tests are built with ``get_all_tests`` (what its pytest
integration runs) and run here one after another: ``schemathesis.pytest.from_fixture``, which would
load the document from a fixture, renames pytest's node ids through an attribute pytest 9.2 no
longer has.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import schemathesis
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import load_all_checks, not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.pytest.lazy import get_all_tests
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dashboards import drift
from dashboards.models import Alert, Reference
from oversight import actions, drills, editorial, hosted, rollout_actions
from reviewqueue.models import ReviewItem
from tests.asgiclient import ApiClient
from tests.conftest import World, api_session, decision_body, second_admin
from tests.integration.test_api_roles import CALLERS, MATRIX

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]

#: Generated requests per operation in the fuzzing phase (the examples and coverage phases add theirs).
MAX_EXAMPLES = int(os.environ.get("OVERSIGHT_FUZZ_EXAMPLES", "20"))
SEED = int(os.environ.get("OVERSIGHT_FUZZ_SEED", "20260312"))


# --- the world the requests meet ------------------------------------------------------------------


def populate(w: World) -> dict[str, list[str]]:
    """Real objects of every kind a path can name; returns their names by path parameter."""
    client = w.client_for("sup")
    pending = client.post("/api/v1/systems/sup/decisions", decision_body(0.1), content_type="application/json")
    released = client.post("/api/v1/systems/sup/decisions", decision_body(0.9), content_type="application/json")
    assert (pending.status_code, released.status_code) == (201, 201)
    item = ReviewItem.objects.get()
    summaries = {name: ref.to_dict() for name, ref in drift.build_references({"tempo": np.arange(200.0)}).items()}
    Reference.objects.create(system=w.supervised, source="upload", rows=200, columns=["tempo"], summaries=summaries)
    alert = Alert.objects.create(system=w.supervised, kind="drift", subject="tempo", message="tempo drifted",
                                 opened_at=timezone.now())
    # Hosted models on "auto", not on the key's "sup": scoring there would wait for a scoring worker.
    for name, target in (("v1", "recommend"), ("v2", "calm")):
        hosted.register(None, "auto", {"name": name, "kind": "python", "target": f"tests.hosted_models:{target}"})
    rollout = rollout_actions.start(w.admin, "auto", "v2", "v1", reason="try v2")
    drill = drills.start(w.admin, "crit", "error", 5, 1.0, "game day")
    pick = editorial.create_pick(w.editor, "sup", item="t1")
    block = editorial.create_block(w.editor, "sup", item="t2")
    second = second_admin()
    actions.set_killswitch(second, "system", True, "bad push", "crit")
    release = actions.set_killswitch(second, "system", False, "rolled back", "crit")
    return {
        "system": ["sup", "auto", "crit"],
        "decision_id": [pending.json()["id"], released.json()["id"]],
        "item_id": [item.public_id],
        "alert_id": [alert.public_id],
        "name": ["v1", "v2"],
        "rollout_id": [rollout.public_id],
        "drill_id": [drill.public_id],
        "pick_id": [pick.public_id],
        "block_id": [block.public_id],
        "request_id": [release.public_id],  # type: ignore[union-attr]
        "job_id": [str(uuid.uuid4())],
    }


def known_names(known: dict[str, list[str]]) -> Callable[..., Any]:
    """A Schemathesis hook: each path parameter is the generated value or one of the real names."""

    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
        if not path_parameters:
            return st.just(path_parameters)
        return st.fixed_dictionaries({
            name: st.sampled_from([*known.get(name, []), value]) for name, value in path_parameters.items()
        })

    return flatmap_path_parameters


# --- the run ----------------------------------------------------------------------------------------


def fuzz(schema: Any, headers: dict[str, str]) -> tuple[dict[str, int], list[str]]:
    """Every operation of ``schema`` with Schemathesis' tests (examples, coverage, fuzzing); the
    number of requests per operation and the problems found (one per failing operation, shrunk)."""
    load_all_checks()
    sent: dict[str, int] = {}

    def check(case: Any) -> None:
        sent[case.operation.label] = sent.get(case.operation.label, 0) + 1
        case.call_and_validate(headers=headers, checks=CHECKS)

    chosen = settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
                      suppress_health_check=list(HealthCheck))
    problems: list[str] = []
    for result in get_all_tests(schema=schema, test_func=check, settings=chosen, given_kwargs={}):
        if not isinstance(result, Ok):
            problems.append(f"the document: {result.err()}")
            continue
        operation, run = result.ok()
        try:
            run()
        except Exception as exc:  # noqa: BLE001 - every operation runs; the failures are reported together
            problems.append(f"{operation.label}: {exc}")
    return sent, problems


@pytest.fixture
def purged_tasks() -> Any:
    """The monitoring runs and webhooks the fuzzing queues are nobody's: gone before the next test."""
    yield
    from oversight.celery import app

    app.control.purge()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("who", ["client", "admin", "operator"])
def test_every_operation_keeps_to_the_document(live_server_url: str, tworld: World, purged_tasks: None,
                                               who: str) -> None:
    if who == "client":
        headers = {"Authorization": f"Bearer {tworld.keys['sup']}"}
    else:
        _, token = actions.create_personal_token(getattr(tworld, who), "fuzzing")
        headers = {"Authorization": f"Token {token}"}
    known = populate(tworld)
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "generation": {"deterministic": True, "with-security-parameters": False, "database": "none"},
    })
    schema = schemathesis.openapi.from_url(f"{live_server_url}/api/v1/openapi.json", headers=headers, config=config)
    schema.hook("flatmap_path_parameters")(known_names(known))
    started = time.monotonic()
    sent, problems = fuzz(schema, headers)
    took = time.monotonic() - started
    print(f"\n{who}: {len(sent)} operations, {sum(sent.values())} requests in {took:.1f} s")
    assert len(sent) == len(schema), "every operation was tried"
    assert not problems, "\n\n".join(problems)


# --- the document itself, without a server ---------------------------------------------------------


def _document(world: World) -> dict[str, Any]:
    r = ApiClient(HTTP_AUTHORIZATION=f"Bearer {world.keys['sup']}").get("/api/v1/openapi.json")
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def test_the_document_lists_every_error_answer_with_its_body(world: World) -> None:
    doc = _document(world)
    assert doc["components"]["schemas"]["ErrorOut"]["required"] == ["error"]
    operations = [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()]
    assert len(operations) == len(MATRIX)
    for path, method, op in operations:
        codes = {int(c) for c in op["responses"]}
        assert {401, 403, 503} <= codes, (method, path)
        if "{" in path:
            assert 404 in codes, (method, path)
        if "requestBody" in op:
            assert {413, 415, 422} <= codes, (method, path)
        for code, answer in op["responses"].items():
            if int(code) >= 400:
                assert answer["content"] == {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
        assert "Retry-After" in op["responses"]["503"]["headers"]
    body = doc["paths"]["/api/v1/systems/{system}/decisions"]["post"]["responses"]
    assert {"200", "201", "400", "409", "413", "415", "422"} <= set(body)


def test_the_document_names_the_schemes_each_operation_accepts(world: World) -> None:
    """Client services' key, people's token and session (with CSRF on unsafe methods), as the role
    matrix has it: an operation lists the API key when a client service may call it, the personal
    token and the session when a person may."""
    doc = _document(world)
    schemes = doc["components"]["securitySchemes"]
    assert (schemes["ApiKey"]["type"], schemes["ApiKey"]["scheme"]) == ("http", "bearer")
    assert (schemes["PersonalToken"]["type"], schemes["PersonalToken"]["in"], schemes["PersonalToken"]["name"]) == (
        "apiKey", "header", "Authorization")
    assert "Token <token>" in schemes["PersonalToken"]["description"]
    assert (schemes["Session"]["in"], schemes["Session"]["name"]) == ("cookie", "sessionid")
    assert (schemes["CSRF"]["in"], schemes["CSRF"]["name"]) == ("header", "X-CSRFToken")
    for item in doc["paths"].values():
        for method, op in item.items():
            name = next(n for n in MATRIX if op["operationId"].endswith(f"_{n}"))
            allowed = dict(zip(CALLERS, MATRIX[name], strict=True))
            client = allowed["client"] not in (401, 403)  # past the role check: 2xx, or 409 for the setup's state
            person = any(allowed[who] not in (401, 403) for who in ("operator", "editor", "admin"))
            session = ["CSRF", "Session"] if method != "get" else ["Session"]
            want = [["ApiKey"]] * client + [["PersonalToken"], session] * person
            assert [sorted(r) for r in op["security"]] == want, name


def test_numbers_bounded_in_the_models_are_bounded_in_the_document(world: World) -> None:
    """Pydantic writes ``ge``/``le`` for a number whose type a validator wraps; JSON Schema reads
    ``minimum``/``maximum``."""
    props = _document(world)["components"]["schemas"]["SystemIn"]["properties"]
    assert (props["confidence_threshold"]["minimum"], props["confidence_threshold"]["maximum"]) == (0.0, 1.0)
    assert "le" not in props["audit_sample_rate"]


# --- what the fuzzing found -------------------------------------------------------------------------

WEIRD_DIGITS = ("³", "rel_²", "٣", "1" * 40)


@pytest.mark.parametrize("path", ["/api/v1/drills/{}/stop", "/api/v1/killswitches/releases/{}/approve",
                                  "/api/v1/killswitches/releases/{}/withdraw", "/api/v1/rollouts/{}/advance",
                                  "/api/v1/alerts/{}/ack"])
def test_ids_of_other_digits_are_unknown_not_a_server_error(world: World, path: str) -> None:
    """str.isdigit() takes '³' and '٣', which int() refuses or reads: such an id names nothing (404)."""
    admin = api_session(world.admin)
    for raw in WEIRD_DIGITS:
        body = b"{}" if "rollouts" in path else b""
        r = admin.post(path.format(raw), body, content_type="application/json")
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found"), (path, raw)


def test_wait_ms_of_other_digits_is_refused(world: World) -> None:
    r = world.client_for("sup").post("/api/v1/systems/sup/decisions?wait_ms=%C2%B3", decision_body(),
                                     content_type="application/json")
    assert (r.status_code, r.json()["error"]["field"]) == (422, "wait_ms")


FAR_OFFSET = "2025-01-01T00:00:00+20:39"  # Python parses it; PostgreSQL stores offsets up to ±15:59


def test_times_with_offsets_postgresql_refuses_are_stored_in_utc(world: World) -> None:
    client = world.client_for("sup")
    made = client.post("/api/v1/systems/sup/decisions", decision_body(occurred_at=FAR_OFFSET),
                       content_type="application/json")
    assert made.status_code == 201
    assert made.json()["occurred_at"] == "2024-12-31T03:21:00Z"
    outcome = client.post(f"/api/v1/decisions/{made.json()['id']}/outcome",
                          {"reward": 1, "observed_at": FAR_OFFSET}, content_type="application/json")
    assert (outcome.status_code, outcome.json()["observed_at"]) == (201, "2024-12-31T03:21:00Z")
    batch = client.post("/api/v1/systems/sup/decisions/batch",
                        {"items": [decision_body(occurred_at=FAR_OFFSET)]}, content_type="application/json")
    assert batch.status_code == 200
    assert batch.json()["results"][0]["occurred_at"] == "2024-12-31T03:21:00Z"
    for query in ("drift?since=", "metrics?until="):
        assert client.get(f"/api/v1/systems/sup/{query}{FAR_OFFSET.replace('+', '%2B')}").status_code == 200
    tiny = client.get("/api/v1/systems/sup/drift?since=0001-01-01T00:00:00%2B20:00")
    assert (tiny.status_code, tiny.json()["error"]["field"]) == (422, "since")
    editor = api_session(world.editor)
    pick = editor.post("/api/v1/systems/sup/picks", {"item": "t1", "starts_at": FAR_OFFSET},
                       content_type="application/json")
    assert (pick.status_code, pick.json()["starts_at"]) == (201, "2024-12-31T03:21:00Z")
    admin = api_session(world.admin)
    window = admin.post("/api/v1/systems/sup/reference/from-decisions",
                        {"since": "2024-12-01T00:00:00+20:39", "until": "2025-01-02T00:00:00+20:39"},
                        content_type="application/json")
    assert window.status_code == 201, window.content
