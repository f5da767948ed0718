"""chat.commits: group commit of the sockets' messages, and its broadcasts."""

import asyncio
import logging
import threading

import pytest
from channels.db import database_sync_to_async

from chat import commits, protocol
from chat.models import Message, Thread
from chat.services import message_create_many
from ops.db import DatabaseUnavailable
from realtime.groups import thread_group

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 10


class Layer:
    """A channel layer that records group sends; `hold` keeps them waiting."""

    def __init__(self) -> None:
        self.started: list[dict] = []
        self.events: list[tuple[str, dict]] = []
        self.hold = asyncio.Event()
        self.hold.set()

    async def group_send(self, group: str, event: dict) -> None:
        self.started.append(event)
        await self.hold.wait()
        self.events.append((group, event))

    def seqs(self, thread_id: str) -> list[list[int]]:
        """Per event of the thread, the seqs it carried."""
        out = []
        for group, event in self.events:
            if group == thread_group(thread_id):
                frames = event.get("messages", [event])
                out.append([frame["seq"] for frame in frames])
        return out


@pytest.fixture
def layer() -> Layer:
    return Layer()


@pytest.fixture
def threads():
    @database_sync_to_async
    def make(*thread_ids: str) -> None:
        for thread_id in thread_ids:
            Thread.objects.create(id=thread_id)

    return make


class Sizes(list):
    """The size of every message_create_many call, in order."""

    gate: threading.Event


@pytest.fixture
def batches(monkeypatch):
    """Count message_create_many calls (`gate` holds them); "poison" fails one."""
    sizes = Sizes()
    gate = threading.Event()
    gate.set()

    def counted(*, items):
        sizes.append(len(items))
        assert gate.wait(TIMEOUT)
        if any(item.text == "poison" for item in items):
            raise RuntimeError("poisoned batch")
        return message_create_many(items=items)

    monkeypatch.setattr("chat.commits.message_create_many", counted)
    sizes.gate = gate
    return sizes


def post(layer, user, client_id: str, thread_id: str = "t", text: str = ""):
    return commits.message_commit(
        layer=layer,
        thread_id=thread_id,
        user=user,
        client_id=client_id,
        text=text or client_id,
    )


async def until(predicate, what: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_a_burst_is_one_commit_and_one_event_per_thread(
    layer, threads, batches, alice, bob
):
    a, b = "a", "b"
    await threads(a, b)
    sends = [
        post(layer, (alice, bob)[i % 2], f"c{i}", (a, b)[i % 3 % 2]) for i in range(12)
    ]
    results = await asyncio.gather(*sends)
    assert batches == [12]
    assert not any(r.duplicate for r in results)
    for thread_id in (a, b):
        seqs = [r.message.seq for r in results if r.message.thread_id == thread_id]
        assert seqs == list(range(1, len(seqs) + 1))
        (event_seqs,) = layer.seqs(thread_id)
        assert event_seqs == seqs
    group, event = layer.events[0]
    assert event["type"] == protocol.MESSAGES_EVENT == "chat.messages"
    assert event["thread_id"] == group.removeprefix("thread.")
    assert all(frame["type"] == "chat.message" for frame in event["messages"])


async def test_a_lone_message_goes_out_as_a_plain_chat_message(layer, threads, alice):
    await threads("t")
    await post(layer, alice, "solo")
    ((group, event),) = layer.events
    assert group == thread_group("t")
    assert (event["type"], event["seq"], event["id"]) == ("chat.message", 1, "solo")


async def test_messages_arriving_during_a_commit_go_into_the_next(
    layer, threads, batches, alice
):
    await threads("t")
    batches.gate.clear()  # the first commit stays in flight
    first = asyncio.ensure_future(post(layer, alice, "m0"))
    await until(lambda: batches == [1], "the first commit")
    rest = [asyncio.ensure_future(post(layer, alice, f"m{i}")) for i in range(1, 6)]
    await asyncio.sleep(0.05)
    batches.gate.set()
    results = await asyncio.gather(first, *rest)
    assert batches == [1, 5]
    assert [r.message.seq for r in results] == [1, 2, 3, 4, 5, 6]
    assert layer.seqs("t") == [[1], [2, 3, 4, 5, 6]]


async def test_broadcasts_leave_in_seq_order_across_batches(
    layer, threads, batches, alice
):
    await threads("t")
    layer.hold.clear()  # the first batch's send waits in the layer
    first = asyncio.ensure_future(post(layer, alice, "m1"))
    await until(lambda: layer.started, "the first send")
    later = [asyncio.ensure_future(post(layer, alice, f"m{i}")) for i in (2, 3)]
    await until(lambda: len(batches) == 2, "the second commit")
    await asyncio.sleep(0.1)
    # Committed, but neither sent before the first send nor acknowledged.
    assert len(layer.started) == 1
    assert not any(task.done() for task in (first, *later))
    layer.hold.set()
    results = await asyncio.gather(first, *later)
    assert [r.message.seq for r in results] == [1, 2, 3]
    assert layer.seqs("t") == [[1], [2, 3]]


async def test_a_failing_item_fails_alone(layer, threads, batches, alice, caplog):
    caplog.set_level(logging.INFO)
    await threads("t")
    texts = ["one", "two", "poison", "four", "five"]
    sends = [post(layer, alice, f"c{i}", text=t) for i, t in enumerate(texts)]
    results = await asyncio.gather(*sends, return_exceptions=True)
    assert isinstance(results[2], RuntimeError)
    ok = [r for r in results if not isinstance(r, Exception)]
    assert [r.message.seq for r in ok] == [1, 2, 3, 4]
    assert batches == [5, 1, 1, 1, 1, 1]  # the batch, then one by one
    assert layer.seqs("t") == [[1, 2, 3, 4]]  # still one event for the batch
    split = [
        r for r in caplog.records if getattr(r, "event", "") == "message_batch_split"
    ]
    assert [r.levelno for r in split] == [logging.WARNING]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_database_unavailable_reaches_every_caller(
    layer, threads, alice, bob, db_outage
):
    await threads("t")
    db_outage.start()
    sends = [post(layer, (alice, bob)[i % 2], f"c{i}") for i in range(6)]
    results = await asyncio.gather(*sends, return_exceptions=True)
    db_outage.end()
    assert all(isinstance(r, DatabaseUnavailable) for r in results), results
    assert layer.events == []
    count = database_sync_to_async(Message.objects.count)
    assert await count() == 0
    # The next burst commits as usual.
    assert (await post(layer, alice, "after")).message.seq == 1


async def test_a_cancelled_caller_does_not_cancel_the_batch_broadcast(
    layer, threads, alice, bob
):
    await threads("t")
    layer.hold.clear()
    gone = asyncio.ensure_future(post(layer, alice, "a1"))
    stays = asyncio.ensure_future(post(layer, bob, "b1"))
    await until(lambda: layer.started, "the send")
    gone.cancel()
    await asyncio.sleep(0.05)
    layer.hold.set()
    result = await asyncio.wait_for(stays, TIMEOUT)
    assert result.message.seq == 2
    assert layer.seqs("t") == [[1, 2]]
    assert gone.cancelled()


async def test_resends_are_answered_and_sent_once(layer, threads, batches, alice):
    await threads("t")
    await post(layer, alice, "old")
    sends = [post(layer, alice, cid) for cid in ("old", "new", "new")]
    results = await asyncio.gather(*sends)
    assert [(r.message.seq, r.duplicate) for r in results] == [
        (1, True),
        (2, False),
        (2, True),
    ]
    assert layer.seqs("t") == [[1], [2]]
