"""What a server says once it listens: each warning once, then where to log in."""

import logging

import pytest
from twisted.internet import tcp
from twisted.internet.address import IPv4Address, IPv6Address

from emergence import apps


class Port(tcp.Port):
    """A listening TCP port as the reactor lists it, without a socket."""

    def __init__(self, address) -> None:
        self.address = address

    def getHost(self):  # noqa: N802 - Twisted's name
        return self.address


class Reactor:
    def __init__(self, *readers) -> None:
        self.readers = list(readers)

    def getReaders(self):  # noqa: N802 - Twisted's name
        return self.readers


def said(caplog) -> list[tuple[str, str]]:
    return [
        (r.levelname, r.event) for r in caplog.records if r.name == "emergence.apps"
    ]


@pytest.fixture
def local(settings):
    settings.DEBUG = True
    settings.REDIS_URL = ""
    settings.SECRET_KEY = (
        "django-insecure-local-development-only-never-use-in-production"
    )


def test_a_local_server_warns_once_each_then_says_where_to_log_in(local, caplog):
    caplog.set_level(logging.INFO, logger="emergence.apps")
    reactor = Reactor(object(), Port(IPv4Address("TCP", "127.0.0.1", 8123)))
    apps.announce(reactor)
    assert said(caplog) == [
        ("WARNING", "single_instance_mode"),
        ("WARNING", "local_settings"),
        ("INFO", "server_ready"),
    ]
    local_settings, ready = caplog.records[1], caplog.records[2]
    assert "DEBUG on, a development SECRET_KEY" in local_settings.getMessage()
    assert ready.getMessage().startswith(
        "Emergence is ready: open http://127.0.0.1:8123/ and log in as demo / "
        "emergence-demo (admin: http://127.0.0.1:8123/admin/"
    )


def test_a_production_server_with_redis_says_nothing(settings, caplog):
    settings.DEBUG = False
    settings.REDIS_URL = "redis://redis:6379/0"
    caplog.set_level(logging.INFO, logger="emergence.apps")
    apps.announce(Reactor(Port(IPv4Address("TCP", "0.0.0.0", 8000))))
    assert said(caplog) == []


def test_a_production_server_without_redis_warns_once(settings, caplog):
    settings.DEBUG = False
    settings.REDIS_URL = ""
    caplog.set_level(logging.INFO, logger="emergence.apps")
    apps.announce(Reactor())
    assert said(caplog) == [("WARNING", "single_instance_mode")]


@pytest.mark.parametrize(
    ("address", "url"),
    [
        (IPv4Address("TCP", "127.0.0.1", 8000), "http://127.0.0.1:8000/"),
        (IPv4Address("TCP", "0.0.0.0", 8001), "http://127.0.0.1:8001/"),
        (IPv6Address("TCP", "::", 8002), "http://[::1]:8002/"),
        (IPv6Address("TCP", "fe80::1", 8003), "http://[fe80::1]:8003/"),
    ],
)
def test_listening_urls(address, url):
    assert apps.listening_urls(Reactor(Port(address), object())) == [url]
