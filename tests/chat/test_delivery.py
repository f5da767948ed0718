"""chat.delivery.OrderedDelivery: seq order and exactly once, without a consumer."""

from chat.delivery import OrderedDelivery
from chat.selectors import Replay


class Sent(list):
    """A send callable that keeps what it was given."""

    async def __call__(self, frame: dict) -> None:
        self.append(frame)


def live(seq: int) -> dict:
    return {"type": "chat.message", "thread_id": "t", "seq": seq}


async def test_live_messages_are_sent_once_in_order():
    sent = Sent()
    delivery = OrderedDelivery(sent)
    for seq in (1, 1, 2, 1, 3):
        await delivery.live(live(seq))
    assert [f["seq"] for f in sent] == [1, 2, 3]
    assert delivery.last_sent_seq == 3


async def test_a_replay_counts_up_to_the_threads_seq_as_sent():
    sent = Sent()
    delivery = OrderedDelivery(sent)
    # Too many to replay: nothing sent, but the socket is live from seq 5 on.
    await delivery.replay(Replay(last_seq=5, messages=[], recovered=False))
    await delivery.live(live(5))
    await delivery.live(live(6))
    assert [f["seq"] for f in sent] == [6]
