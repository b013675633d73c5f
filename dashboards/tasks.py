"""Celery tasks of the monitoring queue: thin wrappers over dashboards.monitoring."""

from __future__ import annotations

from datetime import datetime
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


@shared_task(name="dashboards.tasks.compute_performance", ignore_result=False, track_started=True)
def compute_performance(system_id: int | None = None) -> dict[str, Any]:
    """Performance and feedback-loop figures of the windows that changed since the last run (see
    dashboards.performance_job): one system, or all of them. Idempotent."""
    from dashboards import performance_job

    return performance_job.run_system(system_id) if system_id is not None else performance_job.run_all()


@shared_task(name="dashboards.tasks.evaluate_breakers", ignore_result=False)
def evaluate_breakers() -> dict[str, Any]:
    """Every system's circuit breaker against its newest windows (see dashboards.breaker_job)."""
    from dashboards import breaker_job

    return breaker_job.run_all()


@shared_task(name="dashboards.tasks.run_monitoring", ignore_result=False, track_started=True)
def run_monitoring(system_id: int) -> dict[str, Any]:
    """Every monitoring job of one system, now (``POST …/monitoring/run``), then the breakers."""
    return {"drift": compute_drift(system_id), "performance": compute_performance(system_id),
            "breakers": evaluate_breakers()}


@shared_task(name="dashboards.tasks.finish_drills", ignore_result=False)
def finish_drills(now: datetime | None = None) -> dict[str, Any]:
    """End the chaos drills whose time is up and write their reports (see dashboards.drill_report)."""
    from dashboards import drill_report

    return drill_report.finish_due(now)


@shared_task(name="dashboards.tasks.run_rollouts", ignore_result=False)
def run_rollouts(now: datetime | None = None) -> dict[str, Any]:
    """Advance, complete or roll back the running rollouts, and store the bandit series (see
    dashboards.rollout_job)."""
    from dashboards import rollout_job

    return rollout_job.run_all(now)


@shared_task(name="dashboards.tasks.review_overdue", ignore_result=False)
def review_overdue() -> dict[str, int]:
    """Open or resolve each system's alert for review items past their SLA (dashboards.review_alerts)."""
    from dashboards import review_alerts

    return review_alerts.run_all()
