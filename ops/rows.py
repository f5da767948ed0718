"""Statements that take one array per column: where they run, and rows by key.

Every burst of connects reads its users and its threads by key on a database
thread, and what that costs in Python is held under the GIL while the event loop
waits. QuerySet.in_bulk builds and compiles a query (a WHERE node, an IN lookup,
a placeholder per key) on every call: for one user, 430 us of CPU against 260 us
for the same rows through Manager.raw with `= ANY(array)`, and 640 against 380 us
for seven threads (docs/BENCHMARKS.md). Manager.raw still maps the columns to the
model's fields and applies the fields' converters, so the instances are the
ORM's. Other databases (SQLite, the embedded default) and a default manager that
narrows its queryset take QuerySet.in_bulk, which says the same.
"""

import functools
from collections.abc import Iterable
from typing import Any

from django.db import connection, models
from django.db.models.manager import BaseManager

# Databases that take the array statements (here and sessions_app/bulk.py); the
# ORM's statements serve the rest.
ARRAY_VENDORS = frozenset({"postgresql"})


def arrays() -> bool:
    """Whether this thread's database takes the array statements."""
    return connection.vendor in ARRAY_VENDORS


def rows_by_pk(model: type[models.Model], ids: Iterable[Any]) -> dict[Any, Any]:
    """model._default_manager.in_bulk(ids): the rows that exist, by primary key."""
    keys = list(dict.fromkeys(ids))
    if not keys:
        return {}
    manager = model._default_manager
    narrowed = type(manager).get_queryset is not BaseManager.get_queryset
    if not arrays() or narrowed:
        return manager.in_bulk(keys)
    return {row.pk: row for row in manager.raw(_select(model), [keys])}


@functools.cache
def _select(model: type[models.Model]) -> str:
    """SELECT every column of the model's rows whose key is in one array."""
    opts, quote = model._meta, connection.ops.quote_name
    # The type without its length: a cast to varchar(n) cuts a longer key to a
    # shorter one's value, and a longer key must match nothing.
    pk_type = opts.pk.rel_db_type(connection).split("(", 1)[0]
    return (
        f"SELECT * FROM {quote(opts.db_table)} "
        f"WHERE {quote(opts.pk.column)} = ANY(%s::{pk_type}[])"
    )
