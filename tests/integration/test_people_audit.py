"""Who did what to whom: role grants and removals, accounts made and deactivated, password changes,
logins (with the address), and keys made from the command line, all in the audit log with the
person (or the operating-system user) who did it. No password or hash is ever written there."""

from __future__ import annotations

import subprocess
import sys

from django.contrib.auth.models import Group, User
from django.test import Client

from oversight.models import AuditEvent
from tests import conftest
from tests.conftest import BASE_DIR, World, csrf_session


def events(action: str, target: str = "") -> list[AuditEvent]:
    qs = AuditEvent.objects.filter(action=action)
    if target:
        qs = qs.filter(target=target)
    return list(qs.order_by("id"))


def admin_site_user(world: World) -> User:
    boss = User.objects.create_superuser("boss", password=world.password)
    boss.is_staff = True
    boss.save()
    return boss


def test_role_grants_and_removals_through_the_admin_site_name_the_admin_and_address(world: World) -> None:
    boss = admin_site_user(world)
    c = csrf_session(boss)
    target = world.nobody
    operator, editor = Group.objects.get(name="operator"), Group.objects.get(name="editor")
    form = {
        "username": target.username, "first_name": "", "last_name": "", "email": "", "is_active": "on",
        "groups": [str(operator.pk), str(editor.pk)], "last_login_0": "", "last_login_1": "",
        "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00", "_save": "Save",
    }
    r = c.post(f"/admin/auth/user/{target.pk}/change/", form, REMOTE_ADDR="203.0.113.7")
    assert r.status_code == 302, r.content.decode()[:2000]
    grants = events("role.grant", "nobody")
    assert [(e.data["role"], e.actor_id, e.actor_label, e.data["address"]) for e in grants] == [
        ("editor", boss.pk, "boss", "203.0.113.7"), ("operator", boss.pk, "boss", "203.0.113.7")]

    form["groups"] = [str(operator.pk)]
    del form["is_active"]  # unticked: the account is deactivated
    c.post(f"/admin/auth/user/{target.pk}/change/", form, REMOTE_ADDR="203.0.113.7")
    assert [e.data["role"] for e in events("role.revoke", "nobody")] == ["editor"]
    (off,) = events("user.deactivate", "nobody")
    assert (off.actor_label, off.data["address"]) == ("boss", "203.0.113.7")


def test_accounts_made_and_passwords_changed_are_audited_without_the_hash(world: World) -> None:
    u = User.objects.create_user("newcomer", password="first-password-1")
    (made,) = events("user.create", "newcomer")
    assert made.data == {"superuser": False, "active": True}
    u.set_password("second-password-2")
    u.save()
    (changed,) = events("user.password", "newcomer")
    assert changed.data == {"usable": True}
    for e in AuditEvent.objects.all():
        assert u.password not in str(e.data)
        assert "second-password-2" not in str(e.data)
    u.groups.add(Group.objects.get(name="admin"))  # from the shell: no web request, so "system"
    (grant,) = events("role.grant", "newcomer")
    assert (grant.actor_id, grant.actor_label, grant.data) == (None, "system", {"role": "admin"})
    Group.objects.get(name="admin").user_set.remove(u)  # from the group's side
    (revoke,) = events("role.revoke", "newcomer")
    assert revoke.data == {"role": "admin"}


def test_logins_succeeded_and_failed_are_audited_with_the_address(world: World) -> None:
    c = Client()
    bad = c.post("/login/", {"username": "operator", "password": "wrong"}, REMOTE_ADDR="198.51.100.4")
    assert bad.status_code == 200
    (failed,) = events("login.failed", "operator")
    assert (failed.actor_id, failed.actor_label) == (None, "anonymous")
    assert failed.data == {"address": "198.51.100.4", "username": "operator"}
    assert "wrong" not in str(failed.data)
    ok = c.post("/login/", {"username": "operator", "password": world.password}, REMOTE_ADDR="198.51.100.4")
    assert ok.status_code == 302
    (success,) = [e for e in events("login.success", "operator") if e.data.get("address")]
    assert (success.actor_id, success.data) == (world.operator.pk, {"address": "198.51.100.4"})


def test_keys_made_on_the_command_line_name_the_os_user_or_the_person_given(tworld: World) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "manage.py", "create_api_key", "sup", "--quiet", *args],
                              env=conftest.test_database_env(), cwd=BASE_DIR, capture_output=True, text=True,
                              timeout=60)

    plain = run("--name", "from-cron")
    assert plain.returncode == 0, plain.stderr
    by = run("--name", "from-alice", "--by", "admin")
    assert by.returncode == 0, by.stderr
    unknown = run("--by", "nobody-here")
    assert unknown.returncode != 0
    assert "no active person 'nobody-here'" in unknown.stderr
    made = {e.data.get("name"): e for e in events("apikey.create")}
    assert made["from-cron"].actor_id is None
    assert made["from-cron"].actor_label.startswith("cli:")  # the operating-system user
    assert made["from-alice"].actor_id == tworld.admin.pk
    assert made["from-alice"].actor_label == "admin"
