"""Core domain tables: AI systems and their policies, kill switches, keys, decisions, audit.

Over ~400 lines on purpose: Django's one models module of the core app (mostly field
declarations), where its migrations, admin and queries find every table.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from uuid_utils.compat import uuid7

from oversight import gate


class Level(models.IntegerChoices):
    CRITICAL = 1, "1 · critical"
    SUPERVISED = 2, "2 · supervised"
    AUTONOMOUS = 3, "3 · autonomous"


def default_window() -> dict[str, Any]:
    return {"kind": "time", "seconds": 3600}


class AISystem(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    level = models.PositiveSmallIntegerField(choices=Level.choices, default=Level.SUPERVISED)
    confidence_threshold = models.FloatField(default=0.8, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    audit_sample_rate = models.FloatField(default=0.0, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    override_window_s = models.PositiveIntegerField(default=3600)
    review_sla_s = models.PositiveIntegerField(default=900)
    # A decision still waiting for a person this long after it was made gets the fallback (0: never).
    review_expiry_s = models.PositiveIntegerField(default=0)
    fallback = models.JSONField(default=dict, blank=True)
    # Monitoring windows (API.md): {"kind": "time", "seconds": 3600} or {"kind": "count", "size": 5000}.
    window = models.JSONField(default=default_window)
    # Drift thresholds (API.md): {"numeric": {...}, "categorical": {...}, "features": {name: {...}}}.
    drift = models.JSONField(default=dict, blank=True)
    # Circuit-breaker thresholds (oversight.breakers.Policy; anything left out: its default).
    breaker = models.JSONField(default=dict, blank=True)
    # Level 3: what released outputs may be (oversight.guardrails; {}: none).
    guardrails = models.JSONField(default=dict, blank=True)
    # What the fallback is (oversight.fallbacks): {} the fixed output, a rule, or withhold for a person.
    fallback_rule = models.JSONField(default=dict, blank=True)
    # Feedback-loop mitigation (oversight.mitigation): {"mode": "off"|"auto"|"click", ...}.
    loop_mitigation = models.JSONField(default=dict, blank=True)
    # How hosted models answer (oversight.routing): {"mode": "ensemble"|"bandit", "floor": 0.01, "wait_ms": 1000}.
    routing = models.JSONField(default=dict, blank=True)
    # Where the client service is told when a person resolves or overrides a decision (oversight.webhooks).
    callback_url = models.URLField(max_length=500, blank=True, default="")
    # The key webhook bodies are signed with (HMAC-SHA256). Kept as is, not hashed: signing needs it.
    # Shown once when set; never part of the policy, the API's answers or the audit log.
    webhook_secret = models.CharField(max_length=100, blank=True, default="")
    # The share of review items that also go to a second, different operator (reviewer agreement).
    double_review_rate = models.FloatField(default=0.0, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    policy_version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering: ClassVar = ["slug"]
        verbose_name = "AI system"

    def __str__(self) -> str:
        return self.slug

    def policy_dict(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "name": self.name,
            "level": self.level,
            "confidence_threshold": self.confidence_threshold,
            "audit_sample_rate": self.audit_sample_rate,
            "override_window_s": self.override_window_s,
            "review_sla_s": self.review_sla_s,
            "review_expiry_s": self.review_expiry_s,
            "fallback": self.fallback,
            "window": self.window,
            "drift": self.drift,
            "breaker": self.breaker,
            "guardrails": self.guardrails,
            "fallback_rule": self.fallback_rule,
            "loop_mitigation": self.loop_mitigation,
            "routing": self.routing,
            "callback_url": self.callback_url,
            "double_review_rate": self.double_review_rate,
        }


class PolicyVersion(models.Model):
    """Every policy change is a new row: the history of what a system was allowed to do."""

    system = models.ForeignKey(AISystem, on_delete=models.CASCADE, related_name="policy_versions")
    version = models.PositiveIntegerField()
    policy = models.JSONField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints: ClassVar = [models.UniqueConstraint(fields=["system", "version"], name="policy_version_unique")]
        ordering: ClassVar = ["system", "-version"]


class KillSwitch(models.Model):
    class Scope(models.TextChoices):
        GLOBAL = "global"
        SYSTEM = "system"
        MODEL = "model"

    scope = models.CharField(max_length=10, choices=Scope.choices)
    system = models.ForeignKey(AISystem, null=True, blank=True, on_delete=models.CASCADE, related_name="killswitches")
    model = models.CharField(max_length=200, blank=True, default="")
    engaged = models.BooleanField(default=False)
    reason = models.TextField(blank=True, default="")
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    changed_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints: ClassVar = [
            models.UniqueConstraint(
                fields=["scope", "system", "model"], name="killswitch_unique_target", nulls_distinct=False
            ),
        ]


class ConfigEpoch(models.Model):
    """One row. Bumped in the same transaction as any change the gate must see at once.

    Redis holds a copy (checked on every decision); this row is the truth when Redis is away.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    epoch = models.BigIntegerField(default=1)


