"""A resilient Emergence chat client for load and fault runs, like the web client.

Mirrors static/chat/app.js: full-jitter exponential backoff between reconnects
(reset after a connection that lived STABLE seconds), retry on every close code but
44xx, resume from the last contiguous seq, resend every unacknowledged message (ids
are client-chosen, so a resend is idempotent), HTTP catch-up when the replay was not
`recovered`, and a `resume` frame when a gap shows; refused as `overloaded` (then
1013), it waits the frame's retry_after_ms instead of its backoff. Unlike a browser
it can fail over to the next server URL of a list, as a load balancer would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from bench.servers import urlopen

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
STABLE_S = 10.0
CONNECT_TIMEOUT_S = 15.0
HISTORY_PAGE = 500
CLIENT_CLOSE = 4000  # our own code when we give a socket up, as the web client
ACK_TIMEOUT_S = 5.0


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: random(0, min(cap, base * 2^attempt)) seconds."""
    return rng.random() * min(cap, base * 2 ** min(max(attempt, 0), 30))


def retry_after_s(frame: dict[str, Any], cap: float) -> float | None:
    """An `overloaded` frame's retry_after_ms in seconds (at most `cap`), or None."""
    ms = frame.get("retry_after_ms")
    if isinstance(ms, bool) or not isinstance(ms, int | float) or not ms >= 0:
        return None
    return min(ms / 1000, cap)


def fetch_token(http: str, username: str, password: str) -> str:
    """A JWT from POST /api/token."""
    body = json.dumps({"username": username, "password": password}).encode()
    with urlopen(
        f"{http}/api/token", body, **{"Content-Type": "application/json"}
    ) as response:
        return json.load(response)["token"]


def http_of(ws_base: str) -> str:
    """ws://host:port -> http://host:port."""
    return "http" + ws_base.removeprefix("ws")


@dataclass
class Attempt:
    """One connection attempt: when, where, and how it ended."""

    url: str
    started: float
    # established | overloaded | refused:<error> | close:<code> | timeout
    outcome: str = "pending"
    established_at: float | None = None
    closed_at: float | None = None
    close_code: int | None = None


@dataclass
class ClientConfig:
    """Reconnect policy knobs (the web client's by default)."""

    backoff_base: float = BACKOFF_BASE_S
    backoff_cap: float = BACKOFF_CAP_S
    stable_s: float = STABLE_S
    connect_timeout: float = CONNECT_TIMEOUT_S
    ack_timeout: float = ACK_TIMEOUT_S
    max_attempts: int = 500
    failover: bool = True


@dataclass
class ClientStats:
    """What one logical client saw."""

    sent: int = 0  # distinct messages submitted
    frames_sent: int = 0  # chat.message frames written (resends included)
    acked: int = 0
    duplicate_acks: int = 0
    delivered: int = 0  # distinct chat.message seqs received (ws or http)
    duplicates: int = 0  # a seq received again over the socket without asking
    redelivered: int = 0  # a seq we held ahead of a gap, sent again on our request
    gaps: int = 0
    resumes: int = 0
    http_fetches: int = 0
    http_messages: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    close_codes: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    recovery_s: list[float] = field(default_factory=list)


