"""A system's drift reference (issue 8): an uploaded sample, or a past window of its decisions.

Plain functions, no HTTP: ``dashboards/api.py`` and any page or command call them alike.

**Uploads** (:func:`store_upload`) are CSV (the first row names the columns) or JSON lines (one
object per line). The whole upload is checked before anything is stored; the first problem found
is raised as ``ActionError("invalid", message)`` naming the problem and its line (1-based, as an
editor counts them), and nothing is stored:

* not UTF-8 (a leading byte-order mark is allowed), a NUL character, an empty file or one with
  no data rows, more than :data:`REFERENCE_MAX_BYTES` bytes, more than :data:`MAX_COLUMNS`
  columns, a column name that is empty, repeated or longer than :data:`MAX_NAME_LENGTH`;
* CSV: a row with more or fewer fields than the header, broken quoting. Blank lines are skipped;
  values are trimmed of surrounding spaces; an empty field is a missing value;
* JSON lines: a line that is not JSON or not an object, a key that the first line does not have
  (the first object names the columns; a later line may leave a column out or give ``null``:
  a missing value), a nested value (object or array: flatten it first), NaN/Infinity or a
  number too large for a float, a ``\\u0000`` or lone-surrogate escape. Blank lines are skipped;
* a word in a numeric column (below).

The request body limit comes first: Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``
(``OVERSIGHT_MAX_BODY_BYTES``, 4 MB by default) refuses a larger body with ``RequestDataTooBig``,
which the API answers with a JSON 413 before this module sees it. :data:`REFERENCE_MAX_BYTES`
is this module's own cap for callers without that limit (and for a raised body limit).

**Numeric or categorical.** A column's kind is decided by its first non-missing value: a number
makes it numeric, anything else categorical. In a numeric column every later non-missing value
must be a finite number too, or the upload is refused naming that line and column (so a typo in
a numeric column is caught instead of silently turning it into categories); a categorical column
takes numbers as categories (``1`` and ``1.0`` are the category ``"1"``, as
``dashboards.drift.category_key`` names them). In CSV a number is an optionally signed decimal
with an optional exponent (``12``, ``-0.5``, ``1e-3``; not ``nan``, ``inf``, ``1_000`` or hex);
in JSON lines it is a JSON number (``true``/``false`` and strings such as ``"12"`` are
categories). ``categorical=[names]`` forces columns to be categorical (integer-coded
categories, zip codes). A column with no value at all is categorical, all missing.

**A past window** (:func:`reference_from_decisions`): the system's decisions with ``since`` ≤
``occurred_at`` < ``until``; each feature in ``features`` is a column (a decision without it
counts as missing), listed by name (JSONB keeps no key order), plus ``prediction.confidence``
last. Rows are read in chunks of
:data:`CHUNK_SIZE` through a server-side cursor and folded into the columns at once: numeric
columns keep 8 bytes per value (``array('d')``), categorical ones a count per category, so
memory grows with the numeric columns, not with the decisions' JSON. The same kind rule applies,
except that stored decisions cannot be refused: a numeric column that later meets a word becomes
categorical (its numbers turned into categories), and a nested value is the category of its
compact JSON text.

Summaries are ``dashboards.drift`` references (``to_dict()``); the row and audit event
(``reference.upload`` / ``reference.window``) are written in one transaction.

Over ~400 lines on purpose: the CSV and JSON-lines readers share one set of rules and error
messages (what counts as missing, when a column is numeric, which line is named), kept in one place.

Over ~400 lines on purpose: the upload's checks are most of it, each naming the line a person
must fix; they and the storage they guard belong together.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
from django.db import transaction

from dashboards import drift
from dashboards.models import Reference
from oversight import audit, jsonutil
from oversight.errors import ActionError
from oversight.models import AISystem, Decision

Format = Literal["csv", "jsonl"]

#: This module's own cap on an upload (the request body limit, 4 MB by default, usually comes first).
REFERENCE_MAX_BYTES = 50 * 1024 * 1024
#: At most this many columns per reference.
MAX_COLUMNS = 1000
#: Column names are stored as drift results' ``feature`` (200 characters).
MAX_NAME_LENGTH = 200
#: Decisions read per round trip by :func:`reference_from_decisions`.
CHUNK_SIZE = 5000
#: The column holding each decision's ``prediction.confidence``.
CONFIDENCE_COLUMN = "prediction.confidence"
#: Categories shown per column in :func:`describe`.
TOP_CATEGORIES = 10

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_SUSPECT_ESCAPE = re.compile(rb"\\u0000|\\u[dD][89a-fA-F]")


def _invalid(message: str, field_name: str | None = None) -> ActionError:
    return ActionError("invalid", message, field_name)


# --------------------------------------------------------------------------------------------
# Columns, folded as rows arrive


@dataclass
class Column:
    """One column being read: its kind (None until its first non-missing value) and its values
    (finite floats for a numeric column, category counts for a categorical one)."""

    name: str
    kind: drift.Kind | None = None
    numbers: array[float] = field(default_factory=lambda: array("d"))
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def present(self) -> int:
        return len(self.numbers) if self.kind == "numeric" else sum(self.counts.values())

    def add_category(self, key: str) -> None:
        if self.kind is None:
            self.kind = "categorical"
        self.counts[key] += 1

    def add_number(self, value: float) -> None:
        if self.kind is None:
            self.kind = "numeric"
        if self.kind == "numeric":
            self.numbers.append(value)
        else:
            self.counts[_number_key(value)] += 1

    def demote(self) -> None:
        """Numeric → categorical, the numbers so far becoming categories."""
        if self.kind == "numeric":
            self.counts.update(_number_key(v) for v in self.numbers)
            self.numbers = array("d")
        self.kind = "categorical"

    def summary(self, rows: int) -> drift.Reference:
        missing = rows - self.present
        if self.kind == "numeric":
            ref = drift.NumericReference.from_array(np.frombuffer(self.numbers, dtype=np.float64))
            ref.missing = missing
            return ref
        return drift.CategoricalReference(dict(sorted(self.counts.items())), missing)


def _number_key(value: float) -> str:
    key = drift.category_key(value)
    assert key is not None
    return key


@dataclass
class Table:
    """What an upload or a window became: row count, columns in order, and their summaries."""

    rows: int
    columns: list[str]
    summaries: dict[str, dict[str, Any]]


def _summarise(rows: int, columns: Sequence[Column]) -> Table:
    return Table(rows, [c.name for c in columns], {c.name: c.summary(rows).to_dict() for c in columns})


def _check_names(names: Sequence[str], where: str) -> None:
    if len(names) > MAX_COLUMNS:
        raise _invalid(f"{where} has {len(names)} columns; at most {MAX_COLUMNS} are allowed")
    seen: set[str] = set()
    for i, name in enumerate(names, 1):
        if not name.strip():
            raise _invalid(f"{where}: column {i} has no name")
        if len(name) > MAX_NAME_LENGTH:
            raise _invalid(f"{where}: column {i}'s name is longer than {MAX_NAME_LENGTH} characters")
        if name in seen:
            raise _invalid(f"{where}: column {name!r} appears twice")
        seen.add(name)


def _decode(data: bytes) -> str:
    if len(data) > REFERENCE_MAX_BYTES:
        raise _invalid(f"the file is {len(data)} bytes; a reference may be at most {REFERENCE_MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _invalid(f"the file is not UTF-8 text: line {line} has a byte that is not valid UTF-8") from None
    nul = text.find("\x00")
    if nul >= 0:
        raise _invalid(f"line {text.count(chr(10), 0, nul) + 1} contains a NUL character")
    return text


def _word_in_numeric(line: int, column: str, value: Any) -> ActionError:
    shown = value if isinstance(value, str) else json.dumps(value)
    if len(shown) > 40:
        shown = shown[:40] + "…"
    return _invalid(
        f"line {line}, column {column!r}: {shown!r} is not a number, but the column's first values are "
        "numbers (a numeric column); fix the value, leave it empty for a missing one, or send the column "
        "as categorical",
        column,
    )


# --------------------------------------------------------------------------------------------
# CSV


def parse_csv(data: bytes, *, categorical: Iterable[str] = ()) -> Table:
    """An uploaded CSV file's columns summarised (see the module docstring for the rules)."""
    text = _decode(data)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    forced = set(categorical)
    try:
        header: list[str] | None = None
        header_line = 0
        for header in reader:
            header_line = reader.line_num
            if header:
                break
        if not header:
            raise _invalid("the file is empty: send a header row naming the columns, then one row per sample")
        _check_names(header, f"the header (line {header_line})")
        columns = [Column(name, "categorical" if name in forced else None) for name in header]
        width = len(header)
        rows = 0
        end = reader.line_num
        for record in reader:
            line, end = end + 1, reader.line_num  # a quoted field may span lines: the record's first
            if not record:
                continue
            if len(record) != width:
                raise _invalid(
                    f"line {line} has {len(record)} field{'s' if len(record) != 1 else ''}, "
                    f"but the header (line {header_line}) names {width} columns"
                )
            rows += 1
            for col, raw in zip(columns, record, strict=True):
                value = raw.strip()
                if not value:
                    continue
                if col.kind == "categorical":
                    col.counts[value] += 1
                elif _NUMBER.fullmatch(value) and math.isfinite(number := float(value)):
                    col.add_number(number)
                elif col.kind == "numeric":
                    raise _word_in_numeric(line, col.name, value)
                else:
                    col.add_category(value)
    except csv.Error as exc:
        raise _invalid(f"line {reader.line_num} is not valid CSV: {exc}") from None
    if rows == 0:
        raise _invalid(f"the file has a header (line {header_line}) but no rows")
    return _summarise(rows, columns)


