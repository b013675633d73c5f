"""Set-based writes for decisions: one ``INSERT … ON CONFLICT`` statement, or ``COPY``.

Values go through each field's ``get_db_prep_save``, as the ORM's own inserts do, so what lands
in a row is exactly what ``Model.save`` would write. Database errors come out as Django's
(IntegrityError, OperationalError, …).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connection, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from psycopg.types.json import Jsonb

from oversight import jsonutil

COPY_FROM = 50  # from this many rows on, COPY is faster than a multi-row INSERT


@cache
def fields(model: type[models.Model]) -> tuple[models.Field[Any, Any], ...]:
    """The columns every insert here writes, in order."""
    return tuple(model._meta.concrete_fields)


# Field types whose values the database driver takes as they are: for values of the right type
# the ORM's conversion (``get_db_prep_save``) returns them unchanged, and the rows written here
# are built by the gate, with the right types. JSON is encoded with orjson (jsonutil.dumps); every
# other field goes through the ORM's own conversion. `make bench` measures this against the ORM's
# conversion in the same run, and tests/integration/test_batch_copy.py checks they agree.
_AS_IS = (models.UUIDField, models.CharField, models.TextField, models.IntegerField, models.FloatField,
          models.BooleanField)  # and aware datetimes


def _jsonb(value: Any) -> Any:
    return None if value is None else Jsonb(value, dumps=jsonutil.dumps)


AS_IS, JSON, AWARE, ORM = range(4)  # how one column's value is prepared


@cache
def _preparers(model: type[models.Model]) -> tuple[tuple[str, int, models.Field[Any, Any]], ...]:
    out: list[tuple[str, int, models.Field[Any, Any]]] = []
    for f in fields(model):
        if isinstance(f, models.JSONField) and f.encoder is None:
            mode = JSON
        elif isinstance(f, _AS_IS) and type(f).get_db_prep_save is models.Field.get_db_prep_save:
            mode = AS_IS
        elif type(f) is models.DateTimeField:
            mode = AWARE  # an aware datetime as it is; a naive one through the ORM (it warns and converts)
        else:
            mode = ORM
        out.append((f.attname, mode, f))
    return tuple(out)


def row(obj: models.Model, db: BaseDatabaseWrapper | None = None) -> list[Any]:
    """The row's values as the ORM would send them (``db``: the connection itself, looked up once
    per batch rather than through the ``connection`` proxy for every field)."""
    db = db or connections[DEFAULT_DB_ALIAS]
    values: list[Any] = []
    for attname, mode, f in _preparers(type(obj)):
        v = getattr(obj, attname)
        if mode == AS_IS or (mode == AWARE and (v is None or v.tzinfo is not None)):
            values.append(v)
        elif mode == JSON:
            values.append(_jsonb(v))
        else:
            values.append(f.get_db_prep_save(v, db))
    return values


def _typed(f: models.Field[Any, Any]) -> str:
    """A placeholder with its type, for a SELECT list (PostgreSQL cannot infer it from the target
    column there). Text goes as plain ``varchar``: an explicit ``varchar(200)`` cast would cut a
    longer value silently, where the assignment to the column refuses it, as ``VALUES`` does."""
    if isinstance(f, models.CharField | models.TextField):
        return "%s::varchar"
    return f"%s::{f.db_type(connection)}"


@cache
def _insert_sql(model: type[models.Model], conflict: str, dependents: tuple[type[models.Model], ...] = (),
                where: str = "") -> str:
    """``INSERT … RETURNING pk``; with dependents, one statement that inserts their rows too,
    only when the first row went in (data-modifying CTEs: one statement, so one transaction).
    With ``where``, the row goes in only when that condition holds (``INSERT … SELECT … WHERE``)."""
    qn = connection.ops.quote_name
    cols = ", ".join(qn(f.column) for f in fields(model))
    pk = qn(model._meta.pk.column)
    if where:
        typed = ", ".join(_typed(f) for f in fields(model))
        values = f"SELECT {typed} WHERE {where}"
    else:
        values = "VALUES (" + ", ".join(["%s"] * len(fields(model))) + ")"
    sql = f"INSERT INTO {qn(model._meta.db_table)} ({cols}) {values} {conflict} RETURNING {pk}"  # noqa: S608
    if not dependents:
        return sql
    parts = [f"WITH inserted AS ({sql})"]
    for i, dep in enumerate(dependents):
        dep_cols = ", ".join(qn(f.column) for f in fields(dep))
        dep_marks = ", ".join(_typed(f) for f in fields(dep))
        parts.append(f", dependent{i} AS (INSERT INTO {qn(dep._meta.db_table)} ({dep_cols}) "  # noqa: S608
                     f"SELECT {dep_marks} FROM inserted)")
    parts.append(f" SELECT {pk} FROM inserted")  # noqa: S608
    return "".join(parts)


def insert_one(obj: models.Model, conflict: str = "", dependents: Sequence[models.Model] = (), where: str = "",
               where_params: Sequence[Any] = ()) -> bool:
    """INSERT one row, and its dependent rows, in one statement (one round trip, one transaction).

    With an ``ON CONFLICT … DO NOTHING`` clause, or a ``where`` condition (SQL, its placeholders'
    values in ``where_params``): False when the row was skipped, and then its dependents are not
    inserted either.
    """
    params = row(obj)
    params.extend(where_params)
    for dep in dependents:
        params.extend(row(dep))
    sql = _insert_sql(type(obj), conflict, tuple(type(d) for d in dependents), where)
    connection.ensure_connection()
    # psycopg's server-side binding (Django's cursors bind on the client): the values travel apart
    # from the statement, which psycopg prepares once it has run a few times on a connection.
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cur:
        cur.execute(sql, params)
        return cur.fetchone() is not None


def insert_rows(objs: Sequence[models.Model]) -> None:
    """Insert rows of several models, each model's rows together, models in first-seen order."""
    by_model: dict[type[models.Model], list[models.Model]] = {}
    for obj in objs:
        by_model.setdefault(type(obj), []).append(obj)
    for rows in by_model.values():
        insert_many(rows)


def insert_many(objs: Sequence[models.Model]) -> None:
    """Insert rows of one model: psycopg's ``COPY`` for many, ``bulk_create`` for a few."""
    if not objs:
        return
    model = type(objs[0])
    if len(objs) < COPY_FROM:
        model._default_manager.bulk_create(objs)
        return
    qn = connection.ops.quote_name
    columns = ", ".join(qn(f.column) for f in fields(model))
    sql = f"COPY {qn(model._meta.db_table)} ({columns}) FROM STDIN"
    db = connections[DEFAULT_DB_ALIAS]
    with db.wrap_database_errors, db.cursor() as cur, cur.copy(sql) as copy:
        for obj in objs:
            copy.write_row(row(obj, db))
