"""Editors' curated picks and blocks: which rules apply to a decision, and what they make of its output
(pure functions; only ``load_all`` reads the database).

A pick pins an item at a 1-based position of a system's list output, a block takes an item out, each
for the decisions whose context matches (``segment``: ``context["segment"]``; ``context``: every key
equal) from ``starts_at`` until ``ends_at`` (open-ended: None). Only outputs of the form
``{"items": [str, ...]}`` are curated. Editors make them in ``oversight.editorial``; the decision path
calls ``apply`` with the system's ``Curation`` from the gate's snapshot.

Context values compare as JSON values (``{"hour": 23}`` matches 23 and 23.0, never ``true``), and a
string matches a number or boolean written the same way (``"23"`` matches 23, ``"true"`` matches
true): what the page's ``key=value`` form stores is a string.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from oversight import jsonutil


@dataclass(frozen=True, slots=True)
class Rule:
    id: str  # "pck_12" / "blk_3"
    item: str
    segment: str  # "" = any; else must equal the decision's context["segment"]
    context: Mapping[str, Any]  # {} = any; else every key must equal the decision's context[key]
    starts_at: datetime
    ends_at: datetime | None  # None: open-ended
    position: int = 0  # picks: 1-based; blocks: 0
    by: str = ""  # the editor's username


@dataclass(frozen=True, slots=True)
class Curation:
    picks: tuple[Rule, ...] = ()
    blocks: tuple[Rule, ...] = ()


# --- matching -------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def same_value(wanted: Any, got: Any) -> bool:
    """``wanted`` (a rule's) and ``got`` (a decision's) are the same JSON value, or a string and the
    number/boolean it spells."""
    if isinstance(wanted, str) and isinstance(got, str):
        return wanted == got
    if isinstance(wanted, str) or isinstance(got, str):
        text, other = (wanted, got) if isinstance(wanted, str) else (got, wanted)
        if isinstance(other, bool):
            return text == ("true" if other else "false")
        num = _number(other)
        if num is None:
            return False
        try:
            return float(text.strip()) == num
        except ValueError:
            return False
    if isinstance(wanted, bool) or isinstance(got, bool):
        return type(wanted) is type(got) and wanted == got
    a, b = _number(wanted), _number(got)
    if a is not None or b is not None:
        return a is not None and b is not None and a == b
    if isinstance(wanted, list) and isinstance(got, list):
        return len(wanted) == len(got) and all(same_value(x, y) for x, y in zip(wanted, got, strict=True))
    if isinstance(wanted, dict) and isinstance(got, dict):
        return wanted.keys() == got.keys() and all(same_value(v, got[k]) for k, v in wanted.items())
    return wanted is None and got is None


def active(rule: Rule, now: datetime) -> bool:
    return rule.starts_at <= now and (rule.ends_at is None or now < rule.ends_at)


def matches(rule: Rule, context: Mapping[str, Any] | None) -> bool:
    """The decision's context meets the rule's segment and context."""
    ctx = context or {}
    if rule.segment and ("segment" not in ctx or not same_value(rule.segment, ctx["segment"])):
        return False
    return all(k in ctx and same_value(v, ctx[k]) for k, v in rule.context.items())


def describe_match(rule: Rule) -> str:
    """``segment=night, activity=sleep``, or ``everyone``."""
    parts = [f"segment={rule.segment}"] if rule.segment else []
    parts += [f"{k}={v if isinstance(v, str) else jsonutil.dumps(v).decode()}" for k, v in rule.context.items()]
    return ", ".join(parts) or "everyone"


def _serial(rule_id: str) -> int:
    """The number in ``pck_12``: larger is newer."""
    try:
        return int(rule_id.rpartition("_")[2])
    except ValueError:
        return 0


def _by(rule: Rule) -> str:
    return f" (by {rule.by})" if rule.by else ""


# --- applying -------------------------------------------------------------------------------------


def curated_items(output: Any) -> list[str] | None:
    """The item list of an output that picks and blocks apply to, else None."""
    if not isinstance(output, dict):
        return None
    items = output.get("items")
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        return None
    return items


def apply(curation: Curation | None, output: Any, context: Mapping[str, Any] | None, now: datetime
          ) -> tuple[Any, list[str]]:
    """The output with blocked items removed and picked items inserted at their positions, and a
    human-readable reason per pick/block that changed it. Only outputs of the form
    {"items": [str, ...]} (other keys kept) are curated; anything else comes back unchanged with no reasons.

    Blocks first (every occurrence goes; a block wins over a pick of the same item). Then picks by
    position (ties: the newest first), each moved to its position or, when an earlier pick holds it,
    just after that one (clamped to the end). A list that had items keeps its length: model items
    pushed past the end go, picked items never do.
    """
    if curation is None or not (curation.picks or curation.blocks):
        return output, []
    items = curated_items(output)
    if items is None:
        return output, []
    blocks = [b for b in curation.blocks if active(b, now) and matches(b, context)]
    picks = [p for p in curation.picks if active(p, now) and matches(p, context)]
    if not blocks and not picks:
        return output, []
    reasons: list[str] = []
    result = list(items)
    blocked_by: dict[str, Rule] = {}
    for b in blocks:
        blocked_by.setdefault(b.item, b)
        if b.item in result:
            result = [i for i in result if i != b.item]
            match = "" if describe_match(b) == "everyone" else f" for {describe_match(b)}"
            reasons.append(f"editor block {b.id}: {b.item} removed{match}{_by(b)}")
    placed: list[Rule] = []
    seen: set[str] = set()
    for p in sorted(picks, key=lambda r: (r.position, -_serial(r.id))):
        if p.item in seen:
            continue  # the same item picked twice: the first in order holds it
        seen.add(p.item)
        if p.item in blocked_by:
            b = blocked_by[p.item]
            reasons.append(f"editor pick {p.id}: {p.item} not placed, blocked by {b.id}{_by(p)}")
            continue
        placed.append(p)
    last = -1
    picked = {p.item for p in placed}
    result = [i for i in result if i not in picked]
    for p in placed:
        last = min(max(p.position - 1, last + 1), len(result))
        result.insert(last, p.item)
    excess = len(result) - len(items) if items else 0
    for index in range(len(result) - 1, -1, -1):  # model items from the end go, picks stay
        if excess <= 0:
            break
        if result[index] not in picked:
            del result[index]
            excess -= 1
    for p in placed:
        index = result.index(p.item)
        shift = "" if index == p.position - 1 else f" (asked for {p.position})"
        reasons.append(f"editor pick {p.id}: {p.item} at position {index + 1}{shift} for {describe_match(p)}{_by(p)}")
    if result == items:
        # Picks that only confirmed what the model said still named themselves; blocks found nothing.
        return output, reasons
    return {**output, "items": result}, reasons


# --- overlaps -------------------------------------------------------------------------------------


def _windows_overlap(a: Rule, b: Rule) -> bool:
    a_end_after_b_start = a.ends_at is None or a.ends_at > b.starts_at
    b_end_after_a_start = b.ends_at is None or b.ends_at > a.starts_at
    return a_end_after_b_start and b_end_after_a_start


def _matches_overlap(a: Rule, b: Rule) -> bool:
    """Some decision's context could meet both."""
    if a.segment and b.segment and not same_value(a.segment, b.segment):
        return False
    return all(same_value(v, b.context[k]) for k, v in a.context.items() if k in b.context)


