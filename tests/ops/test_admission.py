"""Admission control (ops/admission.py): the cap, the refusal, the slot's release."""

import asyncio
import contextlib
import json
import random

import pytest
from autobahn.exception import Disconnected
from channels.testing import WebsocketCommunicator
from prometheus_client import REGISTRY

from ops.admission import (
    RATE_FLOOR_PER_SLOT,
    RATE_WINDOW_S,
    REFUSALS_PER_PASS,
    RETRY_MAX_MS,
    RETRY_MIN_MS,
    SHOWN_HALF_LIFE_S,
    AdmissionControl,
    RetrySchedule,
)
from tests.loops import LoopPasses, most_in_one_pass

TIMEOUT = 5  # every wait is bounded; generous for a busy box


def overloaded_count() -> float:
    sample = "emergence_ws_connects_total"
    return REGISTRY.get_sample_value(sample, {"outcome": "overloaded"}) or 0.0


def ws_scope(subprotocols=()) -> dict:
    return {"type": "websocket", "path": "/ws/s1/", "subprotocols": list(subprotocols)}


class Peer:
    """Daphne's side of one connection: a receive queue and the messages sent."""

    def __init__(self, gone_on_send: type[BaseException] | None = None) -> None:
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.sent: list[dict] = []
        self.gone_on_send = gone_on_send
        self.inbox.put_nowait({"type": "websocket.connect"})

    async def receive(self) -> dict:
        return await self.inbox.get()

    async def send(self, message: dict) -> None:
        if self.gone_on_send is not None:
            raise self.gone_on_send("the client went away")
        self.sent.append(message)

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]


class Inner:
    """A consumer stand-in: accept, wait for `go`, then one frame; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.go = asyncio.Event()
        self.finish = asyncio.Event()

    async def __call__(self, scope, receive, send) -> None:
        self.calls += 1
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        await self.go.wait()
        await send({"type": "websocket.send", "text": "hello"})
        await self.finish.wait()


async def start(mw: AdmissionControl, peer: Peer, scope=None) -> asyncio.Task:
    task = asyncio.create_task(mw(scope or ws_scope(), peer.receive, peer.send))
    await asyncio.sleep(0)
    return task


async def until(predicate, what: str) -> None:
    """Wait (bounded) until predicate() holds."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"no {what}"
        await asyncio.sleep(0.005)


async def finish_all(inner: Inner, *tasks: asyncio.Task) -> None:
    inner.go.set()
    inner.finish.set()
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)


# --- the refusal ----------------------------------------------------------------------


async def test_over_the_limit_accept_overloaded_frame_1013_without_the_app():
    inner = Inner()
    mw = AdmissionControl(inner, limit=2, wait_s=0)
    held = [await start(mw, Peer()) for _ in range(2)]
    await until(lambda: inner.calls == 2, "two connects in progress")
    before = overloaded_count()

    peer = Peer()
    await asyncio.wait_for(await start(mw, peer, ws_scope(["jwt", "tok"])), TIMEOUT)

    assert inner.calls == 2  # never reached the app (nor auth, nor the consumer)
    assert peer.types() == ["websocket.accept", "websocket.send", "websocket.close"]
    assert peer.sent[0]["subprotocol"] == "jwt"
    frame = json.loads(peer.sent[1]["text"])
    assert frame["type"] == "error" and frame["code"] == "overloaded"
    assert frame["detail"]
    assert RETRY_MIN_MS <= frame["retry_after_ms"] <= RETRY_MAX_MS
    assert peer.sent[2]["code"] == 1013
    assert overloaded_count() == before + 1
    assert mw.in_progress == 2
    await finish_all(inner, *held)
    assert mw.in_progress == 0


async def test_a_refusal_offers_no_subprotocol_to_a_cookie_client():
    mw = AdmissionControl(Inner(), limit=1, wait_s=0)
    mw.in_progress = 1  # a connect in progress elsewhere
    peer = Peer()
    await asyncio.wait_for(await start(mw, peer), TIMEOUT)
    assert peer.sent[0] == {"type": "websocket.accept", "subprotocol": None}


