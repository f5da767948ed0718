"""sessions_app.services: session ownership, resume counting, connection events."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sessions_app.models import ChatSession, ConnectionEvent
from sessions_app.services import (
    SessionForbidden,
    SocketClosed,
    session_detach_many,
    session_ensure,
    session_mark_idle_many,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("statements")]

Kind = ConnectionEvent.Kind
Status = ChatSession.Status


def ensure(user, session_id="s1", thread_id="main", instance="inst-a"):
    return session_ensure(
        session_id=session_id, user=user, thread_id=thread_id, instance=instance
    )


def detach(user, session_id="s1", thread_id="main", **extra):
    fields = {
        "code": 1000,
        "reason": "normal_closure",
        "duration_s": 1.25,
        "instance": "inst-a",
    }
    fields.update(extra)
    session_detach_many(
        [SocketClosed(session_id=session_id, user=user, thread_id=thread_id, **fields)]
    )


# --- session_ensure -----------------------------------------------------------------


def test_first_connect_creates_the_session(alice):
    opened = ensure(alice, thread_id="lobby")
    assert opened.resumed is False
    session = ChatSession.objects.get(pk="s1")
    assert session.owner == alice
    assert session.thread_key == "lobby"
    assert session.status == Status.ACTIVE
    assert (session.connect_count, session.resumed_count) == (1, 0)
    assert opened.session == session


def test_first_connect_records_an_event(alice):
    ensure(alice, thread_id="lobby", instance="inst-b")
    (event,) = ConnectionEvent.objects.all()
    assert event.kind == Kind.CONNECT
    assert event.session_id == "s1"
    assert event.session_key == "s1"
    assert event.user == alice
    assert event.thread_key == "lobby"
    assert event.instance == "inst-b"
    assert event.code is None


def test_reconnect_resumes_and_counts(alice):
    ensure(alice)
    second = ensure(alice)
    third = ensure(alice, thread_id="other")
    assert second.resumed is True
    assert third.resumed is True
    session = ChatSession.objects.get(pk="s1")
    assert (session.connect_count, session.resumed_count) == (3, 2)
    assert session.thread_key == "other"
    assert third.session.connect_count == 3
    assert ConnectionEvent.objects.filter(kind=Kind.CONNECT).count() == 3


def test_reconnect_reactivates_an_idle_session(alice):
    ensure(alice)
    detach(alice)
    assert session_mark_idle_many(["s1"]) == 1
    assert ChatSession.objects.get(pk="s1").status == Status.IDLE
    ensure(alice)
    assert ChatSession.objects.get(pk="s1").status == Status.ACTIVE


def test_sessions_are_independent(alice):
    ensure(alice, session_id="s1")
    other = ensure(alice, session_id="s2")
    assert other.resumed is False


def test_session_of_another_user_is_forbidden(alice, bob):
    ensure(alice)
    with pytest.raises(SessionForbidden):
        ensure(bob)
    session = ChatSession.objects.get(pk="s1")
    assert session.owner == alice
    assert session.connect_count == 1
    assert ConnectionEvent.objects.count() == 1  # nothing recorded for bob


def test_the_thread_is_only_a_key(alice):
    """Sessions know no chat models: any thread id is stored as it is."""
    ensure(alice, thread_id="no-such-thread")
    assert ChatSession.objects.get(pk="s1").thread_key == "no-such-thread"


def test_ensure_in_the_callers_transaction_adds_no_savepoint(alice):
    ensure(alice)
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        assert ensure(alice).resumed is True
    assert not [q for q in queries if "SAVEPOINT" in q["sql"]]


def test_a_refusal_leaves_the_callers_transaction_usable(alice, bob):
    ensure(alice)
    with transaction.atomic():
        with pytest.raises(SessionForbidden):
            ensure(bob)
        assert ConnectionEvent.objects.count() == 1  # nothing written, still usable


# --- session_detach_many, one socket ------------------------------------------------


def test_detach_records_the_close_and_leaves_the_status_to_the_cleanup(alice):
    ensure(alice)
    before = ChatSession.objects.get(pk="s1").last_seen_at
    detach(alice, code=4403, reason="forbidden", duration_s=2.5)
    session = ChatSession.objects.get(pk="s1")
    assert session.status == Status.ACTIVE  # the grace-period cleanup decides
    assert session.last_seen_at >= before
    event = ConnectionEvent.objects.get(kind=Kind.DISCONNECT)
    assert event.session_id == "s1"
    assert event.session_key == "s1"
    assert event.user == alice
    assert event.thread_key == "main"
    assert (event.code, event.reason, event.duration_s) == (4403, "forbidden", 2.5)
    assert event.instance == "inst-a"


def test_detach_updates_last_seen(alice):
    ensure(alice)
    stale = timezone.now() - timedelta(hours=1)
    ChatSession.objects.filter(pk="s1").update(last_seen_at=stale)
    detach(alice)
    assert ChatSession.objects.get(pk="s1").last_seen_at > stale


def test_detach_of_a_refused_socket_only_records_the_event(alice, bob):
    ensure(alice)
    # bob's socket was refused (4403): the session is not his
    detach(bob, code=4403, reason="forbidden")
    session = ChatSession.objects.get(pk="s1")
    assert session.status == Status.ACTIVE
    event = ConnectionEvent.objects.get(kind=Kind.DISCONNECT)
    assert event.session is None
    assert event.session_key == "s1"
    assert event.user == bob
    assert event.code == 4403


def test_detach_by_another_user_does_not_touch_the_session(alice, bob):
    ensure(alice)
    stale = timezone.now() - timedelta(hours=1)
    ChatSession.objects.filter(pk="s1").update(last_seen_at=stale)
    detach(bob, code=1000)
    assert ChatSession.objects.get(pk="s1").last_seen_at == stale
    assert ChatSession.objects.get(pk="s1").status == Status.ACTIVE
    assert ConnectionEvent.objects.get(kind=Kind.DISCONNECT).session is None


def test_detach_of_an_anonymous_socket(db):
    detach(AnonymousUser(), session_id="x" * 80, code=4401, reason="unauthenticated")
    event = ConnectionEvent.objects.get(kind=Kind.DISCONNECT)
    assert event.user is None
    assert event.session_key == "x" * 64
    assert (event.code, event.reason) == (4401, "unauthenticated")
