"""The demo world: three people (one per role), three systems (one per level), their keys, the music
recommender's hosted models (``oversight.music``); and the demo's scenario (normal traffic, the
March-2020 shift, a feedback loop) that the simulator follows."""

from __future__ import annotations

import json
import secrets
from functools import cache
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from oversight import access, actions, audit, credentials, embedded
from oversight.errors import ActionError
from oversight.models import AISystem, ApiKey, HostedModel

RECOMMENDER = "nightly-recs"

DEMO_SYSTEMS: list[dict[str, Any]] = [
    {"slug": "loan-approvals", "name": "Loan approvals (critical)", "level": 1, "confidence_threshold": 0.9,
     "audit_sample_rate": 0.0, "review_sla_s": 600, "fallback": {"decision": "refer-to-branch"},
     # One loan in five is also reviewed by a second operator (the Quality page's agreement).
     "double_review_rate": 0.2},
    # Scored by its hosted models (oversight.music, registered by seed()); the fallback is the
    # popularity baseline's five most played tracks (oversight.music.models.fallback_items()).
    # Two-minute windows: a shift shows within a monitoring tick or two, not an hour later.
    {"slug": "nightly-recs", "name": "Nightly music recommendations", "level": 2, "confidence_threshold": 0.6,
     "audit_sample_rate": 0.05, "review_sla_s": 900, "fallback": {"items": ["t321", "t199", "t265", "t305", "t345"]},
     "window": {"kind": "time", "seconds": 120}, "routing": {"mode": "ensemble"},
     # The simulated listeners play ~84 % of the ensemble's first tracks through on a normal day,
     # ~50 % from March 2020 on, ~72 % once the collaborative filter is killed; the fallback's
     # ~48 % / ~68 %. The breaker opens on a window under 0.6; half-open, half the decisions go to
     # the models (the window's reward mixes them with the fallback's), so it closes again once
     # the models do well. Drift alone does not open it (a share of 1 is not above 1): the
     # monitoring page shows the drift, the skips decide.
     "breaker": {"min_mean_reward": 0.6, "max_drifted_share": 1.0, "canary_share": 0.5, "cooldown_s": 120}},
    {"slug": "spam-filter", "name": "Comment spam filter (autonomous)", "level": 3, "confidence_threshold": 0.5,
     "audit_sample_rate": 0.02, "review_sla_s": 3600, "fallback": {"label": "hold"},
     "breaker": {"min_mean_reward": 0.25, "cooldown_s": 120}},
]
PEOPLE = [("operator", access.OPERATOR), ("operator2", access.OPERATOR), ("editor", access.EDITOR),
          ("admin", access.ADMIN)]


def _secrets_file() -> Any:
    return embedded.VAR_DIR / "demo.json"


def load_secrets() -> dict[str, Any]:
    try:
        return json.loads(_secrets_file().read_text())
    except (FileNotFoundError, ValueError):
        return {"passwords": {}, "keys": {}}


def seed() -> dict[str, Any]:
    """Create what is missing; keep what exists. Returns passwords and API keys (kept under var/)."""
    store = load_secrets()
    access.ensure_groups()
    User = get_user_model()
    with transaction.atomic():
        for username, role in PEOPLE:
            user = User.objects.filter(username=username).first()
            password = store["passwords"].get(username)
            if user is None or password is None:
                password = secrets.token_urlsafe(9)
                user = user or User(username=username)
                user.set_password(password)
                user.save()
                store["passwords"][username] = password
            user.groups.add(Group.objects.get(name=role))
    for spec in DEMO_SYSTEMS:
        if not AISystem.objects.filter(slug=spec["slug"]).exists():
            actions.create_system(None, spec, "demo seed")
        kept = store["keys"].get(spec["slug"])
        if kept is None or not ApiKey.objects.filter(digest=credentials.digest(kept), revoked_at__isnull=True,
                                                     system__slug=spec["slug"]).exists():
            # No key yet, or the one kept under var/ is not in this database (made anew): a new one.
            system = AISystem.objects.get(slug=spec["slug"])
            _, secret = actions.create_api_key(None, system, "demo traffic simulator")
            store["keys"][spec["slug"]] = secret
    seed_recommender()
    path = _secrets_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(store, indent=2))
    path.chmod(0o600)
    return store


def seed_recommender() -> list[str]:
    """Register the music recommender's hosted models on ``nightly-recs`` (those missing), after
    training (or loading) the collaborative filter, so the workers find it under ``var/music/``.
    A demo database from before hosted models also gets the recommender's fallback and breaker,
    and a new reference (any old one was of the client's own predictions). Returns the names
    registered now."""
    from oversight import hosted
    from oversight.music import ensemble, models

    models.warm()
    system = AISystem.objects.get(slug=RECOMMENDER)
    have = set(HostedModel.objects.filter(system=system).values_list("name", flat=True))
    upgrade = not have
    added = []
    for spec in ensemble.HOSTED:
        if spec["name"] not in have:
            hosted.register(None, RECOMMENDER, spec)
            added.append(spec["name"])
    if upgrade:
        wanted = next(s for s in DEMO_SYSTEMS if s["slug"] == RECOMMENDER)
        changes = {k: wanted[k] for k in ("fallback", "breaker", "routing") if getattr(system, k) != wanted[k]}
        if changes:
            actions.update_system(None, RECOMMENDER, changes, "demo seed: the recommender's hosted models")
        # The monitoring app's command (by name: the core imports no app) stores one anew.
        from django.core.management import call_command

        call_command("seed_demo_reference", "--replace")
    return added


# --- the demo's scenario ------------------------------------------------------------------------

#: What the simulator's listeners do: as usual; as in March 2020 (routines change overnight: no
#: commute, no gym, at home all day, calmer music); or a recommender feeding on its own clicks.
SCENARIOS = {
    "normal": "Normal traffic",
    "march-2020": "March 2020: routines change overnight",
    "feedback-loop": "Feedback loop: recommendations feed on their own clicks",
}


def _scenario_key() -> str:
    return f"{settings.REDIS_PREFIX}:demo:scenario"


@cache
def _redis() -> Any:
    """One client per process (the simulator asks every 2 s)."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def is_demo() -> bool:
    """True where ``make demo`` (or ``seed_demo``) set up the demo world."""
    return _secrets_file().exists()


def scenario() -> str:
    """The scenario the simulator follows now ("normal" when none was chosen or Redis is away)."""
    try:
        value = _redis().get(_scenario_key())
    except Exception:  # the demo's control is best-effort; the simulator carries on as it was
        return "normal"
    name = value.decode() if value else "normal"
    return name if name in SCENARIOS else "normal"


def set_scenario(actor: Any, name: str) -> None:
    """Switch the simulator's scenario (audited). Raises ActionError for an unknown one."""
    if name not in SCENARIOS:
        raise ActionError("invalid", f"unknown scenario {name!r}: one of {', '.join(SCENARIOS)}", "scenario")
    _redis().set(_scenario_key(), name)
    audit.record(actor, "demo.scenario", target=name, reason=SCENARIOS[name])