async def test_through_channels_communicator_a_refused_socket_reads_frame_and_1013():
    mw = AdmissionControl(Inner(), limit=1, wait_s=0)
    mw.in_progress = 1
    comm = WebsocketCommunicator(mw, "/ws/s1/", subprotocols=["jwt", "tok"])
    connected, subprotocol = await comm.connect(timeout=TIMEOUT)
    assert connected and subprotocol == "jwt"
    frame = await comm.receive_json_from(timeout=TIMEOUT)
    assert frame["code"] == "overloaded"
    assert await comm.receive_output(timeout=TIMEOUT) == {
        "type": "websocket.close",
        "code": 1013,
    }
    await comm.wait(timeout=TIMEOUT)


async def test_a_client_gone_before_its_connect_is_not_refused_nor_counted():
    mw = AdmissionControl(Inner(), limit=1, wait_s=0)
    mw.in_progress = 1
    peer = Peer()
    peer.inbox.get_nowait()
    peer.inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})
    before = overloaded_count()
    await asyncio.wait_for(await start(mw, peer), TIMEOUT)
    assert peer.sent == []
    assert overloaded_count() == before


@pytest.mark.parametrize("gone", [OSError, Disconnected])
async def test_a_client_vanishing_during_the_refusal_ends_it_quietly(gone):
    mw = AdmissionControl(Inner(), limit=1, wait_s=0)
    mw.in_progress = 1
    await asyncio.wait_for(await start(mw, Peer(gone_on_send=gone)), TIMEOUT)


async def test_http_and_a_zero_limit_pass_straight_through():
    inner = Inner()
    inner.go.set()
    inner.finish.set()
    off = AdmissionControl(inner, limit=0)
    for _ in range(3):
        await asyncio.wait_for(await start(off, Peer()), TIMEOUT)
    assert inner.calls == 3

    seen = []

    async def http_app(scope, receive, send):
        seen.append(scope["type"])

    capped = AdmissionControl(http_app, limit=1)
    capped.in_progress = 1
    await capped({"type": "http"}, None, None)
    assert seen == ["http"]


# --- refusals spread over passes of the event loop -----------------------------------


async def test_a_crowd_of_refusals_is_answered_a_few_per_pass():
    mw = AdmissionControl(Inner(), limit=1, wait_s=0)
    mw.in_progress = 1  # a connect in progress elsewhere
    peers = [Peer() for _ in range(100)]
    accepted_in: list[int] = []

    async def refused(peer: Peer) -> None:
        async def send(message: dict) -> None:
            if message["type"] == "websocket.accept":
                accepted_in.append(loop_passes.count)
            await peer.send(message)

        await mw(ws_scope(), peer.receive, send)

    async with LoopPasses() as loop_passes:
        await asyncio.wait_for(asyncio.gather(*map(refused, peers)), TIMEOUT)
    assert all(p.types()[-1] == "websocket.close" for p in peers)
    assert most_in_one_pass(accepted_in) <= REFUSALS_PER_PASS


# --- the line: a short wait for a slot instead of a refusal ---------------------------


def lined(inner: Inner) -> AdmissionControl:
    """One slot, a long wait, and room in line for many (100 connects/s shown)."""
    mw = AdmissionControl(inner, limit=1, wait_s=TIMEOUT)
    mw.schedule.shown, mw.schedule.shown_at = 100.0, mw.clock()
    return mw


async def one_in_line(inner: Inner) -> tuple[AdmissionControl, asyncio.Task]:
    """A lined control whose one slot is taken elsewhere, and a connect waiting."""
    mw = lined(inner)
    mw.in_progress = 1  # a connect in progress elsewhere
    waiter = await start(mw, Peer())
    await until(lambda: len(mw.waiting) == 1, "one in line")
    return mw, waiter


