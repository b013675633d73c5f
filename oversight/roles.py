"""Roles are Django groups (made by a migration). A superuser holds every role."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.http import HttpRequest

OPERATOR = "operator"
EDITOR = "editor"
ADMIN = "admin"
ALL_ROLES = (OPERATOR, EDITOR, ADMIN)


def roles_of(user: AbstractBaseUser | AnonymousUser | None) -> frozenset[str]:
    if user is None or not user.is_authenticated:
        return frozenset()
    cached = getattr(user, "_oversight_roles", None)
    if cached is not None:
        return cached
    if getattr(user, "is_superuser", False):
        roles = frozenset(ALL_ROLES)
    else:
        names = user.groups.filter(name__in=ALL_ROLES).values_list("name", flat=True)  # type: ignore[union-attr]
        roles = frozenset(names)
    user._oversight_roles = roles  # type: ignore[union-attr]
    return roles


def has_role(user: AbstractBaseUser | AnonymousUser | None, *wanted: str) -> bool:
    return bool(roles_of(user) & set(wanted))


def ensure_groups() -> None:
    for name in ALL_ROLES:
        Group.objects.get_or_create(name=name)


def context_processor(request: HttpRequest) -> dict[str, Any]:
    roles = roles_of(getattr(request, "user", None))
    return {
        "roles": roles,
        "is_operator": OPERATOR in roles,
        "is_editor": EDITOR in roles,
        "is_admin": ADMIN in roles,
    }
