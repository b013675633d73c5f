import django.core.validators
import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("oversight", "0012_release_requests"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Readiness",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("answers", models.JSONField()),
                ("score", models.PositiveSmallIntegerField(validators=[django.core.validators.MaxValueValidator(5)])),
                ("note", models.TextField(blank=True, default="")),
                ("assessed_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("assessed_by", models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL,
                                                  related_name="+", to=settings.AUTH_USER_MODEL)),
                ("system", models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                             related_name="readiness_assessments", to="oversight.aisystem")),
            ],
            options={
                "ordering": ["-assessed_at", "-id"],
                "indexes": [models.Index(fields=["system", "-assessed_at", "-id"], name="readiness_system_at")],
                "constraints": [models.CheckConstraint(condition=models.Q(("score__lte", 5)),
                                                       name="readiness_score_0_5")],
            },
        ),
    ]
