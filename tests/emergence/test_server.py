"""emergence.server readies the process before Daphne serves; asgi.py only builds."""

import gc
import importlib

import pytest
from daphne.server import Server

from emergence.server import GC_THRESHOLDS, LoggingServer
from ops import logs

ENDPOINTS = ["tcp:port=0:interface=127.0.0.1"]  # never listened on


def test_the_log_queue_the_freeze_and_the_gc_threshold_come_before_serving(
    monkeypatch,
):
    steps = []
    monkeypatch.setattr(logs, "start_log_queue", lambda: steps.append("log queue"))
    monkeypatch.setattr(gc, "freeze", lambda: steps.append("freeze"))
    monkeypatch.setattr(gc, "set_threshold", lambda *t: steps.append(t))
    monkeypatch.setattr(Server, "run", lambda self: steps.append("serve"))
    LoggingServer(application=None, endpoints=ENDPOINTS).run()
    assert steps == ["log queue", "freeze", GC_THRESHOLDS, "serve"]


# WhiteNoise warns that the test run never collected its static files.
@pytest.mark.filterwarnings("ignore:No directory at")
def test_importing_the_asgi_application_freezes_nothing():
    importlib.import_module("emergence.asgi")
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize(
    ("given", "served"),
    [
        (
            "tcp:port=8000:interface=127.0.0.1",
            "tcp:port=8000:interface=127.0.0.1:backlog=1024",
        ),
        ("unix:/run/emergence.sock", "unix:/run/emergence.sock:backlog=1024"),
        ("tcp:port=8000:backlog=64", "tcp:port=8000:backlog=64"),  # the operator's
        ("fd:fileno=3", "fd:fileno=3"),  # listening already: not ours to size
    ],
)
def test_the_server_listens_with_a_backlog_a_storm_fits_in(given, served):
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    [endpoint] = LoggingServer(application=None, endpoints=[given]).endpoints
    assert endpoint == served
    if not served.startswith("fd:"):  # Twisted reads the value we wrote
        backlog = int(served.rsplit("=", 1)[1])
        assert serverFromString(reactor, endpoint)._backlog == backlog
