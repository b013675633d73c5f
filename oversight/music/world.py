"""The demo's music world, generated from a seed: a catalogue of tracks, a few thousand listeners
with daily routines and genre tastes, a year of their listening, and how likely a listener is to
play a track through at a given moment, as usual or from March 2020 on.

Everything here is numpy on small arrays and deterministic from :data:`SEED`: the models
(``oversight.music.models``) train on :func:`year_of_listening`, the simulator
(``oversight.simulator``) draws its listeners' moments and answers from the same world.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

SEED = 2019
N_TRACKS = 600
N_LISTENERS = 3000

GENRES = ["metal", "workout", "pop", "lofi", "jazz", "classical", "ambient", "acoustic"]
# (share of the catalogue, energy, tempo in bpm, acousticness) per genre
_GENRE_PROFILE = {
    "metal": (0.10, 0.92, 150, 0.05), "workout": (0.12, 0.86, 128, 0.05), "pop": (0.20, 0.64, 116, 0.20),
    "lofi": (0.14, 0.32, 82, 0.50), "jazz": (0.12, 0.42, 104, 0.70), "classical": (0.10, 0.25, 84, 0.95),
    "ambient": (0.10, 0.12, 66, 0.60), "acoustic": (0.12, 0.36, 96, 0.90),
}
#: Tracks at or above this energy are what the time-of-day model keeps out of the night.
HIGH_ENERGY = 0.7

ACTIVITIES = ["commute", "workout", "work", "relax", "sleep", "party"]
#: The energy a listener wants for each activity.
TARGET_ENERGY = {"commute": 0.65, "workout": 0.9, "work": 0.38, "relax": 0.3, "sleep": 0.1, "party": 0.85}
DAYPARTS = ["night", "morning", "day", "evening"]
SEGMENTS = ["commuter", "gym-goer", "office", "night-owl", "homebody"]
_SEGMENT_SHARE = [0.3, 0.15, 0.25, 0.15, 0.15]
_SEGMENT_TASTE = {
    "commuter": {"pop": 1.0, "workout": 0.5, "metal": 0.5},
    "gym-goer": {"workout": 1.2, "metal": 1.0, "pop": 0.5},
    "office": {"lofi": 1.0, "classical": 0.5, "jazz": 0.5, "pop": 0.3},
    "night-owl": {"workout": 0.7, "pop": 0.7, "ambient": 0.5, "metal": 0.3},
    "homebody": {"acoustic": 1.0, "jazz": 0.7, "ambient": 0.5},
}
_SEGMENT_HABIT = {"commuter": {"commute": 2.0}, "gym-goer": {"workout": 3.0}, "office": {"work": 2.0},
                  "night-owl": {"party": 3.0}, "homebody": {"relax": 2.0, "commute": 0.5}}

# What people do, by part of the day: as usual, and from the week of March 16, 2020 on (no
# commute, hardly a gym or a party, at home all day, more sleep and rest).
_ROUTINE = {
    "normal": {
        "night": {"sleep": 0.6, "party": 0.25, "relax": 0.15},
        "morning": {"commute": 0.5, "workout": 0.25, "work": 0.1, "relax": 0.15},
        "day": {"work": 0.6, "commute": 0.1, "workout": 0.1, "relax": 0.15, "party": 0.05},
        "evening": {"commute": 0.35, "workout": 0.25, "relax": 0.25, "party": 0.15},
    },
    "march-2020": {
        "night": {"sleep": 0.8, "relax": 0.2},
        "morning": {"sleep": 0.3, "relax": 0.35, "work": 0.3, "workout": 0.05},
        "day": {"work": 0.55, "relax": 0.4, "workout": 0.05},
        "evening": {"relax": 0.6, "work": 0.15, "workout": 0.05, "sleep": 0.2},
    },
}
# When people listen (relative weights per hour): around the commute, or at home all day.
_HOURS = {
    "normal": [0.2, 0.1, 0.1, 0.1, 0.2, 0.6, 2, 6, 7, 3, 2, 2, 2.5, 2, 2, 2.5, 3, 6, 6, 3, 3, 3, 2, 1],
    "march-2020": [0.8, 0.5, 0.4, 0.4, 0.4, 0.4, 0.5, 0.8, 1.5, 3, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3, 3,
                   3, 3, 2.5, 2],
}
DEVICES = ["phone", "speaker", "laptop"]
_DEVICE_OF = {"commute": [0.9, 0.0, 0.1], "workout": [0.8, 0.2, 0.0], "work": [0.2, 0.2, 0.6],
              "relax": [0.4, 0.5, 0.1], "sleep": [0.6, 0.4, 0.0], "party": [0.3, 0.7, 0.0]}
# How much the fit of a track's energy to the moment counts against a listener's genre taste:
# in March 2020 people wanted calm music and were quicker to skip what did not fit.
_TASTE_WEIGHT = {"normal": 2.0, "march-2020": 0.5}
_ENERGY_WEIGHT = {"normal": 3.0, "march-2020": 9.0}
_ENERGY_SHIFT = {"normal": 0.0, "march-2020": -0.05}
_BIAS = -0.5
_TITLE_A = ["Quiet", "Neon", "Slow", "Golden", "Broken", "Paper", "Midnight", "Silver", "Velvet", "Electric",
            "Hollow", "Blue", "Wild", "Soft", "Iron", "Distant"]
_TITLE_B = ["Tide", "Engine", "Garden", "Signal", "Morning", "Harbour", "Static", "Lanterns", "Rain", "Pulse",
            "Orbit", "Letters", "Drift", "Fire", "Canyon", "Window"]


def daypart(hour: int) -> str:
    """night 22–5, morning 6–9, day 10–16, evening 17–21."""
    if hour >= 22 or hour < 6:
        return "night"
    if hour < 10:
        return "morning"
    return "day" if hour < 17 else "evening"


def world_of(scenario: str) -> str:
    """The listeners' world under a demo scenario (the feedback loop has the usual routines)."""
    return "march-2020" if scenario == "march-2020" else "normal"


