"""The queue's oldest item and its "older than" filter read an index on when items were made;
claim-next and the past-due count read ``review_triage`` now, so ``review_open_due`` goes."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('reviewqueue', '0005_triage_order'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='reviewitem',
            name='review_open_due',
        ),
        migrations.AddIndex(
            model_name='reviewitem',
            index=models.Index(condition=models.Q(('status__in', ['open', 'claimed'])), fields=['created_at'],
                               name='review_open_created'),
        ),
    ]
