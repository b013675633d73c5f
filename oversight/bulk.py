"""Fast inserts for the decision hot path: one ``INSERT … ON CONFLICT`` statement, or ``COPY``.

Values go through each field's ``get_db_prep_save``, so what lands in a row is exactly what the
ORM would write. Database errors are translated to Django's (IntegrityError, …) as usual.
"""

from __future__ import annotations

import contextlib
import gc
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from typing import Any, TypeVar

import orjson
from django.db import connection, models
from django.db.models.base import ModelState
from psycopg import AsyncCursor
from psycopg.types.json import Jsonb

M = TypeVar("M", bound=models.Model)
COPY_FROM = 50  # below this many rows, a multi-row INSERT is as fast as COPY

_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_paused_since = 0.0
GC_MAX_PAUSE_S = 1.0


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a batch makes its rows.

    A 1000-item batch keeps ~100k objects alive until it is stored; the collector, which only
    looks for reference cycles, walked them over and over (~10-14 % of a batch's CPU, measured).
    Reference counting still frees everything at once. Concurrent batches share the pause: the
    collector comes back when the last one ends, and was never paused if it was off already.
    Batches that keep overlapping cannot keep it off for long: a batch that ends while the pause
    is older than ``GC_MAX_PAUSE_S`` collects once and starts the clock again.
    """
    global _gc_pausers, _gc_paused_since
    with _gc_lock:
        if _gc_pausers == 0 and not gc.isenabled():
            paused = False
        else:
            paused = True
            if _gc_pausers == 0:
                _gc_paused_since = time.monotonic()
                gc.disable()
            _gc_pausers += 1
    try:
        yield
    finally:
        collect = False
        if paused:
            with _gc_lock:
                _gc_pausers -= 1
                if _gc_pausers == 0:
                    gc.enable()
                elif time.monotonic() - _gc_paused_since > GC_MAX_PAUSE_S:
                    _gc_paused_since = time.monotonic()
                    collect = True
        if collect:
            gc.collect()


@cache
def fields(model: type[models.Model]) -> tuple[models.Field[Any, Any], ...]:
    """The columns every insert here writes, in order."""
    return tuple(model._meta.concrete_fields)


Convert = Callable[[Any], Any]


def json_bytes(value: Any) -> bytes:
    """JSON as bytes: orjson (fast), or the standard library for what orjson refuses (ints over 64 bits)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False).encode()


def _json(field: models.JSONField[Any]) -> Convert:  # type: ignore[type-arg]
    if field.encoder is not None:  # pragma: no cover - our JSON fields use the default encoder
        return lambda v: None if v is None else Jsonb(v, dumps=lambda x: json.dumps(x, cls=field.encoder))
    return lambda v: None if v is None else Jsonb(v, dumps=json_bytes)


@cache
def _converters(model: type[models.Model]) -> tuple[tuple[str, Convert | None], ...]:
    """Per column: the attribute and how psycopg should receive it (what the ORM would write).

    Only JSON needs wrapping here; every other field type these models use (UUID, text, numbers,
    booleans, aware datetimes, foreign-key ids) psycopg adapts as it is.
    """
    simple = (
        models.UUIDField, models.CharField, models.TextField, models.IntegerField, models.FloatField,
        models.BooleanField, models.DateTimeField, models.ForeignKey, models.AutoField, models.BigAutoField,
    )
    out: list[tuple[str, Convert | None]] = []
    for f in fields(model):
        if isinstance(f, models.JSONField):
            out.append((f.attname, _json(f)))
        elif isinstance(f, simple):
            out.append((f.attname, None))
        else:  # pragma: no cover - a field type we have not checked: let Django prepare it
            out.append((f.attname, lambda v, f=f: f.get_db_prep_save(v, connection)))
    return tuple(out)


@cache
def _defaults(model: type[models.Model]) -> dict[str, Any]:
    return {f.attname: f.get_default() for f in fields(model) if not callable(f.default) or not f.has_default()}


