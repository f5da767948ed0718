"""Group commit of chat messages: the sockets' messages of a burst, one transaction.

One commit per message caps a database at its fsync rate, whatever Python does.
Messages that arrive while a commit is in flight queue for the next one
(ops.batching.Coalescer), which stores them all with message_create_many through one
db_call. After the commit each thread's new messages go out in one layer event, and
a thread's events leave in seq order across batches: each waits for the one before.
A caller returns once its message is committed and its broadcast handed to the
layer (PROTOCOL.md §2.6: the ack comes after both).

One commit in flight per process, whatever the threads: the fixed cost of a commit
(a thread hop, a pooled connection, six round trips, the fsync) is paid once per
burst. Spreading threads over several queues with a commit in flight each was
measured: smaller batches, more CPU per message, later acks under load.
"""

import asyncio
import logging
import weakref
from dataclasses import dataclass
from typing import Any

from channels.layers import BaseChannelLayer

from chat import protocol
from chat.services import MessageResult, NewMessage, message_create_many
from ops.batching import Coalescer
from ops.db import DatabaseUnavailable, db_call
from ops.redis_client import warn_shared_failure
from realtime.groups import thread_group

logger = logging.getLogger(__name__)

# Messages per commit: a bigger batch holds its threads' row locks longer.
MAX_BATCH = 200
# Messages per layer event: keeps one Redis message (and one receiver's turn) small.
MAX_EVENT = 50
# The op name of the retry helper's logs (db_connection_lost, db_unavailable).
OP = "message_create"


@dataclass(frozen=True)
class _Pending:
    """A message waiting for the next commit, and the layer to broadcast it on."""

    item: NewMessage
    layer: BaseChannelLayer


@dataclass(frozen=True)
class _Committed:
    """A committed message's result and, if this batch stored it, its broadcast."""

    result: MessageResult
    broadcast: asyncio.Task[None] | None


async def message_commit(
    *, layer: BaseChannelLayer, thread_id: str, user: Any, client_id: str, text: str
) -> MessageResult:
    """Store a message with the next group commit; return once it is broadcast."""
    item = NewMessage(thread_id=thread_id, user=user, client_id=client_id, text=text)
    committed = await _commits.submit(_Pending(item, layer))
    if committed.broadcast is not None:
        # Shielded: the send is the whole batch's; a caller cancelled (its socket
        # closed) must not cancel it for the others.
        await asyncio.shield(committed.broadcast)
    return committed.result


async def _commit_many(batch: list[_Pending]) -> list[_Committed | Exception]:
    """The Coalescer's bulk call: one commit, then the broadcasts started in order."""
    results = await _store([pending.item for pending in batch])
    sends = _broadcast(batch, results)
    out: list[_Committed | Exception] = []
    for result in results:
        if isinstance(result, Exception):
            out.append(result)
        else:
            # In-batch resends wait too: their original goes out with this batch.
            out.append(_Committed(result, sends.get(id(result.message))))
    return out


async def _store(items: list[NewMessage]) -> list[MessageResult | Exception]:
    """One transaction for the batch; if it fails, each item in one of its own."""
    try:
        return await db_call(message_create_many, items=items, op=OP)
    except DatabaseUnavailable:
        raise  # to every caller: each socket refuses with db_unavailable
    except Exception as exc:
        if len(items) == 1:
            raise
        # One item's failure (an odd text, a bug) rolled the batch back: retry one
        # by one so that it fails alone and the others are stored.
        logger.warning(
            "message_batch_split size=%d error=%r",
            len(items),
            exc,
            extra={"event": "message_batch_split", "size": len(items)},
        )
        return await _store_each(items)


async def _store_each(items: list[NewMessage]) -> list[MessageResult | Exception]:
    """Each item in its own transaction, in order; its error as its result."""
    results: list[MessageResult | Exception] = []
    for index, item in enumerate(items):
        try:
            (result,) = await db_call(message_create_many, items=[item], op=OP)
        except DatabaseUnavailable as exc:
            # The retry window is spent: the rest would only wait it out again.
            return results + [exc] * (len(items) - index)
        except Exception as exc:
            result = exc
        results.append(result)
    return results


def _broadcast(
    batch: list[_Pending], results: list[MessageResult | Exception]
) -> dict[int, asyncio.Task[None]]:
    """Start each thread's send of its new messages; id(message) -> its send."""
    frames: dict[str, list[dict[str, Any]]] = {}
    layers: dict[str, BaseChannelLayer] = {}
    stored: dict[str, list[int]] = {}
    for pending, result in zip(batch, results, strict=True):
        if isinstance(result, Exception) or result.duplicate:
            continue
        thread_id = result.message.thread_id
        frames.setdefault(thread_id, []).append(protocol.message_frame(result.message))
        layers.setdefault(thread_id, pending.layer)
        stored.setdefault(thread_id, []).append(id(result.message))
    sends: dict[int, asyncio.Task[None]] = {}
    for thread_id, thread_frames in frames.items():
        thread_frames.sort(key=lambda frame: frame["seq"])
        task = _chain(layers[thread_id], thread_id, thread_frames)
        sends.update(dict.fromkeys(stored[thread_id], task))
    return sends


# Per event loop: each thread's latest send, which the thread's next send waits for.
_Chains = dict[str, asyncio.Task[None]]
_chains: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Chains] = (
    weakref.WeakKeyDictionary()
)


def _chain(
    layer: BaseChannelLayer, thread_id: str, frames: list[dict[str, Any]]
) -> asyncio.Task[None]:
    """Send after the thread's previous send: the layer gets its events in order."""
    loop = asyncio.get_running_loop()
    chains = _chains.setdefault(loop, {})
    task = loop.create_task(_send_after(chains.get(thread_id), layer, frames))
    chains[thread_id] = task

    def forget(done: asyncio.Task[None]) -> None:
        if chains.get(thread_id) is done:
            del chains[thread_id]

    task.add_done_callback(forget)
    return task


async def _send_after(
    previous: asyncio.Task[None] | None,
    layer: BaseChannelLayer,
    frames: list[dict[str, Any]],
) -> None:
    """Wait for the previous send (never cancelling it), then send these frames."""
    if previous is not None and not previous.done():
        await asyncio.wait([previous])
    for start in range(0, len(frames), MAX_EVENT):
        await _group_send(layer, frames[start : start + MAX_EVENT])


async def _group_send(layer: BaseChannelLayer, frames: list[dict[str, Any]]) -> None:
    """One layer event for a thread's frames; a failure only warns."""
    first = frames[0]
    thread_id = first["thread_id"]
    # A single message goes as the plain chat.message event every consumer knows.
    event = first if len(frames) == 1 else protocol.messages_event(thread_id, frames)
    try:
        await layer.group_send(thread_group(thread_id), event)
    except Exception as exc:
        # Stored is stored: receivers fill the gap by seq (next message or resume).
        warn_shared_failure(
            logger,
            exc,
            "broadcast_failed thread_id=%s seq=%s count=%d",
            thread_id,
            first["seq"],
            len(frames),
            extra={"event": "broadcast_failed"},
        )


_commits: Coalescer[_Pending, _Committed] = Coalescer(_commit_many, max_batch=MAX_BATCH)
