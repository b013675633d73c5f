"""Subject search, the reason filter and the system filter at any queue size (issue 11).

Each item carries its decision's subject and reasons (one sentence a line), copied as the item is
inserted by a trigger (``reviewitem_decision_text``: whichever path makes the item, a single
decision's one statement, a batch's COPY or a test's ``create``; it fills only what comes empty),
and filled here for the items waiting now. Two pg_trgm GIN indexes on the waiting items answer
"contains, any case" (``UPPER(col) LIKE UPPER('%…%')``, what ``icontains`` writes) without reading
the queue or the decisions table, with statistics on the two expressions; nothing is added to the
decisions table, so a decision's insert pays only for its item's row (one primary-key lookup and
the index entries). ``review_system_triage`` walks one system's items in triage order.
"""

import django.contrib.postgres.indexes
import django.db.models.functions.text
from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations, models

REASONS_AS_TEXT = """CASE jsonb_typeof(d.reasons)
    WHEN 'array' THEN array_to_string(ARRAY(SELECT jsonb_array_elements_text(d.reasons)), E'\\n')
    ELSE coalesce(d.reasons #>> '{}', '') END"""

TRIGGER = f"""
CREATE FUNCTION reviewitem_decision_text() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT coalesce(NEW.subject, d.subject), coalesce(NEW.reasons_text, {REASONS_AS_TEXT})
      INTO NEW.subject, NEW.reasons_text
      FROM oversight_decision d WHERE d.id = NEW.decision_id;
    RETURN NEW;
END
$$;
CREATE TRIGGER reviewitem_decision_text BEFORE INSERT ON reviewqueue_reviewitem
    FOR EACH ROW WHEN (NEW.subject IS NULL OR NEW.reasons_text IS NULL)
    EXECUTE FUNCTION reviewitem_decision_text();
"""  # noqa: S608 (constants only)

UNTRIGGER = """
DROP TRIGGER IF EXISTS reviewitem_decision_text ON reviewqueue_reviewitem;
DROP FUNCTION IF EXISTS reviewitem_decision_text();
"""

# The planner ignores a partial index's statistics: without these it would guess any text rare
# (100 rows of a million) and read three quarters of the queue through the index for a common one.
STATISTICS = """
CREATE STATISTICS review_subject_upper ON (upper(subject)) FROM reviewqueue_reviewitem;
CREATE STATISTICS review_reasons_upper ON (upper(reasons_text)) FROM reviewqueue_reviewitem;
"""
UNSTATISTICS = """
DROP STATISTICS IF EXISTS review_subject_upper;
DROP STATISTICS IF EXISTS review_reasons_upper;
"""

# Resolved items are never searched (the list shows waiting ones): they keep NULL.
BACKFILL = f"""
UPDATE reviewqueue_reviewitem i
   SET subject = coalesce(i.subject, d.subject), reasons_text = coalesce(i.reasons_text, {REASONS_AS_TEXT})
  FROM oversight_decision d
 WHERE d.id = i.decision_id AND i.status IN ('open', 'claimed')
   AND (i.subject IS NULL OR i.reasons_text IS NULL);
"""  # noqa: S608 (constants only)

WAITING = models.Q(("status__in", ["open", "claimed"]))


class Migration(migrations.Migration):

    dependencies = [
        ('reviewqueue', '0007_second_opinion_claimed_at'),
    ]

    operations = [
        TrigramExtension(),
        migrations.AddField(
            model_name='reviewitem',
            name='subject',
            field=models.TextField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='reviewitem',
            name='reasons_text',
            field=models.TextField(blank=True, editable=False, null=True),
        ),
        migrations.RunSQL(TRIGGER, UNTRIGGER),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
        migrations.AddIndex(
            model_name='reviewitem',
            index=django.contrib.postgres.indexes.GinIndex(
                django.contrib.postgres.indexes.OpClass(django.db.models.functions.text.Upper('subject'),
                                                        name='gin_trgm_ops'),
                condition=WAITING, name='review_subject_trgm'),
        ),
        migrations.AddIndex(
            model_name='reviewitem',
            index=django.contrib.postgres.indexes.GinIndex(
                django.contrib.postgres.indexes.OpClass(django.db.models.functions.text.Upper('reasons_text'),
                                                        name='gin_trgm_ops'),
                condition=WAITING, name='review_reasons_trgm'),
        ),
        migrations.RunSQL(STATISTICS, UNSTATISTICS),
        migrations.AddIndex(
            model_name='reviewitem',
            index=models.Index(condition=WAITING, fields=['system', 'level', 'due_at', 'confidence', 'id'],
                               name='review_system_triage'),
        ),
    ]
