"""The parts the pages' forms are made of: fields that parse what a person typed, and the
wording that turns a schema's or an action's error into a sentence on its field.

``oversight/forms.py`` and ``reviewqueue/forms.py`` build their forms from these.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

from django import forms
from django.utils.text import capfirst
from pydantic import BaseModel, ValidationError

from oversight import jsonutil
from oversight.errors import ActionError
from oversight.jsonapi import MAX_JSON_DEPTH, json_depth_over
from oversight.schemas import SystemIn

# The HTML ``pattern`` of the slug input: SystemIn's pattern without its anchors (browsers anchor
# it), written so it compiles with the ``v`` flag Chromium uses for ``pattern``: there a literal
# "-" in a character class must be escaped.
SLUG_HTML_PATTERN = r"[a-z0-9][a-z0-9_\-]*"
SLUG_RULE = "use lowercase letters, digits, - and _, starting with a letter or digit"
PATTERN_RULES = {"slug": SLUG_RULE}  # a schema pattern in words, by field

# --- wording ------------------------------------------------------------------------------


class _Missing:
    """A field left blank (as opposed to JSON ``null``, which a person may mean)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def _without_unit(label: str) -> str:
    return re.sub(r"\s*\([^)]*\)$", "", label).strip()


def noun(field: forms.Field) -> str:
    """How a message names a field: its label without a trailing unit, e.g. "Review SLA"."""
    return _without_unit(str(field.label or "")) or "This field"


def sentence(text: str) -> str:
    """Capital first letter, a full stop at the end."""
    text = capfirst(text.strip()) or ""
    return text if text.endswith((".", "!", "?")) else f"{text}."


@cache
def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def limits(model: type[BaseModel], name: str) -> dict[str, Any]:
    """The JSON-schema constraints (minimum, maximum, maxLength, pattern…) of one field of ``model``."""
    prop = dict(_json_schema(model).get("properties", {}).get(name, {}))
    for alternative in prop.pop("anyOf", []):  # Optional[...] in a patch: the non-null branch
        if alternative.get("type") != "null":
            prop.update(alternative)
    # Pydantic writes bounds given inside an Annotated type as "ge"/"le" rather than minimum/maximum.
    for short, standard in (("ge", "minimum"), ("le", "maximum")):
        if short in prop:
            prop.setdefault(standard, prop.pop(short))
    return prop


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def describe(field: forms.Field, name: str, error: Any, model: type[BaseModel]) -> str:
    """A pydantic error about ``name`` as a sentence that names the field."""
    what = noun(field)
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    unit = " seconds" if name.endswith("_s") else ""
    bounds = limits(model, name)
    if kind in ("less_than_equal", "greater_than_equal", "less_than", "greater_than", "finite_number"):
        low, high = bounds.get("minimum", ctx.get("ge")), bounds.get("maximum", ctx.get("le"))
        if low is not None and high is not None:
            return sentence(f"{what} must be between {_number(low)} and {_number(high)}{unit}")
        if low is not None:
            return sentence(f"{what} must be at least {_number(low)}{unit}")
        if high is not None:
            return sentence(f"{what} must be at most {_number(high)}{unit}")
        return sentence(f"{what} must be a finite number")
    if kind == "string_too_long":
        return sentence(f"{what} must be at most {ctx.get('max_length')} characters long")
    if kind == "string_too_short":
        return sentence(f"{what} must not be empty")
    if kind == "string_pattern_mismatch":
        rule = PATTERN_RULES.get(name) or f"match the pattern {ctx.get('pattern')}"
        return sentence(f"{what} must {rule}")
    if kind == "literal_error":
        return sentence(f"{what} must be {ctx.get('expected')}")
    if kind == "missing":
        return sentence(f"{what} is required")
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return sentence(f"{what} must be a whole number{unit}")
    if kind in ("float_type", "float_parsing"):
        return sentence(f"{what} must be a number")
    message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
    inside = error.get("loc", ())[1:]
    where = f" (at {'.'.join(str(p) for p in inside)})" if inside else ""
    return sentence(f"{what} {message}{where}")


def add_schema_errors(form: forms.Form, exc: ValidationError, model: type[BaseModel]) -> None:
    """Put each of ``exc``'s errors on its form field, in words; one error per field at most."""
    for error in exc.errors():
        loc = error.get("loc", ())
        name = str(loc[0]) if loc else ""
        if name in form.fields:
            if name in form.errors:  # said already (it did not even parse)
                continue
            form.add_error(name, describe(form.fields[name], name, error, model))
        else:
            form.add_error(None, sentence(str(error.get("msg", "the form is not valid"))))


