"""The audit log's hash chain: intact after real actions and under concurrent writers; a changed,
removed or inserted row is named by `manage.py verify_audit`."""

from __future__ import annotations

import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction

from oversight import actions, audit
from oversight.models import AuditEvent
from tests.conftest import release_switch

TRIGGER = "oversight_auditevent_append_only"


def verify_output() -> str:
    out = StringIO()
    call_command("verify_audit", "--chunk-size", "3", stdout=out)
    return out.getvalue()


def tamper(sql: str, params: list[object]) -> None:
    """What someone with database access could do: switch the trigger off, write, switch it on."""
    with connection.cursor() as c:
        c.execute(f"ALTER TABLE oversight_auditevent DISABLE TRIGGER {TRIGGER}")
        c.execute(sql, params)
        c.execute(f"ALTER TABLE oversight_auditevent ENABLE TRIGGER {TRIGGER}")


def some_actions(world) -> None:
    actions.set_killswitch(world.admin, "global", True, "incident 7")
    actions.update_system(world.admin, "sup", {"level": 1, "confidence_threshold": 0.7}, reason="tighten")
    actions.set_killswitch(world.admin, "system", True, "noisy", system_slug="sup")
    release_switch(world.admin, "global")
    audit.record(world.admin, "note.float", data={"big": 1.5e16, "small": 2.5e-07, "neg0": -0.0, "huge": 2**70})


def test_the_chain_links_every_event_from_the_start(world):
    some_actions(world)
    rows = list(AuditEvent.objects.order_by("id"))
    assert len(rows) >= 10  # the world's systems and keys, then the actions above
    assert rows[0].prev_hash == audit.GENESIS
    for before, after in zip(rows, rows[1:], strict=False):
        assert after.prev_hash == before.hash
    assert all(len(r.hash) == 64 for r in rows)
    out = verify_output()
    assert out.startswith(f"audit chain intact: {len(rows)} events, last hash {rows[-1].hash}")


def test_an_event_is_written_only_through_the_chain(world):
    with pytest.raises(ValueError, match="oversight.audit.record"):
        AuditEvent.objects.create(actor_label="x", action="sneaky")


def test_a_changed_row_is_named(world):
    some_actions(world)
    event = AuditEvent.objects.get(action="policy.change")
    tamper("UPDATE oversight_auditevent SET reason = %s WHERE id = %s", ["nothing to see", event.id])
    with pytest.raises(CommandError) as caught:
        verify_output()
    message = str(caught.value)
    assert message.startswith(f"event #{event.id} (")
    assert "policy.change by admin" in message
    assert "its hash does not match its content — the row was changed after it was written" in message


def test_a_removed_row_is_named_at_the_next_event(world):
    some_actions(world)
    ids = list(AuditEvent.objects.order_by("id").values_list("id", flat=True))
    gone, after = ids[4], ids[5]
    tamper("DELETE FROM oversight_auditevent WHERE id = %s", [gone])
    with pytest.raises(CommandError, match=rf"event #{after} .*prev_hash does not match event #{ids[3]}'s hash "
                                           "— a row was removed or inserted"):
        verify_output()


def test_removing_the_first_row_is_seen_too(world):
    first = AuditEvent.objects.order_by("id").first()
    tamper("DELETE FROM oversight_auditevent WHERE id = %s", [first.id])
    report = audit.verify_log()
    assert not report.intact
    assert "does not match the start of the chain" in report.message


def test_a_rehashed_row_breaks_the_link_after_it(world):
    """Rewriting a row and its own hash is not enough: the next event still holds the old hash."""
    some_actions(world)
    ids = list(AuditEvent.objects.order_by("id").values_list("id", flat=True))
    tamper("UPDATE oversight_auditevent SET reason = 'x', hash = %s WHERE id = %s", ["f" * 64, ids[2]])
    report = audit.verify_log()
    assert f"event #{ids[2]} " in report.message  # its own hash no longer fits its content


def test_the_page_button_says_the_same(world):
    some_actions(world)
    c = world.person(world.admin)
    r = c.post("/audit/verify/", follow=True)
    assert r.status_code == 403  # no CSRF token
    from tests.conftest import csrf_session

    c = csrf_session(world.admin)
    r = c.post("/audit/verify/", follow=True)
    assert "audit chain intact" in r.content.decode()
    event = AuditEvent.objects.get(action="policy.change")
    tamper("UPDATE oversight_auditevent SET target = 'x' WHERE id = %s", [event.id])
    r = c.post("/audit/verify/", follow=True)
    assert f"event #{event.id}" in r.content.decode()
    assert csrf_session(world.editor).post("/audit/verify/").status_code == 403


def test_concurrent_writers_chain_in_commit_order(tworld):
    """Ten threads, each with its own connection, append events in transactions of their own."""
    writers, each = 10, 15
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            start.wait(timeout=10)
            for i in range(each):
                with transaction.atomic():
                    audit.record(tworld.admin, "load.write", target=f"w{n}", data={"i": i, "x": n / 7})
                    if i % 5 == 0:  # a second event in the same transaction
                        audit.record(None, "load.write2", target=f"w{n}")
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)
        finally:
            connection.close()

    before = AuditEvent.objects.count()
    threads = [threading.Thread(target=work, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert AuditEvent.objects.count() == before + writers * (each + 3)
    report = audit.verify_log(chunk_size=7)
    assert report.intact, report.message
    assert report.count == before + writers * (each + 3)
    # A rolled-back writer leaves a gap in the ids but no break in the chain.
    def rolled_back() -> None:
        with transaction.atomic():
            audit.record(None, "load.rollback")
            raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        rolled_back()
    audit.record(None, "load.after")
    assert audit.verify_log().intact


def test_a_row_inserted_behind_the_applications_back_is_named(world):
    """The trigger lets INSERT through (test_policies_audit); the chain does not."""
    with connection.cursor() as c:
        c.execute("INSERT INTO oversight_auditevent (actor_label, action, target, reason, data, created_at) "
                  "VALUES ('script', 'test.insert', '', '', '{}', now()) RETURNING id")
        (event_id,) = c.fetchone()
    with pytest.raises(CommandError, match=rf"event #{event_id} \(.*test.insert by script\): it has no hash"):
        verify_output()
