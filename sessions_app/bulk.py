"""A burst's session rows and connection events in a few cheap statements.

These run on a database thread for every burst of connects and closes, and what
they cost in Python is held under the GIL while the event loop waits (py-spy
--gil: the database threads held it 29 % of a connect storm). The ORM's versions
spend it per value: bulk_create prepares every field of every row and reads back
the ids, `pk__in` takes a placeholder per id (a statement of over 50 parameters
is parsed afresh by psycopg on every call: MAX_CACHED_STATEMENT_PARAMS in
psycopg/_queries.py), and an UPDATE of each row to its own values is a CASE WHEN
per row. On PostgreSQL these statements take one array per column (`unnest`,
`= ANY`) and keep no model instances they do not return: 1.6-11x less CPU for 7
rows and 1.1-7x for 2,000 (measured: docs/BENCHMARKS.md). Other databases
(SQLite, the embedded default) run the ORM's statements, which say the same; the
tests run both on PostgreSQL and hold them to one answer.
"""

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Case, F, Value, When

from ops.rows import arrays
from sessions_app.models import ChatSession, ConnectionEvent

SESSIONS = ChatSession._meta.db_table
EVENTS = ConnectionEvent._meta.db_table

_INSERT_SESSIONS = f"""
INSERT INTO {SESSIONS} (id, owner_id, thread_key, status, created_at, last_seen_at,
    connect_count, resumed_count)
SELECT id, owner_id, thread_key, %s, %s, %s, 0, 0
FROM unnest(%s::varchar[], %s::{{user_pk}}[], %s::varchar[])
    AS r(id, owner_id, thread_key)
ORDER BY id
ON CONFLICT (id) DO NOTHING
"""

_COUNT_CONNECTS = f"""
UPDATE {SESSIONS} AS s
SET thread_key = r.thread_key, status = %s, last_seen_at = %s,
    connect_count = s.connect_count + r.connects,
    resumed_count = s.resumed_count + r.resumes
FROM unnest(%s::varchar[], %s::varchar[], %s::integer[], %s::integer[])
    AS r(id, thread_key, connects, resumes)
WHERE s.id = r.id
"""

# A connection event's columns, in the order of their arrays, and their types.
_EVENT_COLUMNS = (
    ("session_id", "varchar"),
    ("session_key", "varchar"),
    ("user_id", "{user_pk}"),
    ("thread_key", "varchar"),
    ("kind", "varchar"),
    ("code", "integer"),
    ("reason", "varchar"),
    ("duration_s", "float8"),
    ("instance", "varchar"),
)
_EVENT_NAMES = ", ".join(name for name, _ in _EVENT_COLUMNS)
_EVENT_ARRAYS = ", ".join(f"%s::{kind}[]" for _, kind in _EVENT_COLUMNS)
_INSERT_EVENTS = f"""
INSERT INTO {EVENTS} ({_EVENT_NAMES}, created_at)
SELECT r.*, %s FROM unnest({_EVENT_ARRAYS}) AS r
"""

_LOCK = f"SELECT * FROM {SESSIONS} WHERE id = ANY(%s::varchar[]) ORDER BY id FOR UPDATE"
_LOCK_OWNERS = f"""
SELECT id, owner_id FROM {SESSIONS} WHERE id = ANY(%s::varchar[]) ORDER BY id FOR UPDATE
"""
_TOUCH = f"UPDATE {SESSIONS} SET last_seen_at = %s WHERE id = ANY(%s::varchar[])"


@functools.cache  # asked on the array path only, where the vendor is fixed
def _user_pk() -> str:
    """The column type of a user id (integer for Django's own User), for a cast."""
    return ChatSession._meta.get_field("owner").target_field.rel_db_type(connection)


def sessions_lock(*, ids: Sequence[str]) -> list[ChatSession]:
    """The sessions' rows, locked FOR UPDATE in id order (one lock order everywhere)."""
    if not ids:
        return []
    if not arrays():
        locked = ChatSession.objects.select_for_update().filter(pk__in=ids)
        return list(locked.order_by("pk"))
    return list(ChatSession.objects.raw(_LOCK, [list(ids)]))


def sessions_lock_owners(*, ids: Iterable[str]) -> dict[str, int]:
    """Session id -> owner id of the existing ones, locked as sessions_lock locks."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    if not arrays():
        locked = ChatSession.objects.select_for_update().filter(pk__in=ids)
        return dict(locked.order_by("pk").values_list("pk", "owner_id"))
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_OWNERS, [ids])
        return dict(cursor.fetchall())


def sessions_insert_missing(*, rows: Sequence[ChatSession], now: datetime) -> None:
    """Insert sessions (id, owner, thread_key) active, seen `now` and uncounted.

    An id that exists already is skipped: its row is left as it is.
    """
    if not rows:
        return
    if not arrays():
        for row in rows:
            row.status, row.last_seen_at = ChatSession.Status.ACTIVE, now
            row.connect_count = row.resumed_count = 0
        ChatSession.objects.bulk_create(rows, ignore_conflicts=True)
        return
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_SESSIONS.format(user_pk=_user_pk()),
            [
                ChatSession.Status.ACTIVE.value,
                now,
                now,
                [row.pk for row in rows],
                [row.owner_id for row in rows],
                [row.thread_key for row in rows],
            ],
        )


def sessions_count_connects(
    *,
    thread_keys: dict[str, str],
    connects: dict[str, int],
    resumes: dict[str, int],
    now: datetime,
) -> None:
    """Add each session's connects and resumes, mark it active, set its thread."""
    ids = sorted(connects)
    if not arrays():
        ChatSession.objects.filter(pk__in=ids).update(
            thread_key=_per_row({pk: thread_keys[pk] for pk in ids}),
            status=ChatSession.Status.ACTIVE,
            last_seen_at=now,
            connect_count=F("connect_count") + _per_row(connects),
            resumed_count=F("resumed_count")
            + _per_row({pk: resumes.get(pk, 0) for pk in ids}),
        )
        return
    with connection.cursor() as cursor:
        cursor.execute(
            _COUNT_CONNECTS,
            [
                ChatSession.Status.ACTIVE.value,
                now,
                ids,
                [thread_keys[pk] for pk in ids],
                [connects[pk] for pk in ids],
                [resumes.get(pk, 0) for pk in ids],
            ],
        )


def _per_row(values: dict[str, Any]) -> Value | Case:
    """Each row's value as one expression: one WHEN per distinct value, not per row."""
    by_value: dict[Any, list[str]] = {}
    for pk, value in values.items():
        by_value.setdefault(value, []).append(pk)
    if len(by_value) == 1:
        return Value(next(iter(by_value)))
    return Case(*(When(pk__in=pks, then=Value(v)) for v, pks in by_value.items()))


def sessions_touch(*, ids: Iterable[str], now: datetime) -> None:
    """Set the sessions' last_seen_at."""
    ids = sorted(set(ids))
    if not ids:
        return
    if not arrays():
        ChatSession.objects.filter(pk__in=ids).update(last_seen_at=now)
        return
    with connection.cursor() as cursor:
        cursor.execute(_TOUCH, [now, ids])


def events_insert(*, events: Sequence[ConnectionEvent], now: datetime) -> None:
    """Insert connection events (unsaved instances), created at `now`.

    The ORM's statement stamps them itself (auto_now_add), a moment later.
    """
    if not events:
        return
    if not arrays():
        ConnectionEvent.objects.bulk_create(events)
        return
    columns = [[getattr(e, name) for e in events] for name, _ in _EVENT_COLUMNS]
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_EVENTS.format(user_pk=_user_pk()), [now, *columns])
