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

from django.db.models import F, QuerySet, TextField
from django.db.models.functions import Cast

from oversight.models import AISystem, Level
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
        # By id, not through a join on the slug: the planner then knows the system and can count
        # a small system's items on its own index (review_system_status).
        system_id = AISystem.objects.filter(slug=f.system).values_list("id", flat=True).first()
        qs = qs.filter(system_id=system_id) if system_id is not None else qs.none()
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


# Counting a million waiting items takes longer than the page may (100 ms): the list counts up to
# this many and says "10000+"; the exact depth of a list filtered by system only comes live, from
# the monitoring job's push (dashboards.monitoring.queue_depths).
COUNT_CAP = 10_000


@dataclass(frozen=True)
class Totals:
    total: int
    overdue: int
    oldest_age_s: float | None
    cap: int = COUNT_CAP

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "overdue": self.overdue, "oldest_age_s": self.oldest_age_s,
                "total_more": self.total > self.cap, "overdue_more": self.overdue > self.cap}

    @property
    def total_text(self) -> str:
        return f"{self.cap}+" if self.total > self.cap else str(self.total)

    @property
    def overdue_text(self) -> str:
        return f"{self.cap}+" if self.overdue > self.cap else str(self.overdue)


def count_upto(qs: QuerySet[ReviewItem], cap: int) -> int:
    """How many rows, up to ``cap + 1`` (more than ``cap``: the count stopped there)."""
    return qs.order_by()[: cap + 1].count()


def totals(qs: QuerySet[ReviewItem], now: datetime, cap: int | None = None) -> Totals:
    """How many items (up to the cap), how many past their due time, and the age of the oldest.

    Each is one short index walk: past due reads ``review_triage`` (every level, so the index's
    first column is bound), the oldest reads ``review_open_created``."""
    cap = COUNT_CAP if cap is None else cap
    overdue = count_upto(qs.filter(level__in=Level.values, due_at__lt=now), cap)
    oldest = qs.order_by("created_at").values_list("created_at", flat=True).first()
    return Totals(count_upto(qs, cap), overdue, (now - oldest).total_seconds() if oldest else None, cap)