class ApiKey(models.Model):
    """A client service's key. Only a SHA-256 digest of the (high-entropy, random) key is stored."""

    system = models.ForeignKey(AISystem, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=16)
    digest = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)


class PersonalToken(models.Model):
    """A person's token for scripts: carries that person's role. Stored as a digest."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=16)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)


class Decision(models.Model):
    Status = gate.Status  # one definition of statuses and routes, in the gate
    Route = gate.Route

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: the composite indexes below lead with it.
    system = models.ForeignKey(AISystem, on_delete=models.PROTECT, related_name="decisions", db_index=False)
    subject = models.CharField(max_length=200, blank=True, default="")
    context = models.JSONField(default=dict)
    features = models.JSONField(default=dict)
    prediction = models.JSONField(null=True)
    model = models.CharField(max_length=200, blank=True, default="")
    output = models.JSONField(null=True)
    confidence = models.FloatField(null=True)
    status = models.CharField(max_length=16, choices=Status.choices)
    route = models.CharField(max_length=16, choices=Route.choices)
    reasons = models.JSONField(default=list)
    audit = models.BooleanField(default=False)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    request_hash = models.CharField(max_length=64, blank=True, default="")
    policy_version = models.PositiveIntegerField(default=1)
    occurred_at = models.DateTimeField()
    created_at = models.DateTimeField()
    released_at = models.DateTimeField(null=True)
    # Set by the review queue when a person resolves it: action, note, by, at.
    review = models.JSONField(null=True, blank=True)
    # How the model failed ("" none, "error", "garbage", "deadline"): set by the gate for a chaos
    # drill (oversight.drills) and, once hosted scoring exists, for real failures; the performance
    # job counts them per window (gate.error_rate, gate.deadline_miss_rate).
    failure = models.CharField(max_length=16, blank=True, default="", db_default="")

    class Meta:
        constraints: ClassVar = [
            models.UniqueConstraint(
                fields=["system", "idempotency_key"],
                name="decision_idempotency_key",
                condition=models.Q(idempotency_key__isnull=False),
            ),
        ]
        indexes: ClassVar = [
            models.Index(fields=["system", "created_at"], name="decision_system_created"),
            # Monitoring windows and references read a system's decisions by occurred_at.
            models.Index(fields=["system", "occurred_at"], name="decision_system_occurred"),
            # A subject's recent decisions (the review item page, the decisions search).
            models.Index(fields=["subject", "-created_at"], name="decision_subject",
                         condition=~models.Q(subject="")),
        ]

    @property
    def public_id(self) -> str:
        return f"dec_{self.id.hex}"


class Outcome(models.Model):
    """What happened after a decision: a client's label or reward, or a person's resolution (``human``:
    the output a person released, kept or wrote, as the label)."""

    class Source(models.TextChoices):
        CLIENT = "client"
        HUMAN = "human"

    decision = models.ForeignKey(Decision, on_delete=models.CASCADE, related_name="outcomes")
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.CLIENT, db_default=Source.CLIENT)
    label = models.JSONField(null=True)
    reward = models.FloatField(null=True)
    observed_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # The performance job finds the outcomes that arrived since its last run.
        indexes: ClassVar = [models.Index(fields=["created_at"], name="outcome_created")]


class AuditEvent(models.Model):
    """Append-only: who did what, when and why. UPDATE and DELETE are refused by a trigger."""

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, db_constraint=False)
    actor_label = models.CharField(max_length=200)
    action = models.CharField(max_length=64)
    system = models.ForeignKey(AISystem, null=True, on_delete=models.DO_NOTHING, db_constraint=False)
    target = models.CharField(max_length=200, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    data = models.JSONField(default=dict)
    # Set by oversight.audit.record under the chain lock, so it is known before hashing.
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The hash chain (oversight/audit.py): hash = sha256(prev_hash + canonical content).
    prev_hash = models.CharField(max_length=64, default="", db_default="")
    hash = models.CharField(max_length=64, default="", db_default="")

    class Meta:
        ordering: ClassVar = ["-created_at", "-id"]

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ValueError("audit events are append-only")
        if not self.hash:
            raise ValueError("audit events are written through oversight.audit.record (the hash chain)")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise ValueError("audit events are append-only")


class Breaker(models.Model):
    """A circuit breaker of a system (``model`` empty) or of one of its models: its state now.

    The rules are in ``oversight.breakers``; changes go through ``oversight.breaker_actions``.
    """

    class State(models.TextChoices):
        CLOSED = "closed"
        OPEN = "open"
        HALF_OPEN = "half_open", "half-open"

    system = models.ForeignKey(AISystem, on_delete=models.CASCADE, related_name="breakers")
    model = models.CharField(max_length=200, blank=True, default="")
    state = models.CharField(max_length=10, choices=State.choices, default=State.CLOSED)
    reason = models.TextField(blank=True, default="")
    manual = models.BooleanField(default=False)  # opened by a person: only a person closes it
    awaiting_person = models.BooleanField(default=False)  # level 1: recovered, a person must close it
    changed_at = models.DateTimeField(null=True, blank=True)
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    class Meta:
        constraints: ClassVar = [models.UniqueConstraint(fields=["system", "model"], name="breaker_unique")]


class BreakerEvent(models.Model):
    """One transition of a breaker: its timeline on the system's page."""

    system = models.ForeignKey(AISystem, on_delete=models.CASCADE, related_name="breaker_events")
    model = models.CharField(max_length=200, blank=True, default="")
    from_state = models.CharField(max_length=10)
    to_state = models.CharField(max_length=10)
    reason = models.TextField()
    metric = models.CharField(max_length=64, blank=True, default="")
    value = models.FloatField(null=True, blank=True)
    threshold = models.FloatField(null=True, blank=True)
    actor_label = models.CharField(max_length=200)  # a person, or "breaker" for the evaluation job
    at = models.DateTimeField()

    class Meta:
        ordering: ClassVar = ["-at", "-id"]
        indexes: ClassVar = [models.Index(fields=["system", "-at"], name="breaker_event_system_at")]


