"""The audit chain's rule, with no database: canonical content, hashes, verification, words."""

from __future__ import annotations

import hashlib
import importlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from oversight import audit
from oversight.models import AuditEvent

T0 = datetime(2026, 12, 3, 14, 30, 0, 123456, tzinfo=UTC)


def chain(n: int) -> list[audit.ChainRow]:
    rows, prev = [], audit.GENESIS
    for i in range(1, n + 1):
        row = audit.ChainRow(i, T0 + timedelta(seconds=i), 7 if i % 2 else None, "alice" if i % 2 else "system",
                             "policy.change", 3, "sup", f"reason {i}", {"b": i, "a": [1.5, None]})
        digest = audit.event_hash(prev, row)
        rows.append(row._replace(prev_hash=prev, hash=digest))
        prev = digest
    return rows


def test_canonical_content_is_sorted_compact_utc_with_microseconds():
    row = audit.ChainRow(5, T0.astimezone(timezone(timedelta(hours=2))), None, "bob", "x", None, "", "é",
                         {"z": 1, "a": {"d": 2, "c": 3}})
    assert audit.canonical(row) == (
        '[5,"2026-12-03T14:30:00.123456+00:00",null,"bob","x",null,"","é",{"a":{"c":3,"d":2},"z":1}]'.encode()
    )


def test_the_hash_is_sha256_of_prev_hash_then_content():
    row = chain(1)[0]
    expected = hashlib.sha256(audit.GENESIS.encode() + audit.canonical(row)).hexdigest()
    assert row.hash == expected
    assert len(row.hash) == 64


def test_the_migration_backfills_with_the_same_rule():
    migration = importlib.import_module("oversight.migrations.0010_audit_chain")
    for row in chain(3):
        assert migration._event_hash(row.prev_hash, row._asdict()) == row.hash


def test_an_intact_chain_verifies():
    rows = chain(5)
    report = audit.verify(rows)
    assert report.intact
    assert report.message == f"audit chain intact: 5 events, last hash {rows[-1].hash}"
    assert audit.verify([]).message == f"audit chain intact: 0 events, last hash {audit.GENESIS}"


@pytest.mark.parametrize("field", ["reason", "actor_label", "created_at", "data", "system_id", "id"])
def test_a_changed_field_is_named_at_its_event(field):
    rows = chain(5)
    changed = {"reason": "nothing", "actor_label": "mallory", "created_at": T0, "data": {"b": 99},
               "system_id": 4, "id": 33}[field]
    rows[2] = rows[2]._replace(**{field: changed})
    report = audit.verify(rows)
    assert not report.intact
    assert report.count == 3
    assert report.message.startswith(f"event #{rows[2].id} (")
    assert "its hash does not match its content — the row was changed after it was written" in report.message


def test_a_removed_row_is_named_at_the_next_event():
    rows = chain(5)
    del rows[2]
    report = audit.verify(rows)
    assert report.message == (
        "event #4 (2026-12-03T14:30:04+00:00, policy.change by system): its prev_hash does not match "
        "event #2's hash — a row was removed or inserted"
    )


def test_a_removed_first_row_and_a_reordering_are_seen():
    rows = chain(4)
    assert "the start of the chain" in audit.verify(rows[1:]).message
    rows[1], rows[2] = rows[2], rows[1]
    assert "a row was removed or inserted" in audit.verify(rows).message


def test_numbers_are_hashed_as_jsonb_gives_them_back():
    stored = audit.as_stored({"big": 1.5e16, "small": 2.5e-07, "neg0": -0.0, "int": 2**70, "f": 0.1, "t": (1, 2),
                              3: "x"})
    assert stored == {"big": 15000000000000000, "small": 2.5e-07, "neg0": 0.0, "int": 2**70, "f": 0.1,
                      "t": [1, 2], "3": "x"}
    assert isinstance(stored["big"], int)


@pytest.mark.parametrize(("cell", "safe"), [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("plain", "plain"), ("", ""),
])
def test_spreadsheet_cells_never_start_a_formula(cell, safe):
    assert audit.spreadsheet_safe(cell) == safe


def test_details_are_sentences_and_small_tables():
    change = AuditEvent(action="policy.change", target="sup", data={
        "version": 3, "changes": {"level": {"from": 2, "to": 1}, "confidence_threshold": {"from": 0.6, "to": 0.7}}})
    assert audit.describe(change).sentence == "policy version 3: level: 2 → 1, confidence_threshold: 0.6 → 0.7"
    switch = audit.describe(AuditEvent(action="killswitch.engage", target="model:sup/collab-v3", data={}))
    assert switch.sentence == "engaged the model kill switch for sup/collab-v3"
    assert switch.rows == [("scope", "model"), ("target", "sup/collab-v3")]
    assert audit.describe(AuditEvent(action="killswitch.release", target="global:global", data={})).sentence == (
        "released the global kill switch everywhere")
    asked = audit.describe(AuditEvent(action="killswitch.release_requested", target="system:crit", data={}))
    assert asked.sentence == "release requested: the system kill switch for crit"
    created = audit.describe(AuditEvent(action="system.create", target="fraud",
                                        data={"slug": "fraud", "level": 1, "fallback": {"decision": "refer"},
                                              "window": {"kind": "time", "seconds": 3600}, "drift": {}}))
    assert created.sentence == "created fraud"
    assert ("fallback", "decision: refer") in created.rows
    assert ("window", "kind: time; seconds: 3600") in created.rows
    assert ("drift", "none") in created.rows
    review = audit.describe(AuditEvent(action="review.approve", target="dec_1",
                                       data={"item": "rev_2", "kind": "audit"}))
    assert (review.sentence, review.decision, review.review_item) == ("review item resolved: approve (audit)",
                                                                      "dec_1", "rev_2")
    for said in (created, switch, review, audit.describe(AuditEvent(action="x.y", data={"a": [{"b": None}]}))):
        text = said.sentence + repr([v for _, v in said.rows])
        assert "{'" not in text
        assert "': " not in text


def test_a_row_without_a_hash_is_named_as_written_outside_the_chain():
    rows = chain(3)
    rows.append(audit.ChainRow(4, T0, None, "script", "test.insert", None, "", "", {}))
    assert "event #4 " in audit.verify(rows).message
    assert "it has no hash — it was inserted behind the application's back" in audit.verify(rows).message
