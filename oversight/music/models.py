"""The demo recommender's hosted models, as Python callables the ``scoring`` workers call
(``oversight.adapters``, kind "python", target ``oversight.music.models:<name>``).

Each takes the decision request ``{"decision", "system", "subject", "context", "features"}`` and
answers ``{"output": {"items": [...]}, "confidence": 0–1}``; the time-of-day model (role
"context") may add a ``veto``. All four answer in well under a millisecond:

* :func:`collab` — collaborative filter: matrix factorisation (ALS in numpy) of a generated year
  of listening (``oversight.music.world``). Items ranked by user·item factors; confidence from the
  score margin of the top items, scaled by how familiar the listener's moment is (how much of
  their year they spent on this activity): a model trained on old routines is unsure of new ones.
* :func:`audio` — content model: tracks nearest in tempo and energy to what the listener was
  playing (same genre a little closer).
* :func:`daypart` — time of day and activity: tracks whose energy fits the moment; at night
  (22–5) or while falling asleep it vetoes every high-energy track, whatever the others say.
* :func:`popularity` — the most played tracks of the year; its top items are the system's
  fallback (:func:`fallback_items`).

The factors are trained on first use (about a second) and cached under ``var/music/``; loading is
lazy and thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oversight.music import world

log = logging.getLogger(__name__)

K = 10  # items per answer
FACTORS = 24
ALS_ITERATIONS = 10
ALS_REG = 5.0
FAMILIAR_SHARE = 0.06  # a listener who spent this share of their year on an activity knows it well
_VERSION = 2  # bump when training changes: the cache file's name carries it


@dataclass(frozen=True)
class Trained:
    users: np.ndarray  # (listeners, factors)
    items: np.ndarray  # (tracks, factors)
    familiarity: np.ndarray  # (listeners, dayparts, activities): 0–1, how much of their year was such a moment
    plays: np.ndarray  # (tracks,): plays in the year
    seconds: float = 0.0  # how long training took (0: loaded from the cache)


def als(counts: np.ndarray, factors: int = FACTORS, iterations: int = ALS_ITERATIONS, reg: float = ALS_REG,
        seed: int = world.SEED) -> tuple[np.ndarray, np.ndarray]:
    """Alternating least squares on log(1 + plays): X ≈ U Vᵀ, each half solved in closed form."""
    x = np.log1p(counts).astype(np.float64)
    rng = np.random.default_rng(seed)
    v = rng.normal(0, 0.1, (x.shape[1], factors))
    eye = reg * np.eye(factors)
    u = np.zeros((x.shape[0], factors))
    for _ in range(iterations):
        u = np.linalg.solve(v.T @ v + eye, v.T @ x.T).T
        v = np.linalg.solve(u.T @ u + eye, u.T @ x).T
    return u.astype(np.float32), v.astype(np.float32)


def train(seed: int = world.SEED) -> Trained:
    started = time.perf_counter()
    counts, by_moment = world.year_of_listening(seed)
    u, v = als(counts, seed=seed)
    share = by_moment / np.maximum(by_moment.sum(axis=(1, 2), keepdims=True), 1.0)
    familiarity = np.minimum(1.0, share / FAMILIAR_SHARE)
    return Trained(u, v, familiarity.astype(np.float32), counts.sum(axis=0), time.perf_counter() - started)


def cache_path() -> Path:
    from oversight import embedded

    return embedded.VAR_DIR / "music" / f"factors-v{_VERSION}-seed{world.SEED}.npz"


_lock = threading.Lock()
_trained: Trained | None = None


def trained() -> Trained:
    """The factors: in memory, else from ``var/music/``, else trained now (and cached there)."""
    global _trained
    if _trained is not None:
        return _trained
    with _lock:
        if _trained is None:
            _trained = _load_or_train()
    return _trained


def warm() -> Path:
    """Train or load the factors now, and make sure they are cached under ``var/music/`` (the demo
    seed calls this, so the scoring workers load them in milliseconds instead of training)."""
    t = trained()
    path = cache_path()
    if not path.exists():
        _save(t, path)
    return path


def _load_or_train() -> Trained:
    path = cache_path()
    try:
        with np.load(path) as f:
            return Trained(f["users"], f["items"], f["familiarity"], f["plays"])
    except (OSError, KeyError, ValueError):
        pass
    t = train()
    log.info("music: trained the collaborative filter in %.2fs", t.seconds)
    _save(t, path)
    return t


def _save(t: Trained, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{threading.get_ident()}.tmp.npz")
        np.savez(tmp, users=t.users, items=t.items, familiarity=t.familiarity, plays=t.plays)
        tmp.replace(path)  # atomic: another process reads a whole file or none
    except OSError as exc:  # a read-only var/: keep it in memory only
        log.warning("music: could not cache the factors in %s: %s", path, exc)


# --- the models ------------------------------------------------------------------------------------


def _top(scores: np.ndarray, k: int = K) -> np.ndarray:
    idx = np.argpartition(-scores, k)[:k]
    return idx[np.argsort(-scores[idx])]


def _items(idx: np.ndarray) -> list[str]:
    ids = world.catalogue().ids
    return [ids[i] for i in idx]


def _context(request: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    context = request.get("context") or {}
    features = request.get("features") or {}
    return (context if isinstance(context, dict) else {}), (features if isinstance(features, dict) else {})


def _activity(request: dict[str, Any]) -> str | None:
    context, features = _context(request)
    value = context.get("activity", features.get("activity"))
    return value if value in world.ACTIVITIES else None


def _hour(request: dict[str, Any]) -> int | None:
    context, features = _context(request)
    value: Any = context.get("hour", features.get("hour"))
    try:
        hour = int(value)
    except (TypeError, ValueError):
        return None
    return hour if 0 <= hour < 24 else None


def _number(value: Any, default: float) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return default
    return x if x == x else default


def collab(request: dict[str, Any]) -> dict[str, Any]:
    """Collaborative filter: the listener's factors against every track's."""
    t = trained()
    user = world.listener_index(str(request.get("subject", "")))
    if user is None:  # a listener it never saw: the most played tracks, unsure
        return {"output": {"items": _items(_top(t.plays))}, "confidence": 0.3}
    scores = t.items @ t.users[user]
    top = _top(scores)
    spread = float(scores.std()) or 1.0
    margin = (float(scores[top].mean()) - float(scores.mean())) / spread
    sure = 1.0 - np.exp(-margin / 2.5)
    activity, hour = _activity(request), _hour(request)
    if activity is None or hour is None:
        familiar = 0.5
    else:
        part = world.DAYPARTS.index(world.daypart(hour))
        familiar = float(t.familiarity[user, part, world.ACTIVITIES.index(activity)])
    confidence = 0.25 + 0.7 * sure * familiar
    return {"output": {"items": _items(top)}, "confidence": round(min(0.99, confidence), 3)}


def audio(request: dict[str, Any]) -> dict[str, Any]:
    """Content model: tracks nearest in tempo and energy to what the listener was just playing."""
    _, features = _context(request)
    cat = world.catalogue()
    energy = _number(features.get("energy"), 0.5)
    tempo = _number(features.get("tempo"), 110.0)
    dist = np.abs(cat.energy - energy) + np.abs(cat.tempo - tempo) / 100.0
    genre = features.get("genre")
    if genre in world.GENRES:
        dist = dist - 0.08 * (cat.genre == world.GENRES.index(genre))
    top = _top(-dist)
    confidence = 0.7 - 1.5 * float(dist[top].mean())
    return {"output": {"items": _items(top)}, "confidence": round(min(0.95, max(0.2, confidence)), 3)}


#: The energy each part of the day wants when the activity is not known.
_DAYPART_ENERGY = {"night": 0.15, "morning": 0.6, "day": 0.4, "evening": 0.5}


def daypart(request: dict[str, Any]) -> dict[str, Any]:
    """Time of day and activity: tracks whose energy fits the moment. At night or while falling
    asleep, every high-energy track is vetoed for every model."""
    t = trained()
    cat = world.catalogue()
    hour, activity = _hour(request), _activity(request)
    part = world.daypart(hour) if hour is not None else None
    if activity is not None:
        target = world.TARGET_ENERGY[activity]
    else:
        target = _DAYPART_ENERGY.get(part or "day", 0.4)
    liked = np.log1p(t.plays) / np.log1p(float(t.plays.max()))
    scores = -np.abs(cat.energy - target) + 0.1 * liked
    night = part == "night" or activity == "sleep"
    if night:
        scores = np.where(cat.energy >= world.HIGH_ENERGY, -np.inf, scores)
    top = _top(scores)
    answer: dict[str, Any] = {"output": {"items": _items(top)},
                              "confidence": 0.7 if activity is not None else 0.55}
    if night:
        why = f"hour {hour}" if part == "night" else "falling asleep"
        answer["veto"] = {"items": _items(np.flatnonzero(cat.energy >= world.HIGH_ENERGY)), "models": [],
                          "reason": f"night ({why}): no high-energy tracks (energy ≥ {world.HIGH_ENERGY})"}
    return answer


def popularity(request: dict[str, Any]) -> dict[str, Any]:
    """The baseline: the year's most played tracks, for everyone."""
    return {"output": {"items": fallback_items(K)}, "confidence": 0.45}


def fallback_items(k: int = 5) -> list[str]:
    """The popularity baseline's top ``k`` tracks: the system's fallback output."""
    return _items(_top(trained().plays, k))


def calm_items(k: int = 5, max_energy: float = 0.25) -> list[str]:
    """The most played calm tracks (what an editor might pin for the night)."""
    cat = world.catalogue()
    plays = np.where(cat.energy <= max_energy, trained().plays, -1.0)
    return _items(_top(plays, k))


MODELS = {"collab": collab, "audio": audio, "daypart": daypart, "popularity": popularity}