async def test_over_the_limit_a_connect_waits_for_the_next_released_slot():
    inner = Inner()
    in_progress_at_call: list[int] = []

    async def app(scope, receive, send) -> None:
        in_progress_at_call.append(mw.in_progress)
        await inner(scope, receive, send)

    mw = AdmissionControl(app, limit=1, wait_s=TIMEOUT)
    first = await start(mw, Peer())
    await until(lambda: inner.calls == 1, "the first connect")
    before = overloaded_count()
    peer = Peer()
    second = await start(mw, peer)
    await asyncio.sleep(0.05)
    assert inner.calls == 1 and peer.sent == [], "waiting, neither admitted nor refused"
    assert len(mw.waiting) == 1

    inner.go.set()  # the first connect's first frame releases its slot
    await until(lambda: inner.calls == 2, "the waiting connect admitted")
    # One slot in use throughout: the waiter's connect counts as the first one's did.
    assert in_progress_at_call == [1, 1]
    assert not mw.waiting
    assert overloaded_count() == before
    await finish_all(inner, first, second)
    assert mw.in_progress == 0


async def test_a_released_slot_goes_to_the_line_not_to_a_newcomer():
    inner = Inner()
    mw, waiter = await one_in_line(inner)
    mw.release_slot()  # that connect ends; the newcomer arrives in the same pass
    newcomer = await start(mw, Peer())
    await until(lambda: inner.calls == 1, "the one in line admitted")
    await asyncio.sleep(0.05)
    assert inner.calls == 1 and len(mw.waiting) == 1, "the newcomer waits its turn"
    await finish_all(inner, waiter, newcomer)
    assert inner.calls == 2
    assert mw.in_progress == 0


async def test_a_waiting_connect_is_refused_when_its_wait_runs_out():
    inner = Inner()
    mw = AdmissionControl(inner, limit=1, wait_s=0.05)
    first = await start(mw, Peer())
    await until(lambda: inner.calls == 1, "the first connect")
    peer = Peer()
    await asyncio.wait_for(await start(mw, peer), TIMEOUT)
    assert peer.types() == ["websocket.accept", "websocket.send", "websocket.close"]
    assert json.loads(peer.sent[1]["text"])["code"] == "overloaded"
    assert not mw.waiting, "it left the line"
    inner.go.set()
    await until(lambda: mw.in_progress == 0, "the slot given back, nobody waiting")
    await finish_all(inner, first)


async def test_no_longer_a_line_than_clears_within_the_wait():
    inner = Inner()
    # A fresh process's rate is its floor, one connect a second per slot: a line of
    # one clears within a second.
    mw = AdmissionControl(inner, limit=1, wait_s=1.0)
    first = await start(mw, Peer())
    await until(lambda: inner.calls == 1, "the first connect")
    waiting = await start(mw, Peer())
    await until(lambda: len(mw.waiting) == 1, "one in line")
    refused = Peer()
    await asyncio.wait_for(await start(mw, refused), TIMEOUT)
    assert json.loads(refused.sent[1]["text"])["code"] == "overloaded"
    inner.go.set()
    await until(lambda: inner.calls == 2, "the one in line admitted")
    await finish_all(inner, first, waiting)
    assert mw.in_progress == 0


async def test_a_cancelled_waiter_leaves_the_line_and_the_slot_goes_to_the_next():
    inner = Inner()
    mw = lined(inner)
    first = await start(mw, Peer())
    await until(lambda: inner.calls == 1, "the first connect")
    gone = await start(mw, Peer())
    second = await start(mw, Peer())
    await until(lambda: len(mw.waiting) == 2, "two in line")
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(gone, TIMEOUT)
    assert len(mw.waiting) == 1
    inner.go.set()
    await until(lambda: inner.calls == 2, "the next in line admitted")
    await finish_all(inner, first, second)
    assert mw.in_progress == 0


