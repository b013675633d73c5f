"""Hash-chain the audit log: every event carries the previous event's hash and its own.

hash = sha256(prev_hash + canonical JSON of the event's content); the first event's
prev_hash is 64 zeros. Existing events are chained here in id order; the append-only
trigger is disabled for that backfill only, inside this migration's transaction.

The function `oversight_audit_chain_next(lock_key)` is what `oversight.audit.record` calls:
it takes the transaction-scoped advisory lock, then (with a fresh snapshot, as a VOLATILE
PL/pgSQL function gets per statement) draws the next id and reads the chain head, so
events chain in the order their transactions commit.

The hash columns default to '' in the database too: an INSERT behind the application's back
still goes in (the trigger refuses only UPDATE and DELETE), and verification names that row.
"""

import hashlib
from datetime import UTC

import json
from django.db import migrations, models
from django.utils import timezone

GENESIS = "0" * 64

CHAIN_NEXT = """
CREATE OR REPLACE FUNCTION oversight_audit_chain_next(lock_key bigint)
RETURNS TABLE (next_id bigint, last_hash varchar) AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    RETURN QUERY SELECT
        nextval(pg_get_serial_sequence('oversight_auditevent', 'id')),
        COALESCE((SELECT e.hash FROM oversight_auditevent e ORDER BY e.id DESC LIMIT 1), %s)::varchar;
END;
$$ LANGUAGE plpgsql VOLATILE;
""".replace("%s", "'" + GENESIS + "'")

DROP_CHAIN_NEXT = "DROP FUNCTION IF EXISTS oversight_audit_chain_next(bigint);"


def _event_hash(prev_hash, row):
    # A frozen copy of oversight.audit.event_hash as of this migration (migrations do not
    # import app code); tests/unit/test_audit_hash.py checks the two agree.
    created = row["created_at"].astimezone(UTC).isoformat(timespec="microseconds")
    content = [row["id"], created, row["actor_id"], row["actor_label"], row["action"],
               row["system_id"], row["target"], row["reason"], row["data"]]
    body = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(prev_hash.encode("ascii") + body).hexdigest()


def backfill(apps, schema_editor):
    AuditEvent = apps.get_model("oversight", "AuditEvent")
    fields = ("id", "created_at", "actor_id", "actor_label", "action", "system_id", "target", "reason", "data")
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("ALTER TABLE oversight_auditevent DISABLE TRIGGER oversight_auditevent_append_only")
        prev = GENESIS
        batch = []
        for row in AuditEvent.objects.order_by("id").values(*fields).iterator(chunk_size=2000):
            digest = _event_hash(prev, row)
            batch.append((prev, digest, row["id"]))
            prev = digest
            if len(batch) >= 2000:
                cursor.executemany("UPDATE oversight_auditevent SET prev_hash = %s, hash = %s WHERE id = %s", batch)
                batch = []
        if batch:
            cursor.executemany("UPDATE oversight_auditevent SET prev_hash = %s, hash = %s WHERE id = %s", batch)
        cursor.execute("ALTER TABLE oversight_auditevent ENABLE TRIGGER oversight_auditevent_append_only")


class Migration(migrations.Migration):
    dependencies = [
        ("oversight", "0009_outcome_source"),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="created_at",
            field=models.DateTimeField(db_index=True, default=timezone.now),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="prev_hash",
            field=models.CharField(db_default="", default="", max_length=64),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="hash",
            field=models.CharField(db_default="", default="", max_length=64),
        ),
        migrations.RunSQL(CHAIN_NEXT, DROP_CHAIN_NEXT),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
