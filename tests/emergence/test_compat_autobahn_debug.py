"""emergence/compat/autobahn_debug.py: autobahn's DEBUG text built only if logged."""

import logging
import pprint

import pytest
from autobahn import util
from autobahn.twisted import websocket
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket import protocol
from django.core.exceptions import ImproperlyConfigured
from twisted.internet.testing import StringTransport

from emergence.compat import autobahn_debug as fix


class Counting:
    """pprint.pformat, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.real = pprint.pformat

    def __call__(self, *args, **kwargs) -> str:
        self.calls += 1
        return self.real(*args, **kwargs)


@pytest.fixture
def pformats(monkeypatch) -> Counting:
    counting = Counting()
    monkeypatch.setattr(pprint, "pformat", counting)
    return counting


def open_connection() -> WebSocketServerProtocol:
    """A server protocol of autobahn's over a test transport: connectionMade runs."""
    factory = WebSocketServerFactory("ws://127.0.0.1:9")
    factory.protocol = WebSocketServerProtocol
    made = factory.buildProtocol(("127.0.0.1", 9))
    made.makeConnection(StringTransport())
    return made


def test_the_start_up_applied_it():
    assert protocol.pformat is fix.lazy_pformat
    for module in (protocol, websocket):
        assert (module.hltype, module.hlval) == (fix.lazy_hltype, fix.lazy_hlval)


@pytest.fixture
def highlights(monkeypatch) -> dict[str, Counting]:
    """autobahn.util's hltype and hlval, counting their calls."""
    counting = {}
    for name in ("hltype", "hlval"):
        counting[name] = Counting()
        counting[name].real = getattr(util, name)
        monkeypatch.setattr(util, name, counting[name])
    return counting


def test_a_connection_and_its_frames_colour_no_names(highlights):
    made = open_connection()
    made.sendData(b"x" * 10)
    assert [c.calls for c in highlights.values()] == [0, 0]


def test_the_test_sees_an_eager_hltype(highlights, monkeypatch):
    monkeypatch.setattr(protocol, "hltype", highlights["hltype"])  # as released
    open_connection().sendData(b"x")
    assert highlights["hltype"].calls > 0


def test_the_deferred_names_are_autobahns_text():
    made = open_connection()
    assert str(fix.lazy_hltype(made.sendData)) == util.hltype(made.sendData)
    assert "{v}".format(v=fix.lazy_hlval(42)) == util.hlval(42)  # noqa: UP032
    assert fix.lazy_hlval(42, color="red") == util.hlval(42, color="red")


def test_a_new_connection_formats_nothing(pformats):
    open_connection()
    assert pformats.calls == 0


def test_the_test_sees_an_eager_pformat(pformats, monkeypatch):
    monkeypatch.setattr(protocol, "pformat", pformats)  # autobahn as released
    open_connection()
    assert pformats.calls == 1


def test_the_deferred_text_is_pformats_text(pformats):
    value = [("openHandshakeTimeout", 5, "Factory")] * 3
    lazy = fix.lazy_pformat(value)
    assert pformats.calls == 0
    assert str(lazy) == pprint.PrettyPrinter().pformat(value)
    # As txaio renders a record: str.format with the text as a named field.
    assert "\n{attrs}".format(attrs=lazy) == "\n" + str(lazy)  # noqa: UP032
    assert fix.lazy_pformat(value, width=20) == pprint.pformat(value, width=20)


def test_timings_still_read_as_text():
    timings = protocol.Timings()
    timings.track("onOpen")
    assert isinstance(str(timings), str)
    assert "onOpen" in str(timings)


@pytest.fixture
def unpatched(monkeypatch):
    monkeypatch.setattr(protocol, "pformat", pprint.pformat)
    monkeypatch.setattr(protocol.Timings, "__str__", lambda self: "as released")
    for module in (protocol, websocket):
        monkeypatch.setattr(module, "hltype", util.hltype)
        monkeypatch.setattr(module, "hlval", util.hlval)


def test_an_unpatched_autobahn_is_patched_once(unpatched):
    fix.apply()
    assert protocol.pformat is fix.lazy_pformat
    assert websocket.hltype is fix.lazy_hltype
    fix.apply()
    assert protocol.pformat is fix.lazy_pformat
    assert websocket.hlval is fix.lazy_hlval


def test_another_autobahn_release_is_left_alone_with_one_warning(
    unpatched, installed_release, caplog
):
    installed_release("autobahn", "27.1.0")
    caplog.set_level(logging.WARNING, logger="emergence.compat")
    fix.apply()
    assert protocol.pformat is pprint.pformat
    assert websocket.hltype is util.hltype
    [record] = caplog.records
    assert (record.event, record.installed, record.expected) == (
        "compat_version_mismatch",
        "27.1.0",
        "26.x",
    )


def test_a_module_without_pformat_stops_the_start_up(unpatched, monkeypatch):
    monkeypatch.delattr(protocol, "pformat")
    with pytest.raises(ImproperlyConfigured, match="pformat no longer exists"):
        fix.apply()
