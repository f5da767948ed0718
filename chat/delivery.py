"""Ordered, exactly-once delivery of a thread's messages to one socket.

Each socket remembers the last seq it sent. Anything at or below it is dropped; a
live message beyond the next expected seq means the layer lost or reordered
something, and the gap is read from the database first (docs/ARCHITECTURE.md).
"""

from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from chat import protocol
from chat.selectors import Replay, messages_between, replay_window
from ops import metrics
from ops.db import db_call

Send = Callable[[dict[str, Any]], Awaitable[None]]


class OrderedDelivery:
    """One socket's delivery: replay, live messages with gap fill, resync.

    Given only a way to send a frame. The database reads raise DatabaseUnavailable
    having sent nothing out of order: the caller decides how the socket ends.
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self.last_sent_seq = 0

    async def live(self, frame: dict[str, Any]) -> None:
        """A live chat.message: in seq order, exactly once, gaps filled from the DB."""
        seq = frame["seq"]
        if seq <= self.last_sent_seq:
            return
        if seq > self.last_sent_seq + 1:
            missed = await db_call(
                messages_between,
                thread_id=frame["thread_id"],
                after_seq=self.last_sent_seq,
                upto_seq=seq - 1,
                op="messages_between",
            )
            for message in missed:
                await self._send_next(protocol.message_frame(message))
        await self._send_next(frame)

    async def window(
        self, thread_id: str, after_seq: int | None, epoch: str | None = None
    ) -> Replay:
        """The replay window after `after_seq` (for a resume, or a resync)."""
        return await db_call(
            replay_window,
            thread_id=thread_id,
            after_seq=after_seq,
            max_replay=settings.WS_MAX_REPLAY,
            epoch=epoch,
            op="replay_window",
        )

    async def replay(self, replay: Replay) -> None:
        """Send replayed frames; everything up to the thread's seq counts as sent."""
        for message in replay.messages:
            await self._send(protocol.message_frame(message))
        metrics.replay_sent(len(replay.messages))
        sent = replay.messages[-1].seq if replay.messages else 0
        if replay.reset:
            # The database may have gone back in time: the seqs it hands out next
            # are new messages however old they look, never to be dropped here.
            self.last_sent_seq = replay.last_seq
            return
        self.last_sent_seq = max(self.last_sent_seq, replay.last_seq, sent)

    async def resync(self, thread_id: str) -> bool:
        """Send what the layer may have dropped; False when too many to push."""
        replay = await self.window(thread_id, self.last_sent_seq)
        if not replay.recovered:
            return False
        for message in replay.messages:
            await self._send_next(protocol.message_frame(message))
        return True

    async def _send_next(self, frame: dict[str, Any]) -> None:
        """Send one chat.message if it is the next seq for this socket."""
        if frame["seq"] <= self.last_sent_seq:
            return
        await self._send(frame)
        self.last_sent_seq = frame["seq"]