class ChatClient:
    """One logical chat session (one session id) that survives its sockets."""

    def __init__(
        self,
        name: str,
        urls: list[str],
        token: str,
        thread_id: str,
        *,
        session_id: str | None = None,
        config: ClientConfig | None = None,
        seed: int | None = None,
        last_seq: int | None = None,
    ) -> None:
        self.name = name
        self.urls = list(urls)
        self.token = token
        self.thread_id = thread_id
        self.session_id = session_id or f"{name}-{random.getrandbits(48):012x}"
        self.config = config or ClientConfig()
        self.rng = random.Random(seed)
        self.stats = ClientStats()
        self.attempts: list[Attempt] = []
        self.url_index = 0
        # Message store: every seq received, the contiguous high-water mark.
        # `last_seq` given: we have the thread up to there (a page's history, or 0
        # for a new thread), so every later message is owed to us, replay included.
        self.floor: int | None = last_seq
        self.last_seq = last_seq or 0
        self.hellos = 0
        self.known_seq = 0
        self.seqs: set[int] = set()
        self.ids: dict[str, int] = {}  # message id -> seq, for every received message
        self.requested_ahead: set[int] = set()
        # Outbox: unacknowledged messages by client id, in submission order.
        self.outbox: OrderedDict[str, str] = OrderedDict()
        self.sent_at: dict[str, float] = {}
        self.acks: dict[str, int] = {}
        self.presence: list[dict[str, Any]] = []
        self.fatal_code: int | None = None
        self.ws: Any = None
        self.ready = False
        self.lost_at: float | None = None
        self._counter = 0
        self._attempt_no = 0
        self._retry_after: float | None = None  # seconds, from `overloaded`
        self._stopping = False
        self._replay_left = 0
        self._replay_is_resume = False
        self._asked_from = 0
        self._max_seq = 0
        self._resuming = False
        self._fetching: asyncio.Task | None = None
        self._task: asyncio.Task | None = None
        self._changed = asyncio.Event()

    # --- public API ------------------------------------------------------------------

    def start(self) -> ChatClient:
        self._task = asyncio.create_task(self._run(), name=f"chat-{self.name}")
        return self

    async def stop(self, timeout: float = 5.0) -> None:
        """Close the socket (1000) and end the reconnect loop."""
        self._stopping = True
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1000, "client stop"), timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, timeout)
        if self._fetching is not None:
            self._fetching.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._fetching

    def submit(self, text: str) -> str:
        """Queue a message with a fresh client id; send it now if we can."""
        self._counter += 1
        msg_id = f"{self.name}-{self._counter}"
        self.outbox[msg_id] = text
        self.stats.sent += 1
        if self.ready:
            self._send_chat(msg_id, text)
        return msg_id

    @property
    def established(self) -> bool:
        return self.ready

    @property
    def unacked(self) -> int:
        return len(self.outbox)

    def has(self, ids: set[str]) -> bool:
        return ids.issubset(self.ids)

    def missing(self, ids: set[str]) -> set[str]:
        return ids - self.ids.keys()

    def know(self, seq: int) -> None:
        """The thread has at least `seq` (told by an ack or by another client)."""
        self.known_seq = max(self.known_seq, seq)
        if self.ready and self.known_seq > self.last_seq:
            self._request_resume()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until a socket is established (bounded)."""
        deadline = time.monotonic() + timeout
        while not self.ready and not self._done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
        return self.ready

    def _done(self) -> bool:
        return self._task is not None and self._task.done()

    # --- the connection loop ---------------------------------------------------------

    def _url(self) -> str:
        base = self.urls[self.url_index % len(self.urls)]
        query: dict[str, Any] = {"thread_id": self.thread_id}
        if self.floor is not None:
            query["last_seq"] = self.last_seq
        return f"{base}/ws/{quote(self.session_id)}/?{urlencode(query)}"

    async def _run(self) -> None:
        while not self._stopping and len(self.attempts) < self.config.max_attempts:
            attempt = Attempt(self._url(), time.monotonic())
            self.attempts.append(attempt)
            self._retry_after = None
            try:
                ws = await websockets.connect(
                    attempt.url,
                    subprotocols=["jwt", self.token],
                    open_timeout=self.config.connect_timeout,
                    close_timeout=2,
                    ping_interval=20,
                    ping_timeout=20,
                    max_size=2**20,
                    proxy=None,
                )
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                attempt.outcome = f"refused:{type(exc).__name__}"
                attempt.closed_at = time.monotonic()
                self.stats.connect_failures += 1
                self._lost()
                await self._backoff(failover=True)
                continue
            self.ws = ws
            code = await self._serve(ws, attempt)
            self.ws = None
            self.ready = False
            self._changed.set()
            attempt.closed_at = time.monotonic()
            attempt.close_code = code
            if attempt.outcome == "pending":
                refused = code == 1013 and self._retry_after is not None
                attempt.outcome = "overloaded" if refused else f"close:{code}"
            self.stats.close_codes[code] += 1
            if self._stopping:
                break
            if 4400 <= code < 4500:
                # Malformed, unauthenticated or forbidden: retrying cannot help.
                self.fatal_code = code
                logger.warning("client %s stopped by close %d", self.name, code)
                break
            if attempt.established_at is not None:
                lived = attempt.closed_at - attempt.established_at
                if lived >= self.config.stable_s:
                    self._attempt_no = 0
            self._lost()
            if code == 1013 and self._retry_after is not None:
                # Overloaded: the server said when (PROTOCOL.md §2, "Overload"); its
                # wait grows with the crowd, so ours does not grow on top of it.
                await asyncio.sleep(self._retry_after)
                continue
            # 1012: the server goes away; anything abnormal: it may be gone.
            await self._backoff(failover=code in (1006, 1011, 1012, CLIENT_CLOSE))
        self._changed.set()

    def _lost(self) -> None:
        if self.lost_at is None and self.hellos:
            self.lost_at = time.monotonic()

    async def _backoff(self, *, failover: bool) -> None:
        if failover and self.config.failover and len(self.urls) > 1:
            self.url_index += 1
        delay = backoff_delay(
            self._attempt_no,
            self.config.backoff_base,
            self.config.backoff_cap,
            self.rng,
        )
        self._attempt_no += 1
        await asyncio.sleep(delay)

    async def _serve(self, ws: Any, attempt: Attempt) -> int:
        """Read frames until the socket closes; return the close code."""
        try:
            raw = await asyncio.wait_for(ws.recv(), self.config.connect_timeout)
            self._on_frame(json.loads(raw), attempt)
            ack_watch = asyncio.create_task(self._watch_acks())
            try:
                async for raw in ws:
                    self._on_frame(json.loads(raw), attempt)
            finally:
                ack_watch.cancel()
        except TimeoutError:
            attempt.outcome = "timeout"
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(CLIENT_CLOSE, "no hello"), 3)
            return CLIENT_CLOSE
        except ConnectionClosed:
            pass
        except (OSError, ValueError) as exc:
            logger.warning("client %s socket error: %r", self.name, exc)
        code = ws.close_code
        return 1006 if code is None else code

    async def _watch_acks(self) -> None:
        """Resend what stayed unacknowledged too long on a live socket (idempotent)."""
        while True:
            await asyncio.sleep(self.config.ack_timeout / 2)
            now = time.monotonic()
            if not self.ready:
                continue
            for msg_id, text in list(self.outbox.items()):
                if now - self.sent_at.get(msg_id, now) > self.config.ack_timeout:
                    self.stats.errors["ack_timeout"] += 1
                    self._send_chat(msg_id, text)

    # --- frames ----------------------------------------------------------------------

    def _on_frame(self, frame: dict[str, Any], attempt: Attempt) -> None:
        kind = frame.get("type")
        if kind == "ws:session_established":
            self._on_hello(frame, attempt)
        elif kind == "chat.message":
            self._on_message(frame)
        elif kind == "ack":
            self._on_ack(frame)
        elif kind == "presence":
            self.presence.append(frame)
        elif kind == "resumed":
            self._on_resumed(frame)
        elif kind == "error":
            code = str(frame.get("code"))
            self.stats.errors[code] += 1
            if code == "rate_limited":
                # Which frame was refused is not said: resend the outbox later.
                for msg_id in self.outbox:
                    self.sent_at[msg_id] = time.monotonic() - self.config.ack_timeout
            elif code == "overloaded":
                self._retry_after = retry_after_s(frame, self.config.backoff_cap)
        self._changed.set()

    def _on_hello(self, hello: dict[str, Any], attempt: Attempt) -> None:
        now = time.monotonic()
        attempt.outcome = "established"
        attempt.established_at = now
        if self.floor is None:
            self.floor = self.last_seq = int(hello.get("last_seq") or 0)
        if self.hellos:
            self.stats.reconnects += 1
        self.hellos += 1
        if self.lost_at is not None:
            self.stats.recovery_s.append(now - self.lost_at)
            self.lost_at = None
        self.known_seq = max(self.known_seq, int(hello.get("last_seq") or 0))
        self.requested_ahead = {s for s in self.seqs if s > self.last_seq}
        self._asked_from = self.last_seq
        self._resuming = False
        self._replay_left = int(hello.get("replay") or 0)
        self._replay_is_resume = False
        self.ready = True
        if hello.get("recovered") is False:
            self._catch_up()
        if self._replay_left == 0:
            self._after_replay()

    def _after_replay(self) -> None:
        self._flush()
        if self.known_seq > self.last_seq:
            self._request_resume()

    def _on_message(self, frame: dict[str, Any], *, via_http: bool = False) -> None:
        if frame.get("thread_id", self.thread_id) != self.thread_id:
            return
        seq = int(frame["seq"])
        if seq in self.seqs:
            replaying = self._replay_left > 0 or self._resuming
            if seq in self.requested_ahead or (replaying and seq > self._asked_from):
                # We asked for everything after _asked_from: not the server's fault.
                self.requested_ahead.discard(seq)
                self.stats.redelivered += 1
            elif not via_http:
                self.stats.duplicates += 1
                logger.warning("client %s: seq %d received twice", self.name, seq)
        elif self.floor is None or seq > self.floor:
            if not via_http and seq > self.last_seq + 1 and self._replay_left == 0:
                self.stats.gaps += 1
            self.seqs.add(seq)
            self._max_seq = max(self._max_seq, seq)
            self.ids[str(frame.get("id"))] = seq
            self.stats.delivered += 1
            if via_http:
                self.stats.http_messages += 1
            while self.last_seq + 1 in self.seqs:
                self.last_seq += 1
            self.known_seq = max(self.known_seq, seq)
        if via_http:
            return
        if self._replay_left > 0:
            self._replay_left -= 1
            if self._replay_left == 0:
                if self._replay_is_resume:
                    self._resuming = False
                else:
                    self._after_replay()
        elif self.last_seq < self._max_seq:
            self._request_resume()

    def _on_ack(self, ack: dict[str, Any]) -> None:
        msg_id = str(ack.get("id"))
        seq = int(ack.get("seq") or 0)
        if ack.get("duplicate"):
            self.stats.duplicate_acks += 1
        if self.outbox.pop(msg_id, None) is not None:
            self.stats.acked += 1
            self.acks[msg_id] = seq
            self.sent_at.pop(msg_id, None)
        self.known_seq = max(self.known_seq, seq)

    def _on_resumed(self, frame: dict[str, Any]) -> None:
        if frame.get("recovered") is False:
            self._resuming = False
            self._catch_up()
            return
        self._replay_left = int(frame.get("replay") or 0)
        self._replay_is_resume = True
        if self._replay_left == 0:
            self._resuming = False

    def _request_resume(self) -> None:
        if self._resuming or self._fetching is not None or not self.ready:
            return
        self.requested_ahead = {s for s in self.seqs if s > self.last_seq}
        self._asked_from = self.last_seq
        if self._send({"type": "resume", "last_seq": self.last_seq}):
            self._resuming = True
            self.stats.resumes += 1

    def _flush(self) -> None:
        for msg_id, text in list(self.outbox.items()):
            self._send_chat(msg_id, text)

    def _send_chat(self, msg_id: str, text: str) -> None:
        if self._send({"type": "chat.message", "id": msg_id, "text": text}):
            self.sent_at[msg_id] = time.monotonic()
            self.stats.frames_sent += 1

    def _send(self, frame: dict[str, Any]) -> bool:
        ws = self.ws
        if ws is None or not self.ready:
            return False
        # websockets buffers the write; a dead socket shows up as a close.
        task = asyncio.ensure_future(ws.send(json.dumps(frame)))
        task.add_done_callback(_swallow)
        return True

    # --- HTTP catch-up ---------------------------------------------------------------

    def _catch_up(self) -> None:
        if self._fetching is None or self._fetching.done():
            self._fetching = asyncio.create_task(self._fetch_missing())

    async def _fetch_missing(self, max_pages: int = 100) -> None:
        """GET /api/threads/<id>/messages?after_seq=N until we have the last_seq."""
        try:
            for _ in range(max_pages):
                base = http_of(self.urls[self.url_index % len(self.urls)])
                after = self.last_seq
                url = (
                    f"{base}/api/threads/{quote(self.thread_id)}/messages"
                    f"?after_seq={after}&limit={HISTORY_PAGE}"
                )
                try:
                    body = await asyncio.to_thread(self._get_json, url)
                except OSError as exc:
                    logger.info("client %s history fetch failed: %s", self.name, exc)
                    await asyncio.sleep(1.0)
                    continue
                self.stats.http_fetches += 1
                messages = body.get("messages") or []
                for message in messages:
                    self._on_message(message, via_http=True)
                last = int(body.get("last_seq") or 0)
                self.known_seq = max(self.known_seq, last)
                if (
                    len(messages) < HISTORY_PAGE
                    or self.last_seq == after
                    or self.last_seq >= last
                ):
                    break
        finally:
            self._fetching = None
            self._changed.set()

    def _get_json(self, url: str) -> dict[str, Any]:
        with urlopen(url, timeout=10, Authorization=f"Bearer {self.token}") as resp:
            return json.load(resp)


def _swallow(task: asyncio.Future) -> None:
    """A send on a socket that just closed: the reader handles the close."""
    if not task.cancelled():
        task.exception()


async def wait_all_ready(clients: list[ChatClient], timeout: float) -> int:
    """Wait (bounded) until every client is established; how many are."""
    await asyncio.gather(*(c.wait_ready(timeout) for c in clients))
    return sum(c.ready for c in clients)


async def settle(
    clients: list[ChatClient], receivers: list[ChatClient], timeout: float
) -> bool:
    """Wait until nothing is unacked and every receiver has every acked message."""
    deadline = time.monotonic() + timeout
    nudged = 0.0
    while time.monotonic() < deadline:
        acked = {i for c in clients for i in c.acks}
        unacked = sum(c.unacked for c in clients)
        if unacked == 0 and all(r.ready and r.has(acked) for r in receivers):
            return True
        now = time.monotonic()
        if now - nudged > 1.0:
            # A receiver learns of newer messages from later traffic in real life; here
            # the load has stopped, so tell it the newest seq (it then resumes).
            top = max((s for c in clients for s in c.acks.values()), default=0)
            for r in receivers:
                r.know(top)
            nudged = now
        await asyncio.sleep(0.05)
    return False


async def chat_traffic(
    senders: list[ChatClient],
    *,
    rate: float,
    duration: float,
    stop: asyncio.Event | None = None,
    max_messages: int = 100_000,
) -> int:
    """Each sender submits `rate` messages per second for `duration` s (bounded)."""
    if not senders:
        return 0
    stop = stop or asyncio.Event()
    interval = 1.0 / rate
    deadline = time.monotonic() + duration
    count = 0

    async def one(client: ChatClient, offset: float) -> None:
        nonlocal count
        await asyncio.sleep(offset)
        while (
            time.monotonic() < deadline and not stop.is_set() and count < max_messages
        ):
            client.submit(f"load {client.name} {time.monotonic():.3f}")
            count += 1
            await asyncio.sleep(interval)

    await asyncio.gather(
        *(one(c, interval * i / len(senders)) for i, c in enumerate(senders))
    )
    return count
