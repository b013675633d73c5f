"""Celery tasks of the monitoring queue: thin wrappers over dashboards.monitoring."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from dashboards import monitoring


@shared_task(name="dashboards.tasks.compute_route_counts", ignore_result=False)
def compute_route_counts(minutes: int = 10) -> dict[str, Any]:
    return monitoring.run_route_counts(minutes)


@shared_task(name="dashboards.tasks.compute_drift", ignore_result=False, track_started=True)
def compute_drift(system_id: int | None = None) -> dict[str, Any]:
    """Drift of the windows that received decisions since the last run, and the alerts they open or
    resolve: one system, or all of them. Idempotent (see dashboards.drift_job)."""
    from dashboards import drift_job

    return drift_job.run_system(system_id) if system_id is not None else drift_job.run_all()
