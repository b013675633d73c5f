"""What a system answers when the model cannot: its fallback, chosen per system (pure functions).

The gate says *that* a decision gets the fallback (a kill switch, an open breaker, a guardrail, no
prediction); the system's policy field ``fallback_rule`` says *what* that is:

* ``{"kind": "fixed"}`` (the default, also ``{}``): the policy's ``fallback`` output;
* ``{"kind": "rule", "by": "context.device", "outputs": {"speaker": …, "phone": …}, "default": …}``:
  the output for the decision's value of one context or feature field (``default``, or the fixed
  fallback, when the value has no output of its own);
* ``{"kind": "withhold"}``: nothing leaves; the decision waits for a person (``pending_review``,
  with a review item), whatever the level.

(The editors' curated picks join these once they exist.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from oversight import gate, jsonutil

FALLBACK_REASON = "answered with the system's fallback output"


@dataclass(frozen=True, slots=True)
class FallbackRule:
    kind: str = "fixed"  # fixed | rule | withhold
    by: str = ""  # "context.<key>" or "features.<key>"
    outputs: Mapping[str, Any] = field(default_factory=dict)
    default: Any = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> FallbackRule | None:
        """The stored policy (checked by ``policy_schemas.FallbackPolicy``); None for the fixed output."""
        if not data or data.get("kind", "fixed") == "fixed":
            return None
        return cls(kind=data["kind"], by=data.get("by", ""), outputs=dict(data.get("outputs") or {}),
                   default=data.get("default"))


def _value_of(rule: FallbackRule, context: Mapping[str, Any], features: Mapping[str, Any]) -> Any:
    source, _, key = rule.by.partition(".")
    found = (context if source == "context" else features).get(key)
    return found if isinstance(found, str) else (jsonutil.dumps(found).decode() if found is not None else None)


def resolve(rule: FallbackRule | None, verdict: gate.Verdict, context: Mapping[str, Any] | None,
            features: Mapping[str, Any] | None) -> gate.Verdict:
    """The verdict with the system's own fallback in place of the fixed one (unchanged when the gate
    did not answer with the fallback, or the system keeps the fixed output)."""
    if rule is None or verdict.status != gate.FALLBACK:
        return verdict
    reasons = list(verdict.reasons)
    said = next((i for i, r in enumerate(reasons) if r.startswith(FALLBACK_REASON)), len(reasons))
    kept = reasons[:said]
    tail = reasons[said][len(FALLBACK_REASON):] if said < len(reasons) else ""  # e.g. "; queued for a person"
    if rule.kind == "withhold":
        return replace(verdict, status=gate.PENDING_REVIEW, output=None, audit=False,
                       reasons=[*kept, "withheld: this system's fallback is to wait for a person"])
    value = _value_of(rule, context or {}, features or {})
    if value is not None and value in rule.outputs:
        return replace(verdict, output=rule.outputs[value], reasons=[
            *kept, f"answered by the fallback rule: {rule.by} is {value!r}{tail}", *reasons[said + 1:]])
    if rule.default is not None:
        return replace(verdict, output=rule.default, reasons=[
            *kept, f"answered by the fallback rule's default ({rule.by} is {value!r}: no output of its own){tail}",
            *reasons[said + 1:]])
    return verdict
