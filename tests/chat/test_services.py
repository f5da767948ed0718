"""chat.services: joining and creating threads, gap-free idempotent messages."""

import threading

import pytest
from django.db import DataError, close_old_connections, connection

from chat.models import Message, Thread
from chat.services import (
    ThreadExists,
    ThreadForbidden,
    UnknownMembers,
    message_create,
    thread_create,
    thread_join,
)

pytestmark = pytest.mark.django_db


# --- thread_join --------------------------------------------------------------------


def test_join_creates_a_public_thread(alice):
    thread = thread_join(thread_id="new-room", user=alice)
    stored = Thread.objects.get(pk="new-room")
    assert thread == stored
    assert stored.private is False
    assert stored.last_seq == 0


def test_join_returns_the_existing_thread(alice, bob, make_thread, post):
    make_thread("room")
    post("room", bob, 2)
    thread = thread_join(thread_id="room", user=alice)
    assert thread.last_seq == 2
    assert Thread.objects.count() == 1


def test_join_private_thread_as_member(alice, make_thread):
    make_thread("secret", private=True, members=[alice])
    assert thread_join(thread_id="secret", user=alice).pk == "secret"


def test_join_private_thread_as_non_member_is_forbidden(alice, bob, make_thread):
    make_thread("secret", private=True, members=[alice])
    with pytest.raises(ThreadForbidden):
        thread_join(thread_id="secret", user=bob)


# --- thread_create ------------------------------------------------------------------


def test_create_with_members(alice, bob, make_user):
    make_user("carol")
    thread = thread_create(
        thread_id="team", private=True, member_usernames=["bob"], creator=alice
    )
    stored = Thread.objects.get(pk="team")
    assert stored == thread
    assert stored.private is True
    assert stored.created_by == alice
    assert sorted(u.username for u in stored.members.all()) == ["alice", "bob"]


def test_creator_is_always_a_member(alice):
    thread_create(thread_id="solo", private=True, member_usernames=[], creator=alice)
    assert list(Thread.objects.get(pk="solo").members.all()) == [alice]


def test_creator_listed_as_member_is_not_doubled(alice, bob):
    thread_create(
        thread_id="t", private=False, member_usernames=["alice", "bob"], creator=alice
    )
    assert Thread.objects.get(pk="t").members.count() == 2


def test_unknown_members_are_refused_and_nothing_is_created(alice, bob):
    with pytest.raises(UnknownMembers) as info:
        thread_create(
            thread_id="t",
            private=True,
            member_usernames=["zed", "bob", "amy"],
            creator=alice,
        )
    assert info.value.usernames == ["amy", "zed"]
    assert not Thread.objects.filter(pk="t").exists()


def test_existing_thread_is_refused_and_kept(alice, bob):
    thread_create(thread_id="t", private=True, member_usernames=[], creator=alice)
    with pytest.raises(ThreadExists):
        thread_create(
            thread_id="t", private=False, member_usernames=["bob"], creator=bob
        )
    stored = Thread.objects.get(pk="t")
    assert stored.private is True
    assert stored.created_by == alice
    assert list(stored.members.all()) == [alice]


def test_create_over_a_thread_made_by_joining_is_refused(alice):
    thread_join(thread_id="main", user=alice)
    with pytest.raises(ThreadExists):
        thread_create(
            thread_id="main", private=True, member_usernames=[], creator=alice
        )
    assert Thread.objects.get(pk="main").private is False


# --- message_create -----------------------------------------------------------------


def test_seq_is_one_to_n_without_gaps(alice, bob, make_thread):
    make_thread("room")
    seqs = []
    for i in range(5):
        user = alice if i % 2 else bob
        result = message_create(
            thread_id="room", user=user, client_id=f"c{i}", text=f"hello {i}"
        )
        assert result.duplicate is False
        seqs.append(result.message.seq)
    assert seqs == [1, 2, 3, 4, 5]
    assert Thread.objects.get(pk="room").last_seq == 5
    assert list(
        Message.objects.filter(thread_id="room").values_list("seq", flat=True)
    ) == [1, 2, 3, 4, 5]


def test_message_fields(alice, make_thread):
    make_thread("room")
    message = message_create(
        thread_id="room", user=alice, client_id="abc", text="héllo"
    ).message
    stored = Message.objects.get(pk=message.pk)
    assert (stored.thread_id, stored.seq, stored.client_id, stored.text) == (
        "room",
        1,
        "abc",
        "héllo",
    )
    assert stored.user == alice
    assert message.user is alice
    assert stored.created_at is not None


