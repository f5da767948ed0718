"""emergence/compat/daphne.py: the Daphne 4.2 changes, applied once, guarded."""

import asyncio
import importlib.metadata
import logging
from types import SimpleNamespace

import pytest
from autobahn.websocket.protocol import WebSocketProtocol as AutobahnProtocol
from autobahn.websocket.types import ConnectionDeny
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from django.core.exceptions import ImproperlyConfigured

from emergence import compat, drain
from emergence.compat import daphne as fixes


class Closing:
    """The two ways serverClose can close a socket, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def sendCloseFrame(self, code=None, reasonUtf8=None, isReply=False):  # noqa: N802, N803
        self.calls.append(("sendCloseFrame", code, isReply))

    def sendClose(self, code=None, reason=None):  # noqa: N802
        self.calls.append(("sendClose", code))


def test_every_change_is_applied_at_start_up():
    assert fixes.is_patched(WebSocketProtocol.serverClose)
    assert fixes.is_patched(Server.kill_all_applications)
    assert fixes.is_patched(WebSocketProtocol.onConnect)


@pytest.mark.parametrize("code", [1000, 1008, 1009, 1011, 1012, 1013])
def test_a_registered_code_goes_through_send_close_frame(code):
    protocol = Closing()
    WebSocketProtocol.serverClose(protocol, code=code)
    assert protocol.calls == [("sendCloseFrame", code, False)]


@pytest.mark.parametrize(("code", "sent"), [(4401, 4401), (3000, 3000), (None, 1000)])
def test_any_other_code_takes_daphnes_own_path(code, sent):
    protocol = Closing()
    WebSocketProtocol.serverClose(protocol, code=code)
    assert protocol.calls == [("sendClose", sent)]


def test_autobahn_still_refuses_the_codes_the_fix_sends():
    # The day this fails, autobahn accepts 1012 itself: the fix may go.
    with pytest.raises(Exception, match="invalid close code 1012"):
        AutobahnProtocol.sendClose(Closing(), code=1012)


@pytest.fixture
def not_draining(monkeypatch, settings):
    """A drain's process-wide flags, put back after the test."""
    from ops import health

    monkeypatch.setattr(drain, "_refusing", False)
    monkeypatch.setattr(health, "_draining", False)
    settings.WS_DRAIN_SECONDS = 0.2


def socket() -> WebSocketProtocol:
    """A Daphne socket as the drain sees it (never connected)."""
    return WebSocketProtocol.__new__(WebSocketProtocol)


async def test_shutdown_drains_skips_connections_without_an_app_awaits_every_app(
    not_draining,
):
    cleaned = []

    async def app(name: str, cleanup_s: float) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(cleanup_s)
            cleaned.append(name)
            raise

    quick = asyncio.create_task(app("quick", 0))
    slow = asyncio.create_task(app("slow", 0.05))
    finished = asyncio.create_task(asyncio.sleep(0))
    await finished
    await asyncio.sleep(0)  # both apps are waiting in their sleep
    server = SimpleNamespace(
        application_close_timeout=10,
        connections={
            "keep-alive": {},  # an HTTP connection that has not started its app
            socket(): {"application_instance": quick},
            socket(): {"application_instance": slow},
            socket(): {"application_instance": finished},
        },
    )
    deferred = Server.kill_all_applications(server)
    assert drain.refusing()  # at once: new handshakes are refused from now
    await asyncio.wait_for(deferred.asFuture(asyncio.get_running_loop()), 5)
    assert quick.cancelled() and slow.cancelled()
    # Daphne's own gather ended with the first app that re-raised: the slow one
    # was still cleaning up.
    assert sorted(cleaned) == ["quick", "slow"]


def test_a_handshake_during_the_drain_is_refused_with_503(not_draining):
    class Recorder:
        def __init__(self) -> None:
            self.connections: dict = {}
            self.actions: list = []

        def protocol_connected(self, protocol):
            self.connections[protocol] = {"connected": 0}

        def protocol_disconnected(self, protocol):
            self.connections[protocol]["disconnected"] = 0

        def log_action(self, protocol, action, details):
            self.actions.append((protocol, action, details))

    server = Recorder()
    protocol = WebSocketProtocol.__new__(WebSocketProtocol)
    protocol.factory = SimpleNamespace(server_class=server)
    peer = SimpleNamespace(host="127.0.0.1", port=5000)
    protocol.transport = SimpleNamespace(getPeer=lambda: peer)
    request = SimpleNamespace(path="/ws/s1/")
    drain._refusing = True
    with pytest.raises(ConnectionDeny) as denied:
        WebSocketProtocol.onConnect(protocol, request)
    assert denied.value.code == 503
    # Daphne's onClose, which follows, finds what it reads; no app was made.
    assert server.connections == {protocol: {"connected": 0, "disconnected": 0}}
    assert server.actions == [
        ("websocket", "rejected", {"path": "/ws/s1/", "client": "127.0.0.1:5000"})
    ]


