"""Two fixes to Daphne 4.2, applied once at start-up (EmergenceConfig.ready).

1. Let Daphne send every registered WebSocket close code (PROTOCOL.md §2).

Daphne closes a socket through autobahn's sendClose(), which accepts only 1000 and
3000-4999 (django/daphne#374, crossbario/autobahn-python#1642). Our close-code table
also uses 1008, 1009, 1011, 1012 and 1013: under Daphne each of those raised inside
the consumer (an ERROR traceback, and the client saw 1011 or 1006 instead of the
code). sendCloseFrame() is the same call without that check, so the registered
codes go through it; anything else keeps Daphne's own path.

2. Let SIGTERM cancel the applications. Server.kill_all_applications (the "before
shutdown" trigger) reads details["application_instance"] of every connection, but a
connection that has not started its application yet (an idle keep-alive HTTP
connection) has none: the KeyError aborted the trigger, no application was
cancelled, and every socket was dropped (1006) instead of closed with 1012. Its
gather also ended at the first cancelled app, so the rest were not waited for.

Both replace private methods of the 4.2 series (guard.py checks the version and
their shape before patching).
"""

import asyncio
import logging
from typing import Any

from emergence.compat import guard

# The daphne releases both fixes were written for.
SERIES = "4.2"

# RFC 6455 section 7.4.1 and the IANA registry: codes an endpoint may send.
SENDABLE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def apply() -> None:
    """Apply both fixes once, after the guard; no-op without Daphne."""
    try:
        from daphne.server import Server
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # another ASGI server: nothing to patch
        return
    check_targets(WebSocketProtocol, Server)
    if is_patched(WebSocketProtocol.serverClose) and is_patched(
        Server.kill_all_applications
    ):
        return
    if not guard.version_matches("daphne", SERIES, __name__):
        return
    allow_registered_close_codes(WebSocketProtocol)
    cancel_applications_on_shutdown(Server)


def check_targets(protocol: type, server: type) -> None:
    """The methods both fixes replace or call, with the parameters they expect."""
    guard.require(protocol, "serverClose", patch=__name__, parameters=("self", "code"))
    guard.require(
        protocol,
        "sendCloseFrame",
        patch=__name__,
        parameters=("self", "code", "isReply"),
        exact=False,
    )
    guard.require(server, "kill_all_applications", patch=__name__, parameters=("self",))


def is_patched(function: Any) -> bool:
    """True for a replacement made by this module."""
    return getattr(function, "emergence_patched", False)


def allow_registered_close_codes(protocol: type) -> None:
    """Replace WebSocketProtocol.serverClose: registered codes via sendCloseFrame."""
    original = protocol.serverClose
    if is_patched(original):
        return

    def server_close(self, code=None):
        if code in SENDABLE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original(self, code=code)

    server_close.emergence_patched = True
    protocol.serverClose = server_close


def cancel_applications_on_shutdown(server: type) -> None:
    """Replace Server.kill_all_applications: skip connections without an app."""
    if is_patched(server.kill_all_applications):
        return
    from twisted.internet import defer

    logger = logging.getLogger("daphne.server")

    def kill_all_applications(self):
        wait_for = []
        for details in self.connections.values():
            instance = details.get("application_instance")
            if instance is not None and not instance.done():
                instance.cancel()
                wait_for.append(instance)
        logger.info("Killed %i pending application instances", len(wait_for))
        # return_exceptions: Daphne's plain gather completed at the first app that
        # re-raised CancelledError, so the reactor stopped mid-drain.
        wait_deferred = defer.Deferred.fromFuture(
            asyncio.gather(*wait_for, return_exceptions=True)
        )
        wait_deferred.addErrback(lambda failure: None)
        return wait_deferred

    kill_all_applications.emergence_patched = True
    server.kill_all_applications = kill_all_applications
