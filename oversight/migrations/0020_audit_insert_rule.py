"""The audit log for a role that does not own it: an event is dated when it is written.

With two database roles (README, "Database roles") the app may only SELECT and INSERT the audit
log; UPDATE and DELETE are refused twice (no privilege, and the append-only trigger of 0002), and
TRUNCATE, ALTER TABLE, DISABLE/DROP TRIGGER and session_replication_role need the owner or a
superuser. What INSERT still allowed was a back-dated event: the hash is a plain sha256 with no
secret, so a role that may call `oversight_audit_chain_next` and INSERT could append a well-chained
event dated last week, and it would sit among last week's events on the page and verify.

This trigger refuses, for every role but the table's owner (and superusers), an INSERT whose
`created_at` is more than a minute from the database's clock (`clock_timestamp()`, at the INSERT):
`oversight.audit.record` takes the time from the app's clock right before it inserts, and a minute is
room for a host whose clock is a little off. It also refuses an event without a hash from those
roles: the app writes only through the chain. The owner is left out on purpose: it could switch the
trigger off anyway, and it is the one that restores dumps, loads benches and, in the tests, tampers
with the log to show that verification notices.
"""

from django.db import migrations

INSERT_RULE = """
CREATE OR REPLACE FUNCTION oversight_audit_insert_rule() RETURNS trigger AS $$
BEGIN
    IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE') THEN
        RETURN NEW;  -- the owner, or a superuser
    END IF;
    IF NEW.hash = '' THEN
        RAISE EXCEPTION 'audit events are written through the hash chain (an event without a hash refused)'
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.created_at NOT BETWEEN clock_timestamp() - interval '1 minute' AND clock_timestamp() + interval '1 minute' THEN
        RAISE EXCEPTION 'audit event dated % refused: an event is dated when it is written (the database''s clock is %)',
            NEW.created_at, clock_timestamp()
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER oversight_auditevent_insert_rule
    BEFORE INSERT ON oversight_auditevent
    FOR EACH ROW EXECUTE FUNCTION oversight_audit_insert_rule();
"""

DROP_INSERT_RULE = """
DROP TRIGGER IF EXISTS oversight_auditevent_insert_rule ON oversight_auditevent;
DROP FUNCTION IF EXISTS oversight_audit_insert_rule();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("oversight", "0019_webhooks_double_review"),
    ]

    operations = [
        migrations.RunSQL(INSERT_RULE, DROP_INSERT_RULE),
    ]
