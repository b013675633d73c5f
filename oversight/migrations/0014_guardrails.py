from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("oversight", "0013_readiness")]

    operations = [
        migrations.AddField(model_name="aisystem", name="guardrails", field=models.JSONField(blank=True, default=dict)),
    ]
