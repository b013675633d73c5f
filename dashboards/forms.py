"""What the monitoring pages accept: a reference file, or a past window of decisions as the reference."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from dashboards import references
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