class ReleaseRequest(models.Model):
    """Four eyes: releasing the global kill switch, or one on a level-1 system, waits here until a
    second admin approves it or the requester withdraws it (rules: ``oversight.releases``)."""

    class State(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        WITHDRAWN = "withdrawn"

    switch = models.ForeignKey(KillSwitch, on_delete=models.CASCADE, related_name="release_requests")
    reason = models.TextField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering: ClassVar = ["-requested_at", "-id"]
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["switch"], condition=models.Q(state="pending"),
                                    name="release_request_one_pending"),
        ]

    @property
    def public_id(self) -> str:
        return f"rel_{self.pk}"


class Readiness(models.Model):
    """One readiness assessment of a system (rules: ``oversight.readiness``); the newest is in force,
    the older ones are its history. Written by ``oversight.actions.assess_readiness``."""

    # No index of its own: the composite index below leads with it.
    system = models.ForeignKey(AISystem, on_delete=models.CASCADE, related_name="readiness_assessments",
                               db_index=False)
    answers = models.JSONField()  # question key -> choice key
    score = models.PositiveSmallIntegerField(validators=[MaxValueValidator(5)])
    note = models.TextField(blank=True, default="")
    assessed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    assessed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering: ClassVar = ["-assessed_at", "-id"]
        indexes: ClassVar = [models.Index(fields=["system", "-assessed_at", "-id"], name="readiness_system_at")]
        constraints: ClassVar = [models.CheckConstraint(condition=models.Q(score__lte=5), name="readiness_score_0_5")]


