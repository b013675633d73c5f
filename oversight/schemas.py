"""Request and response shapes of the public API (API.md). Unknown fields are ignored."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from oversight.gate import Route, Status


def _not_bool(value: Any) -> Any:
    # JSON true/false is not a number: without this, `"confidence": true` would pass as 1.0.
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    return value


NotBool = BeforeValidator(_not_bool)
Confidence = Annotated[float, NotBool, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Share = Annotated[float, NotBool, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Level = Annotated[Literal[1, 2, 3], NotBool]
Seconds = Annotated[int, NotBool]

# Times the database can store and monitoring windows can use: from 1970 to a day ahead (clock skew).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
MAX_AHEAD = timedelta(days=1)


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
    if type(value.tzinfo) is not timezone:
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


class Nested(BaseModel):
    """A part of a request body: unknown fields ignored; its text is checked with the whole body."""

    model_config = ConfigDict(extra="ignore")


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


class BatchOut(BaseModel):
    results: list[dict[str, Any]]


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


class TimeWindow(Nested):
    """Monitoring windows aligned to ``occurred_at``, starting at the Unix epoch."""

    kind: Literal["time"]
    seconds: Seconds = Field(ge=60, le=30 * 86400)


class CountWindow(Nested):
    """Every ``size`` decisions in ``occurred_at`` order."""

    kind: Literal["count"]
    size: Seconds = Field(ge=100, le=10_000_000)


Window = Annotated[TimeWindow | CountWindow, Field(discriminator="kind")]

# The drift methods (dashboards.drift.NUMERIC_METHODS / CATEGORICAL_METHODS; a unit test keeps them equal).
NumericMethod = Literal["psi", "ks", "wasserstein", "jensenshannon"]
CategoricalMethod = Literal["chi2", "jensenshannon"]


class _DriftRule(BaseModel):
    """Which method decides drift and at what level (any part left out keeps the default)."""

    model_config = ConfigDict(extra="forbid")
    threshold: float | None = Field(default=None, ge=0, le=1e6)
    p_threshold: float | None = Field(default=None, gt=0, le=1)
    min_rows: int | None = Field(default=None, ge=2, le=10_000_000)


class NumericDriftRule(_DriftRule):
    method: NumericMethod | None = None


class CategoricalDriftRule(_DriftRule):
    method: CategoricalMethod | None = None


class FeatureDriftRule(_DriftRule):
    method: NumericMethod | CategoricalMethod | None = None


class DriftPolicy(BaseModel):
    """A system's drift thresholds: per column type, and per feature (``features``)."""

    model_config = ConfigDict(extra="forbid")
    numeric: NumericDriftRule | None = None
    categorical: CategoricalDriftRule | None = None
    features: dict[str, FeatureDriftRule] = Field(default_factory=dict, max_length=1000)

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: SerializerFunctionWrapHandler) -> Any:
        """Stored and shown without the parts left out (None: the default applies)."""
        return _drop_none(handler(self))


class BreakerPolicy(BaseModel):
    """A system's circuit-breaker thresholds (oversight.breakers.Policy; anything left out: its default)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool | None = None
    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    min_mean_reward: float | None = Field(default=None, ge=0, le=1)
    max_drifted_share: float | None = Field(default=None, ge=0, le=1)
    max_error_rate: float | None = Field(default=None, ge=0, le=1)
    max_deadline_miss_rate: float | None = Field(default=None, ge=0, le=1)
    feedback_loop: bool | None = None
    min_outcomes: int | None = Field(default=None, ge=1, le=1_000_000)
    canary_share: float | None = Field(default=None, gt=0, le=1)
    cooldown_s: int | None = Field(default=None, ge=0, le=30 * 86400)
    recover_margin: float | None = Field(default=None, ge=0, le=1)

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: SerializerFunctionWrapHandler) -> Any:
        return _drop_none(handler(self))


class GuardrailPolicy(BaseModel):
    """Level 3: what a released output may be (oversight.guardrails). Empty: no guardrails."""

    model_config = ConfigDict(extra="forbid")
    field: str = Field(default="", max_length=200, pattern=r"^([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*)?$")
    allowed: list[Any] | None = Field(default=None, min_length=1, max_length=10_000)
    min: float | None = None
    max: float | None = None
    rate_per_minute: int | None = Field(default=None, ge=1, le=10_000_000)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> GuardrailPolicy:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) must not be above max ({self.max:g})")
        if self.field and self.allowed is None and self.min is None and self.max is None:
            raise ValueError("a field to check needs allowed values, a min or a max")
        return self

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: SerializerFunctionWrapHandler) -> Any:
        return {k: v for k, v in _drop_none(handler(self)).items() if v != ""}


class FallbackPolicy(BaseModel):
    """What the system answers when the model cannot (oversight.fallbacks): the fixed ``fallback``
    output, a rule on one context or feature field, or withhold and queue for a person."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["fixed", "rule", "withhold"] = "fixed"
    by: str = Field(default="", max_length=200, pattern=r"^((context|features)\.[A-Za-z0-9_-]+)?$")
    outputs: dict[str, Any] = Field(default_factory=dict, max_length=10_000)
    default: Any = None

    @model_validator(mode="after")
    def _complete(self) -> FallbackPolicy:
        if self.kind == "rule" and (not self.by or not self.outputs):
            raise ValueError('a rule needs "by" (context.<key> or features.<key>) and "outputs" (value → output)')
        if self.kind != "rule" and (self.by or self.outputs or self.default is not None):
            raise ValueError(f'"by", "outputs" and "default" belong to kind "rule", not "{self.kind}"')
        return self

    @model_serializer(mode="wrap")
    def _only_what_was_set(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if self.kind != "rule":
            return {"kind": self.kind} if self.kind != "fixed" else {}
        return {k: v for k, v in data.items() if not (k == "default" and v is None)}


class LoopMitigationPolicy(BaseModel):
    """Feedback-loop mitigation (oversight.mitigation): by itself, after a click, or never."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["off", "auto", "click"] | None = None
    exploration_share: float | None = Field(default=None, gt=0, le=1)
    model_weight: float | None = Field(default=None, ge=0, le=1)

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: SerializerFunctionWrapHandler) -> Any:
        return _drop_none(handler(self))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


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
    reason: str = Field(default="", max_length=2000)

    @field_validator("fallback")
    @classmethod
    def _fallback_not_null(cls, value: Any) -> Any:
        return _fallback_value(value)


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