def new(model: type[M], /, **values: Any) -> M:
    """An unsaved model instance, made several times faster than ``Model(**values)``.

    For hot paths that make hundreds of rows a request: every concrete field must be given or
    have a constant default (a callable default, such as ``uuid.uuid4``, must be given).
    """
    obj = model.__new__(model)
    obj._state = ModelState()
    state = obj.__dict__
    state.update(_defaults(model))
    state.update(values)
    return obj


def _row(obj: models.Model) -> list[Any]:
    return [getattr(obj, a) if c is None else c(getattr(obj, a)) for a, c in _converters(type(obj))]


@cache
def _insert_sql(model: type[models.Model], conflict: str, dependents: tuple[type[models.Model], ...] = ()) -> str:
    """``INSERT … RETURNING pk``; with dependents, one statement that inserts their rows too,
    only when the first row went in (data-modifying CTEs: one statement, so one transaction)."""
    qn = connection.ops.quote_name
    cols = ", ".join(qn(f.column) for f in fields(model))
    marks = ", ".join(["%s"] * len(fields(model)))
    pk = qn(model._meta.pk.column)  # type: ignore[union-attr]
    sql = f"INSERT INTO {qn(model._meta.db_table)} ({cols}) VALUES ({marks}) {conflict} RETURNING {pk}"  # noqa: S608
    if not dependents:
        return sql
    parts = [f"WITH inserted AS ({sql})"]
    for i, dep in enumerate(dependents):
        dep_cols = ", ".join(qn(f.column) for f in fields(dep))
        # Typed placeholders: in a SELECT list PostgreSQL cannot infer them from the target columns.
        dep_marks = ", ".join(f"%s::{f.db_type(connection)}" for f in fields(dep))
        parts.append(f", dependent{i} AS (INSERT INTO {qn(dep._meta.db_table)} ({dep_cols}) "  # noqa: S608
                     f"SELECT {dep_marks} FROM inserted)")
    parts.append(f" SELECT {pk} FROM inserted")  # noqa: S608
    return "".join(parts)


def _one_statement(obj: models.Model, conflict: str, dependents: Sequence[models.Model]) -> tuple[str, list[Any]]:
    params = _row(obj)
    for dep in dependents:
        params.extend(_row(dep))
    return _insert_sql(type(obj), conflict, tuple(type(d) for d in dependents)), params


def insert_one(obj: models.Model, conflict: str = "", dependents: Sequence[models.Model] = ()) -> bool:
    """INSERT one row, and its dependent rows, in one statement (one round trip, one transaction).

    With an ``ON CONFLICT … DO NOTHING`` clause: False when the row was skipped, and then its
    dependents are not inserted either.
    """
    sql, params = _one_statement(obj, conflict, dependents)
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone() is not None


async def ainsert_one(
    cur: AsyncCursor[Any], obj: models.Model, conflict: str = "", dependents: Sequence[models.Model] = ()
) -> bool:
    """``insert_one`` on an async psycopg cursor (the event loop's pool, see ``oversight.aio``)."""
    sql, params = _one_statement(obj, conflict, dependents)
    await cur.execute(sql, params)
    return await cur.fetchone() is not None


def insert_rows(objs: Sequence[models.Model]) -> None:
    """Insert rows of several models, each model's rows together, models in first-seen order."""
    by_model: dict[type[models.Model], list[models.Model]] = {}
    for obj in objs:
        by_model.setdefault(type(obj), []).append(obj)
    for rows in by_model.values():
        insert_many(rows)


def insert_many(objs: Sequence[models.Model]) -> None:
    """Insert rows of one model: COPY for many, bulk_create for a few."""
    if not objs:
        return
    model = type(objs[0])
    if len(objs) < COPY_FROM:
        model._default_manager.bulk_create(objs)
        return
    with copy_writer(model) as write:
        write(objs)


