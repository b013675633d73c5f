"""The demo's music world and its hosted models (oversight.music): no database, no server."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from oversight import adapters, demo, simulator
from oversight.music import ensemble, models, world


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """Models that start with nothing in memory and an empty var/."""
    from oversight import embedded

    monkeypatch.setattr(embedded, "VAR_DIR", tmp_path)
    monkeypatch.setattr(models, "_trained", None)
    return tmp_path


def test_the_factorisation_ranks_held_out_plays_above_tracks_never_played():
    counts, _ = world.year_of_listening()
    rng = np.random.default_rng(5)
    users = rng.choice(world.N_LISTENERS, 300, replace=False)
    train = counts.copy()
    held: dict[int, np.ndarray] = {}
    for u in users:
        played = np.flatnonzero(counts[u] > 0)
        held[u] = rng.choice(played, max(1, len(played) // 5), replace=False)
        train[u, held[u]] = 0  # the model never sees these plays
    u_f, v_f = models.als(train)
    wins = []
    for u in users:
        scores = v_f @ u_f[u]
        never = np.flatnonzero(counts[u] == 0)
        if len(never) == 0:
            continue
        negatives = rng.choice(never, 50)
        wins.append((scores[held[u]][:, None] > scores[negatives][None, :]).mean())
    assert float(np.mean(wins)) > 0.75  # AUC: 0.5 would be guessing


def test_the_time_of_day_model_vetoes_high_energy_tracks_at_night_whatever_the_filter_says():
    cat = world.catalogue()
    metal = {cat.ids[i] for i in np.flatnonzero(cat.genre == world.GENRES.index("metal"))}
    # the listener whose collaborative filter is surest about metal
    t = models.trained()
    metal_idx = np.array(sorted(cat.index[m] for m in metal))
    fan = int(np.argmax((t.users @ t.items[metal_idx].T).mean(axis=1)))
    subject = f"user-{fan + 1}"
    afternoon = {"subject": subject, "context": {"hour": 15, "activity": "workout"},
                 "features": {"tempo": 150, "energy": 0.9, "genre": "metal"}}
    night = {**afternoon, "context": {"hour": 23, "activity": "party", "daypart": "night"}}
    assert set(models.collab(night)["output"]["items"]) & metal  # the filter would play metal
    veto = models.daypart(night)["veto"]
    assert metal <= set(veto["items"])
    assert "night" in veto["reason"]
    assert "veto" not in models.daypart(afternoon)
    assert "veto" in models.daypart({**afternoon, "context": {"hour": 14, "activity": "sleep"}})
    day_items, _ = ensemble.score(afternoon)
    night_items, _ = ensemble.score(night)
    assert set(day_items["items"]) & metal
    assert not set(night_items["items"]) & metal
    assert all(cat.energy[cat.index[i]] < world.HIGH_ENERGY for i in night_items["items"])


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_model_answers_the_contract_quickly(name):
    fn = models.MODELS[name]
    rng = random.Random(1)
    requests = []
    for _ in range(200):
        m, context, features = simulator.nightly_moment(rng, rng.choice(["normal", "march-2020"]))
        requests.append({"decision": "dec_x", "system": "nightly-recs", "subject": m.subject,
                         "context": context, "features": features})
    requests += [{"subject": "listener-unknown", "context": {}, "features": {}},
                 {"subject": "user-0", "context": {"hour": "late", "activity": 3}, "features": {"tempo": "fast"}},
                 {"subject": "user-99999", "context": None, "features": None}]
    fn(requests[0])  # loaded
    ids = set(world.catalogue().ids)
    took = []
    for request in requests:
        started = time.thread_time()  # the model's own CPU time: other processes' load aside
        answer = fn(request)
        took.append(time.thread_time() - started)
        checked = adapters.normalise(name, answer)
        assert checked.ok, checked.detail
        items = answer["output"]["items"]
        assert len(items) == models.K
        assert set(items) <= ids
        assert len(set(items)) == models.K
        assert 0.0 <= answer["confidence"] <= 1.0
    assert float(np.percentile(took, 99)) < 0.005
    assert sum(took) / len(took) < 0.001


def test_the_world_and_the_models_are_the_same_from_the_same_seed():
    counts, moments = world.year_of_listening()
    again, moments2 = world.year_of_listening()
    assert np.array_equal(counts, again)
    assert np.array_equal(moments, moments2)
    assert not np.array_equal(counts, world.year_of_listening(seed=7)[0])
    started = time.process_time()  # this process's CPU time: other processes' load aside
    a = models.train()
    assert time.process_time() - started < 5
    b = models.train()
    assert np.array_equal(a.users, b.users)
    assert np.array_equal(a.items, b.items)
    rng1, rng2 = random.Random(3), random.Random(3)
    assert [simulator.nightly_row(rng1, "normal") for _ in range(20)] == \
        [simulator.nightly_row(rng2, "normal") for _ in range(20)]


def test_the_factors_are_trained_once_cached_under_var_and_loaded_from_there(fresh_cache, monkeypatch):
    calls = []
    real = models.train

    def counting(seed: int = world.SEED) -> models.Trained:
        calls.append(seed)
        return real(seed)

    monkeypatch.setattr(models, "train", counting)
    got: list[models.Trained] = []
    threads = [threading.Thread(target=lambda: got.append(models.trained())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1  # eight threads, one training
    assert all(g is got[0] for g in got)
    path = models.cache_path()
    assert path.parent == fresh_cache / "music"
    assert path.exists()
    monkeypatch.setattr(models, "_trained", None)
    loaded = models.trained()
    assert len(calls) == 1  # from the file this time
    assert np.array_equal(loaded.users, got[0].users)
    assert models.warm() == path


def test_the_fallback_is_the_popularity_baselines_top_tracks():
    spec = next(s for s in demo.DEMO_SYSTEMS if s["slug"] == "nightly-recs")
    assert spec["fallback"] == {"items": models.fallback_items(5)}
    assert models.popularity({})["output"]["items"][:5] == models.fallback_items(5)
    assert {m["name"] for m in ensemble.HOSTED} == set(models.MODELS)


def _window(scenario: str, without: frozenset[str] = frozenset(), n: int = 1500, seed: int = 11,
            threshold: float = 0.6) -> tuple[float, float, float]:
    """What the listeners do with the ensemble's recommendations: (mean reward of what is released
    at the demo's confidence threshold, share released, mean confidence)."""
    rng = random.Random(seed)
    rewards, confidences = [], []
    for _ in range(n):
        m, context, features = simulator.nightly_moment(rng, scenario)
        output, confidence = ensemble.score({"subject": m.subject, "context": context, "features": features},
                                            without)
        confidences.append(confidence)
        if confidence >= threshold:
            rewards.append(simulator.nightly_reward(scenario, m, output, rng))
    return float(np.mean(rewards)), len(rewards) / n, float(np.mean(confidences))


