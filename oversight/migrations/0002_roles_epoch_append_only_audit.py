"""Role groups, the config-epoch row, and an append-only audit log (a trigger refuses UPDATE/DELETE)."""

from django.db import migrations

ROLES = ("operator", "editor", "admin")

AUDIT_TRIGGER = """
CREATE OR REPLACE FUNCTION oversight_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER oversight_auditevent_append_only
    BEFORE UPDATE OR DELETE ON oversight_auditevent
    FOR EACH ROW EXECUTE FUNCTION oversight_audit_append_only();
"""

DROP_AUDIT_TRIGGER = """
DROP TRIGGER IF EXISTS oversight_auditevent_append_only ON oversight_auditevent;
DROP FUNCTION IF EXISTS oversight_audit_append_only();
"""


def create_roles_and_epoch(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ROLES:
        Group.objects.get_or_create(name=name)
    ConfigEpoch = apps.get_model("oversight", "ConfigEpoch")
    ConfigEpoch.objects.get_or_create(id=1, defaults={"epoch": 1})


class Migration(migrations.Migration):
    dependencies = [
        ("oversight", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunPython(create_roles_and_epoch, migrations.RunPython.noop),
        migrations.RunSQL(AUDIT_TRIGGER, DROP_AUDIT_TRIGGER),
    ]
