import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("oversight", "0014_guardrails"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="decision", name="failure",
            field=models.CharField(blank=True, db_default="", default="", max_length=16),
        ),
        migrations.CreateModel(
            name="Drill",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("kind", models.CharField(choices=[("error", "the model raises an error"),
                                                   ("garbage", "the model answers garbage"),
                                                   ("deadline", "the model answers after its deadline")],
                                          max_length=16)),
                ("share", models.FloatField(default=1.0, validators=[
                    django.core.validators.MinValueValidator(0.0), django.core.validators.MaxValueValidator(1.0)])),
                ("reason", models.TextField()),
                ("started_at", models.DateTimeField()),
                ("ends_at", models.DateTimeField()),
                ("ended_at", models.DateTimeField(blank=True, null=True)),
                ("ended_by", models.CharField(blank=True, default="", max_length=200)),
                ("report", models.JSONField(blank=True, null=True)),
                ("started_by", models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL,
                                                 related_name="+", to=settings.AUTH_USER_MODEL)),
                ("system", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="drills",
                                             to="oversight.aisystem")),
            ],
            options={
                "ordering": ["-started_at", "-id"],
                "constraints": [models.UniqueConstraint(condition=models.Q(("ended_at__isnull", True)),
                                                        fields=("system",), name="drill_one_running")],
            },
        ),
    ]