@dataclass(frozen=True)
class Catalogue:
    ids: list[str]  # "t1" … "t600"
    titles: list[str]
    genre: np.ndarray  # index into GENRES
    energy: np.ndarray  # 0–1
    tempo: np.ndarray  # bpm
    acoustic: np.ndarray  # 0–1
    quality: np.ndarray  # how well made: standard normal
    exposure: np.ndarray  # how often it comes a listener's way (radio, playlists): sums to 1
    index: dict[str, int]

    def describe(self, i: int) -> dict[str, Any]:
        return {"id": self.ids[i], "title": self.titles[i], "genre": GENRES[int(self.genre[i])],
                "energy": round(float(self.energy[i]), 2), "tempo": round(float(self.tempo[i]))}


@dataclass(frozen=True)
class Listeners:
    segment: np.ndarray  # index into SEGMENTS
    taste: np.ndarray  # (listeners, genres): how much each likes each genre
    plays_per_year: np.ndarray


@cache
def catalogue() -> Catalogue:
    rng = np.random.default_rng(SEED)
    shares = np.array([_GENRE_PROFILE[g][0] for g in GENRES])
    genre = rng.choice(len(GENRES), size=N_TRACKS, p=shares / shares.sum())
    prof = np.array([_GENRE_PROFILE[g][1:] for g in GENRES])[genre]
    energy = np.clip(prof[:, 0] + rng.normal(0, 0.07, N_TRACKS), 0.02, 0.99)
    tempo = np.clip(prof[:, 1] + rng.normal(0, 8, N_TRACKS), 50, 190)
    acoustic = np.clip(prof[:, 2] + rng.normal(0, 0.1, N_TRACKS), 0, 1)
    quality = rng.normal(0, 1, N_TRACKS)
    exposure = 1.0 / (1.0 + rng.permutation(N_TRACKS)) ** 0.8
    ids = [f"t{i + 1}" for i in range(N_TRACKS)]
    titles = [f"{_TITLE_A[a]} {_TITLE_B[b]}" for a, b in rng.integers(0, 16, size=(N_TRACKS, 2))]
    return Catalogue(ids, titles, genre, energy, tempo, acoustic, quality, exposure / exposure.sum(),
                     {t: i for i, t in enumerate(ids)})


@cache
def listeners() -> Listeners:
    rng = np.random.default_rng(SEED + 1)
    segment = rng.choice(len(SEGMENTS), size=N_LISTENERS, p=_SEGMENT_SHARE)
    base = np.array([[_SEGMENT_TASTE[s].get(g, 0.0) for g in GENRES] for s in SEGMENTS])
    taste = base[segment] + rng.normal(0, 0.7, (N_LISTENERS, len(GENRES)))
    plays = rng.lognormal(np.log(500), 0.5, N_LISTENERS)
    return Listeners(segment, taste, plays)


def listener_index(subject: str) -> int | None:
    """``user-17`` → 16; None for a subject the world does not know."""
    if not subject.startswith("user-"):
        return None
    try:
        n = int(subject[5:])
    except ValueError:
        return None
    return n - 1 if 1 <= n <= N_LISTENERS else None


