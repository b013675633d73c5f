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


def decision_body(system: str, rng: random.Random) -> dict[str, Any]:
    output: dict[str, Any]
    features: dict[str, Any]
    context: dict[str, Any]
    if system == "loan-approvals":
        conf = rng.uniform(0.5, 0.99)
        output = {"decision": "approve" if conf > 0.7 else "decline", "limit": rng.choice([500, 1000, 5000])}
        features = {"income": round(rng.lognormvariate(10.5, 0.4)), "debt_ratio": round(rng.random(), 3)}
        context = {"channel": rng.choice(["web", "branch"])}
    elif system == "nightly-recs":
        conf = rng.betavariate(5, 2)
        output = {"items": [f"t{rng.randint(1, 500)}" for _ in range(3)]}
        features = {"tempo": round(rng.uniform(60, 180), 1), "genre": rng.choice(GENRES)}
        context = {"hour": rng.randint(0, 23), "device": rng.choice(DEVICES)}
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
        log: Callable[[str], None] = print, seed: int | None = None) -> dict[str, int]:
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    interval = 1.0 / rate if rate > 0 else 1.0
    deadline = time.monotonic() + duration_s if duration_s else None
    systems = list(keys)
    with httpx.Client(base_url=base_url, timeout=10) as client:
        _wait_until_up(client, log)
        next_at = time.monotonic()
        while deadline is None or time.monotonic() < deadline:
            system = rng.choice(systems)
            headers = {"Authorization": f"Bearer {keys[system]}"}
            try:
                r = client.post(f"/api/v1/systems/{system}/decisions", json=decision_body(system, rng), headers=headers)
                status = f"http-{r.status_code}"
                if r.status_code < 500:
                    status = r.json().get("status", status)
                counts[status] = counts.get(status, 0) + 1
                if r.status_code == 201 and r.json().get("status") == "released" and rng.random() < 0.3:
                    client.post(f"/api/v1/decisions/{r.json()['id']}/outcome", json={"reward": round(rng.random(), 2)},
                                headers=headers)
            except httpx.HTTPError as exc:
                log(f"simulator: {exc.__class__.__name__}: {exc}; retrying")
                time.sleep(1)
            total = sum(counts.values())
            if total and total % 200 == 0:
                log("simulator: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    return counts
