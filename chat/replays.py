"""One replay in flight per socket, and what a replay costs (PROTOCOL.md §2 resume)."""

import asyncio
import math
from collections.abc import Coroutine
from typing import Any

# A resume costs one rate-limit token per this many replayed messages (at least
# one): replaying a thousand 4 kB messages must not cost what a ping costs.
MESSAGES_PER_TOKEN = 100


def replay_cost(messages: int) -> int:
    """Rate-limit tokens a replay of `messages` messages costs."""
    return max(1, math.ceil(messages / MESSAGES_PER_TOKEN))


class ReplayGate:
    """Runs a socket's replay beside its frame loop, one at a time.

    The replay runs as a task so that the frames a client sends meanwhile are read
    at once: a `resume` arriving before the running replay's last frame is handed
    to the transport finds the gate busy and is refused, instead of queueing
    behind it and replaying again.
    """

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        """Whether a replay is in flight."""
        return self._task is not None and not self._task.done()

    def start(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` (which handles its own errors) as the socket's replay."""
        self._task = asyncio.get_running_loop().create_task(work)

    async def wait(self) -> None:
        """Wait for the replay in flight, if any (live frames go after it)."""
        if self.busy:
            assert self._task is not None
            await asyncio.wait({self._task})

    def cancel(self) -> None:
        """Stop the replay in flight: the socket is finished."""
        if self.busy:
            assert self._task is not None
            self._task.cancel()
