"""Two database roles (issue 12): the app's role reads and writes, but cannot rewrite the audit log.

The app's role is ``DATABASE_URL``'s user when there are two roles (``make test`` with the embedded
server, CI); ``migrate`` (the tests' own database included) granted it its privileges. With one role
(``DATABASE_URL`` a superuser, as on a developer's machine) this module makes a role for the run,
gives it the same privileges with the same code (``oversight.embedded.grant_app_role``) and drops it
afterwards. The tests log in as that role, directly with psycopg and as the app itself (the
default connection switched to its login), and show that TRUNCATE, ALTER TABLE, DISABLE and DROP
TRIGGER, session_replication_role, UPDATE, DELETE and back-dated INSERTs are refused, and that the
app's own work (audit events, decisions and kill switches through the API) goes through.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest
from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone
from psycopg import errors

from oversight import audit, embedded
from oversight.models import AuditEvent, Decision, KillSwitch
from tests.conftest import api_session, decision_body

TABLE = "oversight_auditevent"
TRIGGER = "oversight_auditevent_append_only"
LOGIN = ("USER", "PASSWORD", "HOST", "PORT")


@pytest.fixture(scope="module")
def app_login(django_db_setup: None, django_db_blocker: Any) -> Iterator[dict[str, str]]:
    """The app role's login (user, password, host, port) to the test database."""
    if settings.DATABASE_APP_ROLE:
        yield {key: settings.DATABASE_APP_LOGIN[key] for key in LOGIN}
        return
    role, password = f"oversight_app_test_{os.getpid()}", secrets.token_urlsafe(16)
    with django_db_blocker.unblock(), connection.cursor() as c:
        c.execute("SELECT current_user, rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
        owner, may_create = c.fetchone()
        if not may_create:
            pytest.fail(f"DATABASE_URL's role {owner!r} is the only role and may not create another, so the "
                        "app role's limits cannot be checked: set DATABASE_OWNER_URL, or run `manage.py "
                        "setup_db_roles` (README, \"Database roles\")")
        c.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
        embedded.grant_app_role(c, owner, role)
    try:
        yield {**{key: settings.DATABASE_OWNER_LOGIN[key] for key in LOGIN}, "USER": role, "PASSWORD": password}
    finally:
        with django_db_blocker.unblock(), connection.cursor() as c:
            c.execute(f'DROP OWNED BY "{role}"')
            c.execute(f'DROP ROLE "{role}"')


def connect(login: dict[str, str]) -> psycopg.Connection[Any]:
    """A connection of the app's role to the test database, as the app makes them."""
    return psycopg.connect(host=login["HOST"], port=login["PORT"] or None, user=login["USER"],
                           password=login["PASSWORD"] or None, dbname=settings.DATABASES["default"]["NAME"],
                           autocommit=True, connect_timeout=5)


@pytest.fixture
def app_db(tworld: Any, app_login: dict[str, str]) -> Iterator[psycopg.Connection[Any]]:
    with connect(app_login) as conn:
        yield conn


def table_owner(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = %s::regclass", [TABLE]).fetchone()
    assert row is not None
    return str(row[0])


def test_the_app_role_is_no_superuser_and_owns_nothing(app_db, app_login):
    row = app_db.execute("SELECT current_user, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
                         "FROM pg_roles WHERE rolname = current_user").fetchone()
    assert row == (app_login["USER"], False, False, False, False, False)
    owner = table_owner(app_db)
    assert owner != app_login["USER"]
    assert app_db.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", [owner]).fetchone() == (False,)
    assert app_db.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                          "WHERE n.nspname = 'public' AND c.relowner = current_user::regrole").fetchone() == (0,)
    granted = {p: app_db.execute("SELECT has_table_privilege(%s, %s)", [TABLE, p]).fetchone()[0]
               for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "TRIGGER", "REFERENCES")}
    assert granted == {"SELECT": True, "INSERT": True, "UPDATE": False, "DELETE": False, "TRUNCATE": False,
                       "TRIGGER": False, "REFERENCES": False}
    # Elsewhere it reads and writes (the review queue, say), and only reads the migrations' record.
    assert app_db.execute("SELECT has_table_privilege('reviewqueue_reviewitem', 'SELECT, INSERT, UPDATE, DELETE'), "
                          "has_table_privilege('reviewqueue_reviewitem', 'TRUNCATE'), "
                          "has_table_privilege('django_migrations', 'INSERT')").fetchone() == (True, False, False)


