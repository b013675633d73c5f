"""The decision gate: pure policy logic, no database, no HTTP.

Given a system's policy, the kill-switch state and what the client (or a hosted model)
predicted, say what happens to the decision and why. Every branch adds a human-readable
reason; the API returns them verbatim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import TextChoices

from oversight.guardrails import Guardrails, violation
from oversight.readiness import hold_reason

CRITICAL, SUPERVISED, AUTONOMOUS = 1, 2, 3


class Status(TextChoices):
    """A decision's status (API.md): the one definition the model, the API and the pages use."""

    RELEASED = "released"
    PENDING_REVIEW = "pending_review"
    OVERRIDDEN = "overridden"
    REJECTED = "rejected"
    FALLBACK = "fallback"


class Route(TextChoices):
    """How a decision was reached (API.md)."""

    AUTO = "auto"
    HUMAN = "human"
    FALLBACK = "fallback"
    KILLED = "killed"
    BREAKER_OPEN = "breaker_open"


RELEASED, PENDING_REVIEW, FALLBACK = Status.RELEASED, Status.PENDING_REVIEW, Status.FALLBACK
ROUTE_AUTO, ROUTE_HUMAN, ROUTE_FALLBACK, ROUTE_KILLED = Route.AUTO, Route.HUMAN, Route.FALLBACK, Route.KILLED
ROUTE_BREAKER_OPEN = Route.BREAKER_OPEN


@dataclass(frozen=True, slots=True)
class Policy:
    level: int
    confidence_threshold: float
    audit_sample_rate: float
    fallback: Any
    version: int = 1
    guardrails: Guardrails | None = None  # level 3: what released outputs may be (oversight.guardrails)


@dataclass(frozen=True, slots=True)
class KillState:
    """Engaged kill switches that concern one system: reasons keyed by what they stop."""

    global_reason: str | None = None
    system_reason: str | None = None
    models: Mapping[str, str] = field(default_factory=dict)

    @property
    def stop_reason(self) -> str | None:
        """The reason a person gave for stopping the whole system (global first), or None."""
        return self.global_reason if self.global_reason is not None else self.system_reason

    @property
    def stopped(self) -> str | None:
        """Why the whole system is stopped, said as the gate says it, or None when it is not."""
        if self.global_reason is not None:
            return f"global kill switch engaged: {self.global_reason}"
        if self.system_reason is not None:
            return f"system kill switch engaged: {self.system_reason}"
        return None


@dataclass(frozen=True, slots=True)
class BreakerState:
    """A system's circuit breaker as the gate sees it (the rules: ``oversight.breakers``)."""

    state: str = "closed"  # closed | open | half_open
    reason: str = ""
    canary_share: float = 0.05
    models: Mapping[str, str] = field(default_factory=dict)  # model -> why its breaker is open


CLOSED_BREAKER = BreakerState()


@dataclass(slots=True)  # made per decision: plain slots, cheaper than frozen
class Vote:
    model: str
    output: Any
    confidence: float | None


@dataclass(slots=True)  # made per decision: plain slots, cheaper than frozen
class Prediction:
    output: Any
    confidence: float | None
    model: str = ""
    votes: Sequence[Vote] = ()


@dataclass(slots=True)  # made per decision: plain slots, cheaper than frozen
class Verdict:
    status: str
    route: str
    output: Any
    confidence: float | None
    model: str
    reasons: list[str]
    audit: bool
    failure: str = ""  # how the model failed ("error", "garbage", "deadline"): Decision.failure


def fmt(value: float, other: float) -> tuple[str, str]:
    """Format two numbers with the fewest decimals (≥2) that keep them apart when they differ."""
    for digits in range(2, 8):
        a, b = f"{value:.{digits}f}", f"{other:.{digits}f}"
        if (a == b) == (value == other):
            return a, b
    return repr(value), repr(other)


def _fallback(policy: Policy, route: str, reasons: list[str], prediction: Prediction | None) -> Verdict:
    return Verdict(
        status=FALLBACK,
        route=route,
        output=policy.fallback,
        confidence=None,
        model=prediction.model if prediction else "",
        reasons=[*reasons, "answered with the system's fallback output"],
        audit=False,
    )


def drop_killed(prediction: Prediction, kills: KillState, breaker: BreakerState = CLOSED_BREAKER
                ) -> tuple[Prediction | None, list[str], str]:
    """Leave stopped models (kill switch, open breaker) out of the ensemble. The prediction left
    (None when nothing is left to answer with), the reasons, and the route if nothing is left."""
    stopped = {m: f"kill switch engaged ({r})" for m, r in kills.models.items()}
    for m, r in breaker.models.items():
        stopped.setdefault(m, f"circuit breaker open ({r})")
    if not stopped:
        return prediction, [], ""
    reasons: list[str] = []
    if prediction.votes:
        alive = [v for v in prediction.votes if v.model not in stopped]
        dropped = sorted({v.model for v in prediction.votes if v.model in stopped})
        if prediction.model in stopped and prediction.model not in dropped:
            # The combined answer came from a stopped model: it cannot stand, whatever the votes say.
            dropped.append(prediction.model)
        for name in dropped:
            reasons.append(f"model {name} left out: {stopped[name]}")
        if not dropped:
            return prediction, [], ""
        if not alive:
            return None, reasons, ROUTE_KILLED if any(m in kills.models for m in dropped) else ROUTE_BREAKER_OPEN
        best = max(alive, key=lambda v: v.confidence if v.confidence is not None else -1.0)
        reasons.append(f"answer taken from model {best.model}, the most confident vote left")
        return Prediction(output=best.output, confidence=best.confidence, model=best.model, votes=alive), reasons, ""
    if prediction.model and prediction.model in stopped:
        name = prediction.model
        return None, [f"model {name} is stopped: {stopped[name]}"], (
            ROUTE_KILLED if name in kills.models else ROUTE_BREAKER_OPEN)
    return prediction, [], ""


