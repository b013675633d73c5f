"""The append-only audit log, hash-chained: one helper that every write path calls inside its
transaction, the rule that makes the chain, its verification, and what an event says in words.

Each event carries ``prev_hash`` (the hash of the event before it, 64 zeros for the first) and
``hash = sha256(prev_hash + canonical content)``, where the canonical content is the JSON array
``[id, created_at, actor_id, actor_label, action, system_id, target, reason, data]`` with
created_at in ISO 8601, UTC, microseconds, and sorted keys, no spaces (the stdlib json module:
orjson refuses integers past 64 bits, which jsonb can hand back). The id is part of it: it
is drawn from the table's sequence under the chain lock (``oversight_audit_append``, made by
migration 0021, which also hashes and inserts), so id order is chain order and is commit order. Changing any field of a
row breaks its own hash; removing or inserting a row breaks the next row's prev_hash. Removing
the newest rows leaves a shorter chain that still verifies: keep the last hash somewhere else
(``manage.py verify_audit`` prints it) to notice that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from django.contrib.auth.models import AnonymousUser, User
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from oversight.actor import current as current_actor
from oversight.models import AISystem, AuditEvent

GENESIS = "0" * 64
# The key of the transaction-scoped advisory lock that orders writers of the chain ("OVAUDIT").
CHAIN_LOCK_KEY = 0x4F564155444954


class ChainRow(NamedTuple):
    """What the hash covers, in order, plus the two hashes (``values_list(*ChainRow._fields)``)."""

    id: int
    created_at: datetime
    actor_id: int | None
    actor_label: str
    action: str
    system_id: int | None
    target: str
    reason: str
    data: Any
    prev_hash: str = ""
    hash: str = ""


def canonical(row: ChainRow) -> bytes:
    return f"[{row.id},{_tail(row)}".encode()


def _tail(row: ChainRow) -> str:
    """The canonical array's text after its id (``created_at`` … ``data``, then ``]``): what
    ``record`` hands the database, which knows the id only under the chain lock (migration 0021)."""
    created = row.created_at.astimezone(UTC).isoformat(timespec="microseconds")
    content = [created, row.actor_id, row.actor_label, row.action, row.system_id, row.target, row.reason, row.data]
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)[1:]


def event_hash(prev_hash: str, row: ChainRow) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical(row)).hexdigest()


def _number_as_stored(text: str) -> int | float:
    # jsonb keeps a number as numeric and prints it in plain notation: 1e+16 comes back as the
    # integer 10000000000000000, 1e-05 as 0.00001, -0.0 as 0.0.
    value = Decimal(text)
    plain_text = "0.0" if value == 0 else format(value, "f")
    return float(plain_text) if "." in plain_text else int(plain_text)


def as_stored(data: Any) -> Any:
    """``data`` as the JSONField will give it back, so the hash written is the hash recomputed."""
    return json.loads(json.dumps(data), parse_float=_number_as_stored)


# --- verification (pure: any iterable of rows in id order) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainReport:
    count: int  # events checked (up to and including the broken one)
    last_hash: str
    broken: str = ""  # the first broken link, in words; empty when the chain is intact

    @property
    def intact(self) -> bool:
        return not self.broken

    @property
    def message(self) -> str:
        if self.broken:
            return self.broken
        return f"audit chain intact: {self.count} events, last hash {self.last_hash}"


def _named(row: ChainRow) -> str:
    when = row.created_at.astimezone(UTC).isoformat(timespec="seconds")
    return f"event #{row.id} ({when}, {row.action} by {row.actor_label})"


def verify(rows: Iterable[ChainRow]) -> ChainReport:
    """Walk the chain in id order; stop at the first row whose content or link does not hold."""
    prev_hash, prev_id, count = GENESIS, None, 0
    for row in rows:
        count += 1
        if not row.hash:
            return ChainReport(count, prev_hash, f"{_named(row)}: it has no hash — it was inserted behind "
                                                 "the application's back, outside the chain")
        if event_hash(row.prev_hash, row) != row.hash:
            return ChainReport(count, prev_hash, f"{_named(row)}: its hash does not match its content "
                                                 "— the row was changed after it was written")
        if row.prev_hash != prev_hash:
            before = "the start of the chain" if prev_id is None else f"event #{prev_id}'s hash"
            return ChainReport(count, prev_hash, f"{_named(row)}: its prev_hash does not match {before} "
                                                 "— a row was removed or inserted")
        prev_hash, prev_id = row.hash, row.id
    return ChainReport(count, prev_hash)


def verify_log(chunk_size: int = 2000) -> ChainReport:
    """The whole stored chain, streamed in id order."""
    rows = AuditEvent.objects.order_by("id").values_list(*ChainRow._fields).iterator(chunk_size=chunk_size)
    return verify(ChainRow._make(values) for values in rows)


# --- writing ----------------------------------------------------------------------------------------------


def record(
    actor: User | AnonymousUser | None,
    action: str,
    *,
    system: AISystem | None = None,
    target: str = "",
    reason: str = "",
    data: dict[str, Any] | None = None,
    actor_label: str | None = None,
) -> AuditEvent:
    """Append one event to the chain, in one round trip (``oversight_audit_append``, migration 0021:
    the chain lock, the id, the head, the hash and the INSERT, in the database).

    The advisory lock is held to the end of the caller's transaction, so audited writes commit one
    after another from this call on: record late in a write path, not first.
    """
    user = actor if actor is not None and actor.is_authenticated else None
    acting = current_actor()
    if user is None and actor_label is None and acting is not None and acting.command_line:
        # No actor given in a manage.py process: the person running it (or the one named by --by).
        user = acting.user if acting.user is not None and acting.user.is_authenticated else None
        actor_label = acting.label or None
    label = actor_label or (user.get_username() if user is not None else "system")
    content = as_stored(data or {})
    row = ChainRow(0, timezone.now(), user.pk if user is not None else None, label, action,
                   system.pk if system is not None else None, target, reason, content)
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(
            "SELECT event_id, event_prev_hash, event_hash FROM oversight_audit_append(%s, %s, %s, %s, %s, %s, %s, "
            "%s, %s::jsonb, %s)",
            [CHAIN_LOCK_KEY, row.created_at, row.actor_id, label, action, row.system_id, target, reason,
             json.dumps(content), _tail(row)])
        event_id, prev_hash, digest = cursor.fetchone()
    event = AuditEvent(id=event_id, created_at=row.created_at, actor=user, actor_label=label, action=action,
                       system=system, target=target, reason=reason, data=content, prev_hash=prev_hash, hash=digest)
    event._state.adding = False
    event._state.db = connection.alias
    return event


# --- what an event says, for the page and the CSV ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Details:
    sentence: str
    rows: list[tuple[str, str]]
    decision: str = ""  # a decision's public id the event is about (review events)
    review_item: str = ""


def plain(value: Any) -> str:
    """A JSON value as a person reads it: no braces, no quotes."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(plain(v) for v in value) or "none"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {plain(v)}" for k, v in value.items()) or "none"
    return str(value)


