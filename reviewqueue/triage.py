"""The review queue's order and filters: one definition for the list page and for claim-next.

Order: level-1 items first, then the earliest SLA due time, then the lowest model confidence (an
item without one after those with one), then the id so the order is total. Every column is on the
item itself (``level`` and ``confidence`` are copied when the item is made), so the partial index
``review_triage`` walks the queue in this order and claim-next reads its first free row.

Filters narrow the open and claimed items: system, kind, level, a text the decision's reasons
contain, an age (made more than N minutes ago), and a search by subject or decision id.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, F, Min, Q, QuerySet, TextField
from django.db.models.functions import Cast

from reviewqueue.models import ReviewItem

ORDER: tuple[Any, ...] = ("level", "due_at", F("confidence").asc(nulls_last=True), "id")

_HEX_ID = re.compile(r"^(?:dec_)?([0-9a-f]{32})$")


@dataclass(frozen=True)
class Filters:
    system: str = ""
    kind: str = ""
    level: int | None = None
    reason: str = ""
    older_than_min: int | None = None
    search: str = ""

    def any(self) -> bool:
        return self != Filters()

    def only_system(self) -> bool:
        """Whether the pushed per-system depths (dashboards.monitoring) are this list's figures."""
        return Filters(system=self.system) == self


def decision_id(text: str) -> uuid.UUID | None:
    """``dec_<hex>`` or the bare 32-digit hex of a decision id; None for anything else."""
    m = _HEX_ID.match(text.strip().lower())
    return uuid.UUID(hex=m.group(1)) if m else None


def pending() -> QuerySet[ReviewItem]:
    """Items a person still has to see: open, or claimed and not resolved yet."""
    return ReviewItem.objects.filter(status__in=[ReviewItem.Status.OPEN, ReviewItem.Status.CLAIMED])


def apply(qs: QuerySet[ReviewItem], f: Filters, now: datetime) -> QuerySet[ReviewItem]:
    if f.system:
        qs = qs.filter(system__slug=f.system)
    if f.kind:
        qs = qs.filter(kind=f.kind)
    if f.level is not None:
        qs = qs.filter(level=f.level)
    if f.older_than_min is not None:
        qs = qs.filter(created_at__lt=now - timedelta(minutes=f.older_than_min))
    if f.reason:
        # The reasons are a JSON list of sentences: the text is looked for in its JSON form.
        qs = qs.alias(reasons_text=Cast("decision__reasons", TextField())).filter(reasons_text__icontains=f.reason)
    if f.search:
        dec = decision_id(f.search)
        qs = qs.filter(decision_id=dec) if dec else qs.filter(decision__subject__icontains=f.search.strip())
    return qs


@dataclass(frozen=True)
class Totals:
    total: int
    overdue: int
    oldest_age_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "overdue": self.overdue, "oldest_age_s": self.oldest_age_s}


def totals(qs: QuerySet[ReviewItem], now: datetime) -> Totals:
    """How many items, how many past their due time, and the age of the oldest: one query."""
    row = qs.aggregate(total=Count("id"), overdue=Count("id", filter=Q(due_at__lt=now)), oldest=Min("created_at"))
    oldest = row["oldest"]
    return Totals(row["total"], row["overdue"], (now - oldest).total_seconds() if oldest else None)
