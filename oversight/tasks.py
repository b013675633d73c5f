"""Celery tasks of the core: hosted scoring on the ``scoring`` queue (thin: ``oversight.scoring``)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from oversight import scoring


@shared_task(name=scoring.TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=False)
def score(job_id: str) -> dict[str, Any]:
    """Score one decision by its id. Acknowledged when done: a worker killed mid-task leaves it to be
    delivered again, and the job's id makes a second run harmless (see oversight.scoring)."""
    return scoring.run_job(job_id)


@shared_task(name="oversight.tasks.sweep_scoring_jobs")
def sweep_scoring_jobs() -> int:
    """Drop jobs left behind by a web process that went away before their deadline."""
    return scoring.sweep()
