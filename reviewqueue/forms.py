"""The review item's form: claim, give back, or resolve (approve, reject, modify) with a note.

The note's length and what "resolve" accepts come from the API's ``ResolveIn``; whether the
item may be resolved (claimed by you, not stopped by a kill switch…) is the actions' to say.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django import forms
from pydantic import ValidationError

from oversight.formfields import MISSING, JSONTextField, add_schema_errors, limits, sentence
from oversight.schemas import OverrideIn
from reviewqueue.api import ResolveIn
from reviewqueue.models import ReviewItem

RESOLVE = tuple(ReviewItem.Action.values)  # approve, reject, modify
OPS = [*ReviewItem.Action.choices, ("claim", "claim"), ("release", "give back")]


class ReviewForm(forms.Form):
    """What an operator sends from a review item's page.

    Built with ``auto_id="%s"`` by the views, so the inputs keep the ids the page's script and
    tests know (``note``, ``output``, ``then``). The page adds the list's filters as hidden fields.
    """

    op = forms.ChoiceField(
        choices=OPS,
        error_messages={
            "required": "Choose what to do: approve, reject or modify.",
            "invalid_choice": "Unknown action '%(value)s': approve, reject or modify.",
        },
    )
    note = forms.CharField(
        label="Note", required=False,
        widget=forms.Textarea(attrs={
            "rows": 2, "placeholder": "why (goes to the audit log)",
            "maxlength": limits(ResolveIn, "note").get("maxLength"),
        }),
        error_messages={"null_characters_not_allowed": sentence("Note cannot hold a NUL character")},
    )
    output = JSONTextField(label="Output to release (JSON)", required=False, rows=3)
    then = forms.CharField(required=False, widget=forms.HiddenInput, initial="next")
    # The list's filters ride along as hidden fields of their own (reviewqueue.triage.PARAMS, read by
    # the views with triage.Filters.from_params): "next" stays within them.

    checked: ResolveIn | None = None
    resolving: ClassVar[tuple[str, ...]] = RESOLVE

    @property
    def output_given(self) -> bool:
        return self.cleaned_data.get("output", MISSING) is not MISSING

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        op = cleaned.get("op")
        if op != ReviewItem.Action.MODIFY:
            # Only a modification releases the output box's text: approving ignores what it holds.
            self.errors.pop("output", None)
            cleaned["output"] = MISSING
        if op in self.resolving:
            body: dict[str, Any] = {"action": op, "note": cleaned.get("note", "")}
            if cleaned.get("output", MISSING) is not MISSING:
                body["output"] = cleaned["output"]
            try:
                self.checked = ResolveIn.model_validate(body)
            except ValidationError as exc:
                add_schema_errors(self, exc, ResolveIn)
        return cleaned

    def wants_next(self) -> bool:
        return self.cleaned_data.get("then") == "next"


class OverrideForm(forms.Form):
    """Override a released decision: the output to give instead (or the fallback), and why."""

    output = JSONTextField(label="Output to give instead (JSON)", required=False, rows=4)
    fallback = forms.BooleanField(label="Give the system's fallback output instead", required=False)
    note = forms.CharField(
        label="Note", required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "why (goes to the audit log and the client's webhook)",
                                     "maxlength": limits(OverrideIn, "note").get("maxLength")}),
        error_messages={"null_characters_not_allowed": sentence("Note cannot hold a NUL character")},
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("fallback"):
            self.errors.pop("output", None)
            cleaned["output"] = MISSING
        elif "output" in cleaned and cleaned["output"] is MISSING:
            self.add_error("output", sentence("Type the output to give instead, or tick the fallback box"))
        body: dict[str, Any] = {"note": cleaned.get("note", "")}
        if cleaned.get("output", MISSING) is not MISSING:
            body["output"] = cleaned["output"]
        try:
            OverrideIn.model_validate(body)
        except ValidationError as exc:
            add_schema_errors(self, exc, OverrideIn)
        return cleaned