def _table(data: Any) -> list[tuple[str, str]]:
    if isinstance(data, dict):
        return [(str(k), plain(v)) for k, v in data.items()]
    return [("data", plain(data))] if data not in (None, "", []) else []


# People's accounts and logins (oversight.people_audit): the event's target is the person.
_PEOPLE = {
    "role.grant": "gave {who}{role}",
    "role.revoke": "took{role} from {who}",
    "user.create": "created the account {who}",
    "user.deactivate": "deactivated {who}",
    "user.activate": "re-activated {who}",
    "user.superuser": "changed whether {who} is a superuser",
    "user.password": "changed {who}'s password",
    "login.success": "{who} logged in",
    "login.failed": "a login as {who} failed",
    "login.locked": "logins as {who} are locked out",
}


def describe(event: AuditEvent) -> Details:
    action, data, target = event.action, event.data, event.target
    data_dict = data if isinstance(data, dict) else {}
    if action == "policy.change" and isinstance(data_dict.get("changes"), dict):
        changes = ", ".join(
            f"{field}: {plain(c.get('from'))} → {plain(c.get('to'))}" if isinstance(c, dict) else f"{field}: {plain(c)}"
            for field, c in data_dict["changes"].items()
        )
        version = data_dict.get("version")
        return Details(f"policy version {version}: {changes}" if version is not None else changes, [])
    if action.startswith("killswitch."):
        scope, _, where = target.partition(":")
        what = action.removeprefix("killswitch.")
        verb = {"engage": "engaged", "release": "released"}.get(what, what.replace("_", " ") + ":")
        place = "everywhere" if scope == "global" else f"for {where}"
        return Details(f"{verb} the {scope or 'unknown'} kill switch {place}", [("scope", scope), ("target", where)])
    if action.startswith("review."):
        what = action.removeprefix("review.")
        item = str(data_dict.get("item", ""))
        kind = data_dict.get("kind")
        sentence = f"review item resolved: {what}" + (f" ({kind})" if kind and kind != "review" else "")
        return Details(sentence, [], decision=target, review_item=item)
    if action.startswith("model."):
        what = {"register": "registered", "update": "changed", "remove": "removed"}.get(action[6:], action[6:])
        if action == "model.update":
            changes = ", ".join(f"{k}: {plain(c.get('from'))} → {plain(c.get('to'))}" for k, c in data_dict.items()
                                if isinstance(c, dict))
            return Details(f"changed hosted model {target}" + (f": {changes}" if changes else ""), [])
        return Details(f"{what} hosted model {target}", _table(data_dict))
    if action.startswith("rollout."):
        what = {"start": "started", "advance": "advanced", "rollback": "rolled back", "complete": "completed",
                "cancel": "cancelled"}.get(action[8:], action[8:])
        return Details(f"rollout {target} {what}", _table(data_dict))
    if action in ("pick.remove", "block.remove"):
        return Details(f"removed {target}", _table(data_dict))
    if action.endswith(".create") and data_dict:
        return Details(f"created {target}" if target else "created", _table(data_dict))
    if action in _PEOPLE:
        role = f" the {data_dict['role']} role" if "role" in data_dict else ""
        sentence = _PEOPLE[action].format(who=target or "someone", role=role)
        return Details(sentence, [(k, plain(v)) for k, v in data_dict.items() if k not in ("role", "username")])
    if action.startswith("alert."):
        verb = "opened" if action.endswith("open") else "resolved"
        return Details(f"alert {verb} on {target}", _table(data_dict))
    return Details(target, _table(data))


