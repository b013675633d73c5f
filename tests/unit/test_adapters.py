"""Calling hosted models (oversight.adapters): answers checked, Open Inference v2 in and out, dotted
paths, and Python callables and HTTP servers that raise, answer garbage or are too slow."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from oversight.adapters import (
    DEADLINE,
    ERROR,
    GARBAGE,
    ImportFailed,
    Spec,
    call,
    call_all,
    http_client,
    load_callable,
    normalise,
    v2_answer,
    v2_request,
)

HERE = __name__  # the models below are named by dotted path, as an admin would register them
REQUEST: dict[str, Any] = {"decision": "dec_1", "system": "sup", "subject": "listener-1",
                           "context": {"hour": 23}, "features": {"tempo": 171.0}}


# --- models named by dotted path ---------------------------------------------------------------


def quick(request: dict[str, Any]) -> dict[str, Any]:
    return {"output": {"subject": request["subject"]}, "confidence": 0.9}


def boom(request: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("model weights missing")


def garbage(request: dict[str, Any]) -> Any:
    return ["not", "an", "object"]


def too_sure(request: dict[str, Any]) -> dict[str, Any]:
    return {"output": "spam", "confidence": 1.7}


def slow(request: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0.15)
    return {"output": "late", "confidence": 0.9}


def hang(request: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0.8)  # keeps its pool thread a while; call_all must not wait for it
    return {"output": "much too late"}


NOT_CALLABLE = {"output": "a dict, not a function"}


def spec(target: str, name: str = "m", timeout_ms: int = 500, **kw: Any) -> Spec:
    return Spec(name, kw.pop("kind", "python"), target if "://" in target else f"{HERE}:{target}",
                timeout_ms=timeout_ms, **kw)


# --- normalise ----------------------------------------------------------------------------------


def test_a_good_answer_is_kept_as_it_came() -> None:
    a = normalise("m", {"output": {"items": ["a"]}, "confidence": 1,
                        "veto": {"items": ["x"], "models": ["y"], "reason": "late"}})
    assert a.ok
    assert a.model == "m"
    assert a.output == {"items": ["a"]}
    assert a.confidence == 1.0
    assert isinstance(a.confidence, float)
    assert (a.veto_items, a.veto_models, a.veto_reason) == (("x",), ("y",), "late")


def test_an_answer_without_confidence_or_veto() -> None:
    a = normalise("m", {"output": "spam"})
    assert a.ok
    assert a.output == "spam"
    assert a.confidence is None
    assert a.veto_items == ()
    assert a.veto_models == ()


def test_a_veto_alone_is_an_answer_with_no_output() -> None:
    a = normalise("ctx", {"veto": {"items": ["t-metal"]}})
    assert a.ok
    assert a.output is None
    assert a.veto_items == ("t-metal",)


@pytest.mark.parametrize(("answer", "said"), [
    ({"confidence": 0.9}, "the answer has no output"),
    ({}, "the answer has no output"),
    ("spam", "the answer is str, not an object with an output"),
    (["spam"], "the answer is list, not an object with an output"),
    (None, "the answer is NoneType, not an object with an output"),
    ({"output": 1, "confidence": 1.5}, "confidence 1.5 is outside 0–1"),
    ({"output": 1, "confidence": -0.01}, "confidence -0.01 is outside 0–1"),
    ({"output": 1, "confidence": "0.9"}, "confidence '0.9' is not a number"),
    ({"output": 1, "confidence": True}, "confidence True is not a number"),
    ({"output": 1, "confidence": float("nan")}, "confidence nan is not a number"),
    ({"output": 1, "confidence": float("inf")}, "confidence inf is not a number"),
    ({"output": 1, "confidence": [0.9]}, "confidence [0.9] is not a number"),
    ({"output": 1, "veto": "t-metal"}, "veto must be an object"),
    ({"output": 1, "veto": {"items": "t-metal"}}, "veto items must be a list of strings"),
    ({"output": 1, "veto": {"items": [1, 2]}}, "veto items must be a list of strings"),
    ({"output": 1, "veto": {"models": [None]}}, "veto models must be a list of strings"),
    ({"output": 1, "veto": {"models": "collab"}}, "veto models must be a list of strings"),
])
def test_a_malformed_answer_is_garbage_saying_what_is_wrong(answer: Any, said: str) -> None:
    a = normalise("m", answer)
    assert not a.ok
    assert a.error == GARBAGE
    assert a.model == "m"
    assert a.detail == said
    assert a.output is None
    assert a.confidence is None


@pytest.mark.parametrize("output", [{1, 2}, object(), {"when": time}, b"\xff"])
def test_an_output_that_cannot_be_stored_as_json_is_garbage(output: Any) -> None:
    a = normalise("m", {"output": output, "confidence": 0.9})
    assert a.error == GARBAGE
    assert a.detail


def test_an_empty_veto_is_no_veto_and_a_reason_becomes_text() -> None:
    assert normalise("m", {"output": 1, "veto": None}).veto_items == ()
    assert normalise("m", {"output": 1, "veto": {}}).ok
    assert normalise("m", {"output": 1, "veto": {"items": ["x"], "reason": 42}}).veto_reason == "42"


# --- Open Inference Protocol v2 ---------------------------------------------------------------


def test_v2_request_has_one_typed_tensor_per_feature_and_context_field() -> None:
    body = v2_request({"decision": "dec_9", "features": {"text": "win", "n": 3, "score": 0.5, "flag": True,
                                                         "tags": ["a", "b"]},
                       "context": {"hour": 23, "mood": {"calm": 1}}})
    assert body["id"] == "dec_9"
    assert body["inputs"] == [
        {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["win"]},
        {"name": "n", "shape": [1], "datatype": "INT64", "data": [3]},
        {"name": "score", "shape": [1], "datatype": "FP64", "data": [0.5]},
        {"name": "flag", "shape": [1], "datatype": "BOOL", "data": [True]},  # a bool, not an INT64
        {"name": "tags", "shape": [1], "datatype": "BYTES", "data": ['["a","b"]']},  # JSON text
        {"name": "context.hour", "shape": [1], "datatype": "INT64", "data": [23]},
        {"name": "context.mood", "shape": [1], "datatype": "BYTES", "data": ['{"calm":1}']},
    ]
    json.dumps(body)  # plain JSON


def test_v2_request_without_features_or_context() -> None:
    assert v2_request({"decision": "dec_1", "features": None, "context": {}}) == {"id": "dec_1", "inputs": []}
    assert v2_request({}) == {"id": "", "inputs": []}


def _tensor(name: str, *data: Any) -> dict[str, Any]:
    return {"name": name, "shape": [len(data)], "datatype": "BYTES", "data": list(data)}


def test_v2_answer_takes_the_tensor_named_output_and_its_confidence() -> None:
    body = {"outputs": [_tensor("logits", 0.1, 0.9), _tensor("output", "spam"), _tensor("confidence", 0.97)]}
    assert v2_answer(body) == {"output": "spam", "confidence": 0.97}


def test_v2_answer_takes_the_first_tensor_when_none_is_named_output() -> None:
    assert v2_answer({"outputs": [_tensor("label", "ham"), _tensor("other", "x")]}) == {"output": "ham"}


def test_v2_answer_gives_a_list_for_several_elements() -> None:
    assert v2_answer({"outputs": [_tensor("output", "t1", "t2", "t3")]}) == {"output": ["t1", "t2", "t3"]}


def test_v2_answer_ignores_an_empty_confidence_tensor() -> None:
    assert v2_answer({"outputs": [_tensor("output", "x"), _tensor("confidence")]}) == {"output": "x"}


@pytest.mark.parametrize(("body", "said"), [
    ({}, "the v2 answer has no outputs"),
    ({"outputs": []}, "the v2 answer has no outputs"),
    ({"outputs": "spam"}, "the v2 answer has no outputs"),
    ([{"name": "output"}], "the v2 answer has no outputs"),
    ({"outputs": [_tensor("output")]}, "the v2 output tensor has no data"),
    ({"outputs": [{"name": "output", "data": "spam"}]}, "the v2 output tensor has no data"),
    ({"outputs": ["spam"]}, "the v2 output tensor has no data"),
])
def test_v2_answer_without_usable_outputs_is_refused(body: Any, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        v2_answer(body)


def test_a_v2_confidence_out_of_range_is_garbage_once_normalised() -> None:
    a = normalise("m", v2_answer({"outputs": [_tensor("output", "x"), _tensor("confidence", 3.0)]}))
    assert a.error == GARBAGE
    assert "outside 0–1" in a.detail


# --- dotted paths -----------------------------------------------------------------------------


def test_a_dotted_path_loads_with_a_colon_or_a_dot() -> None:
    assert load_callable(f"{HERE}:quick") is quick
    assert load_callable(f"{HERE}.quick") is quick


@pytest.mark.parametrize(("target", "said"), [
    ("no_such_module_xyz:fn", "module 'no_such_module_xyz' does not import: ModuleNotFoundError"),
    (f"{HERE}:nope", f"module '{HERE}' has no 'nope'"),
    (f"{HERE}:NOT_CALLABLE", f"'{HERE}:NOT_CALLABLE' is not callable"),
    ("justaname", "'justaname' is not a dotted path: write package.module:function"),
    (":fn", "':fn' is not a dotted path"),
    (f"{HERE}:", f"'{HERE}:' is not a dotted path"),
])
def test_a_dotted_path_that_does_not_load_says_why(target: str, said: str) -> None:
    with pytest.raises(ImportFailed) as caught:
        load_callable(target)
    assert said in str(caught.value)


def test_a_missing_module_of_an_existing_package_says_so() -> None:
    with pytest.raises(ImportFailed, match="module 'oversight.no_such_submodule' does not import"):
        load_callable("oversight.no_such_submodule:fn")


# --- call: one model --------------------------------------------------------------------------


def test_call_a_python_callable() -> None:
    a = call(spec("quick"), REQUEST)
    assert a.ok
    assert a.output == {"subject": "listener-1"}
    assert a.confidence == 0.9
    assert 0 < a.latency_ms < 500


@pytest.mark.parametrize(("target", "error", "said"), [
    ("boom", ERROR, "RuntimeError: model weights missing"),
    ("garbage", GARBAGE, "the answer is list, not an object with an output"),
    ("too_sure", GARBAGE, "confidence 1.7 is outside 0–1"),
    ("nope", ERROR, "ImportFailed: module"),
])
def test_call_never_raises_a_failure_is_an_answer(target: str, error: str, said: str) -> None:
    a = call(spec(target), REQUEST)
    assert a.error == error
    assert said in a.detail
    assert a.output is None


def test_a_callable_slower_than_its_timeout_is_a_deadline_miss() -> None:
    a = call(spec("slow", timeout_ms=50), REQUEST)
    assert a.error == DEADLINE
    assert a.output is None
    assert a.latency_ms >= 150
    assert a.detail.startswith("answered after ")
    assert a.detail.endswith(" ms, over its 50 ms")


# --- call_all: many models, one budget ----------------------------------------------------------


def test_call_all_with_no_models() -> None:
    assert call_all([], REQUEST, 1.0) == []


def test_call_all_answers_in_the_order_of_the_models() -> None:
    answers = call_all([spec("boom", "b"), spec("quick", "q"), spec("garbage", "g")], REQUEST, 1.0)
    assert [(a.model, a.error) for a in answers] == [("b", ERROR), ("q", ""), ("g", GARBAGE)]


def test_call_all_does_not_wait_for_a_hanging_callable_beyond_the_budget() -> None:
    started = time.perf_counter()
    answers = call_all([spec("hang", "h", timeout_ms=10_000), spec("quick", "q")], REQUEST, 0.1)
    took = time.perf_counter() - started
    assert took < 0.4, f"waited {took:.2f} s on a 0.1 s budget"
    h, q = answers
    assert q.ok
    assert q.output == {"subject": "listener-1"}
    assert h.model == "h"
    assert h.error == DEADLINE
    assert h.output is None
    assert h.detail == "no answer within 100 ms"


def test_call_all_bounds_a_single_hanging_callable_too() -> None:
    started = time.perf_counter()
    (h,) = call_all([spec("hang", "h", timeout_ms=10_000)], REQUEST, 0.05)
    assert time.perf_counter() - started < 0.3
    assert h.error == DEADLINE


def test_call_all_bounds_by_the_models_timeout_when_the_budget_is_larger() -> None:
    started = time.perf_counter()
    (h,) = call_all([spec("hang", "h", timeout_ms=80)], REQUEST, 5.0)
    assert time.perf_counter() - started < 0.3
    assert h.error == DEADLINE
    assert h.detail == "no answer within 80 ms"


def test_call_all_with_no_budget_left_asks_nobody_for_long() -> None:
    started = time.perf_counter()
    (q,) = call_all([spec("hang", "h")], REQUEST, -1.0)
    assert time.perf_counter() - started < 0.2
    assert q.error == DEADLINE


# --- HTTP model servers (a real local server) -------------------------------------------------


class _Server(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append((self.path, body))  # type: ignore[attr-defined]
        if self.path == "/slow":
            time.sleep(0.3)
        status, data = {
            "/json": (200, json.dumps({"output": body.get("subject"), "confidence": 0.8}).encode()),
            "/v2": (200, json.dumps({"outputs": [{"name": "output", "datatype": "BYTES", "shape": [1],
                                                  "data": ["ham"]}]}).encode()),
            "/broken": (500, b"oops"),
            "/html": (200, b"<html>not json</html>"),
            "/v2-empty": (200, b'{"outputs": []}'),
            "/slow": (200, b'{"output": "late"}'),
        }[self.path]
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that stopped waiting (the deadline) leaves a broken pipe behind


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadingHTTPServer]:
    srv = _QuietServer(("127.0.0.1", 0), _Server)
    srv.seen = []  # type: ignore[attr-defined]
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    http_client()  # made once per process (its TLS context takes a moment): not inside a timed test
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: ThreadingHTTPServer, path: str) -> str:
    return f"http://127.0.0.1:{srv.server_port}{path}"


def test_an_http_json_model_is_posted_the_request(server: ThreadingHTTPServer) -> None:
    a = call(spec(_url(server, "/json"), kind="http"), REQUEST)
    assert a.ok
    assert a.output == "listener-1"
    assert a.confidence == 0.8
    assert server.seen[-1] == ("/json", REQUEST)  # type: ignore[attr-defined]


def test_an_http_v2_model_is_posted_tensors(server: ThreadingHTTPServer) -> None:
    a = call(spec(_url(server, "/v2"), kind="http", protocol="v2"), REQUEST)
    assert a.ok
    assert a.output == "ham"
    assert a.confidence is None
    assert server.seen[-1] == ("/v2", v2_request(REQUEST))  # type: ignore[attr-defined]


@pytest.mark.parametrize(("path", "protocol", "error", "said"), [
    ("/broken", "json", ERROR, "HTTP 500 from http://127.0.0.1:"),
    ("/html", "json", GARBAGE, "the answer is not JSON"),
    ("/v2-empty", "v2", GARBAGE, "the v2 answer has no outputs"),
])
def test_an_http_model_that_fails(server: ThreadingHTTPServer, path: str, protocol: str, error: str,
                                  said: str) -> None:
    a = call(spec(_url(server, path), kind="http", protocol=protocol), REQUEST)
    assert a.error == error
    assert said in a.detail


def test_an_http_model_nobody_listens_at_is_an_error() -> None:
    a = call(spec("http://127.0.0.1:9/infer", kind="http"), REQUEST)
    assert a.error == ERROR
    assert "ConnectError" in a.detail


def test_a_slow_http_model_is_cut_off_at_the_budget(server: ThreadingHTTPServer) -> None:
    started = time.perf_counter()
    (a,) = call_all([spec(_url(server, "/slow"), kind="http", timeout_ms=5000)], REQUEST, 0.1)
    assert time.perf_counter() - started < 0.28
    assert a.error == DEADLINE
    assert a.detail == "no answer within 100 ms"  # what it was given, not its own 5000 ms
