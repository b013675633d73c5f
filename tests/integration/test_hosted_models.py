"""Registering hosted models through the JSON API (production ASGI app): who may, what is checked
before a model is stored, what is audited, and that the gate's configuration sees each change at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from oversight import adapters, config, hosted
from oversight.models import AuditEvent, HostedModel
from tests.asgiclient import ApiClient
from tests.conftest import World, api_session, free_port

URL = "/api/v1/systems/{}/models"
RECOMMEND = "tests.hosted_models:recommend"


def _models(slug: str) -> str:
    return URL.format(slug)


def _model(slug: str, name: str) -> str:
    return f"{URL.format(slug)}/{name}"


def _post(c: ApiClient, slug: str, body: dict[str, Any]) -> Any:
    return c.post(_models(slug), body, content_type="application/json")


def _patch(c: ApiClient, slug: str, name: str, body: dict[str, Any]) -> Any:
    return c.patch(_model(slug, name), body, content_type="application/json")


def _hosted(slug: str) -> tuple[adapters.Spec, ...]:
    """What the gate's configuration (and so the scoring workers) sees now."""
    return config.cache.current().systems_by_slug[slug].hosted


@pytest.fixture
def committed(django_capture_on_commit_callbacks: Any) -> Any:
    """The test's transaction never commits: ``with committed():`` runs what a commit would at the
    end of the block (Redis learns the new epoch, as after the request's own commit)."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


class _ModelServer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(405)  # a model server may refuse a bare GET: it is there all the same
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def model_server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _ModelServer)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}/v2/models/spam/infer"
    srv.shutdown()
    srv.server_close()


# --- registering --------------------------------------------------------------------------------


def test_an_admin_registers_a_model_and_the_gate_sees_it_at_once(world: World, committed: Any) -> None:
    assert _hosted("sup") == ()  # the configuration is cached before the change
    body = {"name": "collab", "kind": "python", "target": RECOMMEND, "weight": 2, "timeout_ms": 800}
    with committed():
        r = _post(api_session(world.admin), "sup", body)
    assert r.status_code == 201, r.content
    out = r.json()
    created_at = out.pop("created_at")
    assert created_at
    assert out == {"name": "collab", "kind": "python", "target": RECOMMEND, "protocol": "json", "role": "voter",
                   "weight": 2.0, "timeout_ms": 800, "enabled": True}
    ev = AuditEvent.objects.get(action="model.register")
    assert ev.actor == world.admin
    assert ev.system == world.supervised
    assert ev.target == "collab"
    assert ev.data == {**out, "weight": 2.0}
    assert _hosted("sup") == (adapters.Spec("collab", "python", RECOMMEND, "json", "voter", 2.0, 800),)
    assert _hosted("auto") == ()
    m = HostedModel.objects.get(system=world.supervised, name="collab")
    assert m.created_by == world.admin


def test_an_admin_registers_an_http_model_server_and_a_context_model(world: World, committed: Any,
                                                                     model_server: str) -> None:
    admin = api_session(world.admin)
    assert _hosted("auto") == ()
    r = _post(admin, "auto", {"name": "spam-v2", "kind": "http", "target": f"  {model_server} ", "protocol": "v2"})
    assert r.status_code == 201, r.content
    assert r.json()["target"] == model_server  # stripped
    with committed():
        r = _post(admin, "auto", {"name": "bedtime", "kind": "python", "target": "tests.hosted_models.bedtime",
                                  "role": "context"})
    assert r.status_code == 201, r.content
    assert [(s.name, s.kind, s.protocol, s.role) for s in _hosted("auto")] == [
        ("bedtime", "python", "json", "context"), ("spam-v2", "http", "v2", "voter")]


def test_a_disabled_model_is_stored_unchecked_and_not_asked(world: World, committed: Any) -> None:
    admin = api_session(world.admin)
    assert _hosted("sup") == ()
    with committed():
        r = _post(admin, "sup", {"name": "later", "kind": "python", "target": "tests.not_written_yet:model",
                                 "enabled": False})
    assert r.status_code == 201, r.content
    assert _hosted("sup") == ()
    # Switching it on checks it: it still does not import.
    r = _patch(admin, "sup", "later", {"enabled": True})
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "target"
    assert "the dotted path does not import" in r.json()["error"]["message"]
    assert not HostedModel.objects.get(name="later").enabled


# --- who may ----------------------------------------------------------------------------------


@pytest.fixture
def registered(world: World) -> HostedModel:
    return hosted.register(None, "sup", {"name": "collab", "kind": "python", "target": RECOMMEND})


@pytest.mark.parametrize("who", ["operator", "editor", "nobody", "key"])
def test_only_an_admin_changes_models(world: World, registered: HostedModel, who: str) -> None:
    c = world.client_for("sup") if who == "key" else api_session(getattr(world, who))
    new = {"name": "other", "kind": "python", "target": RECOMMEND}
    for r in (_post(c, "sup", new), _patch(c, "sup", "collab", {"weight": 5}), c.delete(_model("sup", "collab"))):
        assert r.status_code == 403, (r.status_code, r.content)
        assert r.json()["error"]["code"] == "forbidden"
    assert [(m.name, m.weight) for m in HostedModel.objects.all()] == [("collab", 1.0)]
    assert not AuditEvent.objects.filter(action__startswith="model.").exclude(action="model.register").exists()


def test_the_system_key_is_told_the_endpoint_is_for_people(world: World) -> None:
    r = _post(world.client_for("sup"), "sup", {"name": "x", "kind": "python", "target": RECOMMEND})
    assert r.status_code == 403
    assert r.json()["error"]["message"] == "this endpoint is for people, not client services"


def test_anonymous_gets_401_everywhere(world: World, registered: HostedModel) -> None:
    c = ApiClient()
    for r in (c.get(_models("sup")), _post(c, "sup", {"name": "x", "kind": "python", "target": RECOMMEND}),
              _patch(c, "sup", "collab", {"weight": 5}), c.delete(_model("sup", "collab"))):
        assert r.status_code == 401, (r.status_code, r.content)
        assert r.json()["error"]["code"] == "unauthenticated"
    assert HostedModel.objects.get().weight == 1.0


@pytest.mark.parametrize("who", ["operator", "editor", "admin", "key"])
def test_anyone_with_a_role_and_the_systems_own_key_lists_its_models(world: World, registered: HostedModel,
                                                                     who: str) -> None:
    c = world.client_for("sup") if who == "key" else api_session(getattr(world, who))
    r = c.get(_models("sup"))
    assert r.status_code == 200, r.content
    assert [(m["name"], m["target"], m["weight"], m["enabled"]) for m in r.json()] == [
        ("collab", RECOMMEND, 1.0, True)]
    if who != "key":
        assert c.get(_models("auto")).json() == []  # a person sees every system's


def test_a_person_without_a_role_cannot_list_models(world: World, registered: HostedModel) -> None:
    r = api_session(world.nobody).get(_models("sup"))
    assert r.status_code == 403
    assert "no role" in r.json()["error"]["message"]


def test_another_systems_key_learns_nothing_about_its_models(world: World, registered: HostedModel) -> None:
    r = world.client_for("auto").get(_models("sup"))
    # The same answer as for a system that does not exist (oversight.access.system_for).
    assert r.status_code == 404
    assert r.json()["error"] == {"code": "not_found", "message": "no system 'sup' for this API key", "field": None}
    assert world.client_for("auto").get(_models("nope")).json()["error"]["message"] == \
        "no system 'nope' for this API key"


def test_an_unknown_system_is_404(world: World) -> None:
    admin = api_session(world.admin)
    assert admin.get(_models("nope")).status_code == 404
    r = _post(admin, "nope", {"name": "x", "kind": "python", "target": RECOMMEND})
    assert r.status_code == 404
    assert r.json()["error"]["field"] == "system"
    assert _patch(admin, "nope", "x", {"weight": 1}).status_code == 404
    assert admin.delete(_model("nope", "x")).status_code == 404


# --- what is refused ----------------------------------------------------------------------------


def _refused(world: World, body: dict[str, Any], status: int = 422) -> dict[str, Any]:
    r = _post(api_session(world.admin), "sup", body)
    assert r.status_code == status, (r.status_code, r.content)
    assert not HostedModel.objects.filter(name=body.get("name", "")).exists() or status == 409
    assert AuditEvent.objects.filter(action="model.register").count() == (1 if status == 409 else 0)
    return r.json()["error"]


def test_a_dotted_path_that_does_not_import_is_refused(world: World) -> None:
    err = _refused(world, {"name": "m", "kind": "python", "target": "tests.no_such_module:predict"})
    assert err["field"] == "target"
    assert err["code"] == "invalid"
    assert err["message"].startswith("the dotted path does not import: module 'tests.no_such_module' does not import")
    err = _refused(world, {"name": "m", "kind": "python", "target": "tests.hosted_models:no_such_function"})
    assert err["message"] == ("the dotted path does not import: module 'tests.hosted_models' has no "
                              "'no_such_function'")
    err = _refused(world, {"name": "m", "kind": "python", "target": "predict"})
    assert "is not a dotted path: write package.module:function" in err["message"]


def test_a_url_nothing_listens_on_is_refused(world: World) -> None:
    url = f"http://127.0.0.1:{free_port()}/infer"
    err = _refused(world, {"name": "m", "kind": "http", "target": url})
    assert err["field"] == "target"
    assert f"the model URL {url} cannot be reached" in err["message"]
    assert "check the address and that the model server is running" in err["message"]


@pytest.mark.parametrize(("body", "field", "said"), [
    ({"kind": "http", "target": RECOMMEND}, None, "an HTTP model's target is its URL, starting with http://"),
    ({"kind": "python", "target": "https://models.example/infer"}, None, 'a URL is an HTTP model: set kind to "http"'),
    ({"kind": "python", "target": RECOMMEND, "protocol": "v2"}, None, 'protocol "v2" is for HTTP model servers'),
    ({"kind": "python", "target": RECOMMEND, "weight": -1}, "weight", "weight: Input should be greater than or"),
    ({"kind": "python", "target": RECOMMEND, "timeout_ms": 0}, "timeout_ms", "timeout_ms: Input should be greater"),
    ({"kind": "python", "target": RECOMMEND, "timeout_ms": 30_001}, "timeout_ms", "timeout_ms: Input should be less"),
    ({"kind": "python", "target": RECOMMEND, "colour": "red"}, "colour", "colour: Extra inputs are not permitted"),
    ({"kind": "grpc", "target": RECOMMEND}, "kind", "kind: String should match pattern"),
    ({"kind": "python", "target": RECOMMEND, "role": "judge"}, "role", "role: String should match pattern"),
    ({"kind": "python", "target": "   "}, "target", "target: String should have at least 1 character"),
    ({"kind": "python"}, "target", "target: this field is required"),
    ({"kind": "python", "target": RECOMMEND, "name": "has space"}, "name", "name: String should match pattern"),
    ({"kind": "python", "target": RECOMMEND, "name": ""}, "name", "name: String should have at least 1 character"),
])
def test_bad_input_is_refused_with_a_message_and_its_field(world: World, body: dict[str, Any], field: str | None,
                                                            said: str) -> None:
    err = _refused(world, {"name": "m", **body})
    assert err["code"] == "invalid"
    if field is not None:  # None: a kind that does not fit the target (see the test below)
        assert err["field"] == field
    assert said in err["message"]


@pytest.mark.parametrize(("body", "field"), [
    ({"kind": "http", "target": RECOMMEND}, "target"),
    ({"kind": "python", "target": "https://models.example/infer"}, "target"),
    ({"kind": "python", "target": RECOMMEND, "protocol": "v2"}, "protocol"),
])
def test_a_kind_that_does_not_fit_the_target_names_the_field(world: World, body: dict[str, Any], field: str) -> None:
    assert _refused(world, {"name": "m", **body})["field"] == field


@pytest.mark.parametrize(("body", "field"), [
    ({"target": "http://127.0.0.1:9/infer"}, "target"),
    ({"protocol": "v2"}, "protocol"),
])
def test_a_patch_that_does_not_fit_the_kind_names_the_field(world: World, registered: HostedModel,
                                                            body: dict[str, Any], field: str) -> None:
    r = _patch(api_session(world.admin), "sup", "collab", body)
    assert r.status_code == 422
    assert r.json()["error"]["field"] == field


def test_a_name_taken_is_409(world: World, registered: HostedModel) -> None:
    err = _refused(world, {"name": "collab", "kind": "python", "target": "tests.hosted_models:calm"}, 409)
    assert err == {"code": "conflict", "message": "sup already has a model named 'collab'", "field": "name"}
    assert HostedModel.objects.get(name="collab").target == RECOMMEND
    # The same name on another system is another model.
    r = _post(api_session(world.admin), "auto", {"name": "collab", "kind": "python", "target": RECOMMEND})
    assert r.status_code == 201


# --- changing and removing --------------------------------------------------------------------


def test_patch_changes_the_weight_audited_from_and_to(world: World, registered: HostedModel, committed: Any) -> None:
    assert _hosted("sup")[0].weight == 1.0
    with committed():
        r = _patch(api_session(world.admin), "sup", "collab",
                   {"weight": 3.5, "timeout_ms": 1200, "reason": "it is good"})
    assert r.status_code == 200, r.content
    assert r.json()["weight"] == 3.5
    assert r.json()["timeout_ms"] == 1200
    assert r.json()["name"] == "collab"
    ev = AuditEvent.objects.get(action="model.update")
    assert ev.actor == world.admin
    assert ev.target == "collab"
    assert ev.reason == "it is good"
    assert ev.data == {"weight": {"from": 1.0, "to": 3.5}, "timeout_ms": {"from": 500, "to": 1200}}
    assert _hosted("sup") == (adapters.Spec("collab", "python", RECOMMEND, "json", "voter", 3.5, 1200),)


def test_switching_a_model_off_takes_it_out_of_the_configuration(world: World, registered: HostedModel,
                                                                  committed: Any) -> None:
    with committed():
        hosted.register(None, "sup", {"name": "calm", "kind": "python", "target": "tests.hosted_models:calm"})
    assert [s.name for s in _hosted("sup")] == ["calm", "collab"]
    admin = api_session(world.admin)
    with committed():
        r = _patch(admin, "sup", "collab", {"enabled": False, "reason": "plays metal"})
    assert r.status_code == 200
    assert r.json()["enabled"] is False
    assert [s.name for s in _hosted("sup")] == ["calm"]
    ev = AuditEvent.objects.get(action="model.update")
    assert ev.data == {"enabled": {"from": True, "to": False}}
    assert ev.reason == "plays metal"
    # Still listed for people (switched off, not gone), and back on when switched on.
    assert [(m["name"], m["enabled"]) for m in admin.get(_models("sup")).json()] == [("calm", True),
                                                                                     ("collab", False)]
    with committed():
        assert _patch(admin, "sup", "collab", {"enabled": True}).status_code == 200
    assert [s.name for s in _hosted("sup")] == ["calm", "collab"]


@pytest.mark.parametrize(("body", "status", "field", "said"), [
    ({"weight": -0.5}, 422, "weight", "greater than or equal to 0"),
    ({"timeout_ms": 0}, 422, "timeout_ms", "greater than"),
    ({"name": "renamed"}, 422, "name", "Extra inputs are not permitted"),
    ({"kind": "http"}, 422, "kind", "Extra inputs are not permitted"),
    ({"protocol": "v2"}, 422, None, 'protocol "v2" is for HTTP model servers'),
    ({"target": "http://127.0.0.1:9/infer"}, 422, None, 'a URL is an HTTP model: set kind to "http"'),
    ({"target": "tests.hosted_models:nope"}, 422, "target", "the dotted path does not import"),
])
def test_a_bad_patch_is_refused_and_changes_nothing(world: World, registered: HostedModel, body: dict[str, Any],
                                                    status: int, field: str | None, said: str) -> None:
    r = _patch(api_session(world.admin), "sup", "collab", body)
    assert r.status_code == status, r.content
    assert said in r.json()["error"]["message"]
    if field is not None:  # None: a kind that does not fit the target (see the test below)
        assert r.json()["error"]["field"] == field
    m = HostedModel.objects.get(name="collab")
    assert (m.target, m.protocol, m.weight, m.timeout_ms) == (RECOMMEND, "json", 1.0, 500)
    assert not AuditEvent.objects.filter(action="model.update").exists()


def test_a_patch_to_a_model_that_does_not_exist_is_404(world: World) -> None:
    r = _patch(api_session(world.admin), "sup", "ghost", {"weight": 2})
    assert r.status_code == 404
    assert r.json()["error"] == {"code": "not_found", "message": "sup has no model named 'ghost'", "field": "name"}


def test_delete_removes_the_model_audited_then_404(world: World, registered: HostedModel, committed: Any) -> None:
    assert [s.name for s in _hosted("sup")] == ["collab"]
    admin = api_session(world.admin)
    with committed():
        r = admin.delete(_model("sup", "collab") + "?reason=replaced+by+v4")
    assert r.status_code == 204
    assert r.content == b""
    assert _hosted("sup") == ()
    assert not HostedModel.objects.exists()
    ev = AuditEvent.objects.get(action="model.remove")
    assert ev.actor == world.admin
    assert ev.system == world.supervised
    assert ev.target == "collab"
    assert ev.reason == "replaced by v4"
    assert ev.data == {"name": "collab", "kind": "python", "target": RECOMMEND, "protocol": "json", "role": "voter",
                       "weight": 1.0, "timeout_ms": 500, "enabled": True}
    again = admin.delete(_model("sup", "collab"))
    assert again.status_code == 404
    assert again.json()["error"]["field"] == "name"
    assert admin.get(_models("sup")).json() == []
    assert _patch(admin, "sup", "collab", {"weight": 2}).status_code == 404


@pytest.mark.parametrize("url", ["http://[::1/infer", "http://" + "a" * 64 + ".example/infer", "http://bad\tx/"])
def test_a_url_that_cannot_even_be_parsed_is_refused_not_a_500(world: World, url: str) -> None:
    err = _refused(world, {"name": "m", "kind": "http", "target": url})
    assert err["field"] == "target"
    assert "cannot be reached" in err["message"]