async def test_a_connect_cancelled_in_line_is_told_1012_as_the_drain_closes_it():
    inner = Inner()
    mw = lined(inner)
    mw.in_progress = 1
    peer = Peer()
    waiter = await start(mw, peer, ws_scope(subprotocols=["jwt", "token"]))
    await until(lambda: len(mw.waiting) == 1, "one in line")
    waiter.cancel()  # what SIGTERM's drain does to every app still running
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, TIMEOUT)
    assert peer.sent == [
        {"type": "websocket.accept", "subprotocol": "jwt"},
        {"type": "websocket.close", "code": 1012},
    ]
    assert not mw.waiting and inner.calls == 0


async def test_a_slot_handed_to_a_waiter_cancelled_meanwhile_is_passed_on():
    inner = Inner()
    mw, waiter = await one_in_line(inner)
    mw.release_slot()  # handed to the waiter, which is cancelled before it runs
    waiter.cancel()
    inner.go.set()
    inner.finish.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(waiter, TIMEOUT)
    # Python 3.11's wait_for returns a result that came with the cancellation (the
    # app then runs); later releases raise. Either way the slot is not lost.
    assert mw.in_progress == 0


async def test_a_client_leaving_the_line_is_neither_admitted_nor_answered():
    inner = Inner()
    mw, _ = await one_in_line(inner)  # a first waiter, still there
    peer = Peer()
    leaving = await start(mw, peer)
    await until(lambda: len(mw.waiting) == 2, "two in line")
    peer.inbox.put_nowait({"type": "websocket.disconnect", "code": 1001})
    await asyncio.wait_for(leaving, TIMEOUT)  # returns at once, not after its wait
    assert peer.sent == [] and len(mw.waiting) == 1
    assert mw.in_progress == 1 and inner.calls == 0


async def test_a_slot_handed_to_a_client_that_left_goes_to_the_next():
    inner = Inner()
    mw = lined(inner)
    mw.in_progress = 1
    gone, waiting = Peer(), Peer()
    gone_task = await start(mw, gone)
    waiting_task = await start(mw, waiting)
    await until(lambda: len(mw.waiting) == 2, "two in line")
    gone.inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})
    mw.release_slot()  # a slot comes free as the first in line leaves
    await asyncio.wait_for(gone_task, TIMEOUT)
    await until(lambda: inner.calls == 1, "the next in line admitted")
    await finish_all(inner, waiting_task)
    assert gone.sent == [] and waiting.types()[0] == "websocket.accept"


async def test_what_a_waiting_connect_read_reaches_the_app_in_order():
    seen: list[str] = []

    async def app(scope, receive, send) -> None:
        seen.extend([(await receive())["type"], (await receive())["type"]])

    mw = AdmissionControl(app, limit=1, wait_s=TIMEOUT)
    mw.schedule.shown, mw.schedule.shown_at = 100.0, mw.clock()
    mw.in_progress = 1
    peer = Peer()
    peer.inbox.put_nowait({"type": "websocket.receive", "text": "early"})
    waiter = await start(mw, peer)
    await until(lambda: peer.inbox.empty(), "both messages read while in line")
    mw.release_slot()
    await asyncio.wait_for(waiter, TIMEOUT)
    assert seen == ["websocket.connect", "websocket.receive"]


def test_refused_clients_are_booked_after_the_line():
    clock = Clock()
    schedule = RetrySchedule(10, clock=clock, rng=lambda: 0.5)
    alone = schedule.next_ms()
    behind = RetrySchedule(10, clock=clock, rng=lambda: 0.5).next_ms(waiting=20)
    # At the floor rate (10/s) a line of 20 takes 2 s: the refused come after it.
    assert alone < 400  # about the minimum wait
    assert behind == pytest.approx(2100, abs=1)


# --- the slot: released exactly once, whatever ends the connect -----------------------


