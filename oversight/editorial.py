"""Editors' curated picks and blocks: making and removing them, listing them, and the preview.

Each change is one transaction: the row, its audit event (``pick.create``, ``pick.remove``,
``block.create``, ``block.remove``) and a config-epoch bump, so the very next decision sees it
(``oversight.picks`` holds the rules themselves). Removal is soft (``removed_at``): a decision that
names a pick stays explainable. The JSON API (``oversight.editorial_api``) and the editor page
(``oversight.editorial_views``) both call these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as Person
from django.db import transaction
from django.utils import timezone

from oversight import audit, config, gate, picks
from oversight.errors import ActionError
from oversight.fallbacks import FallbackRule, resolve
from oversight.models import AISystem, BlockedItem, Curated, Decision, Pick

User = Person | AnonymousUser | None

ITEM_MAX = 200
SEGMENT_MAX = 100
POSITION_MAX = 1000
CONTEXT_KEYS_MAX = 20
NOTE_MAX = 2000
PREVIEW_SCAN = 2000  # the newest released decisions the preview looks through for a matching context


# --- checking what an editor typed ------------------------------------------------------------------


def _control(text: str) -> bool:
    """A control character, or an unpaired surrogate (which PostgreSQL cannot store either)."""
    return any(c < " " or "\x7f" <= c <= "\x9f" or "\ud800" <= c <= "\udfff" for c in text)


def check_text(value: Any, field: str, what: str, max_len: int) -> str:
    """A name-like string: 1–``max_len`` characters, no whitespace at the ends, no control characters."""
    if not isinstance(value, str):
        raise ActionError("invalid", f"{what} must be text", field)
    if not value:
        raise ActionError("invalid", f"{what} is required", field)
    if len(value) > max_len:
        raise ActionError("invalid", f"{what} is {len(value)} characters long; at most {max_len} are allowed", field)
    if value != value.strip():
        raise ActionError("invalid", f"{what} {value.strip()!r} has spaces at its start or end; remove them", field)
    if _control(value):
        raise ActionError("invalid", f"{what} contains a control character (a tab, a line break…); remove it", field)
    return value


def check_context(value: Any) -> dict[str, Any]:
    """A decision-context match: up to 20 keys, each a string, a number, true/false or null."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ActionError("invalid", "context must be an object of key/value pairs, e.g. {\"activity\": \"sleep\"}",
                          "context")
    if len(value) > CONTEXT_KEYS_MAX:
        raise ActionError("invalid", f"context has {len(value)} keys; at most {CONTEXT_KEYS_MAX} are allowed",
                          "context")
    checked: dict[str, Any] = {}
    for key, v in value.items():
        check_text(key, "context", "a context key", SEGMENT_MAX)
        if key == "segment":
            raise ActionError("invalid", "match the segment with the segment field, not as a context key", "context")
        if isinstance(v, str):
            if len(v) > ITEM_MAX or _control(v):
                raise ActionError("invalid", f"the value of context key {key!r} must be at most {ITEM_MAX} "
                                  "characters without control characters", "context")
        elif isinstance(v, float) and not math.isfinite(v):
            raise ActionError("invalid", f"the value of context key {key!r} must be a finite number", "context")
        elif v is not None and not isinstance(v, bool | int | float):
            raise ActionError("invalid", f"the value of context key {key!r} must be a string, a number, true, "
                              "false or null (not a list or an object)", "context")
        checked[key] = v
    return checked


def parse_pairs(text: str | list[str] | tuple[str, ...], field: str = "context") -> dict[str, str]:
    """``activity=sleep, hour=23`` (or one pair a line, or a list of pairs) as ``{"activity": "sleep",
    "hour": "23"}``. Values stay text: ``picks`` matches ``"23"`` with the number 23 too."""
    pieces = [text] if isinstance(text, str) else list(text)
    found: dict[str, str] = {}
    for chunk in pieces:
        for raw in chunk.replace("\n", ",").split(","):
            pair = raw.strip()
            if not pair:
                continue
            key, eq, val = pair.partition("=")
            key, val = key.strip(), val.strip()
            if not eq or not key:
                raise ActionError("invalid", f"{pair!r} is not a key=value pair (e.g. activity=sleep)", field)
            if not val:
                raise ActionError("invalid", f"give a value after {key}= (e.g. {key}=sleep)", field)
            if key in found:
                raise ActionError("invalid", f"the key {key!r} is given twice", field)
            found[key] = val
    return found