REFUSED = {
    "truncate": "TRUNCATE oversight_auditevent",
    "truncate_cascade": "TRUNCATE oversight_auditevent CASCADE",
    "disable_trigger": f"ALTER TABLE {TABLE} DISABLE TRIGGER {TRIGGER}",
    "disable_all_triggers": "ALTER TABLE oversight_auditevent DISABLE TRIGGER ALL",
    "drop_trigger": f"DROP TRIGGER {TRIGGER} ON {TABLE}",
    "drop_insert_rule": "DROP TRIGGER oversight_auditevent_insert_rule ON oversight_auditevent",
    "replace_trigger_function": "CREATE OR REPLACE FUNCTION oversight_audit_append_only() RETURNS trigger "
                                "AS $$ BEGIN RETURN NEW; END $$ LANGUAGE plpgsql",
    "new_trigger": "CREATE TRIGGER sneaky BEFORE INSERT ON oversight_auditevent FOR EACH ROW "
                   "EXECUTE FUNCTION oversight_audit_append_only()",
    "replication_role": "SET session_replication_role = replica",
    "update": "UPDATE oversight_auditevent SET reason = 'nothing to see'",
    "delete": "DELETE FROM oversight_auditevent",
    "alter_column": "ALTER TABLE oversight_auditevent ALTER COLUMN reason DROP NOT NULL",
    "rename": "ALTER TABLE oversight_auditevent RENAME TO old_audit",
    "drop_table": "DROP TABLE oversight_auditevent",
    "reset_the_ids": "SELECT setval(pg_get_serial_sequence('oversight_auditevent', 'id'), 1)",
    "lock": "LOCK TABLE oversight_auditevent IN ACCESS EXCLUSIVE MODE",
    "shadow_table": "CREATE TABLE public.audit_copy (id bigint)",
}


@pytest.mark.parametrize("sql", REFUSED.values(), ids=REFUSED.keys())
def test_the_app_role_cannot_rewrite_the_audit_log(app_db, sql):
    before = app_db.execute("SELECT count(*), max(hash) FROM oversight_auditevent").fetchone()
    assert before is not None
    assert before[0] >= 1  # the world's systems and keys were audited
    with pytest.raises(errors.InsufficientPrivilege), app_db.transaction():
        app_db.execute(sql)
    assert app_db.execute("SELECT count(*), max(hash) FROM oversight_auditevent").fetchone() == before
    assert app_db.execute("SELECT tgenabled FROM pg_trigger WHERE tgname = %s", [TRIGGER]).fetchone() == ("O",)
    assert app_db.execute("SHOW session_replication_role").fetchone() == ("origin",)
    assert audit.verify_log().intact


def _chained_insert(conn: psycopg.Connection[Any], created_at: Any) -> int:
    """What ``audit.record`` does, with a time of the caller's choosing: a well-chained event."""
    with conn.transaction():
        row = conn.execute("SELECT next_id, last_hash FROM oversight_audit_chain_next(%s)",
                           [audit.CHAIN_LOCK_KEY]).fetchone()
        assert row is not None
        event_id, prev_hash = row
        event = audit.ChainRow(event_id, created_at, None, "mallory", "policy.change", None, "sup",
                               "it was always like this", {})
        digest = audit.event_hash(prev_hash, event)
        conn.execute("INSERT INTO oversight_auditevent (id, created_at, actor_id, actor_label, action, system_id, "
                     "target, reason, data, prev_hash, hash) VALUES (%s, %s, NULL, %s, %s, NULL, %s, %s, %s, %s, %s)",
                     [event_id, created_at, event.actor_label, event.action, event.target, event.reason,
                      json.dumps(event.data), prev_hash, digest])
    return int(event_id)


