import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("oversight", "0010_audit_chain"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="aisystem",
            name="breaker",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.CreateModel(
            name="Breaker",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("model", models.CharField(blank=True, default="", max_length=200)),
                ("state", models.CharField(choices=[("closed", "Closed"), ("open", "Open"), ("half_open", "half-open")],
                                           default="closed", max_length=10)),
                ("reason", models.TextField(blank=True, default="")),
                ("manual", models.BooleanField(default=False)),
                ("awaiting_person", models.BooleanField(default=False)),
                ("changed_at", models.DateTimeField(blank=True, null=True)),
                ("changed_by", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                                 related_name="+", to=settings.AUTH_USER_MODEL)),
                ("system", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="breakers",
                                             to="oversight.aisystem")),
            ],
            options={"constraints": [models.UniqueConstraint(fields=("system", "model"), name="breaker_unique")]},
        ),
        migrations.CreateModel(
            name="BreakerEvent",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("model", models.CharField(blank=True, default="", max_length=200)),
                ("from_state", models.CharField(max_length=10)),
                ("to_state", models.CharField(max_length=10)),
                ("reason", models.TextField()),
                ("metric", models.CharField(blank=True, default="", max_length=64)),
                ("value", models.FloatField(blank=True, null=True)),
                ("threshold", models.FloatField(blank=True, null=True)),
                ("actor_label", models.CharField(max_length=200)),
                ("at", models.DateTimeField()),
                ("system", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                             related_name="breaker_events", to="oversight.aisystem")),
            ],
            options={
                "ordering": ["-at", "-id"],
                "indexes": [models.Index(fields=["system", "-at"], name="breaker_event_system_at")],
            },
        ),
    ]
