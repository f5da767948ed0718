"""One socket's DB work at connect (socket_open_many of one), in one transaction."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat.connects import SocketOpen, socket_open_many
from chat.models import Thread
from chat.services import ThreadForbidden
from sessions_app.models import ChatSession, ConnectionEvent
from sessions_app.services import SessionForbidden

pytestmark = pytest.mark.django_db


def open_(user, session_id="s1", thread_id="main", after_seq=None, max_replay=100):
    """Open one socket; its refusal (ThreadForbidden, SessionForbidden) raised."""
    request = SocketOpen(session_id, user, thread_id, "inst-a", after_seq)
    (opened,) = socket_open_many(opens=[request], max_replay=max_replay)
    if isinstance(opened, Exception):
        raise opened
    return opened


def test_first_open_creates_the_thread_the_session_and_the_event(alice):
    opened = open_(alice, thread_id="lobby")
    assert opened.resumed is False
    assert Thread.objects.get(pk="lobby").private is False  # joined = created
    session = ChatSession.objects.get(pk="s1")
    assert (session.owner, session.thread_key) == (alice, "lobby")
    (event,) = ConnectionEvent.objects.all()
    assert (event.kind, event.session_id, event.thread_key, event.instance) == (
        ConnectionEvent.Kind.CONNECT,
        "s1",
        "lobby",
        "inst-a",
    )
    replay = opened.replay
    assert (replay.last_seq, replay.messages, replay.recovered) == (0, [], True)


def test_reopen_resumes_and_replays_what_was_missed(alice, bob, post):
    open_(alice, thread_id="room")
    post("room", bob, 3)
    opened = open_(alice, thread_id="room", after_seq=1)
    assert opened.resumed is True
    assert [m.seq for m in opened.replay.messages] == [2, 3]
    assert (opened.replay.last_seq, opened.replay.recovered) == (3, True)


def test_replay_over_the_maximum_is_nothing(alice, bob, post):
    open_(alice, thread_id="room")
    post("room", bob, 5)
    replay = open_(alice, thread_id="room", after_seq=0, max_replay=4).replay
    assert (replay.last_seq, replay.messages, replay.recovered) == (5, [], False)


def test_forbidden_session_does_not_create_the_thread(alice, bob):
    open_(alice)
    with pytest.raises(SessionForbidden):
        open_(bob, thread_id="brand-new")
    assert not Thread.objects.filter(pk="brand-new").exists()
    assert ConnectionEvent.objects.count() == 1  # nothing recorded for bob
    assert ChatSession.objects.get(pk="s1").connect_count == 1


def test_private_thread_non_member_is_forbidden(alice, bob, make_thread):
    make_thread("secret", private=True, members=[alice])
    with pytest.raises(ThreadForbidden):
        open_(bob, thread_id="secret")
    assert not ChatSession.objects.exists()
    assert not ConnectionEvent.objects.exists()
    assert open_(alice, session_id="s2", thread_id="secret").resumed is False


@pytest.mark.django_db(transaction=True)
def test_a_reopen_is_one_transaction_without_savepoints(alice):
    open_(alice)
    with CaptureQueriesContext(connection) as queries:
        open_(alice)
    statements = [q["sql"].split()[0] for q in queries]
    assert "SAVEPOINT" not in statements, statements
    assert connection.get_autocommit()  # committed, not left open
