"""The audit chain appended in one statement: ``oversight_audit_append``.

``oversight.audit.record`` used two round trips inside the writer's transaction: take the chain
lock and read the head (``oversight_audit_chain_next``), then INSERT the event whose hash Python
computed. The lock is held to the end of the transaction, so the Python work and the second round
trip sat inside the one section every audited write in the system passes through one at a time.
This function does both steps in the database: it takes the lock, draws the id, reads the head,
hashes and inserts, and returns the id and the two hashes.

The hash rule is the same (``oversight.audit``'s docstring): sha256 of the previous hash and the
canonical JSON array ``[id, created_at, actor_id, actor_label, action, system_id, target, reason,
data]``. Python still writes that array, except its id, which only the database knows under the
lock: it passes the array's text after the id (``tail``: ``created_at`` and the rest, then ``]``),
and the function hashes ``prev_hash || '[' || id || ',' || tail``; an integer's JSON text is its
decimal digits, so this is byte for byte the array Python would have written. Verification
(``audit.verify``, in Python) recomputes every hash, and ``tests/integration/test_audit_chain.py``
writes events through this function and verifies them.

``oversight_audit_chain_next`` stays: it is the step the insert-rule test (0020) uses to show a
back-dated event refused.
"""

from django.db import migrations

GENESIS = "0" * 64

APPEND = """
CREATE OR REPLACE FUNCTION oversight_audit_append(
    lock_key bigint, p_created_at timestamptz, p_actor_id integer, p_actor_label varchar, p_action varchar,
    p_system_id bigint, p_target varchar, p_reason text, p_data jsonb, p_tail text)
RETURNS TABLE (event_id bigint, event_prev_hash varchar, event_hash varchar) AS $$
DECLARE
    new_id bigint;
    prev varchar;
    digest varchar;
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    new_id := nextval(pg_get_serial_sequence('oversight_auditevent', 'id'));
    prev := COALESCE((SELECT e.hash FROM oversight_auditevent e ORDER BY e.id DESC LIMIT 1), '%s');
    digest := encode(sha256(convert_to(prev || '[' || new_id::text || ',' || p_tail, 'UTF8')), 'hex');
    INSERT INTO oversight_auditevent
        (id, created_at, actor_id, actor_label, action, system_id, target, reason, data, prev_hash, hash)
        VALUES (new_id, p_created_at, p_actor_id, p_actor_label, p_action, p_system_id, p_target, p_reason,
                p_data, prev, digest);
    RETURN QUERY SELECT new_id, prev, digest;
END;
$$ LANGUAGE plpgsql VOLATILE;
""".replace("%s", GENESIS)

DROP_APPEND = ("DROP FUNCTION IF EXISTS oversight_audit_append(bigint, timestamptz, integer, varchar, varchar, "
               "bigint, varchar, text, jsonb, text);")


class Migration(migrations.Migration):
    dependencies = [
        ("oversight", "0020_audit_insert_rule"),
    ]

    operations = [migrations.RunSQL(APPEND, DROP_APPEND)]
