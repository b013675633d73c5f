"""The demo's parts: seeding people/systems/keys, and the traffic simulator against a real server."""

from __future__ import annotations

import json

from django.core.management import call_command

from oversight import access, demo, embedded, simulator
from oversight.models import AISystem, ApiKey, Decision


def test_seed_demo_makes_one_person_per_role_one_system_per_level_and_keys(db, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(embedded, "VAR_DIR", tmp_path)
    call_command("seed_demo")
    out = capsys.readouterr().out
    store = json.loads((tmp_path / "demo.json").read_text())
    for username in ("operator", "editor", "admin"):
        assert store["passwords"][username] in out  # printed for the newcomer
    from django.contrib.auth import get_user_model

    for username, role in demo.PEOPLE:
        user = get_user_model().objects.get(username=username)
        assert access.roles_of(user) == {role}
        assert user.check_password(store["passwords"][username])
    assert sorted(AISystem.objects.values_list("level", flat=True)) == [1, 2, 3]
    assert ApiKey.objects.count() == 3
    # running it again keeps what exists (same passwords, no new keys)
    call_command("seed_demo")
    assert json.loads((tmp_path / "demo.json").read_text()) == store
    assert ApiKey.objects.count() == 3


def test_simulator_sends_decisions_through_the_public_api(tworld, live_server_url):
    keys = {"crit": tworld.keys["crit"], "sup": tworld.keys["sup"]}
    counts = simulator.run(live_server_url, keys, rate=40, duration_s=1.5, log=lambda _: None, seed=7)
    assert sum(counts.values()) >= 20
    assert set(counts) <= {"released", "pending_review"}
    assert Decision.objects.count() == sum(counts.values())
    assert Decision.objects.filter(system__slug="crit", status="pending_review").exists()
