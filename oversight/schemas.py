"""Request and response shapes of the public API (API.md). Unknown fields are ignored.

The parts of a system's policy (windows, drift, breakers, guardrails, fallbacks, mitigation) and
the basic types are in ``oversight/policy_schemas.py``. Over 400 lines on purpose: every other
request and response body of the API is here, so a client's whole contract reads in one module.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from oversight.gate import Route, Status
from oversight.policy_schemas import (
    BreakerPolicy,
    DriftPolicy,
    FallbackPolicy,
    GuardrailPolicy,
    LoopMitigationPolicy,
    Nested,
    NotBool,
    RoutingPolicy,
    Seconds,
    TimeWindow,
    Window,
)

Confidence = Annotated[float, NotBool, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Share = Annotated[float, NotBool, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Level = Annotated[Literal[1, 2, 3], NotBool]


def _callback_url(value: str) -> str:
    """An http(s) address the webhooks go to, or "" for none."""
    from urllib.parse import urlsplit

    value = value.strip()
    if not value:
        return ""
    try:
        parts = urlsplit(value)
        scheme, host, _ = parts.scheme, parts.hostname, parts.port  # a port that is not a number raises here
    except ValueError:
        scheme, host = "", None
    if scheme not in ("http", "https") or not host or "" in host.rstrip(".").split(".") or " " in value:
        raise ValueError("must be an http:// or https:// address with a host, like https://client.example/hooks "
                         "(or empty for no webhooks)")
    return value


CallbackUrl = Annotated[str, StringConstraints(max_length=500), AfterValidator(_callback_url)]

# Times the database can store and monitoring windows can use: from 1970 to a day ahead (clock skew).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
MAX_AHEAD = timedelta(days=1)
# PostgreSQL refuses offsets beyond ±15:59:59 ("time zone displacement out of range"); Python parses up to ±23:59.
PG_MAX_OFFSET = timedelta(hours=15, minutes=59, seconds=59)


_latest: tuple[float, datetime] = (0.0, EARLIEST)  # (when computed, now + MAX_AHEAD): at most once a second


def _latest_allowed() -> datetime:
    global _latest
    t = time.time()
    if t - _latest[0] >= 1.0:  # up to a second stale: a bound at most a second stricter
        _latest = (t, datetime.fromtimestamp(t, UTC) + MAX_AHEAD)
    return _latest[1]


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("needs a time zone, e.g. 2026-03-15T23:47:00Z")
    try:
        out_of_range = value < EARLIEST or value > _latest_allowed()
    except OverflowError:
        out_of_range = True
    if out_of_range:
        raise ValueError("is out of range: send a time between 1970 and now")
    if abs(value.utcoffset()) > PG_MAX_OFFSET:  # type: ignore[arg-type]
        value = value.astimezone(UTC)  # the same moment, in an offset PostgreSQL stores
    elif type(value.tzinfo) is not timezone:
        # The same offset as the standard library's fixed-offset zone, which formats, hashes and
        # converts in C (the parser's own zone calls back into Python for each of those).
        value = value.replace(tzinfo=timezone(value.utcoffset()))  # type: ignore[arg-type]
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]

# PostgreSQL stores neither NUL characters nor unpaired UTF-16 surrogates (JSON "\ud800"), in text or jsonb.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# The same, in json.dumps(ensure_ascii=False) output, where NUL is written as \u0000.
_UNSTORABLE_DUMPED = re.compile("[\x00\ud800-\udfff]|\\\\u0000")


def _may_hold_unstorable(value: Any) -> bool:
    """A fast filter (one C-speed dump and search): False means every string in ``value`` is storable."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return True
    if text.isascii():  # the usual case: no NUL (it would be dumped as \u0000) and no surrogates
        return "\\u0000" in text
    return _UNSTORABLE_DUMPED.search(text) is not None


def _what(text: str) -> str | None:
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    return "a NUL character (\\u0000)" if found.group() == "\x00" else "an unpaired UTF-16 surrogate"


