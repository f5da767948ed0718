"""sessions_app.bulk: a burst's rows in statements that do not grow with it."""

import pytest
from django.db import connection
from django.utils import timezone

from sessions_app.bulk import (
    events_insert,
    sessions_count_connects,
    sessions_insert_missing,
    sessions_lock,
    sessions_lock_owners,
    sessions_touch,
)
from sessions_app.models import ChatSession, ConnectionEvent

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("statements")]

Kind = ConnectionEvent.Kind
FIELDS = (
    "session_id",
    "session_key",
    "user_id",
    "thread_key",
    "kind",
    "code",
    "reason",
    "duration_s",
    "instance",
)


def session(user, pk: str, thread_key: str = "main") -> ChatSession:
    return ChatSession(id=pk, owner=user, thread_key=thread_key, connect_count=0)


def test_events_keep_every_value_and_every_null(alice):
    now = timezone.now()
    sessions_insert_missing(rows=[session(alice, "s1")], now=now)
    events = [
        ConnectionEvent(
            session_id="s1",
            session_key="s1",
            user=alice,
            thread_key="lobby",
            kind=Kind.DISCONNECT,
            code=4408,
            reason="slow_consumer",
            duration_s=12.5,
            instance="inst-a",
        ),
        # A refused socket's close: no session, no user, no code or duration.
        ConnectionEvent(session_key="other", kind=Kind.DISCONNECT, instance="inst-b"),
    ]
    events_insert(events=events, now=now)
    rows = ConnectionEvent.objects.order_by("pk")
    assert list(rows.values_list(*FIELDS)) == [
        ("s1", "s1", alice.pk, "lobby", "disconnect", 4408, "slow_consumer", 12.5,
         "inst-a"),
        (None, "other", None, "", "disconnect", None, "", None, "inst-b"),
    ]  # fmt: skip
    assert all(now <= row.created_at <= timezone.now() for row in rows)


def test_each_session_counts_its_own_connects_and_resumes(alice, bob):
    now = timezone.now()
    rows = [session(alice, "a"), session(bob, "b"), session(alice, "c")]
    sessions_insert_missing(rows=rows, now=now)
    # Inserted again (another instance's burst): nothing changes, nothing fails.
    sessions_insert_missing(rows=[session(bob, "a", "elsewhere")], now=now)
    sessions_count_connects(
        thread_keys={"a": "t1", "b": "t2", "c": "t1"},
        connects={"a": 2, "b": 1, "c": 3},
        resumes={"a": 1, "c": 2},
        now=now,
    )
    locked = sessions_lock(ids=["c", "a", "b", "gone"])
    assert [
        (r.pk, r.owner_id, r.thread_key, r.connect_count, r.resumed_count)
        for r in locked
    ] == [
        ("a", alice.pk, "t1", 2, 1),
        ("b", bob.pk, "t2", 1, 0),
        ("c", alice.pk, "t1", 3, 2),
    ]


def _statements(write, rows: int) -> list[tuple[str, int]]:
    """(text, parameter count) of each statement `write` runs for `rows` sessions."""
    seen = []

    def record(execute, sql, params, many, context):
        seen.append((sql, len(params or ())))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        write([f"s{i}" for i in range(rows)])
    return seen


@pytest.mark.parametrize(
    "write",
    [
        lambda ids: sessions_touch(ids=ids, now=timezone.now()),
        lambda ids: sessions_lock_owners(ids=ids),
        lambda ids: events_insert(
            events=[ConnectionEvent(session_key=i, kind=Kind.CONNECT) for i in ids],
            now=timezone.now(),
        ),
    ],
    ids=["touch", "lock_owners", "events"],
)
def test_a_burst_is_one_statement_of_one_text_whatever_its_size(
    alice, statements, write
):
    sessions_insert_missing(rows=[session(alice, "s1")], now=timezone.now())
    few, many = _statements(write, 3), _statements(write, 3_000)
    if statements == "arrays":
        # psycopg parses a statement of over 50 parameters afresh on every call.
        assert few == many
        assert len(many) == 1 and many[0][1] <= 10
    else:  # the ORM's: one statement as well
        assert len(many) == 1