class Drill(models.Model):
    """A chaos drill: for a while, a share of a system's decisions meets a model that fails (rules:
    ``oversight.drills``; the report: ``dashboards.drill_report``)."""

    class Kind(models.TextChoices):
        ERROR = "error", "the model raises an error"
        GARBAGE = "garbage", "the model answers garbage"
        DEADLINE = "deadline", "the model answers after its deadline"

    system = models.ForeignKey(AISystem, on_delete=models.CASCADE, related_name="drills")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    share = models.FloatField(default=1.0, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    reason = models.TextField()
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    started_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)  # set when it ends: stopped by a person, or on time
    ended_by = models.CharField(max_length=200, blank=True, default="")  # a person, or "drills" (on time)
    report = models.JSONField(null=True, blank=True)  # written after it ends (dashboards.drill_report)

    class Meta:
        ordering: ClassVar = ["-started_at", "-id"]
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["system"], condition=models.Q(ended_at__isnull=True),
                                    name="drill_one_running"),
        ]

    @property
    def public_id(self) -> str:
        return f"drl_{self.pk}"


class LoopMitigation(models.Model):
    """A feedback-loop mitigation of a system: active while ``ended_at`` is empty (oversight.mitigation)."""

    system = models.ForeignKey(AISystem, on_delete=models.CASCADE, related_name="loop_mitigations")
    exploration_share = models.FloatField()
    model_weight = models.FloatField()
    reason = models.TextField()
    auto = models.BooleanField(default=False)  # started by the monitor (policy mode "auto")
    started_by = models.CharField(max_length=200)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    ended_by = models.CharField(max_length=200, blank=True, default="")
    end_reason = models.TextField(blank=True, default="")

    class Meta:
        ordering: ClassVar = ["-started_at", "-id"]
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["system"], condition=models.Q(ended_at__isnull=True),
                                    name="loop_mitigation_one_active"),
        ]


class HostedModel(models.Model):
    """A model Oversight scores itself, on the ``scoring`` workers (``oversight.adapters``): a Python
    callable named by dotted path, or an HTTP model server. Voters' answers combine by weight
    (``oversight.ensemble``); a context model may veto models or items."""

    class Kind(models.TextChoices):
        PYTHON = "python", "Python callable"
        HTTP = "http", "HTTP model server"

    class Protocol(models.TextChoices):
        JSON = "json", "JSON (request and answer as they are)"
        V2 = "v2", "Open Inference Protocol v2"

    class Role(models.TextChoices):
        VOTER = "voter", "voter"
        CONTEXT = "context", "context model (may veto)"

    system = models.ForeignKey(AISystem, on_delete=models.CASCADE, related_name="hosted_models")
    name = models.CharField(max_length=200)  # the name votes, kill switches and breakers use
    kind = models.CharField(max_length=8, choices=Kind.choices)
    target = models.CharField(max_length=500)  # dotted path or URL
    protocol = models.CharField(max_length=8, choices=Protocol.choices, default=Protocol.JSON)
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.VOTER)
    weight = models.FloatField(default=1.0, validators=[MinValueValidator(0.0)])
    timeout_ms = models.PositiveIntegerField(default=500)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering: ClassVar = ["system", "name"]
        constraints: ClassVar = [models.UniqueConstraint(fields=["system", "name"], name="hosted_model_unique")]


class BanditArm(models.Model):
    """Thompson sampling over a system's models (``oversight.bandits``): Beta(alpha, beta) of each
    arm's reward, updated from outcomes."""

    system = models.ForeignKey(AISystem, on_delete=models.CASCADE, related_name="bandit_arms")
    model = models.CharField(max_length=200)
    alpha = models.FloatField(default=1.0)
    beta = models.FloatField(default=1.0)
    pulls = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints: ClassVar = [models.UniqueConstraint(fields=["system", "model"], name="bandit_arm_unique")]


