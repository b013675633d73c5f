"""Who may do what, in one place: roles, people and client keys, and the 401/403/404 answer.

Roles are Django groups (made by a migration); a superuser holds every role. A client service
is known by its API key and reaches only its own system. Everything here is callable without
HTTP; the JSON API, the pages and the WebSocket consumers all ask these functions.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.contrib.auth.models import AnonymousUser, Group, User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from oversight import config, credentials
from oversight.errors import ActionError
from oversight.models import Decision, PersonalToken

OPERATOR = "operator"
EDITOR = "editor"
ADMIN = "admin"
ALL_ROLES = (OPERATOR, EDITOR, ADMIN)
REVIEWERS = (OPERATOR, ADMIN)  # who claims, resolves and overrides decisions

AnyUser = User | AnonymousUser | None


def roles_of(user: AnyUser) -> frozenset[str]:
    if user is None or not user.is_authenticated:
        return frozenset()
    cached: frozenset[str] | None = getattr(user, "_oversight_roles", None)
    if cached is not None:
        return cached
    if getattr(user, "is_superuser", False):
        found = frozenset(ALL_ROLES)
    else:
        found = frozenset(Group.objects.filter(user=user, name__in=ALL_ROLES).values_list("name", flat=True))
    user._oversight_roles = found  # type: ignore[attr-defined]  # kept on the user object for this request
    return found


def has_role(user: AnyUser, *wanted: str) -> bool:
    return bool(roles_of(user) & set(wanted))


def ensure_groups() -> None:
    for name in ALL_ROLES:
        Group.objects.get_or_create(name=name)


def context_processor(request: HttpRequest) -> dict[str, Any]:
    """Templates ask ``is_admin`` and friends to show or hide what a person may use."""
    held = roles_of(getattr(request, "user", None))
    return {
        "roles": held,
        "is_operator": OPERATOR in held,
        "is_editor": EDITOR in held,
        "is_admin": ADMIN in held,
        "is_reviewer": bool(held & set(REVIEWERS)),
    }


# --- callers of the JSON API ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a client service (bound to one system) or a person with roles."""

    system_id: int | None
    user: Any
    roles: frozenset[str]

    @property
    def is_client(self) -> bool:
        return self.system_id is not None


def client(snapshot: config.Snapshot, secret: str) -> Principal:
    """A client service, by its API key (checked against the current gate snapshot)."""
    system_id = snapshot.key_systems.get(credentials.digest(secret))
    if system_id is None:
        raise ActionError("unauthenticated", "the API key is not valid (mistyped, revoked or unknown)")
    return Principal(system_id, None, frozenset())


def person_by_token(secret: str) -> Principal:
    token = (
        PersonalToken.objects.select_related("user")
        .filter(digest=credentials.digest(secret), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is None:
        raise ActionError("unauthenticated", "the personal token is not valid (mistyped or revoked)")
    return Principal(None, token.user, roles_of(token.user))


def person(user: AnyUser) -> Principal | None:
    """A logged-in person, or None for an anonymous one."""
    if user is None or not user.is_authenticated:
        return None
    return Principal(None, user, roles_of(user))


def require_person(who: Principal, *wanted: str) -> Principal:
    """A person holding one of ``wanted`` (any role when none is named); 403 otherwise."""
    if who.is_client:
        raise ActionError("forbidden", "this endpoint is for people, not client services")
    if not who.roles:
        raise ActionError("forbidden", "your account has no role yet; ask an admin for one")
    if wanted and not who.roles & set(wanted):
        raise ActionError("forbidden", f"this needs the {' or '.join(wanted)} role")
    return who


def system_for(
    who: Principal, snapshot: config.Snapshot, slug: str, *, client_only: bool = False
) -> config.SystemEntry:
    """The system named ``slug``, if the caller may act on it (a key reaches only its own)."""
    entry = snapshot.systems_by_slug.get(slug)
    if who.is_client:
        if entry is None or entry.id != who.system_id:
            # Same answer for "unknown" and "not yours": a key learns nothing about other systems.
            raise ActionError("not_found", f"no system {slug!r} for this API key")
        return entry
    if client_only:
        raise ActionError("forbidden", "only the system's client service (API key) can submit here")
    require_person(who)
    if entry is None:
        raise ActionError("not_found", f"no system {slug!r}")
    return entry


def parse_decision_id(value: str) -> uuid.UUID | None:
    raw = value[4:] if value.startswith("dec_") else value
    try:
        return uuid.UUID(hex=raw)
    except ValueError:
        return None


def decision_for(who: Principal, public_id: str) -> Decision:
    """A decision the caller may see: its own system's for a key, any for a person with a role."""
    uid = parse_decision_id(public_id)
    if uid is None:
        raise ActionError("not_found", f"{public_id!r} is not a decision id (they look like dec_…)")
    if not who.is_client:
        require_person(who)
    decision = Decision.objects.select_related("system").filter(id=uid).first()
    if decision is None or (who.is_client and decision.system_id != who.system_id):
        raise ActionError("not_found", f"no decision {public_id!r}")
    return decision


# --- pages --------------------------------------------------------------------------------------

View = Callable[..., HttpResponse]


def role_required(*wanted: str) -> Callable[[View], View]:
    """A page for people holding one of these roles; others get a 403 page that says which.

    (Anonymous people never get here: ``LoginRequiredMiddleware`` sends them to the login page.)
    """

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not has_role(request.user, *wanted):
                return render(request, "403.html", {"needed": " or ".join(wanted)}, status=403)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


any_role = role_required(*ALL_ROLES)


def person_of(request: HttpRequest) -> User:
    """The person logged in on a page (its role decorator lets no one else reach it)."""
    if not isinstance(request.user, User):
        raise PermissionDenied
    return request.user