def unstorable_at(value: Any) -> tuple[tuple[str | int, ...], str] | None:
    """(location, what) of the first string in ``value`` that PostgreSQL cannot store, or None."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, loc = stack.pop()
        if isinstance(item, str):
            what = _what(item)
            if what is not None:
                return loc, what
        elif isinstance(item, dict):
            for k, v in item.items():
                what = _what(k) if isinstance(k, str) else None
                if what is not None:
                    return loc, f"a key with {what}"
                stack.append((v, (*loc, k)))
        elif isinstance(item, list | tuple):
            stack.extend((v, (*loc, i)) for i, v in enumerate(item))
    return None


class In(BaseModel):
    model_config = ConfigDict(extra="ignore")
    # Checked once, on the whole request (parts of a request are `Nested`, not `In`).
    check_text: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any, info: ValidationInfo) -> Any:
        # The caller may have checked the raw request text already (no \u0000, no surrogate escapes).
        if info.context and info.context.get("text_checked"):
            return data
        if cls.check_text and _may_hold_unstorable(data):
            bad = unstorable_at(data)
            if bad is not None:
                loc, what = bad
                error = PydanticCustomError("unstorable", f"contains {what}, which cannot be stored; remove it")
                raise ValidationError.from_exception_data(
                    cls.__name__, [InitErrorDetails(type=error, loc=loc, input=data)]
                )
        return data


# Model names are compared with kill switches, which store them stripped.
ModelName = Annotated[str, StringConstraints(strip_whitespace=True)]


class VoteIn(Nested):
    model: ModelName = Field(min_length=1, max_length=200)
    output: Any
    confidence: Confidence | None = None


class PredictionIn(Nested):
    output: Any
    confidence: Confidence | None = None
    model: ModelName = Field(default="", max_length=200)
    votes: list[VoteIn] = Field(default_factory=list, max_length=100)


class DecisionIn(In):
    subject: str = Field(default="", max_length=200)
    context: dict[str, Any] = Field(default_factory=dict)
    features: dict[str, Any] = Field(default_factory=dict)
    prediction: PredictionIn | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    occurred_at: AwareDatetime | None = None


class BatchIn(BaseModel):
    # Not `In`: each item is validated on its own (DecisionIn), so one bad item fails only itself.
    model_config = ConfigDict(extra="ignore")

    items: list[Any]


class DecisionOut(BaseModel):
    id: str
    system: str
    status: Status
    route: Route
    output: Any
    confidence: float | None
    reasons: list[str]
    created_at: datetime
    occurred_at: datetime
    review: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    error: ErrorBody


class BatchDecisionOut(DecisionOut):
    replayed: bool  # the item's idempotency key was seen before: this is the stored decision


class BatchOut(BaseModel):
    results: list[BatchDecisionOut | ErrorOut]  # in the order of the items: each a decision or an error


class OutcomeIn(In):
    label: Any = None
    reward: Share | None = None
    observed_at: AwareDatetime | None = None


class OutcomeOut(BaseModel):
    id: int
    decision: str
    source: str
    label: Any
    reward: float | None
    observed_at: datetime


class SystemIn(In):
    slug: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    name: str = Field(default="", max_length=200)
    level: Level = 2
    confidence_threshold: Share = 0.8
    audit_sample_rate: Share = 0.0
    override_window_s: Seconds = Field(default=3600, ge=0, le=30 * 86400)
    review_sla_s: Seconds = Field(default=900, ge=1, le=30 * 86400)
    review_expiry_s: Seconds = Field(default=0, ge=0, le=30 * 86400)
    fallback: Any = Field(default_factory=dict)
    window: Window = Field(default_factory=lambda: TimeWindow(kind="time", seconds=3600))
    drift: DriftPolicy = Field(default_factory=DriftPolicy)
    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)
    guardrails: GuardrailPolicy = Field(default_factory=GuardrailPolicy)
    fallback_rule: FallbackPolicy = Field(default_factory=FallbackPolicy)
    loop_mitigation: LoopMitigationPolicy = Field(default_factory=LoopMitigationPolicy)
    routing: RoutingPolicy = Field(default_factory=RoutingPolicy)
    callback_url: CallbackUrl = ""
    double_review_rate: Share = 0.0

    @field_validator("fallback")
    @classmethod
    def _fallback_not_null(cls, value: Any) -> Any:
        return _fallback_value(value)


def _fallback_value(value: Any) -> Any:
    if value is None:
        raise ValueError("cannot be null: send the output to give when killed, tripped or timed out ({} for none)")
    return value


class SystemPatch(In):
    name: str | None = Field(default=None, max_length=200)
    level: Level | None = None
    confidence_threshold: Share | None = None
    audit_sample_rate: Share | None = None
    override_window_s: Seconds | None = Field(default=None, ge=0, le=30 * 86400)
    review_sla_s: Seconds | None = Field(default=None, ge=1, le=30 * 86400)
    review_expiry_s: Seconds | None = Field(default=None, ge=0, le=30 * 86400)
    fallback: Any = None
    window: Window | None = None
    drift: DriftPolicy | None = None
    breaker: BreakerPolicy | None = None
    guardrails: GuardrailPolicy | None = None
    fallback_rule: FallbackPolicy | None = None
    loop_mitigation: LoopMitigationPolicy | None = None
    routing: RoutingPolicy | None = None
    callback_url: CallbackUrl | None = None
    double_review_rate: Share | None = None
    reason: str = Field(default="", max_length=2000)

    @field_validator("fallback")
    @classmethod
    def _fallback_not_null(cls, value: Any) -> Any:
        return _fallback_value(value)


class OverrideIn(In):
    """``output`` replaces the released one (left out: the system's fallback); ``note`` says why."""

    output: Any = None
    note: str = Field(default="", max_length=5000)


class WebhookSecretOut(BaseModel):
    system: str
    secret: str


class KillSwitchState(BaseModel):
    scope: str
    system: str | None
    model: str
    engaged: bool
    reason: str
    changed_by: str | None
    changed_at: datetime


class BreakerOut(BaseModel):
    model: str  # empty: the system's own breaker
    state: Literal["closed", "open", "half_open"]
    reason: str
    manual: bool
    awaiting_person: bool
    changed_by: str | None
    changed_at: datetime | None


class BreakerEventOut(BaseModel):
    model: str
    from_state: str
    to_state: str
    reason: str
    metric: str
    value: float | None
    threshold: float | None
    by: str
    at: datetime


class BreakersOut(BaseModel):
    system: str
    policy: dict[str, Any]  # the thresholds in force, defaults filled in
    breakers: list[BreakerOut]
    events: list[BreakerEventOut]


class BreakerIn(In):
    model: str = Field(default="", max_length=200)
    state: Literal["open", "closed"]
    reason: str = Field(default="", max_length=2000)


class SystemOut(BaseModel):
    slug: str
    name: str
    level: int
    confidence_threshold: float
    audit_sample_rate: float
    override_window_s: int
    review_sla_s: int
    review_expiry_s: int
    fallback: Any
    window: dict[str, Any]
    drift: dict[str, Any]
    breaker: dict[str, Any]
    guardrails: dict[str, Any]
    fallback_rule: dict[str, Any]
    loop_mitigation: dict[str, Any]
    routing: dict[str, Any]
    callback_url: str
    double_review_rate: float
    webhook_secret_set: bool
    policy_version: int
    killed: bool
    kill_reason: str | None
    killswitches: list[KillSwitchState]
    breakers: list[BreakerOut]


class ReleaseRequestOut(BaseModel):
    id: str
    status: Literal["pending_approval", "approved", "withdrawn"]
    scope: str
    system: str | None
    model: str
    reason: str
    requested_by: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None


class KillSwitchIn(In):
    scope: Literal["global", "system", "model"]
    system: str | None = Field(default=None, max_length=64)
    model: str = Field(default="", max_length=200)
    engaged: bool
    reason: str = Field(default="", max_length=2000)



class ReadinessIn(In):
    """A readiness assessment: every question's answer (``oversight.readiness.QUESTIONS``), a note."""

    answers: dict[str, Any] = Field(max_length=50)  # question key -> choice key, checked by the rule module
    note: str = Field(default="", max_length=2000)


class ReadinessChoiceOut(BaseModel):
    key: str
    label: str
    points: int


class ReadinessQuestionOut(BaseModel):
    key: str
    text: str
    choices: list[ReadinessChoiceOut]


class AssessmentOut(BaseModel):
    score: int
    answers: dict[str, str]
    note: str
    assessed_by: str | None
    assessed_at: datetime


class ReadinessOut(BaseModel):
    system: str
    level: int
    score: int | None  # None: never assessed (the gate behaves as without an assessment)
    max_score: int
    holds_decisions: bool  # score 0–1: every decision waits for a person
    level_3_allowed: bool
    missing: list[str]  # questions not answered the safe way
    current: AssessmentOut | None
    history: list[AssessmentOut]  # newest first, the current one included
    questions: list[ReadinessQuestionOut]


class DrillIn(In):
    """Start a chaos drill (oversight.drills): what fails, for how long, for which share, and why."""

    kind: Literal["error", "garbage", "deadline"]
    minutes: Annotated[int, NotBool]  # 1–60, checked by the rule
    share: Annotated[float, NotBool, Field(allow_inf_nan=False)] = 1.0  # above 0, at most 1
    reason: str = Field(default="", max_length=2000)


class DrillOut(BaseModel):
    id: str
    system: str
    kind: str
    share: float
    reason: str
    what: str  # the drill in words
    started_by: str | None
    started_at: datetime
    ends_at: datetime
    ended_at: datetime | None
    ended_by: str | None  # a person who stopped it, or "drills" when its time was up
    running: bool
    report: dict[str, Any] | None  # written once it has ended (dashboards.drill_report)


class DrillsOut(BaseModel):
    system: str
    drills: list[DrillOut]  # newest first

_SUSPECT_ESCAPE = re.compile(rb"\\u0000|\\u[dD][89a-fA-F]")


def raw_text_storable(body: bytes) -> bool:
    """True when a JSON body cannot hold a NUL or a lone surrogate (they can only come as escapes)."""
    return _SUSPECT_ESCAPE.search(body) is None


# --- review (reviewqueue/api.py) ---------------------------------------------------------------


class ReviewDecisionOut(DecisionOut):
    subject: str
    context: dict[str, Any]
    features: dict[str, Any]
    prediction: dict[str, Any] | None


class ReviewItemOut(BaseModel):
    id: str
    kind: Literal["gate", "audit", "second"]  # before release | after-the-fact audit | second opinion
    status: Literal["open", "claimed", "resolved"]
    system: str
    decision: ReviewDecisionOut
    claimed_by: str | None
    lease_expires_at: datetime | None
    due_at: datetime
    action: Literal["approve", "reject", "modify", "expire"] | None  # expire: nobody resolved it in time
    note: str


# --- monitoring (dashboards/api.py, dashboards/monitoring_api.py) -------------------------------


class ReferenceColumnOut(BaseModel):
    name: str
    kind: str | None  # numeric | categorical
    missing: int
    count: int | None = None
    mean: float | None = None  # numeric columns
    std: float | None = None
    min: float | None = None
    max: float | None = None
    categories: int | None = None  # categorical columns
    top: dict[str, int] | None = None


class ReferenceOut(BaseModel):
    id: int
    system: str
    source: Literal["upload", "window"]  # an uploaded sample | a past window of decisions
    rows: int
    columns: list[ReferenceColumnOut]
    note: str
    created_by: str | None
    created_at: datetime


class DriftResultOut(BaseModel):
    window_start: datetime
    window_end: datetime
    feature: str
    method: str
    statistic: float | None
    threshold: float | None
    p_value: float | None
    drifted: bool | None  # None: too little data for a verdict
    p_threshold: float | None
    severity: float | None
    primary: bool
    rows: int
    computed_at: datetime


class DriftPageOut(BaseModel):
    system: str
    results: list[DriftResultOut]
    next_offset: int | None  # the next page's offset, or None on the last page


class MetricPointOut(BaseModel):
    name: str
    t: datetime
    value: float


class MetricsPageOut(BaseModel):
    system: str
    results: list[MetricPointOut]
    next_offset: int | None


class JobStartedOut(BaseModel):
    job: str


class JobOut(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "failed"]
    result: Any = None  # done: the job's summary; failed: {"error": "..."}


class AlertOut(BaseModel):
    id: str
    system: str
    kind: str
    subject: str
    state: Literal["open", "resolved"]
    message: str
    value: float | None
    opened_at: datetime
    resolved_at: datetime | None
    acked_by: str | None
    acked_at: datetime | None


class AlertsPageOut(BaseModel):
    results: list[AlertOut]
    next_offset: int | None
