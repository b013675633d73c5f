"""The demo recommender's hosted models as ``nightly-recs`` registers them, and the same
ensemble scored in this process (``oversight.ensemble.combine``) where no worker is involved: the
demo's reference of listening "before March 2020" is made of such decisions."""

from __future__ import annotations

from typing import Any

from oversight.music import models

#: What the demo seed registers (``oversight.hosted.register``). The collaborative filter carries
#: most weight; the time-of-day model votes on nothing but vetoes high-energy tracks at night.
HOSTED: list[dict[str, Any]] = [
    {"name": "collab", "kind": "python", "target": "oversight.music.models:collab", "role": "voter",
     "weight": 3.0, "timeout_ms": 250},
    {"name": "audio", "kind": "python", "target": "oversight.music.models:audio", "role": "voter",
     "weight": 1.0, "timeout_ms": 250},
    {"name": "daypart", "kind": "python", "target": "oversight.music.models:daypart", "role": "context",
     "weight": 1.0, "timeout_ms": 250},
    {"name": "popularity", "kind": "python", "target": "oversight.music.models:popularity", "role": "voter",
     "weight": 0.5, "timeout_ms": 250},
]


def score(request: dict[str, Any], without: frozenset[str] = frozenset()) -> tuple[Any, float]:
    """The ensemble's (output, confidence) for one request, every model called here; ``without``:
    models left out (as a kill switch would)."""
    from oversight import adapters, ensemble

    specs = [m for m in HOSTED if m["name"] not in without]
    answers = [adapters.normalise(m["name"], models.MODELS[m["name"]](request)) for m in specs]
    combined = ensemble.combine(answers, {m["name"]: m["weight"] for m in specs},
                                {m["name"]: m["role"] for m in specs})
    return combined.output, float(combined.confidence if combined.confidence is not None else 0.0)