def _guardrail_breach(rails: Guardrails | None, output: Any, over_rate: bool) -> str | None:
    if rails is None:
        return None
    if over_rate and rails.rate_per_minute is not None:
        return f"guardrail: more than {rails.rate_per_minute} decisions this minute"
    return violation(rails, output)


DRILL_REASONS = {
    "error": "drill: the model raised an error",
    "garbage": "drill: the model answered garbage",
    "deadline": "drill: the model answered after its deadline",
}


def _drill_reason(failure: str) -> str:
    return DRILL_REASONS.get(failure, f"drill: {failure}")


def decide(
    policy: Policy, kills: KillState, prediction: Prediction | None, audit_draw: float,
    breaker: BreakerState = CLOSED_BREAKER, canary_draw: float = 0.0, readiness: int | None = None,
    over_rate: bool = False, failure: str | None = None, failure_reason: str | None = None,
) -> Verdict:
    """Apply the gate. ``audit_draw`` and ``canary_draw`` are uniform numbers in [0, 1) (random in
    production): the first picks the audit sample, the second a half-open breaker's canary share.
    ``readiness``: the system's readiness score (None: never assessed); 0–1 sends every decision to a
    person (``oversight.readiness``). ``over_rate``: the system's guardrail rate for this minute is
    used up (counted by ``oversight.ratelimit``). ``failure``: how the model failed on this
    decision ("error", "garbage", "deadline"), or None; ``failure_reason`` says it in words (a drill's
    wording when not given)."""
    stopped = kills.stopped
    if stopped is not None:
        return _fallback(policy, ROUTE_KILLED, [stopped], prediction)
    reasons: list[str] = []
    if breaker.state == "open":
        return _fallback(policy, ROUTE_BREAKER_OPEN, [f"circuit breaker open: {breaker.reason}"], prediction)
    if breaker.state == "half_open":
        share = f"{breaker.canary_share:.0%}"
        if canary_draw >= breaker.canary_share:
            return _fallback(policy, ROUTE_BREAKER_OPEN, [
                f"circuit breaker half-open: outside the {share} canary share ({breaker.reason})"], prediction)
        reasons.append(f"circuit breaker half-open: in the {share} canary share")
    if prediction is None:
        if failure is not None:
            verdict = _fallback(policy, ROUTE_FALLBACK, [*reasons, failure_reason or _drill_reason(failure)], None)
            verdict.failure = failure
            return verdict
        return _fallback(policy, ROUTE_FALLBACK,
                         [*reasons, "no prediction was sent and no hosted model scored this decision"], None)

    live, kill_reasons, stop_route = drop_killed(prediction, kills, breaker)
    reasons.extend(kill_reasons)
    if live is None:
        return _fallback(policy, stop_route, reasons, prediction)

    if failure is not None:
        # The model failed: a chaos drill injects this (oversight.drills), hosted scoring
        # (oversight.scoring) sets it for real failures. The client gets the fallback.
        verdict = _fallback(policy, ROUTE_FALLBACK, [*reasons, failure_reason or _drill_reason(failure)], live)
        verdict.failure = failure
        return verdict

    conf = live.confidence
    hold = hold_reason(readiness)
    if hold is not None:
        reasons.append(hold)
        return Verdict(PENDING_REVIEW, ROUTE_HUMAN, None, conf, live.model, reasons, audit=False)
    if policy.level == CRITICAL:
        reasons.append("level 1 (critical): a person approves every decision")
        return Verdict(PENDING_REVIEW, ROUTE_HUMAN, None, conf, live.model, reasons, audit=False)

    if policy.level == SUPERVISED:
        if conf is None:
            reasons.append("no confidence given: a person decides")
            return Verdict(PENDING_REVIEW, ROUTE_HUMAN, None, conf, live.model, reasons, audit=False)
        c, t = fmt(conf, policy.confidence_threshold)
        if conf < policy.confidence_threshold:
            reasons.append(f"confidence {c} < threshold {t}: a person decides")
            return Verdict(PENDING_REVIEW, ROUTE_HUMAN, None, conf, live.model, reasons, audit=False)
        reasons.append(f"confidence {c} ≥ threshold {t}")
    elif policy.level == AUTONOMOUS:
        breach = _guardrail_breach(policy.guardrails, live.output, over_rate)
        if breach is not None:
            # The client gets the fallback now; a person sees what the model wanted to send.
            return Verdict(FALLBACK, ROUTE_FALLBACK, policy.fallback, conf, live.model,
                           [*reasons, breach, "answered with the system's fallback output; queued for a person"],
                           audit=True)
        reasons.append("level 3 (autonomous): released")
    else:  # pragma: no cover - the database constrains level to 1..3
        raise ValueError(f"unknown control level {policy.level}")

    audit = audit_draw < policy.audit_sample_rate
    if audit:
        reasons.append(f"sampled for after-the-fact audit (share {policy.audit_sample_rate:g})")
    return Verdict(RELEASED, ROUTE_AUTO, live.output, conf, live.model, reasons, audit=audit)
