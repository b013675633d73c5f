"""Celery tasks of the review queue: thin wrappers over reviewqueue.actions."""

from __future__ import annotations

from celery import shared_task

from reviewqueue import actions


@shared_task(name="reviewqueue.tasks.expire_pending")
def expire_pending() -> int:
    """Pending decisions past their system's ``review_expiry_s`` get the fallback; returns how many."""
    return actions.expire_due()