async def test_slot_released_at_the_first_frame_while_the_socket_lives_on():
    inner = Inner()
    mw = AdmissionControl(inner, limit=1)
    task = await start(mw, Peer())
    await until(lambda: inner.calls == 1, "the connect")
    assert mw.in_progress == 1
    inner.go.set()
    await until(lambda: mw.in_progress == 0, "the release at ws:session_established")
    assert not task.done()  # the socket is open; only its connect is over
    second = await start(mw, Peer())  # admitted, not refused
    await until(lambda: inner.calls == 2, "the next connect admitted")
    await finish_all(inner, task, second)
    assert mw.in_progress == 0


async def test_slot_released_at_a_close_without_any_frame():
    closed = []

    async def refusing(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4401})
        closed.append(mw.in_progress)
        await send({"type": "websocket.close", "code": 4401})  # twice: still once

    mw = AdmissionControl(refusing, limit=1)
    await asyncio.wait_for(await start(mw, Peer()), TIMEOUT)
    assert closed == [0]
    assert mw.in_progress == 0


async def test_slot_released_when_the_app_raises():
    async def broken(scope, receive, send):
        await receive()
        raise RuntimeError("boom")

    mw = AdmissionControl(broken, limit=1)
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(await start(mw, Peer()), TIMEOUT)
    assert mw.in_progress == 0


async def test_slot_released_when_the_connect_is_cancelled():
    inner = Inner()
    mw = AdmissionControl(inner, limit=1)
    task = await start(mw, Peer())
    await until(lambda: inner.calls == 1, "the connect")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, TIMEOUT)
    assert mw.in_progress == 0


async def test_slot_released_when_the_client_disconnects_before_its_connect():
    inner = Inner()
    mw = AdmissionControl(inner, limit=1)
    peer = Peer()
    peer.inbox.get_nowait()
    peer.inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})
    await asyncio.wait_for(await start(mw, peer), TIMEOUT)
    assert inner.calls == 1 and peer.sent == []
    assert mw.in_progress == 0


async def test_slot_released_once_when_the_client_is_gone_at_the_first_frame():
    inner = Inner()
    inner.go.set()
    mw = AdmissionControl(inner, limit=2)
    peer = Peer()

    async def gone_at_frames(message: dict) -> None:
        if message["type"] == "websocket.send":
            raise OSError("the client went away")
        peer.sent.append(message)

    task = asyncio.create_task(mw(ws_scope(), peer.receive, gone_at_frames))
    with pytest.raises(OSError):
        await asyncio.wait_for(task, TIMEOUT)
    assert peer.types() == ["websocket.accept"]
    assert mw.in_progress == 0  # released at the send and again in finally: once


# --- retry_after_ms -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_retry_after_is_jittered_within_its_bounds():
    for rng in (lambda: 0.0, lambda: 0.999999, random.Random(3).random):
        schedule = RetrySchedule(4, clock=Clock(), rng=rng)
        values = [schedule.next_ms() for _ in range(2000)]
        assert min(values) >= RETRY_MIN_MS
        assert max(values) <= RETRY_MAX_MS
    calm = RetrySchedule(4, clock=Clock(), rng=random.Random(5).random)
    first = [RetrySchedule(4, clock=Clock(), rng=calm.rng).next_ms() for _ in range(50)]
    assert len(set(first)) > 10  # spread: refused clients do not come back together
    assert max(first) <= RETRY_MIN_MS * 1.25 + 1


def completions(schedule: RetrySchedule, clock: Clock, per_s: int, seconds: int):
    """`per_s` connects completed every second for `seconds`, spread evenly."""
    for _ in range(seconds * per_s):
        clock.now += 1 / per_s
        schedule.completed()


