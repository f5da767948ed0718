"""chat.services.message_create_many: a batch of messages in one transaction."""

import threading

import pytest
from django.db import DataError, connection
from django.test.utils import CaptureQueriesContext

from chat.models import Message, Thread
from chat.services import (
    MessageResult,
    NewMessage,
    ThreadForbidden,
    message_create,
    message_create_many,
)

pytestmark = pytest.mark.django_db


def new(thread_id: str, user, client_id: str, text: str = "") -> NewMessage:
    return NewMessage(
        thread_id=thread_id, user=user, client_id=client_id, text=text or client_id
    )


def outcome(result: MessageResult | Exception) -> tuple:
    """(seq, duplicate) of a result, or the error's type."""
    if isinstance(result, Exception):
        return (type(result),)
    return (result.message.seq, result.duplicate)


def stored(thread_id: str) -> list[tuple[int, str, str]]:
    return list(
        Message.objects.filter(thread_id=thread_id)
        .order_by("seq")
        .values_list("seq", "user__username", "client_id")
    )


def test_empty_batch_does_nothing(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert message_create_many(items=[]) == []


def test_mixed_threads_get_gap_free_seqs_in_item_order(alice, bob, make_thread, post):
    make_thread("a")
    make_thread("b")
    post("b", bob, 2)
    items = [
        new("a", alice, "1"),
        new("b", alice, "1"),
        new("a", bob, "1"),
        new("b", bob, "x"),
        new("a", alice, "2"),
    ]
    results = message_create_many(items=items)
    assert [outcome(r) for r in results] == [
        (1, False),
        (3, False),
        (2, False),
        (4, False),
        (3, False),
    ]
    assert stored("a") == [(1, "alice", "1"), (2, "bob", "1"), (3, "alice", "2")]
    assert [s for s, _, _ in stored("b")] == [1, 2, 3, 4]
    last = dict(Thread.objects.values_list("pk", "last_seq"))
    assert last == {"a": 3, "b": 4}
    first = results[0].message
    assert (first.thread_id, first.client_id, first.text) == ("a", "1", "1")
    assert first.user is alice and first.pk is not None and first.created_at


def test_one_bump_and_one_insert_whatever_the_batch_size(alice, make_thread):
    make_thread("a")
    make_thread("b")
    items = [new("ab"[i % 2], alice, f"c{i}") for i in range(40)]
    with CaptureQueriesContext(connection) as queries:
        message_create_many(items=items)
    sql = [q["sql"] for q in queries.captured_queries]
    assert sum(s.startswith("UPDATE") for s in sql) == 1
    assert sum(s.startswith("INSERT") for s in sql) == 1
    assert len(sql) <= 7, sql  # savepoint, lock, lookup, bump, insert, release


def test_in_batch_resend_is_a_duplicate_of_the_first(alice, bob, make_thread):
    make_thread("room")
    items = [
        new("room", alice, "c1", "first"),
        new("room", bob, "c1", "bob's own c1"),
        new("room", alice, "c1", "again"),
        new("room", alice, "c2"),
    ]
    results = message_create_many(items=items)
    assert [outcome(r) for r in results] == [
        (1, False),
        (2, False),
        (1, True),
        (3, False),
    ]
    assert results[2].message is results[0].message
    assert results[2].message.text == "first"
    assert Thread.objects.get(pk="room").last_seq == 3


def test_resend_of_a_stored_message_gets_the_original(alice, make_thread):
    make_thread("room")
    message_create(thread_id="room", user=alice, client_id="old", text="original")
    results = message_create_many(
        items=[new("room", alice, "new"), new("room", alice, "old", "edited")]
    )
    assert [outcome(r) for r in results] == [(2, False), (1, True)]
    again = results[1].message
    assert (again.text, again.user) == ("original", alice)
    assert stored("room") == [(1, "alice", "old"), (2, "alice", "new")]


def test_refused_items_fail_alone(alice, bob, make_thread):
    make_thread("open")
    make_thread("secret", private=True, members=[alice])
    items = [
        new("open", bob, "b1"),
        new("secret", bob, "b2"),  # bob is not a member
        new("secret", alice, "a1"),
        new("nowhere", alice, "a2"),  # no such thread
        new("secret", bob, "b2"),  # the same refusal again
        new("open", alice, "a3"),
    ]
    results = message_create_many(items=items)
    assert [outcome(r) for r in results] == [
        (1, False),
        (ThreadForbidden,),
        (1, False),
        (Thread.DoesNotExist,),
        (ThreadForbidden,),
        (2, False),
    ]
    assert str(results[1]) == "secret"
    assert stored("secret") == [(1, "alice", "a1")]
    assert Thread.objects.get(pk="secret").last_seq == 1
    assert not Thread.objects.filter(pk="nowhere").exists()


def test_a_failed_insert_rolls_back_every_bump(alice, make_thread):
    make_thread("a")
    make_thread("b")
    message_create(thread_id="a", user=alice, client_id="before", text="x")
    items = [
        new("a", alice, "ok"),
        new("b", alice, "bad", "nul \x00"),
        new("b", alice, "ok"),
    ]
    with pytest.raises(DataError):
        message_create_many(items=items)
    assert dict(Thread.objects.values_list("pk", "last_seq")) == {"a": 1, "b": 0}
    assert Message.objects.count() == 1
    results = message_create_many(items=[items[0], items[2]])
    assert [outcome(r) for r in results] == [(2, False), (1, False)]


def test_single_message_create_raises_its_refusal(bob, make_thread):
    make_thread("secret", private=True)
    with pytest.raises(ThreadForbidden):
        message_create(thread_id="secret", user=bob, client_id="c", text="t")
    assert Thread.objects.get(pk="secret").last_seq == 0


# --- concurrency: real threads, each with its own PostgreSQL connection ------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_with_overlapping_ids(make_user):
    """Batches racing on one thread, resending each other's ids: 1..N, each once."""
    writers, rounds, per_batch = 6, 8, 5
    users = [make_user(f"writer{i}") for i in range(3)]
    Thread.objects.create(id="busy")
    Thread.objects.create(id="side")
    connection.close()
    start = threading.Barrier(writers)
    errors: list[BaseException] = []
    answers: list[tuple[NewMessage, MessageResult]] = []
    lock = threading.Lock()

    def write(index: int) -> None:
        try:
            start.wait(timeout=10)
            for r in range(rounds):
                # Writers w and w+3 send the very same (user, id) pairs: every one
                # of them is stored by one writer and a duplicate for the other.
                user = users[index % 3]
                batch = [new("busy", user, f"r{r}-n{n}") for n in range(per_batch)]
                batch.append(new("side", user, f"r{r}"))
                results = message_create_many(items=batch)
                with lock:
                    answers.extend(zip(batch, results, strict=True))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    for thread_id, per_user in (("busy", rounds * per_batch), ("side", rounds)):
        total = 3 * per_user
        rows = stored(thread_id)
        assert [seq for seq, _, _ in rows] == list(range(1, total + 1))
        assert len({(u, c) for _, u, c in rows}) == total
        assert Thread.objects.get(pk=thread_id).last_seq == total
        by_key = {(u, c): seq for seq, u, c in rows}
        mine = [(i, r) for i, r in answers if i.thread_id == thread_id]
        assert len(mine) == 2 * total
        # Every answer, first or duplicate, carries the stored seq of its id.
        for item, result in mine:
            assert not isinstance(result, Exception), result
            key = (item.user.username, item.client_id)
            assert result.message.seq == by_key[key]
        # Exactly one of the two writers of each id stored it.
        assert sorted(r.duplicate for _, r in mine) == [False] * total + [True] * total