def test_applying_again_changes_nothing():
    close, kill = WebSocketProtocol.serverClose, Server.kill_all_applications
    connect = WebSocketProtocol.onConnect
    compat.apply()
    fixes.apply()
    assert WebSocketProtocol.serverClose is close
    assert Server.kill_all_applications is kill
    assert WebSocketProtocol.onConnect is connect


def test_each_fix_wraps_the_original_once():
    class Protocol:
        def serverClose(self, code=None):  # noqa: N802
            self.sendClose(code=1000 if code is None else code)

        def onConnect(self, request):  # noqa: N802
            return None

    class Bare:
        def kill_all_applications(self):
            return None

    fixes.allow_registered_close_codes(Protocol)
    fixes.cancel_applications_on_shutdown(Bare, Protocol)
    fixes.refuse_handshakes_while_draining(Protocol)
    patched = Protocol.serverClose, Bare.kill_all_applications, Protocol.onConnect
    fixes.allow_registered_close_codes(Protocol)
    fixes.cancel_applications_on_shutdown(Bare, Protocol)
    fixes.refuse_handshakes_while_draining(Protocol)
    assert (Protocol.serverClose, Bare.kill_all_applications, Protocol.onConnect) == (
        patched
    )
    closing = Closing()
    Protocol.serverClose(closing, code=4000)
    assert closing.calls == [("sendClose", 4000)]


@pytest.fixture
def unpatched(monkeypatch):
    """Daphne's targets as they are before the fixes (same shape, not ours)."""

    def server_close(self, code=None):
        self.sendClose(code=1000 if code is None else code)

    def kill_all_applications(self):
        return None

    def on_connect(self, request):
        return None

    monkeypatch.setattr(WebSocketProtocol, "serverClose", server_close)
    monkeypatch.setattr(Server, "kill_all_applications", kill_all_applications)
    monkeypatch.setattr(WebSocketProtocol, "onConnect", on_connect)
    return server_close, kill_all_applications, on_connect


def test_an_unpatched_daphne_is_patched(unpatched):
    fixes.apply()
    assert fixes.is_patched(WebSocketProtocol.serverClose)
    assert fixes.is_patched(Server.kill_all_applications)
    assert fixes.is_patched(WebSocketProtocol.onConnect)


def test_another_daphne_release_is_left_alone_with_one_warning(
    unpatched, monkeypatch, caplog
):
    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: "4.3.0" if name == "daphne" else real_version(name),
    )
    caplog.set_level(logging.WARNING, logger="emergence.compat")
    fixes.apply()
    targets = (
        WebSocketProtocol.serverClose,
        Server.kill_all_applications,
        WebSocketProtocol.onConnect,
    )
    assert targets == unpatched
    [record] = caplog.records
    assert record.levelname == "WARNING"
    assert (record.event, record.package, record.installed, record.expected) == (
        "compat_version_mismatch",
        "daphne",
        "4.3.0",
        "4.2.x",
    )
    assert record.patch == "emergence.compat.daphne"
    assert "daphne 4.3.0 is installed" in record.getMessage()


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (WebSocketProtocol, "serverClose"),
        (Server, "kill_all_applications"),
        (AutobahnProtocol, "sendCloseFrame"),
    ],
)
def test_a_missing_target_stops_the_start_up(unpatched, monkeypatch, owner, name):
    monkeypatch.delattr(owner, name)
    with pytest.raises(ImproperlyConfigured, match=rf"\.{name} no longer exists"):
        fixes.apply()


def test_a_target_of_another_shape_stops_the_start_up(unpatched, monkeypatch):
    def server_close(self, code=None, reason=None):
        return None

    monkeypatch.setattr(WebSocketProtocol, "serverClose", server_close)
    with pytest.raises(ImproperlyConfigured, match=r"serverClose takes"):
        fixes.apply()
    assert WebSocketProtocol.serverClose is server_close
