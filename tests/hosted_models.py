"""Hosted models the tests register (``kind: python``): importable by the test's scoring worker."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def recommend(request: dict[str, Any]) -> dict[str, Any]:
    """A confident recommender: always the same three items."""
    return {"output": {"items": ["t-metal", "t-pop", "t-jazz"]}, "confidence": 0.9}


def calm(request: dict[str, Any]) -> dict[str, Any]:
    return {"output": {"items": ["t-ambient", "t-jazz"]}, "confidence": 0.7}


def bedtime(request: dict[str, Any]) -> dict[str, Any]:
    """A context model: after 22:00 no metal, however sure the recommender is."""
    if (request.get("context") or {}).get("hour", 12) >= 22:
        return {"output": None, "veto": {"items": ["t-metal"], "reason": "bedtime: nothing loud"}}
    return {"output": None}


def approve(request: dict[str, Any]) -> dict[str, Any]:
    return {"output": {"label": "approve"}, "confidence": 0.8}


def refer(request: dict[str, Any]) -> dict[str, Any]:
    return {"output": {"label": "refer"}, "confidence": 0.6}


def echo_subject(request: dict[str, Any]) -> dict[str, Any]:
    return {"output": {"subject": request["subject"], "decision": request["decision"]}, "confidence": 0.95}


def hang(request: dict[str, Any]) -> dict[str, Any]:
    time.sleep(3)
    return {"output": {"items": ["late"]}, "confidence": 0.9}


def boom(request: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("model weights missing")


def garbage(request: dict[str, Any]) -> Any:
    return "not an object"


def slow_once(request: dict[str, Any]) -> dict[str, Any]:
    """Slow on its first call for a subject (a marker file in $HOSTED_MARKERS), quick after."""
    marker = Path(os.environ.get("HOSTED_MARKERS", "/tmp")) / f"slow-once-{request['subject']}"  # noqa: S108
    if not marker.exists():
        part = marker.with_suffix(".part")
        part.write_text(str(os.getpid()))
        part.rename(marker)  # whole, or not there at all
        time.sleep(4)
    return {"output": {"items": ["after-restart"]}, "confidence": 0.9}
