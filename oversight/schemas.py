"""Request and response shapes of the public API (API.md). Unknown fields are ignored."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Confidence = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError("needs a time zone, e.g. 2026-03-15T23:47:00Z")
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


class In(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class VoteIn(In):
    model: str = Field(min_length=1, max_length=200)
    output: Any
    confidence: Confidence | None = None


class PredictionIn(In):
    output: Any
    confidence: Confidence | None = None
    model: str = Field(default="", max_length=200)
    votes: list[VoteIn] = Field(default_factory=list, max_length=100)


class DecisionIn(In):
    subject: str = Field(default="", max_length=200)
    context: dict[str, Any] = Field(default_factory=dict)
    features: dict[str, Any] = Field(default_factory=dict)
    prediction: PredictionIn | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    occurred_at: AwareDatetime | None = None


class BatchIn(In):
    items: list[Any]


class DecisionOut(BaseModel):
    id: str
    system: str
    status: Literal["released", "pending_review", "overridden", "rejected", "fallback"]
    route: Literal["auto", "human", "fallback", "killed", "breaker_open"]
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
    label: Any
    reward: float | None
    observed_at: datetime


class SystemIn(In):
    slug: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    name: str = Field(default="", max_length=200)
    level: Literal[1, 2, 3] = 2
    confidence_threshold: Share = 0.8
    audit_sample_rate: Share = 0.0
    override_window_s: int = Field(default=3600, ge=0, le=30 * 86400)
    review_sla_s: int = Field(default=900, ge=1, le=30 * 86400)
    fallback: Any = Field(default_factory=dict)


class SystemPatch(In):
    name: str | None = Field(default=None, max_length=200)
    level: Literal[1, 2, 3] | None = None
    confidence_threshold: Share | None = None
    audit_sample_rate: Share | None = None
    override_window_s: int | None = Field(default=None, ge=0, le=30 * 86400)
    review_sla_s: int | None = Field(default=None, ge=1, le=30 * 86400)
    fallback: Any = None
    reason: str = Field(default="", max_length=2000)


class KillSwitchState(BaseModel):
    scope: str
    system: str | None
    model: str
    engaged: bool
    reason: str
    changed_by: str | None
    changed_at: datetime


class SystemOut(BaseModel):
    slug: str
    name: str
    level: int
    confidence_threshold: float
    audit_sample_rate: float
    override_window_s: int
    review_sla_s: int
    fallback: Any
    policy_version: int
    killed: bool
    kill_reason: str | None
    killswitches: list[KillSwitchState]


class KillSwitchIn(In):
    scope: Literal["global", "system", "model"]
    system: str | None = Field(default=None, max_length=64)
    model: str = Field(default="", max_length=200)
    engaged: bool
    reason: str = Field(default="", max_length=2000)
