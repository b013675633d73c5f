"""A traffic simulator: client services sending decisions and outcomes through the public API."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from oversight.music import world as music

#: How long the simulator lets the hosted models take (``?wait_ms=``); past it the fallback answers.
WAIT_MS = 1000
#: The share of shown recommendations whose outcome (played through or skipped) is reported.
OUTCOME_SHARE = 0.8
CATALOGUE = music.catalogue().ids


def nightly_moment(rng: random.Random, scenario: str) -> tuple[music.Moment, dict[str, Any], dict[str, Any]]:
    """A listener's moment for the music recommender: (the moment, context, features).

    ``march-2020``: routines change overnight (no commute, little gym, at home all day, more sleep
    and rest, calmer music). ``feedback-loop``: the usual routines."""
    m = music.moment(rng, music.world_of(scenario))
    return m, m.context(), m.features(rng)


def nightly_row(rng: random.Random, scenario: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], float]:
    """One decision of the music recommender as the hosted models would make it, scored here in
    the process: (features, context, output, confidence). The demo's reference ("listening before
    March 2020") is made of these. In a feedback loop the recommendations narrow to a few tracks
    that were clicked before, with the client's own confidence."""
    m, context, features = nightly_moment(rng, scenario)
    if scenario == "feedback-loop":
        return features, context, {"items": rng.sample(CATALOGUE[:8], 3)}, round(rng.betavariate(5, 2), 3)
    from oversight.music import ensemble

    output, confidence = ensemble.score({"subject": m.subject, "context": context, "features": features})
    return features, context, output, round(confidence, 3)


def nightly_reward(scenario: str, moment: music.Moment, output: Any, rng: random.Random) -> float | None:
    """The listener plays the first recommended track: 1 when they play it through, 0 when they
    skip it (their taste and the moment decide). None: nothing was shown, or not a track of the
    catalogue."""
    items = output.get("items") if isinstance(output, dict) else None
    if not items or not isinstance(items[0], str):
        return None
    track = music.catalogue().index.get(items[0])
    if track is None:
        return None
    p = music.play_through(music.world_of(scenario), moment.user, moment.activity, track)
    return 1.0 if rng.random() < p else 0.0


def nightly_outcome(rng: random.Random, scenario: str, status: str, confidence: float) -> float | None:
    """In a feedback loop (the client sends its own predictions): the model is retrained on the
    clicks its own released recommendations caused, so rewards follow its confidence."""
    if status != "released" or rng.random() > 0.6:
        return None
    return min(1.0, max(0.0, confidence + rng.gauss(0, 0.05)))


def nightly_body(rng: random.Random, scenario: str) -> tuple[dict[str, Any], music.Moment]:
    """A decision for the hosted recommender: no prediction (its hosted models score it), the
    listener's context and features. Also the moment, to answer for the listener afterwards."""
    m, context, features = nightly_moment(rng, scenario)
    body = {"subject": m.subject, "context": context, "features": features, "idempotency_key": str(uuid.uuid4())}
    return body, m


def decision_body(system: str, rng: random.Random, scenario: str = "normal") -> dict[str, Any]:
    """A decision with the client's own prediction (the demo's other systems; the recommender in
    a feedback loop, where the client retrains on its own clicks)."""
    output: dict[str, Any]
    features: dict[str, Any]
    context: dict[str, Any]
    if system == "loan-approvals":
        conf = rng.uniform(0.5, 0.99)
        output = {"decision": "approve" if conf > 0.7 else "decline", "limit": rng.choice([500, 1000, 5000])}
        features = {"income": round(rng.lognormvariate(10.5, 0.4)), "debt_ratio": round(rng.random(), 3)}
        context = {"channel": rng.choice(["web", "branch"])}
    elif system == "nightly-recs":
        features, context, output, conf = nightly_row(rng, scenario)
    else:
        conf = rng.betavariate(8, 2)
        output = {"label": "spam" if rng.random() < 0.2 else "ok"}
        features = {"links": rng.randint(0, 6), "length": rng.randint(5, 2000)}
        context = {"site": rng.choice(["forum", "blog"])}
    model = {"loan-approvals": "gbm-v7", "nightly-recs": "collab-v3", "spam-filter": "bert-small-v2"}.get(system, "m")
    return {
        "subject": f"user-{rng.randint(1, 5000)}",
        "context": context,
        "features": features,
        "prediction": {"output": output, "confidence": round(conf, 3), "model": model},
        "idempotency_key": str(uuid.uuid4()),
    }


#: How the demo's traffic is shared out: the recommender gets most of it (its windows fill fastest).
WEIGHTS = {"nightly-recs": 0.6, "loan-approvals": 0.2, "spam-filter": 0.2}


