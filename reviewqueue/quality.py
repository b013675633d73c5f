"""Reviewer quality: do reviewers agree with each other, do they agree with the model, how fast they work.

Three figures for a period (``since`` ≤ t < ``until``), for every system or one:

* **Agreement between reviewers** (:func:`cohen_kappa`). A system's ``double_review_rate`` share
  of decisions gets a second item (kind ``second``) for a different operator. A *pair* is a
  decision's first item (``gate`` or ``audit``) and its second opinion, both resolved by people
  (approve, reject or modify; an expiry has no verdict) who are two different users; it belongs to
  the period in which its later resolution falls. The label compared is the verdict: approve,
  reject or modify. Kappa per system and over all pairs pooled (one kappa, not a mean of the
  systems'). Only the newest :data:`PAIRS_CAP` pairs are read (``Quality.pairs_capped`` says so).
* **People and the model**: per (system, model that answered), the verdicts people gave in the
  period (every resolution by a person, second opinions included) and the share that agreed with
  the model (approved it; ``ReviewItem.agrees``).
* **Operators**: per person, the items resolved in the period; items per *active hour* (the count
  divided by the clock hours, in the current time zone, in which they resolved at least one
  item); and the median handling time, from the claim to the resolution (``resolved_at −
  claimed_at``, the last claim only; items without a claim of their own, such as audits answered
  by an override from the decision's page, are left out).

Everything but the kappa pairs is aggregated in the database (one grouped query each); the pairs
are fetched as (system, verdict, verdict) rows, at most :data:`PAIRS_CAP` of them. Every query
reads the resolved items through the index ``review_resolved`` (system, resolved_at), by the
period's range, one range per system: the cost follows the period, not the table's history.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from django.db.models import (
    Aggregate,
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import TruncHour

from oversight.models import AISystem
from reviewqueue.models import ReviewItem

# A person's verdict (an expiry is the system's, not a person's).
VERDICTS = (ReviewItem.Action.APPROVE, ReviewItem.Action.REJECT, ReviewItem.Action.MODIFY)
FIRST_KINDS = (ReviewItem.Kind.GATE, ReviewItem.Kind.AUDIT)
PAIRS_CAP = 10_000


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa between two raters who labelled the same items: ``a[i]`` and ``b[i]`` are their
    labels for item ``i`` (any hashable labels, any number of categories).

    ``kappa = (p_o − p_e) / (1 − p_e)``: ``p_o`` the share of items with the same label, ``p_e``
    the share expected by chance from each rater's own label frequencies. 1 is full agreement, 0
    no better than chance, below 0 worse than chance (−1 at most).

    Degenerate cases:

    * no items: ``None`` (nothing to measure);
    * ``p_e = 1``: both raters gave one and the same label to every item. Then ``p_o = 1`` as well
      and the formula is 0/0 (scikit-learn answers NaN); we answer 1.0, full agreement, because
      that is what was observed. (``p_e = 1`` with ``p_o < 1`` cannot happen.)
    * one rater always gives the same label and the other does not: defined, often 0 or below.

    Computed exactly in integers, ``(n·Σ m_ii − Σ r_i c_i) / (n² − Σ r_i c_i)`` over the
    confusion matrix ``m`` (row sums ``r``, column sums ``c``), so the degenerate case is found
    without a float tolerance. Raises ``ValueError`` when the sequences differ in length.
    """
    if len(a) != len(b):
        raise ValueError(f"two raters must label the same items: {len(a)} labels against {len(b)}")
    n = len(a)
    if n == 0:
        return None
    index: dict[Hashable, int] = {}
    ia = np.fromiter((index.setdefault(x, len(index)) for x in a), dtype=np.int64, count=n)
    ib = np.fromiter((index.setdefault(x, len(index)) for x in b), dtype=np.int64, count=n)
    k = len(index)
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (ia, ib), 1)
    same = int(np.trace(m))
    chance = int(m.sum(axis=1) @ m.sum(axis=0))  # n² · p_e
    if chance == n * n:
        return 1.0
    return (n * same - chance) / (n * n - chance)


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kappa:
    """Agreement between reviewers over a set of pairs (one system's, or all of them)."""

    system: str  # "" for all systems pooled
    pairs: int
    same: int  # pairs in which both gave the same verdict
    kappa: float | None  # None without pairs

    @property
    def agreement(self) -> float | None:
        """The raw share of pairs with the same verdict (``p_o``)."""
        return self.same / self.pairs if self.pairs else None


