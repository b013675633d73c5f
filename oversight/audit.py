"""The append-only audit log: one helper that every write path calls inside its transaction."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser, User

from oversight.models import AISystem, AuditEvent


def record(
    actor: User | AnonymousUser | None,
    action: str,
    *,
    system: AISystem | None = None,
    target: str = "",
    reason: str = "",
    data: dict[str, Any] | None = None,
    actor_label: str | None = None,
) -> AuditEvent:
    user = actor if actor is not None and actor.is_authenticated else None
    label = actor_label or (user.get_username() if user is not None else "system")
    return AuditEvent.objects.create(
        actor=user,
        actor_label=label,
        action=action,
        system=system,
        target=target,
        reason=reason,
        data=data or {},
    )
