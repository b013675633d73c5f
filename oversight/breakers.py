"""Circuit breakers: the rules, as pure functions (no database, no HTTP).

A breaker watches one system's *windowed* metrics (the monitoring jobs' windows), not consecutive
exceptions, and moves through three states:

* **closed**: decisions go through the gate as usual. A window whose figures break the policy
  (accuracy or mean reward below their minimum, share of drifted features or error rate or
  deadline misses above their maximum, an open feedback-loop alert) opens it.
* **open**: every decision gets the system's fallback, route ``breaker_open``. After
  ``cooldown_s`` it goes half-open by itself (unless a person opened it by hand: then only a
  person closes it).
* **half-open**: a canary share of decisions (default 5 %) goes through the gate, the rest gets
  the fallback. The first window that starts after the breaker went half-open decides: figures
  that break the policy open it again; figures that clear it by ``recover_margin`` close it, on
  level-1 systems only when a person does (the breaker says it is waiting for one).

No flapping: only windows that *start after* the breaker's last change are read, so one window
moves a breaker at most once; a figure exactly at its threshold does not trip, and recovering
needs the threshold plus the margin.

The evaluation job (``dashboards/breaker_job.py``) gathers :class:`Reading`s and applies
:func:`step`; ``oversight/breaker_actions.py`` stores the change; the gate reads the state from
the cached snapshot (``gate.BreakerState``), like kill switches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)
LABELS = {CLOSED: "closed", OPEN: "open", HALF_OPEN: "half-open"}


@dataclass(frozen=True, slots=True)
class Policy:
    """A system's breaker thresholds (its policy's ``breaker`` field; anything left out: these)."""

    enabled: bool = True
    min_accuracy: float | None = 0.85
    min_mean_reward: float | None = 0.85
    max_drifted_share: float | None = 0.5
    max_error_rate: float | None = 0.05
    max_deadline_miss_rate: float | None = 0.05
    feedback_loop: bool = True  # an open feedback-loop alert trips the breaker
    min_outcomes: int = 30  # a window with fewer outcomes says nothing about accuracy or reward
    canary_share: float = 0.05
    cooldown_s: int = 300
    recover_margin: float = 0.02

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Policy:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names and v is not None})


# (metric series, what it is called in a reason, the policy field, "min" or "max")
CHECKS: tuple[tuple[str, str, str, str], ...] = (
    ("perf.accuracy", "accuracy", "min_accuracy", "min"),
    ("perf.mean_reward", "mean reward", "min_mean_reward", "min"),
    ("drift.drifted_share", "share of drifted features", "max_drifted_share", "max"),
    ("gate.error_rate", "error rate", "max_error_rate", "max"),
    ("gate.deadline_miss_rate", "deadline misses", "max_deadline_miss_rate", "max"),
)
OUTCOME_METRICS = ("perf.accuracy", "perf.mean_reward")  # need min_outcomes behind them
SERIES = (*(c[0] for c in CHECKS), "perf.outcomes")


@dataclass(frozen=True, slots=True)
class Reading:
    """One monitoring window's figures of one system (None: no figure, or too little data)."""

    window_start: datetime
    values: Mapping[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Finding:
    metric: str  # the series, or "alert.feedback_loop"
    value: float | None
    threshold: float | None
    text: str


@dataclass(frozen=True, slots=True)
class Breaker:
    """What the evaluation needs of a stored breaker."""

    state: str = CLOSED
    changed_at: datetime | None = None  # None: never changed (watch every window)
    manual: bool = False  # opened by a person: stays open until a person closes it
    awaiting_person: bool = False
    tripped_on: str = ""  # the series (or "alert.feedback_loop") whose finding opened it last


@dataclass(frozen=True, slots=True)
class Change:
    to: str
    reason: str
    finding: Finding | None = None
    awaiting_person: bool = False


def _fmt(v: float) -> str:
    return f"{v:.3f}".rstrip("0").rstrip(".") if v == v else "nan"


def findings(policy: Policy, reading: Reading, feedback_alert: str | None = None,
             margin: float = 0.0) -> tuple[list[Finding], set[str]]:
    """What breaks the policy in one window, and the series that had a verdict there. ``margin``
    raises each minimum and lowers each maximum (for recovering)."""
    bad: list[Finding] = []
    judged: set[str] = set()
    outcomes = reading.values.get("perf.outcomes")
    when = f"window from {reading.window_start:%Y-%m-%d %H:%M} UTC"
    for series, label, attr, kind in CHECKS:
        limit = getattr(policy, attr)
        value = reading.values.get(series)
        if limit is None or value is None:
            continue
        if series in OUTCOME_METRICS and (outcomes or 0) < policy.min_outcomes:
            continue
        judged.add(series)
        # At the threshold is not past it; recovering (margin > 0) needs it cleared by the margin.
        if kind == "min" and value < limit + margin:
            bad.append(Finding(series, value, limit, f"{label} {_fmt(value)} below {_fmt(limit + margin)} ({when})"))
        elif kind == "max" and value > limit - margin:
            bad.append(Finding(series, value, limit, f"{label} {_fmt(value)} above {_fmt(limit - margin)} ({when})"))
    if policy.feedback_loop and feedback_alert is not None:
        bad.append(Finding("alert.feedback_loop", None, None, f"feedback-loop alert open: {feedback_alert}"))
    return bad, judged


def step(
    breaker: Breaker, policy: Policy, readings: list[Reading], now: datetime, level: int,
    feedback_alert: str | None = None,
) -> Change | None:
    """The change the figures call for, or None. ``readings``: the system's newest windows."""
    if not policy.enabled:
        return None
    fresh = [r for r in readings if breaker.changed_at is None or r.window_start >= breaker.changed_at]
    fresh.sort(key=lambda r: r.window_start)
    if breaker.state == CLOSED:
        for r in reversed(fresh):  # the newest window with a verdict speaks
            bad, judged = findings(policy, r, feedback_alert)
            if bad:
                return Change(OPEN, "; ".join(f.text for f in bad), bad[0])
            if judged:
                return None
        if policy.feedback_loop and feedback_alert is not None:
            f = Finding("alert.feedback_loop", None, None, f"feedback-loop alert open: {feedback_alert}")
            return Change(OPEN, f.text, f)
        return None
    if breaker.state == OPEN:
        if breaker.manual:
            return None
        since = breaker.changed_at or now
        if now - since >= timedelta(seconds=policy.cooldown_s):
            return Change(HALF_OPEN, f"cool-down of {policy.cooldown_s} s over: a canary share of "
                                     f"{policy.canary_share:.0%} of decisions goes to the model")
        return None
    # half-open: the first window that started after the change with a verdict on what tripped it
    # decides (a window with too few outcomes says nothing about an accuracy that opened it)
    for r in fresh:
        bad, judged = findings(policy, r, feedback_alert)
        if bad:
            return Change(OPEN, "re-tripped while half-open: " + "; ".join(f.text for f in bad), bad[0])
        if not judged or (breaker.tripped_on in SERIES and breaker.tripped_on not in judged):
            continue
        clear, _ = findings(policy, r, feedback_alert, margin=policy.recover_margin)
        if clear:
            return None  # between the threshold and the margin: keep watching
        if level == 1:
            if breaker.awaiting_person:
                return None
            return Change(HALF_OPEN, "figures recovered; on a level-1 system a person closes the breaker",
                          awaiting_person=True)
        return Change(CLOSED, f"figures recovered (window from {r.window_start:%Y-%m-%d %H:%M} UTC)")
    return None