# --------------------------------------------------------------------------------------------
# JSON lines


def _json_line(raw: str, line: int) -> Any:
    try:
        return jsonutil.loads(raw)
    except ValueError:
        pass
    try:
        value = jsonutil.strict_loads(raw)
    except json.JSONDecodeError as exc:
        raise _invalid(f"line {line} is not valid JSON: {exc.msg} (character {exc.colno})") from None
    except ValueError as exc:
        raise _invalid(f"line {line}: {exc}") from None
    return value


def parse_jsonl(data: bytes, *, categorical: Iterable[str] = ()) -> Table:
    """An uploaded JSON-lines file's columns summarised (see the module docstring for the rules)."""
    text = _decode(data)
    forced = set(categorical)
    columns: dict[str, Column] = {}
    first_line = 0
    rows = 0
    for line, raw in enumerate(text.split("\n"), 1):
        if not raw.strip():
            continue
        if _SUSPECT_ESCAPE.search(raw.encode("utf-8")):
            raise _invalid(f"line {line} has a \\u0000 or lone-surrogate escape, which cannot be stored")
        obj = _json_line(raw, line)
        if not isinstance(obj, dict):
            raise _invalid(f"line {line} is a JSON {_json_kind(obj)}, not an object: send one object per line")
        if not columns:
            if not obj:
                raise _invalid(f"line {line} is an empty object: the first line names the columns")
            names = list(obj)
            _check_names(names, f"line {line}")
            columns = {n: Column(n, "categorical" if n in forced else None) for n in names}
            first_line = line
        rows += 1
        for name, value in obj.items():
            col = columns.get(name)
            if col is None:
                raise _invalid(
                    f"line {line} has the column {name!r}, which the first line (line {first_line}) does not "
                    "have; the first object names the columns (give null there for a column it lacks)",
                    name,
                )
            _add_json_value(col, value, line, strict=True)
    if rows == 0:
        raise _invalid("the file is empty: send one JSON object per line")
    return _summarise(rows, list(columns.values()))


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "number"


