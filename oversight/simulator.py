"""A traffic simulator: client services sending decisions and outcomes through the public API."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

GENRES = ["metal", "ambient", "jazz", "pop", "classical", "lofi"]
DEVICES = ["phone", "speaker", "laptop"]
ACTIVITIES = ["commute", "workout", "work", "relax", "sleep", "party"]
# How listeners spend their listening, as usual and from the week of March 16, 2020 on.
ACTIVITY_MIX = {"normal": [0.25, 0.15, 0.2, 0.2, 0.1, 0.1], "march-2020": [0.0, 0.03, 0.35, 0.3, 0.3, 0.02]}
_COMMUTE_HOURS = [0.2, 0.1, 0.1, 0.1, 0.2, 0.6, 2, 6, 7, 3, 2, 2, 2.5, 2, 2, 2.5, 3, 6, 6, 3, 3, 3, 2, 1]
_HOME_HOURS = [0.8, 0.5, 0.4, 0.4, 0.4, 0.4, 0.5, 0.8, 1.5, 3, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3, 3, 3, 3,
               2.5, 2]
HOUR_MIX = {"normal": _COMMUTE_HOURS, "march-2020": _HOME_HOURS}
GENRE_OF = {"commute": ["pop", "metal"], "workout": ["metal", "pop"], "work": ["lofi", "classical", "jazz"],
            "relax": ["jazz", "ambient"], "sleep": ["ambient", "classical"], "party": ["pop"]}
TEMPO_OF = {"commute": (120, 20), "workout": (150, 15), "work": (95, 15), "relax": (90, 15), "sleep": (65, 8),
            "party": (128, 10)}
CATALOGUE = [f"t{i}" for i in range(1, 501)]
_POPULARITY = [1 / i for i in range(1, 501)]  # a long tail: a few tracks are played far more often


def nightly_row(rng: random.Random, scenario: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], float]:
    """One listener's moment for the music recommender: (features, context, output, confidence).

    ``march-2020``: routines change overnight (no commute, little gym, at home all day, calmer
    music) and the model, trained on the old routines, is less sure. ``feedback-loop``: normal
    listeners, but the recommendations narrow to the few tracks that were clicked before."""
    mix = "march-2020" if scenario == "march-2020" else "normal"
    activity = rng.choices(ACTIVITIES, ACTIVITY_MIX[mix])[0]
    hour = rng.choices(range(24), HOUR_MIX[mix])[0]
    mean, sd = TEMPO_OF[activity]
    features = {"hour": hour, "activity": activity, "tempo": round(rng.gauss(mean, sd), 1),
                "genre": rng.choice(GENRE_OF[activity])}
    if scenario == "feedback-loop":
        items = rng.sample(CATALOGUE[:8], 3)
    else:
        items = list(dict.fromkeys(rng.choices(CATALOGUE, _POPULARITY, k=3)))
    confidence = rng.betavariate(3, 3) if mix == "march-2020" else rng.betavariate(5, 2)
    return features, {"device": rng.choice(DEVICES)}, {"items": items}, round(confidence, 3)


def nightly_outcome(rng: random.Random, scenario: str, status: str, confidence: float) -> float | None:
    """The reward (a play that was not skipped) a listener's answer gives back, or None when they gave none.

    Normally rewards barely depend on the model's confidence; in a feedback loop the model is
    retrained on the clicks its own released recommendations caused, so rewards follow it."""
    if scenario == "feedback-loop":
        if status != "released" or rng.random() > 0.6:
            return None
        return min(1.0, max(0.0, confidence + rng.gauss(0, 0.05)))
    if rng.random() > 0.3:
        return None
    mean = 0.3 if scenario == "march-2020" else 0.5
    return min(1.0, max(0.0, rng.gauss(mean + 0.1 * (confidence - 0.5), 0.25)))


def decision_body(system: str, rng: random.Random, scenario: str = "normal") -> dict[str, Any]:
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
        scenario: Callable[[], str] = lambda: "normal") -> dict[str, int]:
    """Send decisions (and outcomes) at ``rate``/s until ``duration_s`` (or forever). ``scenario`` is
    asked every couple of seconds which scenario the listeners follow."""
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    interval = 1.0 / rate if rate > 0 else 1.0
    deadline = time.monotonic() + duration_s if duration_s else None
    systems = list(keys)
    weights = [WEIGHTS.get(s, 0.2) for s in systems]
    current, asked_at = scenario(), time.monotonic()
    with httpx.Client(base_url=base_url, timeout=10) as client:
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
                body = decision_body(system, rng, current)
                r = client.post(f"/api/v1/systems/{system}/decisions", json=body, headers=headers)
                status = f"http-{r.status_code}"
                if r.status_code < 500:
                    status = r.json().get("status", status)
                counts[status] = counts.get(status, 0) + 1
                if r.status_code == 201:
                    _outcome(client, rng, current, system, r.json(), body, headers)
            except httpx.HTTPError as exc:
                log(f"simulator: {exc.__class__.__name__}: {exc}; retrying")
                time.sleep(1)
            total = sum(counts.values())
            if total and total % 200 == 0:
                log("simulator: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    return counts


def _outcome(client: httpx.Client, rng: random.Random, scenario: str, system: str, made: dict[str, Any],
             body: dict[str, Any], headers: dict[str, str]) -> None:
    if system == "nightly-recs":
        reward = nightly_outcome(rng, scenario, made.get("status", ""), body["prediction"]["confidence"])
    elif made.get("status") == "released" and rng.random() < 0.3:
        reward = round(rng.random(), 2)
    else:
        reward = None
    if reward is not None:
        client.post(f"/api/v1/decisions/{made['id']}/outcome", json={"reward": round(reward, 3)}, headers=headers)