# --- reading: the page's filters and the CSV export ----------------------------------------------------


def events(*, actor: str = "", action: str = "", system: str = "", since: datetime | None = None,
           until: datetime | None = None) -> QuerySet[AuditEvent]:
    """Events newest first (chain order). ``until`` to the minute includes that whole minute."""
    qs = AuditEvent.objects.select_related("system").order_by("-id")
    if actor:
        qs = qs.filter(actor_label__iexact=actor)
    if action:
        qs = qs.filter(action=action)
    if system:
        qs = qs.filter(system__slug=system)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    if until is not None:
        if until.second == 0 and until.microsecond == 0:
            qs = qs.filter(created_at__lt=until + timedelta(minutes=1))
        else:
            qs = qs.filter(created_at__lte=until)
    return qs


def actions_present() -> list[str]:
    return list(AuditEvent.objects.order_by("action").values_list("action", flat=True).distinct())


CSV_HEADER = ["id", "created_at_utc", "actor", "action", "system", "target", "reason", "details", "data",
              "prev_hash", "hash"]


def spreadsheet_safe(cell: str) -> str:
    """A cell a spreadsheet will not run as a formula (=, +, -, @, tab or CR first get a quote)."""
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell


def csv_row(event: AuditEvent) -> list[str]:
    said = describe(event)
    details = "; ".join([said.sentence, *(f"{k}: {v}" for k, v in said.rows)] if said.sentence else
                        [f"{k}: {v}" for k, v in said.rows])
    cells = [str(event.id), event.created_at.astimezone(UTC).isoformat(timespec="microseconds"), event.actor_label,
             event.action, event.system.slug if event.system else "", event.target, event.reason, details,
             json.dumps(event.data, sort_keys=True, ensure_ascii=False), event.prev_hash, event.hash]
    return [spreadsheet_safe(c) for c in cells]
