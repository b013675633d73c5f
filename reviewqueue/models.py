"""Review items: a decision a person must see, before release (gate) or after it (audit)."""

from __future__ import annotations

import uuid
from typing import ClassVar

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models
from django.db.models.functions import Upper

from oversight.models import AISystem, Decision


class ReviewItem(models.Model):
    class Kind(models.TextChoices):
        GATE = "gate", "before release"
        AUDIT = "audit", "after-the-fact audit"
        # The same decision for a second, different operator: their judgment is recorded (reviewer
        # agreement, reviewqueue.quality); the decision itself follows the first item only.
        SECOND = "second", "second opinion"

    class Status(models.TextChoices):
        OPEN = "open"
        CLAIMED = "claimed"
        RESOLVED = "resolved"

    class Action(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"
        MODIFY = "modify"
        EXPIRE = "expire"  # nobody resolved it within the system's review_expiry_s

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    decision = models.ForeignKey(Decision, on_delete=models.CASCADE, related_name="review_items")
    # Indexed through review_system_status and review_system_triage; the queue writes ~1 item per 2
    # decisions, so no spare indexes.
    system = models.ForeignKey(AISystem, on_delete=models.CASCADE, related_name="review_items", db_index=False)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)  # the current (or last) claim began: handling time
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    action = models.CharField(max_length=8, choices=Action.choices, blank=True, default="")
    note = models.TextField(blank=True, default="")
    output = models.JSONField(null=True, blank=True)
    # Whether the person agreed with the model (approve) or not (reject, modify); None until resolved
    # by a person (an expiry has no opinion).
    agrees = models.BooleanField(null=True, blank=True)
    due_at = models.DateTimeField()
    created_at = models.DateTimeField()
    # Copied from the system and the decision when the item is made, so the queue's order
    # (reviewqueue.triage.ORDER: level, due, confidence) is one index on this table.
    level = models.PositiveSmallIntegerField(default=2)
    confidence = models.FloatField(null=True, blank=True)
    # Copied from the decision as the item is inserted (by the database: the trigger
    # reviewitem_decision_text of migration 0008 fills them when they come empty, on every path that
    # makes items), so the subject search and the reason filter read trigram indexes on this table
    # (review_subject_trgm, review_reasons_trgm: waiting items only; with statistics on the indexed
    # expressions, review_subject_upper and review_reasons_upper, so the planner knows a rare text
    # from a common one) and never touch decisions. ``reasons_text``: the reasons as the decision was
    # queued, one sentence a line. Items resolved before migration 0008 have none.
    subject = models.TextField(null=True, blank=True, editable=False)
    reasons_text = models.TextField(null=True, blank=True, editable=False)

    class Meta:
        ordering: ClassVar = ["due_at", "created_at"]
        indexes: ClassVar = [
            # The age of the oldest waiting item, and the "older than" filter (reviewqueue.triage).
            models.Index(
                fields=["created_at"],
                name="review_open_created",
                condition=models.Q(status__in=["open", "claimed"]),
            ),
            models.Index(
                fields=["level", "due_at", "confidence", "id"],
                name="review_triage",
                condition=models.Q(status__in=["open", "claimed"]),
            ),
            models.Index(fields=["system", "status"], name="review_system_status"),
            # The triage order within one system (the list and claim-next filtered by system): on
            # review_triage a level-2 system's first item comes after every level-1 item of the others.
            models.Index(
                fields=["system", "level", "due_at", "confidence", "id"],
                name="review_system_triage",
                condition=models.Q(status__in=["open", "claimed"]),
            ),
            # "Any part, any case" (icontains: UPPER(…) LIKE UPPER('%…%')) on waiting items, at any
            # queue size: pg_trgm, on the same expression the lookup writes.
            GinIndex(OpClass(Upper("subject"), name="gin_trgm_ops"), name="review_subject_trgm",
                     condition=models.Q(status__in=["open", "claimed"])),
            GinIndex(OpClass(Upper("reasons_text"), name="gin_trgm_ops"), name="review_reasons_trgm",
                     condition=models.Q(status__in=["open", "claimed"])),
            # The performance job finds the resolutions made since its last run (resolved rows only).
            models.Index(fields=["system", "resolved_at"], name="review_resolved",
                         condition=models.Q(resolved_at__isnull=False)),
        ]

    @property
    def public_id(self) -> str:
        return f"rev_{self.id.hex}"