def _add_json_value(col: Column, value: Any, line: int, *, strict: bool) -> None:
    """Fold one JSON value into ``col``. ``strict`` (uploads): a nested value, or a word in a
    numeric column, is an error; otherwise (stored decisions) a category / a demotion."""
    if value is None:
        return
    if isinstance(value, dict | list):
        if strict:
            raise _invalid(
                f"line {line}, column {col.name!r}: a nested {'array' if isinstance(value, list) else 'object'}"
                " is not supported; flatten it into columns of their own",
                col.name,
            )
        col.demote()
        col.counts[jsonutil.dumps(value, sort_keys=True).decode()] += 1
        return
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value) if not isinstance(value, int) or abs(value) < 2**1023 else math.inf
        if not math.isfinite(number):
            if strict:
                raise _invalid(f"line {line}, column {col.name!r}: the number is too large for a float", col.name)
            col.demote()
            col.counts[str(value)] += 1
            return
        if col.kind == "categorical":
            col.counts[_number_key(value)] += 1
        else:
            col.add_number(number)
        return
    if col.kind == "numeric":
        if strict:
            raise _word_in_numeric(line, col.name, value)
        col.demote()
    key = drift.category_key(value)
    assert key is not None
    col.add_category(key)


# --------------------------------------------------------------------------------------------
# Storing


