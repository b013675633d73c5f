"""Login throttling (django-axes): repeated wrong passwords lock an account out from that address,
with a clear page and an audit event; the lock ends after the cool-off, or when an admin resets it;
another address or another account is not locked."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from axes.utils import reset
from django.test import Client

from oversight.models import AuditEvent
from tests.conftest import World

WRONG = "not-the-password"


def attempt(c: Client, username: str, password: str, address: str = "192.0.2.10") -> Any:
    return c.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def test_five_wrong_passwords_lock_the_account_from_that_address(world: World, settings: Any) -> None:
    c = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert attempt(c, "operator", WRONG).status_code == 200  # the form again, with its error
    locked = attempt(c, "operator", WRONG)
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.content.decode()
    right = attempt(c, "operator", world.password)
    assert right.status_code == 429  # even the right password, while locked
    assert "_auth_user_id" not in c.session
    events = list(AuditEvent.objects.filter(action="login.locked", target="operator"))
    assert events  # the lock-out, and each attempt it refused
    assert {e.data["address"] for e in events} == {"192.0.2.10"}
    assert AuditEvent.objects.filter(action="login.failed", target="operator").count() >= settings.AXES_FAILURE_LIMIT

    elsewhere = attempt(Client(), "operator", world.password, address="192.0.2.99")
    assert elsewhere.status_code == 302  # another address is not locked
    assert attempt(Client(), "editor", world.password).status_code == 302  # nor another account

    reset(username="operator")  # what `manage.py axes_reset_username operator` does
    assert attempt(Client(), "operator", world.password).status_code == 302


def test_the_lock_ends_after_the_cool_off(world: World, settings: Any) -> None:
    settings.AXES_COOLOFF_TIME = timedelta(seconds=1)
    c = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attempt(c, "admin", WRONG)
    assert attempt(c, "admin", world.password).status_code == 429
    time.sleep(1.2)
    assert attempt(c, "admin", world.password).status_code == 302
