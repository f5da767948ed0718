"""Counting passes of the event loop, for tests of work spread over passes."""

import asyncio


class LoopPasses:
    """Counts passes of the event loop (a task yielding once a pass) while open."""

    def __init__(self) -> None:
        self.count = 0
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> "LoopPasses":
        self.task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()

    async def _tick(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)


def most_in_one_pass(passes: list[int]) -> int:
    """The most entries of `passes` naming the same pass."""
    return max(passes.count(n) for n in set(passes))
