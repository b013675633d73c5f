import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("oversight", "0011_breakers"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ReleaseRequest",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("reason", models.TextField()),
                ("state", models.CharField(choices=[("pending", "Pending"), ("approved", "Approved"),
                                                    ("withdrawn", "Withdrawn")], default="pending", max_length=10)),
                ("requested_at", models.DateTimeField(auto_now_add=True)),
                ("decided_at", models.DateTimeField(blank=True, null=True)),
                ("decided_by", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                                 related_name="+", to=settings.AUTH_USER_MODEL)),
                ("requested_by", models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="+",
                                                   to=settings.AUTH_USER_MODEL)),
                ("switch", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                             related_name="release_requests", to="oversight.killswitch")),
            ],
            options={
                "ordering": ["-requested_at", "-id"],
                "constraints": [models.UniqueConstraint(condition=models.Q(("state", "pending")), fields=("switch",),
                                                        name="release_request_one_pending")],
            },
        ),
    ]
