"""sessions_app.services: session_detach_many and session_mark_idle_many."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sessions_app import services
from sessions_app.models import ChatSession, ConnectionEvent
from sessions_app.services import (
    SocketClosed,
    session_detach_many,
    session_ensure,
    session_mark_idle_many,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("statements")]

Kind = ConnectionEvent.Kind
Status = ChatSession.Status


def ensure(user, session_id, thread_id="main"):
    return session_ensure(
        session_id=session_id, user=user, thread_id=thread_id, instance="inst-a"
    )


def closed(user, session_id, thread_id="main", **extra) -> SocketClosed:
    fields = {
        "code": 1000,
        "reason": "normal_closure",
        "duration_s": 1.25,
        "instance": "inst-a",
    }
    fields.update(extra)
    return SocketClosed(session_id=session_id, user=user, thread_id=thread_id, **fields)


def make_stale(*session_ids: str):
    stale = timezone.now() - timedelta(hours=1)
    ChatSession.objects.filter(pk__in=session_ids).update(last_seen_at=stale)
    return stale


def disconnects() -> list[ConnectionEvent]:
    return list(ConnectionEvent.objects.filter(kind=Kind.DISCONNECT).order_by("pk"))


# --- session_detach_many ----------------------------------------------------------


def test_detach_many_records_one_event_per_socket_in_order(alice, bob):
    ensure(alice, "s1", "lobby")
    ensure(bob, "s2", "main")
    session_detach_many(
        [
            closed(alice, "s1", "lobby", code=1001, reason="going_away"),
            closed(bob, "s2", "main", code=1006, reason="abnormal", duration_s=9.5),
            closed(alice, "s1", "lobby", code=4403, instance="inst-b"),
        ]
    )
    rows = [
        (
            e.kind,
            e.session_id,
            e.session_key,
            e.user_id,
            e.thread_key,
            e.code,
            e.reason,
            e.duration_s,
            e.instance,
        )
        for e in disconnects()
    ]
    disconnect = Kind.DISCONNECT
    assert rows == [
        (disconnect, "s1", "s1", alice.pk, "lobby", 1001, "going_away", 1.25, "inst-a"),
        (disconnect, "s2", "s2", bob.pk, "main", 1006, "abnormal", 9.5, "inst-a"),
        (
            disconnect,
            "s1",
            "s1",
            alice.pk,
            "lobby",
            4403,
            "normal_closure",
            1.25,
            "inst-b",
        ),
    ]


def test_detach_many_updates_last_seen_of_owned_sessions_only(alice, bob):
    for session_id in ("s1", "s2", "s3"):
        ensure(alice, session_id)
    stale = make_stale("s1", "s2", "s3")
    before = timezone.now()
    session_detach_many([closed(alice, "s1"), closed(alice, "s2")])
    seen = dict(ChatSession.objects.values_list("pk", "last_seen_at"))
    assert seen["s1"] >= before and seen["s2"] >= before
    assert seen["s3"] == stale  # not in the batch
    statuses = set(ChatSession.objects.values_list("status", flat=True))
    assert statuses == {Status.ACTIVE}  # the cleanup decides, not the detach


def test_detach_many_does_not_touch_a_session_of_another_user(alice, bob):
    ensure(alice, "s1")
    ensure(bob, "s2")
    stale = make_stale("s1", "s2")
    session_detach_many(
        [closed(bob, "s1", code=4403, reason="forbidden"), closed(bob, "s2")]
    )
    assert ChatSession.objects.get(pk="s1").last_seen_at == stale
    assert ChatSession.objects.get(pk="s2").last_seen_at > stale
    foreign, own = disconnects()
    assert (foreign.session_id, foreign.session_key, foreign.user_id) == (
        None,
        "s1",
        bob.pk,
    )
    assert (own.session_id, own.user_id) == ("s2", bob.pk)


def test_detach_many_unknown_sessions_and_anonymous_sockets(alice):
    ensure(alice, "s1")
    stale = make_stale("s1")
    long_id = "x" * 80
    session_detach_many(
        [
            closed(alice, "nope"),
            closed(AnonymousUser(), "s1", code=4401, reason="unauthenticated"),
            closed(AnonymousUser(), long_id, "t" * 80, instance="i" * 200),
        ]
    )
    assert ChatSession.objects.get(pk="s1").last_seen_at == stale
    assert not ChatSession.objects.filter(pk="nope").exists()
    unknown, anon_s1, anon_long = disconnects()
    assert (unknown.session_id, unknown.session_key, unknown.user_id) == (
        None,
        "nope",
        alice.pk,
    )
    assert (anon_s1.session_id, anon_s1.user_id, anon_s1.code) == (None, None, 4401)
    assert anon_long.session_key == "x" * 64
    assert anon_long.thread_key == "t" * 64
    assert anon_long.instance == "i" * 128


def test_anonymous_socket_in_a_batch_with_the_owner_is_not_linked(alice):
    ensure(alice, "s1")
    session_detach_many([closed(alice, "s1"), closed(AnonymousUser(), "s1", code=4401)])
    owner, anonymous = disconnects()
    assert (owner.session_id, owner.user_id) == ("s1", alice.pk)
    assert (anonymous.session_id, anonymous.user_id) == (None, None)


def test_detach_many_of_nothing_writes_nothing(alice):
    ensure(alice, "s1")
    with CaptureQueriesContext(connection) as queries:
        session_detach_many([])
    assert not disconnects()
    assert not [q for q in queries if "INSERT" in q["sql"] or "UPDATE" in q["sql"]]


def test_detach_many_is_all_or_nothing(alice, monkeypatch):
    ensure(alice, "s1")
    stale = make_stale("s1")

    def broken_insert(*args, **kwargs):
        raise RuntimeError("insert failed")

    monkeypatch.setattr(services, "events_insert", broken_insert)
    with pytest.raises(RuntimeError):
        session_detach_many([closed(alice, "s1")])
    # The last_seen_at UPDATE ran before the INSERT and was rolled back with it.
    assert ChatSession.objects.get(pk="s1").last_seen_at == stale


def _detach_queries(sockets: list[SocketClosed]) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        session_detach_many(sockets)
    return [q["sql"] for q in queries]


def test_detach_many_queries_do_not_grow_with_the_batch(make_user):
    users = [make_user(f"u{i}") for i in range(50)]
    for i, user in enumerate(users):
        ensure(user, f"s{i}")
    one = _detach_queries([closed(users[0], "s0")])
    fifty = _detach_queries([closed(u, f"s{i}") for i, u in enumerate(users)])
    assert len(fifty) == len(one), (one, fifty)
    statements = [s.split()[0] for s in fifty if "SAVEPOINT" not in s]
    assert statements == ["SELECT", "UPDATE", "INSERT"]
    assert len(disconnects()) == 51
    assert (
        ConnectionEvent.objects.filter(
            kind=Kind.DISCONNECT, session__isnull=False
        ).count()
        == 51
    )


# --- session_mark_idle_many -------------------------------------------------------


def test_mark_idle_many_changes_active_sessions_and_counts_them(alice, bob):
    for session_id in ("s1", "s2", "s3"):
        ensure(alice, session_id)
    ensure(bob, "s4")
    ChatSession.objects.filter(pk="s3").update(status=Status.IDLE)
    stale = make_stale("s1", "s2", "s3", "s4")
    assert session_mark_idle_many(["s1", "s2", "s3", "nope", "s1"]) == 2
    status = dict(ChatSession.objects.values_list("pk", "status"))
    assert status == {
        "s1": Status.IDLE,
        "s2": Status.IDLE,
        "s3": Status.IDLE,
        "s4": Status.ACTIVE,
    }
    seen = dict(ChatSession.objects.values_list("pk", "last_seen_at"))
    assert seen["s1"] > stale and seen["s2"] > stale
    assert seen["s3"] == stale and seen["s4"] == stale  # untouched
    assert session_mark_idle_many(["s1", "s2"]) == 0


def test_mark_idle_many_leaves_closed_sessions_alone(alice):
    ensure(alice, "s1")
    ChatSession.objects.filter(pk="s1").update(status=Status.CLOSED)
    assert session_mark_idle_many(["s1"]) == 0
    assert ChatSession.objects.get(pk="s1").status == Status.CLOSED


def test_mark_idle_many_of_nothing(alice):
    ensure(alice, "s1")
    assert session_mark_idle_many([]) == 0
    assert ChatSession.objects.get(pk="s1").status == Status.ACTIVE


def test_mark_idle_many_locks_in_id_order_then_updates(make_user):
    users = [make_user(f"u{i}") for i in range(50)]
    for i, user in enumerate(users):
        ensure(user, f"s{i}")
    with CaptureQueriesContext(connection) as one:
        assert session_mark_idle_many(["s0"]) == 1
    with CaptureQueriesContext(connection) as many:
        assert session_mark_idle_many([f"s{i}" for i in range(50)]) == 49
    assert len(one) == len(many) == 2
    lock, update = (q["sql"] for q in many)
    assert lock.startswith("SELECT") and lock.endswith("FOR UPDATE"), lock
    assert " ORDER BY " in lock, lock
    assert update.startswith("UPDATE")


def test_a_socket_without_a_user_in_a_batch_with_the_owner(alice):
    """user=None beside the owner's socket of the same session fails nothing."""
    ensure(alice, "s1")
    session_detach_many([closed(alice, "s1"), closed(None, "s1")])
    events = disconnects()
    assert [(e.session_id, e.user_id) for e in events] == [
        ("s1", alice.pk),
        (None, None),
    ]