class Rollout(models.Model):
    """A new model version taking over from another step by step (``oversight.rollouts``)."""

    class State(models.TextChoices):
        RUNNING = "running"
        COMPLETED = "completed"
        ROLLED_BACK = "rolled_back", "rolled back"
        CANCELLED = "cancelled"

    system = models.ForeignKey(AISystem, on_delete=models.CASCADE, related_name="rollouts")
    candidate = models.CharField(max_length=200)  # the new version (a hosted model's name)
    baseline = models.CharField(max_length=200)  # the version it replaces
    steps = models.JSONField()  # shares in percent, e.g. [1, 5, 20, 50, 100]
    step = models.PositiveSmallIntegerField(default=0)  # index into steps
    step_seconds = models.PositiveIntegerField(default=3600)
    guard = models.JSONField(default=dict, blank=True)  # regression rule (oversight.rollouts.Guard)
    state = models.CharField(max_length=12, choices=State.choices, default=State.RUNNING)
    reason = models.TextField(blank=True, default="")
    started_by = models.CharField(max_length=200)
    started_at = models.DateTimeField()
    step_started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering: ClassVar = ["-started_at", "-id"]
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["system"], condition=models.Q(state="running"), name="rollout_one_running"),
        ]

    @property
    def public_id(self) -> str:
        return f"rol_{self.pk}"

    @property
    def share(self) -> float:
        """The candidate's share of traffic now (0–1)."""
        return float(self.steps[self.step]) / 100.0 if self.state == self.State.RUNNING else (
            1.0 if self.state == self.State.COMPLETED else 0.0)


class RolloutEvent(models.Model):
    """One step of a rollout (started, advanced, rolled back, completed): drawn on the system's page."""

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="events")
    share = models.FloatField()  # the candidate's share after the event, 0–1
    kind = models.CharField(max_length=16)  # started | advanced | rolled_back | completed | cancelled
    reason = models.TextField()
    by = models.CharField(max_length=200)
    at = models.DateTimeField()

    class Meta:
        ordering: ClassVar = ["at", "id"]


class Curated(models.Model):
    """What editors pin into or block from a system's outputs (``oversight.picks``), for the
    decisions whose context matches, from ``starts_at`` until ``ends_at`` (open-ended: null)."""

    system = models.ForeignKey(AISystem, on_delete=models.CASCADE, related_name="+")
    item = models.CharField(max_length=200)
    segment = models.CharField(max_length=100, blank=True, default="")  # matches context["segment"]
    context = models.JSONField(default=dict, blank=True)  # every key must equal the decision's context
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    removed_at = models.DateTimeField(null=True, blank=True)  # removed picks stay: decisions name them
    removed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    class Meta:
        abstract = True
        ordering: ClassVar = ["system", "starts_at", "id"]


class Pick(Curated):
    position = models.PositiveSmallIntegerField(default=1)  # 1: first

    @property
    def public_id(self) -> str:
        return f"pck_{self.pk}"


class BlockedItem(Curated):
    @property
    def public_id(self) -> str:
        return f"blk_{self.pk}"


class WebhookDelivery(models.Model):
    """The outbox: one event for the client service, written in the transaction that caused it and
    sent by a Celery task (oversight.webhooks) until the receiver answers 2xx or the time is up.

    The id is the ``X-Oversight-Delivery`` header (the same on every retry); ``body`` is the exact
    bytes signed and sent, fixed when the event happened.
    """

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    system = models.ForeignKey(AISystem, on_delete=models.CASCADE, related_name="webhook_deliveries",
                               db_index=False)
    decision = models.ForeignKey(Decision, on_delete=models.CASCADE, related_name="webhook_deliveries")
    event = models.CharField(max_length=40)
    url = models.URLField(max_length=500)
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    given_up_at = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        indexes: ClassVar = [
            models.Index(fields=["next_attempt_at"], name="webhook_due",
                         condition=models.Q(delivered_at__isnull=True, given_up_at__isnull=True)),
            models.Index(fields=["system", "created_at"], name="webhook_system_created"),
        ]

    @property
    def state(self) -> str:
        if self.delivered_at:
            return "delivered"
        if self.given_up_at:
            return "given up"
        return "retrying" if self.attempts else "queued"
