"""Coalesce concurrent per-socket calls into one bulk call per burst.

A disconnect storm makes a thousand sockets each want the same round trip (a DB
write, a Redis script) at once. One bulk call per burst replaces a thousand round
trips, thread hops and transactions with a few, so the event loop (and the GIL) stays
free for everything else. Callers still await their own item's result, so their
ordering and error handling are unchanged. Each event loop gets its own queue.

A Turnstile spreads a burst that no single call can take over passes of the loop.
"""

import asyncio
import weakref
from collections import deque
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


class Turnstile:
    """At most `per_pass` callers go on per pass of the event loop; the rest queue."""

    def __init__(self, per_pass: int) -> None:
        self.per_pass = per_pass
        self.passed = 0  # gone on in this pass, or let on for the next one
        self.queue: deque[asyncio.Future] = deque()
        self.next_pass: asyncio.Handle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def turn(self) -> None:
        """Return at once if this pass has room, else in a later pass, in order."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # a loop that is gone may have left a pass open
            self.loop, self.passed, self.next_pass = loop, 0, None
            self.queue.clear()
        if self.next_pass is None:
            # Runs in the next pass: it opens that pass to the ones in line.
            self.next_pass = loop.call_soon(self._open_next_pass)
        if not self.queue and self.passed < self.per_pass:
            self.passed += 1
            return
        future = loop.create_future()
        self.queue.append(future)
        await future

    def _open_next_pass(self) -> None:
        self.next_pass = None
        self.passed = 0
        while self.queue and self.passed < self.per_pass:
            future = self.queue.popleft()
            if not future.done():  # else cancelled while in line
                future.set_result(None)
                self.passed += 1
        if self.queue or self.passed:
            self.next_pass = asyncio.get_running_loop().call_soon(self._open_next_pass)
