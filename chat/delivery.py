"""Ordered, exactly-once delivery of a thread's messages to one socket.

Each socket remembers the last seq it sent. Anything at or below it is dropped; a
live message beyond the next expected seq means the layer lost or reordered
something, and the gap is read from the database first (docs/ARCHITECTURE.md).
"""

from typing import Any

from django.conf import settings

from chat import protocol
from chat.protocol import Close
from chat.selectors import messages_between, replay_window
from ops import metrics
from ops.db import DatabaseUnavailable, db_call


class OrderedDelivery:
    """Consumer mixin: replay, live delivery with gap fill, resync after an outage.

    Needs `params`, `last_sent_seq`, `ready`, `server_close_code`, `send_json`,
    `refuse` and `refuse_db_unavailable` from the consumer.
    """

    async def chat_message(self, event: dict[str, Any]) -> None:
        """A live message: in seq order, exactly once, gaps filled from the DB."""
        seq = event["seq"]
        if seq <= self.last_sent_seq or self.server_close_code:
            return
        if seq > self.last_sent_seq + 1:
            try:
                missed = await db_call(
                    messages_between,
                    thread_id=event["thread_id"],
                    after_seq=self.last_sent_seq,
                    upto_seq=seq - 1,
                    op="messages_between",
                )
            except DatabaseUnavailable:
                # Never skip a seq: the client reconnects and resumes from its last.
                return await self.refuse_db_unavailable()
            for message in missed:
                await self.send_message(protocol.message_frame(message))
        await self.send_message(event)

    async def chat_sync(self, event: dict[str, Any]) -> None:
        """Redis came back: send what the layer may have dropped, from the database."""
        if not self.ready or self.server_close_code:
            return
        replay = await self.load_replay(self.last_sent_seq)
        if replay is None:
            return  # the DB is down too: closed with 1013, the client resumes
        if not replay.recovered:
            # Too many to push: the client resumes, then fetches over HTTP.
            return await self.refuse(Close.TRY_AGAIN_LATER)
        for message in replay.messages:
            await self.send_message(protocol.message_frame(message))

    async def load_replay(self, after_seq: int | None) -> Any:
        """The replay window, or None when the DB is down (the socket is closed)."""
        assert self.params is not None
        try:
            return await db_call(
                replay_window,
                thread_id=self.params.thread_id,
                after_seq=after_seq,
                max_replay=settings.WS_MAX_REPLAY,
                op="replay_window",
            )
        except DatabaseUnavailable:
            await self.refuse_db_unavailable()
            return None

    async def send_replay(self, replay: Any) -> None:
        """Send replayed frames; everything up to the thread's seq counts as sent."""
        for message in replay.messages:
            await self.send_json(protocol.message_frame(message))
        metrics.REPLAYED.inc(len(replay.messages))
        sent = replay.messages[-1].seq if replay.messages else 0
        self.last_sent_seq = max(self.last_sent_seq, replay.last_seq, sent)

    async def send_message(self, frame: dict[str, Any]) -> None:
        """Send one chat.message if it is the next seq for this socket."""
        if frame["seq"] <= self.last_sent_seq:
            return
        await self.send_json(frame)
        self.last_sent_seq = frame["seq"]
