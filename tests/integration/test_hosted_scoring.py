"""Hosted scoring end to end: the API (production ASGI app) → a real Celery worker on the scoring
queue → the models → the ensemble → the gate → PostgreSQL, with deadlines, failures, kill switches
and a worker killed mid-task."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psutil
import pytest
import redis
from django.conf import settings
from pydantic import ValidationError

from oversight import actions, breaker_actions, config, hosted, scoring
from oversight.models import AISystem, AuditEvent, Decision
from tests.conftest import World, free_port

pytestmark = pytest.mark.usefixtures("scoring_worker_proc")


def _register(slug: str, name: str, target: str, **extra: Any) -> None:
    hosted.register(None, slug, {"name": name, "kind": "python", "target": f"tests.hosted_models:{target}", **extra})


def _decide(world: World, slug: str, wait_ms: int = 5000, **body: Any) -> Any:
    body.setdefault("subject", "listener-1")
    return world.client_for(slug).post(f"/api/v1/systems/{slug}/decisions?wait_ms={wait_ms}", body,
                                       content_type="application/json")


def _stored(resp: Any) -> Decision:
    return Decision.objects.get(id=resp.json()["id"].removeprefix("dec_"))


def _late_answer(decision: Decision, timeout_s: float = 10.0) -> dict[str, Any]:
    """The worker's answer for a job whose web process stopped waiting: still pushed to the job's
    reply list (kept a minute), so a test can wait for the task to finish instead of sleeping."""
    got = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=timeout_s + 5).blpop(
        [scoring.reply_key(str(decision.id))], timeout=timeout_s)
    assert got is not None, "the task never finished"
    return json.loads(got[1])


def _task_results() -> list[bytes]:
    """Celery's stored task results under this test run's prefix."""
    return list(redis.Redis.from_url(settings.REDIS_URL).scan_iter(
        match=f"{settings.REDIS_PREFIX}:celery:celery-task-meta-*", count=1000))


def test_an_ensemble_votes_and_the_context_model_vetoes(tworld: World) -> None:
    _register("sup", "collab", "recommend", weight=2)
    _register("sup", "calm", "calm")
    _register("sup", "bedtime", "bedtime", role="context")
    r = _decide(tworld, "sup", context={"hour": 23, "activity": "sleep"})
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["status"] == "released"
    assert body["route"] == "auto"
    assert "t-metal" not in body["output"]["items"]  # however sure the collaborative filter was
    # collab's list closes up behind the vetoed item: t-pop leads (2 × 0.9 ÷ 1), then t-jazz (in both lists)
    assert body["output"]["items"] == ["t-pop", "t-jazz", "t-ambient"]
    assert any("item t-metal vetoed: bedtime: nothing loud" in x for x in body["reasons"])
    assert any(x.startswith("ensemble of 2 models") for x in body["reasons"])
    votes = {v["model"]: v for v in _stored(r).prediction["votes"]}
    assert set(votes) == {"collab", "calm", "bedtime"}
    assert votes["collab"]["confidence"] == 0.9
    assert votes["collab"]["weight"] == 2
    assert votes["bedtime"]["veto"]["items"] == ["t-metal"]
    # In the afternoon the same ensemble keeps metal.
    r = _decide(tworld, "sup", context={"hour": 15})
    assert "t-metal" in r.json()["output"]["items"]


def test_labels_win_by_weighted_vote_and_low_confidence_goes_to_a_person(tworld: World) -> None:
    _register("sup", "a", "approve")
    _register("sup", "b", "refer")
    r = _decide(tworld, "sup")
    body = r.json()
    # approve 0.8 against refer 0.6: approve wins with 0.8 of 2.0 weighted confidence = 0.4 < 0.6.
    assert body["status"] == "pending_review"
    assert body["output"] is None
    assert body["confidence"] == pytest.approx(0.4)
    assert any("a agreed" in x for x in body["reasons"])
    assert _stored(r).prediction["output"] == {"label": "approve"}  # what the person is shown


def test_a_hanging_model_meets_the_deadline_and_the_fallback_answers(tworld: World) -> None:
    _register("sup", "slow", "hang", timeout_ms=10_000)
    started = time.monotonic()
    r = _decide(tworld, "sup", wait_ms=400)
    took = time.monotonic() - started
    assert r.status_code == 201
    body = r.json()
    assert body["status"] == "fallback"
    assert body["route"] == "fallback"
    assert body["output"] == {"items": ["safe"]}
    # The worker bounds the model by what is left of the 400 ms, or the web process stops waiting.
    assert any(x == "the hosted models did not answer within 400 ms" or x.startswith(
        "model slow did not answer (deadline: no answer within") for x in body["reasons"]), body["reasons"]
    assert took < 2.0, f"the client waited {took:.2f} s for a 400 ms deadline"
    d = _stored(r)
    assert d.failure == "deadline"  # counted for the breakers (gate.deadline_miss_rate)
    if "the hosted models did not answer within 400 ms" in body["reasons"]:
        # The web process stopped waiting first; the task ends later (it bounds the model by the
        # deadline too), finds the fallback stored, adds nothing and says so on the job's reply list.
        assert _late_answer(d)["status"] in ("exists", "late")
    # (Otherwise the answer the client got was the task's own: it had finished.)
    assert Decision.objects.filter(id=d.id).count() == 1
    assert _stored(r).route == "fallback"


@pytest.mark.parametrize(("target", "failure", "said"), [
    ("boom", "error", "RuntimeError: model weights missing"),
    ("garbage", "garbage", "the answer is str, not an object with an output"),
])
def test_a_failing_model_gives_the_fallback_never_a_500(tworld: World, target: str, failure: str, said: str) -> None:
    _register("sup", "m", target)
    r = _decide(tworld, "sup")
    assert r.status_code == 201
    body = r.json()
    assert body["status"] == "fallback"
    assert body["output"] == {"items": ["safe"]}
    assert any(said in x for x in body["reasons"]), body["reasons"]
    assert "no hosted model answered" in body["reasons"]
    assert _stored(r).failure == failure


def test_one_failing_voter_leaves_the_others_to_answer(tworld: World) -> None:
    _register("sup", "collab", "recommend")
    _register("sup", "broken", "boom")
    body = _decide(tworld, "sup").json()
    assert body["status"] == "released"
    assert body["output"]["items"][0] == "t-metal"
    assert any(x.startswith("model broken did not answer (error") for x in body["reasons"])


def test_the_worker_honours_a_model_kill_switch_on_its_next_task(tworld: World) -> None:
    _register("sup", "collab", "recommend")
    _register("sup", "calm", "calm")
    assert "t-metal" in _decide(tworld, "sup").json()["output"]["items"]
    actions.set_killswitch(tworld.admin, "model", True, "plays metal to everyone", "sup", "collab")
    r = _decide(tworld, "sup")
    body = r.json()
    assert body["output"]["items"] == ["t-ambient", "t-jazz"]
    assert "model collab not asked: kill switch engaged (plays metal to everyone)" in body["reasons"]
    assert {v["model"] for v in _stored(r).prediction["votes"]} == {"calm"}
    # The whole system stopped: nothing is scored, the fallback answers at once.
    actions.set_killswitch(tworld.admin, "system", True, "stop everything", "sup")
    body = _decide(tworld, "sup").json()
    assert body["route"] == "killed"
    assert body["output"] == {"items": ["safe"]}


def test_a_retry_with_the_same_key_replays_without_scoring_again(tworld: World) -> None:
    _register("sup", "echo", "echo_subject")
    first = _decide(tworld, "sup", idempotency_key="req-1")
    again = _decide(tworld, "sup", idempotency_key="req-1")
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = _decide(tworld, "sup", idempotency_key="req-1", subject="someone-else")
    assert other.status_code == 409
    assert other.json()["error"]["field"] == "idempotency_key"
    assert Decision.objects.filter(system=tworld.supervised).count() == 1


def test_a_worker_killed_mid_task_neither_loses_nor_doubles_the_decision(
        tworld: World, scoring_worker_proc: Any) -> None:
    _register("sup", "m", "slow_once", timeout_ms=20_000)
    marker = scoring_worker_proc.markers / "slow-once-killed-mid-task"
    killed: list[int] = []

    def kill_the_child_mid_task() -> None:
        deadline = time.monotonic() + 15
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        pid = int(marker.read_text())
        psutil.Process(pid).kill()  # the pool child running the task: SIGKILL, no goodbye
        killed.append(pid)

    killer = threading.Thread(target=kill_the_child_mid_task)
    killer.start()
    r = _decide(tworld, "sup", wait_ms=20_000, subject="killed-mid-task")
    killer.join()
    assert killed, "the task never started"
    body = r.json()
    assert r.status_code == 201, body
    # Delivered again to a new child (acks late, rejected on worker loss), scored once.
    assert body["route"] == "auto"
    assert body["output"] == {"items": ["after-restart"]}
    assert Decision.objects.filter(system=tworld.supervised).count() == 1


def test_wait_ms_out_of_range_is_refused_with_a_message(tworld: World) -> None:
    _register("sup", "echo", "echo_subject")
    for bad in ("0", "abc", "30001"):
        r = tworld.client_for("sup").post(f"/api/v1/systems/sup/decisions?wait_ms={bad}", {"subject": "x"},
                                          content_type="application/json")
        assert r.status_code == 422
        assert r.json()["error"]["field"] == "wait_ms"
        assert "from 1 to 30000" in r.json()["error"]["message"]


class _V2Server(BaseHTTPRequestHandler):
    """A model server speaking the Open Inference Protocol v2: spam if the text says 'win'."""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"name": "spam-v2", "ready": true}')

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = next(t["data"][0] for t in body["inputs"] if t["name"] == "text")
        label = "spam" if "win" in text else "ham"
        answer = {"model_name": "spam-v2", "id": body["id"], "outputs": [
            {"name": "output", "shape": [1], "datatype": "BYTES", "data": [label]},
            {"name": "confidence", "shape": [1], "datatype": "FP64", "data": [0.97]}]}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_an_http_model_server_speaking_open_inference_v2(tworld: World) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _V2Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v2/models/spam-v2/infer"
        hosted.register(None, "auto", {"name": "spam-v2", "kind": "http", "target": url, "protocol": "v2",
                                       "timeout_ms": 2000})
        r = _decide(tworld, "auto", features={"text": "win a prize now"})
        body = r.json()
        assert body["status"] == "released"
        assert body["output"] == "spam"
        assert body["confidence"] == 0.97
        assert _decide(tworld, "auto", features={"text": "see you at lunch"}).json()["output"] == "ham"
    finally:
        server.shutdown()
    # The server is gone: the model errors, the fallback answers (and registering it now is refused).
    body = _decide(tworld, "auto", features={"text": "hello"}).json()
    assert body["status"] == "fallback"
    assert body["output"] == {"label": "hold"}
    assert AuditEvent.objects.filter(action="model.register", target="spam-v2").exists()
    assert AISystem.objects.get(slug="auto").hosted_models.count() == 1


def test_a_batch_scores_items_without_a_prediction_and_keeps_the_order(tworld: World) -> None:
    _register("sup", "echo", "echo_subject")
    items = [
        {"subject": "a", "idempotency_key": "k-a"},
        {"subject": "b", "prediction": {"output": {"items": ["mine"]}, "confidence": 0.9}},
        {"subject": "c"},
        {"subject": "a", "idempotency_key": "k-a"},  # a repeat inside the batch replays the first
        {"subject": 5},  # invalid: fails alone
    ]
    started = time.monotonic()
    r = tworld.client_for("sup").post("/api/v1/systems/sup/decisions/batch?wait_ms=10000", {"items": items},
                                      content_type="application/json")
    # The batch's answers come back on one list as each task ends: no waiting out the deadline.
    assert time.monotonic() - started < 5.0
    assert r.status_code == 200
    res = r.json()["results"]
    assert res[0]["output"]["subject"] == "a"
    assert res[0]["route"] == "auto"
    assert res[1]["output"] == {"items": ["mine"]}  # the client's own prediction, not scored
    assert res[2]["output"]["subject"] == "c"
    assert res[3]["id"] == res[0]["id"]
    assert res[3]["replayed"] is True
    assert res[4]["error"]["field"] == "items.4.subject" or "items[4]" in res[4]["error"]["message"]
    assert Decision.objects.filter(system=tworld.supervised).count() == 3
    again = tworld.client_for("sup").post("/api/v1/systems/sup/decisions/batch", {"items": items[:1]},
                                          content_type="application/json").json()["results"]
    assert again[0]["id"] == res[0]["id"]
    assert again[0]["replayed"] is True


def test_the_worker_leaves_out_a_model_whose_breaker_is_open_and_asks_nobody_when_the_system_trips(
        tworld: World) -> None:
    _register("sup", "collab", "recommend")
    _register("sup", "calm", "calm")
    breaker_actions.set_by_hand(tworld.admin, "sup", "open", "too many skips", "collab")
    r = _decide(tworld, "sup")
    body = r.json()
    assert body["output"]["items"] == ["t-ambient", "t-jazz"]
    assert "model collab not asked: circuit breaker open (too many skips)" in body["reasons"]
    breaker_actions.set_by_hand(tworld.admin, "sup", "open", "everything is off")
    body = _decide(tworld, "sup").json()
    assert body["route"] == "breaker_open"
    assert body["output"] == {"items": ["safe"]}


def test_when_every_thread_that_may_wait_is_waiting_the_fallback_answers_at_once(tworld: World) -> None:
    _register("sup", "echo", "echo_subject")
    taken = 0
    while scoring.waiting.acquire(blocking=False):  # as if the other requests were all waiting
        taken += 1
    try:
        assert taken == scoring.waiting_limit()
        started = time.monotonic()
        body = _decide(tworld, "sup").json()
        assert time.monotonic() - started < 1.0
        assert body["status"] == "fallback"
        assert any("are already waiting for them" in r for r in body["reasons"])
        assert _stored_id(body).failure == "deadline"
    finally:
        for _ in range(taken):
            scoring.waiting.release()
    assert _decide(tworld, "sup").json()["route"] == "auto"  # a thread is free again


def _stored_id(body: dict[str, Any]) -> Decision:
    return Decision.objects.get(id=body["id"].removeprefix("dec_"))


def test_the_answer_comes_back_on_a_list_and_leaves_no_celery_result_behind(tworld: World) -> None:
    _register("sup", "echo", "echo_subject")
    before = set(_task_results())
    started = time.monotonic()
    r = _decide(tworld, "sup", wait_ms=10_000, subject="by-list")
    assert time.monotonic() - started < 5.0  # the answer came back: the deadline was not waited out
    assert r.status_code == 201
    assert r.json()["output"]["subject"] == "by-list"
    assert r.json()["route"] == "auto"
    assert set(_task_results()) == before  # the web process sent the task with ignore_result
    # The job waits in Redis for ten minutes past its deadline (a task delivered again still finds it).
    ttl = redis.Redis.from_url(settings.REDIS_URL).ttl(scoring.job_key(str(_stored(r).id)))
    assert scoring.JOB_KEEP_S + 9 < ttl <= scoring.JOB_KEEP_S + 11  # the 10 s wait, then ten minutes


def test_celerys_result_backend_carries_the_answer_when_configured(tworld: World, settings: Any) -> None:
    """``OVERSIGHT_SCORING_REPLY=result`` (what `make bench-scoring` compares the list with) works end
    to end, and the web process forgets each result once it has it."""
    settings.SCORING_REPLY = "result"
    _register("sup", "echo", "echo_subject")
    before = set(_task_results())
    started = time.monotonic()
    r = _decide(tworld, "sup", wait_ms=10_000, subject="by-result")
    assert time.monotonic() - started < 5.0
    assert r.status_code == 201
    assert r.json()["output"]["subject"] == "by-result"
    assert _stored(r).route == "auto"
    assert set(_task_results()) == before


def test_when_the_scoring_queue_cannot_be_reached_the_fallback_answers_at_once(tworld: World) -> None:
    _register("sup", "echo", "echo_subject")
    saved = config.redis_epoch._client
    config.redis_epoch._client = redis.Redis(host="127.0.0.1", port=free_port(), **config.FAIL_FAST)
    try:
        started = time.monotonic()
        r = _decide(tworld, "sup")
        took = time.monotonic() - started
    finally:
        config.redis_epoch._client = saved
        config.redis_epoch.down_until = 0.0
    assert r.status_code == 201
    body = r.json()
    assert body["status"] == "fallback"
    assert body["output"] == {"items": ["safe"]}
    assert scoring.QUEUE_AWAY in body["reasons"]
    assert took < 2.0
    assert _stored(r).failure == "deadline"  # counted for the breakers like any miss
    assert _decide(tworld, "sup").json()["route"] == "auto"  # Redis back: scored again


def test_a_task_that_fails_tells_the_waiting_web_process_at_once(tworld: World) -> None:
    """A job that cannot be scored (here: a body that no longer validates) is answered ``failed`` on
    its list, so the web process answers with the fallback instead of waiting out its deadline."""
    job_id = str(uuid.uuid4())
    r = redis.Redis.from_url(settings.REDIS_URL)
    r.set(scoring.job_key(job_id), json.dumps({"system": tworld.supervised.id, "deadline": time.time() + 10,
                                               "body": {"subject": 5}}), ex=60)
    with pytest.raises(ValidationError):
        scoring.run_job(job_id, scoring.LIST)  # the task's own function, in this process
    got = r.blpop([scoring.reply_key(job_id)], timeout=1)
    assert got is not None
    assert json.loads(got[1]) == {"job": job_id, "status": "failed"}
