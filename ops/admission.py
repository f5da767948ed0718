"""Admission control for WebSocket connects (PROTOCOL.md §2, "Overload").

At most WS_MAX_CONNECTING connects are in progress in this process at once: from the
application call until the consumer's first frame after its accept
(`ws:session_established`, or a refusal's error frame), its close, or its end.
A connect over that is answered here, before the auth middleware's database lookup
and the consumer's channel-layer calls: accept, an `error` frame `overloaded` with
`retry_after_ms`, close 1013. Without this a reconnect storm never recovered: every
connect waited behind all the others, Daphne's handshake timeout dropped connects
that had already cost their work, and each came back as one more attempt.

A connect that finds the slots full waits in line for one instead, for at most
WS_ADMISSION_WAIT_MS, when the line ahead of it clears within that time at the rate
the process completes connects; it is refused when the wait runs out.

The cap is this process's alone (it protects this event loop); nothing shared is
read or decided here.
"""

import asyncio
import contextlib
import json
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from ops import metrics
from ops.batching import Turnstile
from ops.overload_log import OverloadLog

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

RETRY_MIN_MS = 250
# The web client's own backoff cap. Capped at 10 s, the 5,000 clients of a measured
# storm came back at several hundred refusals a second and half of them were still
# out after 120 s; at 30 s all were back within 90 s.
RETRY_MAX_MS = 30_000
JITTER = 0.25  # retry_after_ms is spread over +-25 % of the schedule's value
TRY_AGAIN_LATER = 1013
SERVICE_RESTART = 1012
# The subprotocol a JWT client offers first; accepting with it lets the client
# read the frame (a browser fails a handshake answered without it).
JWT_SUBPROTOCOL = "jwt"
# The connect rate a refusal's wait is computed from: connects this process completed
# over the last RATE_WINDOW_S, or the best such rate it has shown lately (halved every
# SHOWN_HALF_LIFE_S), and at least RATE_FLOOR_PER_SLOT per slot per second.
RATE_WINDOW_S = 5.0
RATE_FLOOR_PER_SLOT = 1.0
SHOWN_HALF_LIFE_S = 60.0
# Refusals answered per pass of the event loop; the rest wait for the next passes.
REFUSALS_PER_PASS = 16
# Messages that end a connect's hold: its first frame or its close (a denial too).
ENDS_CONNECT = frozenset(
    {"websocket.send", "websocket.close", "websocket.http.response.start"}
)

try:  # Daphne (autobahn) refuses to send once the closing handshake has begun.
    from autobahn.exception import Disconnected as _Disconnected
except ImportError:  # pragma: no cover - another ASGI server
    _Disconnected = OSError
CLIENT_GONE = (OSError, _Disconnected)