def _window(starts_at: datetime | None, ends_at: datetime | None, now: datetime) -> tuple[datetime, datetime | None]:
    for name, value in (("starts_at", starts_at), ("ends_at", ends_at)):
        if value is not None and timezone.is_naive(value):
            raise ActionError("invalid", f"{name} needs a time zone (e.g. 2026-03-15T23:00:00Z)", name)
    start = starts_at or now
    if ends_at is not None:
        if ends_at <= now:
            raise ActionError("invalid", f"ends_at ({ends_at.isoformat()}) is in the past: the rule would never "
                              "apply", "ends_at")
        if ends_at <= start:
            raise ActionError("invalid", f"the window ends ({ends_at.isoformat()}) before it starts "
                              f"({start.isoformat()}); ends_at must be after starts_at", "ends_at")
    return start, ends_at


def _system(slug: str) -> AISystem:
    system = AISystem.objects.filter(slug=slug).first()
    if system is None:
        raise ActionError("not_found", f"no system {slug!r}")
    return system


def _actor(actor: User) -> Person | None:
    return actor if isinstance(actor, Person) and actor.is_authenticated else None


def public_id(row: Curated) -> str:
    """``pck_12`` / ``blk_3``."""
    return f"{'pck' if isinstance(row, Pick) else 'blk'}_{row.pk}"


def _facts(row: Curated) -> dict[str, Any]:
    data = {"item": row.item, "segment": row.segment, "context": row.context,
            "starts_at": row.starts_at.isoformat(), "ends_at": row.ends_at.isoformat() if row.ends_at else None}
    if isinstance(row, Pick):
        data["position"] = row.position
    if row.note:
        data["note"] = row.note
    return data


# --- making and removing ----------------------------------------------------------------------------


def _create(kind: type[Curated], actor: User, slug: str, *, item: str, segment: str, context: Mapping[str, Any] | None,
            starts_at: datetime | None, ends_at: datetime | None, note: str, now: datetime | None,
            position: int | None = None) -> Curated:
    now = now or timezone.now()
    item = check_text(item, "item", "the item", ITEM_MAX)
    segment = check_text(segment, "segment", "the segment", SEGMENT_MAX) if segment else ""
    ctx = check_context(context)
    start, end = _window(starts_at, ends_at, now)
    note = (note or "").strip()
    if len(note) > NOTE_MAX:
        raise ActionError("invalid", f"the note is {len(note)} characters long; at most {NOTE_MAX} are allowed", "note")
    if _control(note.replace("\n", "").replace("\r", "").replace("\t", "")):
        raise ActionError("invalid", "the note contains a control character; remove it", "note")
    extra: dict[str, Any] = {}
    if kind is Pick:
        if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position <= POSITION_MAX:
            raise ActionError("invalid", f"position must be a whole number from 1 (first) to {POSITION_MAX}",
                              "position")
        extra["position"] = position
    system = _system(slug)
    user = _actor(actor)
    row = kind._default_manager.create(system=system, item=item, segment=segment, context=ctx, starts_at=start,
                                       ends_at=end, note=note, created_by=user, **extra)
    action = "pick.create" if kind is Pick else "block.create"
    audit.record(user, action, system=system, target=public_id(row), reason=note, data=_facts(row))
    config.bump_epoch()
    return row


@transaction.atomic(durable=True)
def create_pick(actor: User, slug: str, *, item: str, position: int = 1, segment: str = "",
                context: Mapping[str, Any] | None = None, starts_at: datetime | None = None,
                ends_at: datetime | None = None, note: str = "", now: datetime | None = None) -> Pick:
    """Pin ``item`` at ``position`` of ``slug``'s list outputs for the matching decisions, from
    ``starts_at`` (default: now) until ``ends_at`` (None: open-ended)."""
    row = _create(Pick, actor, slug, item=item, position=position, segment=segment, context=context,
                  starts_at=starts_at, ends_at=ends_at, note=note, now=now)
    assert isinstance(row, Pick)
    return row