def parse_upload(data: bytes, fmt: Format, *, categorical: Iterable[str] = ()) -> Table:
    if fmt == "csv":
        return parse_csv(data, categorical=categorical)
    if fmt == "jsonl":
        return parse_jsonl(data, categorical=categorical)
    raise _invalid(f"unknown format {fmt!r}: csv or jsonl", "format")


def _store(system: AISystem, table: Table, source: str, actor: Any, note: str, action: str,
           extra: Mapping[str, Any] | None = None) -> Reference:
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    with transaction.atomic():
        ref = Reference.objects.create(
            system=system, source=source, rows=table.rows, columns=table.columns, summaries=table.summaries,
            note=note[:200], created_by=user,
        )
        audit.record(actor, action, system=system, target=f"reference:{ref.pk}",
                     data={"rows": table.rows, "columns": table.columns, **(extra or {})})
    return ref


def store_upload(system: AISystem, data: bytes, fmt: Format, actor: Any, *, categorical: Iterable[str] = (),
                 note: str = "") -> Reference:
    """Check and summarise an uploaded sample, store it as the system's reference in use."""
    table = parse_upload(data, fmt, categorical=categorical)
    return _store(system, table, Reference.Source.UPLOAD, actor, note, "reference.upload", {"format": fmt})


def _decision_rows(system: AISystem, since: datetime, until: datetime) -> Iterator[tuple[Any, Any]]:
    qs = Decision.objects.filter(system=system, occurred_at__gte=since, occurred_at__lt=until)
    return qs.values_list("features", "prediction__confidence").iterator(chunk_size=CHUNK_SIZE)


def table_from_decisions(system: AISystem, since: datetime, until: datetime) -> Table:
    """The system's decisions in [since, until) as reference columns (features + confidence)."""
    if since >= until:
        raise _invalid("since must be before until", "until")
    columns: dict[str, Column] = {}
    confidence = Column(CONFIDENCE_COLUMN)
    rows = 0
    for features, conf in _decision_rows(system, since, until):
        rows += 1
        if isinstance(features, dict):
            for name, value in features.items():
                col = columns.get(name)
                if col is None:
                    if len(columns) >= MAX_COLUMNS or len(name) > MAX_NAME_LENGTH or name == CONFIDENCE_COLUMN:
                        continue  # not storable as a drift feature: left out
                    col = columns[name] = Column(name)
                _add_json_value(col, value, rows, strict=False)
        _add_json_value(confidence, conf, rows, strict=False)
    if rows == 0:
        raise _invalid(
            f"the system has no decisions with occurred_at from {since.isoformat()} to {until.isoformat()}; "
            "choose a range that holds some",
            "since",
        )
    # JSONB keeps no key order (shorter keys first): the features are listed by name.
    return _summarise(rows, [*(columns[n] for n in sorted(columns)), confidence])


def reference_from_decisions(system: AISystem, since: datetime, until: datetime, actor: Any, *,
                             note: str = "") -> Reference:
    """Use a past window of the system's own decisions as its reference."""
    table = table_from_decisions(system, since, until)
    return _store(system, table, Reference.Source.WINDOW, actor, note, "reference.window",
                  {"since": since.isoformat(), "until": until.isoformat()})


def current(system_id: int) -> Reference | None:
    """The reference in use: the system's newest."""
    return (Reference.objects.filter(system_id=system_id).select_related("system", "created_by")
            .order_by("-created_at", "-id").first())


def describe_column(name: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "kind": summary.get("type"), "missing": summary.get("missing", 0)}
    if summary.get("type") == "numeric":
        out.update({k: summary.get(k) for k in ("count", "mean", "std", "min", "max")})
    else:
        counts: dict[str, int] = summary.get("counts", {})
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CATEGORIES]
        out.update({"count": sum(counts.values()), "categories": len(counts), "top": dict(top)})
    return out


def describe(ref: Reference) -> dict[str, Any]:
    """The reference as the API shows it."""
    return {
        "id": ref.pk,
        "system": ref.system.slug,
        "source": ref.source,
        "rows": ref.rows,
        "columns": [describe_column(n, ref.summaries.get(n, {})) for n in ref.columns],
        "note": ref.note,
        "created_by": ref.created_by.get_username() if ref.created_by else None,
        "created_at": ref.created_at,
    }
