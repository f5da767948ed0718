"""sessions_app.services.session_ensure_many: many sockets' sessions at once."""

import threading

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sessions_app.models import ChatSession, ConnectionEvent
from sessions_app.services import (
    SessionConnect,
    SessionForbidden,
    SessionOpened,
    SocketClosed,
    session_detach_many,
    session_ensure_many,
    session_mark_idle_many,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("statements")]

Kind = ConnectionEvent.Kind


def req(user, session_id, thread_id="main", instance="inst-a") -> SessionConnect:
    return SessionConnect(session_id, user, thread_id, instance)


def counts(session_id: str) -> tuple[int, int, int]:
    row = ChatSession.objects.get(pk=session_id)
    return row.owner_id, row.connect_count, row.resumed_count


def connect_events() -> list[tuple[str, int, str]]:
    events = ConnectionEvent.objects.filter(kind=Kind.CONNECT).order_by("pk")
    return list(events.values_list("session_key", "user_id", "thread_key"))


def test_mixed_batch_new_resumed_forbidden_and_repeated(alice, bob):
    session_ensure_many(connects=[req(alice, "old"), req(bob, "bobs")])
    results = session_ensure_many(
        connects=[
            req(alice, "new", "lobby"),
            req(alice, "old", "room"),
            req(alice, "bobs"),  # another user's session: refused alone
            req(bob, "new"),  # created by alice earlier in this batch
            req(alice, "new", "lobby-2"),  # a second tab of the new session
        ]
    )
    new, old, foreign, late, again = results
    assert isinstance(new, SessionOpened) and new.resumed is False
    assert isinstance(old, SessionOpened) and old.resumed is True
    assert isinstance(foreign, SessionForbidden) and str(foreign) == "bobs"
    assert isinstance(late, SessionForbidden)
    assert isinstance(again, SessionOpened) and again.resumed is True
    assert counts("new") == (alice.pk, 2, 1)
    assert counts("old") == (alice.pk, 2, 1)
    assert counts("bobs") == (bob.pk, 1, 0)
    assert ChatSession.objects.get(pk="new").thread_key == "lobby-2"  # the last
    assert connect_events()[2:] == [
        ("new", alice.pk, "lobby"),
        ("old", alice.pk, "room"),
        ("new", alice.pk, "lobby-2"),
    ]


def test_statements_do_not_grow_with_the_batch(make_user):
    users = [make_user(f"u{i}") for i in range(30)]
    session_ensure_many(connects=[req(u, f"s{i}") for i, u in enumerate(users[:15])])

    def statements(connects) -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            session_ensure_many(connects=connects)
        return [q["sql"].split()[0] for q in queries]

    one = statements([req(users[0], "s0")])
    # Half of them resumed, half new, in one call.
    many = statements([req(u, f"s{i}") for i, u in enumerate(users)])
    assert one == many == ["INSERT", "SELECT", "UPDATE", "INSERT"], many
    assert ConnectionEvent.objects.filter(kind=Kind.CONNECT).count() == 46


def test_admit_refuses_alone_and_leaves_nothing_behind(alice):
    session_ensure_many(connects=[req(alice, "known")])

    def admit(connects):
        return [
            PermissionError(c.thread_id) if c.thread_id == "closed" else None
            for c in connects
        ]

    results = session_ensure_many(
        connects=[
            req(alice, "fresh", "closed"),
            req(alice, "known", "closed"),
            req(alice, "other", "open"),
        ],
        admit=admit,
    )
    assert [type(r) for r in results] == [
        PermissionError,
        PermissionError,
        SessionOpened,
    ]
    # The row made for the refused new session is gone; the known one untouched.
    assert not ChatSession.objects.filter(pk="fresh").exists()
    assert counts("known") == (alice.pk, 1, 0)
    assert connect_events() == [
        ("known", alice.pk, "main"),
        ("other", alice.pk, "open"),
    ]


