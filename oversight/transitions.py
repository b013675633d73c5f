"""A decision's life after the gate: the state changes people cause, in one place.

The gate decides a decision's first state; afterwards a person may release a pending decision
(approve the model's output, or release one they wrote), reject it (the system's fallback
answers), confirm a released one on audit, or override it (replace its output); and a pending
decision nobody resolved within the system's ``review_expiry_s`` expires (the fallback answers). Each function
changes one decision, already locked by the caller's transaction (``lock``), appends a reason a
person can read, and records who did it in ``decision.review``. The review queue calls these;
it never writes a decision's status or output itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from oversight import config, gate
from oversight.errors import ActionError
from oversight.guardrails import Guardrails, violation
from oversight.models import Decision

Status = gate.Status


def lock(decision_id: Any) -> Decision:
    """The decision, locked for the rest of the caller's transaction."""
    return Decision.objects.select_for_update(of=("self",)).select_related("system").get(id=decision_id)


def _said(note: str) -> str:
    return f": {note}" if note else ""


def _record(d: Decision, reason: str, review: dict[str, Any]) -> Decision:
    d.reasons = [*d.reasons, reason]
    d.review = review
    d.save(update_fields=["status", "output", "reasons", "released_at", "review"])
    return d


def check_output(d: Decision, output: Any) -> None:
    """An output a person writes must keep to the system's guardrails, when it has some (a 422 on
    the ``output`` field otherwise): a person cannot release what the rules would stop the model from."""
    rails = Guardrails.from_json(d.system.guardrails)
    why = violation(rails, output) if rails is not None else None
    if why:
        raise ActionError("invalid", f"the output breaks the system's {why}", "output")


def _require(d: Decision, *allowed: str) -> None:
    if d.status not in allowed:
        raise ActionError("conflict", f"the decision is {d.status}, so this cannot be done to it", "action")


def approved_output(d: Decision) -> Any:
    """What approving ``d`` releases: its prediction, leaving out models a kill switch stops now.

    Refused while the whole system is stopped: the model's output would leave anyway.
    """
    entry = config.system_entry(d.system_id)
    kills = entry.kills if entry is not None else gate.KillState()
    if kills.stopped:
        raise ActionError(
            "conflict",
            f"the system is stopped ({kills.stopped}): the model's output cannot be approved; "
            "reject it, or modify it with the output to release",
            "action",
        )
    sent = d.prediction or {}
    votes = tuple(gate.Vote(v.get("model", ""), v.get("output"), v.get("confidence")) for v in sent.get("votes") or ())
    prediction = gate.Prediction(sent.get("output"), sent.get("confidence"), sent.get("model") or "", votes)
    live, _, _ = gate.drop_killed(prediction, kills)
    if live is None:
        raise ActionError(
            "conflict",
            "every model behind this decision is stopped by a kill switch: reject it, or modify it with the output "
            "to release",
            "action",
        )
    return live.output


def approve(d: Decision, *, by: str, note: str, now: datetime, review: dict[str, Any]) -> Decision:
    """A pending decision released with the model's output."""
    _require(d, Status.PENDING_REVIEW)
    d.output = approved_output(d)
    d.status, d.released_at = Status.RELEASED, now
    return _record(d, f"approved by {by}{_said(note)}", review)


def release_with(d: Decision, output: Any, *, by: str, note: str, now: datetime, review: dict[str, Any]) -> Decision:
    """A pending decision released with an output a person wrote."""
    _require(d, Status.PENDING_REVIEW)
    check_output(d, output)
    d.status, d.output, d.released_at = Status.RELEASED, output, now
    return _record(d, f"modified and released by {by}{_said(note)}", review)


def reject(d: Decision, *, by: str, note: str, review: dict[str, Any]) -> Decision:
    """A pending decision refused: the system's fallback output answers."""
    _require(d, Status.PENDING_REVIEW)
    d.status, d.output = Status.REJECTED, d.system.fallback
    return _record(d, f"rejected by {by}{_said(note)}", review)


def confirm(d: Decision, *, by: str, note: str, review: dict[str, Any]) -> Decision:
    """A released decision checked after the fact and found right: it stays as it is. (So does a
    decision a guardrail answered with the fallback: the person agrees it had to.)"""
    _require(d, Status.RELEASED, Status.FALLBACK)
    return _record(d, f"audit: confirmed by {by}{_said(note)}", review)


def override(d: Decision, output: Any | None, *, by: str, note: str, review: dict[str, Any]) -> Decision:
    """A released decision replaced after the fact: by ``output``, or the fallback when None. (A
    guardrail's fallback may be replaced the same way, by the output a person writes.)"""
    _require(d, Status.RELEASED, Status.FALLBACK)
    if output is not None:
        check_output(d, output)
    d.status = Status.OVERRIDDEN
    d.output = d.system.fallback if output is None else output
    return _record(d, f"audit: overridden by {by}{_said(note)}", review)


def expire(d: Decision, *, waited_s: int, now: datetime, review: dict[str, Any]) -> Decision:
    """A pending decision no person resolved in time: the system's fallback answers for it."""
    _require(d, Status.PENDING_REVIEW)
    d.status, d.output = Status.FALLBACK, d.system.fallback
    return _record(d, f"no person resolved it within {waited_s} s: the fallback answers", review)
