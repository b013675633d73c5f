"""Fast inserts for the decision hot path: one ``INSERT … ON CONFLICT`` statement, or ``COPY``.

Values go through each field's ``get_db_prep_save``, so what lands in a row is exactly what the
ORM would write. Database errors are translated to Django's (IntegrityError, …) as usual.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from django.db import connection, models

COPY_FROM = 50  # below this many rows, a multi-row INSERT is as fast as COPY


@cache
def _fields(model: type[models.Model]) -> tuple[models.Field[Any, Any], ...]:
    return tuple(model._meta.concrete_fields)


def _row(obj: models.Model, fields: Sequence[models.Field[Any, Any]]) -> list[Any]:
    return [f.get_db_prep_save(getattr(obj, f.attname), connection) for f in fields]


@cache
def _insert_sql(model: type[models.Model], conflict: str) -> str:
    qn = connection.ops.quote_name
    cols = ", ".join(qn(f.column) for f in _fields(model))
    marks = ", ".join(["%s"] * len(_fields(model)))
    pk = qn(model._meta.pk.column)  # type: ignore[union-attr]
    return f"INSERT INTO {qn(model._meta.db_table)} ({cols}) VALUES ({marks}) {conflict} RETURNING {pk}"  # noqa: S608


def insert_one(obj: models.Model, conflict: str = "") -> bool:
    """INSERT one row in one round trip. With an ``ON CONFLICT … DO NOTHING`` clause, False when skipped."""
    model = type(obj)
    with connection.cursor() as cur:
        cur.execute(_insert_sql(model, conflict), _row(obj, _fields(model)))
        return cur.fetchone() is not None


def insert_many(objs: Sequence[models.Model]) -> None:
    """Insert rows of one model: COPY for many, bulk_create for a few."""
    if not objs:
        return
    model = type(objs[0])
    if len(objs) < COPY_FROM:
        model._default_manager.bulk_create(objs)
        return
    fields = _fields(model)
    qn = connection.ops.quote_name
    sql = f"COPY {qn(model._meta.db_table)} ({', '.join(qn(f.column) for f in fields)}) FROM STDIN"
    connection.ensure_connection()
    with connection.wrap_database_errors, connection.connection.cursor() as cur, cur.copy(sql) as copy:
        for obj in objs:
            copy.write_row(_row(obj, fields))
