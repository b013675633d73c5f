"""The demo world: three people (one per role), three systems (one per level), their keys."""

from __future__ import annotations

import json
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from oversight import access, actions, embedded
from oversight.models import AISystem

DEMO_SYSTEMS: list[dict[str, Any]] = [
    {"slug": "loan-approvals", "name": "Loan approvals (critical)", "level": 1, "confidence_threshold": 0.9,
     "audit_sample_rate": 0.0, "review_sla_s": 600, "fallback": {"decision": "refer-to-branch"}},
    {"slug": "nightly-recs", "name": "Nightly music recommendations", "level": 2, "confidence_threshold": 0.6,
     "audit_sample_rate": 0.05, "review_sla_s": 900, "fallback": {"items": ["editorial-calm-1", "editorial-calm-2"]}},
    {"slug": "spam-filter", "name": "Comment spam filter (autonomous)", "level": 3, "confidence_threshold": 0.5,
     "audit_sample_rate": 0.02, "review_sla_s": 3600, "fallback": {"label": "hold"}},
]
PEOPLE = [("operator", access.OPERATOR), ("editor", access.EDITOR), ("admin", access.ADMIN)]


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
        if spec["slug"] not in store["keys"]:
            system = AISystem.objects.get(slug=spec["slug"])
            _, secret = actions.create_api_key(None, system, "demo traffic simulator")
            store["keys"][spec["slug"]] = secret
    path = _secrets_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(store, indent=2))
    path.chmod(0o600)
    return store