def add_action_error(form: forms.Form, exc: ActionError) -> None:
    """An action refused: its message goes next to the field it names (or above the form)."""
    field = exc.field if exc.field in form.fields else None
    form.add_error(field, sentence(exc.message))


def error_sentences(form: forms.Form) -> list[str]:
    """Every error of ``form``, for a flash message when there is no form on the page to show them."""
    return [str(e) for errors in form.errors.values() for e in errors]


# --- fields -------------------------------------------------------------------------------


class _Typed(str):
    """Text exactly as a person typed it (shown back unchanged in a re-rendered form)."""


class JSONTextField(forms.Field):
    """JSON typed into a text box. Blank gives ``MISSING``; ``null`` gives ``None``.

    Refuses what PostgreSQL's jsonb cannot store (NaN, Infinity) and says where the text is broken.
    """

    MAX_DEPTH = MAX_JSON_DEPTH  # as the API's bodies

    def __init__(self, *, rows: int | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": rows}) if rows else forms.TextInput)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return MISSING
        if not isinstance(value, str):
            return value
        what = noun(self)
        try:
            parsed = jsonutil.strict_loads(value)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                sentence(f"{what} is not valid JSON: {exc.msg[:1].lower()}{exc.msg[1:]} "
                         f"at line {exc.lineno}, column {exc.colno}"),
                code="invalid",
            ) from None
        except ValueError as exc:
            raise forms.ValidationError(sentence(f"{what} is not valid JSON: {exc}"), code="invalid") from None
        except RecursionError:
            parsed = None
            too_deep = True
        else:
            too_deep = json_depth_over(parsed, self.MAX_DEPTH)
        if too_deep:
            raise forms.ValidationError(
                sentence(f"{what} is nested too deeply (more than {self.MAX_DEPTH} levels)"), code="invalid"
            )
        return parsed

    def validate(self, value: Any) -> None:
        if value is MISSING and self.required:
            raise forms.ValidationError(self.error_messages["required"], code="required")

    def run_validators(self, value: Any) -> None:
        return None

    def bound_data(self, data: Any, initial: Any) -> Any:
        return _Typed(data) if isinstance(data, str) else data

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, _Typed) or value is MISSING:
            return "" if value is MISSING else str(value)
        return json.dumps(value, ensure_ascii=False)


def text_field(label: str, *, model: type[BaseModel] | None = None, name: str = "", required: bool = False,
          max_length: int | None = None, **attrs: Any) -> forms.CharField:
    """A text field; its length limit comes from the schema (or the model column) when there is one."""
    if max_length is None and model is not None:
        max_length = limits(model, name).get("maxLength")
    return forms.CharField(
        label=label, required=required, max_length=max_length, widget=forms.TextInput(attrs=attrs),
        error_messages={
            "required": sentence(f"{label} is required"),
            "max_length": sentence(f"{label} must be at most %(limit_value)d characters long (it has %(show_value)d)"),
            "null_characters_not_allowed": sentence(f"{label} cannot hold a NUL character"),
        },
    )


def numeric_field(label: str, name: str, *, integer: bool = False, step: str | None = None) -> forms.Field:
    """A number box whose min/max come from SystemIn; the schema checks them on the server."""
    bounds = limits(SystemIn, name)
    attrs: dict[str, Any] = {}
    if "minimum" in bounds:
        attrs["min"] = _number(bounds["minimum"])
    if "maximum" in bounds:
        attrs["max"] = _number(bounds["maximum"])
    if step:
        attrs["step"] = step
    what = _without_unit(label)
    if integer:
        return forms.IntegerField(
            label=label, required=False, widget=forms.NumberInput(attrs=attrs),
            error_messages={"invalid": sentence(f"{what} must be a whole number of seconds")},
        )
    return forms.FloatField(
        label=label, required=False, widget=forms.NumberInput(attrs=attrs),
        error_messages={"invalid": sentence(f"{what} must be a number")},
    )


LEVELS_SHORT = [(1, "1 · critical"), (2, "2 · supervised"), (3, "3 · autonomous")]
LEVELS_LONG = [
    (1, "1 · critical: a person approves every decision"),
    (2, "2 · supervised: low confidence waits for a person"),
    (3, "3 · autonomous: released, audited after the fact"),
]


def level_field(choices: list[tuple[int, str]]) -> forms.TypedChoiceField:
    return forms.TypedChoiceField(
        label="Level", coerce=int, choices=choices,
        error_messages={"invalid_choice": "Level must be 1, 2 or 3.", "required": "Level is required."},
    )
