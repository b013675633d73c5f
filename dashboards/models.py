"""Stored monitoring results: metric points per system, name and time bucket."""

from __future__ import annotations

from typing import ClassVar

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
