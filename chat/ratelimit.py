"""Per-socket token bucket and the refusal window behind close 1008 (PROTOCOL.md §2)."""

import time
from collections import deque


class TokenBucket:
    """`rate` tokens per second, holding at most `burst`; one token per frame."""

    def __init__(self, rate: float, burst: float, clock=time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.clock = clock
        self.updated = clock()

    def take(self, cost: float = 1) -> bool:
        """Spend `cost` tokens if there are that many (none are spent otherwise)."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class RefusalWindow:
    """Counts refusals in a sliding window; says when they pass the close limit."""

    def __init__(
        self, limit: int, window_s: float = 10.0, clock=time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self.times: deque[float] = deque()

    def refuse(self) -> bool:
        """Record a refusal; True when more than `limit` fell within the window."""
        now = self.clock()
        self.times.append(now)
        while self.times and self.times[0] <= now - self.window_s:
            self.times.popleft()
        return len(self.times) > self.limit
