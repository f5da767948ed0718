"""Three changes to Daphne 4.2, applied once at start-up (EmergenceConfig.ready).

1. Let Daphne send every registered WebSocket close code (PROTOCOL.md §2).

Daphne closes a socket through autobahn's sendClose(), which accepts only 1000 and
3000-4999 (django/daphne#374, crossbario/autobahn-python#1642). Our close-code table
also uses 1008, 1009, 1011, 1012 and 1013: under Daphne each of those raised inside
the consumer (an ERROR traceback, and the client saw 1011 or 1006 instead of the
code). sendCloseFrame() is the same call without that check, so the registered
codes go through it; anything else keeps Daphne's own path.

2. Drain on SIGTERM (emergence/drain.py). Server.kill_all_applications (the "before
shutdown" trigger) cancelled every application at once, read
details["application_instance"] of every connection (a KeyError for an idle
keep-alive HTTP connection aborted the trigger: every socket dropped with 1006), and
its gather ended at the first cancelled app. It now runs the drain: sockets closed
with 1012 in batches over WS_DRAIN_SECONDS, every application waited for (bounded).

3. Refuse new sockets while draining. Daphne 4.2 has no `websocket.http.response`
(ASGI's denial-response extension): a `websocket.close` before the accept is always
a 403. The refusal is made in WebSocketProtocol.onConnect instead, before any
application exists, with autobahn's ConnectionDeny: an HTTP 503.

All replace private methods of the 4.2 series (guard.py checks the version and
their shape before patching).
"""

import asyncio
import logging
from typing import Any

from emergence import drain
from emergence.compat import guard

logger = logging.getLogger(__name__)

# The daphne releases both fixes were written for.
SERIES = "4.2"

# RFC 6455 section 7.4.1 and the IANA registry: codes an endpoint may send.
SENDABLE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def apply() -> None:
    """Apply the changes once, after the guard; no-op without Daphne."""
    try:
        from daphne.server import Server
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # another ASGI server: nothing to patch
        return
    check_targets(WebSocketProtocol, Server)
    targets = (
        WebSocketProtocol.serverClose,
        WebSocketProtocol.onConnect,
        Server.kill_all_applications,
    )
    if all(is_patched(target) for target in targets):
        return
    if not guard.version_matches("daphne", SERIES, __name__):
        return
    allow_registered_close_codes(WebSocketProtocol)
    cancel_applications_on_shutdown(Server, WebSocketProtocol)
    refuse_handshakes_while_draining(WebSocketProtocol)


def check_targets(protocol: type, server: type) -> None:
    """The methods the changes replace or call, with the parameters they expect."""
    guard.require(protocol, "serverClose", patch=__name__, parameters=("self", "code"))
    guard.require(
        protocol,
        "sendCloseFrame",
        patch=__name__,
        parameters=("self", "code", "isReply"),
        exact=False,
    )
    guard.require(server, "kill_all_applications", patch=__name__, parameters=("self",))
    guard.require(protocol, "onConnect", patch=__name__, parameters=("self", "request"))


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


def cancel_applications_on_shutdown(server: type, websocket: type) -> None:
    """Replace Server.kill_all_applications: the drain (emergence/drain.py)."""
    if is_patched(server.kill_all_applications):
        return
    from twisted.internet import defer

    def failed(failure: Any) -> None:
        if failure.check(asyncio.CancelledError, defer.CancelledError):
            return  # the loop itself is going away
        logger.error(
            "drain_failed",
            exc_info=(failure.type, failure.value, failure.getTracebackObject()),
            extra={"event": "drain_failed"},
        )

    def kill_all_applications(self):
        # Twisted waits for this Deferred before it stops listening and exits.
        wait_deferred = defer.Deferred.fromFuture(drain.start(self, websocket))
        wait_deferred.addErrback(failed)
        return wait_deferred

    kill_all_applications.emergence_patched = True
    server.kill_all_applications = kill_all_applications


def refuse_handshakes_while_draining(protocol: type) -> None:
    """Replace WebSocketProtocol.onConnect: HTTP 503 once the drain has started."""
    original = protocol.onConnect
    if is_patched(original):
        return
    from autobahn.websocket.types import ConnectionDeny

    def on_connect(self, request):
        if not drain.refusing():
            return original(self, request)
        # Daphne's onClose runs after the refused handshake and expects these; a
        # connection registered as disconnected is forgotten by its checker.
        self.server = self.factory.server_class
        self.request = request
        peer = self.transport.getPeer()
        has_port = hasattr(peer, "port")
        self.client_addr = [str(peer.host), peer.port] if has_port else None
        self.server.protocol_connected(self)
        self.server.protocol_disconnected(self)
        client = f"{peer.host}:{peer.port}" if has_port else None
        details = {"path": request.path, "client": client}
        self.server.log_action("websocket", "rejected", details)
        raise ConnectionDeny(503, "Service Unavailable")

    on_connect.emergence_patched = True
    protocol.onConnect = on_connect
