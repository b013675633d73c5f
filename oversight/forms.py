"""Forms of the pages: they read what a person typed and say, field by field, what is wrong.

The rules live elsewhere and are reused here, not restated: limits in the API's schemas
(``oversight.schemas``), domain rules in the actions. A form parses text into values, checks
them with the schema the API uses and puts each pydantic error on its field in words
(:func:`add_schema_errors`); a view puts an action's ``ActionError`` on the field it names
(:func:`add_action_error`). A bound form keeps every value as it was typed, so a page
re-rendered with one error loses nothing else.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django import forms
from django.contrib.sessions.backends.base import SessionBase
from django.utils.http import url_has_allowed_host_and_scheme
from pydantic import BaseModel, ValidationError

from oversight import demo, readiness
from oversight.errors import ActionError
from oversight.formfields import (
    LEVELS_LONG,
    LEVELS_SHORT,
    MISSING,
    SLUG_HTML_PATTERN,
    SLUG_RULE,
    JSONTextField,
    add_schema_errors,
    level_field,
    numeric_field,
    sentence,
    text_field,
)
from oversight.models import ApiKey, KillSwitch, PersonalToken
from oversight.schemas import KillSwitchIn, ReadinessIn, SystemIn, SystemPatch

# --- systems and policies -----------------------------------------------------------------


class PolicyForm(forms.Form):
    """The fields of a system's policy, checked by ``schema`` (the API's body for the same change)."""

    schema: ClassVar[type[BaseModel]]
    # Fields passed to the schema (the rest, like the reason, go to the action as they are).
    policy_fields: ClassVar[tuple[str, ...]] = (
        "name", "level", "confidence_threshold", "audit_sample_rate", "override_window_s", "review_sla_s",
        "review_expiry_s", "fallback", "fallback_rule", "drift", "breaker", "guardrails", "loop_mitigation",
        "routing", "callback_url", "double_review_rate",
    )

    name = text_field("Name", model=SystemIn, name="name")
    level = level_field(LEVELS_SHORT)
    confidence_threshold = numeric_field("Confidence threshold", "confidence_threshold", step="0.01")
    audit_sample_rate = numeric_field("Audit share", "audit_sample_rate", step="0.01")
    override_window_s = numeric_field("Override window (s)", "override_window_s", integer=True)
    review_sla_s = numeric_field("Review SLA (s)", "review_sla_s", integer=True)
    review_expiry_s = numeric_field("Fallback after (s, 0 = wait for a person)", "review_expiry_s", integer=True)
    fallback = JSONTextField(label="Fallback output (JSON)", required=False)
    fallback_rule = JSONTextField(
        label="When the model cannot answer (JSON)", required=False, rows=2,
        help_text='{} for the fallback output above; {"kind": "withhold"} to hold every such decision for a '
                  'person; or a rule on one field: {"kind": "rule", "by": "context.activity", '
                  '"outputs": {"sleep": {"items": ["calm-1"]}}, "default": {"items": ["top-1"]}}',
    )
    drift = JSONTextField(
        label="Drift thresholds (JSON)", required=False, rows=2,
        help_text='e.g. {"numeric": {"method": "wasserstein", "threshold": 0.1}, '
                  '"features": {"tempo": {"threshold": 0.3}}}; {} for the defaults',
    )
    breaker = JSONTextField(
        label="Circuit-breaker thresholds (JSON)", required=False, rows=2,
        help_text='e.g. {"min_accuracy": 0.9, "max_drifted_share": 0.3, "canary_share": 0.05}; {} for the defaults',
    )
    guardrails = JSONTextField(
        label="Guardrails for level 3 (JSON)", required=False, rows=2,
        help_text='e.g. {"field": "amount", "min": 0, "max": 5000, "rate_per_minute": 600} or '
                  '{"field": "decision", "allowed": ["approve", "refer"]}; {} for none',
    )
    loop_mitigation = JSONTextField(
        label="Feedback-loop mitigation (JSON)", required=False, rows=2,
        help_text='{"mode": "auto"} mitigates by itself when the feedback-loop alert fires, "click" after an '
                  'admin\'s click (the default), "off" never; "exploration_share": 0.15, "model_weight": 0.5',
    )
    routing = JSONTextField(
        label="Hosted models: routing (JSON)", required=False, rows=2,
        help_text='{"mode": "ensemble"} every hosted model votes (the default); {"mode": "bandit", "floor": 0.01} '
                  'Thompson sampling picks one per decision; "wait_ms": 1000 how long a request waits for them',
    )
    callback_url = text_field("Webhook URL (callback_url)", model=SystemIn, name="callback_url",
                              placeholder="https://client.example/oversight-hooks")
    double_review_rate = numeric_field("Second-opinion share", "double_review_rate", step="0.01")
    reason = text_field("Reason", model=SystemPatch, name="reason", placeholder="why this system is added")

    checked: BaseModel | None = None
    # A policy edit starts from the system's values: a name cleared to blank keeps the name.
    blank_is_unchanged: ClassVar[bool] = False

    def given(self) -> dict[str, Any]:
        """What the person filled in: blank fields are left out (the schema's default, or unchanged)."""
        data = self.cleaned_data
        out = {}
        for name in self.policy_fields:
            value = data.get(name, MISSING)
            if value is MISSING or (value is None and not isinstance(self.fields[name], JSONTextField)):
                continue  # blank (JSON null is a value: the schema says whether it may be one)
            if name == "name" and value == "" and self.blank_is_unchanged:
                continue
            out[name] = value
        return out

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        try:
            self.checked = self.schema.model_validate(self.schema_input())
        except ValidationError as exc:
            add_schema_errors(self, exc, self.schema)
        return cleaned

    def schema_input(self) -> dict[str, Any]:
        return self.given()


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


class SystemCreateForm(PolicyForm):
    """A new system: its slug and first policy (SystemIn, as ``POST /api/v1/systems``)."""

    schema = SystemIn
    policy_fields = ("slug", *PolicyForm.policy_fields)

    slug = text_field(
        "Slug", model=SystemIn, name="slug", required=True,
        pattern=SLUG_HTML_PATTERN, title=f"Slug: {SLUG_RULE}", placeholder="nightly-recs",
        autocapitalize="none", spellcheck="false",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # A new system starts from the API's defaults.
        initial = {
            name: _plain(f.get_default(call_default_factory=True))
            for name, f in SystemIn.model_fields.items() if not f.is_required()
        }
        kwargs["initial"] = {**initial, **(kwargs.get("initial") or {})}
        super().__init__(*args, **kwargs)

    def policy(self) -> dict[str, Any]:
        assert self.checked is not None
        return self.checked.model_dump()


class PolicyEditForm(PolicyForm):
    """A change to a system's policy (SystemPatch, as ``PATCH /api/v1/systems/{slug}``).

    A blank field keeps its value; every field starts as the system has it now.
    """

    schema = SystemPatch
    blank_is_unchanged = True

    level = level_field(LEVELS_LONG)
    reason = text_field("Reason for the change", model=SystemPatch, name="reason", placeholder="goes to the audit log")

    def schema_input(self) -> dict[str, Any]:
        return {**self.given(), "reason": self.cleaned_data.get("reason", "")}

    def changes(self) -> dict[str, Any]:
        assert self.checked is not None
        return self.checked.model_dump(exclude_unset=True, exclude={"reason"})



class ReadinessForm(forms.Form):
    """A readiness assessment (ReadinessIn, as ``PUT /api/v1/systems/{slug}/readiness``): one radio
    group per question of ``oversight.readiness.QUESTIONS``, and a note."""

    note = text_field("Note", model=ReadinessIn, name="note", placeholder="goes to the audit log")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("prefix", "readiness")
        super().__init__(*args, **kwargs)
        for q in readiness.QUESTIONS:
            self.fields[q.key] = forms.ChoiceField(
                label=q.text, choices=[(c.key, c.label) for c in q.choices], widget=forms.RadioSelect,
                error_messages={"required": f"Answer “{q.text}”",
                                "invalid_choice": f"Pick one of the answers to “{q.text}”"},
            )
        self.order_fields([*(q.key for q in readiness.QUESTIONS), "note"])

    def questions(self) -> list[forms.BoundField]:
        return [self[q.key] for q in readiness.QUESTIONS]

    def answers(self) -> dict[str, str]:
        return {q.key: self.cleaned_data[q.key] for q in readiness.QUESTIONS}

    def add_action_error(self, exc: ActionError) -> None:
        """The rule names ``answers.<question>``; here that is the question's own field."""
        name = (exc.field or "").removeprefix("answers.")
        self.add_error(name if name in self.fields else None, sentence(exc.message))

# --- the demo ------------------------------------------------------------------------------


class DemoScenarioForm(forms.Form):
    """Which scenario the demo's simulated listeners follow (oversight.demo.SCENARIOS)."""

    scenario = forms.ChoiceField(choices=list(demo.SCENARIOS.items()),
                                 error_messages={"invalid_choice": "Pick one of the demo's scenarios."})


# --- kill switches ------------------------------------------------------------------------


class KillSwitchForm(forms.Form):
    """Engage or release a kill switch (KillSwitchIn, as ``POST /api/v1/killswitches``)."""

    scope = forms.ChoiceField(
        label="Scope", choices=KillSwitch.Scope.choices,
        error_messages={
            "required": "Say which kill switch: global, system or model.",
            "invalid_choice": "Unknown kill-switch scope '%(value)s': choose global, system or model.",
        },
    )
    system = text_field("System", model=KillSwitchIn, name="system")
    model = text_field("Model", model=KillSwitchIn, name="model")
    engaged = forms.BooleanField(label="Engaged", required=False)  # "true" / "false", as the page sends it
    reason = forms.CharField(label="Reason", required=False, strip=False, widget=forms.Textarea)
    next = forms.CharField(required=False, widget=forms.HiddenInput)

    checked: KillSwitchIn | None = None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        given = {k: cleaned[k] for k in ("scope", "system", "model", "engaged", "reason") if k in cleaned}
        given["system"] = given.get("system") or None
        try:
            self.checked = KillSwitchIn.model_validate(given)
        except ValidationError as exc:
            add_schema_errors(self, exc, KillSwitchIn)
        return cleaned

    def back(self) -> str:
        """Where to go afterwards: a path on this site, never elsewhere."""
        target = str(self.data.get("next") or "")
        if target.startswith("/") and url_has_allowed_host_and_scheme(target, allowed_hosts=set()):
            return target
        return "/"


# --- credentials --------------------------------------------------------------------------


def _name_field(label: str, model: Any, placeholder: str) -> forms.CharField:
    return text_field(label, max_length=model._meta.get_field("name").max_length, placeholder=placeholder)


class ApiKeyForm(forms.Form):
    """A new API key for one system."""

    name = _name_field("Key name", ApiKey, "e.g. prod-recommender")


class TokenForm(forms.Form):
    """A new personal token."""

    name = _name_field("Token name", PersonalToken, "e.g. nightly export script")


# --- a secret shown once ------------------------------------------------------------------

SECRET_SESSION_KEY = "oversight.new_secret"  # noqa: S105 (the session key's name, not a secret)


def keep_secret_once(session: SessionBase, kind: str, where: str, secret: str) -> None:
    """Hold a new key's or token's secret for the page the browser is sent to next (PRG)."""
    session[SECRET_SESSION_KEY] = {"kind": kind, "where": where, "secret": secret}


def pop_secret(session: SessionBase, kind: str, where: str) -> str | None:
    """The secret held for this page, taken out of the session: a reload shows nothing."""
    held = session.get(SECRET_SESSION_KEY)
    if not isinstance(held, dict) or held.get("kind") != kind or held.get("where") != where:
        return None
    del session[SECRET_SESSION_KEY]
    return str(held["secret"])


# --- the audit log's filters --------------------------------------------------------------

LOCAL_INPUT_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"]


def _local_time_field(label: str) -> forms.DateTimeField:
    return forms.DateTimeField(
        label=label, required=False, input_formats=LOCAL_INPUT_FORMATS,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        error_messages={"invalid": "Give a date and time, e.g. 2026-12-03 14:30."},
    )


class AuditFilterForm(forms.Form):
    """The audit page's filters (GET). Times are read in the server's TIME_ZONE."""

    actor = forms.CharField(label="Who", required=False, max_length=200,
                            widget=forms.TextInput(attrs={"placeholder": "username, or “system”"}))
    action = forms.ChoiceField(label="What", required=False)
    system = forms.ChoiceField(label="System", required=False)
    since = _local_time_field("From")
    until = _local_time_field("To")

    def __init__(self, *args: Any, actions: list[str], systems: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, values, anything in (("action", actions, "any action"), ("system", systems, "any system")):
            field = self.fields[name]
            assert isinstance(field, forms.ChoiceField)
            field.choices = [("", anything), *((v, v) for v in values)]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            self.add_error("until", "“To” is before “From”: nothing could match.")
        return cleaned

    def filters(self) -> dict[str, Any]:
        """The valid filters, for ``oversight.audit.events``; a field with an error filters nothing."""
        if not self.is_bound:
            return {}
        self.is_valid()
        return {k: v for k, v in self.cleaned_data.items() if v not in (None, "")}