class RetrySchedule:
    """retry_after_ms: when the clients refused so far should be through, jittered.

    Every refusal books one connect's worth of time (1 / the rate this process has
    completed connects at lately, or has shown before) after the ones booked before
    it, so the value grows with the number refused recently relative to what the
    process gets through, and shrinks as time passes.
    """

    def __init__(
        self,
        limit: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.limit = max(limit, 1)
        self.clock = clock
        self.rng = rng
        self.done: deque[float] = deque()  # completion times, the last RATE_WINDOW_S
        self.booked_until = 0.0
        self.shown = 0.0  # the best window rate so far, as of shown_at
        self.shown_at = 0.0

    def completed(self) -> None:
        """A connect ended its hold (its first frame or its close)."""
        now = self.clock()
        self.done.append(now)
        self._forget(now)
        window = len(self.done) / RATE_WINDOW_S
        if window >= self._shown(now):
            self.shown, self.shown_at = window, now

    def _shown(self, now: float) -> float:
        """The best window rate shown so far, decayed to `now`."""
        return self.shown * 0.5 ** ((now - self.shown_at) / SHOWN_HALF_LIFE_S)

    def _forget(self, now: float) -> None:
        while self.done and self.done[0] < now - RATE_WINDOW_S:
            self.done.popleft()

    @property
    def rate(self) -> float:
        """Connects per second the process has completed lately, floored."""
        # Measured in storms of 2,000 clients retrying fast: a rate derived from
        # the slots' hold time (limit / average hold, 300/s here) was ten times
        # what the process got through while it also refused; its waits of
        # 0.3-2 s brought each client back nine times, and the refusals took the
        # CPU the connects needed. Counting completions measures what gets through.
        # A storm starts with a stall (the dropped sockets' cleanup takes the CPU,
        # ~5 s for 2,000), when next to nothing completes; the clients refused
        # then were booked at the floor rate, a quarter of what the process does,
        # and the slots stood idle for half the storm. The rate it showed before
        # the stall is the better guess; it fades within minutes.
        now = self.clock()
        self._forget(now)
        floor = self.limit * RATE_FLOOR_PER_SLOT
        return max(len(self.done) / RATE_WINDOW_S, self._shown(now), floor)

    def next_ms(self, waiting: int = 0) -> int:
        """Book one refused client after `waiting` in line; its jittered wait, ms."""
        now = self.clock()
        horizon = now + RETRY_MAX_MS / 1000
        rate = self.rate
        # Those in line are served within the admission wait and are not booked:
        # booked too, they pushed the schedule past when they had been served, and
        # the slots stood idle for seconds before the first refused came back.
        booked = max(self.booked_until, now + waiting / rate) + 1 / rate
        self.booked_until = min(booked, horizon)
        center = min(max((self.booked_until - now) * 1000, RETRY_MIN_MS), RETRY_MAX_MS)
        low = max(RETRY_MIN_MS, center * (1 - JITTER))
        high = min(RETRY_MAX_MS, center * (1 + JITTER))
        if booked >= horizon:
            # More refused than the window holds: spread the excess over its second
            # half. Piled up at the cap, they came back as one burst, and the slots
            # stood idle in between.
            low = RETRY_MAX_MS / 2
        return round(low + (high - low) * self.rng())


class AdmissionControl:
    """ASGI middleware: at most `limit` WebSocket connects in progress; refuse more.

    `limit` defaults to WS_MAX_CONNECTING; 0 admits everything.
    """

    def __init__(
        self,
        app: App,
        limit: int | None = None,
        *,
        wait_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.app = app
        self.limit = settings.WS_MAX_CONNECTING if limit is None else limit
        self.wait_s = settings.WS_ADMISSION_WAIT_MS / 1000 if wait_s is None else wait_s
        self.clock = clock
        self.in_progress = 0
        self.waiting: deque[asyncio.Future] = deque()
        self.schedule = RetrySchedule(self.limit, clock=clock, rng=rng)
        self.log = OverloadLog(clock)
        self.turns = Turnstile(REFUSALS_PER_PASS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or self.limit <= 0:
            return await self.app(scope, receive, send)
        if self.waiting or self.in_progress >= self.limit:
            inbox = Inbox(receive)
            try:
                admitted = await self.wait_for_slot(inbox)
            except asyncio.CancelledError:
                if not inbox.gone:
                    await self.restart(scope, send)
                raise
            if inbox.gone:  # left while in line: nothing to answer
                if admitted:
                    self.release_slot()
                return None
            if not admitted:
                return await self.refuse(scope, inbox, send)
            receive = inbox
            slot = Slot(self, handed_over=True)
        else:
            slot = Slot(self)
        try:
            await self.app(scope, receive, slot.watch(send))
        finally:
            slot.release(completed=False)

    async def wait_for_slot(self, inbox: "Inbox") -> bool:
        """Wait in line for a slot, if the line ahead clears within wait_s.

        Ends early, without one, when the client leaves meanwhile (`inbox.gone`).
        """
        # A refused client costs a whole handshake and closing handshake (~2 ms of
        # CPU here) and goes to the back of the schedule. One that came back at its
        # booked time and found the slots full for a moment waits a little instead.
        if len(self.waiting) >= self.schedule.rate * self.wait_s:
            return False
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        watch = asyncio.ensure_future(inbox.until_gone())
        try:
            first = asyncio.FIRST_COMPLETED
            await asyncio.wait({future, watch}, timeout=self.wait_s, return_when=first)
            return future.done() and not future.cancelled()
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release_slot()  # handed over as the app was cancelled: pass on
            raise
        finally:
            watch.cancel()
            if watch.done() and not watch.cancelled() and watch.exception():
                inbox.gone = True  # its receive failed: the connection is gone
            if not future.done():
                future.cancel()
            if future.cancelled():  # out of the line: a released slot skips it
                with contextlib.suppress(ValueError):
                    self.waiting.remove(future)

    def release_slot(self) -> None:
        """A slot is free: hand it to the first one waiting, else give it back."""
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_result(True)
                return
        self.in_progress -= 1
        metrics.WS_CONNECTING.dec()

    async def restart(self, scope: Scope, send: Send) -> None:
        """Cancelled in line (the drain at SIGTERM): accept, then close 1012."""
        # The handshake is still pending: answered, the client reads 1012 and
        # reconnects elsewhere at once instead of waiting out its connect timeout
        # (chat/consumers.py, shutdown_before_connect).
        with contextlib.suppress(*CLIENT_GONE):
            await send(_accept(scope))
            await send({"type": "websocket.close", "code": SERVICE_RESTART})

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the protocol ourselves: accept, `overloaded`, close 1013."""
        # A refusal runs ~2 ms without a pause; a crowd's hundreds at once held the
        # loop for 0.5 s a pass, and /health/liveness waited behind them.
        await self.turns.turn()
        # The client may vanish at any step: that ends the refusal, quietly.
        with contextlib.suppress(*CLIENT_GONE):
            if (await receive())["type"] != "websocket.connect":
                return  # gone before its handshake reached us
            retry_after_ms = self.schedule.next_ms(len(self.waiting))
            self.log.refused(in_progress=self.in_progress, limit=self.limit)
            await send(_accept(scope))
            await send({"type": "websocket.send", "text": overloaded(retry_after_ms)})
            await send({"type": "websocket.close", "code": TRY_AGAIN_LATER})


def _accept(scope: Scope) -> Message:
    return {"type": "websocket.accept", "subprotocol": accepted_subprotocol(scope)}


def accepted_subprotocol(scope: Scope) -> str | None:
    """The subprotocol to accept with: `jwt` when the client offered it first."""
    offered = scope.get("subprotocols") or []
    return JWT_SUBPROTOCOL if offered[:1] == [JWT_SUBPROTOCOL] else None


class Inbox:
    """A waiting connect's `receive`: what it read while in line comes first."""

    __slots__ = ("receive", "held", "gone")

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.held: deque[Message] = deque()
        self.gone = False

    async def until_gone(self) -> None:
        """Read (and keep) messages until the client's disconnect."""
        # A client that gives up while in line (a closed tab, its own connect
        # timeout) must not be handed a slot and cost a connect's database work.
        while not self.gone:
            message = await self.receive()  # cancelling it loses no message
            self.held.append(message)
            self.gone = message["type"] == "websocket.disconnect"

    async def __call__(self) -> Message:
        if self.held:
            return self.held.popleft()
        return await self.receive()


class Slot:
    """One admitted connect's place; given back exactly once, whatever happens."""

    __slots__ = ("owner", "held")

    def __init__(self, owner: AdmissionControl, *, handed_over: bool = False) -> None:
        self.owner = owner
        self.held = True
        if not handed_over:  # a released slot handed to a waiter is still counted
            owner.in_progress += 1
            metrics.WS_CONNECTING.inc()

    def release(self, *, completed: bool) -> None:
        """Give the place back (again: nothing); `completed` feeds the schedule."""
        if not self.held:
            return
        self.held = False
        if completed:
            self.owner.schedule.completed()
        self.owner.release_slot()

    def watch(self, send: Send) -> Send:
        """`send`, giving the place back at the connect's first frame or close."""

        async def sending(message: Message) -> None:
            if self.held and message["type"] in ENDS_CONNECT:
                self.release(completed=True)
            await send(message)

        return sending


def overloaded(retry_after_ms: int) -> str:
    """The `overloaded` error frame, as text."""
    return json.dumps(
        {
            "type": "error",
            "code": "overloaded",
            "detail": "server busy; try again later",
            "retry_after_ms": retry_after_ms,
        }
    )
