"""People's accounts in the audit log: role grants and removals, accounts made, deactivated and
re-activated, password changes, and every login, successful or failed, with the client address.

Django raises the signals wherever the change is made (the admin site, ``createsuperuser``, the
shell, a migration's data step); the actor is whoever acts in that context (``oversight.actor``: a
web request's person, set by :class:`ActorMiddleware`, or the command line's user). A password's
hash is never written to the log, only that it changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db.models.signals import m2m_changed, post_save, pre_save
from django.http import HttpRequest, HttpResponse

from oversight import actor, audit

User = get_user_model()
_WATCHED = ("is_active", "is_superuser", "password")
LOGIN_NAME_MAX = 150


def client_address(request: HttpRequest | None) -> str:
    """The address the request came from (the socket's peer: put a proxy's header in front only
    where the proxy is trusted, through the server's forwarded-allow setting)."""
    return str(getattr(request, "META", {}).get("REMOTE_ADDR", "")) if request is not None else ""


class ActorMiddleware:
    """Marks the person of each request as the actor of account changes made while it runs."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = actor.set_acting(actor.Acting(user=getattr(request, "user", None),
                                              address=client_address(request)))
        try:
            return self.get_response(request)
        finally:
            actor.reset(token)


def _who() -> tuple[Any, str | None]:
    """(user, label) of whoever acts now, for audit.record (None, None: the system)."""
    acting = actor.current()
    if acting is None:
        return None, None
    user = acting.user if acting.user is not None and getattr(acting.user, "is_authenticated", False) else None
    return user, (acting.label or None) if user is None or acting.command_line else None


def _record(action: str, target: str, reason: str = "", **data: Any) -> None:
    user, label = _who()
    acting = actor.current()
    if acting is not None and acting.address:
        data.setdefault("address", acting.address)
    audit.record(user, action, target=target, reason=reason, data=data, actor_label=label)


def _remember(sender: Any, instance: Any, update_fields: Any = None, **_: Any) -> None:
    """Before a user is saved: what the watched fields were (one SELECT; skipped for last_login)."""
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        instance._audit_before = None
        return
    before = None
    if instance.pk is not None:
        before = User.objects.filter(pk=instance.pk).values(*_WATCHED).first()
    instance._audit_before = before


def _saved(sender: Any, instance: Any, created: bool, update_fields: Any = None, **_: Any) -> None:
    before = getattr(instance, "_audit_before", None)
    name = instance.get_username()
    if created:
        _record("user.create", name, superuser=bool(instance.is_superuser), active=bool(instance.is_active))
        return
    if before is None:
        return
    if before["is_active"] != instance.is_active:
        _record("user.activate" if instance.is_active else "user.deactivate", name)
    if before["is_superuser"] != instance.is_superuser:
        _record("user.superuser", name, superuser=bool(instance.is_superuser))
    if before["password"] != instance.password:
        _record("user.password", name, usable=instance.has_usable_password())


def _groups_changed(sender: Any, instance: Any, action: str, reverse: bool, model: Any, pk_set: Any,
                    **_: Any) -> None:
    """A person's roles (groups) changed, from either side (``user.groups`` or ``group.user_set``)."""
    if action == "pre_clear":
        instance._audit_cleared = (list(instance.groups.values_list("name", flat=True)) if not reverse
                                   else list(instance.user_set.values_list("username", flat=True)))
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    verb = "role.grant" if action == "post_add" else "role.revoke"
    if action == "post_clear":
        others = getattr(instance, "_audit_cleared", [])
    elif not reverse:
        others = list(Group.objects.filter(pk__in=pk_set).values_list("name", flat=True))
    else:
        others = list(User.objects.filter(pk__in=pk_set).values_list("username", flat=True))
    for other in sorted(others):
        person, role = (instance.get_username(), other) if not reverse else (other, instance.name)
        _record(verb, person, role=role)


def _logged_in(sender: Any, request: HttpRequest | None, user: Any, **_: Any) -> None:
    audit.record(user, "login.success", target=user.get_username(), data={"address": client_address(request)})


def _login_failed(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **_: Any) -> None:
    name = str(credentials.get("username", ""))[:LOGIN_NAME_MAX]  # the password is never kept
    audit.record(None, "login.failed", target=name, actor_label="anonymous",
                 data={"address": client_address(request), "username": name})


def connect() -> None:
    pre_save.connect(_remember, sender=User, dispatch_uid="oversight.people_audit.remember")
    post_save.connect(_saved, sender=User, dispatch_uid="oversight.people_audit.saved")
    m2m_changed.connect(_groups_changed, sender=User.groups.through, dispatch_uid="oversight.people_audit.groups")
    user_logged_in.connect(_logged_in, dispatch_uid="oversight.people_audit.logged_in")
    user_login_failed.connect(_login_failed, dispatch_uid="oversight.people_audit.login_failed")


def command_person(username: str | None) -> Any:
    """A command's ``--by PERSON``: that active person acts from now on in this process (their
    events name them, with the operating-system user); None leaves the operating-system user.
    Raises ``LookupError`` for a name that is not an active person."""
    if not username:
        return None
    person = User.objects.filter(username=username, is_active=True).first()
    if person is None:
        raise LookupError(f"no active person {username!r} (--by names the person the audit log should show)")
    actor.by_person(person)
    return person


def _locked_out(sender: Any, request: HttpRequest | None = None, username: str | None = None,
                ip_address: str | None = None, **_: Any) -> None:
    name = str(username or "")[:LOGIN_NAME_MAX]
    audit.record(None, "login.locked", target=name, actor_label="anonymous",
                 data={"address": ip_address or client_address(request), "username": name})


def connect_lockouts() -> None:
    """django-axes' lock-out signal, when it is installed (settings: login throttling)."""
    from axes.signals import user_locked_out

    user_locked_out.connect(_locked_out, dispatch_uid="oversight.people_audit.locked_out")
