"""Refusals of an overloaded process in the log: a start, summaries and an end.

A storm refuses thousands of connects; a record each would bury everything else
(and cost the event loop), so an episode logs one WARNING when it starts, a count
every SUMMARY_SECONDS while it lasts and one INFO when a quiet interval ends it.
"""

import asyncio
import logging
import time
from collections.abc import Callable

from ops import metrics

# Named as before it moved here: log queries and alerts match on the logger.
logger = logging.getLogger("ops.admission")

SUMMARY_SECONDS = 10.0


class OverloadLog:
    """Refusals in the logs without a record per socket: start, summaries, end."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started_at: float | None = None
        self.total = 0
        self.recent = 0  # since the last summary
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def refused(self, *, in_progress: int, limit: int) -> None:
        """Count one refusal; a WARNING when it starts an overload episode."""
        metrics.CONNECTS.labels(outcome="overloaded").inc()
        if self.started_at is None:
            self.started_at, self.total, self.recent = self.clock(), 0, 0
            logger.warning(
                "ws_overloaded refusing connects: in_progress=%d limit=%d",
                in_progress,
                limit,
                extra={
                    "event": "ws_overloaded",
                    "in_progress": in_progress,
                    "limit": limit,
                },
            )
        self.total += 1
        self.recent += 1
        self._keep_timer()

    def _keep_timer(self) -> None:
        loop = asyncio.get_running_loop()
        if self._timer is not None and self._loop is loop:
            return
        if self._timer is not None:  # left on a loop that is gone (tests)
            self._timer.cancel()
        self._loop = loop
        self._timer = loop.call_later(SUMMARY_SECONDS, self.tick)

    def tick(self) -> None:
        """Every SUMMARY_SECONDS while refusing: a count; the first quiet one: end."""
        self._timer = None
        if self.started_at is None:
            return
        if self.recent:
            logger.warning(
                "ws_overloaded_summary refused=%d in the last %.0fs",
                self.recent,
                SUMMARY_SECONDS,
                extra={"event": "ws_overloaded_summary", "refused": self.recent},
            )
            self.recent = 0
            self._keep_timer()
            return
        duration_s = round(self.clock() - self.started_at, 1)
        logger.info(
            "ws_overload_ended refused=%d duration_s=%.1f",
            self.total,
            duration_s,
            extra={
                "event": "ws_overload_ended",
                "refused": self.total,
                "duration_s": duration_s,
            },
        )
        self.started_at = None
