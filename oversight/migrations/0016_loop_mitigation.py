import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("oversight", "0015_drills")]

    operations = [
        migrations.AddField(model_name="aisystem", name="loop_mitigation",
                            field=models.JSONField(blank=True, default=dict)),
        migrations.CreateModel(
            name="LoopMitigation",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("exploration_share", models.FloatField()),
                ("model_weight", models.FloatField()),
                ("reason", models.TextField()),
                ("auto", models.BooleanField(default=False)),
                ("started_by", models.CharField(max_length=200)),
                ("started_at", models.DateTimeField()),
                ("ended_at", models.DateTimeField(blank=True, null=True)),
                ("ended_by", models.CharField(blank=True, default="", max_length=200)),
                ("end_reason", models.TextField(blank=True, default="")),
                ("system", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                             related_name="loop_mitigations", to="oversight.aisystem")),
            ],
            options={
                "ordering": ["-started_at", "-id"],
                "constraints": [models.UniqueConstraint(condition=models.Q(("ended_at__isnull", True)),
                                                        fields=("system",), name="loop_mitigation_one_active")],
            },
        ),
    ]
