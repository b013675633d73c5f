"""The review queue's order and filters: one definition for the list page and for claim-next.

Order: level-1 items first, then the earliest SLA due time, then the lowest model confidence (an
item without one after those with one), then the id so the order is total. Every column is on the
item itself (``level`` and ``confidence`` are copied when the item is made), so the partial index
``review_triage`` walks the queue in this order and claim-next reads its first free row.

Filters narrow the open and claimed items: system, kind, level, a text the decision's reasons
contain, an age (made more than N minutes ago), and a search by subject or decision id. The subject
and the reasons are read from the item's own copies (``ReviewItem.subject``/``reasons_text``), each
with a trigram index over the waiting items, so neither scans the queue nor joins the decisions.

The same ``Filters`` travel with the operator: the list's query (``params``) is carried by the
"Review next" form, the item page's forms and links, and claim-next takes it, so "level 1, reason
contains 'drift'" keeps handing out such items through claim → resolve → next.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, F, Min, Q, QuerySet

from oversight.models import AISystem, Level
from reviewqueue.models import ReviewItem

ORDER: tuple[Any, ...] = ("level", "due_at", F("confidence").asc(nulls_last=True), "id")

_HEX_ID = re.compile(r"^(?:dec_)?([0-9a-f]{32})$")

# The list's query parameters, in the order its form shows them (and URLs carry them).
PARAMS = ("system", "kind", "level", "reason", "older", "q")
TEXT_MAX = 200  # reason and search, as the list's form takes them
SYSTEM_MAX = 64
OLDER_MAX_MIN = 525_600  # a year


def _int_in(text: str, ok: Callable[[int], bool]) -> int | None:
    try:
        n = int(text.strip())
    except ValueError:
        return None
    return n if ok(n) else None


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

    @property
    def rest(self) -> Filters:
        """The filters besides the system (pages show the system on their buttons, the rest in words)."""
        return replace(self, system="")

    def params(self) -> dict[str, str]:
        """The filters that are set, as the list's query parameters (in ``PARAMS`` order)."""
        values = {"system": self.system, "kind": self.kind, "level": "" if self.level is None else str(self.level),
                  "reason": self.reason, "older": "" if self.older_than_min is None else str(self.older_than_min),
                  "q": self.search}
        return {k: values[k] for k in PARAMS if values[k]}

    @classmethod
    def from_params(cls, data: Mapping[str, Any]) -> Filters:
        """The filters a page carried (hidden fields, an item page's query), read leniently: a value
        that is not one the list's form accepts is left out, as the list leaves out a field with an
        error. The system is kept as it came (at most 64 characters): an unknown one is for
        claim-next to say so, not to widen to every system."""
        def text(name: str) -> str:
            v = data.get(name)
            return v.strip() if isinstance(v, str) else ""

        kind = text("kind")
        return cls(
            system=text("system")[:SYSTEM_MAX],
            kind=kind if kind in ReviewItem.Kind.values else "",
            level=_int_in(text("level"), lambda n: n in Level.values),
            reason=text("reason")[:TEXT_MAX],
            older_than_min=_int_in(text("older"), lambda n: 0 <= n <= OLDER_MAX_MIN),
            search=text("q")[:TEXT_MAX],
        )

    def describe(self) -> str:
        """The filters in words: "sup, level 1, reason contains “drift”" ("" for none)."""
        parts = [self.system] if self.system else []
        if self.kind:
            parts.append(str(ReviewItem.Kind(self.kind).label))
        if self.level is not None:
            parts.append(f"level {self.level}")
        if self.reason:
            parts.append(f"reason contains “{self.reason}”")
        if self.older_than_min is not None:
            parts.append(f"older than {self.older_than_min} min")
        if self.search:
            dec = decision_id(self.search)
            parts.append(f"decision dec_{dec.hex}" if dec else f"subject contains “{self.search}”")
        return ", ".join(parts)


def decision_id(text: str) -> uuid.UUID | None:
    """``dec_<hex>`` or the bare 32-digit hex of a decision id; None for anything else."""
    m = _HEX_ID.match(text.strip().lower())
    return uuid.UUID(hex=m.group(1)) if m else None


def system_id(slug: str) -> int | None:
    return AISystem.objects.filter(slug=slug).values_list("id", flat=True).first()


def pending() -> QuerySet[ReviewItem]:
    """Items a person still has to see: open, or claimed and not resolved yet."""
    return ReviewItem.objects.filter(status__in=[ReviewItem.Status.OPEN, ReviewItem.Status.CLAIMED])


def apply(qs: QuerySet[ReviewItem], f: Filters, now: datetime) -> QuerySet[ReviewItem]:
    if f.system:
        # By id, not through a join on the slug: the planner then knows the system and can count
        # a small system's items on its own index (review_system_status).
        sid = system_id(f.system)
        qs = qs.filter(system_id=sid) if sid is not None else qs.none()
    if f.kind:
        qs = qs.filter(kind=f.kind)
    if f.level is not None:
        qs = qs.filter(level=f.level)
    if f.older_than_min is not None:
        qs = qs.filter(created_at__lt=now - timedelta(minutes=f.older_than_min))
    if f.reason:
        # The item's copy of the reasons, one sentence a line (index review_reasons_trgm).
        qs = qs.filter(reasons_text__icontains=f.reason)
    if f.search:
        dec = decision_id(f.search)
        # The item's copy of the subject (index review_subject_trgm), or the decision id (its FK index).
        qs = qs.filter(decision_id=dec) if dec else qs.filter(subject__icontains=f.search.strip())
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

    One pass counts the items up to the cap and, among them, those past due and the oldest: when
    all were counted (a filtered list, usually) those are the figures, read once through whatever
    index the filter uses. Past the cap, past due is counted on its own walking ``review_triage``
    (every level, so the index's first column is bound), and the oldest reads ``review_open_created``."""
    cap = COUNT_CAP if cap is None else cap
    first = qs.order_by().values("due_at", "created_at")[: cap + 1].aggregate(
        total=Count("*"), overdue=Count("due_at", filter=Q(due_at__lt=now)), oldest=Min("created_at"))
    total, overdue, oldest = int(first["total"]), int(first["overdue"]), first["oldest"]
    if total > cap:
        overdue = count_upto(qs.filter(level__in=Level.values, due_at__lt=now), cap)
        oldest = qs.order_by("created_at").values_list("created_at", flat=True).first()
    return Totals(total, overdue, (now - oldest).total_seconds() if oldest else None, cap)