def _fallback_reward(scenario: str, n: int = 1500) -> float:
    rng = random.Random(12)
    items = {"items": models.fallback_items(5)}
    return float(np.mean([simulator.nightly_reward(scenario, simulator.nightly_moment(rng, scenario)[0], items, rng)
                          for _ in range(n)]))


def test_march_2020_makes_listeners_skip_enough_to_open_the_demos_breaker_and_killing_collab_helps():
    spec = next(s for s in demo.DEMO_SYSTEMS if s["slug"] == "nightly-recs")
    limit, canary = spec["breaker"]["min_mean_reward"], spec["breaker"]["canary_share"]
    margin = 0.02  # breakers.Policy.recover_margin
    normal, normal_released, normal_conf = _window("normal")
    march, march_released, march_conf = _window("march-2020")
    march_no_collab, _, _ = _window("march-2020", frozenset({"collab"}))
    assert normal > limit + 0.15  # a normal window is far from tripping
    assert march < limit - 0.05  # March trips it
    assert march_no_collab > limit + margin + 0.05  # the collaborative filter is what fails
    assert march_released < normal_released - 0.1  # more goes to people
    assert march_conf < normal_conf
    # Half-open, half the decisions go to the models and half get the fallback: a window of
    # that mix closes the breaker once the models do well again, and not while collab fails.
    assert canary * normal + (1 - canary) * _fallback_reward("normal") > limit + margin
    assert canary * march_no_collab + (1 - canary) * _fallback_reward("march-2020") > limit + margin
    assert canary * march + (1 - canary) * _fallback_reward("march-2020") < limit + margin


def test_march_2020_changes_routines_overnight():
    def activities(scenario: str) -> dict[str, float]:
        rng = random.Random(4)
        seen = [world.moment(rng, scenario).activity for _ in range(3000)]
        return {a: seen.count(a) / len(seen) for a in world.ACTIVITIES}

    normal, march = activities("normal"), activities("march-2020")
    assert normal["commute"] > 0.2
    assert march["commute"] == 0
    assert march["sleep"] + march["relax"] > normal["sleep"] + normal["relax"] + 0.2
    rng = random.Random(5)
    m = world.moment(rng, "march-2020")
    assert set(m.context()) == {"hour", "daypart", "device", "activity", "segment"}
    assert set(m.features(rng)) == {"hour", "activity", "tempo", "energy", "genre"}