def test_retry_after_grows_with_refusals_relative_to_capacity_then_shrinks():
    clock = Clock()
    schedule = RetrySchedule(4, clock=clock, rng=lambda: 0.5)
    completions(schedule, clock, per_s=40, seconds=5)  # 40 connects/s got through
    fits = RETRY_MAX_MS // 25  # refusals the window holds, 25 ms apart
    waits = [schedule.next_ms() for _ in range(fits - 1)]
    assert waits[0] == pytest.approx(RETRY_MIN_MS * 1.125, abs=1)
    assert waits[100] == pytest.approx(101 / 40 * 1000, rel=0.02)  # 101 ahead
    assert waits == sorted(waits)
    clock.now += 10.0  # ten seconds' worth of those refused have gone through
    completions(schedule, clock, per_s=40, seconds=5)
    assert schedule.next_ms() == pytest.approx(RETRY_MAX_MS - 15_000, rel=0.02)
    clock.now += 120.0
    assert schedule.next_ms() == pytest.approx(RETRY_MIN_MS * 1.125, abs=1)


def test_beyond_the_window_refusals_spread_over_its_second_half():
    clock = Clock()
    schedule = RetrySchedule(4, clock=clock, rng=random.Random(7).random)
    completions(schedule, clock, per_s=40, seconds=5)
    for _ in range(RETRY_MAX_MS // 25):
        schedule.next_ms()
    excess = [schedule.next_ms() for _ in range(2000)]
    assert min(excess) >= RETRY_MAX_MS / 2 and max(excess) <= RETRY_MAX_MS
    # Spread, not piled up at the cap: every tenth of the half window is used.
    tenths = {int((w - RETRY_MAX_MS / 2) * 20 / RETRY_MAX_MS) for w in excess}
    assert tenths >= set(range(10))


def test_fewer_connects_getting_through_mean_longer_waits():
    fast_clock, slow_clock = Clock(), Clock()
    fast = RetrySchedule(8, clock=fast_clock, rng=lambda: 0.5)
    slow = RetrySchedule(8, clock=slow_clock, rng=lambda: 0.5)
    completions(fast, fast_clock, per_s=200, seconds=5)
    completions(slow, slow_clock, per_s=20, seconds=5)
    assert fast.rate == pytest.approx(200, rel=0.01)
    assert slow.rate == pytest.approx(20, rel=0.01)
    assert [fast.next_ms() for _ in range(50)][-1] < [
        slow.next_ms() for _ in range(50)
    ][-1]


def test_only_the_last_seconds_count_and_a_stalled_process_has_a_floor():
    clock = Clock()
    schedule = RetrySchedule(8, clock=clock, rng=lambda: 0.5)
    assert schedule.rate == 8 * RATE_FLOOR_PER_SLOT  # nothing completed yet
    completions(schedule, clock, per_s=300, seconds=2)
    assert schedule.rate == pytest.approx(600 / RATE_WINDOW_S, rel=0.01)
    stall = RATE_WINDOW_S + 0.1  # nothing completes
    clock.now += stall
    # The rate shown before the stall stands in for it, fading.
    faded = 120 * 0.5 ** (stall / SHOWN_HALF_LIFE_S)
    assert schedule.rate == pytest.approx(faded, rel=0.01)
    assert len(schedule.done) == 0  # forgotten, not kept
    clock.now += SHOWN_HALF_LIFE_S * 10
    assert schedule.rate == 8 * RATE_FLOOR_PER_SLOT


def test_refusals_in_a_stall_are_booked_at_the_rate_shown_before_it():
    clock = Clock()
    shown = RetrySchedule(32, clock=clock, rng=lambda: 0.5)
    completions(shown, clock, per_s=100, seconds=5)
    fresh = RetrySchedule(32, clock=clock, rng=lambda: 0.5)
    clock.now += 4.0  # the dropped sockets' cleanup: nothing completes
    last = [shown.next_ms() for _ in range(1000)][-1]
    # 1,000 ahead at ~95/s: about 10.5 s, not the floor's 31 s (past the horizon).
    assert last == pytest.approx(
        1000 / (100 * 0.5 ** (4 / SHOWN_HALF_LIFE_S)) * 1000, rel=0.02
    )
    assert [fresh.next_ms() for _ in range(1000)][-1] >= RETRY_MAX_MS / 2
