from django.db import migrations, models


class Migration(migrations.Migration):
    """The policy fields ``guardrails`` (level 3) and ``fallback_rule`` (what the fallback is)."""

    dependencies = [("oversight", "0013_readiness")]

    operations = [
        migrations.AddField(model_name="aisystem", name="guardrails", field=models.JSONField(blank=True, default=dict)),
        migrations.AddField(model_name="aisystem", name="fallback_rule",
                            field=models.JSONField(blank=True, default=dict)),
    ]
