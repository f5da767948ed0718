"""emergence/compat/daphne.py: the two Daphne 4.2 fixes, applied once, guarded."""

import asyncio
import importlib.metadata
import logging
from types import SimpleNamespace

import pytest
from autobahn.websocket.protocol import WebSocketProtocol as AutobahnProtocol
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from django.core.exceptions import ImproperlyConfigured

from emergence import compat
from emergence.compat import daphne as fixes


class Closing:
    """The two ways serverClose can close a socket, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def sendCloseFrame(self, code=None, reasonUtf8=None, isReply=False):  # noqa: N802, N803
        self.calls.append(("sendCloseFrame", code, isReply))

    def sendClose(self, code=None, reason=None):  # noqa: N802
        self.calls.append(("sendClose", code))


def test_both_fixes_are_applied_at_start_up():
    assert fixes.is_patched(WebSocketProtocol.serverClose)
    assert fixes.is_patched(Server.kill_all_applications)


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


async def test_shutdown_skips_connections_without_an_app_and_awaits_every_app():
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
        connections={
            "keep-alive": {},  # an HTTP connection that has not started its app
            "quick": {"application_instance": quick},
            "slow": {"application_instance": slow},
            "finished": {"application_instance": finished},
        }
    )
    deferred = Server.kill_all_applications(server)
    await asyncio.wait_for(deferred.asFuture(asyncio.get_running_loop()), 5)
    assert quick.cancelled() and slow.cancelled()
    # Daphne's own gather ended with the first app that re-raised: the slow one
    # was still cleaning up.
    assert sorted(cleaned) == ["quick", "slow"]


def test_applying_again_changes_nothing():
    close, kill = WebSocketProtocol.serverClose, Server.kill_all_applications
    compat.apply()
    fixes.apply()
    assert WebSocketProtocol.serverClose is close
    assert Server.kill_all_applications is kill


def test_each_fix_wraps_the_original_once():
    class Protocol:
        def serverClose(self, code=None):  # noqa: N802
            self.sendClose(code=1000 if code is None else code)

    class Bare:
        def kill_all_applications(self):
            return None

    fixes.allow_registered_close_codes(Protocol)
    fixes.cancel_applications_on_shutdown(Bare)
    close, kill = Protocol.serverClose, Bare.kill_all_applications
    fixes.allow_registered_close_codes(Protocol)
    fixes.cancel_applications_on_shutdown(Bare)
    assert (Protocol.serverClose, Bare.kill_all_applications) == (close, kill)
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

    monkeypatch.setattr(WebSocketProtocol, "serverClose", server_close)
    monkeypatch.setattr(Server, "kill_all_applications", kill_all_applications)
    return server_close, kill_all_applications


def test_an_unpatched_daphne_is_patched(unpatched):
    fixes.apply()
    assert fixes.is_patched(WebSocketProtocol.serverClose)
    assert fixes.is_patched(Server.kill_all_applications)


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
    assert (WebSocketProtocol.serverClose, Server.kill_all_applications) == unpatched
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
