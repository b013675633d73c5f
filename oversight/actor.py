"""Who is acting right now, for audit events that Django's signals raise (no Django imports here).

A web request sets its person (``oversight.people_audit.ActorMiddleware``); a management command
run through ``manage.py`` acts as the operating-system user (``cli:<user>``) unless it names a
person (``--by``); Celery workers and beat act as "system". ``oversight.audit.record`` asks this when
it is given no actor in a command-line process (in a web process, "no actor" means the system did it).
"""

from __future__ import annotations

import getpass
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Acting:
    user: Any = None  # a Django user, or None
    label: str = ""  # how the audit log names the actor when there is no user
    address: str = ""  # the client address of a web request
    command_line: bool = False  # a manage.py process: events with no actor are this person's


_current: ContextVar[Acting | None] = ContextVar("oversight_acting", default=None)


def current() -> Acting | None:
    return _current.get()


def set_acting(acting: Acting | None) -> Any:
    """Set who acts in this context; returns the token to ``reset`` with."""
    return _current.set(acting)


def reset(token: Any) -> None:
    _current.reset(token)


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        import os

        return f"uid {os.getuid()}"


def from_command_line() -> None:
    """``manage.py``: everything this process does is done by the operating-system user."""
    set_acting(Acting(label=f"cli:{os_user()}", command_line=True))


def by_person(user: Any) -> None:
    """A command's ``--by PERSON``: its events name that person (the operating-system user kept)."""
    set_acting(Acting(user=user, label=f"{user.get_username()} (cli:{os_user()})", command_line=True))
