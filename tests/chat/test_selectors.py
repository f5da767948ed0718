"""chat.selectors: thread reads, history pages and the all-or-nothing replay."""

import pytest

from chat.selectors import (
    messages_after,
    messages_between,
    replay_window,
    thread_get,
    thread_user_allowed,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def room(make_thread, post, alice, bob):
    """A public thread with ten messages, alternating alice (odd) and bob (even)."""
    thread = make_thread("room")
    for i in range(1, 11):
        post("room", alice if i % 2 else bob, 1, prefix=f"c{i}-")
    thread.refresh_from_db()
    return thread


def seqs(messages) -> list[int]:
    return [m.seq for m in messages]


def test_thread_get(make_thread):
    make_thread("here")
    assert thread_get(thread_id="here").pk == "here"
    assert thread_get(thread_id="nowhere") is None


def test_thread_user_allowed(make_thread, alice, bob):
    public = make_thread("pub")
    private = make_thread("priv", private=True, members=[alice])
    assert thread_user_allowed(thread=public, user=bob) is True
    assert thread_user_allowed(thread=private, user=alice) is True
    assert thread_user_allowed(thread=private, user=bob) is False


def test_messages_after(room):
    assert seqs(messages_after(thread_id="room", after_seq=0, limit=100)) == list(
        range(1, 11)
    )
    assert seqs(messages_after(thread_id="room", after_seq=7, limit=100)) == [8, 9, 10]
    assert seqs(messages_after(thread_id="room", after_seq=2, limit=3)) == [3, 4, 5]
    assert seqs(messages_after(thread_id="room", after_seq=10, limit=5)) == []


def test_messages_after_only_reads_its_thread(room, make_thread, post, alice):
    make_thread("other")
    post("other", alice, 3)
    assert seqs(messages_after(thread_id="other", after_seq=0, limit=10)) == [1, 2, 3]
    assert len(messages_after(thread_id="room", after_seq=0, limit=100)) == 10


def test_messages_after_loads_users_in_the_same_query(room, django_assert_num_queries):
    with django_assert_num_queries(1):
        users = [
            m.user.username
            for m in messages_after(thread_id="room", after_seq=0, limit=4)
        ]
    assert users == ["alice", "bob", "alice", "bob"]


# --- replay_window ------------------------------------------------------------------


def test_replay_without_last_seq(room):
    replay = replay_window(thread_id="room", after_seq=None, max_replay=1000)
    assert (replay.last_seq, replay.messages, replay.recovered) == (10, [], True)


def test_replay_when_behind(room):
    replay = replay_window(thread_id="room", after_seq=6, max_replay=1000)
    assert replay.last_seq == 10
    assert seqs(replay.messages) == [7, 8, 9, 10]
    assert replay.recovered is True
    assert replay.messages[0].text == "text c7-1"
    assert replay.messages[0].user.username == "alice"


def test_replay_from_zero(room):
    replay = replay_window(thread_id="room", after_seq=0, max_replay=1000)
    assert seqs(replay.messages) == list(range(1, 11))


def test_replay_of_exactly_the_maximum_is_complete(room):
    replay = replay_window(thread_id="room", after_seq=5, max_replay=5)
    assert seqs(replay.messages) == [6, 7, 8, 9, 10]
    assert replay.recovered is True


def test_replay_over_the_maximum_is_nothing_not_partial(room):
    replay = replay_window(thread_id="room", after_seq=4, max_replay=5)
    assert replay.messages == []
    assert replay.recovered is False
    assert replay.last_seq == 10


def test_replay_when_up_to_date(room):
    replay = replay_window(thread_id="room", after_seq=10, max_replay=1000)
    assert (replay.last_seq, replay.messages, replay.recovered) == (10, [], True)


def test_replay_when_ahead_of_the_thread_is_a_reset(room):
    # The client holds seqs the database does not: it went back in time.
    replay = replay_window(thread_id="room", after_seq=50, max_replay=1000)
    assert (replay.last_seq, replay.messages, replay.recovered) == (10, [], False)
    assert (replay.reset, replay.epoch) == (True, room.epoch)


def test_replay_of_an_unknown_or_empty_thread(make_thread):
    make_thread("empty")
    for thread_id in ("empty", "unknown"):
        replay = replay_window(thread_id=thread_id, after_seq=0, max_replay=10)
        assert (replay.last_seq, replay.messages, replay.recovered) == (0, [], True)
        assert replay.reset is False
        ahead = replay_window(thread_id=thread_id, after_seq=3, max_replay=10)
        assert (ahead.recovered, ahead.reset) == (False, True)


def test_replay_with_the_threads_epoch(room):
    replay = replay_window(
        thread_id="room", after_seq=7, max_replay=1000, epoch=room.epoch
    )
    assert (seqs(replay.messages), replay.recovered, replay.reset) == (
        [8, 9, 10],
        True,
        False,
    )


@pytest.mark.parametrize("after_seq", [None, 0, 7, 10])
def test_replay_with_another_epoch_is_a_reset(room, after_seq):
    replay = replay_window(
        thread_id="room", after_seq=after_seq, max_replay=1000, epoch="other-1"
    )
    assert (replay.messages, replay.recovered, replay.reset) == ([], False, True)
    assert (replay.last_seq, replay.epoch) == (10, room.epoch)


# --- messages_between ---------------------------------------------------------------


def test_messages_between(room):
    assert seqs(messages_between(thread_id="room", after_seq=3, upto_seq=6)) == [
        4,
        5,
        6,
    ]
    assert seqs(messages_between(thread_id="room", after_seq=9, upto_seq=20)) == [10]
    assert messages_between(thread_id="room", after_seq=5, upto_seq=5) == []
    assert messages_between(thread_id="room", after_seq=6, upto_seq=3) == []
    assert messages_between(thread_id="nope", after_seq=0, upto_seq=5) == []


def test_messages_between_loads_users(room, django_assert_num_queries):
    with django_assert_num_queries(1):
        names = [
            m.user.username
            for m in messages_between(thread_id="room", after_seq=0, upto_seq=2)
        ]
    assert names == ["alice", "bob"]