@dataclass(frozen=True)
class ModelAgreement:
    """People's verdicts on one model's answers in one system."""

    system: str
    model: str  # "" when the client named no model
    verdicts: int
    agreeing: int

    @property
    def share(self) -> float | None:
        return self.agreeing / self.verdicts if self.verdicts else None


@dataclass(frozen=True)
class Operator:
    """One person's work in the period."""

    username: str
    resolved: int
    active_hours: int  # distinct clock hours with at least one resolution
    median_handling_s: float | None  # None when no resolved item had a claim of the person's own
    timed: int  # how many items the median is over

    @property
    def per_active_hour(self) -> float | None:
        return self.resolved / self.active_hours if self.active_hours else None

    @property
    def handling_text(self) -> str:
        return duration_text(self.median_handling_s)


@dataclass(frozen=True)
class Quality:
    since: datetime
    until: datetime
    system: str  # "" for every system
    kappas: list[Kappa] = field(default_factory=list)  # per system, by slug
    overall: Kappa = field(default_factory=lambda: Kappa("", 0, 0, None))
    pairs_capped: bool = False  # more pairs than PAIRS_CAP: the newest ones were used
    models: list[ModelAgreement] = field(default_factory=list)
    operators: list[Operator] = field(default_factory=list)


def duration_text(seconds: float | None) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``; ``—`` for none."""
    if seconds is None:
        return "—"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


# --- queries ----------------------------------------------------------------------------------


class Median(Aggregate):
    """PostgreSQL's ``percentile_cont(0.5) WITHIN GROUP (ORDER BY …)``: the median, interpolated."""

    function = "percentile_cont"
    name = "Median"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


def _seconds(expression: Any) -> Func:
    """An interval as seconds (a float)."""
    return Func(expression, template="EXTRACT(EPOCH FROM %(expressions)s)", output_field=FloatField())


HANDLING = ExpressionWrapper(F("resolved_at") - F("claimed_at"), output_field=DurationField())


def _system_ids(system: str) -> list[int]:
    """The ids of the systems asked for (one slug, or all): every query below filters on them, so
    the ``review_resolved`` index (system, resolved_at) serves the period's range for each system."""
    qs = AISystem.objects.filter(slug=system) if system else AISystem.objects.all()
    return list(qs.values_list("id", flat=True))


def _resolved_by_people(since: datetime, until: datetime, system_ids: list[int]) -> QuerySet[ReviewItem]:
    return ReviewItem.objects.filter(
        system_id__in=system_ids, resolved_at__gte=since, resolved_at__lt=until,
        status=ReviewItem.Status.RESOLVED, action__in=VERDICTS, resolved_by__isnull=False,
    )


