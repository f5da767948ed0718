"""Two fixes to Daphne 4.2, applied once at import of the ASGI app.

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
"""

# RFC 6455 section 7.4.1 and the IANA registry: codes an endpoint may send.
SENDABLE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def apply() -> None:
    """Apply both fixes (no-op without Daphne)."""
    allow_registered_close_codes()
    cancel_applications_on_shutdown()


def cancel_applications_on_shutdown() -> None:
    """Patch Server.kill_all_applications: skip connections without an app."""
    try:
        from daphne.server import Server
    except ImportError:  # another ASGI server: nothing to patch
        return
    if getattr(Server.kill_all_applications, "emergence_patched", False):
        return
    import asyncio
    import logging

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
    Server.kill_all_applications = kill_all_applications


def allow_registered_close_codes() -> None:
    """Patch daphne's WebSocketProtocol.serverClose once; no-op without Daphne."""
    try:
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # another ASGI server: nothing to patch
        return
    original = WebSocketProtocol.serverClose
    if getattr(original, "emergence_patched", False):
        return

    def server_close(self, code=None):
        if code in SENDABLE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original(self, code=code)

    server_close.emergence_patched = True
    WebSocketProtocol.serverClose = server_close