@pytest.mark.parametrize("offset", [timedelta(days=-30), timedelta(minutes=-5), timedelta(hours=2)],
                         ids=["last_month", "five_minutes_ago", "in_two_hours"])
def test_a_back_dated_event_is_refused_though_well_chained(app_db, offset):
    before = AuditEvent.objects.count()
    with pytest.raises(errors.CheckViolation, match="an event is dated when it is written"):
        _chained_insert(app_db, timezone.now() + offset)
    assert AuditEvent.objects.count() == before
    assert not AuditEvent.objects.filter(actor_label="mallory").exists()
    assert audit.verify_log().intact


def test_an_event_dated_now_goes_in_and_the_chain_holds(app_db):
    """The rule is the app's own: an event dated when it is written, with its hash."""
    event_id = _chained_insert(app_db, timezone.now())
    assert AuditEvent.objects.get(id=event_id).actor_label == "mallory"
    report = audit.verify_log()
    assert report.intact, report.message


def test_an_event_without_a_hash_is_refused_from_the_app_role(app_db):
    with pytest.raises(errors.CheckViolation, match="written through the hash chain"), app_db.transaction():
        app_db.execute("INSERT INTO oversight_auditevent (actor_label, action, target, reason, data, created_at) "
                       "VALUES ('script', 'test.insert', '', '', '{}', now())")
    assert not AuditEvent.objects.filter(action="test.insert").exists()


# --- the app itself, logged in as the app's role ----------------------------------------------------------


def _relogin(login: dict[str, str]) -> None:
    conn = connections["default"]
    conn.close()
    conn.close_pool()
    conn.settings_dict.update(login)


@pytest.fixture
def as_app_role(tworld: Any, app_login: dict[str, str]) -> Iterator[Any]:
    """The tests' connection (and the in-process API's) logs in as the app's role; back to the owner after."""
    before = {key: connections["default"].settings_dict[key] for key in LOGIN}
    _relogin(app_login)
    try:
        yield tworld
    finally:
        _relogin(before)


def test_the_app_works_as_its_role(as_app_role, app_login):
    world = as_app_role
    with connection.cursor() as c:
        c.execute("SELECT current_user, session_user")
        assert c.fetchone() == (app_login["USER"], app_login["USER"])
    # An audit event through the chain.
    with transaction.atomic():
        event = audit.record(world.admin, "roles.check", target="db", reason="the app's own role writes the log")
    assert AuditEvent.objects.get(id=event.id).hash == event.hash
    # A decision through the API (level 1: a review item too), and a kill switch flipped through it.
    r = world.client_for("crit").post("/api/v1/systems/crit/decisions", json.dumps(decision_body(0.9)),
                                      content_type="application/json")
    assert r.status_code == 201, r.content
    assert Decision.objects.get(id=r.json()["id"].removeprefix("dec_")).status == "pending_review"
    flip = {"scope": "system", "system": "sup", "engaged": True, "reason": "roles check"}
    r = api_session(world.admin).post("/api/v1/killswitches", json.dumps(flip), content_type="application/json")
    assert r.status_code in (200, 201), r.content
    assert KillSwitch.objects.get(system__slug="sup", model="").engaged
    assert AuditEvent.objects.filter(action__startswith="killswitch.", reason="roles check").exists()
    report = audit.verify_log()
    assert report.intact, report.message


def test_the_live_server_logs_in_as_the_app_role(tworld, live_server_url):
    """The real server (uvicorn, started with ``test_database_env``) answers a decision as the role
    DATABASE_URL names: the app's (with one role configured, that one role)."""
    r = httpx.post(f"{live_server_url}/api/v1/systems/sup/decisions", json=decision_body(0.9),
                   headers={"Authorization": f"Bearer {tworld.keys['sup']}"}, timeout=30)
    assert r.status_code == 201, r.text
    with connection.cursor() as c:
        c.execute("SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database() "
                  "AND pid <> pg_backend_pid() AND usename IS NOT NULL")
        users = {row[0] for row in c.fetchall()}
    assert settings.DATABASE_APP_LOGIN["USER"] in users
    assert Decision.objects.filter(id=r.json()["id"].removeprefix("dec_")).exists()
