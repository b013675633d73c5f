"""Celery tasks of the core: hosted scoring on the ``scoring`` queue (thin: ``oversight.scoring``) and
webhook deliveries (``oversight.webhooks``)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from oversight import scoring, webhooks


@shared_task(name=scoring.TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=False)
def score(job_id: str, reply: str = scoring.RESULT, reply_to: str | None = None) -> dict[str, Any]:
    """Score one decision by its id. Acknowledged when done: a worker killed mid-task leaves it to be
    delivered again, and the job's id makes a second run harmless (see oversight.scoring). ``reply``:
    how the answer goes back (the web process sends ``ignore_result`` with ``"list"``), ``reply_to``:
    the id of the list (a batch's tasks share one)."""
    return scoring.run_job(job_id, reply, reply_to)


@shared_task(name=webhooks.TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def deliver_webhook(self: Any, delivery_id: str) -> None:
    """One webhook delivery attempt (oversight.webhooks); on failure the task retries itself after
    the backoff. The outbox row says what is due, so a repeated or lost task changes nothing."""
    wait = webhooks.attempt(delivery_id)
    if wait is not None:
        raise self.retry(countdown=wait)


@shared_task(name="oversight.tasks.sweep_webhooks")
def sweep_webhooks() -> int:
    """Send again the deliveries whose retry was lost (a worker restarted, the broker was away)."""
    ids = webhooks.due()
    for delivery_id in ids:
        webhooks.send_task(delivery_id)
    return len(ids)
