"""emergence/drain.py: the batch arithmetic and the drain over fake connections."""

import asyncio
import logging
import time
from types import SimpleNamespace

import pytest

from emergence import drain
from ops import health


class Socket:
    """A stand-in for Daphne's WebSocketProtocol: its state and the closes sent."""

    STATE_OPEN = 1

    def __init__(self) -> None:
        self.state = self.STATE_OPEN
        self.closes: list[int] = []

    def serverClose(self, code=None):  # noqa: N802
        self.closes.append(code)


@pytest.fixture(autouse=True)
def not_draining(monkeypatch, settings):
    """A drain's process-wide flags, put back after the test."""
    monkeypatch.setattr(drain, "_refusing", False)
    monkeypatch.setattr(health, "_draining", False)
    monkeypatch.setattr(drain, "CLEANUP_GRACE_S", 0.3)
    monkeypatch.setattr(drain, "FORCE_WAIT_S", 0.1)
    monkeypatch.setattr(drain, "HANDSHAKE_WAIT_S", 0.5)
    settings.WS_DRAIN_SECONDS = 0.5


@pytest.mark.parametrize(
    ("count", "seconds", "expected"),
    [
        (0, 10, []),
        (1, 10, [(0.0, 0, 1)]),
        (3, 3, [(0.0, 0, 1), (1.0, 1, 2), (2.0, 2, 3)]),
        (25, 10, [(i * 1.0, i * 25 // 10, (i + 1) * 25 // 10) for i in range(10)]),
    ],
)
def test_batch_schedule(count, seconds, expected):
    assert drain.batch_schedule(count, seconds) == expected


@pytest.mark.parametrize("count", [1, 9, 10, 11, 250, 2001])
def test_every_socket_is_in_exactly_one_batch_and_batches_are_even(count):
    schedule = drain.batch_schedule(count, 10)
    sizes = [stop - start for _, start, stop in schedule]
    assert [start for _, start, _ in schedule] == [
        0,
        *[stop for *_, stop in schedule][:-1],
    ]
    assert sum(sizes) == count and max(sizes) - min(sizes) <= 1
    delays = [delay for delay, *_ in schedule]
    assert delays == sorted(delays) and delays[-1] < 10


def test_the_window_is_cut_to_fit_the_application_close_timeout(settings, caplog):
    settings.WS_DRAIN_SECONDS = 10
    assert drain.drain_window(15) == 10
    assert caplog.records == []
    assert drain.drain_window(10) == 10 - drain.CLEANUP_GRACE_S
    [record] = caplog.records
    assert (record.levelname, record.event) == ("WARNING", "drain_window_cut")


async def app(closes: list[float], swallow: int = 0) -> None:
    """A socket's application: records when it was cancelled; ignores `swallow`."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            closes.append(time.monotonic())
            if len(closes) > swallow:
                raise


async def test_the_drain_cancels_every_socket_in_batches_over_the_window(caplog):
    caplog.set_level(logging.INFO, logger="emergence.drain")
    closes: list[float] = []
    connections = {
        Socket(): {"application_instance": asyncio.create_task(app(closes))}
        for _ in range(20)
    }
    http = asyncio.create_task(asyncio.sleep(0.6))  # a request in flight
    left = asyncio.create_task(asyncio.sleep(0.2))  # a socket finishing its cleanup
    connections["http"] = {"application_instance": http}
    connections[Socket()] = {"application_instance": left, "disconnected": 1.0}
    server = SimpleNamespace(application_close_timeout=10, connections=connections)
    await asyncio.sleep(0)
    started = time.monotonic()
    finished = drain.start(server, Socket)
    assert drain.refusing() and health.is_draining()
    await asyncio.wait_for(finished, 5)
    assert len(closes) == 20  # the open sockets
    assert http.done() and not http.cancelled()  # awaited, not cancelled
    assert left.done() and not left.cancelled()
    assert 0.4 <= max(closes) - started < 0.5 + 0.3  # the last batch at 9/10 of 0.5 s
    assert min(closes) - started < 0.1  # the first batch at once
    events = [(r.event, r.levelname) for r in caplog.records]
    assert events == [("drain_started", "INFO"), ("drain_finished", "INFO")]
    assert (caplog.records[0].sockets, caplog.records[1].closed) == (20, 20)


async def test_an_app_that_swallows_its_cancel_is_closed_1012_and_left(caplog):
    closes: list[float] = []
    stuck, socket = asyncio.create_task(app(closes, swallow=2)), Socket()
    idle = Socket()  # a socket whose app has already ended
    ended = asyncio.create_task(asyncio.sleep(0))
    connections = {
        socket: {"application_instance": stuck},
        idle: {"application_instance": ended},
    }
    server = SimpleNamespace(application_close_timeout=10, connections=connections)
    await asyncio.sleep(0.01)
    await asyncio.wait_for(drain.start(server, Socket), 5)
    assert socket.closes == [1012] and idle.closes == [1012]
    assert len(closes) == 2  # cancelled in its batch, then once more
    assert [r.event for r in caplog.records if r.levelname == "WARNING"] == [
        "drain_forced"
    ]
    stuck.cancel()  # the third cancel ends it
    with pytest.raises(asyncio.CancelledError):
        await stuck


class Handshaking(Socket):
    """A socket whose client answers the close `answer_after` s after the cancel."""

    STATE_CLOSED = 0

    def __init__(self, answer_after: float | None) -> None:
        super().__init__()
        self.answer_after = answer_after

    async def app(self) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if self.answer_after is not None:
                loop = asyncio.get_running_loop()
                loop.call_later(self.answer_after, setattr, self, "state", 0)
            raise


async def test_the_drain_waits_for_the_clients_to_answer_their_close(caplog):
    caplog.set_level(logging.INFO, logger="emergence.drain")
    quick, slow, silent = Handshaking(0.0), Handshaking(0.2), Handshaking(None)
    connections = {
        s: {"application_instance": asyncio.create_task(s.app())}
        for s in (quick, slow, silent)
    }
    server = SimpleNamespace(application_close_timeout=10, connections=connections)
    await asyncio.sleep(0)
    started = time.monotonic()
    await asyncio.wait_for(drain.start(server, Socket), 5)
    # Not before the slow client answered (0.2 s after the last batch at 1/3 of
    # 0.5 s); the silent one is left once HANDSHAKE_WAIT_S (0.5 s) has passed.
    assert quick.state == slow.state == 0 and silent.state == Socket.STATE_OPEN
    assert time.monotonic() - started >= 0.5
    finished = caplog.records[-1]
    assert (finished.event, finished.closed, finished.unanswered) == (
        "drain_finished",
        3,
        1,
    )


async def test_the_drain_ends_as_soon_as_every_client_has_answered(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="emergence.drain")
    monkeypatch.setattr(drain, "HANDSHAKE_WAIT_S", 10.0)
    sockets = [Handshaking(0.05) for _ in range(3)]
    connections = {
        s: {"application_instance": asyncio.create_task(s.app())} for s in sockets
    }
    server = SimpleNamespace(application_close_timeout=10, connections=connections)
    await asyncio.sleep(0)
    started = time.monotonic()
    await asyncio.wait_for(drain.start(server, Socket), 5)
    assert all(s.state == 0 for s in sockets)
    # Last batch at 2/3 of 0.5 s, answered 0.05 s later: far from the 10 s bound.
    assert time.monotonic() - started < 5
    assert caplog.records[-1].unanswered == 0
