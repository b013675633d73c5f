"""The queue's order (reviewqueue.triage): each item carries its system's level and its decision's
confidence, filled in for the items already there, and one partial index serves claim-next."""

from django.db import migrations, models

BACKFILL = """
UPDATE reviewqueue_reviewitem r SET level = s.level, confidence = d.confidence
FROM oversight_aisystem s, oversight_decision d
WHERE s.id = r.system_id AND d.id = r.decision_id
"""


class Migration(migrations.Migration):

    dependencies = [
        ('oversight', '0018_scoring_job_unlogged'),
        ('reviewqueue', '0004_job_indexes'),
    ]

    operations = [
        migrations.AddField(
            model_name='reviewitem',
            name='confidence',
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='reviewitem',
            name='level',
            field=models.PositiveSmallIntegerField(default=2),
        ),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
        migrations.AddIndex(
            model_name='reviewitem',
            index=models.Index(condition=models.Q(('status__in', ['open', 'claimed'])),
                               fields=['level', 'due_at', 'confidence', 'id'], name='review_triage'),
        ),
    ]
