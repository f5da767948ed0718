"""emergence/compat/daphne_frames.py: autobahn's refusals closed with their code."""

import asyncio
import importlib.metadata
import logging
from types import SimpleNamespace

import pytest
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from django.core.exceptions import ImproperlyConfigured

from emergence.compat import daphne_frames as fixes
from emergence.server import frame_limit


def test_every_change_is_applied_at_start_up():
    from daphne.server import Server

    assert fixes.is_patched(WebSocketFactory.__init__)
    assert fixes.is_patched(WebSocketProtocol.onClose)
    assert fixes.is_patched(WebSocketProtocol.serverSend)
    assert fixes.is_patched(Server.handle_reply)


def test_a_factory_closes_instead_of_dropping():
    factory = WebSocketFactory(SimpleNamespace(), server="daphne")
    assert factory.failByDrop is False


def test_a_client_gets_10_s_to_answer_a_close():
    factory = WebSocketFactory(SimpleNamespace(), server="daphne")
    # Daphne's Server.run sets its options next: they leave this one alone.
    factory.setProtocolOptions(openHandshakeTimeout=15, allowNullOrigin=True)
    assert factory.closeHandshakeTimeout == fixes.CLOSE_HANDSHAKE_TIMEOUT_S == 10
    # autobahn's connectionMade copies the factory's options onto each protocol.
    assert "closeHandshakeTimeout" in factory.protocol.CONFIG_ATTRS


@pytest.mark.parametrize(
    ("failed_by_me", "local", "told", "expected"),
    [
        (True, 1009, 1006, 1009),  # autobahn failed it: its code
        (True, 1007, 1007, 1007),
        (False, 4408, 1006, 1006),  # the application closed: Daphne's code
        (False, None, 1000, 1000),
    ],
)
def test_on_close_reports_the_failure_code(failed_by_me, local, told, expected):
    seen = []

    class Protocol:
        def onClose(self, wasClean, code, reason):  # noqa: N802, N803
            seen.append(code)

    fixes.report_failure_code(Protocol)
    protocol = Protocol()
    protocol.failedByMe, protocol.localCloseCode = failed_by_me, local
    protocol.onClose(False, told, "")
    assert seen == [expected]


def test_the_frame_limit_never_falls_below_the_consumers(settings):
    settings.WS_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
    assert frame_limit(1024 * 1024) == 4 * 1024 * 1024
    settings.WS_MAX_MESSAGE_BYTES = 65536
    assert frame_limit(1024 * 1024) == 1024 * 1024
    assert frame_limit(0) == 65536  # 0 is no limit to autobahn: keep one


@pytest.fixture
def unpatched(monkeypatch):
    """Daphne's targets as they are before the changes (same shape, not ours)."""

    def init(self, server_class, *args, **kwargs):
        self.server_class = server_class

    def on_close(self, wasClean, code, reason):  # noqa: N803
        return None

    monkeypatch.setattr(WebSocketFactory, "__init__", init)
    monkeypatch.setattr(WebSocketProtocol, "onClose", on_close)
    return init, on_close


def test_another_daphne_release_is_left_alone(unpatched, monkeypatch, caplog):
    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: "4.3.0" if name == "daphne" else real_version(name),
    )
    caplog.set_level(logging.WARNING, logger="emergence.compat")
    fixes.apply()
    assert (WebSocketFactory.__init__, WebSocketProtocol.onClose) == unpatched
    [record] = caplog.records
    assert record.patch == "emergence.compat.daphne_frames"


def test_an_unpatched_daphne_is_patched(unpatched):
    fixes.apply()
    assert fixes.is_patched(WebSocketFactory.__init__)
    assert fixes.is_patched(WebSocketProtocol.onClose)


def test_a_target_of_another_shape_stops_the_start_up(unpatched, monkeypatch):
    def on_close(self, code, reason):
        return None

    monkeypatch.setattr(WebSocketProtocol, "onClose", on_close)
    with pytest.raises(ImproperlyConfigured, match=r"onClose takes"):
        fixes.apply()


class Transport:
    """The part of a Twisted TCP transport the bound reads."""

    def __init__(self, written: bytes = b"", queued: list[bytes] | None = None) -> None:
        self.dataBuffer = written
        self.offset = 0
        self._tempDataBuffer = list(queued or [])
        self._tempDataLen = sum(len(b) for b in self._tempDataBuffer)


class Sending:
    """A protocol whose sends and close frames are recorded."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.client_addr = ("127.0.0.1", 1)
        self.sent: list[str] = []
        self.closes: list[int] = []

    def serverSend(self, content, binary=False):  # noqa: N802
        self.sent.append(content)

    def sendCloseFrame(self, code=None, reasonUtf8=None, isReply=False):  # noqa: N802, N803
        self.closes.append(code)


@pytest.fixture
def bounded():
    class Protocol(Sending):
        pass

    fixes.bound_pending_bytes(Protocol)
    return Protocol


def test_sends_go_through_under_the_bound(bounded, settings):
    settings.WS_MAX_PENDING_BYTES = 100
    protocol = bounded(Transport(b"x" * 60, [b"y" * 40]))
    protocol.serverSend("hello")
    assert (protocol.sent, protocol.closes) == (["hello"], [])


def test_over_the_bound_drops_queued_frames_and_closes_4408(bounded, settings, caplog):
    settings.WS_MAX_PENDING_BYTES = 100
    transport = Transport(b"x" * 60, [b"y" * 30, b"z" * 30])
    protocol = bounded(transport)
    protocol.serverSend("one too many")
    assert (protocol.sent, protocol.closes) == ([], [4408])
    assert (transport._tempDataBuffer, transport._tempDataLen) == ([], 0)
    assert transport.dataBuffer == b"x" * 60  # the frame being written stays whole
    protocol.serverSend("later")
    assert (protocol.sent, protocol.closes) == ([], [4408])
    [record] = [r for r in caplog.records if r.event == "ws_slow_consumer"]
    assert record.levelname == "WARNING"


def test_a_slow_consumer_is_reported_4408():
    seen = []

    class Protocol:
        def onClose(self, wasClean, code, reason):  # noqa: N802, N803
            seen.append(code)

    fixes.report_failure_code(Protocol)
    protocol = Protocol()
    protocol.emergence_slow_consumer = True
    protocol.onClose(False, 1006, "")
    assert seen == [4408]


async def test_a_send_waits_for_a_reading_client(settings):
    settings.WS_MAX_PENDING_BYTES = 100
    transport = Transport(b"x" * 500)
    protocol = SimpleNamespace(transport=transport)

    async def client_reads() -> None:
        await asyncio.sleep(0.05)
        transport.offset = 450  # the kernel took most of it

    reading = asyncio.create_task(client_reads())
    await asyncio.wait_for(fixes.drained(protocol), 5)
    assert fixes.pending_bytes(transport) == 50
    await reading


async def test_a_send_to_a_client_that_never_reads_stops_waiting(settings, monkeypatch):
    settings.WS_MAX_PENDING_BYTES = 100
    monkeypatch.setattr(fixes, "DRAIN_TIMEOUT_S", 0.05)
    protocol = SimpleNamespace(transport=Transport(b"x" * 500))
    await asyncio.wait_for(fixes.drained(protocol), 5)
    assert fixes.pending_bytes(protocol.transport) == 500  # (3) closes it next