@contextlib.contextmanager
def copy_writer(
    model: type[models.Model], text: Callable[[Sequence[Any]], bytes] | None = None
) -> Iterator[Callable[[Sequence[models.Model]], None]]:
    """``COPY … FROM STDIN`` into ``model``'s table on Django's connection: ``write(rows)`` sends
    rows at once, so PostgreSQL stores them while the caller makes the next ones. ``text`` formats
    rows (``copy_text`` unless given)."""
    to_text = text or copy_text
    qn = connection.ops.quote_name
    columns = ", ".join(qn(f.column) for f in fields(model))
    sql = f"COPY {qn(model._meta.db_table)} ({columns}) FROM STDIN"
    connection.ensure_connection()
    with connection.wrap_database_errors, connection.connection.cursor() as cur, cur.copy(sql) as copy:

        def write(objs: Sequence[models.Model]) -> None:
            if objs:
                copy.write(to_text(objs))

        yield write


# --- COPY's text format, written directly ---------------------------------------------------
# psycopg's ``write_row`` adapts value by value; for a 1000-decision batch that was half of the
# request's time. The rows are formatted here instead, each column by its field type, and sent
# in one write. Text format: columns split by tabs, rows by newlines, NULL as \N, and in values
# a backslash, tab, newline or carriage return escaped with a backslash.

COPY_NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_escape(text: str) -> str:
    return text.translate(_COPY_ESCAPES) if ("\\" in text or "\t" in text or "\n" in text or "\r" in text) else text


def copy_json(value: Any) -> str:
    # JSON text holds no raw tab, newline or carriage return (orjson escapes them); backslashes it may.
    text = json_bytes(value).decode()
    return text.replace("\\", "\\\\") if "\\" in text else text


def _copy_bool(value: bool) -> str:
    return "t" if value else "f"


@cache
def _copy_converters(model: type[models.Model]) -> tuple[tuple[str, Callable[[Any], str]], ...]:
    out: list[tuple[str, Callable[[Any], str]]] = []
    for f in fields(model):
        if isinstance(f, models.JSONField):
            out.append((f.attname, copy_json))
        elif isinstance(f, models.BooleanField):
            out.append((f.attname, _copy_bool))
        elif isinstance(f, models.CharField | models.TextField):
            out.append((f.attname, copy_escape))
        elif isinstance(f, models.FloatField):
            out.append((f.attname, repr))  # the shortest text that reads back as the same float
        elif isinstance(f, models.DateTimeField):
            out.append((f.attname, iso_aware))
        elif isinstance(f, models.UUIDField | models.IntegerField | models.ForeignKey | models.AutoField
                       | models.BigAutoField):
            out.append((f.attname, str))
        else:  # pragma: no cover - a field type we have not checked: Django's own text for it
            out.append((f.attname, lambda v, f=f: copy_escape(str(f.get_db_prep_save(v, connection)))))
    return tuple(out)


def iso_aware(value: Any) -> str:
    if value.tzinfo is None:  # pragma: no cover - the API only stores aware times
        raise ValueError(f"naive datetime {value!r} cannot be stored")
    return str(value.isoformat())


def copy_text(objs: Sequence[models.Model]) -> bytes:
    """Rows of one model in COPY's text format (the columns of ``fields``, in order)."""
    # A batch's rows share their arrival time (the same object): format it once. Keyed by identity,
    # which is stable while ``objs`` holds the values (hashing an aware datetime asks its tzinfo).
    seen: dict[int, str] = {}

    def iso(value: Any) -> str:
        text = seen.get(id(value))
        if text is None:
            text = seen[id(value)] = iso_aware(value)
        return text

    convs = [(a, iso if c is iso_aware else c) for a, c in _copy_converters(type(objs[0]))]
    lines = []
    for obj in objs:
        values = obj.__dict__
        lines.append("\t".join([COPY_NULL if (v := values[a]) is None else c(v) for a, c in convs]))
    lines.append("")
    return "\n".join(lines).encode()
