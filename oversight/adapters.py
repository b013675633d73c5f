"""Calling a hosted model: a Python callable named by dotted path, or an HTTP model server.

Every adapter takes the same request (``{"decision", "system", "subject", "context", "features"}``)
and gives back an ``Answer``: the model's output and confidence, a context model's veto, or what
went wrong (``error``: the model raised or answered with an HTTP error; ``garbage``: its answer has
the wrong shape; ``deadline``: it did not answer in time). Nothing a model does escapes as an
exception: the ensemble and the gate decide what a failed model means for the decision.

Answer shapes a model may give:

* JSON (Python callables, and HTTP servers with protocol ``json``):
  ``{"output": …, "confidence": 0.0–1.0, "veto": {"items": […], "models": […], "reason": "…"}}``
  (``confidence`` and ``veto`` optional);
* Open Inference Protocol v2 (``protocol v2``): the request is ``{"id", "inputs": [one tensor per
  feature and context field, shape [1]]}`` posted to the model's ``…/v2/models/<name>/infer`` URL;
  the answer's ``outputs`` tensor named ``output`` (or the first one) is the output (its one element,
  or the list of its elements), and a tensor named ``confidence`` the confidence.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import httpx

from oversight import jsonutil

ERROR, GARBAGE, DEADLINE = "error", "garbage", "deadline"


@dataclass(frozen=True, slots=True)
class Spec:
    """A hosted model as the scoring worker sees it (from ``oversight.models.HostedModel``)."""

    name: str
    kind: str  # python | http
    target: str  # dotted path or URL
    protocol: str = "json"  # json | v2 (http only)
    role: str = "voter"  # voter | context
    weight: float = 1.0
    timeout_ms: int = 500


@dataclass(slots=True)
class Answer:
    model: str
    output: Any = None
    confidence: float | None = None
    veto_items: tuple[str, ...] = ()
    veto_models: tuple[str, ...] = ()
    veto_reason: str = ""
    error: str = ""  # "" (answered), error, garbage, deadline
    detail: str = ""  # what went wrong, in words
    latency_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.error


class ImportFailed(ValueError):
    pass


@cache
def load_callable(target: str) -> Callable[[dict[str, Any]], Any]:
    """``package.module:function`` (or ``package.module.function``) imported; ImportFailed says why not."""
    module_name, sep, attr = target.partition(":")
    if not sep:
        module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        raise ImportFailed(f"{target!r} is not a dotted path: write package.module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the registrant's to fix, said in words
        raise ImportFailed(f"module {module_name!r} does not import: {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, attr, None)
    if fn is None:
        raise ImportFailed(f"module {module_name!r} has no {attr!r}")
    if not callable(fn):
        raise ImportFailed(f"{target!r} is not callable")
    return fn  # type: ignore[no-any-return,unused-ignore]


def _confidence(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"confidence {value!r} is not a number")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"confidence {value!r} is outside 0–1")
    return float(value)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"veto {what} must be a list of strings")
    return tuple(value)


def normalise(model: str, answer: Any) -> Answer:
    """A JSON answer checked: the Answer, or a ``garbage`` one saying what is wrong with it."""
    try:
        if not isinstance(answer, Mapping):
            raise ValueError(f"the answer is {type(answer).__name__}, not an object with an output")
        if "output" not in answer and "veto" not in answer:
            raise ValueError("the answer has no output")
        veto = answer.get("veto") or {}
        if not isinstance(veto, Mapping):
            raise ValueError("veto must be an object")
        jsonutil.dumps(answer.get("output"))  # storable as JSON
        return Answer(model, output=answer.get("output"), confidence=_confidence(answer.get("confidence")),
                      veto_items=_strings(veto.get("items"), "items"),
                      veto_models=_strings(veto.get("models"), "models"), veto_reason=str(veto.get("reason") or ""))
    except (ValueError, TypeError) as exc:
        return Answer(model, error=GARBAGE, detail=str(exc))


def _v2_tensor(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"name": name, "shape": [1], "datatype": "BOOL", "data": [value]}
    if isinstance(value, int):
        return {"name": name, "shape": [1], "datatype": "INT64", "data": [value]}
    if isinstance(value, float):
        return {"name": name, "shape": [1], "datatype": "FP64", "data": [value]}
    text = value if isinstance(value, str) else jsonutil.dumps(value).decode()
    return {"name": name, "shape": [1], "datatype": "BYTES", "data": [text]}


def v2_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """The Open Inference Protocol v2 body for one request: one tensor per feature and context field."""
    inputs = [_v2_tensor(k, v) for k, v in (request.get("features") or {}).items()]
    inputs += [_v2_tensor(f"context.{k}", v) for k, v in (request.get("context") or {}).items()]
    return {"id": request.get("decision", ""), "inputs": inputs}


def v2_answer(body: Any) -> dict[str, Any]:
    """An OIP v2 answer as the JSON answer shape (ValueError when it has no outputs)."""
    if not isinstance(body, Mapping) or not isinstance(body.get("outputs"), list) or not body["outputs"]:
        raise ValueError("the v2 answer has no outputs")
    tensors = {t.get("name"): t for t in body["outputs"] if isinstance(t, Mapping)}
    out = tensors.get("output") or body["outputs"][0]
    data = out.get("data") if isinstance(out, Mapping) else None
    if not isinstance(data, list) or not data:
        raise ValueError("the v2 output tensor has no data")
    answer: dict[str, Any] = {"output": data[0] if len(data) == 1 else data}
    conf = tensors.get("confidence")
    if conf is not None and isinstance(conf.get("data"), list) and conf["data"]:
        answer["confidence"] = conf["data"][0]
    return answer


_http: httpx.Client | None = None


def http_client() -> httpx.Client:
    global _http
    if _http is None:
        _http = httpx.Client(limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))
    return _http


def _call_http(spec: Spec, request: dict[str, Any], timeout_s: float) -> Any:
    body = v2_request(request) if spec.protocol == "v2" else request
    r = http_client().post(spec.target, content=jsonutil.dumps(body), timeout=timeout_s,
                           headers={"Content-Type": "application/json"})
    if r.status_code >= 400:
        raise RuntimeError(f"HTTP {r.status_code} from {spec.target}")
    try:
        answer = jsonutil.loads(r.content)
    except ValueError as exc:
        raise _Garbage(f"the answer is not JSON: {exc}") from exc
    if spec.protocol == "v2":
        try:
            answer = v2_answer(answer)
        except ValueError as exc:
            raise _Garbage(str(exc)) from exc
    return answer


class _Garbage(Exception):
    pass


def call(spec: Spec, request: dict[str, Any], timeout_s: float | None = None) -> Answer:
    """One model, one request: never raises (a failure is an Answer with ``error``). A Python
    callable is not interrupted here: ``call_all`` bounds the wait for it."""
    started = time.perf_counter()
    timeout_s = spec.timeout_ms / 1000.0 if timeout_s is None else timeout_s
    try:
        if spec.kind == "http":
            raw = _call_http(spec, request, timeout_s)
        else:
            raw = load_callable(spec.target)(request)
        answer = normalise(spec.name, raw)
    except httpx.TimeoutException:
        answer = Answer(spec.name, error=DEADLINE, detail=f"no answer within {round(timeout_s * 1000)} ms")
    except _Garbage as exc:
        answer = Answer(spec.name, error=GARBAGE, detail=str(exc))
    except Exception as exc:  # noqa: BLE001 - a model's failure is recorded, never raised to the client
        answer = Answer(spec.name, error=ERROR, detail=f"{type(exc).__name__}: {exc}"[:300])
    answer.latency_ms = (time.perf_counter() - started) * 1000.0
    if answer.ok and answer.latency_ms > spec.timeout_ms:
        answer = Answer(spec.name, error=DEADLINE, latency_ms=answer.latency_ms,
                        detail=f"answered after {answer.latency_ms:.0f} ms, over its {spec.timeout_ms} ms")
    return answer


# Models run side by side; a hung Python callable keeps its thread until it returns, so the pool
# is larger than the number of models one decision needs.
_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="hosted-model")


def call_all(specs: Sequence[Spec], request: dict[str, Any], budget_s: float) -> list[Answer]:
    """Every model at once, each bounded by its own timeout and all by ``budget_s``; in ``specs`` order."""
    if not specs:
        return []
    # Every model on the pool, HTTP ones too: httpx's timeout bounds each phase of a request (connect,
    # write, each read), not the whole of it; the wait below bounds the whole.
    futures = {_pool.submit(call, s, request, min(s.timeout_ms / 1000.0, max(budget_s, 0.001))): s for s in specs}
    limit = min(max(s.timeout_ms for s in specs) / 1000.0, max(budget_s, 0.0))
    wait(futures, timeout=limit)
    out: list[Answer] = []
    for fut, spec in futures.items():
        if fut.done():
            out.append(fut.result())
        else:
            out.append(Answer(spec.name, error=DEADLINE, latency_ms=limit * 1000.0,
                              detail=f"no answer within {min(spec.timeout_ms, round(limit * 1000))} ms"))
    return out