def overlaps(rules: Iterable[Rule]) -> dict[str, list[str]]:
    """For each pick id, the ids of the other picks that could apply to the same decision at the same
    time (match and time window overlap) with the same item or the same position."""
    rows = list(rules)
    found: dict[str, list[str]] = {r.id: [] for r in rows}
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if (a.item == b.item or a.position == b.position) and _windows_overlap(a, b) and _matches_overlap(a, b):
                found[a.id].append(b.id)
                found[b.id].append(a.id)
    return found


# --- loading --------------------------------------------------------------------------------------


def load_all(now: datetime, *, system_id: int | None = None) -> dict[int, Curation]:
    """system id -> its picks and blocks not removed and not yet ended (one query per table);
    ``system_id``: that system's only."""
    from django.db.models import Q

    from oversight.models import BlockedItem, Pick

    live = Q(removed_at__isnull=True) & (Q(ends_at__isnull=True) | Q(ends_at__gt=now))
    if system_id is not None:
        live &= Q(system_id=system_id)
    fields = ("id", "system_id", "item", "segment", "context", "starts_at", "ends_at", "created_by__username")
    picks: dict[int, list[Rule]] = {}
    blocks: dict[int, list[Rule]] = {}
    for row in Pick.objects.filter(live).order_by("position", "-id").values_list(*fields, "position"):
        picks.setdefault(row[1], []).append(_rule("pck", row))
    for row in BlockedItem.objects.filter(live).order_by("-id").values_list(*fields):
        blocks.setdefault(row[1], []).append(_rule("blk", row))
    return {sid: Curation(tuple(picks.get(sid, ())), tuple(blocks.get(sid, ())))
            for sid in picks.keys() | blocks.keys()}


def _rule(prefix: str, row: tuple[Any, ...]) -> Rule:
    return Rule(id=f"{prefix}_{row[0]}", item=row[2], segment=row[3], context=dict(row[4] or {}),
                starts_at=row[5], ends_at=row[6], by=row[7] or "",
                position=row[8] if len(row) > 8 else 0)
