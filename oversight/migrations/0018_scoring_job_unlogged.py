"""Scoring jobs are transient hand-offs between a web process and a worker: nothing in them was
acknowledged to a client (the decision is, and it is logged as ever). UNLOGGED skips the WAL, so
writing one costs no durable commit."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("oversight", "0017_hosted_scoring_picks")]

    operations = [
        migrations.RunSQL("ALTER TABLE oversight_scoringjob SET UNLOGGED",
                          "ALTER TABLE oversight_scoringjob SET LOGGED"),
    ]