@transaction.atomic(durable=True)
def create_block(actor: User, slug: str, *, item: str, segment: str = "", context: Mapping[str, Any] | None = None,
                 starts_at: datetime | None = None, ends_at: datetime | None = None, note: str = "",
                 now: datetime | None = None) -> BlockedItem:
    """Keep ``item`` out of ``slug``'s list outputs for the matching decisions, in the window."""
    row = _create(BlockedItem, actor, slug, item=item, segment=segment, context=context,
                  starts_at=starts_at, ends_at=ends_at, note=note, now=now)
    assert isinstance(row, BlockedItem)
    return row


def parse_id(given: str, prefix: str) -> int | None:
    raw = given.removeprefix(f"{prefix}_")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else None


def _remove(kind: type[Curated], actor: User, given: str, slug: str | None, now: datetime | None) -> Curated:
    prefix, noun = ("pck", "pick") if kind is Pick else ("blk", "block")
    pk = parse_id(given, prefix)
    if pk is None:
        raise ActionError("not_found", f"{given!r} is not a {noun} id (they look like {prefix}_12)")
    qs = kind._default_manager.select_for_update(of=("self",)).select_related("system", "removed_by").filter(pk=pk)
    if slug is not None:
        qs = qs.filter(system__slug=slug)
    row = qs.first()
    if row is None:
        raise ActionError("not_found", f"no {noun} {given!r}" + (f" on {slug}" if slug else ""))
    if row.removed_at is not None:
        by = row.removed_by.get_username() if row.removed_by else "someone"
        raise ActionError("conflict", f"{public_id(row)} was already removed by {by} "
                          f"at {row.removed_at.isoformat()}")
    user = _actor(actor)
    row.removed_at, row.removed_by = now or timezone.now(), user
    row.save(update_fields=["removed_at", "removed_by"])
    audit.record(user, f"{noun}.remove", system=row.system, target=public_id(row),
                 data=_facts(row))
    config.bump_epoch()
    return row


@transaction.atomic(durable=True)
def remove_pick(actor: User, pick_id: str, *, system: str | None = None, now: datetime | None = None) -> Pick:
    """Take a pick out of force (kept, marked removed). ``system``: refuse picks of other systems."""
    row = _remove(Pick, actor, pick_id, system, now)
    assert isinstance(row, Pick)
    return row


@transaction.atomic(durable=True)
def remove_block(actor: User, block_id: str, *, system: str | None = None,
                 now: datetime | None = None) -> BlockedItem:
    row = _remove(BlockedItem, actor, block_id, system, now)
    assert isinstance(row, BlockedItem)
    return row


# --- reading ----------------------------------------------------------------------------------------


def state(row: Curated, now: datetime) -> str:
    """``removed``, ``ended``, ``scheduled`` (starts later) or ``active``."""
    if row.removed_at is not None:
        return "removed"
    if row.ends_at is not None and row.ends_at <= now:
        return "ended"
    return "scheduled" if row.starts_at > now else "active"


def as_rule(row: Curated) -> picks.Rule:
    return picks.Rule(id=public_id(row), item=row.item, segment=row.segment,
                      context=dict(row.context or {}), starts_at=row.starts_at, ends_at=row.ends_at,
                      position=getattr(row, "position", 0),
                      by=row.created_by.get_username() if row.created_by else "")