def _pairs(since: datetime, until: datetime, system_ids: list[int]) -> QuerySet[Any]:
    """(system slug, first verdict, second verdict, done_at) of the pairs whose later verdict
    (``done_at``) falls in the period: the pairs completed by their second opinion, and those
    completed by their first item (a tie counts once, in the first half). Each half reads its
    later items by the period's range (index ``review_resolved``) and looks up the decision's other
    item by ``decision_id`` (its index), so the cost follows the period, not the table."""

    # Any: the annotations (other_action, done_at) are not in the model's type, which values_list checks.
    def completed_by(kinds: tuple[str, ...], other_kinds: tuple[str, ...], earlier: str) -> Any:
        other = (
            ReviewItem.objects.filter(decision_id=OuterRef("decision_id"), kind__in=other_kinds, action__in=VERDICTS,
                                      resolved_by__isnull=False, **{f"resolved_at__{earlier}": OuterRef("resolved_at")})
            .exclude(resolved_by=OuterRef("resolved_by"))  # a pair is two different people
            .order_by()
        )
        return (_resolved_by_people(since, until, system_ids).filter(kind__in=kinds).filter(Exists(other))
                .annotate(other_action=Subquery(other.values("action")[:1]), done_at=F("resolved_at")).order_by())

    by_second = (completed_by((ReviewItem.Kind.SECOND,), FIRST_KINDS, "lte")
                 .values_list("system__slug", "other_action", "action", "done_at"))
    by_first = (completed_by(FIRST_KINDS, (ReviewItem.Kind.SECOND,), "lt")
                .values_list("system__slug", "action", "other_action", "done_at"))
    return by_second.union(by_first, all=True)


def pairs(since: datetime, until: datetime, system: str = "", cap: int = PAIRS_CAP) -> list[tuple[str, str, str]]:
    """(system slug, first verdict, second verdict) of the newest ``cap`` pairs completed in the period."""
    ids = _system_ids(system)
    if not ids:
        return []
    rows = _pairs(since, until, ids).order_by("-done_at")[:cap]
    return [(slug, first, second) for slug, first, second, _ in rows]


def kappas(rows: Sequence[tuple[str, str, str]]) -> tuple[list[Kappa], Kappa]:
    """Per system (by slug) and pooled over all rows."""
    by_system: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for slug, x, y in rows:
        by_system[slug].append((x, y))

    def one(slug: str, got: Sequence[tuple[str, str]]) -> Kappa:
        a = [x for x, _ in got]
        b = [y for _, y in got]
        return Kappa(slug, len(got), sum(x == y for x, y in got), cohen_kappa(a, b))

    per = [one(slug, by_system[slug]) for slug in sorted(by_system)]
    return per, one("", [(x, y) for _, x, y in rows])


def model_agreement(since: datetime, until: datetime, system: str = "") -> list[ModelAgreement]:
    rows = (
        _resolved_by_people(since, until, _system_ids(system)).filter(agrees__isnull=False)
        .values("system__slug", "decision__model")
        .annotate(verdicts=Count("id"), agreeing=Count("id", filter=Q(agrees=True)))
        .order_by("system__slug", "decision__model")
    )
    return [ModelAgreement(r["system__slug"], r["decision__model"], r["verdicts"], r["agreeing"]) for r in rows]


def operators(since: datetime, until: datetime, system: str = "") -> list[Operator]:
    """Each person who resolved an item in the period, busiest first."""
    own_claim = Q(claimed_at__isnull=False, claimed_by=F("resolved_by"), claimed_at__lte=F("resolved_at"))
    rows = (
        _resolved_by_people(since, until, _system_ids(system))
        .values("resolved_by__username")
        .annotate(
            resolved=Count("id"),
            active_hours=Count(TruncHour("resolved_at"), distinct=True),
            median_s=Median(_seconds(HANDLING), filter=own_claim),
            timed=Count("id", filter=own_claim),
        )
        .order_by("-resolved", "resolved_by__username")
    )
    return [Operator(r["resolved_by__username"], r["resolved"], r["active_hours"], r["median_s"], r["timed"])
            for r in rows]


def quality(since: datetime, until: datetime, system: str = "", cap: int = PAIRS_CAP) -> Quality:
    """Every figure of the page for ``since`` ≤ t < ``until``, one system's (by slug) or all."""
    rows = pairs(since, until, system, cap + 1)
    capped = len(rows) > cap
    per, overall = kappas(rows[:cap])
    return Quality(since=since, until=until, system=system, kappas=per, overall=overall, pairs_capped=capped,
                   models=model_agreement(since, until, system), operators=operators(since, until, system))