def test_resend_returns_the_original(alice, make_thread):
    make_thread("room")
    first = message_create(thread_id="room", user=alice, client_id="c1", text="one")
    message_create(thread_id="room", user=alice, client_id="c2", text="two")
    again = message_create(
        thread_id="room", user=alice, client_id="c1", text="one, edited"
    )
    assert again.duplicate is True
    assert again.message.pk == first.message.pk
    assert again.message.seq == 1
    assert again.message.text == "one"
    assert again.message.user == alice
    assert Thread.objects.get(pk="room").last_seq == 2
    assert Message.objects.filter(thread_id="room").count() == 2
    nxt = message_create(thread_id="room", user=alice, client_id="c3", text="three")
    assert nxt.message.seq == 3  # the resend left no gap


def test_same_client_id_from_another_user_is_a_new_message(alice, bob, make_thread):
    make_thread("room")
    message_create(thread_id="room", user=alice, client_id="c1", text="a")
    result = message_create(thread_id="room", user=bob, client_id="c1", text="b")
    assert (result.duplicate, result.message.seq) == (False, 2)


def test_sequences_are_per_thread(alice, make_thread):
    make_thread("a")
    make_thread("b")
    message_create(thread_id="a", user=alice, client_id="x", text="1")
    message_create(thread_id="a", user=alice, client_id="y", text="2")
    result = message_create(thread_id="b", user=alice, client_id="x", text="1")
    assert (result.duplicate, result.message.seq) == (False, 1)
    assert Thread.objects.get(pk="b").last_seq == 1


def test_message_in_a_missing_thread_is_an_error(alice):
    with pytest.raises(Thread.DoesNotExist):
        message_create(thread_id="nope", user=alice, client_id="c", text="t")
    assert not Message.objects.exists()


def test_failed_insert_rolls_back_the_seq_bump(alice, make_thread):
    make_thread("room")
    message_create(thread_id="room", user=alice, client_id="c1", text="x")
    # A text the column refuses (NUL byte): the insert fails inside the transaction.
    with pytest.raises(DataError):
        message_create(thread_id="room", user=alice, client_id="c2", text="bad\x00")
    assert Thread.objects.get(pk="room").last_seq == 1
    ok = message_create(thread_id="room", user=alice, client_id="c3", text="fine")
    assert ok.message.seq == 2


# --- concurrency --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_get_gap_free_seqs(make_user):
    """Real threads, each with its own PostgreSQL connection, writing at once."""
    writers, per_writer = 6, 15
    users = [make_user(f"writer{i}") for i in range(writers)]
    Thread.objects.create(id="busy")
    connection.close()
    start = threading.Barrier(writers)
    errors: list[BaseException] = []
    results: dict[int, list[int]] = {}

    def write(index: int) -> None:
        try:
            start.wait(timeout=10)
            seqs = []
            for n in range(per_writer):
                result = message_create(
                    thread_id="busy",
                    user=users[index],
                    client_id=f"w{index}-{n}",
                    text=f"from {index}: {n}",
                )
                assert result.duplicate is False
                seqs.append(result.message.seq)
                # Every other message is resent at once: never a new seq.
                if n % 2:
                    again = message_create(
                        thread_id="busy",
                        user=users[index],
                        client_id=f"w{index}-{n}",
                        text="resend",
                    )
                    assert (again.duplicate, again.message.seq) == (True, seqs[-1])
            results[index] = seqs
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    total = writers * per_writer
    all_seqs = sorted(s for seqs in results.values() for s in seqs)
    assert all_seqs == list(range(1, total + 1))
    for seqs in results.values():
        assert seqs == sorted(seqs)  # each writer's own messages in order
    stored = list(
        Message.objects.filter(thread_id="busy")
        .order_by("seq")
        .values_list("seq", "client_id")
    )
    assert [s for s, _ in stored] == list(range(1, total + 1))
    assert len({c for _, c in stored}) == total
    assert Thread.objects.get(pk="busy").last_seq == total


@pytest.mark.django_db(transaction=True)
def test_concurrent_resends_of_one_id_store_it_once(alice):
    Thread.objects.create(id="race")
    connection.close()
    racers = 8
    start = threading.Barrier(racers)
    outcomes: list[tuple[bool, int]] = []
    errors: list[BaseException] = []

    def send() -> None:
        try:
            start.wait(timeout=10)
            result = message_create(
                thread_id="race", user=alice, client_id="same", text="hi"
            )
            outcomes.append((result.duplicate, result.message.seq))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert sorted(outcomes) == [(False, 1)] + [(True, 1)] * (racers - 1)
    assert Message.objects.filter(thread_id="race").count() == 1
    assert Thread.objects.get(pk="race").last_seq == 1