def describe(row: Curated, now: datetime, overlapping: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """One pick or block as the API answers it and the page lists it."""
    rid: str = public_id(row)
    found = list((overlapping or {}).get(rid, []))
    data: dict[str, Any] = {
        "id": rid, "system": row.system.slug, "item": row.item, "segment": row.segment, "context": row.context,
        "starts_at": row.starts_at, "ends_at": row.ends_at, "note": row.note,
        "created_by": row.created_by.get_username() if row.created_by else None, "created_at": row.created_at,
        "removed_at": row.removed_at, "removed_by": row.removed_by.get_username() if row.removed_by else None,
        "state": state(row, now), "match": picks.describe_match(as_rule(row)),
    }
    if isinstance(row, Pick):
        data["position"] = row.position
        data["overlaps"] = found
        data["overlap_note"] = f"overlaps {', '.join(found)}" if found else ""
    return data


def rows(kind: type[Curated], system: AISystem, *, include_ended: bool = False, limit: int = 200) -> list[Curated]:
    """A system's picks or blocks: those in force or to come, then (``include_ended``) the newest
    ended or removed ones."""
    qs = kind._default_manager.filter(system=system).select_related("system", "created_by", "removed_by")
    now = timezone.now()
    live = list(qs.filter(removed_at__isnull=True).exclude(ends_at__lte=now).order_by("starts_at", "id")[:limit])
    if not include_ended:
        return live
    done = list(qs.exclude(pk__in=[r.pk for r in live]).order_by("-id")[:limit])
    return live + done


def listing(kind: type[Curated], system: AISystem, now: datetime, *,
            include_ended: bool = False) -> list[dict[str, Any]]:
    """``describe`` for each of ``rows``; picks carry the ids of the picks in force they overlap."""
    found = rows(kind, system, include_ended=include_ended)
    overlapping = None
    if kind is Pick:
        overlapping = picks.overlaps(as_rule(r) for r in found if state(r, now) in ("active", "scheduled"))
    return [describe(r, now, overlapping) for r in found]


def describe_one(kind: type[Curated], row: Curated, now: datetime) -> dict[str, Any]:
    """A pick or block just made or removed, with its overlaps among the system's picks in force."""
    overlapping = None
    if kind is Pick:
        others = [r for r in rows(Pick, row.system) if r.pk != row.pk]
        mine = [as_rule(row)] if state(row, now) in ("active", "scheduled") else []
        overlapping = picks.overlaps([*mine, *(as_rule(r) for r in others)])
    return describe(row, now, overlapping)


# --- the preview ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Preview:
    base: Any  # what the system's model said (or the fallback)
    source: str  # "dec_…" (the decision the base came from) or "fallback"
    curated: Any  # ``base`` after the picks and blocks in force
    reasons: list[str]


def _model_output(decision: Mapping[str, Any]) -> Any:
    """The model's own output (before curation) of a stored decision: its prediction's, else its output."""
    prediction = decision.get("prediction")
    if isinstance(prediction, dict) and picks.curated_items(prediction.get("output")) is not None:
        return prediction["output"]
    return decision.get("output")


def preview(system: AISystem, context: Mapping[str, Any], now: datetime | None = None) -> Preview:
    """What a decision with ``context`` would receive now: the newest released decision of the system
    whose context matches (among its newest 2000 released) — else the system's fallback output —
    with the picks and blocks in force applied."""
    now = now or timezone.now()
    want = picks.Rule(id="preview", item="", segment=str(context.get("segment", "") or ""),
                      context={k: v for k, v in context.items() if k != "segment"}, starts_at=now, ends_at=None)
    recent = (Decision.objects.filter(system=system, status=Decision.Status.RELEASED)
              .order_by("-created_at").values("id", "context", "prediction", "output")[:PREVIEW_SCAN])
    base: Any = None
    source = "fallback"
    for d in recent.iterator(chunk_size=200):
        if isinstance(d["context"], dict) and picks.matches(want, d["context"]):
            base, source = _model_output(d), f"dec_{d['id'].hex}"
            break
    if source == "fallback":
        base = system.fallback
        rule = FallbackRule.from_json(system.fallback_rule)
        if rule is not None and rule.kind == "rule":
            verdict = gate.Verdict(gate.FALLBACK, gate.ROUTE_FALLBACK, base, None, "", [], False)
            base = resolve(rule, verdict, context, {}).output
    curation = picks.load_all(now, system_id=system.id).get(system.id)
    curated, reasons = picks.apply(curation, base, context, now)
    return Preview(base, source, curated, reasons)