def _wait_until_up(client: httpx.Client, log: Callable[[str], None], timeout_s: float = 60.0) -> None:
    """The web process may still be starting: wait for /healthz before sending traffic."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    log(f"simulator: {client.base_url} did not answer /healthz within {timeout_s:.0f}s; sending anyway")


def run(base_url: str, keys: dict[str, str], rate: float, duration_s: float | None,
        log: Callable[[str], None] = print, seed: int | None = None,
        scenario: Callable[[], str] = lambda: "normal", recommender: str = "nightly-recs") -> dict[str, int]:
    """Send decisions (and outcomes) at ``rate``/s until ``duration_s`` (or forever). ``scenario`` is
    asked every couple of seconds which scenario the listeners follow. ``recommender``: the system
    whose hosted models recommend music to the simulated listeners (outside a feedback loop)."""
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    skips = Skips()
    interval = 1.0 / rate if rate > 0 else 1.0
    deadline = time.monotonic() + duration_s if duration_s else None
    systems = list(keys)
    weights = [WEIGHTS.get(s, 0.2) for s in systems]
    current, asked_at = scenario(), time.monotonic()
    with httpx.Client(base_url=base_url, timeout=10 + WAIT_MS / 1000) as client:
        _wait_until_up(client, log)
        next_at = time.monotonic()
        while deadline is None or time.monotonic() < deadline:
            if time.monotonic() - asked_at > 2:
                now = scenario()
                if now != current:
                    log(f"simulator: scenario {now}")
                current, asked_at = now, time.monotonic()
            system = rng.choices(systems, weights)[0]
            headers = {"Authorization": f"Bearer {keys[system]}"}
            try:
                if system == recommender and current != "feedback-loop":
                    status = _listen(client, rng, current, system, headers, skips)
                else:
                    body = decision_body(system, rng, current)
                    r = client.post(f"/api/v1/systems/{system}/decisions", json=body, headers=headers)
                    status = _status(r)
                    if r.status_code == 201:
                        _outcome(client, rng, current, system, r.json(), body, headers)
                counts[status] = counts.get(status, 0) + 1
            except httpx.HTTPError as exc:
                log(f"simulator: {exc.__class__.__name__}: {exc}; retrying")
                time.sleep(1)
            total = sum(counts.values())
            if total and total % 200 == 0:
                log("simulator: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) + skips.line())
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    return counts


class Skips:
    """The listeners' recent skip rate, for the simulator's log line."""

    def __init__(self, size: int = 200) -> None:
        self.size = size
        self.recent: list[float] = []

    def add(self, reward: float) -> None:
        self.recent = [*self.recent[-(self.size - 1):], reward]

    def line(self) -> str:
        if not self.recent:
            return ""
        return f"; listeners skipped {1 - sum(self.recent) / len(self.recent):.0%} of the last {len(self.recent)}"


def _status(r: httpx.Response) -> str:
    if r.status_code < 500:
        try:
            return str(r.json().get("status", f"http-{r.status_code}"))
        except ValueError:
            pass
    return f"http-{r.status_code}"


def _listen(client: httpx.Client, rng: random.Random, scenario: str, system: str, headers: dict[str, str],
            skips: Skips) -> str:
    """One listener asks the hosted recommender, plays the first track, reports played or skipped."""
    body, moment = nightly_body(rng, scenario)
    r = client.post(f"/api/v1/systems/{system}/decisions", params={"wait_ms": WAIT_MS}, json=body, headers=headers)
    status = _status(r)
    if r.status_code != 201:
        return status
    made = r.json()
    reward = nightly_reward(scenario, moment, made.get("output"), rng)
    if reward is not None:
        skips.add(reward)
        if rng.random() < OUTCOME_SHARE:
            client.post(f"/api/v1/decisions/{made['id']}/outcome", json={"reward": reward}, headers=headers)
    return status


def _outcome(client: httpx.Client, rng: random.Random, scenario: str, system: str, made: dict[str, Any],
             body: dict[str, Any], headers: dict[str, str]) -> None:
    """Outcomes of decisions that came with the client's own prediction."""
    if system == "nightly-recs":
        reward = nightly_outcome(rng, scenario, made.get("status", ""), body["prediction"]["confidence"])
    elif made.get("status") == "released" and rng.random() < 0.3:
        reward = round(rng.random(), 2)
    else:
        reward = None
    if reward is not None:
        client.post(f"/api/v1/decisions/{made['id']}/outcome", json={"reward": round(reward, 3)}, headers=headers)
