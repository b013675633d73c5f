"""The parts of a system's policy as the API and the pages check them (API.md), and the basic types
every request body uses. ``oversight/schemas.py`` builds the request and response bodies from them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)


def _not_bool(value: Any) -> Any:
    # A number is a JSON number: without this, `"confidence": true` would pass as 1.0 and
    # `"confidence": "0.9"` as 0.9 (pydantic's lax mode), and a client's bug would go unnoticed.
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    if isinstance(value, str):
        raise ValueError(f"expected a number, not the text {value[:20]!r} (send it without quotes)")
    return value


NotBool = BeforeValidator(_not_bool)
Seconds = Annotated[int, NotBool]


class Nested(BaseModel):
    """A part of a request body: unknown fields ignored; its text is checked with the whole body."""

    model_config = ConfigDict(extra="ignore")


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


class RoutingPolicy(BaseModel):
    """How a system's hosted models answer (oversight.routing): every model votes (``ensemble``), or
    Thompson sampling picks one per decision (``bandit``, each keeping ``floor`` of the traffic);
    ``wait_ms``: how long a request waits for them when it gives no ``?wait_ms=``."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["ensemble", "bandit"] | None = None
    floor: float | None = Field(default=None, ge=0, le=0.2)
    wait_ms: int | None = Field(default=None, ge=1, le=30_000)

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: SerializerFunctionWrapHandler) -> Any:
        return _drop_none(handler(self))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value
