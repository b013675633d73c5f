"""Guardrails for level-3 (autonomous) systems: the rules, as pure functions.

A system's policy field ``guardrails`` says what its released outputs may be:

* ``field``: where in the output to look (a dotted key, e.g. ``"decision"`` or ``"offer.amount"``;
  empty: the whole output). When the value found is a list, every element is checked.
* ``allowed``: the values it may take (JSON values, compared as JSON).
* ``min`` / ``max``: numeric bounds (inclusive).
* ``rate_per_minute``: at most this many decisions released per minute (a clock minute, counted
  across every web process in Redis by ``oversight/ratelimit.py``).

A decision outside them is answered with the system's fallback, route ``fallback``, and queued for
a person after the fact, with the reason ("guardrail: output.amount 12000 above the maximum 5000").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from oversight import jsonutil

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Guardrails:
    path: str = ""  # the policy's "field"
    allowed: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    rate_per_minute: int | None = None
    _allowed_keys: frozenset[bytes] = dc_field(default=frozenset(), repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Guardrails | None:
        """The stored policy (validated by ``policy_schemas.GuardrailPolicy``); None when there is none."""
        if not data:
            return None
        allowed = data.get("allowed")
        return cls(
            path=str(data.get("field") or ""),
            allowed=tuple(allowed) if allowed is not None else None,
            min=data.get("min"),
            max=data.get("max"),
            rate_per_minute=data.get("rate_per_minute"),
            _allowed_keys=frozenset(_key(v) for v in allowed) if allowed is not None else frozenset(),
        )

    @property
    def checks_output(self) -> bool:
        return self.allowed is not None or self.min is not None or self.max is not None


def _key(value: Any) -> bytes:
    return jsonutil.dumps(value, sort_keys=True)


def _find(output: Any, path: str) -> Any:
    value = output
    for part in [p for p in path.split(".") if p]:
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return jsonutil.dumps(v).decode() if not isinstance(v, str) else repr(v)


def violation(rails: Guardrails, output: Any) -> str | None:
    """Why ``output`` breaks the guardrails, in words; None when it keeps to them."""
    if not rails.checks_output:
        return None
    where = f"output.{rails.path}" if rails.path else "output"
    value = _find(output, rails.path)
    if value is _MISSING:
        return f"guardrail: {where} is missing"
    values = value if isinstance(value, list) else [value]
    for v in values:
        if rails.allowed is not None and _key(v) not in rails._allowed_keys:
            return f"guardrail: {where} {_fmt(v)} is not one of the allowed values"
        if rails.min is not None or rails.max is not None:
            if isinstance(v, bool) or not isinstance(v, int | float):
                return f"guardrail: {where} {_fmt(v)} is not a number"
            if rails.min is not None and v < rails.min:
                return f"guardrail: {where} {_fmt(v)} below the minimum {_fmt(rails.min)}"
            if rails.max is not None and v > rails.max:
                return f"guardrail: {where} {_fmt(v)} above the maximum {_fmt(rails.max)}"
    return None
