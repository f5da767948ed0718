"""Coalesce concurrent per-socket calls into one bulk call per burst.

A disconnect storm makes a thousand sockets each want the same round trip (a DB
write, a Redis script) at once. One bulk call per burst replaces a thousand round
trips, thread hops and transactions with a few, so the event loop (and the GIL) stays
free for everything else. Callers still await their own item's result, so their
ordering and error handling are unchanged. Each event loop gets its own queue.
"""

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _LoopState:
    queue: list[tuple[Any, asyncio.Future]] = field(default_factory=list)
    task: "asyncio.Task | None" = None


class Coalescer(Generic[T, R]):
    """Queue items; one drain task runs `bulk(items)` for whatever queued meanwhile."""

    # `bulk` returns one result per item, in order; an Exception in that list is
    # raised to that item's caller alone, an exception from `bulk` to every caller.

    def __init__(
        self, bulk: Callable[[list[T]], Awaitable[list[R]]], *, max_batch: int = 500
    ) -> None:
        self._bulk = bulk
        self._max_batch = max_batch
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState]
        self._states = weakref.WeakKeyDictionary()

    async def submit(self, item: T) -> R:
        """Add one item to the next bulk call; its own result (or the call's error)."""
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _LoopState()
        future = loop.create_future()
        state.queue.append((item, future))
        if state.task is None or state.task.done():
            state.task = loop.create_task(self._drain(state))
        return await future

    async def _drain(self, state: _LoopState) -> None:
        while state.queue:
            # One pass of the loop first: the rest of the burst queues up behind us.
            await asyncio.sleep(0)
            batch = state.queue[: self._max_batch]
            del state.queue[: self._max_batch]
            try:
                results = await self._bulk([item for item, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    # Cancelled (the loop is shutting down): nobody drains the rest.
                    for _, future in state.queue:
                        future.cancel()
                    state.queue.clear()
                    raise
                continue
            if len(results) != len(batch):
                # A bulk function's bug must not strand its callers forever.
                error = RuntimeError(
                    f"bulk call returned {len(results)} results for {len(batch)} items"
                )
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                # A caller cancelled meanwhile (Daphne's close timeout): the item was
                # still written, nobody is waiting for its result.
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)  # this item alone failed
                else:
                    future.set_result(result)
