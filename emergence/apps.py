"""Project wiring that must run once Django is set up, whatever the entry point."""

import logging
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks.security.base import SECRET_KEY_INSECURE_PREFIX

logger = logging.getLogger(__name__)


class EmergenceConfig(AppConfig):
    """Applies the third-party fixes (emergence.compat) and says how it runs."""

    name = "emergence"
    verbose_name = "Emergence"

    def ready(self) -> None:
        from emergence import compat

        # Before the first database connection creates Django's pool, and before
        # Daphne's server object exists (it is made after the application loads).
        # A patch whose target is gone stops the start-up here (compat/guard.py).
        compat.apply()
        announce_when_serving()


def announce_when_serving() -> None:
    """Have a server say how it runs once it listens; other processes stay quiet."""
    # Commands (migrate, demo_user, collectstatic) and the test run load the same
    # settings but never run Twisted's reactor, so `make run` warns once, not once
    # per process, and the last lines on the screen say where to go.
    import daphne.server  # noqa: F401 - installs Daphne's reactor before we use it
    from twisted.internet import reactor

    reactor.callWhenRunning(announce, reactor)


def announce(reactor: Any) -> None:
    """The start-up warnings, then (local settings) the URL and the demo login."""
    if not settings.REDIS_URL:
        logger.warning(
            "REDIS_URL is not set: in-memory channel layer and local cache; "
            "this is single-instance only (do not run several processes)",
            extra={"event": "single_instance_mode"},
        )
    if not settings.DEBUG:
        return
    logger.warning(
        "local development settings (%s): DEBUG on, %s; not for production "
        "(docs/OPERATIONS.md: make migrate, make serve)",
        settings.SETTINGS_MODULE,
        "a development SECRET_KEY"
        if settings.SECRET_KEY.startswith(SECRET_KEY_INSECURE_PREFIX)
        else "SECRET_KEY from the environment",
        extra={"event": "local_settings"},
    )
    from accounts.management.commands.demo_user import DEMO_PASSWORD, DEMO_USERNAME

    for url in listening_urls(reactor)[:1]:
        logger.info(
            "Emergence is ready: open %s and log in as %s / %s (admin: %sadmin/; "
            "stop with Ctrl-C)",
            url,
            DEMO_USERNAME,
            DEMO_PASSWORD,
            url,
            extra={"event": "server_ready", "url": url},
        )


def listening_urls(reactor: Any) -> list[str]:
    """http:// URLs of the TCP ports this process listens on."""
    from twisted.internet import tcp

    urls = []
    for reader in reactor.getReaders():
        if not isinstance(reader, tcp.Port):
            continue
        address = reader.getHost()
        # A wildcard bind is reachable on loopback; IPv6 literals need brackets.
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address.host, address.host)
        host = f"[{host}]" if ":" in host else host
        urls.append(f"http://{host}:{address.port}/")
    return sorted(urls)
