"""Stored monitoring results: metric points per system, name and time bucket."""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.db import models

from oversight.models import AISystem


class MetricPoint(models.Model):
    system = models.ForeignKey(AISystem, on_delete=models.CASCADE, related_name="metric_points")
    name = models.CharField(max_length=100)
    t = models.DateTimeField()
    value = models.FloatField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints: ClassVar = [models.UniqueConstraint(fields=["system", "name", "t"], name="metric_point_unique")]
        indexes: ClassVar = [models.Index(fields=["name", "t"], name="metric_name_t")]


class WindowItems(models.Model):
    """How often each output item was shown in one monitoring window (the performance job's): the
    catalogue later windows measure their exposure against, without reading old decisions again."""

    system = models.ForeignKey(AISystem, on_delete=models.CASCADE, related_name="+")
    t = models.DateTimeField()  # the window's start
    counts = models.JSONField(default=dict)

    class Meta:
        constraints: ClassVar = [models.UniqueConstraint(fields=["system", "t"], name="window_items_unique")]


class Reference(models.Model):
    """What a system's drift is measured against: per-feature summaries made once when stored.

    ``summaries`` maps each column (a feature, or ``prediction.confidence`` / ``prediction.output``)
    to ``dashboards.drift`` reference summary (``to_dict()``), so each monitoring run costs only
    the new data. The newest row of a system is the one in use; older rows are its history.
    """

    class Source(models.TextChoices):
        UPLOAD = "upload", "uploaded sample"
        WINDOW = "window", "a past window of decisions"

    system = models.ForeignKey(AISystem, on_delete=models.CASCADE, related_name="references")
    source = models.CharField(max_length=8, choices=Source.choices)
    rows = models.PositiveIntegerField()
    columns = models.JSONField(default=list)  # names, in the order they were given
    summaries = models.JSONField(default=dict)
    note = models.CharField(max_length=200, blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes: ClassVar = [models.Index(fields=["system", "-created_at"], name="reference_newest")]


class DriftResult(models.Model):
    """One feature × method × window of one system, against the reference in use then."""

    system = models.ForeignKey(AISystem, on_delete=models.CASCADE, related_name="drift_results")
    reference = models.ForeignKey(Reference, null=True, on_delete=models.SET_NULL, related_name="+")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    feature = models.CharField(max_length=200)
    method = models.CharField(max_length=32)
    statistic = models.FloatField(null=True)
    threshold = models.FloatField(null=True)
    p_value = models.FloatField(null=True)
    p_threshold = models.FloatField(null=True)  # the rule also needs p_value below this (None: it doesn't)
    drifted = models.BooleanField(null=True)  # None: too little data for a verdict
    # How far past its rule (dashboards.drift.DriftResult.severity): drift is > 1; None: no verdict.
    severity = models.FloatField(null=True)
    primary = models.BooleanField(default=False)  # the method whose verdict counts for the feature
    rows = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["system", "window_start", "feature", "method"], name="drift_result_unique"),
        ]
        indexes: ClassVar = [models.Index(fields=["system", "window_start"], name="drift_system_window")]


class Alert(models.Model):
    """A condition a person should look at (a drifted feature, …), opened and closed with hysteresis."""

    class State(models.TextChoices):
        OPEN = "open"
        RESOLVED = "resolved"

    system = models.ForeignKey(AISystem, on_delete=models.CASCADE, related_name="alerts")
    kind = models.CharField(max_length=32)  # e.g. "drift"
    subject = models.CharField(max_length=200, blank=True, default="")  # e.g. the feature
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    message = models.TextField()
    value = models.FloatField(null=True)
    opened_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    acked_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    acked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering: ClassVar = ["-opened_at", "-id"]
        constraints: ClassVar = [
            # At most one open alert per system, kind and subject: a condition that holds stays one alert.
            models.UniqueConstraint(fields=["system", "kind", "subject"], condition=models.Q(state="open"),
                                    name="alert_one_open"),
        ]

    @property
    def public_id(self) -> str:
        return f"alr_{self.pk}"