@cache
def routine(world: str) -> np.ndarray:
    """(segments, 24 hours, activities): the chance of each activity at each hour, by segment."""
    out = np.zeros((len(SEGMENTS), 24, len(ACTIVITIES)))
    for s, seg in enumerate(SEGMENTS):
        habit = _SEGMENT_HABIT[seg] if world == "normal" else {}
        for h in range(24):
            w = np.array([_ROUTINE[world][daypart(h)].get(a, 0.0) * habit.get(a, 1.0) for a in ACTIVITIES])
            out[s, h] = w / w.sum()
    return out


@cache
def moment_share(world: str) -> np.ndarray:
    """(segments, dayparts, activities): the share of a year's listening spent on each activity
    in each part of the day."""
    hours = np.array(_HOURS[world]) / sum(_HOURS[world])
    part = np.array([[daypart(h) == p for p in DAYPARTS] for h in range(24)], dtype=float)  # (24, dayparts)
    return np.einsum("h,hp,sha->spa", hours, part, routine(world))


def logits(world: str, users: np.ndarray | int, activity: int) -> np.ndarray:
    """How much listeners like each track at an activity (a logit of playing it through):
    their taste for its genre, its fit to the energy the moment wants, how well it is made."""
    cat, lst = catalogue(), listeners()
    target = TARGET_ENERGY[ACTIVITIES[activity]] + _ENERGY_SHIFT[world]
    taste = lst.taste[users][..., cat.genre]
    fit = 0.25 - np.abs(cat.energy - target)
    return _TASTE_WEIGHT[world] * taste + _ENERGY_WEIGHT[world] * fit + 0.4 * cat.quality + _BIAS


def play_through(world: str, user: int, activity: str, track: int) -> float:
    """The chance that this listener, at this activity, plays this track through (else: skips it)."""
    z = float(logits(world, user, ACTIVITIES.index(activity))[track])
    return 1.0 / (1.0 + np.exp(-z))


def choice_weights(world: str, users: np.ndarray | int, activity: int) -> np.ndarray:
    """What listeners pick to play at an activity: what comes their way, by how much they like it."""
    z = logits(world, users, activity)
    w = catalogue().exposure * np.exp(z - z.max(axis=-1, keepdims=True))
    return w / w.sum(axis=-1, keepdims=True)


def year_of_listening(seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """A year of plays in the usual world: (play counts per listener and track, plays per
    listener, part of the day and activity). Deterministic from the seed."""
    rng = np.random.default_rng(seed + 2)
    lst = listeners()
    share = moment_share("normal")[lst.segment]  # (listeners, dayparts, activities)
    by_moment = rng.poisson(lst.plays_per_year[:, None, None] * share)
    by_activity = by_moment.sum(axis=1)
    expected = np.zeros((N_LISTENERS, N_TRACKS))
    users = np.arange(N_LISTENERS)
    for a in range(len(ACTIVITIES)):
        expected += by_activity[:, a:a + 1] * choice_weights("normal", users, a)
    return rng.poisson(expected).astype(np.float32), by_moment.astype(np.float32)


# --- one listener's moment (the simulator) ------------------------------------------------------------


@dataclass(frozen=True)
class Moment:
    user: int
    hour: int
    activity: str
    device: str
    recent: int  # the track they played just before

    @property
    def subject(self) -> str:
        return f"user-{self.user + 1}"

    def context(self) -> dict[str, Any]:
        return {"hour": self.hour, "daypart": daypart(self.hour), "device": self.device,
                "activity": self.activity, "segment": SEGMENTS[int(listeners().segment[self.user])]}

    def features(self, rng: random.Random) -> dict[str, Any]:
        """What the client knows of the listener now: the hour and activity, and the tempo, energy
        and genre of what they were playing (monitoring's drift watches these)."""
        cat = catalogue()
        return {"hour": self.hour, "activity": self.activity,
                "tempo": round(float(cat.tempo[self.recent]) + rng.gauss(0, 4), 1),
                "energy": round(min(1.0, max(0.0, float(cat.energy[self.recent]) + rng.gauss(0, 0.04))), 3),
                "genre": GENRES[int(cat.genre[self.recent])]}


def moment(rng: random.Random, world: str) -> Moment:
    """A random listener at a random moment of their day in ``world``."""
    user = rng.randrange(N_LISTENERS)
    hour = rng.choices(range(24), _HOURS[world])[0]
    seg = int(listeners().segment[user])
    a = rng.choices(range(len(ACTIVITIES)), routine(world)[seg, hour].tolist())[0]
    activity = ACTIVITIES[a]
    recent = rng.choices(range(N_TRACKS), choice_weights(world, user, a).tolist())[0]
    device = rng.choices(DEVICES, _DEVICE_OF[activity])[0]
    return Moment(user, hour, activity, device, recent)
