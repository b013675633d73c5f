"""The editor page's forms: a pick, a block, and the preview's segment and context.

Times are typed in the browser's local time: ``static/js/editorial.js`` puts the browser's time zone
in each form's ``tz`` field (without JavaScript it stays the server's TIME_ZONE), and the form reads
the times in that zone. Checking what the item, segment and context may be is left to
``oversight.editorial``, whose refusals land on the field they name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django import forms
from django.conf import settings

from oversight import editorial
from oversight.errors import ActionError
from oversight.formfields import add_action_error

LOCAL_INPUT_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"]
CONTEXT_HELP = ("key=value pairs separated by commas, e.g. activity=sleep, hour=23. Values are compared as text: "
                "hour=23 matches the number 23 and the text \"23\". Empty: every decision.")
SEGMENT_HELP = "Matches the decision's context \"segment\". Empty: any segment."


def zone(name: str | None) -> ZoneInfo:
    """The named IANA time zone, else the server's."""
    try:
        return ZoneInfo(name) if name else ZoneInfo(settings.TIME_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(settings.TIME_ZONE)


class LocalDateTimeField(forms.DateTimeField):
    """A date and time as typed, without a zone yet (the form adds its ``tz``)."""

    def __init__(self, label: str, help_text: str) -> None:
        super().__init__(
            label=label, required=False, input_formats=LOCAL_INPUT_FORMATS, help_text=help_text,
            widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
            error_messages={"invalid": "Give a date and time, e.g. 2026-12-03 14:30."},
        )

    def to_python(self, value: Any) -> datetime | None:
        if value in self.empty_values:
            return None
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        for fmt in LOCAL_INPUT_FORMATS:
            try:
                return datetime.strptime(text, fmt)  # noqa: DTZ007 (the form's tz is added in clean)
            except ValueError:
                continue
        raise forms.ValidationError(self.error_messages["invalid"], code="invalid")


class CurationForm(forms.Form):
    """A block (and, with a position, a pick): what the editor typed, checked by ``oversight.editorial``."""

    item = forms.CharField(label="Item", strip=False, max_length=editorial.ITEM_MAX,
                           widget=forms.TextInput(attrs={"placeholder": "e.g. t42", "autocomplete": "off"}),
                           error_messages={"required": "Say which item, e.g. t42."})
    segment = forms.CharField(label="Segment", required=False, strip=False, max_length=editorial.SEGMENT_MAX,
                              help_text=SEGMENT_HELP)
    context = forms.CharField(label="Context", required=False, max_length=2000, help_text=CONTEXT_HELP,
                              widget=forms.TextInput(attrs={"placeholder": "activity=sleep"}))
    starts_at = LocalDateTimeField("Starts", "Empty: now.")
    ends_at = LocalDateTimeField("Ends", "Empty: no end.")
    tz = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput(attrs={"data-tz": ""}))
    note = forms.CharField(label="Note", required=False, max_length=editorial.NOTE_MAX,
                           widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {"tz": settings.TIME_ZONE})
        super().__init__(*args, **kwargs)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        where = zone(cleaned.get("tz"))
        cleaned["tz"] = where.key
        for name in ("starts_at", "ends_at"):
            value = cleaned.get(name)
            if isinstance(value, datetime) and value.tzinfo is None:
                cleaned[name] = value.replace(tzinfo=where)
        if "context" in cleaned:
            try:
                cleaned["context"] = editorial.parse_pairs(cleaned["context"] or "")
            except ActionError as exc:
                add_action_error(self, exc)
        return cleaned

    def fields_for_action(self) -> dict[str, Any]:
        c = self.cleaned_data
        return {"item": c["item"], "segment": c.get("segment") or "", "context": c.get("context") or {},
                "starts_at": c.get("starts_at"), "ends_at": c.get("ends_at"), "note": c.get("note") or ""}

    def refused(self, exc: ActionError) -> None:
        """The action's refusal, next to the field it names."""
        add_action_error(self, exc)


class PickForm(CurationForm):
    position = forms.IntegerField(label="Position", min_value=1, max_value=editorial.POSITION_MAX, initial=1,
                                  help_text="1 is first.",
                                  error_messages={"min_value": "Position 1 is the first; give 1 or more.",
                                                  "max_value": f"Give a position up to {editorial.POSITION_MAX}.",
                                                  "invalid": "Give a whole number, 1 for first."})

    field_order = ["item", "position", "segment", "context", "starts_at", "ends_at", "tz", "note"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {"tz": settings.TIME_ZONE, "position": 1})
        super().__init__(*args, **kwargs)


class PreviewForm(forms.Form):
    """Which decisions to preview (GET)."""

    segment = forms.CharField(label="Segment", required=False, max_length=editorial.SEGMENT_MAX)
    context = forms.CharField(label="Context", required=False, max_length=2000, help_text=CONTEXT_HELP,
                              widget=forms.TextInput(attrs={"placeholder": "activity=sleep"}))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if "context" in cleaned:
            try:
                cleaned["context"] = editorial.parse_pairs(cleaned["context"] or "")
            except ActionError as exc:
                add_action_error(self, exc)
        return cleaned

    def decision_context(self) -> dict[str, Any]:
        ctx: dict[str, Any] = dict(self.cleaned_data.get("context") or {})
        if self.cleaned_data.get("segment"):
            ctx["segment"] = self.cleaned_data["segment"]
        return ctx