def test_a_refused_foreign_request_deletes_nothing(alice, bob):
    """A row nobody connected to yet (made in the admin) stays alice's."""
    ChatSession.objects.create(
        id="made", owner=alice, last_seen_at=timezone.now(), connect_count=0
    )
    (refused,) = session_ensure_many(
        connects=[req(bob, "made")], admit=lambda connects: [None] * len(connects)
    )
    assert isinstance(refused, SessionForbidden)
    assert counts("made") == (alice.pk, 0, 0)


def test_admit_sees_only_the_owned_requests(alice, bob):
    session_ensure_many(connects=[req(alice, "s1")])
    seen = []

    def admit(connects):
        seen.extend((c.session_id, c.user.pk) for c in connects)
        return [None] * len(connects)

    session_ensure_many(connects=[req(bob, "s1"), req(bob, "s2")], admit=admit)
    assert seen == [("s2", bob.pk)]


def test_refusals_leave_the_callers_transaction_usable(alice, bob):
    session_ensure_many(connects=[req(alice, "s1")])
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        (refused,) = session_ensure_many(connects=[req(bob, "s1")])
        assert isinstance(refused, SessionForbidden)
        assert ConnectionEvent.objects.count() == 1
    assert not [q for q in queries if "SAVEPOINT" in q["sql"]]


def test_nothing_to_ensure(db):
    with CaptureQueriesContext(connection) as queries:
        assert session_ensure_many(connects=[]) == []
    assert not [q for q in queries if "SAVEPOINT" not in q["sql"]]


# --- two instances at once, on real PostgreSQL threads ------------------------------

ROUNDS = 12


def _instance(name, plans, errors, results, barrier) -> None:
    """One 'instance': its batches of overlapping session ids, in its own order."""
    try:
        barrier.wait(10)
        for batch in plans:
            with transaction.atomic():
                results.extend(session_ensure_many(connects=batch))
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append((name, exc))
    finally:
        connection.close()


def _sweeper(ids, errors, barrier, user) -> None:
    """Closes and idle marks of the same sessions, racing the connects."""
    try:
        barrier.wait(10)
        for n in range(ROUNDS):
            closed = [
                SocketClosed(s, user, "main", 1000, "normal_closure", 1.0, "inst-c")
                for s in ids[n % 3 :: 2]
            ]
            session_detach_many(closed)
            session_mark_idle_many(list(reversed(ids)))
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append(("sweeper", exc))
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_two_instances_overlapping_sessions_no_deadlock_one_owner(alice, bob):
    ids = [f"s{i:02d}" for i in range(16)]
    # Each instance asks for every id in each batch, in orders of its own: the
    # locks must be taken in one order whatever the batch's.
    plan_a = [
        [req(alice, s, "a") for s in ids[n % 4 :] + ids[: n % 4]] for n in range(ROUNDS)
    ]
    plan_b = [[req(bob, s, "b") for s in reversed(ids)] for _ in range(ROUNDS)]
    errors, results_a, results_b = [], [], []
    barrier = threading.Barrier(3)
    threads = [
        threading.Thread(
            target=_instance, args=("a", plan_a, errors, results_a, barrier)
        ),
        threading.Thread(
            target=_instance, args=("b", plan_b, errors, results_b, barrier)
        ),
        threading.Thread(target=_sweeper, args=(ids, errors, barrier, alice)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    for session_id in ids:
        owner, connects, resumed = counts(session_id)
        mine = results_a if owner == alice.pk else results_b
        theirs = results_b if owner == alice.pk else results_a
        opened = [
            r
            for r in mine
            if isinstance(r, SessionOpened) and r.session.pk == session_id
        ]
        # Every connect of the owner counted, the first one as new, none of the other's.
        assert connects == ROUNDS and resumed == ROUNDS - 1, session_id
        assert sum(not r.resumed for r in opened) == 1
        refused = [
            r
            for r in theirs
            if isinstance(r, SessionForbidden) and str(r) == session_id
        ]
        assert len(refused) == ROUNDS
        events = ConnectionEvent.objects.filter(
            kind=Kind.CONNECT, session_id=session_id
        )
        assert set(events.values_list("user_id", flat=True)) == {owner}
        assert events.count() == ROUNDS
