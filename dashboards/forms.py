"""What the monitoring pages accept: a reference file, or a past window of decisions as the reference."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from dashboards import references
from oversight import drills
from oversight.formfields import sentence

#: A file's name ending → its format.
EXTENSIONS: dict[str, references.Format] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class ReferenceUploadForm(forms.Form):
    file = forms.FileField(
        label="Reference file (CSV with a header row, or JSON lines)",
        error_messages={"required": "Choose a file to upload.", "empty": "The file is empty: nothing to summarise."},
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.jsonl,.ndjson,text/csv,application/x-ndjson"}),
    )
    categorical = forms.CharField(label="Columns to treat as categories (comma-separated, optional)", required=False,
                                  max_length=2000)
    note = forms.CharField(label="Note (optional)", required=False, max_length=200)

    def clean_file(self) -> Any:
        f = self.cleaned_data["file"]
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and f.size > limit:
            raise forms.ValidationError(sentence(f"The file is {f.size:,} bytes, over the limit of {limit:,}"))
        if self.format_of(f.name) is None:
            raise forms.ValidationError(sentence(
                f"{f.name!r} is neither CSV nor JSON lines: its name must end in .csv, .jsonl or .ndjson"))
        return f

    @staticmethod
    def format_of(name: str) -> references.Format | None:
        lower = name.lower()
        return next((fmt for ext, fmt in EXTENSIONS.items() if lower.endswith(ext)), None)

    def columns(self) -> list[str]:
        return [n.strip() for n in self.cleaned_data.get("categorical", "").split(",") if n.strip()]


class FromDecisionsForm(forms.Form):
    since = forms.DateTimeField(label="From (UTC)", widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(label="Until (UTC)", widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    note = forms.CharField(label="Note (optional)", required=False, max_length=200)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and until <= since:
            self.add_error("until", "Until must be after From.")
        return cleaned


class BreakerForm(forms.Form):
    """An admin opens or closes a breaker by hand (``oversight.breaker_actions.set_by_hand``)."""

    state = forms.ChoiceField(label="Set the breaker", choices=[("open", "Open: every decision gets the fallback"),
                                                                 ("closed", "Closed: decisions go through the gate")])
    model = forms.CharField(label="Model (optional: empty for the whole system)", required=False, max_length=200)
    reason = forms.CharField(label="Reason", max_length=2000,
                             error_messages={"required": "Say why: a reason is required to move a breaker by hand."})


class DrillForm(forms.Form):
    """An admin starts a chaos drill (``oversight.drills.start`` checks the same rules)."""

    kind = forms.ChoiceField(label="What fails", choices=list(drills.KINDS.items()))
    share = forms.FloatField(label="Share of decisions affected (above 0, at most 1)", initial=1.0, min_value=0.01,
                             max_value=1.0, widget=forms.NumberInput(attrs={"step": "0.01"}))
    minutes = forms.IntegerField(label=f"Minutes ({drills.MIN_MINUTES}–{drills.MAX_MINUTES})", initial=5,
                                 min_value=drills.MIN_MINUTES, max_value=drills.MAX_MINUTES)
    reason = forms.CharField(label="Reason", max_length=2000,
                             error_messages={"required": "Say why: a reason is required to start a drill."})
    confirm = forms.BooleanField(
        label="I understand the clients of this system get the fallback while it runs",
        widget=forms.CheckboxInput(attrs={"style": "width:auto"}),  # the stylesheet widens every input
        error_messages={"required": "Tick the box: while the drill runs, the clients of this system get the fallback."})


class MitigationForm(forms.Form):
    """An admin starts or ends the feedback-loop mitigation (``oversight.mitigation``)."""

    active = forms.ChoiceField(label="Mitigation", choices=[("start", "Start: serve a share from a non-model source"),
                                                            ("end", "End: back to the model alone")])
    reason = forms.CharField(label="Reason", max_length=2000,
                             error_messages={"required": "Say why: a reason is required to start or end a mitigation."})
